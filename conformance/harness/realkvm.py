"""`kvm-fwspec qemu`: certify real KVM on the Debian kernel lines the pin file names.

Each line's newest package is booted under QEMU and certified against the spec's profile
for that release line's stable series, with the host profile the kernel itself reports. When
unstable has moved past the pinned line, the new line is certified as information only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from codegen.errors import UsageError
from codegen.loader import load_spec
from conformance.adapters.qemu import default_cache
from conformance.certify import certify
from conformance.harness.debian import IsolatedApt, cache_lock
from conformance.harness.kernels import KernelLine, kernel_lines, line_for


@dataclass(frozen=True)
class LineResult:
    line: str
    kernel: str
    informational: bool
    exit_code: int
    report: Path
    note: str = ""


def _moved_on(line: KernelLine, cache: Path) -> KernelLine | None:
    """For an unstable line no longer served: the line unstable serves now, if any."""
    with cache_lock(cache):
        apt = IsolatedApt(cache / "apt")
        apt.update()
        if apt.candidates(line.packages[0], line.suites):
            return None
        newest = apt.candidates(
            r"linux-binary-unsigned-[0-9]+\.[0-9]+\.[0-9]+\+deb[0-9]+-arm64", line.suites
        )
    if not newest:
        return None
    release = ".".join(newest[0].name.removeprefix("linux-binary-unsigned-").split(".")[:2])
    escaped = re.escape(release)
    pattern = rf"linux-binary-unsigned-{escaped}\.[0-9]+\+deb[0-9]+-arm64"
    return KernelLine(
        release,
        line.suites,
        (pattern, *line.packages[1:]),
        f"unstable now ({release})",
        line.headers,
        True,
    )


def certify_line(
    line: KernelLine, cache: Path, report: Path, informational: bool, package: str | None
) -> LineResult:
    spec = load_spec()
    known = {str(r) for r in spec.releases}
    profile_release = line.release if line.release in known else str(spec.releases[-1])
    options = {"cache": str(cache)} | ({"kernel-package": package} if package else {})
    note = (
        ""
        if profile_release == line.release
        else f"the spec knows no {line.release}; checked against {profile_release}"
    )
    code = certify(
        "qemu",
        f"{profile_release}.y",
        "auto",
        "arm64",
        options | {"line": line.release},
        None,
        report,
    )
    return LineResult(line.release, f"{profile_release}.y", informational, code, report, note)


def run_qemu(kernel: str, package: str | None, cache: Path | None, report: Path) -> int:
    """Certify the pinned lines (`pinned`), one line, or what unstable ships (`latest`)."""
    cache = cache or default_cache()
    results: list[LineResult] = []
    if kernel == "pinned":
        for line in kernel_lines():
            moved = _moved_on(line, cache) if line.unstable else None
            if moved is not None:
                print(f"kvm-fwspec: unstable no longer serves the {line.release} line; certifying {moved.release} "
                      "as information only until kernel-lines.yaml and the spec are updated")  # fmt: skip
                results.append(certify_line(moved, cache, report / moved.release, True, None))
            else:
                results.append(certify_line(line, cache, report / line.release, False, None))
    elif kernel == "latest":
        unstable = next(line for line in kernel_lines() if line.unstable)
        current = _moved_on(unstable, cache) or unstable
        results.append(certify_line(current, cache, report / current.release, True, None))
    else:
        results.append(
            certify_line(
                line_for(kernel.removesuffix(".y")), cache, report / kernel, False, package
            )
        )
    write_summary(report, results)
    return 1 if any(r.exit_code and not r.informational for r in results) else 0


def write_summary(report: Path, results: list[LineResult]) -> None:
    """summary.json and summary.md beside the per-line reports."""
    rows = []
    for result in results:
        results_file = result.report / "results.json"
        if not results_file.exists():
            raise UsageError(f"no results for the {result.line} line in {result.report}")
        document = json.loads(results_file.read_text(encoding="utf-8"))
        summary, run = document["summary"], document["run"]
        rows.append({
            "line": result.line,
            "profile": f"{run['kernel']} host={run['host-profile']}",
            "implementation": run["implementation"],
            "packages": run["implementation-provenance"].get("kernel-packages", ""),
            "conforms": summary["conforms"],
            "informational": result.informational,
            "counts": {k: summary[k] for k in ("pass", "fail", "not-applicable", "error")},
            "note": result.note,
        })  # fmt: skip
    report.mkdir(parents=True, exist_ok=True)
    (report / "summary.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    lines = [
        "| line | kernel package | profile | conforms | pass | fail | error |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        verdict = ("yes" if row["conforms"] else "no") + (
            " (information only)" if row["informational"] else ""
        )
        counts = row["counts"]
        lines.append(f"| {row['line']} | {row['packages']} | {row['profile']} | {verdict} | {counts['pass']} | "
                     f"{counts['fail']} | {counts['error']} |")  # fmt: skip
    (report / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
