"""What every module of the resolver shares: the documents, the problems found so far, and the
releases that lifetimes are read against.

Each module resolves one spec file, but they all report a problem the same way (at a path in a
document, so at its line), read `since`, `until` and `backports` against kernels.yaml's
releases, and refuse a duplicate name in the same words. Problems are collected rather than
raised, so that one run reports them all; `stop_on_problems` ends the run where a later stage
would only trip over what is already wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from kvm_fwspec.spec.errors import SpecError, SpecProblem
from kvm_fwspec.spec.model import KernelDocs, Lifetime, Release, Source
from kvm_fwspec.spec.yaml_source import JsonPath, SourceDocument

Raw = dict[str, Any]


class Context:
    """The spec's documents and what is wrong with them so far."""

    def __init__(self, documents: Mapping[str, SourceDocument]) -> None:
        self.docs = documents
        self.problems: list[SpecProblem] = []
        self.releases: tuple[Release, ...] = ()  # kernels.yaml's, once resolved

    def error(self, stem: str, path: JsonPath, message: str) -> None:
        self.problems.append(self.docs[stem].problem(path, message))

    def stop_on_problems(self) -> None:
        """Raise every problem found so far, if there is any."""
        if self.problems:
            raise SpecError(self.problems)

    def data(self, stem: str) -> Raw:
        return cast(Raw, self.docs[stem].data)

    def release(self, stem: str, path: JsonPath, text: str) -> Release:
        release = Release.parse(text)
        if self.releases and release not in self.releases:
            self.error(stem, path, f"unknown release '{text}' (not listed in kernels.yaml)")
        return release

    def lifetime(
        self, stem: str, path: JsonPath, raw: Raw, parent: Lifetime | None = None
    ) -> Lifetime:
        """[since, until) and backports; a part of something (a register's value, bit or rule)
        starts with it, and shares its stable backports when it starts with it."""
        since = (
            self.release(stem, (*path, "since"), raw["since"])
            if "since" in raw
            else parent.since
            if parent
            else self.releases[0]
        )
        until = self.release(stem, (*path, "until"), raw["until"]) if "until" in raw else None
        if until is not None and until <= since:
            self.error(stem, (*path, "until"), f"until {until} is not after since {since}")
        backports = tuple(
            self.release(stem, (*path, "backports", i), b)
            for i, b in enumerate(raw.get("backports", []))
        )
        for i, backport in enumerate(backports):
            if backport >= since:
                self.error(
                    stem,
                    (*path, "backports", i),
                    f"backport {backport} is not before since {since}",
                )
        if parent is not None and "backports" not in raw and since == parent.since:
            backports = parent.backports
        return Lifetime(since, until=until, backports=backports)

    def unique(self, stem: str, path: JsonPath, items: Iterable[Raw], key: str, what: str) -> None:
        """Report each item whose `key` repeats an earlier item's."""
        seen: dict[Any, int] = {}
        for i, item in enumerate(items):
            if key not in item:
                continue
            value = item[key]
            if value in seen:
                self.error(
                    stem,
                    (*path, i, key),
                    f"duplicate {what} '{value}' (also at index {seen[value]})",
                )
            else:
                seen[value] = i


def source(raw: Raw) -> Source:
    return Source(
        file=raw["file"], note=raw.get("note", ""), confirmed_on=tuple(raw.get("confirmed-on", []))
    )


def optional_source(raw: Raw | None) -> Source | None:
    return None if raw is None else source(raw)


def kernel_docs(raw: Raw) -> KernelDocs:
    return KernelDocs(
        file=raw["file"],
        says=raw["says"],
        code_does=raw["code-does"],
        real_kvm_follows=raw["real-kvm-follows"],
    )
