"""kvm-fwspec installed on an arm64 host the way a user would, and run there in-process.

A Debian kernel boots under QEMU as for the agent, but its initramfs holds wheels instead of
relying on the agent: kvm-fwspec's own, built from this checkout, its dependencies' for
CPython 3.11 on aarch64 from the package index, and pip's. The guest makes a virtual
environment, pip-installs kvm-fwspec from them offline and runs `kvm-fwspec certify --adapter
kvm` from that install (conformance/guest/installed_run.py); what happened comes back as one
JSON line over the virtio-serial port.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from kvm_fwspec.conformance.lab.debian import IsolatedApt, cache_lock
from kvm_fwspec.conformance.lab.initramfs import build
from kvm_fwspec.conformance.lab.kernels import fetch_kernel, line_for
from kvm_fwspec.conformance.lab.qemu import Guest, GuestError
from kvm_fwspec.spec.errors import UsageError

DISTRIBUTION = "kvm-fwspec"
# What pip asks the index for: wheels a CPython 3.11 on glibc arm64 (Debian bookworm's 2.36)
# installs. Pure-Python wheels match any of them.
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64")
INSTALL_TIMEOUT = 1800.0  # seconds for the guest to install and certify, under emulation


def runtime_requirements() -> list[str]:
    """kvm-fwspec's own dependencies (no extra's), as its metadata declares them."""
    declared = importlib.metadata.requires(DISTRIBUTION) or []
    return sorted(r for r in declared if Requirement(r).marker is None)


def project_root() -> Path:
    """The checkout this kvm-fwspec runs from (an editable install): its wheel is built from
    it. An installed wheel has none to build from."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise UsageError(f"{DISTRIBUTION} is not run from a checkout ({root}): no wheel to build")
    return root


def wheels(cache: Path) -> tuple[Path, ...]:
    """This checkout's wheel, and its dependencies' and pip's for the guest, downloaded once
    per set of requirements."""
    requirements = [*runtime_requirements(), "pip"]
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16]
    folder = cache / "wheels" / key
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        platforms = [option for p in PLATFORMS for option in ("--platform", p)]
        _pip("download", "--only-binary=:all:", *platforms, "--python-version", "3.11",
             "--implementation", "cp", "-d", str(folder), *requirements)  # fmt: skip
        (folder / ".complete").touch()
    with tempfile.TemporaryDirectory() as built:
        _pip("wheel", "--no-deps", "-w", built, str(project_root()))
        (own,) = Path(built).glob("kvm_fwspec-*.whl")
        project = cache / "wheels" / "project" / hashlib.sha256(own.read_bytes()).hexdigest()[:16]
        project.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(own, project / own.name)
    return (*sorted(folder.glob("*.whl")), project / own.name)


def _pip(*args: str) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
    )
    if finished.returncode:
        raise UsageError(f"pip {args[0]} failed: {finished.stderr.strip().splitlines()[-1:]}")


def certify_installed(release: str, cache: Path) -> dict[str, Any]:
    """Boot Debian's `release` kernel with the wheels, and return what its guest reported:
    each step's command, exit status, output and seconds, and the results it wrote; with
    `boot-seconds` added, the time from QEMU's start to the guest's report."""
    with cache_lock(cache):
        apt = IsolatedApt(cache / "apt")
        apt.update()
        kernel = fetch_kernel(apt, cache, line_for(release))
        initramfs = build(apt, cache, kernel, wheels=wheels(cache))
    started = time.monotonic()
    guest = Guest(kernel, initramfs)
    try:
        guest.sock.settimeout(INSTALL_TIMEOUT)
        received = b""
        while not received.endswith(b"\n"):
            try:
                chunk = guest.sock.recv(1 << 20)
            except OSError as exc:
                raise GuestError(
                    f"no report from the installed run ({exc}){guest.tail()}"
                ) from None
            if not chunk:
                raise GuestError(f"the guest closed its port without a report{guest.tail()}")
            received += chunk
    finally:
        guest.stop()
    report: dict[str, Any] = json.loads(received)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["kernel"] = kernel.label
    return report
