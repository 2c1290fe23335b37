"""A QEMU migration stream of an arm64 KVM VM as a fingerprint of the host it was saved on, so
the streams a fleet already has (saved VMs, failed migrations kept for a bug report) count.

QEMU carries every KVM register it syncs in the vcpu's cpreg list (migration_stream.py finds
it); the firmware-class ones among them are the host's firmware registers as the VM held
them, and MIDR_EL1/REVIDR_EL1 among the rest name the CPU the vcpu saw. The stream says
neither the kernel nor what a VMM may set: the kernel is the user's word (--kernel), and the
values a host accepts are inferred from the registers, as the file says. A register QEMU was
told to set (QEMU 11's kvm-psci-version) reads what it was told, which the stream cannot tell
from a default: provenance says that too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.analyses.dump_fingerprint import firmware_rows, read_levels
from kvm_fwspec.conformance.analyses.fingerprint import FORMAT
from kvm_fwspec.conformance.analyses.firecracker_fingerprint import MIDR_EL1, REVIDR_EL1
from kvm_fwspec.conformance.analyses.migration_stream import StreamError, cpregs
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.model import Spec

SOURCE = "QEMU migration stream (the vcpu's cpreg list)"
ARCH = "arm64"  # the only stream layout migration_stream reads
INFERENCE = (
    "accepts inferred from the registers the VM held: KVM's default PSCI version is the "
    "newest it takes, down to 0.2; a bitmap KVM resets to its known bits has its default as its "
    "mask; an opt-in bitmap's (reset to 0) and a level's settable values are not recorded; a "
    "value the VMM set (QEMU 11's kvm-psci-version) is taken as the default"
)
NOT_RECORDED = {
    "capabilities": "a migration stream records no KVM_CHECK_EXTENSION answer",
    "reg-list-length": "QEMU's cpreg list leaves out the core and SVE registers KVM lists",
}
NO_CPU = "the stream's cpreg list has no MIDR_EL1"


def import_qemu_stream(spec: Spec, path: Path, host: str, kernel_text: str) -> dict[str, Any]:
    """The fingerprint of the host of `kernel_text` that saved the stream at `path`, or one
    line saying why the file is not such a stream."""
    kernel = parse_kernel_name(spec, kernel_text)  # a wrong --kernel costs no reading
    try:
        registers = cpregs(_read(path))
    except StreamError as exc:
        raise UsageError(f"{path}: not a QEMU arm64 migration stream: {exc}") from None
    rows = firmware_rows(spec, ARCH, registers)
    if not rows:
        raise UsageError(f"{path}: the vcpu's registers include no firmware register")
    return {
        "format": FORMAT,
        "host": host,
        "implementation": f"Linux KVM {kernel_text} through QEMU (imported)",
        "provenance": {"source": SOURCE, "file": path.name, "inferred": INFERENCE},
        "kernel": {
            "reported": kernel_text,
            "judged-as": str(kernel),
            "how": f"given with --kernel (a stream does not record it): {kernel.how}",
        },
        "arch": ARCH,
        "cpu": _cpu(registers),
        "host-levels": read_levels(spec, ARCH, registers) or None,
        "registers": rows,
        "reg-list-length": None,
        "not-recorded": NOT_RECORDED if MIDR_EL1 in registers else NOT_RECORDED | {"cpu": NO_CPU},
    }


def _cpu(registers: dict[int, int]) -> dict[str, str | None] | None:
    """The CPU the vcpu saw: MIDR_EL1 and REVIDR_EL1, which QEMU syncs with the rest (KVM
    gives a vcpu the host's, unless the VMM wrote others)."""
    if MIDR_EL1 not in registers:
        return None
    revidr = registers.get(REVIDR_EL1)
    return {"midr": hex(registers[MIDR_EL1]), "revidr": None if revidr is None else hex(revidr)}


def _read(path: Path) -> bytes:
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, not a QEMU migration stream")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
