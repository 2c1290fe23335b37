"""The speed of kvm-fwspec against its floors, side by side in one run, as ratios.

    python benchmarks/speed.py            # real KVM parts use the cache `kvm-fwspec qemu` fills
    python benchmarks/speed.py --no-kvm   # the reference, generate and docs only

Floors: the same adapter calls in a bare loop (no suite, no verdicts); for real KVM, the
kernel's bare boot to the agent's first answer plus the agent's own time for the same programs
in one request (the `elapsed` it reports). Targets are the issue's; a missed one prints by how
much. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kvm_fwspec.conformance.adapters import load_adapter
from kvm_fwspec.conformance.cases import build_cases
from kvm_fwspec.conformance.guest.program import execute
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.spec.loader import load_spec

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLI = [PY, "-m", "kvm_fwspec.conformance.commands.cli"]  # the installed kvm-fwspec, without PATH
rows: list[tuple[str, str, str]] = []


def seconds(run: Callable[[], object], repeat: int = 1) -> float:
    """The best of `repeat` runs: the floor of what the machine can do."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def command_seconds(args: list[str], repeat: int = 1) -> float:
    def run() -> None:
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        if done.returncode not in (0, 5):  # 5: pytest ran no test, as an empty run asks
            raise SystemExit(
                f"{' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )

    return seconds(run, repeat)


def row(what: str, value: str, verdict: str = "") -> None:
    rows.append((what, value, verdict))
    print(f"{what:<62} {value:>22}  {verdict}", flush=True)


def target(ratio: float, wanted: float, higher_is_better: bool = True) -> str:
    met = ratio >= wanted if higher_is_better else ratio <= wanted
    sign = ">=" if higher_is_better else "<="
    if met:
        return f"target {sign} {wanted:g}: met"
    return f"target {sign} {wanted:g}: MISSED by {abs(ratio - wanted) / wanted:.0%}"


def suite_args(kernel: str, adapter: str, *extra: str) -> list[str]:
    """The pytest run `kvm-fwspec certify` makes, with `extra` (an empty run deselects all)."""
    return [PY, "-m", "pytest", "--pyargs", "kvm_fwspec.conformance.suite", "-q", "-p", "no:cacheprovider",
            "-p", "no:benchmark", "-p", "no:hypothesispytest", "-o", "addopts=",
            "-o", "filterwarnings=default", "--assert=plain", f"--fwspec-adapter={adapter}",
            f"--fwspec-kernel={kernel}", *extra]  # fmt: skip


def reference_section(report: Path) -> None:
    spec = load_spec()
    profile = resolve_profile(spec, "7.2", "mitigated")
    cases = build_cases(spec, profile)
    programs = [c.program for c in cases]
    n = len(cases)
    print(f"\n== reference, arm64 7.2 host=mitigated: {n} cases")

    kvm = ReferenceKvm("7.2", "mitigated")
    bare = seconds(lambda: [execute(kvm, p) for p in programs], repeat=5)
    row("bare loop, in-process", f"{n / bare:,.0f} cases/s")

    empty = command_seconds(suite_args("7.2", "reference", "-k", "no_such_case"), repeat=3)
    full = command_seconds(suite_args("7.2", "reference", f"--fwspec-report={report / 'ref'}"), 3)
    marginal = n / (full - empty)
    row("suite in-process (pytest, marginal)", f"{marginal:,.0f} cases/s",
        target(marginal / (n / bare), 0.5) + f" ({marginal / (n / bare):.2f}x bare)")  # fmt: skip

    agent = f"{shlex.join(CLI)} agent --kernel 7.2 --host mitigated"
    adapter = load_adapter("agent", profile, {"command": agent})
    adapter.capabilities()
    through = seconds(lambda: adapter.run_programs(programs), repeat=3)
    adapter.close()
    row("bare loop through the stdio agent", f"{n / through:,.0f} cases/s")
    option = f"--fwspec-option=command={agent}"
    empty_agent = command_seconds(suite_args("7.2", "agent", option, "-k", "no_such_case"), 3)
    full_agent = command_seconds(
        suite_args("7.2", "agent", option, f"--fwspec-report={report / 'a'}"), 3
    )
    marginal_agent = n / (full_agent - empty_agent)
    row("suite through the stdio agent (marginal)", f"{marginal_agent:,.0f} cases/s",
        target(marginal_agent / (n / through), 0.5) + f" ({marginal_agent / (n / through):.2f}x bare)")  # fmt: skip

    serial = full
    xdist = command_seconds(
        suite_args("7.2", "reference", "-n", "2", "--dist", "loadgroup", f"--fwspec-report={report / 'x'}"), 3
    )  # fmt: skip
    row("pytest -n 2 vs serial, whole process", f"{xdist:.2f} s vs {serial:.2f} s",
        f"{serial / xdist:.2f}x (why certify keeps the reference serial)")  # fmt: skip
    default = command_seconds([*CLI, "certify", "-n", "auto", "--kernel", "7.2",
                               "--report", str(report / "c")], 7)  # fmt: skip
    plain = command_seconds([*CLI, "certify", "--kernel", "7.2", "--report",
                             str(report / "s")], 7)  # fmt: skip
    row(
        "certify -n auto vs serial",
        f"{default:.2f} s vs {plain:.2f} s",
        target(default / plain, 1.1, higher_is_better=False),
    )


def kvm_section(report: Path) -> None:
    from kvm_fwspec.conformance.lab.kernels import kernel_lines
    from kvm_fwspec.conformance.lab.qemu import Guest
    from kvm_fwspec.conformance.lab.qemu_adapter import QemuAdapter, default_cache, prepare
    from kvm_fwspec.conformance.profile import observed_host

    spec = load_spec()
    print("\n== real KVM in Debian's arm64 kernels under QEMU (one guest per line)")
    for line in kernel_lines():
        kernel, initramfs = prepare(line.release, default_cache())
        start = time.perf_counter()
        adapter = QemuAdapter(kernel, Guest(kernel, initramfs), 256)
        levels = adapter.capabilities().host_levels or {}
        boot = time.perf_counter() - start
        profile = resolve_profile(spec, f"{line.release}.y", observed_host(spec, levels))
        cases = build_cases(spec, profile)
        n = len(cases)
        start = time.perf_counter()
        answer = adapter.request("run", {"programs": [c.program for c in cases]})
        round_trip = time.perf_counter() - start
        adapter.close()
        in_guest = float(answer["elapsed"])
        floor = boot + in_guest
        start = time.perf_counter()
        subprocess.run([*CLI, "qemu", "--kernel", line.release, "--report",
                        str(report / "kvm" / line.release)], cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        certified = time.perf_counter() - start
        row(f"{line.release}: boot to agent / bare loop in the guest", f"{boot:.2f} s / {in_guest:.2f} s",
            f"{n} cases, {n / in_guest:,.0f} cases/s in the guest ({round_trip:.2f} s in one request)")  # fmt: skip
        row(f"{line.release}: certification end to end vs floor", f"{certified:.2f} s vs {floor:.2f} s",
            target(certified / floor, 2.0, higher_is_better=False) + f" ({certified / floor:.2f}x)")  # fmt: skip
        # The suite's own cost: the same run with every case deselected still boots the guest
        # (its host levels pick the profile), so the difference is the cases alone.
        suite = suite_args(f"{line.release}.y", "qemu", "--fwspec-host=auto",
                           f"--fwspec-option=line={line.release}")  # fmt: skip
        empty = command_seconds([*suite, "-k", "no_such_case"])
        full = command_seconds([*suite, f"--fwspec-report={report / 'suite' / line.release}"])
        marginal = n / (full - empty)
        row(f"{line.release}: suite through the agent (marginal) vs bare", f"{marginal:,.0f} cases/s",
            target(marginal / (n / in_guest), 0.5) + f" ({marginal / (n / in_guest):.2f}x bare)")  # fmt: skip

    one = kernel_lines()[2].release
    single = command_seconds(
        [
            *CLI,
            "qemu",
            "--kernel",
            one,
            "--report",
            str(report / "one"),
        ]
    )
    profile_kernel = f"{one}.y"
    two = command_seconds(suite_args(profile_kernel, "qemu", "--fwspec-host=auto", "-n", "2", "--dist", "loadgroup",
                                     f"--fwspec-report={report / 'two'}"))  # fmt: skip
    row(f"{one}: pytest -n 2 (a guest per worker) vs serial", f"{two:.2f} s vs {single:.2f} s",
        f"{single / two:.2f}x (why certify keeps one kernel serial)")  # fmt: skip
    serial = command_seconds(
        [
            *CLI,
            "qemu",
            "--jobs",
            "1",
            "--report",
            str(report / "s"),
        ]
    )
    parallel = command_seconds([*CLI, "qemu", "--report", str(report / "p")])
    row("all pinned lines: default (a guest per core) vs --jobs 1", f"{parallel:.2f} s vs {serial:.2f} s",
        target(serial / parallel, 1.5) + f" ({serial / parallel:.2f}x)")  # fmt: skip


def build_section(report: Path) -> None:
    print("\n== generation and docs")
    check = command_seconds([*CLI, "generate", "--check"], repeat=3)
    row("kvm-fwspec generate --check", f"{check:.2f} s")
    docs = command_seconds(
        [PY, "-m", "sphinx", "-W", "--keep-going", "-q", "-E", "docs", str(report / "html")]
    )
    row("sphinx-build of the docs (fresh)", f"{docs:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-kvm", action="store_true", help="skip the real-KVM measurements")
    args = parser.parse_args()
    report = Path(tempfile.mkdtemp(prefix="kvm-fwspec-speed-"))
    try:
        reference_section(report)
        if not args.no_kvm:
            kvm_section(report)
        build_section(report)
    finally:
        shutil.rmtree(report, ignore_errors=True)


if __name__ == "__main__":
    main()
