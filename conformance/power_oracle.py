"""Expected outcomes of CPU_ON, CPU_OFF, AFFINITY_INFO and KVM_RUN over several vcpus, straight
from spec/psci.yaml's `power` tables.

A VM's vcpus are each on or stopped; the tables decide a call by the names spec/power_names.py
declares, computed here from the spec's MPIDR layout and those states, and say what state the
call leaves its caller, its target or every vcpu in. The first rule of the profile's release
whose `when` holds decides, as for the registers.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.model import PowerRule, Spec, VcpuPower

U32 = (1 << 32) - 1
STOPPED = "stopped"


@dataclass
class VcpuStates:
    """The mp-state of each vcpu of one VM, by vcpu index."""

    states: list[str]

    def on(self, index: int) -> bool:
        return self.states[index] != STOPPED


@dataclass(frozen=True)
class PowerCall:
    """A guest's CPU_ON or AFFINITY_INFO as KVM reads it: which function and x1 to x3."""

    op: str
    args: tuple[int, ...]
    smc32: bool  # a standard SMC32 id: KVM narrows x1 to x3 to 32 bits

    def words(self) -> list[int]:
        words = [*self.args, 0, 0, 0][:3]
        return [w & U32 for w in words] if self.smc32 else words


class PowerOracle:
    """The power tables for one profile."""

    def __init__(self, spec: Spec, profile: Profile) -> None:
        self.power: VcpuPower = spec.vcpu_power
        self.events = {e.name: e.value for e in spec.system_events}
        self.profile = profile
        self.runnable = spec.vcpu_power.table("run")[-1].caller  # what a vcpu that is on is in

    def initial(self, vcpus: int, powered_off: tuple[int, ...]) -> VcpuStates:
        assert self.runnable is not None
        on, off = self.runnable.name, self.power.off_state.name
        return VcpuStates([off if i in powered_off else on for i in range(vcpus)])

    def decide(self, op: str, names: dict[str, rl.Value]) -> PowerRule:
        return self.profile.deciding(self.power.table(op), names)

    def _affinities(self, vm: VcpuStates) -> dict[int, bool]:
        return {self.power.mpidr_affinity(i): vm.on(i) for i in range(len(vm.states))}

    def run_names(self, vm: VcpuStates, vcpu: int) -> dict[str, rl.Value]:
        """Exactly the names spec/power_names.py gives `run` rules (tests/test_rule_names.py)."""
        return {"vcpu.on": vm.on(vcpu)}

    def cpu_on_names(
        self, vm: VcpuStates, call: PowerCall, caller_psci_02: bool
    ) -> dict[str, rl.Value]:
        target = call.words()[0]
        affinities = self._affinities(vm)
        wanted = target & self.power.hwid_mask
        return {
            "call.target": target,
            "hwid-mask": self.power.hwid_mask,
            "caller.psci-0.2": caller_psci_02,
            "target.exists": wanted in affinities,
            "target.on": affinities.get(wanted, False),
        }

    def affinity_info_names(self, vm: VcpuStates, call: PowerCall) -> dict[str, rl.Value]:
        target, level = call.words()[:2]
        mask = self.power.level_mask(level)
        matching = [
            on for aff, on in self._affinities(vm).items() if mask and aff & mask == target & mask
        ]
        return {
            "call.target": target,
            "call.level": level,
            "hwid-mask": self.power.hwid_mask,
            "matching": len(matching),
            "matching-on": sum(matching),
        }

    def system_event_names(self, event: str) -> dict[str, rl.Value]:
        """Exactly the names spec/power_names.py gives `system-event` rules."""
        names: dict[str, rl.Value] = {"event.type": self.events[event]}
        names.update({f"system-event.{name}": value for name, value in self.events.items()})
        return names

    def run(self, vm: VcpuStates, vcpu: int) -> PowerRule:
        return self.decide("run", self.run_names(vm, vcpu))

    def call(
        self, vm: VcpuStates, vcpu: int, call: PowerCall, caller_psci_02: bool = True
    ) -> PowerRule:
        """The deciding rule of a power call by `vcpu`; the states it leaves are applied."""
        if call.op == "cpu-on":
            names = self.cpu_on_names(vm, call, caller_psci_02)
        elif call.op == "affinity-info":
            names = self.affinity_info_names(vm, call)
        else:
            names = {}
        rule = self.decide(call.op, names)
        if rule.target is not None:
            wanted = call.words()[0] & self.power.hwid_mask
            index = next(i for i in range(len(vm.states)) if self.power.mpidr_affinity(i) == wanted)
            vm.states[index] = rule.target.name
        if rule.caller is not None:
            vm.states[vcpu] = rule.caller.name
        return rule

    def system_event(self, vm: VcpuStates, vcpu: int, event: str) -> PowerRule:
        """The rule for a call by `vcpu` that exits with `event`; its states are applied."""
        rule = self.decide("system-event", self.system_event_names(event))
        if rule.every_vcpu is not None:
            vm.states[:] = [rule.every_vcpu.name] * len(vm.states)
        if rule.caller is not None:
            vm.states[vcpu] = rule.caller.name
        return rule
