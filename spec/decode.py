"""Decode any KVM arm/arm64 register id into its fields and, where the spec knows it, its name."""

from __future__ import annotations

from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.model import Register, Spec


def parse_id(text: str) -> int:
    """Accept 0x6030000000140000, 0x6030_0000_0014_0000 or the documentation's spaced form."""
    cleaned = text.replace("_", "").replace(" ", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise UsageError(
            f"'{text}' is not a register id (expected hex such as 0x6030000000140000)"
        ) from None
    if not 0 <= value < 1 << 64:
        raise UsageError(f"'{text}' does not fit in 64 bits")
    return value


def find_register(spec: Spec, reg_id: int) -> Register | None:
    return next((r for r in spec.registers if reg_id in r.ids.values()), None)


def describe_id(spec: Spec, reg_id: int) -> list[str]:
    """Lines describing `reg_id`: every field, its named value, and the register if known."""
    layout = spec.layout("reg-id")
    lines = [f"id {reg_id:#018x}"]
    arch_value = layout.field("arch").extract(reg_id)
    arch = next((v for v in layout.field("arch").values if v.value == arch_value), None)
    for field in layout.fields:
        raw = field.extract(reg_id)
        named = next(
            (
                v
                for v in field.values
                if v.value == raw and (arch is None or arch.name in v.architectures)
            ),
            None,
        )
        label = f" {named.name}" + (f" ({named.c_name})" if named.c_name else "") if named else ""
        problem = "  <- must be zero" if field.reserved and raw else ""
        lines.append(
            f"  {field.name:<9} bits {field.high:>2}-{field.low:<2} = {raw:#x}{label}{problem}"
        )
        if named and named.index_fields:
            index = layout.field("index").extract(reg_id)
            parts = ", ".join(f"{f.name}={f.extract(index)}" for f in named.index_fields)
            lines.append(f"            index fields: {parts}")
    register = find_register(spec, reg_id)
    if register is None:
        lines.append("  register: not a firmware pseudo-register the spec defines")
    else:
        lines += describe_register(spec, register)
    return lines


def describe_register(spec: Spec, register: Register) -> list[str]:
    """A register's name, ids, values and release history."""
    lines = [f"register: {register.c_name} ({register.name})"]
    lines += [f"  id on {arch}: {value:#018x}" for arch, value in sorted(register.ids.items())]
    history = f"since {register.lifetime.since}"
    if register.lifetime.backports:
        history += f" (backported to {', '.join(str(b) for b in register.lifetime.backports)})"
    for arch in register.architectures:
        if arch.lifetime.until:
            history += f"; {arch.name} hosts until {arch.lifetime.until}"
    lines.append(f"  history: {history}")
    lines.append(
        f"  kind: {register.kind}; storage: {register.storage}"
        + (f"; reset: {register.reset_text}" if register.reset_text else "")
    )
    lines += [
        f"  value {v.name} = {v.value} ({v.c_name}), since {v.lifetime.since}"
        for v in register.values
    ]
    lines += [
        f"  bit {b.bit} {b.name} ({b.c_name}), since {b.lifetime.since}" for b in register.bits
    ]
    if register.kind == "psci-version":
        latest = ", ".join(f"{p.version.name} from {p.lifetime.since}" for p in spec.psci_latest)
        lines.append(f"  default (KVM_ARM_PSCI_LATEST): {latest}")
    rules = [r for r in spec.rules if r.register is register]
    lines.append(f"  rules: {', '.join(r.id for r in rules)}")
    lines.append(f"  source: {register.source.file}")
    for doc in register.kernel_docs:
        lines.append(f"  kernel docs ({doc.file}) say: {doc.says.strip()}")
        lines.append(
            f"    code does: {doc.code_does.strip()} Real KVM follows: {doc.real_kvm_follows}."
        )
    return lines
