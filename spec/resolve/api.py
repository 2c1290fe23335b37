"""api.yaml: the KVM API around the firmware registers.

The errnos rules may return, the vcpu features and capabilities, the vcpu and VM state a rule
may depend on, and the part of the KVM interface the conformance harness drives: ioctls (their
numbers composed as the kernel's _IOC() composes them), kvm_run offsets, exit reasons, system
events and core registers.
"""

from __future__ import annotations

from collections.abc import Mapping

from kvm_fwspec.spec.model import (
    Capability,
    Constant,
    CoreRegisters,
    Errno,
    Ioctl,
    Offset,
    StateVariable,
    VcpuFeature,
)
from kvm_fwspec.spec.resolve.context import Context, Raw

# asm-generic/ioctl.h: _IOC_NONE, _IOC_WRITE, _IOC_READ and both.
_IOC_DIRECTIONS = {"none": 0, "write": 1, "read": 2, "read-write": 3}


def resolve_errnos(ctx: Context) -> tuple[Errno, ...]:
    raws = ctx.data("api")["errnos"]
    _unique_names(ctx, "errnos")
    ctx.unique("api", ("errnos",), raws, "value", "errno value")
    return tuple(Errno(name=r["name"], value=r["value"], doc=r["doc"]) for r in raws)


def resolve_capabilities(ctx: Context) -> tuple[Capability, ...]:
    _unique_names(ctx, "capabilities")
    return tuple(
        Capability(
            name=r["name"],
            doc=r["doc"],
            c_name=r["c-name"],
            value=r["value"],
            lifetime=ctx.lifetime("api", ("capabilities", i), r),
            vm_enable=r.get("vm-enable", False),
        )
        for i, r in enumerate(ctx.data("api")["capabilities"])
    )


def resolve_vcpu_features(
    ctx: Context, capabilities: tuple[Capability, ...]
) -> tuple[VcpuFeature, ...]:
    _unique_names(ctx, "vcpu-features")
    by_name = {c.name: c for c in capabilities}
    return tuple(
        _vcpu_feature(ctx, i, r, by_name) for i, r in enumerate(ctx.data("api")["vcpu-features"])
    )


def _vcpu_feature(
    ctx: Context, index: int, raw: Raw, capabilities: Mapping[str, Capability]
) -> VcpuFeature:
    """A feature whose capability is one the spec defines, and which does not exist
    before the capability that offers it."""
    path = ("vcpu-features", index)
    lifetime = ctx.lifetime("api", path, raw)
    capability = capabilities.get(raw["capability"]) if "capability" in raw else None
    if "capability" in raw and capability is None:
        ctx.error("api", (*path, "capability"), f"unknown capability '{raw['capability']}'")
    if capability is not None and lifetime.since < capability.lifetime.since:
        ctx.error(
            "api",
            (*path, "since"),
            f"the feature exists from {lifetime.since}, before its capability "
            f"'{capability.name}' ({capability.lifetime.since})",
        )
    return VcpuFeature(
        name=raw["name"],
        doc=raw["doc"],
        c_name=raw["c-name"],
        bits=dict(raw["bit"]),
        lifetime=lifetime,
        capability=capability,
        finalize=bool(raw.get("finalize", False)),
    )


def resolve_state(ctx: Context) -> tuple[StateVariable, ...]:
    """The vcpu and VM state rules may name; spec/rule_names.py declares their other names."""
    _unique_names(ctx, "state")
    return tuple(
        StateVariable(name=r["name"], doc=r["doc"], type=r["type"])
        for r in ctx.data("api")["state"]
    )


def _unique_names(ctx: Context, key: str) -> None:
    ctx.unique("api", (key,), ctx.data("api")[key], "name", key.rstrip("s"))


# -- the KVM interface the harness uses ----------------------------------------------------


def resolve_ioctls(ctx: Context) -> tuple[Ioctl, ...]:
    """Each ioctl, numbered as _IOC(dir, KVMIO, nr, size): direction in bits 31-30, size in
    29-16, type in 15-8, number in 7-0."""
    api = ctx.data("api")
    raws = api["ioctls"]
    ctx.unique("api", ("ioctls",), raws, "name", "ioctl")
    ctx.unique("api", ("ioctls",), raws, "nr", "ioctl number")
    return tuple(
        Ioctl(
            name=r["name"],
            c_name=r["c-name"],
            number=_IOC_DIRECTIONS[r["direction"]] << 30
            | r["size"] << 16
            | api["ioctl-type"] << 8
            | r["nr"],
            doc=r["doc"],
        )
        for r in raws
    )


def resolve_kvm_run(ctx: Context) -> tuple[Offset, ...]:
    raws = ctx.data("api")["kvm-run"]["fields"]
    ctx.unique("api", ("kvm-run", "fields"), raws, "name", "kvm_run field")
    return tuple(
        Offset(name=f["name"], offset=f["offset"], size=f["size"], doc=f["doc"]) for f in raws
    )


def resolve_exit_reasons(ctx: Context) -> tuple[Constant, ...]:
    return _constants(ctx, "exit-reasons")


def resolve_system_events(ctx: Context) -> tuple[Constant, ...]:
    return _constants(ctx, "system-events")


def resolve_mp_states(ctx: Context) -> tuple[Constant, ...]:
    return _constants(ctx, "mp-states")


def resolve_system_event_flags(ctx: Context) -> tuple[Constant, ...]:
    """Each event type has its own flags, so two flags may share a value, never a name."""
    _unique_names(ctx, "system-event-flags")
    return tuple(
        Constant(name=c["name"], c_name=c["c-name"], value=c["value"], doc=c["doc"])
        for c in ctx.data("api")["system-event-flags"]
    )


def _constants(ctx: Context, key: str) -> tuple[Constant, ...]:
    raws = ctx.data("api")[key]
    ctx.unique("api", (key,), raws, "value", key.rstrip("s"))
    return tuple(
        Constant(name=c["name"], c_name=c["c-name"], value=c["value"], doc=c["doc"]) for c in raws
    )


def resolve_core_registers(ctx: Context) -> tuple[CoreRegisters, ...]:
    return tuple(
        CoreRegisters(name=f["name"], first_word=f["first-word"], count=f["count"], doc=f["doc"])
        for f in ctx.data("api")["core-registers"]["fields"]
    )
