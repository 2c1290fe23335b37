"""What the generated docs pages say beyond the model: bit diagrams, matrices, rule sentences.

Everything here is computed from the spec alone, so changing the spec changes the pages on the
next `kvm-fwspec generate`; nothing in docs/reference or docs/kernel is written by hand. What a
page shows by running the suite or a command is filled in when the site is built
(kvm_fwspec.conformance.sphinx_pages), above the suite, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from kvm_fwspec.spec.filter_names import FILTER_NAMES, FILTER_OPS
from kvm_fwspec.spec.model import (
    AffinityField,
    AnyBits,
    Constant,
    Field,
    FilterRule,
    Lifetime,
    PowerRule,
    Register,
    RegisterBit,
    Release,
    Rule,
    Service,
    SmcccCall,
    SmcccFunction,
    Spec,
    StolenTimeRule,
)
from kvm_fwspec.spec.op_names import OpName
from kvm_fwspec.spec.power_names import POWER_NAMES, POWER_OPS
from kvm_fwspec.spec.stolen_time_names import STOLEN_TIME_NAMES, STOLEN_TIME_OPS

CELL = 26  # pixels per diagram cell


def id_diagram(spec: Spec, register: Register, arch: str) -> str:
    """An SVG of the register id's fields: name, bit range and this register's value in each."""
    layout = spec.layout("reg-id")
    reg_id = register.ids[arch]
    boxes = []
    x = 0
    widths = {"arch": 3, "size": 2, "reserved": 4, "class": 3, "index": 3}
    for field in layout.fields:
        width = widths.get(field.name, 3) * CELL * 2
        value = field.extract(reg_id)
        label = _value_label(field, value, arch)
        boxes.append(
            f'<g class="field field-{field.name}"><rect x="{x}" y="20" width="{width}" height="44" '
            f'fill="{"#eeeeee" if field.reserved else "#dbe9f6"}" stroke="#333"/>'
            f'<text x="{x + width / 2}" y="38" text-anchor="middle" font-size="13">{escape(field.name)}</text>'
            f'<text x="{x + width / 2}" y="56" text-anchor="middle" font-size="12" font-family="monospace">'
            f"{escape(label)}</text>"
            f'<text x="{x + 2}" y="14" font-size="10">{field.high}</text>'
            f'<text x="{x + width - 2}" y="14" font-size="10" text-anchor="end">{field.low}</text></g>'
        )
        x += width
    title = f"{register.c_name} on {arch}: {reg_id:#018x}"
    return (
        f'<svg class="reg-id-diagram" xmlns="http://www.w3.org/2000/svg" width="{x + 1}" height="70" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>{"".join(boxes)}</svg>'
    )


def _value_label(field: Field, value: int, arch: str) -> str:
    named = next((v for v in field.values if v.value == value and arch in v.architectures), None)
    return f"{value:#x} {named.name}" if named else f"{value:#x}"


def change_points(spec: Spec) -> list[Release]:
    """The releases where some register, value, bit or rule appears or goes: the matrix columns."""
    points: set[Release] = set()

    def add(lifetime: Lifetime) -> None:
        points.add(lifetime.since)
        if lifetime.until:
            points.add(lifetime.until)

    for register in spec.registers:
        add(register.lifetime)
        for value in register.values:
            add(value.lifetime)
        for bit in register.bits:
            add(bit.lifetime)
    for rule in spec.rules:
        add(rule.lifetime)
    for version in spec.psci_versions:
        add(version.lifetime)
    return sorted(p for p in points if p in spec.releases)


@dataclass(frozen=True)
class PsciCell:
    handled: bool
    features: str


def psci_matrix(spec: Spec) -> list[tuple[str, str, list[PsciCell]]]:
    """Per PSCI function: its ids, and per PSCI version what KVM does with it."""
    rows = []
    for function in spec.psci_functions:
        cells = []
        for version in spec.psci_versions:
            kvm = function.kvm
            handled = (
                kvm is not None
                and version.encoded >= kvm.from_version.encoded
                and version.name != "0.1"
            )
            if handled and kvm is not None:
                since = (
                    f" from {kvm.lifetime.since}" if kvm.lifetime.since != spec.releases[0] else ""
                )
                if kvm.needs_capability is not None:
                    text = (
                        f"handled{since} once the VMM enables {kvm.needs_capability.c_name} on "
                        f"the VM (FEATURES {kvm.features} then); NOT_SUPPORTED until"
                    )
                else:
                    text = f"handled{since}; FEATURES {kvm.features}"
                cells.append(PsciCell(True, text))
            else:
                cells.append(PsciCell(False, "NOT_SUPPORTED"))
        ids = ", ".join(f"``{fid:#010x}``" for _, fid in sorted(function.ids.items()))
        rows.append((function.name, ids, cells))
    return rows


def rule_outcome(rule: Rule) -> str:
    """A rule's outcome in words, for the docs."""
    if rule.errno:
        return f"-{rule.errno.name}"
    if rule.value_text:
        return f"returns ``{rule.value_text}``"
    if rule.store_text:
        return f"accepted, stores ``{rule.store_text}``"
    if rule.listed is not None:
        return "listed" if rule.listed else "not listed"
    if rule.undefined:
        return f"undefined ({rule.undefined})"
    return "accepted, nothing stored"


