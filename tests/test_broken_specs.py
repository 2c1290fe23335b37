"""Each broken spec in tests/broken_specs/ fails with exactly its expected one-line errors.

A case is a find/replace applied to a copy of the real spec, so the corpus follows the spec
as it grows. `{line}` in an expected error is the line of the case's `at` text in the broken
file (default: where the replacement starts), so line numbers are checked, not guessed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from codegen.generate import ROOT

CASES = sorted((Path(__file__).parent / "broken_specs").glob("*.yaml"))


def apply_case(case: dict[str, Any], workdir: Path) -> list[str]:
    """Write the broken spec under workdir/spec; return the expected error lines."""
    spec = workdir / "spec"
    shutil.copytree(ROOT / "spec", spec)
    target = spec / case["file"]
    text = target.read_text(encoding="utf-8")
    assert text.count(case["find"]) == 1, (
        f"'find' must occur once in {case['file']}; the spec moved on"
    )
    broken = text.replace(case["find"], case["replace"])
    target.write_text(broken, encoding="utf-8")
    marker = case.get("at", case["replace"])
    assert broken.count(marker) == 1, "'at' must occur once in the broken file"
    line = broken.count("\n", 0, broken.index(marker)) + 1
    return [e.format(line=line) for e in case["errors"]]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case_file", CASES, ids=[c.stem for c in CASES])
def test_broken_spec_gives_its_error(case_file: Path, tmp_path: Path) -> None:
    case = yaml.safe_load(case_file.read_text(encoding="utf-8"))
    expected = apply_case(case, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "codegen.cli", "validate", "spec"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == expected
