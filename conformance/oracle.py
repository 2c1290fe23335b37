"""Expected outcomes, straight from the spec's decision tables.

Given everything a rule may depend on (the vcpu, the VM, the host, the id and the value), walk
the class's rules then the register's and return the first that applies. The implementation
under test is never consulted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.model import PsciFunction, Register, Rule, Spec

NOT_SUPPORTED = -1


@dataclass(frozen=True, kw_only=True)
class Access:
    """One KVM_GET_ONE_REG / KVM_SET_ONE_REG / KVM_GET_REG_LIST as the rules see it."""

    op: str
    reg_id: int
    vcpu_initialized: bool
    psci_02: bool
    has_run: bool
    stored: Mapping[str, int]
    value: int | None = None

    @classmethod
    def before_first_run(
        cls,
        op: str,
        reg_id: int,
        psci_02: bool,
        stored: Mapping[str, int],
        value: int | None = None,
    ) -> Access:
        """An access as a VMM makes it while creating or restoring a VM: its vcpus
        initialised, none of them run yet."""
        return cls(
            op=op,
            reg_id=reg_id,
            vcpu_initialized=True,
            psci_02=psci_02,
            has_run=False,
            stored=stored,
            value=value,
        )


@dataclass(frozen=True)
class Decision:
    """The rule that decides an access, and what it says happens."""

    rule: Rule
    errno: str | None = None
    value: int | None = None
    store: int | None = None
    listed: bool | None = None
    undefined: str | None = None


class Oracle:
    """Decision tables of one profile, ready to answer accesses."""

    def __init__(self, spec: Spec, profile: Profile) -> None:
        self.spec = spec
        self.profile = profile
        layout = spec.layout("reg-id")
        self.size_field = layout.field("size")
        self.class_field = layout.field("class")
        self.index_field = layout.field("index")
        self.registers = [
            r for r in spec.registers if r.exists_on(profile.arch, profile.release, profile.stable)
        ]
        self.psci_versions = frozenset(
            v.encoded for v in spec.psci_versions if profile.has(v.lifetime)
        )
        self.psci_latest = spec.psci_latest_in(profile.release).encoded

    def register_for(self, reg_id: int) -> Register | None:
        return next((r for r in self.registers if r.ids[self.profile.arch] == reg_id), None)

    def bitmap_allows(self, service: str, stored: Mapping[str, int]) -> bool:
        """Whether a VM with `stored` values lets its guest call `service`: no bitmap bit of
        this release gates it, or the VM's bit is set."""
        for register in self.registers:
            for bit in register.bits:
                gated = bit.service is not None and bit.service.name == service
                if gated and self.profile.has(bit.lifetime):
                    return bool(stored.get(register.name, 0) & bit.mask)
        return True

    def reset_values(self) -> dict[str, int]:
        """Each stored register's value in a new VM."""
        values = {}
        for register in self.registers:
            if register.reset is not None:
                new_vm = Access(
                    op="get",
                    reg_id=register.ids[self.profile.arch],
                    vcpu_initialized=True,
                    psci_02=True,
                    has_run=False,
                    stored={},
                )
                values[register.name] = rl.evaluate_int(
                    register.reset, self.names(register, new_vm)
                )
        return values

    def psci_handled(
        self, function: PsciFunction, version: int, enabled: frozenset[str] = frozenset()
    ) -> bool:
        """Whether KVM of this profile answers `function` for a guest at PSCI `version`, on a
        VM with the capabilities `enabled` (KVM_ENABLE_CAP) that the function may need."""
        kvm = function.kvm
        return (
            kvm is not None
            and (kvm.needs_capability is None or kvm.needs_capability.name in enabled)
            and version >= kvm.from_version.encoded
            and self.profile.has(kvm.lifetime)
        )

    def psci_features(self, fid: int, version: int, enabled: frozenset[str] = frozenset()) -> int:
        """What the guest's PSCI_FEATURES(fid) returns at PSCI `version` (on a VM with the
        capabilities `enabled`)."""
        functions = self.spec.psci_functions
        if not self.psci_handled(next(f for f in functions if f.name == "psci-features"), version):
            return NOT_SUPPORTED
        for function in functions:
            if fid in function.ids.values():
                kvm = function.kvm
                handled = kvm and self.psci_handled(function, version, enabled)
                return kvm.features if kvm and handled else NOT_SUPPORTED
        smccc = next(f for f in self.spec.smccc_functions if f.function_id == fid)
        return smccc.psci_features if smccc.psci_features is not None else NOT_SUPPORTED

    def known_bits(self, register: Register) -> int:
        mask = 0
        for bit in register.bits:
            if self.profile.has(bit.lifetime):
                mask |= bit.mask
        return mask

    def names(self, register: Register | None, access: Access) -> dict[str, rl.Value]:
        """A value for each name a rule about `access` may use: exactly the names
        spec/rule_names.py gives its register and op (tests/test_rule_names.py checks)."""
        names: dict[str, rl.Value] = {
            "vcpu.initialized": access.vcpu_initialized,
            "vcpu.psci-0.2": access.psci_02,
            "vm.has-run": access.has_run,
            "reg.known": register is not None,
            "reg.size": self.size_field.extract(access.reg_id),
            "kernel.psci-latest": self.psci_latest,
            "kernel.psci-versions": self.psci_versions,
        }
        names.update({f"size.{v.name}": v.value for v in self.size_field.values})
        if access.value is not None:
            names["value"] = access.value
        if register is None:
            return names
        if access.value is not None:
            names.update({f"value.{f.name}": f.extract(access.value) for f in register.layout})
        if register.storage == "vm":
            names["stored"] = access.stored.get(register.name, 0)
        if register.kind == "level":
            names["host.level"] = self.profile.host.levels[register.name].value
        if register.kind == "bitmap":
            names["known-bits"] = self.known_bits(register)
        names.update({v.name: v.value for v in register.values})
        names.update({f"bit.{b.name}": b.mask for b in register.bits})
        return names

    def table(self, op: str, reg_id: int) -> list[Rule]:
        """The rules that apply to this id and op in this profile, in decision order."""
        class_value = self.class_field.extract(reg_id)
        register = self.register_for(reg_id)
        arch = self.profile.arch
        return [
            rule
            for rule in self.spec.rules
            if rule.op == op
            and arch in rule.architectures
            and self.profile.has(rule.lifetime)
            and (
                (rule.register_class is not None and rule.register_class.value == class_value)
                or (rule.register is not None and rule.register is register)
            )
        ]

    def decide(self, access: Access) -> Decision | None:
        """The deciding rule and its outcome; None where the spec has no rule for the access."""
        register = self.register_for(access.reg_id)
        names = self.names(register, access)
        for rule in self.table(access.op, access.reg_id):
            if rule.when is not None and not rl.evaluate(rule.when, names):
                continue
            return Decision(
                rule,
                errno=rule.errno.name if rule.errno else None,
                value=rl.evaluate_int(rule.value, names) if rule.value else None,
                store=rl.evaluate_int(rule.store, names) if rule.store else None,
                listed=rule.listed,
                undefined=rule.undefined,
            )
        return None
