"""QEMU's save and restore of a running guest between real kernels, as QEMU itself does it:
the same-kernel control resumes the guest seeing what it saw, and cross-kernel loads are
refused: QEMU 7.2 names no register, QEMU 11 names each one, and the firmware one is the one
migrate-check predicts."""

from __future__ import annotations

import re

from codegen.loader import load_spec
from conformance import migration
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


def test_qemu_11_names_the_firmware_registers_migrate_check_predicts() -> None:
    """Unstable's QEMU reports each register it could not set or does not know; the firmware
    ones are the registers migrate-check says 5.10 refuses, but for one QEMU never sent."""
    moved = migrate("7.2", "5.10", "unstable", CALLS, default_cache())
    assert not moved.completed
    # Firmware register 0 is KVM_REG_ARM_PSCI_VERSION: the source's 1.3 where 5.10 holds 1.0.
    refused_values = set(
        re.findall(r"Could not set register fw reg (\d+) to (\w+) \(is (\w+)\)", moved.qemu_error)
    )
    assert refused_values == {("0", "10003", "10000")}
    unknown = re.findall(r"fw feat reg (\d+) in the incoming stream but unknown", moved.qemu_error)
    named = {0x6030000000140000 + int(n) for n, _, _ in refused_values}
    named |= {0x6030000000160000 + int(n) for n in unknown}

    source = migration.side_from_profile(SPEC, "7.2.y:v2-unaffected-ssbs:psci-0.2")
    target = migration.side_from_profile(SPEC, "5.10.y:v2-bhb-unaffected-ssbs:psci-0.2")
    report = migration.check(SPEC, source, target.profile, target.features)
    predicted = {v.reg_id: (v.name, v.errno, v.rule) for v in report.registers if not v.restored}
    assert named <= set(predicted)
    assert predicted[0x6030000000140000] == (
        "psci-version",
        "EINVAL",
        "psci-version/set/reject-unimplemented",
    )
    # KVM 7.2 lists VENDOR_HYP_BMAP_2, but QEMU 11 leaves it out of the stream it saves.
    assert {predicted[r][0] for r in set(predicted) - named} == {"vendor-hyp-bmap-2"}
    # QEMU also refuses ID registers 5.10 will not take: not firmware registers.
    assert "Could not set register system register" in moved.qemu_error
