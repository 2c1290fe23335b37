"""The resolved, typed spec: the one object model every generator and the reference reads.

Raw YAML never leaves the loader. Everything here is frozen, ids are already composed from
their fields, and cross references are resolved to the objects they name.

Records are keyword-only, as the kernel's designated initialisers are, so that two fields of one
type (`exit_reasons` and `system_events`, a `name` and its `doc`) can never be swapped silently.
A `Release` stays positional: `Release(6, 1)` is written the way the version is.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from functools import total_ordering
from typing import Literal

from kvm_fwspec.spec.rule_language import Expr


@total_ordering
@dataclass(frozen=True)
class Release:
    """A Linux release such as 6.1, ordered numerically (5.10 comes after 5.9)."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Release:
        major, minor = text.split(".")
        return cls(int(major), int(minor))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Release):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where a fact comes from, and the real kernels it was confirmed on."""

    file: str
    note: str = ""
    confirmed_on: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class KernelDocs:
    """A place where the kernel's documentation and its code disagree."""

    file: str
    says: str
    code_does: str
    real_kvm_follows: str


@dataclass(frozen=True)
class Lifetime:
    """The releases in which a thing exists: [since, until), plus stable backports."""

    since: Release
    _: KW_ONLY  # `Lifetime(since)` reads plainly; an `until` must be named, never swapped with it
    until: Release | None = None
    backports: tuple[Release, ...] = ()

    def covers(self, release: Release, stable: bool = False) -> bool:
        """Whether the thing exists in `release`; with `stable`, in the newest stable release
        of that line, which also has what was backported to it."""
        if self.until is not None and release >= self.until:
            return False
        return self.since <= release or (stable and release in self.backports)


@dataclass(frozen=True, kw_only=True)
class Field:
    """A run of bits [low, high] inside a layout, optionally with named values."""

    name: str
    doc: str
    high: int
    low: int
    reserved: bool = False
    c_mask: str | None = None
    c_shift: str | None = None
    values: tuple[FieldValue, ...] = ()

    @property
    def width(self) -> int:
        return self.high - self.low + 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.low

    def extract(self, word: int) -> int:
        return (word & self.mask) >> self.low

    def value_named(self, name: str) -> FieldValue:
        return next(v for v in self.values if v.name == name)


@dataclass(frozen=True, kw_only=True)
class FieldValue:
    """A named value of a field, e.g. the arch field's `arm64` or the class field's `fw`."""

    name: str
    doc: str
    value: int
    lifetime: Lifetime
    c_name: str | None = None
    c_reg_macro: str | None = None
    architectures: tuple[str, ...] = ()
    firmware: bool = False
    index_fields: tuple[Field, ...] = ()
    source: Source | None = None


@dataclass(frozen=True, kw_only=True)
class Layout:
    """A fixed-width word made of fields that cover every bit exactly once."""

    name: str
    doc: str
    width: int
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def compose(self, **values: int) -> int:
        """The word whose fields hold `values` (every other field zero)."""
        word = 0
        for name, value in values.items():
            f = self.field(name.replace("_", "-"))
            word |= (value << f.low) & f.mask
        return word


@dataclass(frozen=True, kw_only=True)
class Architecture:
    name: Literal["arm64", "arm"]
    doc: str
    reg_arch: FieldValue
    lifetime: Lifetime


@dataclass(frozen=True, kw_only=True)
class NamedValue:
    """A value a register can hold, with its uapi name."""

    name: str
    c_name: str
    value: int
    doc: str
    lifetime: Lifetime
    arch_features: int | None = None  # the guest's SMCCC_ARCH_FEATURES answer at this level


@dataclass(frozen=True, kw_only=True)
class RegisterBit:
    """One bit of a register: a feature-bitmap service or a flag such as WA2's ENABLED."""

    name: str
    c_name: str
    bit: int
    doc: str
    lifetime: Lifetime
    service: Service | None = None

    @property
    def mask(self) -> int:
        return 1 << self.bit


