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
from kvm_fwspec.conformance.analyses.fleet_evidence import (
    CONFIGURATIONS,
    FORMAT,
    OWN_AFFINITY,
    VENDOR_DISCOVERY,
    baseline_document,
    compare,
    configuration,
    plan_of,
)
from kvm_fwspec.conformance.analyses.fleet_hosts import host_of
from kvm_fwspec.conformance.analyses.fleet_report import as_json as plan_json
from kvm_fwspec.conformance.analyses.guest_answers import (
    call_steps,
    check_guest_answers,
    set_steps,
)
from kvm_fwspec.conformance.analyses.migration import MPIDR_RES1
from kvm_fwspec.conformance.lab.kernels import kernel_lines
from kvm_fwspec.conformance.lab.qemu import Guest, GuestError
from kvm_fwspec.conformance.lab.qemu_adapter import QemuAdapter, default_cache, prepare
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

FEATURES = ["psci-0.2"]
# Four guests booting at once share the machine's cores (on this project's two-core machine,
# with other work running, all four were up and fingerprinted in 12 s): the hello, which waits
# for the boot, and every answer after it get this long before the guest is called hung.
TIMEOUT = 600.0
T = TypeVar("T")


# -- the guest's calls ---------------------------------------------------------------------


def guest_calls(spec: Spec) -> list[dict[str, Any]]:
    """What the guest asks its firmware, each answer fixed for a given VM: PSCI_VERSION,
    PSCI_FEATURES of every function id the spec names (what migrate-check's guest view holds),
    SMCCC_VERSION, SMCCC_ARCH_FEATURES of every SMCCC function (the workaround levels, PV
    time), each service's version call, the vendor discovery calls, the calls that answer
    in x0 to x3 (CALL_UID, TRNG_GET_UUID), asked for all four, and AFFINITY_INFO of the
    guest's own vcpu named by its whole MPIDR_EL1 (migrate-check's AFFINITY_KEY)."""
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
        | ({"results": len(f.answers)} if f.answers is not None else {})
        for f in spec.smccc_functions
        if f.service.name != "arch" and (f.returns is not None or f.name in VENDOR_DISCOVERY)
    ]
    target = MPIDR_RES1 | spec.vcpu_power.mpidr_affinity(0)
    calls.append({"name": OWN_AFFINITY, "function": psci["affinity-info"], "args": [target, 0]})
    return calls


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
        *set_steps(created),
        *call_steps(calls),
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
            *set_steps(created[save["configuration"]]),
            *set_steps((r["id"], r["value"]) for r in save["registers"]),
            *({"op": "get", "vcpu": 0, "reg": reg} for reg in ids),
            *call_steps(calls),
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
        "baseline-applied": baseline_document(plan.baseline),
        "calls": calls,
        "saves": saves,
        "restores": [r for group in restores for r in group],
    }


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
    answers = check_guest_answers(spec, evidence)
    undefined = ", ".join(sorted(answers.undefined)) or "none"
    print(
        f"guest answers vs the spec: {answers.answers} answers, {len(answers.wrong)} differ; "
        f"left undefined by the spec: {undefined}"
    )
    for line in answers.wrong:
        print(f"  {line}")
    return 1 if wrong or answers.wrong else 0
