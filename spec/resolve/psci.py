"""psci.yaml: the PSCI versions, the newest KVM implements per release, and the functions.

A version's encoding is derived (major << 16 | minor) and its name must agree with it; each
function's ids are composed from the smccc-function-id layout; KVM's handling of a function
starts no earlier than the version it comes with; and the header errata, releases whose uapi
header numbered a function wrongly, are fixed after the header first had it. KVM's own
pre-standard PSCI 0.1 function ids and the return codes and constants complete the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvm_fwspec.spec.model import (
    Capability,
    Constant,
    ConstantGroup,
    HeaderErratum,
    KvmPsci01Function,
    KvmPsciHandling,
    LatestPsci,
    Layout,
    Lifetime,
    PsciCall,
    PsciFunction,
    PsciVersion,
    Release,
)
from kvm_fwspec.spec.resolve.context import Context, Raw, optional_source, source
from kvm_fwspec.spec.yaml_source import JsonPath


def resolve_psci_versions(ctx: Context) -> tuple[PsciVersion, ...]:
    raws = ctx.data("psci")["versions"]
    versions = []
    for i, raw in enumerate(raws):
        path = ("versions", i)
        if raw["name"] != f"{raw['major']}.{raw['minor']}":
            ctx.error(
                "psci",
                (*path, "name"),
                f"name '{raw['name']}' does not match major {raw['major']} and minor {raw['minor']}",
            )
        versions.append(
            PsciVersion(
                name=raw["name"],
                major=raw["major"],
                minor=raw["minor"],
                doc=raw["doc"],
                lifetime=ctx.lifetime("psci", path, raw),
                c_name=raw.get("c-name"),
                encoded=raw["major"] << 16 | raw["minor"],
            )
        )
    ctx.unique("psci", ("versions",), raws, "name", "PSCI version")
    return tuple(versions)


def _psci_version(
    ctx: Context, path: JsonPath, name: str, versions: tuple[PsciVersion, ...]
) -> PsciVersion | None:
    found = next((v for v in versions if v.name == name), None)
    if found is None:
        ctx.error("psci", path, f"unknown PSCI version '{name}'")
    return found


def resolve_psci_latest(ctx: Context, versions: tuple[PsciVersion, ...]) -> tuple[LatestPsci, ...]:
    """The newest version KVM implements, from the first release on; each entry lasts until
    the next one starts."""
    raws = ctx.data("psci")["latest"]
    result = []
    for i, raw in enumerate(raws):
        path = ("latest", i)
        version = _psci_version(ctx, (*path, "version"), raw["version"], versions)
        since = ctx.release("psci", (*path, "since"), raw["since"])
        until = Release.parse(raws[i + 1]["since"]) if i + 1 < len(raws) else None
        if until is not None and until <= since:
            ctx.error("psci", (*path, "since"), "latest entries must be in release order")
        if version is not None:
            if not version.lifetime.covers(since):
                ctx.error(
                    "psci",
                    (*path, "version"),
                    f"PSCI {version.name} is not implemented in {since}",
                )
            result.append(LatestPsci(lifetime=Lifetime(since, until=until), version=version))
    if raws and Release.parse(raws[0]["since"]) != ctx.releases[0]:
        ctx.error(
            "psci", ("latest", 0, "since"), f"the first entry must start at {ctx.releases[0]}"
        )
    return tuple(result)


def resolve_psci_functions(
    ctx: Context,
    smccc: Layout,
    versions: tuple[PsciVersion, ...],
    capabilities: tuple[Capability, ...],
    events: SystemEvents,
) -> tuple[PsciFunction, ...]:
    raws = ctx.data("psci")["functions"]
    result = []
    for i, raw in enumerate(raws):
        path = ("functions", i)
        version = _psci_version(ctx, (*path, "psci"), raw["psci"], versions)
        errata = tuple(
            HeaderErratum(
                number=e["number"],
                doc=e["doc"],
                fixed=ctx.lifetime("psci", (*path, "header-errata", j, "fixed"), e["fixed"]),
                ids=_function_ids(smccc, e["number"], raw["c-names"]),
                source=source(e["source"]),
            )
            for j, e in enumerate(raw.get("header-errata", []))
        )
        header_since = (
            ctx.release("psci", (*path, "header-since"), raw["header-since"])
            if "header-since" in raw
            else None
        )
        for j, erratum in enumerate(errata):
            if header_since is None or erratum.fixed.since <= header_since:
                ctx.error(
                    "psci",
                    (*path, "header-errata", j, "fixed", "since"),
                    "a header erratum must be fixed after the function's header-since",
                )
        kvm = _kvm_handling(ctx, (*path, "kvm"), raw.get("kvm"), versions, capabilities, events)
        if version is not None:
            result.append(
                PsciFunction(
                    name=raw["name"],
                    number=raw["number"],
                    psci=version,
                    doc=raw["doc"],
                    ids=_function_ids(smccc, raw["number"], raw["c-names"]),
                    c_names=dict(raw["c-names"]),
                    header_since=header_since,
                    kvm=kvm,
                    header_errata=errata,
                    source=optional_source(raw.get("source")),
                )
            )
    ctx.unique("psci", ("functions",), raws, "name", "PSCI function")
    ctx.unique("psci", ("functions",), raws, "number", "PSCI function number")
    return tuple(result)


def _function_ids(smccc: Layout, number: int, c_names: Raw) -> dict[str, int]:
    """A standard-service fast call's id under each calling convention it has a C name for."""
    conventions = {v.name: v.value for v in smccc.field("convention").values}
    return {
        convention: smccc.compose(
            call_type=smccc.field("call-type").value_named("fast").value,
            convention=conventions[convention],
            owner=smccc.field("owner").value_named("standard").value,
            function=number,
        )
        for convention in c_names
    }


