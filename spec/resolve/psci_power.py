"""psci.yaml's `power`: how KVM names vcpus by MPIDR, and the vcpu power decision tables.

Each rule's `when` is typed in the power vocabulary (spec/power_names.py), each state a rule
leaves a vcpu in is one of api.yaml's mp-states, and every table ends, in every release, in
a rule without `when`, so that no call or run is left undecided. The affinity fields must fit
the hardware-id mask without overlapping.
"""

from __future__ import annotations

from kvm_fwspec.spec.model import (
    AffinityField,
    Constant,
    Lifetime,
    PowerRule,
    Release,
    Source,
    VcpuFeature,
    VcpuPower,
)
from kvm_fwspec.spec.power_names import POWER_OPS, power_scope
from kvm_fwspec.spec.resolve.context import Context, Raw, source
from kvm_fwspec.spec.resolve.decision_tables import check_tables_end_in_defaults, checked_when
from kvm_fwspec.spec.yaml_source import JsonPath

STEM = "psci"
PATH = ("power",)
STATE_KEYS = ("caller", "target", "every-vcpu")


def resolve_vcpu_power(
    ctx: Context,
    mp_states: tuple[Constant, ...],
    events: tuple[Constant, ...],
    features: tuple[VcpuFeature, ...],
    releases: tuple[Release, ...],
) -> VcpuPower:
    raw = ctx.data(STEM)["power"]
    off = raw["off-feature"]
    if not any(f.name == off["name"] for f in features):
        ctx.error(
            STEM, (*PATH, "off-feature", "name"), f"no vcpu feature '{off['name']}' in api.yaml"
        )
    section_source = source(raw["source"])
    mpidr = raw["mpidr"]
    affinity = tuple(
        AffinityField(
            name=f["name"],
            shift=f["shift"],
            id_shift=f["id-shift"],
            id_bits=f["id-bits"],
            doc=f["doc"],
        )
        for f in mpidr["affinity"]
    )
    _check_affinity(ctx, affinity, mpidr["hwid-mask"])
    parent = Lifetime(releases[0])
    rules = tuple(
        _rule(ctx, (*PATH, "rules", i), r, parent, mp_states, events, section_source)
        for i, r in enumerate(raw["rules"])
    )
    ctx.unique(STEM, (*PATH, "rules"), raw["rules"], "id", "rule id")
    if not ctx.problems:
        check_tables_end_in_defaults(ctx, STEM, (*PATH, "rules"), rules, POWER_OPS, releases)
    return VcpuPower(
        doc=raw["doc"],
        source=section_source,
        off_feature=off["name"],
        off_state=_state(ctx, (*PATH, "off-feature", "state"), off["state"], mp_states)
        or mp_states[0],
        off_feature_doc=off["doc"],
        mpidr_doc=mpidr["doc"],
        hwid_mask=mpidr["hwid-mask"],
        hwid_mask_c_name=mpidr["c-name"],
        level_bits=mpidr["level-bits"],
        levels=mpidr["levels"],
        affinity=affinity,
        rules=rules,
    )


def _check_affinity(ctx: Context, affinity: tuple[AffinityField, ...], hwid_mask: int) -> None:
    """Each field lies inside the hardware-id mask, and no two share a bit."""
    taken = 0
    for i, f in enumerate(affinity):
        bits = ((1 << f.id_bits) - 1) << f.shift
        path = (*PATH, "mpidr", "affinity", i)
        if bits & ~hwid_mask:
            ctx.error(
                STEM, path, f"affinity field '{f.name}' lies outside hwid-mask {hwid_mask:#x}"
            )
        if bits & taken:
            ctx.error(STEM, path, f"affinity field '{f.name}' overlaps an earlier field")
        taken |= bits


def _rule(
    ctx: Context,
    path: JsonPath,
    raw: Raw,
    parent: Lifetime,
    mp_states: tuple[Constant, ...],
    events: tuple[Constant, ...],
    section_source: Source,
) -> PowerRule:
    op = raw["op"]
    if not raw["id"].startswith(f"psci-power/{op}/"):
        ctx.error(STEM, (*path, "id"), f"rule id must start with 'psci-power/{op}/'")
    result = raw["result"]
    states = {
        key: _state(ctx, (*path, "result", key), result[key], mp_states) if key in result else None
        for key in STATE_KEYS
    }
    scope = power_scope(op, tuple(e.name for e in events))
    when = checked_when(ctx, STEM, path, raw, scope)
    return PowerRule(
        id=raw["id"],
        doc=raw["doc"],
        op=op,
        when=when,
        when_text=raw.get("when"),
        x0=result.get("x0"),
        caller=states["caller"],
        target=states["target"],
        every_vcpu=states["every-vcpu"],
        lifetime=ctx.lifetime(STEM, path, raw, parent),
        source=source(raw["source"]) if "source" in raw else section_source,
    )


def _state(
    ctx: Context, path: JsonPath, name: str, mp_states: tuple[Constant, ...]
) -> Constant | None:
    state = next((s for s in mp_states if s.name == name), None)
    if state is None:
        known = ", ".join(s.name for s in mp_states)
        ctx.error(STEM, path, f"unknown mp-state '{name}' (api.yaml has {known})")
    return state
