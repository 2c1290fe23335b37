"""Firecracker's `cpu-template-helper fingerprint dump` files as kvm-fwspec fingerprints, so a
fleet's existing data counts. Such a file records each vcpu register's value on a fresh VM
(`guest_cpu_config.reg_modifiers`, bitmaps written `0b...`) but not what a VMM may set: the
values a host accepts are inferred from its defaults, and the file says so."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.analyses.accepts_inference import INFERENCE, inferred_accepts
from kvm_fwspec.conformance.analyses.fingerprint import FORMAT, judged_by_registers
from kvm_fwspec.conformance.analyses.json_file import read_json
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.model import Spec

SOURCE = "firecracker cpu-template-helper fingerprint dump"
# KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG, then the register's encoding
# (op0 << 14 | op1 << 11 | CRn << 7 | CRm << 3 | op2), as arch/arm64/include/uapi/asm/kvm.h
# builds ARM64_SYS_REG(): what KVM_GET_ONE_REG reads MIDR_EL1 and REVIDR_EL1 by.
SYSREG_BASE = 0x6030_0000_0013_0000


def _sysreg(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    return SYSREG_BASE | op0 << 14 | op1 << 11 | crn << 7 | crm << 3 | op2


MIDR_EL1 = _sysreg(3, 0, 0, 0, 0)
REVIDR_EL1 = _sysreg(3, 0, 0, 0, 6)


def import_firecracker(spec: Spec, path: Path, host: str) -> dict[str, Any]:
    """The fingerprint of the host `path` was dumped on, or one line saying why it is not one."""
    document = read_json(path, "a Firecracker fingerprint")
    try:
        kernel_text = document["kernel_version"]
        modifiers = document["guest_cpu_config"]["reg_modifiers"]
        values = {int(m["addr"], 16): _bitmap(m["bitmap"]) for m in modifiers}
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: not a Firecracker fingerprint: no {exc}") from None
    known = {int(r.ids["arm64"]): r for r in spec.registers if "arm64" in r.ids}
    firmware_class = spec.layout("reg-id").field("class")
    classes = {r.register_class.value for r in spec.registers}
    firmware = sorted(i for i in values if firmware_class.extract(i) in classes)
    if not firmware:
        raise UsageError(f"{path}: records no firmware register: is it an arm64 host's?")
    try:
        kernel = parse_kernel_name(spec, kernel_text)
    except UsageError as refused:
        if not _older_than_the_spec(spec, kernel_text):  # not a kernel, or a newer one
            raise UsageError(f"{path}: kernel_version: {refused}") from None
        kernel = judged_by_registers(spec, kernel_text, "arm64", {i: values[i] for i in firmware})
    return {
        "format": FORMAT,
        "host": host,
        "implementation": f"Linux KVM {kernel_text} (imported)",
        "provenance": {"source": SOURCE, "file": path.name, "inferred": INFERENCE},
        "kernel": {"reported": kernel_text, "judged-as": str(kernel), "how": kernel.how},
        "arch": "arm64",
        "cpu": _cpu(values),
        "host-levels": None,
        "registers": [
            {
                "name": known[i].name if i in known else None,
                "id": hex(i),
                "default": hex(values[i]),
                "accepts": inferred_accepts(spec, known.get(i), values[i]),
            }
            for i in firmware
        ],
        "reg-list-length": len(values),
        "not-recorded": _not_recorded(values),
    }


def _older_than_the_spec(spec: Spec, kernel_text: str) -> bool:
    """A kernel line older than the spec's first release (Amazon Linux 2's 4.14), which a
    distribution may have given the firmware registers by backport: judged by its registers."""
    found = re.match(r"(\d+)\.(\d+)\b", kernel_text)
    return found is not None and (int(found[1]), int(found[2])) < (
        spec.releases[0].major,
        spec.releases[0].minor,
    )


def _cpu(values: dict[int, int]) -> dict[str, str | None] | None:
    """The host CPU from the vcpu's MIDR_EL1 and REVIDR_EL1, which KVM passes through."""
    if MIDR_EL1 not in values:
        return None
    revidr = values.get(REVIDR_EL1)
    return {"midr": hex(values[MIDR_EL1]), "revidr": None if revidr is None else hex(revidr)}


def _not_recorded(values: dict[int, int]) -> dict[str, str]:
    missing = {"capabilities": "the Firecracker file records none for arm64"}
    if MIDR_EL1 not in values:
        missing["cpu"] = "the Firecracker file has no MIDR_EL1"
    return missing


def _bitmap(text: str) -> int:
    """`0b0...01`: Firecracker writes each register as a 128-bit bitmap of 0 and 1 only."""
    if not text.startswith("0b") or set(text[2:]) - {"0", "1"}:
        raise ValueError(f"bitmap {text[:20]!r}")
    return int(text[2:], 2)
