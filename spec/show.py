"""`kvm-fwspec show NAME`: find a register, value, host profile, rule or function by any of
its names."""

from __future__ import annotations

import difflib

from kvm_fwspec.spec.decode import describe_register
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.model import (
    Constant,
    FilterRule,
    HostProfile,
    PowerRule,
    Rule,
    Spec,
    StolenTimeRule,
)


def describe_rule(rule: Rule) -> list[str]:
    target = (
        rule.register.name
        if rule.register
        else f"class {rule.register_class.name if rule.register_class else '?'}"
    )
    if rule.errno:
        outcome = f"errno {rule.errno.name} ({rule.errno.value})"
    elif rule.value_text:
        outcome = f"value {rule.value_text}"
    elif rule.store_text:
        outcome = f"accepted, stores {rule.store_text}"
    elif rule.listed is not None:
        outcome = "listed" if rule.listed else "not listed"
    elif rule.undefined:
        outcome = f"undefined: {rule.undefined}"
    else:
        outcome = "accepted, nothing stored"
    return _rule_lines(rule, f"{rule.op} on {target}, {', '.join(rule.architectures)}", outcome)


def _rule_lines(
    rule: Rule | FilterRule | PowerRule | StolenTimeRule, applies: str, outcome: str
) -> list[str]:
    """A rule of any decision table: what it applies to and when, its outcome, why, where from."""
    until = f" until {rule.lifetime.until}" if rule.lifetime.until else ""
    return [
        f"rule: {rule.id}",
        f"  {applies}, since {rule.lifetime.since}{until}",
        f"  when: {rule.when_text or '(always: the default)'}",
        f"  then: {outcome}",
        f"  why: {' '.join(rule.doc.split())}",
        f"  source: {rule.source.file}" + (f" ({rule.source.note})" if rule.source.note else ""),
    ]


def describe_filter_rule(rule: FilterRule) -> list[str]:
    """An SMCCC filter rule: the table it belongs to, its condition and outcome."""
    if rule.errno:
        outcome = f"errno {rule.errno.name} ({rule.errno.value})"
    elif rule.x0 is not None:
        outcome = f"the guest's x0 is {rule.x0}"
    elif rule.exit is not None:
        outcome = f"KVM_RUN exits with {rule.exit.c_name} ({rule.exit.value})"
    elif rule.kvm:
        outcome = "KVM answers the call as without a filter"
    else:
        outcome = "accepted"
    table = {
        "has": "KVM_HAS_DEVICE_ATTR on the VM",
        "set": "KVM_SET_DEVICE_ATTR of one SMCCC filter range",
        "call": "a guest's call while the VM has an SMCCC filter",
    }[rule.op]
    return _rule_lines(rule, f"{table}, arm64", outcome)


def describe_power_rule(rule: PowerRule) -> list[str]:
    """A vcpu power rule: the call or run it decides, its condition and what it leaves."""
    parts = [f"the guest's x0 is {rule.x0}"] if rule.x0 is not None else []
    for who, state in (("the caller", rule.caller), ("the target", rule.target)):
        if state is not None:
            parts.append(f"{who} is {state.c_name} ({state.name})")
    if rule.every_vcpu is not None:
        parts.append(f"every vcpu is {rule.every_vcpu.c_name} ({rule.every_vcpu.name})")
    table = {
        "run": "KVM_RUN of a vcpu",
        "cpu-on": "a guest's PSCI CPU_ON",
        "cpu-off": "a guest's PSCI CPU_OFF",
        "affinity-info": "a guest's PSCI AFFINITY_INFO",
        "system-event": "a guest's call that exits with a system event",
    }[rule.op]
    return _rule_lines(rule, f"{table}, arm64", "; ".join(parts))


def describe_stolen_time_rule(rule: StolenTimeRule) -> list[str]:
    """A stolen-time rule: the ioctl or PV time call it decides, its condition and outcome."""
    if rule.errno:
        outcome = f"errno {rule.errno.name} ({rule.errno.value})"
    elif rule.x0 is not None:
        outcome = f"the guest's x0 is {rule.x0}"
    elif rule.address and rule.op == "get":
        outcome = "the vcpu's stolen-time address (all ones while unset)"
    elif rule.address:
        outcome = "the vcpu's stolen-time address"
    else:
        outcome = "accepted: the vcpu's address from now on"
    table = {
        "set": "KVM_SET_DEVICE_ATTR of a vcpu's stolen-time address",
        "get": "KVM_GET_DEVICE_ATTR of a vcpu's stolen-time address",
        "pv-time-features": "a guest's PV_TIME_FEATURES",
        "pv-time-st": "a guest's PV_TIME_ST",
    }[rule.op]
    return _rule_lines(rule, f"{table}, arm64", outcome)


