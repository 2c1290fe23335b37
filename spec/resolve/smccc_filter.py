"""smccc-filter.yaml: the SMCCC filter's ABI and its decision tables.

The reserved ranges are composed from the smccc-function-id layout (every function number of
an owner and convention), the exit reason is api.yaml's, and each rule's `when` is typed in
the filter's own vocabulary (spec/filter_names.py). Every table must end, in every release,
in a rule without `when`, so that no attribute, range or call is left undecided.
"""

from __future__ import annotations

from kvm_fwspec.spec.filter_names import FILTER_OPS, filter_scope
from kvm_fwspec.spec.model import (
    Constant,
    Errno,
    FilterRange,
    FilterRule,
    Layout,
    Lifetime,
    Release,
    SmcccFilter,
)
from kvm_fwspec.spec.resolve.context import Context, Raw, source
from kvm_fwspec.spec.resolve.decision_tables import (
    check_tables_end_in_defaults,
    checked_rule,
    checked_when,
)
from kvm_fwspec.spec.resolve.structs import resolve_struct
from kvm_fwspec.spec.yaml_source import JsonPath

STEM = "smccc-filter"
FILTER_STRUCT_FIELDS = frozenset({"base", "nr-functions", "action", "pad"})  # what rules read


def resolve_smccc_filter(
    ctx: Context,
    smccc: Layout,
    errnos: tuple[Errno, ...],
    exit_reasons: tuple[Constant, ...],
    releases: tuple[Release, ...],
) -> SmcccFilter | None:
    """The filter, or None (with the problem reported) where its exit names no exit reason."""
    raw = ctx.data(STEM)
    lifetime = ctx.lifetime(STEM, (), raw)
    actions = tuple(_constant(a) for a in raw["actions"])
    ctx.unique(STEM, ("actions",), raw["actions"], "name", "action")
    ctx.unique(STEM, ("actions",), raw["actions"], "value", "action value")
    fields = resolve_struct(ctx, STEM, ("struct",), raw["struct"], FILTER_STRUCT_FIELDS)
    exit_reason = next((e for e in exit_reasons if e.name == raw["exit"]["reason"]), None)
    if exit_reason is None:
        ctx.error(STEM, ("exit", "reason"), f"no exit reason '{raw['exit']['reason']}' in api.yaml")
        return None  # the rules' exits are checked against it
    rules = tuple(
        _rule(ctx, ("rules", i), r, lifetime, errnos, exit_reason, tuple(a.name for a in actions))
        for i, r in enumerate(raw["rules"])
    )
    ctx.unique(STEM, ("rules",), raw["rules"], "id", "rule id")
    if not ctx.problems:
        # the `call` table exists only where the filter does
        check_tables_end_in_defaults(
            ctx, STEM, ("rules",), rules, FILTER_OPS, releases, optional=("call",)
        )
    return SmcccFilter(
        doc=raw["doc"],
        lifetime=lifetime,
        source=source(raw["source"]),
        attribute_doc=raw["attribute"]["doc"],
        group=_constant(raw["attribute"]["group"], raw["attribute"]["doc"]),
        attr=_constant(raw["attribute"]["attr"], raw["attribute"]["doc"]),
        struct_c_name=raw["struct"]["c-name"],
        struct_doc=raw["struct"]["doc"],
        struct_size=raw["struct"]["size"],
        fields=fields,
        actions=actions,
        reserved=tuple(
            _reserved(ctx, ("reserved", i), r, smccc) for i, r in enumerate(raw["reserved"])
        ),
        exit_doc=raw["exit"]["doc"],
        exit_reason=exit_reason,
        exit_flags=tuple(
            Constant(name=f["name"], c_name=f["c-name"], value=1 << f["bit"], doc=f["doc"])
            for f in raw["exit"]["flags"]
        ),
        rules=rules,
    )


def _constant(raw: Raw, doc: str | None = None) -> Constant:
    return Constant(
        name=raw["name"], c_name=raw["c-name"], value=raw["value"], doc=doc or raw["doc"]
    )


def _reserved(ctx: Context, path: JsonPath, raw: Raw, smccc: Layout) -> FilterRange:
    owners = {v.name: v.value for v in smccc.field("owner").values}
    conventions = {v.name: v.value for v in smccc.field("convention").values}
    for key, known in (("owner", owners), ("convention", conventions)):
        if raw[key] not in known:
            ctx.error(STEM, (*path, key), f"unknown {key} '{raw[key]}'")
            return FilterRange(name=raw["name"], doc=raw["doc"], first=0, last=0)
    fast = smccc.field("call-type").value_named("fast").value
    number = smccc.field("function")

    def compose(function: int) -> int:
        return smccc.compose(
            call_type=fast,
            convention=conventions[raw["convention"]],
            owner=owners[raw["owner"]],
            function=function,
        )

    return FilterRange(
        name=raw["name"], doc=raw["doc"], first=compose(0), last=compose(number.mask >> number.low)
    )


def _rule(
    ctx: Context,
    path: JsonPath,
    raw: Raw,
    parent: Lifetime,
    errnos: tuple[Errno, ...],
    exit_reason: Constant,
    actions: tuple[str, ...],
) -> FilterRule:
    op = raw["op"]
    result = raw["result"]
    allowed = {"has": {"errno", "ok"}, "set": {"errno", "ok"}, "call": {"x0", "exit", "kvm"}}[op]
    errno = checked_rule(ctx, STEM, path, raw, STEM, allowed, errnos)
    if "exit" in result and result["exit"] != exit_reason.name:
        ctx.error(
            STEM,
            (*path, "result", "exit"),
            f"a forwarded call exits with '{exit_reason.name}', not '{result['exit']}'",
        )
    when = checked_when(ctx, STEM, path, raw, filter_scope(op, actions))
    return FilterRule(
        id=raw["id"],
        doc=raw["doc"],
        op=op,
        when=when,
        when_text=raw.get("when"),
        errno=errno,
        ok=bool(result.get("ok")),
        x0=result.get("x0"),
        exit=exit_reason if "exit" in result else None,
        kvm=bool(result.get("kvm")),
        lifetime=ctx.lifetime(STEM, path, raw, parent),
        source=source(raw["source"]),
    )
