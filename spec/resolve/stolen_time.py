"""smccc.yaml's `stolen-time`: a vcpu's stolen-time structure and its decision tables.

The service is smccc.yaml's, the tables' `pv-time-functions` are that service's functions,
and each rule's `when` is typed in the stolen-time vocabulary (spec/stolen_time_names.py).
Every table must end, in every release it has a rule in, in a rule without `when`; the
attribute's tables have one in every release.
"""

from __future__ import annotations

from collections.abc import Mapping

from kvm_fwspec.spec.model import (
    Constant,
    Errno,
    Release,
    Service,
    StolenTime,
    StolenTimeRule,
)
from kvm_fwspec.spec.resolve.context import Context, Raw, source
from kvm_fwspec.spec.resolve.decision_tables import (
    check_tables_end_in_defaults,
    checked_rule,
    checked_when,
)
from kvm_fwspec.spec.resolve.structs import resolve_struct
from kvm_fwspec.spec.stolen_time_names import STOLEN_TIME_OPS, stolen_time_scope
from kvm_fwspec.spec.yaml_source import JsonPath

STEM = "smccc"
PATH = ("stolen-time",)
ALLOWED_RESULTS = {
    "set": {"errno", "ok"},
    "get": {"errno", "address"},
    "pv-time-features": {"x0"},
    "pv-time-st": {"x0", "address"},
}


def resolve_stolen_time(
    ctx: Context,
    services: Mapping[str, Service],
    errnos: tuple[Errno, ...],
    releases: tuple[Release, ...],
) -> StolenTime | None:
    """The stolen-time section, or None (with the problem reported) where it names no service."""
    raw = ctx.data(STEM)["stolen-time"]
    service = services.get(raw["service"])
    if service is None:
        ctx.error(STEM, (*PATH, "service"), f"no service '{raw['service']}' in smccc.yaml")
        return None
    struct = raw["struct"]
    fields = resolve_struct(ctx, STEM, (*PATH, "struct"), struct, frozenset())
    rules = tuple(
        _rule(ctx, (*PATH, "rules", i), r, service, errnos) for i, r in enumerate(raw["rules"])
    )
    ctx.unique(STEM, (*PATH, "rules"), raw["rules"], "id", "rule id")
    if not ctx.problems:
        # The calls' tables exist only where PV time does; the attribute's in every release
        # (before PV time, the group is ENXIO)
        calls = ("pv-time-features", "pv-time-st")
        check_tables_end_in_defaults(
            ctx, STEM, (*PATH, "rules"), rules, STOLEN_TIME_OPS, releases, optional=calls
        )
    attribute = raw["attribute"]
    return StolenTime(
        doc=raw["doc"],
        service=service,
        architectures=tuple(raw["architectures"]),
        source=source(raw["source"]),
        attribute_doc=attribute["doc"],
        group=_constant(attribute["group"], attribute["doc"]),
        attr=_constant(attribute["attr"], attribute["doc"]),
        unset=raw["unset"]["value"],
        unset_doc=raw["unset"]["doc"],
        struct_c_name=struct["c-name"],
        struct_doc=struct["doc"],
        struct_size=struct["size"],
        fields=fields,
        rules=rules,
    )


def _constant(raw: Raw, doc: str) -> Constant:
    return Constant(name=raw["name"], c_name=raw["c-name"], value=raw["value"], doc=doc)


def _rule(
    ctx: Context, path: JsonPath, raw: Raw, service: Service, errnos: tuple[Errno, ...]
) -> StolenTimeRule:
    op = raw["op"]
    result = raw["result"]
    errno = checked_rule(ctx, STEM, path, raw, "stolen-time", ALLOWED_RESULTS[op], errnos)
    return StolenTimeRule(
        id=raw["id"],
        doc=raw["doc"],
        op=op,
        when=checked_when(ctx, STEM, path, raw, stolen_time_scope(op)),
        when_text=raw.get("when"),
        errno=errno,
        ok=bool(result.get("ok")),
        x0=result.get("x0"),
        address=bool(result.get("address")),
        lifetime=ctx.lifetime(STEM, path, raw, service.lifetime),
        source=source(raw["source"]),
    )
