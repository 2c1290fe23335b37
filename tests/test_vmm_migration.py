"""QEMU's save and restore of a running guest between real kernels, as QEMU itself does it:
the same-kernel control resumes the guest seeing what it saw, and cross-kernel loads are
refused by QEMU with messages that name no register (what the VMM report will have to add)."""

from __future__ import annotations

from codegen.loader import load_spec
from conformance.adapters.qemu import default_cache
from conformance.harness.vmm_migration import migrate
from conformance.oracle import Oracle
from conformance.profile import resolve_profile

SPEC = load_spec()


def fid(name: str) -> int:
    return next(f for f in SPEC.psci_functions if f.name == name).ids["smc32"]


CALLS = [(fid("psci-version"), 0), (fid("psci-features"), fid("system-off2"))]


def sees(kernel: str) -> list[int]:
    """What the spec says a default guest of `kernel` sees for CALLS."""
    oracle = Oracle(SPEC, resolve_profile(SPEC, kernel, "mitigated"))
    return [oracle.psci_latest, oracle.psci_features(fid("system-off2"), oracle.psci_latest)]


def test_same_kernel_control_resumes_the_guest_unchanged() -> None:
    moved = migrate("6.12", "6.12", "bookworm", CALLS, default_cache())
    assert moved.completed, moved.qemu_error
    assert moved.before == moved.after == sees("6.12.y")
    assert moved.stream_bytes > 100_000


def test_newer_to_older_kernel_is_refused_without_naming_a_register() -> None:
    moved = migrate("7.2", "5.10", "bookworm", CALLS, default_cache())
    # PSCI 1.3, and SYSTEM_OFF2 offering HIBERNATE_OFF
    assert moved.before == sees("7.2.y") == [0x10003, 1]
    assert not moved.completed and moved.after is None
    assert "Failed to load cpu:cpreg_vmstate_array_len" in moved.qemu_error
    assert "0x6030" not in moved.qemu_error and "PSCI" not in moved.qemu_error


def test_older_to_newer_kernel_is_refused_too() -> None:
    moved = migrate("5.10", "7.2", "bookworm", CALLS, default_cache())
    assert moved.before == sees("5.10.y") == [0x10000, -1]
    assert not moved.completed
    assert "error while loading state for instance 0x0 of device 'cpu'" in moved.qemu_error