@dataclass(frozen=True, kw_only=True)
class Register:
    """A firmware pseudo-register: its id on each architecture and what its value means."""

    name: str
    c_name: str
    doc: str
    register_class: FieldValue
    index: int
    kind: Literal["psci-version", "level", "bitmap"]
    architectures: tuple[Architecture, ...]
    lifetime: Lifetime
    storage: Literal["vm", "none"]
    layout: tuple[Field, ...]
    values: tuple[NamedValue, ...]
    bits: tuple[RegisterBit, ...]
    ids: dict[str, int] = field(hash=False, compare=False)
    source: Source
    reset: Expr | None = None
    reset_text: str | None = None
    kernel_docs: tuple[KernelDocs, ...] = ()
    arch_features_since: Release | None = None

    def exists_on(self, arch: str, release: Release, stable: bool = False) -> bool:
        return any(
            a.name == arch and a.lifetime.covers(release) for a in self.architectures
        ) and self.lifetime.covers(release, stable)


@dataclass(frozen=True, kw_only=True)
class HostProfile:
    """A host's mitigation state, as the level each workaround register reports."""

    name: str
    doc: str
    levels: dict[str, NamedValue] = field(hash=False)


@dataclass(frozen=True, kw_only=True)
class Errno:
    name: str
    value: int
    doc: str


@dataclass(frozen=True, kw_only=True)
class VcpuFeature:
    """A KVM_ARM_VCPU_INIT feature: its bit per architecture, the capability that offers it,
    and whether KVM_ARM_VCPU_FINALIZE must follow the init."""

    name: str
    doc: str
    c_name: str
    bits: dict[str, int] = field(hash=False)
    lifetime: Lifetime
    capability: Capability | None
    finalize: bool


@dataclass(frozen=True, kw_only=True)
class Capability:
    name: str
    doc: str
    c_name: str
    value: int
    lifetime: Lifetime
    vm_enable: bool = False  # KVM_ENABLE_CAP on a VM turns it on


@dataclass(frozen=True, kw_only=True)
class Ioctl:
    """A KVM ioctl, its number composed like the kernel's _IOC(dir, KVMIO, nr, size)."""

    name: str
    c_name: str
    number: int
    doc: str


@dataclass(frozen=True, kw_only=True)
class Offset:
    """A field of a C structure the harness reads, by byte offset and size."""

    name: str
    offset: int
    size: int
    doc: str


@dataclass(frozen=True, kw_only=True)
class CoreRegisters:
    """A run of 64-bit core registers, by the 32-bit word of struct kvm_regs where it starts."""

    name: str
    first_word: int
    count: int
    doc: str


@dataclass(frozen=True, kw_only=True)
class StateVariable:
    name: str
    doc: str
    type: Literal["bool", "int"]


@dataclass(frozen=True, kw_only=True)
class PsciVersion:
    """A PSCI revision, encoded as major << 16 | minor."""

    name: str
    major: int
    minor: int
    doc: str
    lifetime: Lifetime
    c_name: str | None
    encoded: int


@dataclass(frozen=True, kw_only=True)
class PsciFunction:
    """A PSCI function with its SMC32 and/or SMC64 function ids."""

    name: str
    number: int
    psci: PsciVersion
    doc: str
    ids: dict[str, int] = field(hash=False)
    c_names: dict[str, str] = field(hash=False)
    header_since: Release | None = None
    kvm: KvmPsciHandling | None = None
    header_errata: tuple[HeaderErratum, ...] = ()
    source: Source | None = None


@dataclass(frozen=True, kw_only=True)
class HeaderErratum:
    """A stretch of releases whose uapi header gave a function's ids another number: a header
    copy of such a release really has the wrong value, and sync-check must expect it there."""

    number: int
    doc: str
    fixed: Lifetime
    ids: dict[str, int] = field(hash=False)
    source: Source | None = None


