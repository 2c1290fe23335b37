"""`kvm-fwspec show NAME`: find a register, value, rule or function by any of its names."""

from __future__ import annotations

from kvm_fwspec.spec.decode import describe_register
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.model import Rule, Spec


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
    until = f" until {rule.lifetime.until}" if rule.lifetime.until else ""
    return [
        f"rule: {rule.id}",
        f"  {rule.op} on {target}, {', '.join(rule.architectures)}, since {rule.lifetime.since}{until}",
        f"  when: {rule.when_text or '(always: the default)'}",
        f"  then: {outcome}",
        f"  why: {' '.join(rule.doc.split())}",
        f"  source: {rule.source.file}" + (f" ({rule.source.note})" if rule.source.note else ""),
    ]


def show(spec: Spec, name: str) -> list[str]:
    """Describe everything whose spec name or C name is `name` (case-insensitive for C names)."""
    wanted = name.strip()
    upper = wanted.upper()
    lines: list[str] = []
    for register in spec.registers:
        if wanted == register.name or upper == register.c_name:
            lines += describe_register(spec, register)
        for value in register.values:
            if upper == value.c_name:
                lines.append(
                    f"value: {value.c_name} = {value.value} of {register.c_name}, "
                    f"since {value.lifetime.since}: {value.doc}"
                )
        for bit in register.bits:
            if upper == bit.c_name:
                lines.append(
                    f"bit: {bit.c_name} = bit {bit.bit} of {register.c_name}, since {bit.lifetime.since}: {bit.doc}"
                )
    for rule in spec.rules:
        if wanted == rule.id:
            lines += describe_rule(rule)
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
        raise UsageError(f"nothing in the spec is named '{name}'")
    return lines
