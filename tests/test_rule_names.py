"""The rule language's names are declared once, in spec/rule_names.py, and both evaluators of
the rules fill exactly them: the conformance oracle and the reference implementation, for an
access of every register of the spec, on every architecture it has, and of an unknown id. The
SMCCC filter's, the vcpu power tables' and the stolen-time tables' names are declared in
spec/filter_names.py, spec/power_names.py and spec/stolen_time_names.py and held the same way,
per operation.

The reference may import nothing of the spec library, so these tests are what tie it to the
declaration; each comparison is also shown failing on an implementation that gets a name wrong.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from kvm_fwspec.conformance.guest.program import DATA_BASE, PROGRAM_MEMORY
from kvm_fwspec.conformance.oracle import Access, Oracle
from kvm_fwspec.conformance.power_oracle import PowerCall, PowerOracle
from kvm_fwspec.conformance.profile import Profile, resolve_profile
from kvm_fwspec.conformance.stolen_time_oracle import StolenTimeOracle
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.spec.filter_names import FILTER_OPS, filter_names
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Register, Release
from kvm_fwspec.spec.power_names import POWER_OPS, power_names
from kvm_fwspec.spec.rule_language import Type
from kvm_fwspec.spec.rule_names import OPS, RULE_NAMES, Vocabulary
from kvm_fwspec.spec.stolen_time_names import STOLEN_TIME_OPS, stolen_time_names

SPEC = load_spec()
VOCABULARY = Vocabulary.of(SPEC)
HOST = SPEC.host_profiles[0]
REGISTERS = sorted(SPEC.registers, key=lambda r: r.name)
UNKNOWN_ID = 0x6030_0000_0014_FFFF  # arm64, u64, class fw, an index no register has
SET_VALUE = 0x1


def mismatch(filled: Mapping[str, object], declared: Mapping[str, Type]) -> list[str]:
    """How the names an implementation filled differ from those declared, and their types."""
    problems = [f"missing {n}" for n in sorted(set(declared) - set(filled))]
    problems += [f"undeclared {n}" for n in sorted(set(filled) - set(declared))]
    for name in sorted(set(filled) & set(declared)):
        value, wanted = filled[name], declared[name]
        if wanted is Type.BOOL:
            right = isinstance(value, bool)
        elif wanted is Type.INT:
            right = isinstance(value, int) and not isinstance(value, bool)
        else:
            right = isinstance(value, frozenset)
        if not right:
            problems.append(f"{name} is {value!r}, not {wanted.value}")
    return problems


def first_release(register: Register, arch: str) -> Release:
    return next(r for r in SPEC.releases if register.exists_on(arch, r))


def oracle_names(
    register: Register | None, arch: str, release: Release, op: str
) -> dict[str, object]:
    oracle = Oracle(SPEC, Profile(arch, release, HOST))
    reg_id = register.ids[arch] if register else UNKNOWN_ID
    access = Access(
        op=op,
        reg_id=reg_id,
        vcpu_initialized=True,
        psci_02=True,
        has_run=False,
        stored={},
        value=SET_VALUE if op == "set" else None,
    )
    assert oracle.register_for(reg_id) is register
    return dict(oracle.names(register, access))


def reference_names(
    register: Register | None, arch: str, release: Release, op: str
) -> dict[str, object]:
    kvm = ReferenceKvm(str(release), HOST.name, arch=arch)
    vcpu = kvm.create_vm().create_vcpu()
    vcpu.init(["psci-0.2"])
    reg_id = register.ids[arch] if register else UNKNOWN_ID
    found = kvm.register_for(reg_id)
    assert (found and found["name"]) == (register and register.name)
    return dict(vcpu.names(reg_id, SET_VALUE if op == "set" else None))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("register", REGISTERS, ids=[r.name for r in REGISTERS])
def test_the_oracle_fills_exactly_the_declared_names(register: Register, op: str) -> None:
    for arch in register.architectures:
        filled = oracle_names(register, arch.name, first_release(register, arch.name), op)
        assert mismatch(filled, VOCABULARY.names(register, op)) == [], arch.name


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("register", REGISTERS, ids=[r.name for r in REGISTERS])
def test_the_reference_fills_exactly_the_declared_names(register: Register, op: str) -> None:
    for arch in register.architectures:
        filled = reference_names(register, arch.name, first_release(register, arch.name), op)
        assert mismatch(filled, VOCABULARY.names(register, op)) == [], arch.name


@pytest.mark.parametrize("op", OPS)
def test_both_fill_the_declared_names_for_an_unknown_id(op: str) -> None:
    declared = VOCABULARY.names(None, op)
    release = SPEC.releases[-1]
    assert mismatch(oracle_names(None, "arm64", release, op), declared) == []
    assert mismatch(reference_names(None, "arm64", release, op), declared) == []


def test_a_forgotten_name_a_stray_name_and_a_wrong_type_show() -> None:
    """A reference that forgets known-bits, fills host.level for a bitmap and says reg.known
    with 1, as C would."""
    bitmap = next(r for r in REGISTERS if r.kind == "bitmap")
    filled = reference_names(bitmap, "arm64", first_release(bitmap, "arm64"), "get")
    del filled["known-bits"]
    filled["host.level"] = 0
    filled["reg.known"] = 1
    assert mismatch(filled, VOCABULARY.names(bitmap, "get")) == [
        "missing known-bits",
        "undeclared host.level",
        "reg.known is 1, not bool",
    ]


def test_a_workaround_set_has_its_fields_levels_and_bits() -> None:
    """The vocabulary spelled out for one register and op: state, fixed names and families."""
    register = next(r for r in REGISTERS if r.name == "smccc-arch-workaround-2")
    sizes = {f"size.{v.name}" for v in SPEC.layout("reg-id").field("size").values}
    assert set(VOCABULARY.names(register, "set")) - sizes == {
        "vcpu.initialized", "vcpu.psci-0.2", "vm.has-run",
        "kernel.psci-latest", "kernel.psci-versions", "reg.known", "reg.size",
        "value", "value.level", "value.enabled", "value.reserved",
        "host.level", "not-avail", "unknown", "avail", "not-required", "bit.enabled",
    }  # fmt: skip
    assert "size.u64" in sizes


def test_the_declaration_is_well_formed() -> None:
    spellings = [n.spelling for n in RULE_NAMES]
    assert len(spellings) == len(set(spellings))
    for name in RULE_NAMES:
        assert name.doc, name.spelling
        if name.family is not None:
            assert name.spelling.endswith(name.family.value), name.spelling
    state = {s.name for s in SPEC.state}
    assert not state & set(spellings), "api.yaml's state declares these names already"


# -- the SMCCC filter's names (spec/filter_names.py) -----------------------------------------

FILTER_ACTIONS = tuple(a.name for a in SPEC.smccc_filter.actions)
FILTER_RELEASE = SPEC.smccc_filter.lifetime.since
# What each filter op's names are filled for: the filter's own attribute, a PSCI range
# forwarded to userspace, and a call of PSCI_VERSION, which that range holds.
HAS_ATTRIBUTE = (SPEC.smccc_filter.group.value, SPEC.smccc_filter.attr.value)
FORWARD = SPEC.smccc_filter.action("fwd-to-user").value
PSCI_RANGE = {"base": 0x8400_0000, "nr_functions": 0x20, "action": FORWARD, "pad": 0}
CALLED = 0x8400_0000


def declared_filter_names(op: str) -> dict[str, Type]:
    """The names spec/filter_names.py gives the filter's rules about `op`, with their types:
    what both the reference (below) and the oracle must fill."""
    return filter_names(op, FILTER_ACTIONS)


def reference_filter_names(op: str) -> dict[str, object]:
    """The names the reference fills to decide `op` on a VM of the filter's first release;
    a call's on a VM whose filter holds PSCI_RANGE."""
    vm = ReferenceKvm(str(FILTER_RELEASE), HOST.name).create_vm()
    if op == "has":
        return dict(vm.has_names(*HAS_ATTRIBUTE))
    if op == "set":
        return dict(vm.set_names(**PSCI_RANGE))
    assert vm.set_smccc_filter(**PSCI_RANGE) is None
    return dict(vm.call_names(CALLED))


