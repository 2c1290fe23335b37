"""A recorded `kvm-fwspec fleet-proof` run judged against the plan its fingerprints give.

The campaign (conformance/campaigns/fleet_proof.py) boots real KVM and records what happened;
this module only reads that record: it re-plans the recorded fingerprints with today's code
and holds every save, restore, guest answer and exclusion reason to the plan. Kept apart so a
kept run (tests/fixtures/real-kvm/fleet-proof.json) is re-judged without the lab.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kvm_fwspec.conformance.analyses.fleet import (
    Baseline,
    Cell,
    Judge,
    Plan,
    Pool,
    make_plan,
    values_for,
)
from kvm_fwspec.conformance.analyses.fleet_hosts import host_of
from kvm_fwspec.conformance.analyses.migration import AFFINITY_KEY, MPIDR_RES1
from kvm_fwspec.spec.model import Spec

FORMAT = "kvm-fwspec-fleet-proof/1"
CONFIGURATIONS = ("defaults", "baseline")
# The vendor-hypervisor call whose x0 is fixed for a VM (the bitmap of KVM services it offers):
# the guest's own evidence of the kvm-* services. PTP (the host's clock) and the TRNG's random
# words answer differently on every call, so are never made.
VENDOR_DISCOVERY = ("vendor-hyp-kvm-features",)
# The guest call that witnesses migrate-check's AFFINITY_KEY: AFFINITY_INFO of its own vcpu,
# named by its whole MPIDR_EL1.
OWN_AFFINITY = f"affinity-info({MPIDR_RES1:#x})"


def configuration(pool: Pool, baseline: Baseline | None, kind: str) -> list[tuple[int, int]]:
    """The SETs a VMM makes at creation: none with defaults; with the baseline, the PSCI pin
    and every bitmap, as the pool's set holds them (baseline.values) or, for a pool the
    baseline leaves out, the pin and the bitmaps as far as the pool takes them (values_for)."""
    if kind == "defaults" or baseline is None:
        return []
    values = baseline.values(pool) if pool.id in baseline.pools else values_for(pool, baseline)
    psci = next((o for o in pool.offers if o.kind == "psci-version"), None)
    if psci is not None and baseline.psci_version is not None:
        # Tried even where the pool refuses it, as a VMM applying the baseline would: the
        # refusal at creation is the proof of a pool left out for its PSCI versions.
        values[psci.reg_id] = baseline.psci_version
    return [
        (o.reg_id, values[o.reg_id])
        for o in pool.offers
        if o.kind in ("psci-version", "bitmap") and o.reg_id in values
    ]


def baseline_document(baseline: Baseline | None) -> dict[str, Any] | None:
    if baseline is None:
        return None
    return {
        "pools": list(baseline.pools),
        "psci-version": baseline.psci_version,
        "bitmaps": dict(baseline.bitmaps),
    }


def plan_of(spec: Spec, documents: list[dict[str, Any]]) -> Plan:
    """The plan of real fingerprints, as `kvm-fwspec fleet plan` makes it from their files."""
    hosts = [host_of(spec, d, f"fingerprints/{d['host']}.json") for d in documents]
    return make_plan(spec, hosts, [])


@dataclass(frozen=True, kw_only=True)
class PairCheck:
    """One real restore held against the plan's cell for it."""

    source: str  # a save's label, host:configuration
    target: str
    verdict: str  # the plan's
    disagreements: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Comparison:
    plan: Plan
    pairs: list[PairCheck]
    excluded: list[str]  # disagreements about why a pool is left out of the baseline
    general: list[str]  # disagreements not about one pair (the baseline applied, the saves)

    @property
    def disagreements(self) -> list[str]:
        lines = list(self.general)
        lines += [
            f"{p.source} -> {p.target} ({p.verdict}): {d}"
            for p in self.pairs
            for d in p.disagreements
        ]
        return lines + self.excluded


