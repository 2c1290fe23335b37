"""rules.yaml: the GET, SET and REG_LIST decision tables of the registers and their classes.

A rule names a register or a firmware class, exists no earlier than its register, and is
typed: its `when` is a bool, its `value` and `store` ints, in the scope spec/rule_names.py
gives its register and op, so a misspelt name is a load error rather than a rule that never
matches. Its result has one of the shapes its op allows. Once every rule resolves, each
register's table must end, in every release and architecture it exists in, in a default: a
rule with no `when`, so that no access is left undecided.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.model import Errno, FieldValue, Lifetime, Register, Rule
from kvm_fwspec.spec.resolve.context import Context, Raw, kernel_docs, source
from kvm_fwspec.spec.rule_names import Vocabulary
from kvm_fwspec.spec.yaml_source import JsonPath

# The keys a result may have, per op: exactly one of these sets.
_RESULT_SHAPES = {
    "get": ({"value"}, {"errno"}, {"undefined"}),
    "set": ({"errno"}, {"store"}, {"ok"}, {"undefined"}),
    "list": ({"listed"},),
}


@dataclass(frozen=True, kw_only=True)
class _Targets:
    """What a rule may refer to, and the vocabulary its expressions are typed in."""

    registers: tuple[Register, ...]
    classes: tuple[FieldValue, ...]
    errnos: tuple[Errno, ...]
    vocabulary: Vocabulary


def resolve_rules(
    ctx: Context,
    *,
    registers: tuple[Register, ...],
    classes: tuple[FieldValue, ...],
    errnos: tuple[Errno, ...],
    vocabulary: Vocabulary,
) -> tuple[Rule, ...]:
    """Every rule, about `registers` (with their resets) or one of the firmware `classes`."""
    targets = _Targets(registers=registers, classes=classes, errnos=errnos, vocabulary=vocabulary)
    raws = ctx.data("rules")["rules"]
    rules = []
    for i, raw in enumerate(raws):
        rule = _rule(ctx, ("rules", i), raw, targets)
        if rule is not None:
            rules.append(rule)
    ctx.unique("rules", ("rules",), raws, "id", "rule id")
    if not ctx.problems:
        _check_complete(ctx, rules, registers, {raw["id"]: i for i, raw in enumerate(raws)})
    return tuple(rules)


def _rule(ctx: Context, path: JsonPath, raw: Raw, targets: _Targets) -> Rule | None:
    """The rule, or None if the register or class it is about does not exist."""
    register = next((r for r in targets.registers if r.name == raw.get("register")), None)
    reg_class = next((c for c in targets.classes if c.name == raw.get("class")), None)
    if "register" in raw and register is None:
        ctx.error("rules", (*path, "register"), f"unknown register '{raw['register']}'")
        return None
    if "class" in raw and reg_class is None:
        ctx.error("rules", (*path, "class"), f"unknown firmware register class '{raw['class']}'")
        return None
    prefix = f"{raw.get('register') or raw.get('class')}/{raw['op']}/"
    if not raw["id"].startswith(prefix):
        ctx.error("rules", (*path, "id"), f"rule id must start with '{prefix}'")
    scope = targets.vocabulary.scope(register, raw["op"])
    result = raw.get("result", {})
    _check_result(ctx, path, raw["op"], result, register)
    return Rule(
        id=raw["id"],
        doc=raw["doc"],
        op=raw["op"],
        register=register,
        register_class=reg_class,
        when=_expression(ctx, path, "when", raw.get("when"), scope, rl.Type.BOOL),
        when_text=raw.get("when"),
        errno=_errno(ctx, path, result, targets.errnos),
        value=_expression(ctx, (*path, "result"), "value", result.get("value"), scope, rl.Type.INT),
        value_text=result.get("value"),
        store=_expression(ctx, (*path, "result"), "store", result.get("store"), scope, rl.Type.INT),
        store_text=result.get("store"),
        listed=result.get("listed"),
        undefined=result.get("undefined"),
        lifetime=_lifetime(ctx, path, raw, register),
        architectures=_architectures(ctx, path, raw, register),
        source=source(raw["source"]),
        deprecated=raw.get("deprecated"),
        kernel_docs=kernel_docs(raw["kernel-docs"]) if "kernel-docs" in raw else None,
    )


def _lifetime(ctx: Context, path: JsonPath, raw: Raw, register: Register | None) -> Lifetime:
    """A register's rule starts with the register unless it says otherwise, and not before."""
    lifetime = ctx.lifetime("rules", path, raw, register.lifetime if register else None)
    if register is not None and lifetime.since < register.lifetime.since:
        ctx.error(
            "rules",
            (*path, "since"),
            f"rule starts in {lifetime.since}, before register '{register.name}' exists "
            f"({register.lifetime.since})",
        )
    return lifetime


def _architectures(
    ctx: Context, path: JsonPath, raw: Raw, register: Register | None
) -> tuple[str, ...]:
    """The rule's architectures: by default its register's, or both for a class's rule."""
    arches = tuple(
        raw.get(
            "architectures",
            [a.name for a in register.architectures] if register else ["arm64", "arm"],
        )
    )
    if register is not None:
        for j, arch in enumerate(arches):
            if arch not in {a.name for a in register.architectures}:
                ctx.error(
                    "rules",
                    (*path, "architectures", j),
                    f"register '{register.name}' does not exist on {arch}",
                )
    return arches


def _errno(ctx: Context, path: JsonPath, result: Raw, errnos: tuple[Errno, ...]) -> Errno | None:
    if "errno" not in result:
        return None
    errno = next((e for e in errnos if e.name == result["errno"]), None)
    if errno is None:
        ctx.error("rules", (*path, "result", "errno"), f"unknown errno '{result['errno']}'")
    return errno


def _expression(
    ctx: Context, path: JsonPath, key: str, text: str | None, scope: rl.Scope, wanted: rl.Type
) -> rl.Expr | None:
    if text is None:
        return None
    try:
        return rl.check(text, scope, wanted)
    except rl.ExpressionError as exc:
        ctx.error("rules", (*path, key), str(exc))
        return None


def _check_result(
    ctx: Context, path: JsonPath, op: str, result: Raw, register: Register | None
) -> None:
    allowed = _RESULT_SHAPES[op]
    if set(result) not in [set(a) for a in allowed]:
        shapes = " or ".join("{" + ", ".join(sorted(a)) + "}" for a in allowed)
        ctx.error("rules", (*path, "result"), f"a {op} rule's result must be {shapes}")
    if "store" in result and register is not None and register.storage != "vm":
        ctx.error(
            "rules",
            (*path, "result", "store"),
            f"register '{register.name}' stores nothing (storage: none)",
        )


def _check_complete(
    ctx: Context, rules: list[Rule], registers: tuple[Register, ...], rule_index: dict[str, int]
) -> None:
    """Each register's decision table must end, in every release and arch, in a default; the
    first register found without one is reported."""
    for register in registers:
        for op in ("get", "set", "list"):
            for arch in register.architectures:
                for release in ctx.releases:
                    if not register.exists_on(arch.name, release):
                        continue
                    table = [
                        r
                        for r in rules
                        if r.op == op
                        and arch.name in r.architectures
                        and r.lifetime.covers(release)
                        and (r.register is register or r.register_class is register.register_class)
                    ]
                    if not table or table[-1].when is not None:
                        where = ("rules", rule_index[table[-1].id]) if table else ("rules",)
                        ctx.error(
                            "rules",
                            where,
                            f"{register.name}/{op} on {arch.name} {release}: "
                            "the last applicable rule must have no 'when' (a default)",
                        )
                        return
