"""Prove `kvm-fwspec fleet plan` on real KVM.

Each Debian kernel of kernel-lines.yaml is booted under QEMU and fingerprinted (fingerprint.take,
as `kvm-fwspec fingerprint --adapter qemu` takes it); the four fingerprints are planned. Then a
VM is created on every kernel with its defaults, and one with the plan's baseline applied at
creation (KVM_ARM_VCPU_PSCI_0_2 vcpus, the PSCI pin and each bitmap set before the first run);
each runs (the guest's own PSCI and SMCCC calls: its answers before the save), is saved as a
VMM saves it (every firmware register KVM lists, read with GET) and restored into a fresh VM
on every kernel, itself included as the control, created the same way (a baseline VM's target
gets the baseline as far as it takes it). The target's guest then makes the same calls.

Each restore is held against the plan: a pair the plan calls safe restores every register and
the guest's answers are unchanged; a pair it calls fails is refused on exactly the registers,
with exactly the errnos, it named; a pair that changes restores and the answers differ. Each
pool the baseline leaves out is checked for the reason given: the register named fails a real
restore between it and the set, a pin it does not take is refused, a view it does not share is
seen in the guest's answers.

All four guests stay up for the whole run: four boots, where booting per phase would take ten
(the baseline is known only once every kernel is fingerprinted, and every kernel restores what
every other saved, so a kernel is needed again after each other one's saves).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kvm_fwspec.codegen.atomic import write_atomically
from kvm_fwspec.conformance.adapters import reported_host
from kvm_fwspec.conformance.adapters.agent import AgentError
from kvm_fwspec.conformance.analyses import fingerprint as fingerprints
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
from kvm_fwspec.conformance.analyses.fleet_report import as_json as plan_json
from kvm_fwspec.conformance.lab.kernels import kernel_lines
from kvm_fwspec.conformance.lab.qemu import Guest, GuestError
from kvm_fwspec.conformance.lab.qemu_adapter import QemuAdapter, default_cache, prepare
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

FORMAT = "kvm-fwspec-fleet-proof/1"
FEATURES = ["psci-0.2"]
CONFIGURATIONS = ("defaults", "baseline")
# Four guests booting at once share the machine's cores (on this project's two-core machine,
# with other work running, all four were up and fingerprinted in 12 s): the hello, which waits
# for the boot, and every answer after it get this long before the guest is called hung.
TIMEOUT = 600.0
# The vendor-hypervisor call whose x0 is fixed for a VM (the bitmap of KVM services it offers):
# the guest's own evidence of the kvm-* services. PTP (the host's clock) and the TRNG's random
# words answer differently on every call, so are never made.
VENDOR_DISCOVERY = ("vendor-hyp-kvm-features",)
T = TypeVar("T")


# -- the guest's calls ---------------------------------------------------------------------


def guest_calls(spec: Spec) -> list[dict[str, Any]]:
    """What the guest asks its firmware, each answer fixed for a given VM: PSCI_VERSION,
    PSCI_FEATURES of every function id the spec names (what migrate-check's guest view holds),
    SMCCC_VERSION, SMCCC_ARCH_FEATURES of every SMCCC function (the workaround levels, PV
    time), each service's version call, and the vendor discovery calls."""
    psci = {f.name: f.ids["smc32"] for f in spec.psci_functions if "smc32" in f.ids}
    smccc = {f.name: f.function_id for f in spec.smccc_functions}
    queried = sorted(
        {fid for f in spec.psci_functions for fid in f.ids.values()}
        | {f.function_id for f in spec.smccc_functions if f.psci_features is not None}
    )
    calls = [{"name": "psci-version", "function": psci["psci-version"], "args": []}]
    calls += [
        {"name": f"psci-features({fid:#x})", "function": psci["psci-features"], "args": [fid]}
        for fid in queried
    ]
    calls.append({"name": "smccc-version", "function": smccc["smccc-version"], "args": []})
    calls += [
        {
            "name": f"smccc-arch-features({f.name})",
            "function": smccc["smccc-arch-features"],
            "args": [f.function_id],
        }
        for f in sorted(spec.smccc_functions, key=lambda f: f.function_id)
    ]
    calls += [
        {"name": f.name, "function": f.function_id, "args": []}
        for f in spec.smccc_functions
        if f.service.name != "arch" and (f.returns is not None or f.name in VENDOR_DISCOVERY)
    ]
    return calls


def _call_steps(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"op": "call", "vcpu": 0, "function": c["function"], "args": c["args"]} for c in calls]


# -- the real run --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Machine:
    """One booted Debian kernel and what it is."""

    line: str
    host: str
    adapter: QemuAdapter


def host_name(release: str) -> str:
    return f"debian-{release}.y"