@dataclass(frozen=True, kw_only=True)
class PsciCall:
    """What KVM does with a PSCI call made with `args`: answers x0, or exits to userspace
    with a system event of type `exit` and `flags` (their mask)."""

    args: tuple[int, ...]
    doc: str
    x0: int | None = None
    exit: Constant | None = None
    flags: int = 0


@dataclass(frozen=True, kw_only=True)
class KvmPsciHandling:
    """How KVM answers a PSCI function: from which selected version, its FEATURES result, and
    what some calls of it do."""

    from_version: PsciVersion
    lifetime: Lifetime
    features: int
    needs_capability: Capability | None = None
    calls: tuple[PsciCall, ...] = ()


@dataclass(frozen=True, kw_only=True)
class KvmPsci01Function:
    """A function of KVM's pre-standard PSCI 0.1, whose ids KVM chose itself."""

    name: str
    offset: int
    c_name: str
    handled: bool
    doc: str
    function_id: int


@dataclass(frozen=True, kw_only=True)
class Constant:
    name: str
    c_name: str
    value: int
    doc: str


@dataclass(frozen=True, kw_only=True)
class ConstantGroup:
    name: str
    doc: str
    constants: tuple[Constant, ...]
    header_since: Release | None = None  # None: in the uapi header since the spec's first release
    source: Source | None = None


@dataclass(frozen=True, kw_only=True)
class LatestPsci:
    lifetime: Lifetime
    version: PsciVersion


@dataclass(frozen=True, kw_only=True)
class Service:
    """A hypercall service a guest can discover and call."""

    name: str
    doc: str
    lifetime: Lifetime


@dataclass(frozen=True, kw_only=True)
class SmcccFunction:
    name: str
    c_name: str
    owner: str
    convention: str
    number: int
    service: Service
    doc: str
    lifetime: Lifetime
    function_id: int
    psci_features: int | None = None
    returns: int | None = None
    arch_features: int | None = None  # SMCCC_ARCH_FEATURES(this id) while its service is on
    returns_register: str | None = None  # x0 is the VM's value of it, where the release has it
    answers: tuple[int, ...] | None = None  # x0 to x3, for a call answering in four registers
    calls: tuple[SmcccCall, ...] = ()  # x0 to x3 by arguments, some by shape
    # x1 to x3 holding the VM's value of a register where the release has it: (index, name)
    register_results: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class AnyBits:
    """An answer checked by its shape: any value of at most `bits` low bits (entropy, a clock)."""

    bits: int

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1


@dataclass(frozen=True, kw_only=True)
class SmcccCall:
    """What KVM returns in x0 to x3 for an SMCCC call with `args`, while its service is on."""

    args: tuple[int, ...]
    answers: tuple[int | AnyBits, ...]
    doc: str
    lifetime: Lifetime


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One row of a GET/SET/list decision table, with its condition and outcome typed."""

    id: str
    doc: str
    op: Literal["get", "set", "list"]
    register: Register | None
    register_class: FieldValue | None
    when: Expr | None
    when_text: str | None
    errno: Errno | None
    value: Expr | None
    value_text: str | None
    store: Expr | None
    store_text: str | None
    listed: bool | None
    undefined: str | None
    lifetime: Lifetime
    architectures: tuple[str, ...]
    source: Source
    deprecated: str | None = None
    kernel_docs: KernelDocs | None = None


@dataclass(frozen=True, kw_only=True)
class FilterField:
    """A field of a struct the ABI passes by address (kvm_smccc_filter,
    pvclock_vcpu_stolen_time), by byte offset and size."""

    name: str
    offset: int
    size: int
    doc: str


@dataclass(frozen=True, kw_only=True)
class FilterRange:
    """A range of function ids the VM's filter holds from the first range added: KVM's."""

    name: str
    doc: str
    first: int
    last: int


@dataclass(frozen=True, kw_only=True)
class FilterRule:
    """One row of the filter's decision tables (spec/smccc-filter.yaml): `has` and `set` of
    the attribute and a guest's `call`. The result is one of errno, ok, x0, exit or kvm."""

    id: str
    doc: str
    op: Literal["has", "set", "call"]
    when: Expr | None
    when_text: str | None
    errno: Errno | None
    ok: bool
    x0: int | None
    exit: Constant | None
    kvm: bool
    lifetime: Lifetime
    source: Source


