"""The host CPU as arm64 Linux shows it: MIDR_EL1 and REVIDR_EL1 of cpu0, from sysfs.

arch/arm64/kernel/cpuinfo.c publishes both under regs/identification of each CPU as
`0x%016llx` lines. A fleet plan lists the CPUs of each pool by MIDR (implementer, part,
variant and revision) and REVIDR (which errata the part has fixed). Stdlib only: the real-KVM
agent reads them inside a minimal guest.
"""

from __future__ import annotations

from pathlib import Path

IDENTIFICATION = Path("/sys/devices/system/cpu/cpu0/regs/identification")


def _register(path: Path) -> str | None:
    """The register's value as lowercase hex without leading zeros, or None when the file is
    missing or unreadable (not arm64 Linux, or a sysfs without it)."""
    try:
        text = path.read_text(encoding="ascii").strip()
        return hex(int(text, 16))
    except (OSError, ValueError):
        return None


def host_cpu(identification: Path = IDENTIFICATION) -> dict[str, str | None] | None:
    """The hello's `cpu`: {"midr": ..., "revidr": ... or None}, or None when MIDR_EL1
    cannot be read, since a CPU without it is no CPU a fleet can be told about."""
    midr = _register(identification / "midr_el1")
    if midr is None:
        return None
    return {"midr": midr, "revidr": _register(identification / "revidr_el1")}