@pytest.mark.parametrize("op", FILTER_OPS)
def test_the_reference_fills_exactly_the_declared_filter_names(op: str) -> None:
    assert mismatch(reference_filter_names(op), declared_filter_names(op)) == []


def test_a_forgotten_filter_name_and_a_wrong_type_show() -> None:
    """A reference that forgets the range's last id (deciding on base + nr alone), says
    whether it overlaps with 0 or 1 as C would, and knows no fwd-to-user action."""
    filled = reference_filter_names("set")
    del filled["filter.last"]
    filled["filter.overlaps"] = 0
    assert mismatch(filled, declared_filter_names("set")) == [
        "missing filter.last",
        "filter.overlaps is 0, not bool",
    ]
    called = reference_filter_names("call")
    del called["action.fwd-to-user"]
    assert mismatch(called, declared_filter_names("call")) == ["missing action.fwd-to-user"]


# -- the vcpu power names (spec/power_names.py) -----------------------------------------------

# Each op's names are filled for vcpu 0 of a two-vcpu VM whose vcpu 1 is powered off, asking
# about vcpu 1 at affinity level 0.
POWER_WORDS = [1, 0, 0]


EVENT = SPEC.system_events[0].name  # a system-event rule's names are filled for this one
EVENTS = tuple(e.name for e in SPEC.system_events)