def _kvm_handling(
    ctx: Context,
    path: JsonPath,
    raw: Raw | None,
    versions: tuple[PsciVersion, ...],
    capabilities: tuple[Capability, ...],
    events: SystemEvents,
) -> KvmPsciHandling | None:
    """How KVM answers a function: from a version that exists by then, perhaps only with a
    capability the spec defines, and what some of its calls do."""
    if raw is None:
        return None
    from_version = _psci_version(ctx, (*path, "from"), raw["from"], versions)
    capability = None
    if "needs-capability" in raw:
        capability = next((c for c in capabilities if c.name == raw["needs-capability"]), None)
        if capability is None:
            ctx.error(
                "psci",
                (*path, "needs-capability"),
                f"unknown capability '{raw['needs-capability']}'",
            )
    lifetime = ctx.lifetime("psci", path, raw)
    if from_version is None:
        return None
    if lifetime.since < from_version.lifetime.since:
        ctx.error(
            "psci",
            (*path, "since"),
            f"PSCI {from_version.name} only exists from {from_version.lifetime.since}",
        )
    return KvmPsciHandling(
        from_version=from_version,
        lifetime=lifetime,
        features=raw["features"],
        needs_capability=capability,
        calls=tuple(
            _call(ctx, (*path, "calls", i), c, events) for i, c in enumerate(raw.get("calls", []))
        ),
    )


@dataclass(frozen=True)
class SystemEvents:
    """api.yaml's system event types and flags, which a PSCI call's exit names."""

    types: tuple[Constant, ...]
    flags: tuple[Constant, ...]


def _call(ctx: Context, path: JsonPath, raw: Raw, events: SystemEvents) -> PsciCall:
    exit_type = None
    if "exit" in raw:
        exit_type = next((e for e in events.types if e.name == raw["exit"]), None)
        if exit_type is None:
            ctx.error("psci", (*path, "exit"), f"no system event '{raw['exit']}' in api.yaml")
    flags = 0
    for j, name in enumerate(raw.get("flags", [])):
        flag = next((f for f in events.flags if f.name == name), None)
        if flag is None:
            ctx.error("psci", (*path, "flags", j), f"no system event flag '{name}' in api.yaml")
        else:
            flags |= flag.value
    return PsciCall(
        args=tuple(raw["args"]), doc=raw["doc"], x0=raw.get("x0"), exit=exit_type, flags=flags
    )


def resolve_kvm_psci_01(ctx: Context) -> tuple[int, str, tuple[KvmPsci01Function, ...]]:
    """KVM's PSCI 0.1: the base of its function ids, the base's C name, and the functions."""
    raw = ctx.data("psci")["kvm-psci-0.1"]
    functions = tuple(
        KvmPsci01Function(
            name=f["name"],
            offset=f["offset"],
            c_name=f["c-name"],
            handled=f["handled"],
            doc=f["doc"],
            function_id=raw["base"] + f["offset"],
        )
        for f in raw["functions"]
    )
    path = ("kvm-psci-0.1", "functions")
    ctx.unique("psci", path, raw["functions"], "offset", "offset")
    ctx.unique("psci", path, raw["functions"], "name", "function")
    return raw["base"], raw["c-base"], functions


def resolve_return_codes(ctx: Context) -> tuple[Constant, ...]:
    raws = ctx.data("psci")["return-codes"]
    ctx.unique("psci", ("return-codes",), raws, "value", "return code")
    return tuple(_constant(c) for c in raws)


def resolve_constant_groups(ctx: Context) -> tuple[ConstantGroup, ...]:
    return tuple(
        ConstantGroup(
            name=g["name"],
            doc=g["doc"],
            constants=tuple(_constant(c) for c in g["constants"]),
            header_since=ctx.release(
                "psci", ("constant-groups", i, "header-since"), g["header-since"]
            )
            if "header-since" in g
            else None,
            source=optional_source(g.get("source")),
        )
        for i, g in enumerate(ctx.data("psci")["constant-groups"])
    )


def _constant(raw: Raw) -> Constant:
    return Constant(name=raw["name"], c_name=raw["c-name"], value=raw["value"], doc=raw["doc"])
