"""Ctrl-C during generate, certify or qemu leaves no half-written file and no QEMU behind,
and says so in one line with exit code 130."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.checkout import KVM_FWSPEC, ROOT

TREE = (
    "kvm_fwspec.codegen",
    "kvm_fwspec.conformance",
    "kvm_fwspec.reference_impl",
    "spec",
    "docs",
    "tests",
)


def copy_project(target: Path) -> Path:
    for name in TREE:
        shutil.copytree(
            ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "_build")
        )
    shutil.copy(ROOT / "pyproject.toml", target)  # generate writes only into a checkout
    return target


def outputs(root: Path) -> dict[str, bytes]:
    """Every file generate writes, by its path."""
    marked = subprocess.run(["grep", "-rl", "kvm-fwspec-generated", *TREE], cwd=root,
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return {path: (root / path).read_bytes() for path in sorted(marked) if "tests/" not in path}


def interrupt(command: list[str], cwd: Path, after: float) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(after)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tmp"))


def test_interrupted_generate_leaves_each_file_old_or_new(tmp_path: Path) -> None:
    before, after = copy_project(tmp_path / "before"), copy_project(tmp_path / "after")
    for root in (before, after):  # a spec edit every output's banner records
        kernels = root / "spec" / "kernels.yaml"
        kernels.write_text(kernels.read_text().replace("oldest first", "oldest first (edited)"))
    generate = [*KVM_FWSPEC, "generate"]
    subprocess.run(generate, cwd=after, check=True, capture_output=True)
    old, new = outputs(before), outputs(after)
    assert old.keys() == new.keys()
    assert sum(old[p] != new[p] for p in old) >= 15  # enough rewrites to interrupt
    rng = random.Random(7)
    interrupted = 0
    for _ in range(4):
        result = interrupt(generate, before, rng.uniform(0.3, 2.5))
        assert result.returncode in (0, 130), result.stderr
        if result.returncode == 130:
            interrupted += 1
            assert (
                result.stderr == "kvm-fwspec: interrupted; nothing half-written was left behind\n"
            )
        assert leftovers(before) == []
        now = outputs(before)
        assert all(now[p] in (old[p], new[p]) for p in now), "a file is neither old nor new"
    assert interrupted, "no run was interrupted; the delays are too long for this machine"


def test_interrupted_certify_writes_no_results(tmp_path: Path) -> None:
    fired = tmp_path / "fired"
    agent = f"{sys.executable} -m tests.faulty_agent hang {fired} --kernel 6.12 --host mitigated"
    report = tmp_path / "report"
    command = [*KVM_FWSPEC, "certify", "--adapter", "agent", "--kernel", "6.12",
               "--option", f"command={agent}", "--option", "timeout=600", "--report", str(report)]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not fired.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fired.exists(), "the agent never hung"
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.endswith("kvm-fwspec: interrupted; nothing half-written was left behind\n")
    assert time.monotonic() - started < 20
    assert not (report / "results.json").exists() and leftovers(tmp_path) == []
    hung = subprocess.run(["pgrep", "-f", str(fired)], capture_output=True, text=True).stdout
    assert hung == "", f"the hung agent outlived certify: {hung}"


def qemu_children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"qemu-system-aarch64" in cmdline:
                found.append(int(proc.name))
    return found


def start_qemu_run(report: Path, output: int) -> tuple[subprocess.Popen[str], list[int]]:
    """`kvm-fwspec qemu --kernel 6.12` started, and the QEMU processes it started once it has."""
    command = [
        *KVM_FWSPEC,
        "qemu",
        "--kernel",
        "6.12",
        "--report",
        str(report),
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=output, text=True)
    deadline = time.monotonic() + 300  # a first run downloads the kernel
    guests: list[int] = []
    while not guests and time.monotonic() < deadline and process.poll() is None:
        guests = qemu_children(process.pid)
        time.sleep(0.1)
    assert guests, "QEMU never started"
    return process, guests


@pytest.mark.parametrize("after", [0.5, 5.0], ids=["booting", "certifying"])
def test_interrupted_qemu_leaves_no_guest(tmp_path: Path, after: float) -> None:
    report = tmp_path / "report"
    process, guests = start_qemu_run(report, subprocess.PIPE)
    time.sleep(after)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.endswith("kvm-fwspec: interrupted; nothing half-written was left behind\n")
    for pid in guests:  # stopped and reaped by the run itself, not left to the kernel
        assert not Path(f"/proc/{pid}").exists(), f"QEMU {pid} outlived the run"
    assert not list(report.rglob("results.json")) and leftovers(tmp_path) == []


def test_a_killed_run_takes_its_guest_with_it(tmp_path: Path) -> None:
    """Even SIGKILL, which no handler sees: the kernel ends QEMU with its parent."""
    process, guests = start_qemu_run(tmp_path, subprocess.DEVNULL)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(1)
    for pid in guests:  # gone, or a zombie awaiting its new parent's wait
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", (
            f"QEMU {pid} outlived a killed run"
        )
