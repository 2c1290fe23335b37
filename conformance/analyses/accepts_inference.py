"""What a host takes, inferred from what a fresh VM of it reads: for the importers, whose
sources record defaults only (Firecracker's fingerprint dump, `kvm-fwspec dump` files, QEMU
migration streams), and for fleet planning of any fingerprint that did not record it."""

from __future__ import annotations

from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.model import Register, Spec

INFERENCE = (
    "accepts inferred from the defaults: KVM's default PSCI version is the newest it takes, "
    "down to 0.2; a bitmap KVM resets to its known bits has its default as its mask; an "
    "opt-in bitmap's (reset to 0) and a level's settable values are not recorded"
)


def inferred_accepts(spec: Spec, register: Register | None, default: int) -> list[str] | None:
    """What a host whose `register` reads `default` on a fresh VM takes, as far as the default
    says: every PSCI version from 0.2 up to it (KVM's default is the newest it implements), or
    each bit of a bitmap the spec resets to `known-bits` (KVM offers a new VM every service
    it has). An opt-in bitmap (VENDOR_HYP_BMAP_2 resets to 0 whatever KVM knows) and a level
    register (its value is the host's level) say nothing of what else KVM takes: None."""
    if register is None or register.kind == "level":
        return None
    if register.kind == "psci-version":
        versions = {v.encoded for v in spec.psci_versions if 2 <= v.encoded <= default}
        return [hex(v) for v in sorted(versions | {default})]
    if register.reset != rl.Name("known-bits"):
        return None
    return [hex(1 << bit) for bit in range(64) if default >> bit & 1]
