"""What a certification run is about: an architecture, a kernel release and a host profile."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.model import HostProfile, Lifetime, Register, Release, Spec


class TableRule(Protocol):
    """A row of a decision table of its own (the SMCCC filter's, the vcpu power tables)."""

    @property
    def lifetime(self) -> Lifetime: ...
    @property
    def when(self) -> rl.Expr | None: ...


RuleT = TypeVar("RuleT", bound=TableRule)


@dataclass(frozen=True)
class Profile:
    """The KVM an implementation claims to be: which release, on which host, for which arch."""

    arch: str
    release: Release
    host: HostProfile
    stable: bool = False

    @property
    def kernel(self) -> str:
        """`6.1` for the release as Linus tagged it, `6.1.y` for its newest stable release."""
        return f"{self.release}.y" if self.stable else str(self.release)

    @property
    def label(self) -> str:
        return f"{self.arch} {self.kernel} host={self.host.name}"

    def has(self, lifetime: Lifetime) -> bool:
        return lifetime.covers(self.release, self.stable)

    def deciding(self, table: Iterable[RuleT], names: Mapping[str, rl.Value]) -> RuleT:
        """The first rule of `table` this release has whose `when` holds for `names`; the
        loader makes every table end in a default, so there is always one."""
        for rule in table:
            if self.has(rule.lifetime) and (rule.when is None or rl.evaluate(rule.when, names)):
                return rule
        raise AssertionError("the spec's table has no default")  # the loader checks


LEVELS_PREFIX = "levels:"


def level_registers(spec: Spec) -> list[Register]:
    return [r for r in spec.registers if r.kind == "level"]


def levels_profile(spec: Spec, host: str) -> HostProfile:
    """A host profile spelled by its levels, `levels:not-required/not-avail/not-avail`, in the
    order of the spec's workaround registers: what a real host reports need not be named."""
    names = host.removeprefix(LEVELS_PREFIX).split("/")
    registers = level_registers(spec)
    if len(names) != len(registers):
        raise UsageError(
            f"'{host}' needs {len(registers)} levels, for {', '.join(r.name for r in registers)}"
        )
    levels = {}
    for register, name in zip(registers, names, strict=True):
        value = next((v for v in register.values if v.name == name), None)
        if value is None:
            raise UsageError(f"{register.name} has no level '{name}'")
        levels[register.name] = value
    named = next((h for h in spec.host_profiles if h.levels == levels), None)
    return named or HostProfile(
        name=host, doc=f"A host whose workaround registers report {host}.", levels=levels
    )


def observed_host(spec: Spec, reported: dict[str, int]) -> str:
    """The host profile name for levels a real KVM reported by number."""
    names = []
    for register in level_registers(spec):
        value = next((v for v in register.values if v.value == reported.get(register.name)), None)
        if value is None:
            raise UsageError(
                f"{register.name} reported {reported.get(register.name)}, not a level the spec defines"
            )
        names.append(value.name)
    profile = levels_profile(spec, LEVELS_PREFIX + "/".join(names))
    return profile.name


def resolve_profile(spec: Spec, kernel: str, host: str, arch: str = "arm64") -> Profile:
    """Validate user-given names against the spec; `latest` is the newest release it knows."""
    name = parse_kernel_name(spec, kernel)
    release, stable = name.release, name.stable
    found = levels_profile(spec, host) if host.startswith(LEVELS_PREFIX) else None
    found = found or next((h for h in spec.host_profiles if h.name == host), None)
    if found is None:
        names = ", ".join(h.name for h in spec.host_profiles)
        raise UsageError(
            f"host profile '{host}' is not one of: {names}, or {LEVELS_PREFIX}LEVEL/LEVEL/LEVEL"
        )
    architecture = next((a for a in spec.architectures if a.name == arch), None)
    if architecture is None:
        names = ", ".join(a.name for a in spec.architectures)
        raise UsageError(f"no architecture '{arch}' in the spec: it has {names}")
    if not architecture.lifetime.covers(release):
        raise UsageError(f"KVM on {arch} hosts does not exist in {release}")
    return Profile(arch, release, found, stable)


def claims_profile(spec: Spec, claimed: str, profile: Profile) -> bool:
    """Whether an implementation that says it is KVM `claimed` (in any form --kernel takes:
    `6.1`, `6.1.y`, a `uname -r`) may be held to `profile`. A bare release is accepted for its
    stable series too (older agents name only the release; the stable cases still judge it);
    a stable kernel is never accepted as the release Linus tagged, nor one line as another."""
    try:
        name = parse_kernel_name(spec, claimed)
    except UsageError:
        return False
    return name.release == profile.release and (profile.stable or not name.stable)
