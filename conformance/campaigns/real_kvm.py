"""`kvm-fwspec qemu`: certify real KVM on the Debian kernel lines the pin file names.

Each line's newest package is booted under QEMU and certified against the spec's profile
for that release line's stable series, with the host profile the kernel itself reports. When
unstable has moved past the pinned line, the new line is certified as information only.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from dataclasses import dataclass
from pathlib import Path

from kvm_fwspec.conformance.certify import Request, certify
from kvm_fwspec.conformance.lab.debian import IsolatedApt, cache_lock
from kvm_fwspec.conformance.lab.kernels import KernelLine, kernel_lines, line_for
from kvm_fwspec.conformance.lab.qemu_adapter import default_cache, prepare
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec


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
        Request(
            adapter="qemu",
            kernel=f"{profile_release}.y",
            host="auto",
            arch="arm64",
            options=options | {"line": line.release},
            workers=None,
            report=report,  # lines run side by side write into their own certify.log
            # Our own agent offers every capability the suite has (guest calls, PSCI 0.1
            # vcpus, the SMCCC filter): a case not applicable here is a harness regression,
            # never a narrower implementation, and must not pass as a conforming line.
            require_all=True,
        )
    )
    return LineResult(line.release, f"{profile_release}.y", informational, code, report, note)


@dataclass(frozen=True)
class LineTask:
    """One line to certify, where its report goes, and whether it is information only."""

    line: KernelLine
    report: Path
    informational: bool
    package: str | None = None


def run_qemu(
    kernel: str, package: str | None, cache: Path | None, report: Path, jobs: int | None = None
) -> int:
    """Certify the pinned lines (`pinned`), one line, or what unstable ships (`latest`), up
    to `jobs` lines at once (default: as many as there are cores), one guest per line."""
    cache = cache or default_cache()
    tasks: list[LineTask] = []
    if kernel == "pinned":
        for line in kernel_lines():
            moved = _moved_on(line, cache) if line.unstable else None
            if moved is not None:
                print(f"kvm-fwspec: unstable no longer serves the {line.release} line; certifying {moved.release} "
                      "as information only until kernel-lines.yaml and the spec are updated")  # fmt: skip
                tasks.append(LineTask(moved, report / moved.release, True))
            else:
                tasks.append(LineTask(line, report / line.release, False))
    elif kernel == "latest":
        unstable = next(line for line in kernel_lines() if line.unstable)
        current = _moved_on(unstable, cache) or unstable
        tasks.append(LineTask(current, report / current.release, True))
    else:
        line = line_for(kernel.removesuffix(".y"))
        tasks.append(LineTask(line, report / kernel, False, package))
    jobs = max(1, min(len(tasks), jobs or os.cpu_count() or 1))
    results = (
        [_certify_task(task, cache) for task in tasks]
        if jobs == 1
        else _certify_in_parallel(tasks, cache, jobs)
    )
    write_summary(report, results)
    return 1 if any(r.exit_code and not r.informational for r in results) else 0


def _certify_task(task: LineTask, cache: Path) -> LineResult:
    return certify_line(task.line, cache, task.report, task.informational, task.package)


def _certify_logged(task: LineTask, cache: Path) -> LineResult:
    """In a worker: one line's certification, its output into the line's certify.log."""
    task.report.mkdir(parents=True, exist_ok=True)
    with open(task.report / "certify.log", "w", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        return _certify_task(task, cache)


def _certify_in_parallel(tasks: list[LineTask], cache: Path, jobs: int) -> list[LineResult]:
    """Each line in a worker process of its own, with its own guest (one vCPU each, so the
    guests do not fight over the host's cores). Workers are forked: pytest runs once per
    process. The kernels are fetched and their images built first, one at a time."""
    for task in tasks:
        prepare(task.line.release, cache, task.package)
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs) as pool:
        pending = [pool.apply_async(_certify_logged, (task, cache)) for task in tasks]
        results = []
        for task, job in zip(tasks, pending, strict=True):
            result = job.get()
            verdict = "conforms" if result.exit_code == 0 else f"exit {result.exit_code}"
            print(
                f"kvm-fwspec: {task.line.release}: {verdict}; log in {task.report / 'certify.log'}"
            )
            results.append(result)
    return results


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