def rule_sentence(rule: Rule) -> str:
    """A rule as one sentence of the kernel-style page: operation, releases, outcome, condition."""
    releases = ""
    if rule.lifetime.until:
        releases = f" ({rule.lifetime.since} to {rule.lifetime.until})"
    elif rule.lifetime.since > Release(4, 17):
        releases = f" (since {rule.lifetime.since})"
    when = f"when ``{rule.when_text}``" if rule.when_text else "otherwise"
    return f"{rule.op.upper()}{releases}: {rule_outcome(rule)} {when}."


def register_rules(spec: Spec, register: Register) -> list[Rule]:
    """The rules that decide an access to `register`: its class's, then its own."""
    return [
        r
        for r in spec.rules
        if r.register is register or r.register_class is register.register_class
    ]


def errno_uses(spec: Spec) -> list[tuple[str, list[str]]]:
    """Per errno, the registers or classes that return it and why, for the kernel page."""
    uses: dict[str, list[str]] = {}
    for rule in spec.rules:
        if rule.errno:
            target = (
                rule.register.c_name
                if rule.register
                else f"class {rule.register_class.name if rule.register_class else ''}"
            )
            uses.setdefault(rule.errno.name, []).append(
                f"{target}, {rule.doc.split('.')[0].strip()}"
            )
    return sorted(uses.items())


def release_items(spec: Spec) -> list[tuple[str, Lifetime]]:
    """Every register, value and bit with its lifetime: the rows of the release matrix."""
    items = []
    for register in spec.registers:
        items.append((f"``{register.c_name}``", register.lifetime))
        items += [(f"``{v.c_name}``", v.lifetime) for v in register.values]
        items += [(f"``{b.c_name}``", b.lifetime) for b in register.bits]
    return items


def lifetime_text(lifetime: Lifetime) -> str:
    """A lifetime in words: since, until, and the stable lines it was backported to."""
    text = f"{lifetime.since}"
    if lifetime.until:
        text += f" until {lifetime.until}"
    if lifetime.backports:
        text += f" (backported to {', '.join(str(b) for b in lifetime.backports)} stable)"
    return text


@dataclass(frozen=True)
class ServiceGate:
    """A bitmap register's bit that offers a service to the guest."""

    register: Register
    bit: RegisterBit


@dataclass(frozen=True)
class FunctionAnswers:
    """What KVM answers about one SMCCC function, as far as the spec fixes it: the call's x0,
    SMCCC_ARCH_FEATURES(id) and PSCI_FEATURES(id), as reStructuredText; NOT_FIXED where the
    spec leaves the answer open."""

    function: SmcccFunction
    call: str
    arch_features: str
    psci_features: str


@dataclass(frozen=True)
class ServiceSection:
    service: Service
    gates: tuple[ServiceGate, ...]
    functions: tuple[FunctionAnswers, ...]


NOT_FIXED = "not fixed by the spec"
NOT_SUPPORTED = "NOT_SUPPORTED (-1)"


