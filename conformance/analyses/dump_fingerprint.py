"""This project's `kvm-fwspec dump` files as fingerprints, so dumps already taken (real KVM's
among them, `migrate-proof` keeps them) count in fleet planning without a host to ask again.

A dump records a fresh VM's firmware registers and where it ran (kernel, host profile), but
not what a VMM may set: the values a host accepts are inferred from its defaults, and the
file says so. Only a dump of the defaults is one: a dump of PSCI 0.1 vcpus, or one whose PSCI
version was pinned, shows what the VMM asked for, not what the host offers. A dump whose
workaround registers read other levels than its own host profile names contradicts itself
and is refused, since either half could be the edit.

The helpers below (`firmware_rows`, `read_levels`) are shared with the other importers that
hold a register list (qemu_stream_fingerprint).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.analyses.accepts_inference import INFERENCE, inferred_accepts
from kvm_fwspec.conformance.analyses.dump import FORMAT as DUMP_FORMAT
from kvm_fwspec.conformance.analyses.dump_file import SavedDump, read_dump
from kvm_fwspec.conformance.analyses.fingerprint import FORMAT
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.model import Spec

SOURCE = "kvm-fwspec dump"
NOT_RECORDED = {
    "cpu": "a dump records no MIDR_EL1/REVIDR_EL1",
    "capabilities": "a dump records no KVM_CHECK_EXTENSION answer",
    "reg-list-length": "a dump saves the firmware registers only, not KVM_GET_REG_LIST whole",
}


def import_dump(spec: Spec, path: Path, host: str) -> dict[str, Any]:
    """The fingerprint of the host `path` was dumped on, or one line saying why it is not one."""
    document = _document(path)
    saved = read_dump(spec, path)  # every problem of a damaged dump, one line each
    pinned = document.get("psci-version-set")
    if saved.features != ("psci-0.2",):
        raise UsageError(
            f"{path}: features: the dump is of PSCI 0.1 vcpus, and a fingerprint is of a fresh "
            "VM of PSCI 0.2 vcpus: dump again with --features psci-0.2"
        )
    if pinned is not None:
        raise UsageError(
            f"{path}: psci-version-set: the dump's PSCI version was set to {pinned:#x}, so it "
            "does not show the host's default: dump again without --psci-version"
        )
    arch = saved.profile.arch
    levels = read_levels(spec, arch, saved.registers)
    _check_levels(path, spec, saved, levels)
    _check_psci(path, spec, arch, saved.registers)
    kernel = parse_kernel_name(spec, saved.profile.kernel)
    provenance = dict(document.get("provenance", {}))
    return {
        "format": FORMAT,
        "host": host,
        "implementation": f"{saved.implementation} (imported)",
        "provenance": provenance | {"source": SOURCE, "file": path.name, "inferred": INFERENCE},
        "kernel": {
            "reported": provenance.get("kernel-uname", saved.profile.kernel),
            "judged-as": str(kernel),
            "how": f"the dump's kernel, {saved.profile.kernel}: {kernel.how}",
        },
        "arch": arch,
        "cpu": None,
        "host-levels": levels or None,
        "registers": firmware_rows(spec, arch, saved.registers),
        "reg-list-length": None,
        "not-recorded": NOT_RECORDED,
    }


def _document(path: Path) -> Any:
    """The file's JSON, for what SavedDump does not keep (the pin, the provenance); a file of
    another format is refused here in one line, rather than as every key a dump lacks. What
    cannot be read, read_dump says."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(document, dict) and document.get("format") != DUMP_FORMAT:
        if "format" not in document:
            hint = (
                "; a Firecracker fingerprint? use --from-firecracker"
                if ("guest_cpu_config" in document)
                else ""
            )
            raise UsageError(f"{path}: not a kvm-fwspec dump: it has no 'format' key{hint}")
        raise UsageError(
            f"{path}: not a kvm-fwspec dump: its format is {document['format']!r}, "
            f"not {DUMP_FORMAT!r}"
        )
    return document


def firmware_rows(spec: Spec, arch: str, registers: Mapping[int, int]) -> list[dict[str, Any]]:
    """A fingerprint's `registers`: each firmware-class id of `registers`, by id, with its
    default and what it accepts inferred from that default (null where nothing can be)."""
    layout = spec.layout("reg-id")
    firmware = {v.value for v in layout.field("class").values if v.firmware}
    known = {int(r.ids[arch]): r for r in spec.registers if arch in r.ids}
    return [
        {
            "name": known[reg_id].name if reg_id in known else None,
            "id": hex(reg_id),
            "default": hex(value),
            "accepts": inferred_accepts(spec, known.get(reg_id), value),
        }
        for reg_id, value in sorted(registers.items())
        if layout.field("class").extract(reg_id) in firmware
    ]


def read_levels(spec: Spec, arch: str, registers: Mapping[int, int]) -> dict[str, int]:
    """The host's workaround levels, as its level registers read on a fresh VM (what an
    agent's hello reports), by register name; a register the kernel lacks is left out."""
    return {
        r.name: registers[int(r.ids[arch])]
        for r in spec.registers
        if r.kind == "level" and arch in r.ids and int(r.ids[arch]) in registers
    }


def _check_levels(path: Path, spec: Spec, saved: SavedDump, levels: dict[str, int]) -> None:
    host = saved.profile.host
    for name, value in levels.items():
        expected = host.levels.get(name)
        if expected is None:
            continue
        if value != expected.value:
            raise UsageError(
                f"{path}: registers: {name} reads {value:#x}, but the dump's host-profile "
                f"{host.name} has it at {expected.value:#x} ({expected.name}): the file "
                "contradicts itself"
            )


def _check_psci(path: Path, spec: Spec, arch: str, registers: Mapping[int, int]) -> None:
    """A PSCI 0.2 vcpu reads PSCI 0.2 or newer: 0.1 there contradicts the dump's features."""
    register = next(r for r in spec.registers if r.kind == "psci-version")
    value = registers.get(int(register.ids[arch])) if arch in register.ids else None
    if value is not None and value < 2:
        raise UsageError(
            f"{path}: registers: {register.name} reads {value:#x}, below PSCI 0.2 (0x2), on "
            "the PSCI 0.2 vcpus the dump's features name: the file contradicts itself"
        )
