"""Real KVM under QEMU: a dead or hung guest fails fast and clearly, and images are cached.

These boot Debian's 6.1 arm64 kernel (the packages .ci/run installs make that possible);
the four-kernel certification itself runs in .ci/run as `kvm-fwspec qemu`.
"""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from kvm_fwspec.conformance.cases import build_cases
from kvm_fwspec.conformance.lab.qemu import Guest
from kvm_fwspec.conformance.lab.qemu_adapter import QemuAdapter, default_cache, prepare
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.verdicts import certify_cases
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.loader import load_spec

pytestmark = pytest.mark.lab  # Debian kernels booted under QEMU

SPEC = load_spec()
CACHE = default_cache()


@pytest.fixture(scope="module")
def images() -> tuple:  # type: ignore[type-arg]
    return prepare("6.1", CACHE)


def boot(images: tuple, timeout: float) -> QemuAdapter:  # type: ignore[type-arg]
    kernel, initramfs = images
    adapter = QemuAdapter(kernel, Guest(kernel, initramfs), 64)
    adapter.timeout = timeout
    return adapter


def test_second_prepare_reuses_the_cache(images: tuple) -> None:  # type: ignore[type-arg]
    kernel, initramfs = images
    debs = sorted((CACHE / "apt" / "debs").glob("*.deb"))
    stamps = {p: p.stat().st_mtime_ns for p in debs}
    again = prepare("6.1", CACHE)
    assert again == (kernel, initramfs)
    assert {p: p.stat().st_mtime_ns for p in debs} == stamps
    assert sorted((CACHE / "apt" / "debs").glob("*.deb")) == debs


def test_real_kvm_answers_and_reports_its_host(images: tuple) -> None:  # type: ignore[type-arg]
    adapter = boot(images, 120)
    try:
        capabilities = adapter.capabilities()
        assert capabilities.kernel is not None and capabilities.kernel.startswith("6.1.0-")
        assert str(parse_kernel_name(SPEC, capabilities.kernel)) == "6.1.y"  # Debian's stable
        assert capabilities.implementation == f"Linux KVM {capabilities.kernel}"
        assert set(capabilities.host_levels or {}) == {
            r.name for r in SPEC.registers if r.kind == "level"
        }
        assert "kernel-packages" in capabilities.provenance
    finally:
        adapter.close()


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_a_dead_guest_is_an_error_naming_its_death_or_the_timeout(
    images: tuple, fault: str
) -> None:  # type: ignore[type-arg]
    adapter = boot(images, 10)
    profile = resolve_profile(SPEC, "6.1.y", "levels:not-required/not-avail/not-avail")
    cases = build_cases(SPEC, profile)[:50]
    try:
        adapter.capabilities()  # booted and answering
        if fault == "killed":
            adapter.guest.kill()
        else:
            os.kill(adapter.guest.process.pid, signal.SIGSTOP)
        _, results = certify_cases(adapter, cases)
    finally:
        if fault == "hung":  # the adapter may already have ended the hung QEMU
            with contextlib.suppress(ProcessLookupError):
                os.kill(adapter.guest.process.pid, signal.SIGCONT)
                adapter.guest.kill()
        adapter.close()
    assert {r.outcome for r in results} == {"error"}
    reason = results[0].reason
    assert (
        ("exited" in reason) if fault == "killed" else ("did not answer within 10 s" in reason)
    ), reason