def reference_power_names(op: str) -> dict[str, object]:
    vm = ReferenceKvm(str(SPEC.releases[-1]), HOST.name).create_vm()
    caller, target = vm.create_vcpu(), vm.create_vcpu()
    caller.init(["psci-0.2"])
    target.init(["psci-0.2", SPEC.vcpu_power.off_feature])
    if op == "system-event":
        return dict(vm.system_event_names(EVENT))
    return dict(caller.power_names(op, POWER_WORDS))


def oracle_power_names(op: str) -> dict[str, object]:
    oracle = PowerOracle(SPEC, resolve_profile(SPEC, str(SPEC.releases[-1]), HOST.name))
    vm = oracle.initial(2, (1,))
    call = PowerCall(op, tuple(POWER_WORDS), smc32=False)
    names = {
        "run": lambda: oracle.run_names(vm, 0),
        "cpu-on": lambda: oracle.cpu_on_names(vm, call, True),
        "affinity-info": lambda: oracle.affinity_info_names(vm, call),
        "system-event": lambda: oracle.system_event_names(EVENT),
    }
    return dict(names[op]()) if op in names else {}


@pytest.mark.parametrize("op", POWER_OPS)
def test_the_reference_and_the_oracle_fill_exactly_the_declared_power_names(op: str) -> None:
    assert mismatch(reference_power_names(op), power_names(op, EVENTS)) == []
    assert mismatch(oracle_power_names(op), power_names(op, EVENTS)) == []
    assert reference_power_names(op) == oracle_power_names(op)


def test_a_forgotten_power_name_and_a_wrong_type_show() -> None:
    """A reference that decides CPU_ON without knowing whether the target is on, and counts
    AFFINITY_INFO's matching vcpus as a yes or no."""
    filled = reference_power_names("cpu-on")
    del filled["target.on"]
    assert mismatch(filled, power_names("cpu-on", EVENTS)) == ["missing target.on"]
    counted = reference_power_names("affinity-info")
    counted["matching-on"] = True
    assert mismatch(counted, power_names("affinity-info", EVENTS)) == [
        "matching-on is True, not int"
    ]


# -- the stolen-time names (spec/stolen_time_names.py) ----------------------------------------

# Each op's names are filled for a vcpu whose address is set, asked of an address in the
# protocol's data region and, for PV_TIME_FEATURES, of PV_TIME_ST's id.
ST_ADDRESS = DATA_BASE + 0x40
ST_ID = next(f.function_id for f in SPEC.smccc_functions if f.name == "pv-time-st")


def reference_stolen_time_names(op: str) -> dict[str, object]:
    kvm = ReferenceKvm(str(SPEC.releases[-1]), HOST.name, memory=PROGRAM_MEMORY)
    vcpu = kvm.create_vm().create_vcpu()
    vcpu.init(["psci-0.2"])
    attr = SPEC.stolen_time.attr.value
    assert vcpu.set_attribute(SPEC.stolen_time.group.value, attr, ST_ADDRESS) is None
    return dict(vcpu.stolen_time_names(op, attr, ST_ADDRESS, ST_ID))


def oracle_stolen_time_names(op: str) -> dict[str, object]:
    oracle = StolenTimeOracle(SPEC, resolve_profile(SPEC, str(SPEC.releases[-1]), HOST.name))
    attr = SPEC.stolen_time.attr.value
    names = {
        "set": lambda: oracle.set_names(ST_ADDRESS, attr, ST_ADDRESS),
        "get": lambda: oracle.get_names(attr),
    }
    if op in names:
        return dict(names[op]())
    return dict(oracle.call_names(op, ST_ADDRESS, ST_ID))


@pytest.mark.parametrize("op", STOLEN_TIME_OPS)
def test_the_reference_and_the_oracle_fill_exactly_the_declared_stolen_time_names(
    op: str,
) -> None:
    assert mismatch(reference_stolen_time_names(op), stolen_time_names(op)) == []
    assert mismatch(oracle_stolen_time_names(op), stolen_time_names(op)) == []
    assert reference_stolen_time_names(op) == oracle_stolen_time_names(op)


def test_a_forgotten_stolen_time_name_and_a_wrong_type_show() -> None:
    """A reference that sets an address without looking at the VM's memory, and hands
    PV_TIME_FEATURES its argument as a set."""
    filled = reference_stolen_time_names("set")
    del filled["ipa.in-memory"]
    assert mismatch(filled, stolen_time_names("set")) == ["missing ipa.in-memory"]
    asked = reference_stolen_time_names("pv-time-features")
    asked["call.argument"] = frozenset({ST_ID})
    assert mismatch(asked, stolen_time_names("pv-time-features")) == [
        f"call.argument is {frozenset({ST_ID})}, not int"
    ]