def api_entries(spec: Spec) -> list[tuple[str, str, str]]:
    """api.yaml's named things a user looks up: (spec name, C name, one line about it)."""
    entries = [
        (
            f.name,
            f.c_name,
            f"vcpu feature {f.c_name} (bit {f.bits.get('arm64', f.bits.get('arm'))} "
            f"on arm64), since {f.lifetime.since}: {_one_line(f.doc)}",
        )
        for f in spec.vcpu_features
    ]
    entries += [
        (
            c.name,
            c.c_name,
            f"capability {c.c_name} = {c.value}, since {c.lifetime.since}"
            + ("; enabled on a VM with KVM_ENABLE_CAP" if c.vm_enable else "")
            + f": {_one_line(c.doc)}",
        )
        for c in spec.capabilities
    ]
    entries += [
        (i.name, i.c_name, f"ioctl {i.c_name} = {i.number:#x}: {_one_line(i.doc)}")
        for i in spec.ioctls
    ]
    for what, constants in (
        ("KVM_GET_MP_STATE state", spec.mp_states),
        ("system event type", spec.system_events),
        # the filter's exit reason is shown with the filter's constants
        ("exit reason", tuple(e for e in spec.exit_reasons if e != spec.smccc_filter.exit_reason)),
    ):
        entries += [
            (c.name, c.c_name, f"{what} {c.c_name} ({c.name}) = {c.value}: {_one_line(c.doc)}")
            for c in constants
        ]
    return entries


def _one_line(doc: str) -> str:
    return " ".join(doc.split())


def filter_constants(spec: Spec) -> list[tuple[str, Constant]]:
    """The SMCCC filter's named numbers, each with what it is: the attribute's group and
    attribute, the actions, the hypercall exit and its flags."""
    f = spec.smccc_filter
    return [
        ("the VM attribute group of the SMCCC filter", f.group),
        ("the SMCCC filter's VM attribute", f.attr),
        *(("an SMCCC filter action", a) for a in f.actions),
        ("the exit reason of a call the SMCCC filter forwards", f.exit_reason),
        *(("a flag of KVM_EXIT_HYPERCALL", flag) for flag in f.exit_flags),
    ]


def stolen_time_constants(spec: Spec) -> list[tuple[str, Constant]]:
    """The stolen-time attribute's named numbers: its vcpu attribute group and attribute."""
    t = spec.stolen_time
    return [
        ("the vcpu attribute group of stolen time", t.group),
        ("the vcpu attribute of the stolen-time structure's address", t.attr),
    ]


def describe_stolen_time(spec: Spec) -> list[str]:
    """The stolen-time section: what it is, its attribute, and its rules by table."""
    t = spec.stolen_time
    lines = [
        f"stolen time (PV time, since {t.service.lifetime.since}): {' '.join(t.doc.split())}",
        f"  attribute: {t.group.c_name} = {t.group.value}, {t.attr.c_name} = {t.attr.value} on "
        f"the vcpu; unset address {t.unset:#x}; struct {t.struct_c_name}, {t.struct_size} bytes",
    ]
    for op in dict.fromkeys(r.op for r in t.rules):
        lines.append(f"  {op}: {', '.join(r.id for r in t.table(op))}")
    return lines


def describe_stolen_time_constant(spec: Spec, wanted: str) -> list[str]:
    """The stolen-time numbers named `wanted`, by spec name or C name (any case)."""
    since = spec.stolen_time.service.lifetime.since
    return [
        f"{what} (since {since}): {c.c_name} ({c.name}) = {c.value}: {' '.join(c.doc.split())}"
        for what, c in stolen_time_constants(spec)
        if wanted == c.name or wanted.upper() == c.c_name
    ]


def describe_filter_constant(spec: Spec, wanted: str) -> list[str]:
    """The filter's numbers named `wanted`, by spec name or C name (any case)."""
    return [
        f"{what} (since {spec.smccc_filter.lifetime.since}): {c.c_name} ({c.name}) = {c.value}: "
        f"{' '.join(c.doc.split())}"
        for what, c in filter_constants(spec)
        if wanted == c.name or wanted.upper() == c.c_name
    ]


def describe_host_profile(spec: Spec, host: HostProfile) -> list[str]:
    """A host profile: what it is, and the level each workaround register reports on it, in
    the order `levels:A/B/C` (the spelling --host and migrate-check sides also take) lists
    them."""
    order = [r for r in spec.registers if r.name in host.levels]
    spelled = "/".join(host.levels[r.name].name for r in order)
    lines = [
        f"host profile: {host.name} (--host {host.name}, or levels:{spelled})",
        f"  {' '.join(host.doc.split())}",
    ]
    for register in order:
        level = host.levels[register.name]
        c_name = f", {level.c_name}" if level.c_name else ""
        lines.append(f"  {register.c_name} ({register.name}): {level.name} = {level.value}{c_name}")
    return lines


