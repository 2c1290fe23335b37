"""What VMM certification observes of one save and one migration: the evidence the judge
reads. The lab gathers it; keeping the records here lets the judge run on recorded evidence
without the lab."""

from __future__ import annotations

from dataclasses import dataclass, field

PSCI_SETTING = "kvm-psci-version"  # QEMU 11's cpu property for the guest's PSCI version


@dataclass(frozen=True)
class Saved:
    """A guest QEMU saved on one kernel, and what that kernel's KVM offers QEMU's vcpu."""

    kernel: str  # the kernel line, e.g. "5.10"
    uname: str
    build: str
    setting: str | None  # the PSCI version QEMU was told to give the guest (None: its default)
    qemu: str  # QEMU's own version
    before: list[int]  # the guest's answers in its last whole round before the save
    registers: dict[int, int]  # the stream's register list
    listed: list[int]  # KVM_GET_REG_LIST of a vcpu with QEMU's features, on this host
    features: list[str]  # the vcpu features this KVM offers, as `-cpu host` takes them
    properties: dict[str, str]  # QOM properties of QEMU's machine and cpu, with descriptions
    stream: bytes = field(repr=False)


@dataclass(frozen=True)
class Load:
    """One migration: a saved guest loaded and (if QEMU accepts it) resumed on `target`."""

    source: Saved
    target: str
    completed: bool
    qemu_error: str  # QEMU's own words when it refused
    after: list[int] | None  # the guest's answers on the target, when it ran there
    held: dict[int, int] | None  # the target's registers, saved again after the resume
    target_listed: list[int]  # KVM_GET_REG_LIST of QEMU's vcpu on the target
    answers: dict[int, str | None]  # the target KVM's errno for SET of each saved register