def _x0(value: int) -> str:
    """A call's result in hex, as the SMCCC documents versions and bitmaps."""
    return f"``{value:#x}``"


def _status(value: int) -> str:
    """A FEATURES answer as the SMCCC status code it is: 0 (SUCCESS), -1, or a level's code."""
    return f"``{value}``"


def _call_row(call: SmcccCall) -> str:
    """`x1=33: x0..x3 = 0, 0, any 1-bit, any 32-bit`: a call's row, shapes in words."""
    args = ", ".join(f"x{i + 1}={a:#x}" for i, a in enumerate(call.args))
    words = ", ".join(
        f"any {w.bits}-bit" if isinstance(w, AnyBits) else (str(w) if i == 0 else f"{w:#x}")
        for i, w in enumerate(call.answers)
    )
    return f"{args}: x0..x3 = {words}"


def function_answers(spec: Spec, function: SmcccFunction) -> FunctionAnswers:
    """The answers the spec gives for `function`, never a value it does not state: an absent
    `returns` is not fixed; an absent arch-features or psci-features is NOT_SUPPORTED, as
    spec/schema says and the reference answers; a workaround's ARCH_FEATURES is its level's."""
    registers = {r.name: r for r in spec.registers}
    call = NOT_FIXED
    if function.returns_register is not None:
        register = registers[function.returns_register]
        link = f":ref:`{register.c_name} <register-{register.name}>`"
        call = f"the VM's {link} since {register.lifetime.since}"
        if function.returns is not None:
            call += f"; {_x0(function.returns)} before"
    elif function.returns is not None:
        call = _x0(function.returns)
    elif function.calls:
        call = "by argument: " + "; ".join(_call_row(c) for c in function.calls)
    elif any(r.op == function.name for r in spec.stolen_time.rules):
        call = f"by the vcpu's stolen-time address: :ref:`stolen-time-{function.name}`"
    for index, name in function.register_results:
        held = registers[name]
        call += (
            f"; x{index} holds the VM's :ref:`{held.c_name} <register-{held.name}>` "
            f"since {held.lifetime.since}, 0 before"
        )
    level = registers.get(function.name)
    if level is not None and level.kind == "level":
        answers = "; ".join(
            f"{v.name} {_status(v.arch_features)}"
            if v.arch_features is not None
            else f"{v.name} ({NOT_FIXED})"
            for v in level.values
        )
        arch_features = (
            f"the host's :ref:`level <register-{level.name}>` since "
            f"{level.arch_features_since or level.lifetime.since}: {answers}"
        )
    elif function.arch_features is not None:
        arch_features = f"{_status(function.arch_features)} while the service is offered"
    else:
        arch_features = NOT_SUPPORTED
    psci_features = (
        _status(function.psci_features) if function.psci_features is not None else NOT_SUPPORTED
    )
    return FunctionAnswers(function, call, arch_features, psci_features)


def hypercall_services(spec: Spec) -> list[ServiceSection]:
    """Per service, in the spec's order: the bitmap bits that gate it and its functions."""
    sections = []
    for service in spec.services:
        functions = [f for f in spec.smccc_functions if f.service is service]
        gates = tuple(
            ServiceGate(register, bit)
            for register in spec.registers
            for bit in register.bits
            if bit.service is service
        )
        sections.append(
            ServiceSection(
                service=service,
                gates=gates,
                functions=tuple(function_answers(spec, f) for f in functions),
            )
        )
    return sections


FILTER_OP_TITLES = {
    "has": "KVM_HAS_DEVICE_ATTR on the VM",
    "set": "KVM_SET_DEVICE_ATTR of one range",
    "call": "a guest's call while the VM has a filter",
}


@dataclass(frozen=True)
class DecisionTable:
    """One operation's rules, in the spec's order, for the docs' decision-table macro."""

    op: str
    title: str
    rules: tuple[FilterRule, ...] | tuple[PowerRule, ...] | tuple[StolenTimeRule, ...]