@contextmanager
def booted(cache: Path) -> Iterator[list[Machine]]:
    """Every kernel line's guest, started at once and powered off at the end. QEMU is
    started from this (the main) thread: it dies with the thread that forked it."""
    machines: list[Machine] = []
    try:
        for line in kernel_lines():
            kernel, initramfs = prepare(line.release, cache)
            adapter = QemuAdapter(kernel, Guest(kernel, initramfs), 256)
            adapter.timeout = TIMEOUT
            machines.append(
                Machine(line=line.release, host=host_name(line.release), adapter=adapter)
            )
        yield machines
    finally:
        for machine in machines:
            machine.adapter.close()


def _each(machines: list[Machine], work: Callable[[Machine], T]) -> list[T]:
    """`work` on every machine, the guests answering side by side."""
    with ThreadPoolExecutor(max_workers=len(machines)) as pool:
        return list(pool.map(work, machines))


def _fingerprint(spec: Spec, machine: Machine) -> dict[str, Any]:
    """The kernel's fingerprint, judged by its `uname -r` (as `kvm-fwspec fingerprint` judges
    a Debian kernel) on the host its workaround registers report."""
    capabilities = machine.adapter.capabilities()  # the hello: waits for the boot
    kernel = parse_kernel_name(spec, machine.adapter.kernel.uname)
    host = reported_host(machine.adapter, spec)
    profile = resolve_profile(spec, str(kernel), host, capabilities.arch)
    document = fingerprints.take(machine.adapter, spec, profile, kernel, machine.host)
    host_of(spec, document, machine.host)  # the fingerprint the plan reads is a valid one
    return document


def _listing(spec: Spec) -> list[dict[str, Any]]:
    """KVM_GET_REG_LIST of each firmware register class, as dump_with asks it."""
    classes = sorted({r.register_class for r in spec.registers}, key=lambda c: c.value)
    class_field = spec.layout("reg-id").field("class")
    return [
        {"op": "list", "vcpu": 0, "mask": class_field.mask, "match": c.value << class_field.low}
        for c in classes
    ]


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


def _sets(created: list[tuple[int, int]]) -> list[dict[str, Any]]:
    return [{"op": "set", "vcpu": 0, "reg": reg, "value": value} for reg, value in created]


def _save(
    spec: Spec,
    machine: Machine,
    fingerprint: dict[str, Any],
    created: list[tuple[int, int]],
    kind: str,
    calls: list[dict[str, Any]],
) -> dict[str, Any]:
    """A VM created with `created`, run (the guest's calls), listed and saved with GET."""
    ids = [int(r["id"], 16) for r in fingerprint["registers"]]
    listing = _listing(spec)
    steps = [
        *_sets(created),
        *_call_steps(calls),
        *listing,
        *({"op": "get", "vcpu": 0, "reg": reg} for reg in ids),
    ]
    (observed,) = machine.adapter.run_programs([{"vcpus": 1, "features": FEATURES, "steps": steps}])
    failed = next((o for o in observed if "error" in o), None)
    if failed is not None:
        raise UsageError(
            f"{machine.host}: the {kind} VM could not be run and saved: {failed['error']}"
        )
    made, rest = observed[: len(created)], observed[len(created) :]
    answers, rest = rest[: len(calls)], rest[len(calls) :]
    listed, values = rest[: len(listing)], rest[len(listing) :]
    listed_ids = [reg for outcome in listed for reg in outcome.get("ids", [])]
    if listed_ids != ids or any("value" not in v for v in values):
        raise UsageError(
            f"{machine.host}: the {kind} VM listed {[hex(i) for i in listed_ids]} and read "
            f"{values}, not the fingerprint's registers {[hex(i) for i in ids]}"
        )
    return {
        "label": f"{machine.host}:{kind}",
        "host": machine.host,
        "configuration": kind,
        "created": [
            {"reg": reg, "value": value, "outcome": outcome}
            for (reg, value), outcome in zip(created, made, strict=True)
        ],
        "answers": answers,
        "registers": [{"id": reg, "value": v["value"]} for reg, v in zip(ids, values, strict=True)],
    }


