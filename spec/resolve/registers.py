"""registers.yaml: the firmware pseudo-registers, their reset values, and the host profiles.

A register's id on each architecture is composed from the reg-id layout (arch, size, class and
index), so two registers can never share an id unnoticed; its layout must tile its 64 bits;
its named values and bits must fit and exist no earlier than it does. A register's `reset` is
an expression of the rule language, typed once everything it may name is resolved. A host
profile gives every level register one of its levels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.model import (
    Architecture,
    Field,
    FieldValue,
    HostProfile,
    Layout,
    Lifetime,
    NamedValue,
    Register,
    RegisterBit,
    Service,
)
from kvm_fwspec.spec.resolve.context import Context, Raw, kernel_docs, source
from kvm_fwspec.spec.resolve.encoding import resolve_fields
from kvm_fwspec.spec.rule_names import Vocabulary
from kvm_fwspec.spec.yaml_source import JsonPath


def resolve_registers(
    ctx: Context,
    reg_id: Layout,
    architectures: tuple[Architecture, ...],
    services: Mapping[str, Service],
) -> tuple[Register, ...]:
    """Every register of a firmware class, without its reset (see resolve_resets)."""
    raws = ctx.data("registers")["registers"]
    ids_taken: dict[int, str] = {}
    registers = []
    for i, raw in enumerate(raws):
        register = _register(ctx, ("registers", i), raw, reg_id, architectures, services, ids_taken)
        if register is not None:
            registers.append(register)
    ctx.unique("registers", ("registers",), raws, "name", "register name")
    ctx.unique("registers", ("registers",), raws, "c-name", "register c-name")
    return tuple(registers)


def _register(
    ctx: Context,
    path: JsonPath,
    raw: Raw,
    reg_id: Layout,
    architectures: tuple[Architecture, ...],
    services: Mapping[str, Service],
    ids_taken: dict[int, str],
) -> Register | None:
    reg_class = next((v for v in reg_id.field("class").values if v.name == raw["class"]), None)
    if reg_class is None or not reg_class.firmware:
        ctx.error(
            "registers", (*path, "class"), f"'{raw['class']}' is not a firmware register class"
        )
        return None
    lifetime = ctx.lifetime("registers", path, raw)
    if lifetime.since < reg_class.lifetime.since:
        ctx.error(
            "registers",
            (*path, "since"),
            f"since {lifetime.since} is before class '{reg_class.name}' exists ({reg_class.lifetime.since})",
        )
    arches = _architectures(ctx, path, raw, reg_class, architectures)
    layout = _layout(ctx, path, raw)
    return Register(
        name=raw["name"],
        c_name=raw["c-name"],
        doc=raw["doc"],
        register_class=reg_class,
        index=raw["index"],
        kind=raw["kind"],
        architectures=arches,
        lifetime=lifetime,
        storage=raw["storage"],
        layout=layout,
        values=_values(ctx, path, raw, layout, lifetime),
        bits=_bits(ctx, path, raw, services, lifetime),
        ids=_ids(ctx, path, raw, reg_id, reg_class, arches, ids_taken),
        source=source(raw["source"]),
        kernel_docs=tuple(kernel_docs(k) for k in raw.get("kernel-docs", [])),
        arch_features_since=ctx.release(
            "registers", (*path, "arch-features-since"), raw["arch-features-since"]
        )
        if "arch-features-since" in raw
        else None,
    )


def _architectures(
    ctx: Context,
    path: JsonPath,
    raw: Raw,
    reg_class: FieldValue,
    architectures: tuple[Architecture, ...],
) -> tuple[Architecture, ...]:
    """The architectures the register is on; its class must exist on each."""
    arches = []
    for j, arch_name in enumerate(raw["architectures"]):
        if arch_name not in reg_class.architectures:
            ctx.error(
                "registers",
                (*path, "architectures", j),
                f"class '{reg_class.name}' does not exist on {arch_name}",
            )
        arches.append(next(a for a in architectures if a.name == arch_name))
    return tuple(arches)


def _ids(
    ctx: Context,
    path: JsonPath,
    raw: Raw,
    reg_id: Layout,
    reg_class: FieldValue,
    arches: tuple[Architecture, ...],
    ids_taken: dict[int, str],
) -> dict[str, int]:
    """The register's id on each architecture, composed from the reg-id fields; an id already
    taken by an earlier register is a problem."""
    size_u64 = reg_id.field("size").value_named("u64").value
    ids: dict[str, int] = {
        a.name: reg_id.compose(
            arch=a.reg_arch.value, size=size_u64, **{"class": reg_class.value}, index=raw["index"]
        )
        for a in arches
    }
    for arch_name, id_value in ids.items():
        other = ids_taken.get(id_value)
        if other:
            ctx.error(
                "registers",
                (*path, "index"),
                f"id {id_value:#018x} on {arch_name} collides with register '{other}'",
            )
        ids_taken[id_value] = raw["name"]
    return ids


def _layout(ctx: Context, path: JsonPath, raw: Raw) -> tuple[Field, ...]:
    if raw["kind"] == "bitmap":
        if "layout" in raw:
            ctx.error(
                "registers", (*path, "layout"), "a bitmap's layout is its bits; do not give one"
            )
        return ()
    if "layout" not in raw:
        ctx.error(
            "registers", path, f"a {raw['kind']} register needs a layout covering all 64 bits"
        )
        return ()
    return resolve_fields(ctx, "registers", (*path, "layout"), raw["layout"], 64)


def _values(
    ctx: Context, path: JsonPath, raw: Raw, layout: tuple[Field, ...], lifetime: Lifetime
) -> tuple[NamedValue, ...]:
    """A level register's levels, each fitting its level field."""
    raws = raw.get("values", [])
    if raw["kind"] != "level" and raws:
        ctx.error("registers", (*path, "values"), f"a {raw['kind']} register has no named values")
    level = next((f for f in layout if f.name == "level"), None)
    if raw["kind"] == "level" and level is None:
        ctx.error("registers", (*path, "layout"), "a level register needs a 'level' field")
    values = []
    for j, v in enumerate(raws):
        vpath = (*path, "values", j)
        if level is not None and v["value"] > level.mask >> level.low:
            ctx.error(
                "registers",
                (*vpath, "value"),
                f"value {v['value']} does not fit the {level.width}-bit level field",
            )
        values.append(
            NamedValue(
                name=v["name"],
                c_name=v["c-name"],
                value=v["value"],
                doc=v["doc"],
                lifetime=ctx.lifetime("registers", vpath, v, lifetime),
                arch_features=v.get("arch-features"),
            )
        )
    ctx.unique("registers", (*path, "values"), raws, "name", "value name")
    ctx.unique("registers", (*path, "values"), raws, "value", "value")
    return tuple(values)