@dataclass(frozen=True, kw_only=True)
class StolenTimeRule:
    """One row of the stolen-time tables (spec/smccc.yaml's `stolen-time`): `set` and `get`
    of a vcpu's address and the guest's `pv-time-features` and `pv-time-st`. The result is
    one of errno, ok, x0 or address (the vcpu's address, or the unset value)."""

    id: str
    doc: str
    op: Literal["set", "get", "pv-time-features", "pv-time-st"]
    when: Expr | None
    when_text: str | None
    errno: Errno | None
    ok: bool
    x0: int | None
    address: bool
    lifetime: Lifetime
    source: Source


@dataclass(frozen=True, kw_only=True)
class StolenTime:
    """A vcpu's stolen-time structure: the attribute that places it, its layout, and the
    tables of setting it and of the PV time calls that depend on it."""

    doc: str
    service: Service
    architectures: tuple[str, ...]  # whose uapi asm/kvm.h defines the attribute
    source: Source
    attribute_doc: str
    group: Constant
    attr: Constant
    unset: int
    unset_doc: str
    struct_c_name: str
    struct_doc: str
    struct_size: int
    fields: tuple[FilterField, ...]
    rules: tuple[StolenTimeRule, ...]

    def table(self, op: str) -> tuple[StolenTimeRule, ...]:
        return tuple(r for r in self.rules if r.op == op)


@dataclass(frozen=True, kw_only=True)
class AffinityField:
    """One affinity field of the MPIDR KVM gives a vcpu: bits of the vcpu's id, shifted."""

    name: str
    shift: int
    id_shift: int
    id_bits: int
    doc: str


@dataclass(frozen=True, kw_only=True)
class PowerRule:
    """One row of the vcpu power tables (spec/psci.yaml's `power`): KVM_RUN of a vcpu, a
    CPU_ON, CPU_OFF or AFFINITY_INFO call, or a system event. The result gives x0 and the
    states (api.yaml's mp-states) the call leaves its caller, its target or every vcpu in."""

    id: str
    doc: str
    op: Literal["run", "cpu-on", "cpu-off", "affinity-info", "system-event"]
    when: Expr | None
    when_text: str | None
    x0: int | None
    caller: Constant | None
    target: Constant | None
    every_vcpu: Constant | None
    lifetime: Lifetime
    source: Source


@dataclass(frozen=True, kw_only=True)
class VcpuPower:
    """Which vcpus are on: how KVM names a vcpu by MPIDR, and the power decision tables."""

    doc: str
    source: Source
    off_feature: str  # the vcpu feature that starts a vcpu in off_state
    off_state: Constant
    off_feature_doc: str
    mpidr_doc: str
    hwid_mask: int
    hwid_mask_c_name: str
    level_bits: int
    levels: int
    affinity: tuple[AffinityField, ...]
    rules: tuple[PowerRule, ...]

    def mpidr_affinity(self, vcpu_id: int) -> int:
        """The affinity fields of the MPIDR KVM gives the vcpu created with `vcpu_id`."""
        return sum(
            ((vcpu_id >> f.id_shift) & ((1 << f.id_bits) - 1)) << f.shift for f in self.affinity
        )

    def level_mask(self, level: int) -> int:
        """The affinity bits AFFINITY_INFO compares at `level`: none from `levels` on."""
        if level >= self.levels:
            return 0
        return self.hwid_mask & ~((1 << level * self.level_bits) - 1)

    def table(self, op: str) -> tuple[PowerRule, ...]:
        return tuple(r for r in self.rules if r.op == op)


