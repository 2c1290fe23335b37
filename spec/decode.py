"""Decode any KVM arm/arm64 register id into its fields and, where the spec knows it, its name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.model import Field, FieldValue, Register, Spec

HEX_DIGITS = 16  # an id written in hex, zero-padded, as KVM_GET_REG_LIST listings print it

ID_RULE = (
    "an ID is hex with 0x (0x6030000000140000, also 0x6030_0000_0014_0000 or spaced as in the "
    "kernel documentation, 0x6030 0000 0014 0000), hex without 0x when it has a digit a-f, "
    "or decimal when it is all digits (as dump files and JSON write ids); 16 digits without "
    "0x and without a-f could be either, and are refused"
)


# The most digits a 64-bit id can have in decimal (2^64 - 1 has 20): longer text is refused
# before int() reads it, which Python refuses beyond 4300 digits and is slow well before.
MOST_DECIMAL_DIGITS = 20
QUOTED_AT_MOST = 40  # characters of a wrong id quoted in its error line


def _quoted(text: str) -> str:
    """`text` as an error line quotes it: whole if short, else its start and its length, so a
    pasted page of digits is still one readable line; bytes that were not text (read from a
    pipe under the C locale, which Python escapes as lone surrogates) as \\xff escapes. Line
    breaks never reach here: split_ids splits at them."""
    if _escaped_bytes(text):
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if len(text) <= QUOTED_AT_MOST:
        return f"'{text}'"
    return f"'{text[:QUOTED_AT_MOST]}...' ({len(text)} characters)"


def _escaped_bytes(text: str) -> bool:
    """Whether `text` holds bytes Python's surrogateescape stood in for, and nothing else
    that is not text."""
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return False
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def parse_id(text: str) -> int:
    """A register id as users have one: see ID_RULE. Decimal ids of real registers have 19 or
    20 digits (the arch field puts them above 4.6e18) and hex ids printed without 0x have 16,
    so the rule misreads no real id; the one width where a bare number could be either is
    refused rather than guessed."""
    cleaned = text.strip().replace("_", "").replace(" ", "")
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", cleaned):
        value = int(cleaned, 16)
    elif re.fullmatch(r"[0-9]+", cleaned):
        if len(cleaned) == HEX_DIGITS:
            raise UsageError(
                f"'{text}' could be decimal or hex: write 0x{cleaned} for hex "
                f"(a decimal id has 19 or 20 digits)"
            )
        if len(cleaned.lstrip("0")) > MOST_DECIMAL_DIGITS:
            raise UsageError(f"{_quoted(text)} does not fit in 64 bits")
        value = int(cleaned, 10)
    elif re.fullmatch(r"[0-9a-fA-F]+", cleaned):
        value = int(cleaned, 16)
    else:
        raise UsageError(
            f"{_quoted(text)} is not a register id (expected hex such as 0x6030000000140000, "
            "or decimal as dump files write it)"
        )
    if value >= 1 << 64:
        raise UsageError(f"{_quoted(text)} does not fit in 64 bits")
    return value


def split_ids(text: str) -> list[str]:
    """The ids in one line or argument, split at whitespace (`0x6030000000160000
    6931039826524504064` is two ids, as a listing pasted from a terminal has them), except the
    kernel documentation's spelling of one id in groups of four hex digits after its 0x
    (`0x6030 0000 0014 0000`), whose groups stay together: a group of four digits alone is
    never a register id (a decimal one has 19 or 20)."""
    ids: list[str] = []
    for token in text.split():
        if ids and re.fullmatch(r"[0-9a-fA-F]{4}", token) and _continues(ids[-1]):
            ids[-1] += f" {token}"
        else:
            ids.append(token)
    return ids


def _continues(text: str) -> bool:
    """Whether `text` is a 0x id spelled in groups of four that has room for another group."""
    groups = text.split(" ")
    return (
        re.fullmatch(r"0[xX][0-9a-fA-F]{4}", groups[0]) is not None
        and all(len(group) == 4 for group in groups[1:])
        and len("".join(groups)) - 2 < HEX_DIGITS
    )


def find_register(spec: Spec, reg_id: int) -> Register | None:
    return next((r for r in spec.registers if reg_id in r.ids.values()), None)


@dataclass(frozen=True, kw_only=True)
class DecodedField:
    """One field of a register id: its bits, what they hold and, if the spec names it, what."""

    field: Field
    raw: int
    named: FieldValue | None
    index_parts: tuple[tuple[str, int], ...]  # a sysreg index as op0/op1/CRn/CRm/op2

    @property
    def must_be_zero(self) -> bool:
        return self.field.reserved and self.raw != 0


def decode_fields(spec: Spec, reg_id: int) -> list[DecodedField]:
    """Every field of the id's layout, named where the spec names its value for the id's arch."""
    layout = spec.layout("reg-id")
    arch_value = layout.field("arch").extract(reg_id)
    arch = next((v for v in layout.field("arch").values if v.value == arch_value), None)
    decoded = []
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
        parts: tuple[tuple[str, int], ...] = ()
        if named and named.index_fields:
            index = layout.field("index").extract(reg_id)
            parts = tuple((f.name, f.extract(index)) for f in named.index_fields)
        decoded.append(DecodedField(field=field, raw=raw, named=named, index_parts=parts))
    return decoded


def describe_id(spec: Spec, reg_id: int) -> list[str]:
    """Lines describing `reg_id`: every field, its named value, and the register if known."""
    lines = [f"id {reg_id:#018x}"]
    for decoded in decode_fields(spec, reg_id):
        field, named = decoded.field, decoded.named
        label = f" {named.name}" + (f" ({named.c_name})" if named.c_name else "") if named else ""
        problem = "  <- must be zero" if decoded.must_be_zero else ""
        lines.append(
            f"  {field.name:<9} bits {field.high:>2}-{field.low:<2} = {decoded.raw:#x}{label}{problem}"
        )
        if decoded.index_parts:
            parts = ", ".join(f"{name}={value}" for name, value in decoded.index_parts)
            lines.append(f"            index fields: {parts}")
    register = find_register(spec, reg_id)
    if register is None:
        lines.append("  register: not a firmware pseudo-register the spec defines")
    else:
        lines += describe_register(spec, register)
    return lines


def id_to_json(spec: Spec, reg_id: int) -> dict[str, Any]:
    """`decode --json`: the id as a hex string (exact in every JSON reader: ids exceed the 2^53
    that JavaScript and jq hold exactly) and in decimal text, each field, and the register."""
    fields: dict[str, Any] = {}
    for decoded in decode_fields(spec, reg_id):
        entry: dict[str, Any] = {
            "bits": [decoded.field.high, decoded.field.low],
            "value": decoded.raw,
            "name": decoded.named.name if decoded.named else None,
            "c-name": decoded.named.c_name if decoded.named else None,
        }
        if decoded.field.reserved:
            entry["must-be-zero"] = decoded.must_be_zero
        if decoded.index_parts:
            entry["index-fields"] = dict(decoded.index_parts)
        fields[decoded.field.name] = entry
    register = find_register(spec, reg_id)
    return {
        "id": f"{reg_id:#018x}",
        "id-decimal": str(reg_id),
        "fields": fields,
        "register": None
        if register is None
        else {"name": register.name, "c-name": register.c_name, "kind": register.kind},
    }


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
