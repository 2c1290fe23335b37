"""Prove sync-check on Debian's real arm64 uapi headers, one package per kernel line CI
certifies: each must agree with the spec for the release it claims (its own Makefile or
linux/version.h says which), and checked against every other line's release the findings show
what changed between them. A header that disagrees with its own release is a spec error (a
wrong value or date) or a sync-check bug; either way the proof fails."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvm_fwspec.codegen.sync_check import CopyContents, Finding, claimed_by, classify, read_copy
from kvm_fwspec.conformance.lab.debian import IsolatedApt, cache_lock
from kvm_fwspec.conformance.lab.kernels import kernel_lines
from kvm_fwspec.conformance.lab.qemu_adapter import default_cache
from kvm_fwspec.conformance.lab.uapi_headers import HeaderCopy, fetch_headers
from kvm_fwspec.spec.kernel_names import KernelName, parse_kernel_name
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec


@dataclass(frozen=True)
class CopyCheck:
    copy: HeaderCopy
    kernel: KernelName
    contents: CopyContents
    findings: tuple[Finding, ...]
    informational: bool

    @property
    def wrong(self) -> list[Finding]:
        return [f for f in self.findings if f.wrong]


def fetch_copies(cache: Path) -> list[tuple[HeaderCopy, bool]]:
    """Every line's headers, with whether the line is information only (unstable)."""
    with cache_lock(cache):
        apt = IsolatedApt(cache / "apt")
        apt.update()
        return [(fetch_headers(apt, cache, line), line.unstable) for line in kernel_lines()]


def check_copies(spec: Spec, copies: list[tuple[HeaderCopy, bool]]) -> list[CopyCheck]:
    """Each copy against the release it claims."""
    checks = []
    for copy, informational in copies:
        kernel = parse_kernel_name(spec, claimed_by(list(copy.files)))
        contents = read_copy(spec, list(copy.files))
        findings = tuple(classify(spec, contents, kernel))
        checks.append(CopyCheck(copy, kernel, contents, findings, informational))
    return checks


def cross_check(spec: Spec, checks: list[CopyCheck]) -> list[dict[str, Any]]:
    """Each copy against every other copy's release: what one line lacks or has ahead of another."""
    rows = []
    for row in checks:
        for column in checks:
            findings = classify(spec, row.contents, column.kernel)
            rows.append({
                "copy": row.copy.line, "against": str(column.kernel),
                "missing": sorted(f.name for f in findings if f.status == "missing"),
                "ahead": sorted(f.name for f in findings if f.status == "ahead"),
                "differs": sorted(f.name for f in findings if f.status == "differs"),
            })  # fmt: skip
    return rows


def differences(checks: list[CopyCheck]) -> list[dict[str, Any]]:
    """The constants of the spec's domain that some copies define and others do not, and any
    whose value is not the same in every copy that defines it."""
    defined: dict[str, dict[str, int | str]] = {}
    for each in checks:
        for finding in each.findings:
            if finding.status != "missing":
                shown = finding.status if finding.file_value is None else finding.file_value
                defined.setdefault(finding.name, {})[each.copy.line] = shown
    lines = [each.copy.line for each in checks]
    rows = []
    for name, values in sorted(defined.items()):
        known = {v for v in values.values() if isinstance(v, int)}
        if len(values) < len(lines) or len(known) > 1:
            rows.append({
                "name": name, "defined-in": [line for line in lines if line in values],
                "values": {line: values[line] for line in lines if line in values},
            })  # fmt: skip
    return rows


def run_sync_proof(report: Path, cache: Path | None = None) -> int:
    spec = load_spec()
    checks = check_copies(spec, fetch_copies(cache or default_cache()))
    data = {
        "copies": [_copy_record(each) for each in checks],
        "cross": cross_check(spec, checks),
        "differences": differences(checks),
    }
    report.mkdir(parents=True, exist_ok=True)
    (report / "summary.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (report / "summary.md").write_text(summary_markdown(data), encoding="utf-8")
    failed = False
    for each in checks:
        agrees = sum(f.status == "agrees" for f in each.findings)
        tag = " (information only)" if each.informational else ""
        print(
            f"{each.copy.label} claims {each.kernel}: {agrees} agree, {len(each.wrong)} do not{tag}"
        )
        for finding in each.wrong:
            print(f"  {finding}")
        failed |= bool(each.wrong) and not each.informational
    print(
        f"{len(data['differences'])} constants differ between the copies; see {report}/summary.md"
    )
    return 1 if failed else 0


def _copy_record(each: CopyCheck) -> dict[str, Any]:
    return {
        "line": each.copy.line,
        "package": each.copy.package.name,
        "version": each.copy.package.version,
        "suite": each.copy.package.suite,
        "claims": str(each.kernel),
        "agrees": sum(f.status == "agrees" for f in each.findings),
        "unknown": sorted(f.name for f in each.findings if f.status == "unknown"),
        "wrong": [str(f) for f in each.wrong],
    }


def summary_markdown(data: dict[str, Any]) -> str:
    lines = [
        "# sync-check on Debian's arm64 uapi headers",
        "",
        "| line | package | claims | agree | wrong | unknown to the spec |",
        "|---|---|---|---|---|---|",
    ]
    for copy in data["copies"]:
        lines.append(
            f"| {copy['line']} | {copy['package']} {copy['version']} ({copy['suite']}) | "
            f"{copy['claims']} | {copy['agrees']} | {len(copy['wrong'])} | {len(copy['unknown'])} |"
        )
    releases = [copy["claims"] for copy in data["copies"]]
    lines += ["", "## Each copy against each release (missing / ahead of it)", ""]
    lines += ["| copy | " + " | ".join(releases) + " |", "|---" * (len(releases) + 1) + "|"]
    for copy in data["copies"]:
        cells = [
            f"{len(c['missing'])} / {len(c['ahead'])}"
            for c in data["cross"]
            if c["copy"] == copy["line"]
        ]
        lines.append(f"| {copy['line']} | " + " | ".join(cells) + " |")
    lines += ["", "## Constants not in every copy", ""]
    names = [copy["line"] for copy in data["copies"]]
    lines += ["| constant | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in data["differences"]:
        cells = [_cell(row["values"], line) for line in names]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(values: dict[str, int | str], line: str) -> str:
    """A copy's value, or what sync-check made of a definition it could not evaluate."""
    if line not in values:
        return "-"
    value = values[line]
    if isinstance(value, int):
        return f"`{value:#x}`"
    return {"unknown": "defined, unknown to the spec", "unevaluated": "does not compile alone"}[
        value
    ]