def show(spec: Spec, name: str) -> list[str]:
    """Describe everything whose spec name or C name is `name` (case-insensitive for C names):
    a value's or bit's spec name (`trng-v1.0`, `not-required`) can belong to several
    registers, and each is shown. Nothing found: the closest names, if any are close."""
    wanted = name.strip()
    upper = wanted.upper()
    lines: list[str] = []
    for register in spec.registers:
        if wanted == register.name or upper == register.c_name:
            lines += describe_register(spec, register)
        for value in register.values:
            if wanted == value.name or upper == value.c_name:
                lines.append(
                    f"value: {value.c_name} ({value.name}) = {value.value} of {register.c_name}, "
                    f"since {value.lifetime.since}: {' '.join(value.doc.split())}"
                )
        for bit in register.bits:
            if wanted == bit.name or upper == bit.c_name:
                lines.append(
                    f"bit: {bit.c_name} ({bit.name}) = bit {bit.bit} of {register.c_name}, "
                    f"since {bit.lifetime.since}: {' '.join(bit.doc.split())}"
                )
    for host in spec.host_profiles:
        if wanted == host.name:
            lines += describe_host_profile(spec, host)
    for rule in spec.rules:
        if wanted == rule.id:
            lines += describe_rule(rule)
    for filter_rule in spec.smccc_filter.rules:
        if wanted == filter_rule.id:
            lines += describe_filter_rule(filter_rule)
    for power_rule in spec.vcpu_power.rules:
        if wanted == power_rule.id:
            lines += describe_power_rule(power_rule)
    for stolen_time_rule in spec.stolen_time.rules:
        if wanted == stolen_time_rule.id:
            lines += describe_stolen_time_rule(stolen_time_rule)
    for spec_name, c_name, line in api_entries(spec):
        if wanted == spec_name or upper == c_name:
            lines.append(line)
    lines += describe_filter_constant(spec, wanted)
    lines += describe_stolen_time_constant(spec, wanted)
    if wanted in ("stolen-time", spec.stolen_time.struct_c_name):
        lines += describe_stolen_time(spec)
    for function in spec.psci_functions:
        if wanted == function.name or upper in function.c_names.values():
            ids = ", ".join(f"{conv} {fid:#010x}" for conv, fid in sorted(function.ids.items()))
            lines.append(f"PSCI function {function.name} (PSCI {function.psci.name}): {ids}")
    for smccc in spec.smccc_functions:
        if wanted == smccc.name or upper == smccc.c_name:
            lines.append(
                f"SMCCC function {smccc.c_name} = {smccc.function_id:#010x} "
                f"({smccc.service.name}), since {smccc.lifetime.since}"
            )
    for version in spec.psci_versions:
        if wanted in (version.name, f"psci-{version.name}") or upper == version.c_name:
            lines.append(
                f"PSCI version {version.name} = {version.encoded:#x}, in KVM since {version.lifetime.since}"
            )
    if not lines:
        close = difflib.get_close_matches(wanted, names(spec), n=3, cutoff=0.75)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"nothing in the spec is named '{name}'{hint}")
    return lines


def names(spec: Spec) -> list[str]:
    """Every name show() finds something by, sorted (so suggestions are stable)."""
    found: set[str] = set()
    for register in spec.registers:
        found |= {register.name, register.c_name}
        found |= {v.name for v in register.values} | {v.c_name for v in register.values}
        found |= {b.name for b in register.bits} | {b.c_name for b in register.bits}
    found |= set(spec.rule_ids)
    found |= {"stolen-time", spec.stolen_time.struct_c_name}
    found |= {n for spec_name, c_name, _ in api_entries(spec) for n in (spec_name, c_name)}
    found |= {n for _, c in filter_constants(spec) for n in (c.name, c.c_name)}
    found |= {n for _, c in stolen_time_constants(spec) for n in (c.name, c.c_name)}
    found |= {host.name for host in spec.host_profiles}
    for function in spec.psci_functions:
        found |= {function.name, *function.c_names.values()}
    found |= {s.name for s in spec.smccc_functions} | {s.c_name for s in spec.smccc_functions}
    for version in spec.psci_versions:
        found |= {version.name, f"psci-{version.name}"} | (
            {version.c_name} if version.c_name else set()
        )
    return sorted(n for n in found if n)
