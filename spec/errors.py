"""One error type for everything wrong with a spec, so the CLI can print it as one line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def display_path(path: Path) -> str:
    """Show a spec file the way a user typed it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with the spec, located at a file and line and a path inside the document."""

    file: Path
    line: int
    where: str
    message: str

    def __str__(self) -> str:
        where = f" {self.where}:" if self.where else ""
        return f"{display_path(self.file)}:{self.line}:{where} {self.message}"

    def sort_key(self) -> tuple[str, int, str, str]:
        return (str(self.file), self.line, self.where, self.message)


class SpecError(Exception):
    """Raised with every problem found, so a user fixes them all in one pass rather than one a run."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = sorted(set(problems), key=SpecProblem.sort_key)
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(Exception):
    """A command-line request that cannot be carried out (unknown name, malformed id)."""