def compare(spec: Spec, evidence: dict[str, Any]) -> Comparison:
    """Re-plan the recorded fingerprints with today's code and hold every recorded save and
    restore against that plan."""
    plan = plan_of(spec, evidence["fingerprints"])
    pools = {h.name: p for p in plan.pools for h in p.hosts}
    general = []
    applied = evidence["baseline-applied"]
    if applied != baseline_document(plan.baseline):
        general.append(
            f"the plan's baseline is now {baseline_document(plan.baseline)}, the real run applied "
            f"{applied}: record again with kvm-fwspec fleet-proof"
        )
    saves = {s["label"]: s for s in evidence["saves"]}
    names = _register_names(plan)
    judge = Judge(spec)
    for save in evidence["saves"]:
        pool = pools[save["host"]]
        general += _check_save(save, pool, plan.baseline, names)
    pairs = []
    for restore in evidence["restores"]:
        save = saves[restore["source"]]
        source, target = pools[save["host"]], pools[restore["target"]]
        cell = predicted_cell(plan, judge, save["configuration"], source, target)
        found = list(_check_restore(save, restore, cell, names))
        if cell.verdict != "fails":
            found += _check_read_back(save, restore, target, plan.baseline, names)
            found += check_answers(spec, evidence["calls"], save, restore, cell)
        pairs.append(
            PairCheck(
                source=restore["source"],
                target=restore["target"],
                verdict=cell.verdict,
                disagreements=tuple(found),
            )
        )
    excluded = _check_excluded(plan, evidence, pools, names)
    return Comparison(plan=plan, pairs=pairs, excluded=excluded, general=general)


def predicted_cell(plan: Plan, judge: Judge, kind: str, source: Pool, target: Pool) -> Cell:
    """The plan's cell for a VM created on `source` with `kind`: the matrix at defaults, the
    baseline matrix for the baseline's set, and for a pool the baseline leaves out, the same
    judge on the baseline as far as each side takes it."""
    if kind == "defaults" or plan.baseline is None:
        return plan.matrix[(source.id, target.id)]
    if source.id in plan.baseline.pools:
        return plan.baseline_matrix[(source.id, target.id)]
    return judge.restore(
        source, _held(source, plan.baseline, kind), target, _held(target, plan.baseline, kind)
    )


def _held(pool: Pool, baseline: Baseline | None, kind: str) -> dict[int, int]:
    """What a VM created on `pool` holds: its defaults and every configured value it takes."""
    values = pool.defaults
    for reg, value in configuration(pool, baseline, kind):
        offer = pool.offer(reg)
        if offer is not None and offer.takes(value):
            values[reg] = value
    return values


def _register_names(plan: Plan) -> dict[int, str]:
    return {o.reg_id: o.name for p in plan.pools for o in p.offers}


def _name(names: dict[int, str], reg: int) -> str:
    return names.get(reg, f"{reg:#018x}")


def _check_save(
    save: dict[str, Any], pool: Pool, baseline: Baseline | None, names: dict[int, str]
) -> list[str]:
    """A save holds what the plan says a VM of its configuration holds, and each SET at
    creation was taken or refused as the pool's fingerprint says."""
    where = save["label"]
    lines = []
    for made in save["created"]:
        offer = pool.offer(made["reg"])
        expected = offer is not None and offer.takes(made["value"])
        if (made["outcome"] == {"ok": True}) != expected:
            lines.append(
                f"{where}: creating with {_name(names, made['reg'])}={made['value']:#x} answered "
                f"{made['outcome']}, the fingerprint says it is {'taken' if expected else 'refused'}"
            )
    held = _held(pool, baseline, save["configuration"])
    saved = {r["id"]: r["value"] for r in save["registers"]}
    for reg in sorted(set(held) | set(saved)):
        if held.get(reg) != saved.get(reg):
            lines.append(
                f"{where}: saved {_name(names, reg)}={_hex(saved.get(reg))}, the plan holds "
                f"{_hex(held.get(reg))}"
            )
    return lines


def _hex(value: int | None) -> str:
    return "nothing" if value is None else f"{value:#x}"


