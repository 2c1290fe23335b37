"""The whole VMM certification: every ordered pair of the real kernels, for each PSCI state
the source can hold under each QEMU build, judged by the spec's VMM rules.

The guest hosts stay up throughout and work side by side, each driven by one thread: first
every host saves its guests (QEMU's default, then each PSCI version QEMU's setting offers and
the kernel implements), then every host loads every stream.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from kvm_fwspec.conformance.adapters.agent import AgentError
from kvm_fwspec.conformance.analyses.migration_stream import StreamError
from kvm_fwspec.conformance.analyses.vmm_evidence import Load, Saved
from kvm_fwspec.conformance.analyses.vmm_judge import (
    PSCI_SETTING,
    Matrix,
    guest_calls,
    judge,
    state_name,
    vcpu_mismatch,
)
from kvm_fwspec.conformance.analyses.vmm_report import summary, write_report
from kvm_fwspec.conformance.lab.kernels import kernel_lines
from kvm_fwspec.conformance.lab.qemu import GuestError
from kvm_fwspec.conformance.lab.qemu_adapter import default_cache
from kvm_fwspec.conformance.lab.vmm import SOURCES
from kvm_fwspec.conformance.lab.vmm_lab import Lab
from kvm_fwspec.conformance.oracle import Oracle
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

T = TypeVar("T")


def run_matrix(
    spec: Spec, kernels: Sequence[str], builds: Sequence[str], cache: Path, jobs: int
) -> Matrix:
    calls = guest_calls(spec)
    lab = Lab(kernels, builds, [(c.function_id, c.argument) for c in calls], cache)

    def save(kernel: str, build: str, setting: str | None = None) -> Saved:
        started = time.monotonic()
        saved = lab.save(kernel, build, setting)
        _progress(f"saved {build} on {kernel}, {state_name(setting)}: {len(saved.registers)} "
                  f"registers ({time.monotonic() - started:.1f} s)")  # fmt: skip
        return saved

    def load(saved: Saved, target: str) -> Load:
        started = time.monotonic()
        loaded = lab.load(saved, target)
        _progress(f"{saved.build} {saved.kernel} -> {target}, {state_name(saved.setting)}: "
                  f"{'completed' if loaded.completed else 'refused'} "
                  f"({time.monotonic() - started:.1f} s)")  # fmt: skip
        return loaded

    try:
        defaults = _per_host(jobs, kernels, lambda k: [save(k, b) for b in builds])
        pinned = _per_host(jobs, kernels, lambda k: [
            save(k, d.build, s) for d in defaults if d.kernel == k for s in settings(spec, d)
        ])  # fmt: skip
        saves = defaults + pinned
        loads = _per_host(jobs, kernels, lambda t: [load(s, t) for s in saves])
    finally:
        lab.close()
    own = {(d.kernel, d.build): d for d in defaults}
    judgements = [judge(spec, load, own[(load.target, load.source.build)], calls)
                  for load in sorted(loads, key=_order(kernels))]  # fmt: skip
    mismatches = [m for m in (vcpu_mismatch(spec, s) for s in saves) if m]
    return Matrix(list(kernels), list(builds), saves, judgements, mismatches)


def settings(spec: Spec, default: Saved) -> list[str]:
    """The values of QEMU's PSCI setting, read from its own description of the property, that
    the kernel `default` was saved on implements: the PSCI states QEMU can give a guest there.
    Empty for a QEMU without the setting."""
    description = default.properties.get(PSCI_SETTING)
    if description is None:
        return []
    implemented = Oracle(spec, resolve_profile(spec, f"{default.kernel}.y", "mitigated"))
    versions = {v.name: v.encoded for v in spec.psci_versions}
    return [v for v in re.findall(r"\d+\.\d+", description)
            if versions.get(v) in implemented.psci_versions]  # fmt: skip


def _progress(line: str) -> None:
    """One line of progress on stderr; whole lines, as the hosts' threads interleave."""
    sys.stderr.write(f"vmm-certify: {line}\n")
    sys.stderr.flush()


def _per_host(jobs: int, kernels: Sequence[str], work: Callable[[str], list[T]]) -> list[T]:
    """`work` for each host, up to `jobs` hosts at a time; each host's client serves one thread."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return [item for items in pool.map(work, kernels) for item in items]


def _order(kernels: Sequence[str]) -> Callable[[Load], tuple[str, int, str, int]]:
    def key(load: Load) -> tuple[str, int, str, int]:
        setting = load.source.setting
        return (load.source.build, kernels.index(load.source.kernel),
                "" if setting is None else setting, kernels.index(load.target))  # fmt: skip

    return key


def run_certification(
    kernels: Sequence[str] | None, builds: Sequence[str] | None, cache: Path | None, report: Path,
    jobs: int | None,
) -> int:  # fmt: skip
    """`kvm-fwspec vmm-certify`: run the matrix, write the report, print its summary. Exit 1 when
    a firmware register or the guest answered otherwise than migrate-check predicts (the
    spec is wrong there), or when the vcpu asked about the registers is not QEMU's (the attribution would
    not hold). QEMU breaking a VMM rule is a finding of the report, not a failure of the run."""

    spec = load_spec()
    started = time.monotonic()
    try:
        matrix = run_matrix(spec, list(kernels or [line.release for line in kernel_lines()]),
                            list(builds or SOURCES), cache or default_cache(),
                            jobs or os.cpu_count() or 1)  # fmt: skip
    except (AgentError, GuestError, StreamError) as exc:  # a host, a QEMU or a stream failed
        raise UsageError(f"vmm-certify could not finish, no report written: {exc}") from None
    paths = write_report(spec, matrix, report, time.monotonic() - started)
    for line in summary(matrix):
        print(line)
    print(f"report: {', '.join(str(p) for p in paths)}")
    disagree = any(j.disagreements or j.answer_disagreements for j in matrix.judgements)
    return 1 if disagree or matrix.vcpu_mismatches else 0