@dataclass(frozen=True, kw_only=True)
class SmcccFilter:
    """The SMCCC filter's ABI: the VM attribute, its struct, actions, the ranges KVM keeps,
    the exit of a forwarded call, and the decision tables."""

    doc: str
    lifetime: Lifetime
    source: Source
    attribute_doc: str
    group: Constant
    attr: Constant
    struct_c_name: str
    struct_doc: str
    struct_size: int
    fields: tuple[FilterField, ...]
    actions: tuple[Constant, ...]
    reserved: tuple[FilterRange, ...]
    exit_doc: str
    exit_reason: Constant
    exit_flags: tuple[Constant, ...]
    rules: tuple[FilterRule, ...]

    def field(self, name: str) -> FilterField:
        return next(f for f in self.fields if f.name == name)

    def action(self, name: str) -> Constant:
        return next(a for a in self.actions if a.name == name)

    def table(self, op: str) -> tuple[FilterRule, ...]:
        return tuple(r for r in self.rules if r.op == op)


@dataclass(frozen=True, kw_only=True)
class VmmSource:
    """Where in a VMM's own source a known behaviour is."""

    repository: str
    file: str
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class KnownVmm:
    """What one real VMM (in some versions) is known to do about a VMM rule."""

    vmm: str
    versions: str
    does: str
    source: VmmSource


@dataclass(frozen=True, kw_only=True)
class VmmRule:
    """What a correct VMM does with the firmware registers across a save and restore."""

    id: str
    doc: str
    evidence: str
    kernel_asks_file: str
    kernel_asks: str
    kvm_rules: tuple[Rule, ...]
    known_vmms: tuple[KnownVmm, ...]


@dataclass(frozen=True, kw_only=True)
class SpecFile:
    """A spec file's path relative to the spec directory and the sha256 of its bytes."""

    name: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Spec:
    """The whole resolved spec."""

    files: tuple[SpecFile, ...]
    releases: tuple[Release, ...]
    architectures: tuple[Architecture, ...]
    layouts: tuple[Layout, ...]
    errnos: tuple[Errno, ...]
    vcpu_features: tuple[VcpuFeature, ...]
    capabilities: tuple[Capability, ...]
    state: tuple[StateVariable, ...]
    registers: tuple[Register, ...]
    host_profiles: tuple[HostProfile, ...]
    psci_versions: tuple[PsciVersion, ...]
    psci_latest: tuple[LatestPsci, ...]
    psci_functions: tuple[PsciFunction, ...]
    kvm_psci_01_base: int
    kvm_psci_01_c_base: str
    kvm_psci_01_functions: tuple[KvmPsci01Function, ...]
    psci_return_codes: tuple[Constant, ...]
    psci_constant_groups: tuple[ConstantGroup, ...]
    services: tuple[Service, ...]
    smccc_functions: tuple[SmcccFunction, ...]
    smccc_not_supported: tuple[int, ...]  # x0 to x3 of a call KVM refuses
    rules: tuple[Rule, ...]
    ioctls: tuple[Ioctl, ...]
    kvm_run: tuple[Offset, ...]
    exit_reasons: tuple[Constant, ...]
    system_events: tuple[Constant, ...]
    system_event_flags: tuple[Constant, ...]
    mp_states: tuple[Constant, ...]  # KVM_GET_MP_STATE's answers: whether a vcpu is powered off
    core_registers: tuple[CoreRegisters, ...]
    vmm_rules: tuple[VmmRule, ...]
    smccc_filter: SmcccFilter
    stolen_time: StolenTime
    vcpu_power: VcpuPower

    def layout(self, name: str) -> Layout:
        return next(lay for lay in self.layouts if lay.name == name)

    @property
    def rule_ids(self) -> list[str]:
        """Every rule a case can be filed under, sorted: the registers', the SMCCC filter's,
        the vcpu power tables' and the stolen-time tables'."""
        tables = (
            self.rules,
            self.smccc_filter.rules,
            self.vcpu_power.rules,
            self.stolen_time.rules,
        )
        return sorted(rule.id for table in tables for rule in table)

    def psci_latest_in(self, release: Release) -> PsciVersion:
        return next(p.version for p in self.psci_latest if p.lifetime.covers(release))