def _bits(
    ctx: Context, path: JsonPath, raw: Raw, services: Mapping[str, Service], lifetime: Lifetime
) -> tuple[RegisterBit, ...]:
    """The register's bits; a bitmap's each name the SMCCC service they expose."""
    raws = raw.get("bits", [])
    bits = []
    for j, b in enumerate(raws):
        bpath = (*path, "bits", j)
        service = None
        if "service" in b:
            service = services.get(b["service"])
            if service is None:
                ctx.error("registers", (*bpath, "service"), f"unknown service '{b['service']}'")
        elif raw["kind"] == "bitmap":
            ctx.error("registers", bpath, "a bitmap bit must name the service it exposes")
        bits.append(
            RegisterBit(
                name=b["name"],
                c_name=b["c-name"],
                bit=b["bit"],
                doc=b["doc"],
                lifetime=ctx.lifetime("registers", bpath, b, lifetime),
                service=service,
            )
        )
    ctx.unique("registers", (*path, "bits"), raws, "name", "bit name")
    ctx.unique("registers", (*path, "bits"), raws, "bit", "bit")
    return tuple(bits)


def resolve_host_profiles(ctx: Context, registers: tuple[Register, ...]) -> tuple[HostProfile, ...]:
    """Each host profile, giving every level register one of its own levels."""
    level_registers = {r.name: r for r in registers if r.kind == "level"}
    raws = ctx.data("registers")["host-profiles"]
    profiles = []
    for i, raw in enumerate(raws):
        path = ("host-profiles", i)
        levels = {}
        for reg_name, value_name in raw["levels"].items():
            register = level_registers.get(reg_name)
            if register is None:
                ctx.error(
                    "registers",
                    (*path, "levels", reg_name),
                    f"'{reg_name}' is not a level register",
                )
                continue
            value = next((v for v in register.values if v.name == value_name), None)
            if value is None:
                ctx.error(
                    "registers",
                    (*path, "levels", reg_name),
                    f"'{reg_name}' has no value '{value_name}'",
                )
                continue
            levels[reg_name] = value
        for missing in sorted(set(level_registers) - set(raw["levels"])):
            ctx.error("registers", (*path, "levels"), f"no level given for '{missing}'")
        profiles.append(HostProfile(name=raw["name"], doc=raw["doc"], levels=levels))
    ctx.unique("registers", ("host-profiles",), raws, "name", "host profile")
    return tuple(profiles)


def resolve_resets(
    ctx: Context, registers: tuple[Register, ...], vocabulary: Vocabulary
) -> tuple[Register, ...]:
    """Attach each stored register's reset expression, typed in the register's GET scope."""
    result = []
    raws = ctx.data("registers")["registers"]
    for i, (raw, register) in enumerate(zip(raws, registers, strict=True)):
        path = ("registers", i)
        if (register.storage == "vm") != ("reset" in raw):
            ctx.error(
                "registers", path, "a register has a 'reset' value exactly when its storage is vm"
            )
        text = raw.get("reset")
        reset = None
        if text is not None:
            try:
                reset = rl.check(text, vocabulary.scope(register, "get"), rl.Type.INT)
            except rl.ExpressionError as exc:
                ctx.error("registers", (*path, "reset"), str(exc))
        result.append(dataclasses.replace(register, reset=reset, reset_text=text))
    return tuple(result)
