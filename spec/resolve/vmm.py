"""vmm.yaml: what a correct VMM does with the firmware registers across a save and restore.

Each VMM rule rests on KVM rules of rules.yaml, so it is resolved last, against them; a rule
id must be one rules.yaml declares (even one in error there, which is reported there), and
each rule says what known VMMs do, with where in their source.
"""

from __future__ import annotations

from kvm_fwspec.spec.model import KnownVmm, Rule, VmmRule, VmmSource
from kvm_fwspec.spec.resolve.context import Context, Raw


def resolve_vmm_rules(ctx: Context, rules: tuple[Rule, ...]) -> tuple[VmmRule, ...]:
    """The VMM rules, each resting on KVM rules that exist."""
    raws = ctx.data("vmm")["rules"]
    ctx.unique("vmm", ("rules",), raws, "id", "VMM rule id")
    by_id = {rule.id: rule for rule in rules}
    declared = {rule["id"] for rule in ctx.data("rules")["rules"]}
    resolved = []
    for i, raw in enumerate(raws):
        for j, rule_id in enumerate(raw["kvm-rules"]):
            if rule_id not in declared:
                ctx.error("vmm", ("rules", i, "kvm-rules", j), f"unknown KVM rule '{rule_id}'")
        resolved.append(
            VmmRule(
                id=raw["id"],
                doc=raw["doc"],
                evidence=raw["evidence"],
                kernel_asks_file=raw["kernel-asks"]["file"],
                kernel_asks=raw["kernel-asks"]["says"],
                kvm_rules=tuple(by_id[r] for r in raw["kvm-rules"] if r in by_id),
                known_vmms=tuple(_known_vmm(k) for k in raw["known-vmms"]),
            )
        )
    return tuple(resolved)


def _known_vmm(raw: Raw) -> KnownVmm:
    return KnownVmm(
        vmm=raw["vmm"],
        versions=raw.get("versions", "all"),
        does=raw["does"],
        source=VmmSource(
            repository=raw["source"]["repository"],
            file=raw["source"]["file"],
            note=raw["source"].get("note", ""),
        ),
    )
