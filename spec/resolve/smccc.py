"""smccc.yaml: the hypercall services a guest can discover, and their SMCCC functions.

Services come early, since the bitmap registers' bits name the service each exposes. A
function's id is composed from the smccc-function-id layout and must collide with no other
function's, PSCI's included.
"""

from __future__ import annotations

from collections.abc import Mapping

from kvm_fwspec.spec.model import (
    AnyBits,
    Layout,
    Lifetime,
    PsciFunction,
    Register,
    Service,
    SmcccCall,
    SmcccFunction,
)
from kvm_fwspec.spec.resolve.context import Context, Raw
from kvm_fwspec.spec.yaml_source import JsonPath


def resolve_not_supported(ctx: Context) -> tuple[int, ...]:
    """x0 to x3 of a call KVM refuses."""
    return tuple(ctx.data("smccc")["not-supported"]["answers"])


def resolve_services(ctx: Context) -> dict[str, Service]:
    """The services by name."""
    raws = ctx.data("smccc")["services"]
    ctx.unique("smccc", ("services",), raws, "name", "service")
    return {
        r["name"]: Service(
            name=r["name"], doc=r["doc"], lifetime=ctx.lifetime("smccc", ("services", i), r)
        )
        for i, r in enumerate(raws)
    }


def resolve_smccc_functions(
    ctx: Context,
    smccc: Layout,
    services: Mapping[str, Service],
    psci_functions: tuple[PsciFunction, ...],
    registers: tuple[Register, ...],
) -> tuple[SmcccFunction, ...]:
    raws = ctx.data("smccc")["functions"]
    register_names = {r.name for r in registers}
    owners = {v.name: v.value for v in smccc.field("owner").values}
    conventions = {v.name: v.value for v in smccc.field("convention").values}
    fast = smccc.field("call-type").value_named("fast").value
    taken = {fid: f"PSCI {f.name}" for f in psci_functions for fid in f.ids.values()}
    result = []
    for i, raw in enumerate(raws):
        path = ("functions", i)
        if raw["owner"] not in owners:
            ctx.error("smccc", (*path, "owner"), f"unknown owner '{raw['owner']}'")
            continue
        wanted = raw.get("returns-register")
        if wanted is not None and wanted not in register_names:
            ctx.error("smccc", (*path, "returns-register"), f"no register '{wanted}'")
            continue
        held = raw.get("register-results", {})
        unknown = [(x, name) for x, name in held.items() if name not in register_names]
        for x, name in unknown:
            ctx.error("smccc", (*path, "register-results", x), f"no register '{name}'")
        if unknown:
            continue
        service = services.get(raw["service"])
        if service is None:
            ctx.error("smccc", (*path, "service"), f"unknown service '{raw['service']}'")
            continue
        fid = smccc.compose(
            call_type=fast,
            convention=conventions[raw["convention"]],
            owner=owners[raw["owner"]],
            function=raw["number"],
        )
        if fid in taken:
            ctx.error(
                "smccc", (*path, "number"), f"function id {fid:#010x} collides with {taken[fid]}"
            )
        taken[fid] = raw["name"]
        answers = raw.get("answers")
        if answers is not None and "returns" not in raw:
            ctx.error("smccc", (*path, "answers"), "answers need returns, their x0")
        elif answers is not None and answers[0] != raw["returns"]:
            ctx.error(
                "smccc",
                (*path, "answers"),
                f"x0 of the answers is {answers[0]:#x}, not the call's returns ({raw['returns']:#x})",
            )
        result.append(
            SmcccFunction(
                name=raw["name"],
                c_name=raw["c-name"],
                owner=raw["owner"],
                convention=raw["convention"],
                number=raw["number"],
                service=service,
                doc=raw["doc"],
                lifetime=ctx.lifetime("smccc", path, raw),
                function_id=fid,
                psci_features=raw.get("psci-features"),
                returns=raw.get("returns"),
                arch_features=raw.get("arch-features"),
                returns_register=raw.get("returns-register"),
                answers=tuple(answers) if answers is not None else None,
                register_results=tuple(
                    sorted((int(x.removeprefix("x")), name) for x, name in held.items())
                ),
                calls=tuple(
                    _call(ctx, (*path, "calls", j), call, ctx.lifetime("smccc", path, raw))
                    for j, call in enumerate(raw.get("calls", []))
                ),
            )
        )
    ctx.unique("smccc", ("functions",), raws, "name", "SMCCC function")
    return tuple(result)


def _call(ctx: Context, path: JsonPath, raw: Raw, parent: Lifetime) -> SmcccCall:
    return SmcccCall(
        args=tuple(raw["args"]),
        answers=tuple(
            AnyBits(bits=a["bits"]) if isinstance(a, dict) else a for a in raw["answers"]
        ),
        doc=raw["doc"],
        lifetime=ctx.lifetime("smccc", path, raw, parent),
    )