def _check_restore(
    save: dict[str, Any], restore: dict[str, Any], cell: Cell, names: dict[int, str]
) -> Iterator[str]:
    """The real restore against the cell: refused on the same registers with the same errnos
    (a failure the plan names without an errno, where the spec disagrees with the host's
    report, matches any refusal of that register)."""
    real = {
        (_name(names, r["id"]), o.get("errno"))
        for r, o in zip(save["registers"], restore["outcomes"], strict=True)
        if o != {"ok": True}
    }
    planned = {(f.register, f.errno) for f in cell.failures}
    real_registers = {name for name, _ in real}
    planned_registers = {name for name, _ in planned}
    for name, errno in sorted(planned - real, key=str):
        if errno is None and name in real_registers:
            continue
        yield f"the plan has {name} refused with {errno or 'an errno'}, real KVM " + (
            "took it" if name not in real_registers else f"answered {_errnos(real, name)}"
        )
    for name, errno in sorted(real - planned, key=str):
        if (name, None) in planned:
            continue
        yield f"real KVM refused {name} with {errno}, the plan " + (
            "has it restore" if name not in planned_registers else f"says {_errnos(planned, name)}"
        )


def _check_read_back(
    save: dict[str, Any],
    restore: dict[str, Any],
    target: Pool,
    baseline: Baseline | None,
    names: dict[int, str],
) -> Iterator[str]:
    """After a restore the plan calls good, the target VM holds what was saved, its own
    values (as created) for registers the source lacks, and its host's level in each
    workaround register (KVM reads those from the host on every GET)."""
    expected = {**_held(target, baseline, save["configuration"])}
    expected.update({r["id"]: r["value"] for r in save["registers"]})
    for offer in target.offers:
        if offer.kind in ("level", "unknown"):
            expected[offer.reg_id] = offer.default
    for entry in restore["read-back"]:
        value = entry["outcome"].get("value")
        if value != expected.get(entry["id"]):
            yield (
                f"{_name(names, entry['id'])} reads back {entry['outcome']} after the restore, "
                f"the plan has the target hold {_hex(expected.get(entry['id']))}"
            )


def check_answers(
    spec: Spec,
    calls: list[dict[str, Any]],
    save: dict[str, Any],
    restore: dict[str, Any],
    cell: Cell,
) -> Iterator[str]:
    """The guest's answers before the save and after the restore: the same where the plan
    says safe; where it says changes, changed in a call that shows each change it names."""
    changed = {
        c["name"]: f"{c['name']} {_answer(before)} -> {_answer(after)}"
        for c, before, after in zip(calls, save["answers"], restore["answers"], strict=True)
        if before != after
    }
    if cell.verdict == "safe" and changed:
        yield "the guest's answers changed: " + "; ".join(changed.values())
    if cell.verdict != "changes":
        return
    if not changed:
        yield f"the plan has the guest see {'; '.join(cell.changes)}; its answers did not change"
        return
    made = {c["name"] for c in calls}
    for change in cell.changes:
        shown_by = witnesses(spec, change.split(": ", 1)[0]) & made
        if shown_by and not shown_by & set(changed):
            yield (
                f"the plan has the guest see {change}; {', '.join(sorted(shown_by))} did not change"
            )