def _restores(
    machine: Machine,
    fingerprint: dict[str, Any],
    saves: list[dict[str, Any]],
    created: dict[str, list[tuple[int, int]]],
    calls: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every save restored into a fresh VM of this machine, created as its configuration says
    (`created`, by configuration), then read back and run (the guest's calls)."""
    ids = [int(r["id"], 16) for r in fingerprint["registers"]]
    programs = []
    for save in saves:
        steps = [
            *_sets(created[save["configuration"]]),
            *(
                {"op": "set", "vcpu": 0, "reg": r["id"], "value": r["value"]}
                for r in save["registers"]
            ),
            *({"op": "get", "vcpu": 0, "reg": reg} for reg in ids),
            *_call_steps(calls),
        ]
        programs.append({"vcpus": 1, "features": FEATURES, "steps": steps})
    records = []
    for save, observed in zip(saves, machine.adapter.run_programs(programs), strict=True):
        failed = next((o for o in observed if "error" in o), None)
        if failed is not None:
            raise UsageError(
                f"{machine.host}: restoring {save['label']} could not be run: {failed['error']}"
            )
        made = created[save["configuration"]]
        outcomes = observed[len(made) :]
        restored, outcomes = outcomes[: len(save["registers"])], outcomes[len(save["registers"]) :]
        read_back, answers = outcomes[: len(ids)], outcomes[len(ids) :]
        records.append({
            "source": save["label"],
            "target": machine.host,
            "created": [
                {"reg": reg, "value": value, "outcome": outcome}
                for (reg, value), outcome in zip(made, observed[: len(made)], strict=True)
            ],
            "outcomes": restored,
            "read-back": [{"id": reg, "outcome": o} for reg, o in zip(ids, read_back, strict=True)],
            "answers": answers,
        })  # fmt: skip
    return records


def _baseline_document(baseline: Baseline | None) -> dict[str, Any] | None:
    if baseline is None:
        return None
    return {
        "pools": list(baseline.pools),
        "psci-version": baseline.psci_version,
        "bitmaps": dict(baseline.bitmaps),
    }


def collect(spec: Spec, cache: Path, timing: dict[str, float]) -> dict[str, Any]:
    """The real evidence: fingerprints, saves and restores of every kernel line."""
    calls = guest_calls(spec)
    started = time.monotonic()
    with booted(cache) as machines:
        taken = _each(machines, lambda m: _fingerprint(spec, m))
        timing["boot and fingerprint"] = time.monotonic() - started
        documents = {m.host: d for m, d in zip(machines, taken, strict=True)}
        plan = plan_of(spec, list(documents.values()))
        pools = {h.name: p for p in plan.pools for h in p.hosts}
        created = {
            m.host: {
                kind: configuration(pools[m.host], plan.baseline, kind) for kind in CONFIGURATIONS
            }
            for m in machines
        }

        mark = time.monotonic()

        def saves_of(machine: Machine) -> list[dict[str, Any]]:
            return [
                _save(
                    spec, machine, documents[machine.host], created[machine.host][kind], kind, calls
                )
                for kind in CONFIGURATIONS
            ]

        saves = [s for group in _each(machines, saves_of) for s in group]
        timing["saves"] = time.monotonic() - mark
        mark = time.monotonic()
        restores = _each(
            machines,
            lambda m: _restores(m, documents[m.host], saves, created[m.host], calls),
        )
        timing["restores"] = time.monotonic() - mark
    return {
        "format": FORMAT,
        "doc": (
            "Real KVM: each Debian kernel line booted under QEMU (kvm-fwspec fleet-proof), "
            "fingerprinted, planned, and VMs saved and restored between every ordered pair"
        ),
        "kernels": [{"host": m.host, "line": m.line, **m.adapter.describe()} for m in machines],
        "fingerprints": list(documents.values()),
        "baseline-applied": _baseline_document(plan.baseline),
        "calls": calls,
        "saves": saves,
        "restores": [r for group in restores for r in group],
    }


def plan_of(spec: Spec, documents: list[dict[str, Any]]) -> Plan:
    """The plan of real fingerprints, as `kvm-fwspec fleet plan` makes it from their files."""
    hosts = [host_of(spec, d, f"fingerprints/{d['host']}.json") for d in documents]
    return make_plan(spec, hosts, [])


# -- the plan against the real outcomes ----------------------------------------------------


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
    if applied != _baseline_document(plan.baseline):
        general.append(
            f"the plan's baseline is now {_baseline_document(plan.baseline)}, the real run applied "
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
    plan's guest view: PSCI_VERSION, PSCI_FEATURES(function), `service NAME`, or a workaround
    register (its level, which SMCCC_ARCH_FEATURES of its function answers)."""
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


# -- the command ---------------------------------------------------------------------------


def run_proof(report: Path, fixtures: Path | None) -> int:
    spec = load_spec()
    timing: dict[str, float] = {}
    try:
        evidence = collect(spec, default_cache(), timing)
    except (AgentError, GuestError) as exc:
        done = ", ".join(timing) or "nothing"
        raise UsageError(f"fleet-proof stopped (done: {done}): {exc}") from None
    text = json.dumps(evidence, indent=1) + "\n"
    for document in evidence["fingerprints"]:
        write_atomically(
            report / "fingerprints" / f"{document['host']}.json", fingerprints.as_json(document)
        )
    write_atomically(report / "fleet-proof.json", text)
    if fixtures is not None:
        write_atomically(fixtures / "fleet-proof.json", text)
    comparison = compare(spec, evidence)
    write_atomically(report / "plan.json", plan_json(comparison.plan))
    wrong = comparison.disagreements
    print(f"fleet plan vs real KVM: {len(comparison.pairs)} pairs, {len(wrong)} disagreements")
    for line in wrong:
        print(f"  {line}")
    print("  time: " + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in timing.items()))
    return 1 if wrong else 0
