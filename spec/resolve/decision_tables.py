"""What every decision table of its own (the SMCCC filter's, the vcpu power tables, the
stolen-time tables) must be: rules whose ids and results fit their operation, and for each
operation a table that ends, in every release, in a rule without `when`, so that nothing is
left undecided."""

from __future__ import annotations

from typing import Protocol

from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.model import Errno, Lifetime, Release
from kvm_fwspec.spec.resolve.context import Context, Raw
from kvm_fwspec.spec.rule_language import Expr
from kvm_fwspec.spec.yaml_source import JsonPath


class TableRule(Protocol):
    @property
    def op(self) -> str: ...
    @property
    def when(self) -> Expr | None: ...
    @property
    def lifetime(self) -> Lifetime: ...


def check_tables_end_in_defaults(
    ctx: Context,
    stem: str,
    path: JsonPath,
    rules: tuple[TableRule, ...],
    ops: tuple[str, ...],
    releases: tuple[Release, ...],
    optional: tuple[str, ...] = (),
) -> None:
    """Report each op whose table lacks a final default in some release; an op in `optional`
    may have no rule at all in a release (the filter's `call` before the filter existed)."""
    for op in ops:
        table = [r for r in rules if r.op == op]
        for release in releases:
            live = [r for r in table if r.lifetime.covers(release)]
            if op in optional and not live:
                continue
            if not live or live[-1].when is not None:
                ctx.error(stem, path, f"no {op} rule without `when` ends the table in {release}")
                break


def checked_when(ctx: Context, stem: str, path: JsonPath, raw: Raw, scope: rl.Scope) -> Expr | None:
    """A rule's `when`, typed in its table's vocabulary; None without one, or (reported)
    where it does not type."""
    if "when" not in raw:
        return None
    try:
        return rl.check(raw["when"], scope, rl.Type.BOOL)
    except rl.ExpressionError as exc:
        ctx.error(stem, (*path, "when"), str(exc))
        return None


def checked_rule(
    ctx: Context,
    stem: str,
    path: JsonPath,
    raw: Raw,
    table: str,
    allowed: set[str],
    errnos: tuple[Errno, ...],
) -> Errno | None:
    """A table rule's id (`TABLE/OP/...`) and result keys checked against its op, and its
    errno, if its result is one, resolved (None, reported, when api.yaml has no such errno)."""
    op = raw["op"]
    if not raw["id"].startswith(f"{table}/{op}/"):
        ctx.error(stem, (*path, "id"), f"rule id must start with '{table}/{op}/'")
    result = raw["result"]
    if not set(result) <= allowed:
        ctx.error(
            stem, (*path, "result"), f"a {op} rule's result is one of {', '.join(sorted(allowed))}"
        )
    if "errno" not in result:
        return None
    errno = next((e for e in errnos if e.name == result["errno"]), None)
    if errno is None:
        ctx.error(stem, (*path, "result", "errno"), f"unknown errno '{result['errno']}'")
    return errno