def filter_tables(spec: Spec) -> list[DecisionTable]:
    """The SMCCC filter's decision tables, one per operation, rules in the spec's order."""
    return [
        DecisionTable(op, FILTER_OP_TITLES[op], spec.smccc_filter.table(op)) for op in FILTER_OPS
    ]


def filter_names() -> tuple[OpName, ...]:
    """The names a filter rule's condition may use (spec/filter_names.py)."""
    return FILTER_NAMES


def filter_rule_outcome(rule: FilterRule) -> str:
    """A filter rule's result in words, for the docs."""
    if rule.errno:
        return f"-{rule.errno.name}"
    if rule.ok:
        return "0 (success)"
    if rule.x0 is not None:
        return f"x0 = {rule.x0}" + (" (NOT_SUPPORTED)" if rule.x0 == -1 else "")
    if rule.exit is not None:
        return f"KVM_RUN returns ``{rule.exit.c_name}``"
    if rule.kvm:
        return "KVM answers, as without a filter"
    raise ValueError(f"filter rule {rule.id} has no result")  # the loader refuses such a rule


STOLEN_TIME_OP_TITLES = {
    "set": "KVM_SET_DEVICE_ATTR of the address",
    "get": "KVM_GET_DEVICE_ATTR of the address",
    "pv-time-features": "a guest's PV_TIME_FEATURES",
    "pv-time-st": "a guest's PV_TIME_ST",
}


def stolen_time_tables(spec: Spec) -> list[DecisionTable]:
    """The stolen-time decision tables, one per operation, rules in the spec's order."""
    return [
        DecisionTable(op, STOLEN_TIME_OP_TITLES[op], spec.stolen_time.table(op))
        for op in STOLEN_TIME_OPS
    ]


def stolen_time_names() -> tuple[OpName, ...]:
    """The names a stolen-time rule's condition may use (spec/stolen_time_names.py)."""
    return STOLEN_TIME_NAMES


def stolen_time_rule_outcome(rule: StolenTimeRule) -> str:
    """A stolen-time rule's result in words, for the docs."""
    if rule.errno:
        return f"-{rule.errno.name}"
    if rule.ok:
        return "0 (success): the vcpu's address from now on"
    if rule.x0 is not None:
        return f"x0 = {rule.x0}" + (" (NOT_SUPPORTED)" if rule.x0 == -1 else " (SUCCESS)")
    if rule.address:
        return "the vcpu's address (x0 of a call, the u64 of a get)"
    raise ValueError(f"stolen-time rule {rule.id} has no result")  # the loader refuses it


POWER_OP_TITLES = {
    "run": "KVM_RUN of a vcpu",
    "cpu-on": "a guest's CPU_ON",
    "cpu-off": "a guest's CPU_OFF",
    "affinity-info": "a guest's AFFINITY_INFO",
    "system-event": "a guest's call that exits with a system event",
}


def power_tables(spec: Spec) -> list[DecisionTable]:
    """The vcpu power decision tables, one per operation, rules in the spec's order."""
    return [DecisionTable(op, POWER_OP_TITLES[op], spec.vcpu_power.table(op)) for op in POWER_OPS]


def power_names() -> tuple[OpName, ...]:
    """The names a power rule's condition may use (spec/power_names.py)."""
    return POWER_NAMES


def power_rule_outcome(rule: PowerRule) -> str:
    """A power rule's result in words, for the docs: x0, and the states it leaves."""
    parts = [f"x0 = {rule.x0}"] if rule.x0 is not None else []
    for who, state in (
        ("caller", rule.caller),
        ("target", rule.target),
        ("every vcpu", rule.every_vcpu),
    ):
        if state is not None:
            parts.append(f"{who} ``{state.c_name}``")
    return "; ".join(parts)


def mpidr_affinity_bits(field: AffinityField) -> str:
    """An affinity field's MPIDR bits and the vcpu id bits it holds, high to low."""
    high = field.shift + field.id_bits - 1
    id_high = field.id_shift + field.id_bits - 1
    return f"MPIDR bits {high} to {field.shift}: vcpu id bits {id_high} to {field.id_shift}"


def flag_bit(flag: Constant) -> int:
    """The bit of a one-bit flag whose value is its mask."""
    return flag.value.bit_length() - 1