def witnesses(spec: Spec, key: str) -> set[str]:
    """The guest calls (by guest_calls' names) whose answers show a change of `key` in the
    plan's guest view: PSCI_VERSION, PSCI_FEATURES(function), `service NAME`, ARCH_FEATURES(NAME)
    and CALL(NAME) (the call's own answer), or a workaround register (its level, which
    SMCCC_ARCH_FEATURES of its function answers)."""
    if key == "PSCI_VERSION":
        return {"psci-version"}
    queried = re.fullmatch(r"PSCI_FEATURES\((.+)\)", key)
    if queried is not None:
        return {
            f"psci-features({fid:#x})"
            for f in spec.psci_functions
            if f.name == queried[1]
            for fid in f.ids.values()
        }
    if key.startswith("service "):
        service = key.removeprefix("service ")
        served = [f.name for f in spec.smccc_functions if f.service.name == service]
        shown = set(served) | {f"smccc-arch-features({name})" for name in served}
        # The vendor discovery call answers the bitmap that gates its own service, so it
        # shows every service gated by a bit of that register (kvm-ptp beside it).
        for name in VENDOR_DISCOVERY:
            own = next(f.service.name for f in spec.smccc_functions if f.name == name)
            for register in spec.registers:
                gated = {b.service.name for b in register.bits if b.service is not None}
                if own in gated and service in gated:
                    shown.add(name)
        return shown
    asked = re.fullmatch(r"ARCH_FEATURES\((.+)\)", key)
    if asked is not None:
        return {f"smccc-arch-features({asked[1]})"}
    called = re.fullmatch(r"CALL\((.+)\)", key)
    if called is not None:
        return {called[1]}
    if key == AFFINITY_KEY:
        return {OWN_AFFINITY}
    return {f"smccc-arch-features({key})"}


def _errnos(pairs: set[tuple[str, str | None]], name: str) -> str:
    return "/".join(sorted(str(e) for n, e in pairs if n == name))


def _answer(outcome: dict[str, Any]) -> str:
    if "x0" in outcome:
        return f"{outcome['x0']:#x}" if outcome["x0"] >= 0 else str(outcome["x0"])
    return json.dumps(outcome)


def _check_excluded(
    plan: Plan, evidence: dict[str, Any], pools: dict[str, Pool], names: dict[int, str]
) -> list[str]:
    """Each reason the plan gives for leaving a pool out of the baseline, held to real KVM: a
    register it names (one side lacks it, or its level differs) is refused by a real restore
    of baseline VMs between the pool and the set; a pin it does not take is refused at
    creation; a guest answer it names differs between the pool's guests and the set's."""
    if plan.baseline is None:
        return []
    lines = []
    saves = {s["label"]: s for s in evidence["saves"]}
    hosts_of = {p.id: [h for h, q in pools.items() if q.id == p.id] for p in plan.pools}
    members = {h for p in plan.baseline.pools for h in hosts_of[p]}
    for pool_id, reasons in plan.baseline.excluded:
        outsiders = set(hosts_of[pool_id])
        for reason in reasons:
            if reason.kind == "pin":
                refused = [
                    m
                    for h in outsiders
                    for m in saves[f"{h}:baseline"]["created"]
                    if names.get(m["reg"]) == "psci-version" and m["outcome"] != {"ok": True}
                ]
                if not refused:
                    lines.append(f"left out {pool_id} ({reason.why}): real KVM took the pin")
            elif reason.kind in ("lacks", "lists", "level"):
                if not _restore_failed_on(
                    evidence, saves, names, reason.subject, outsiders, members
                ):
                    lines.append(
                        f"left out {pool_id} ({reason.why}): no real restore between it and "
                        f"the set failed on {reason.subject}"
                    )
            else:
                mine = [saves[f"{h}:baseline"]["answers"] for h in outsiders]
                theirs = [saves[f"{h}:baseline"]["answers"] for h in members]
                if any(a == b for a in mine for b in theirs):
                    lines.append(
                        f"left out {pool_id} ({reason.why}): its guest answered as the set's do"
                    )
    return lines


def _restore_failed_on(
    evidence: dict[str, Any],
    saves: dict[str, Any],
    names: dict[int, str],
    register: str,
    outsiders: set[str],
    members: set[str],
) -> bool:
    """Did a real restore of a baseline VM between the outsiders and the set (either way)
    fail on `register`?"""
    for restore in evidence["restores"]:
        if not restore["source"].endswith(":baseline"):
            continue
        save = saves[restore["source"]]
        ends = {save["host"], restore["target"]}
        if not (ends & outsiders and ends & members):
            continue
        for saved, outcome in zip(save["registers"], restore["outcomes"], strict=True):
            if _name(names, saved["id"]) == register and outcome != {"ok": True}:
                return True
    return False
