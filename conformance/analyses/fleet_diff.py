"""`kvm-fwspec fleet diff`: before a kernel rollout, can the running pools move their VMs onto
the upgraded hosts? Each running pool against each upgraded pool, under the VMs' current
configuration (the source's defaults) and under the running fleet's baseline, with an exit
code a CI job or a rollout system gates on.

Which pairs the gate judges: in a rolling upgrade the same hosts appear before and after (by
name), and the running hosts of a pool evacuate onto those of its hosts already upgraded, so
the gate judges each running pool against the pools its own hosts become; every running pool
against the pools of new hosts (named only after); and a running pool none of whose hosts is
named after against every upgraded pool. Every pair is shown, the judged ones marked."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kvm_fwspec.conformance.analyses.fleet import (
    Baseline,
    Cell,
    Judge,
    Pool,
    choose_baseline,
    host_count,
    pools_of,
    values_for,
)
from kvm_fwspec.conformance.analyses.fleet_hosts import Host
from kvm_fwspec.conformance.analyses.fleet_report import count_of, explain
from kvm_fwspec.spec.model import Spec

# The worst gated cell decides: the same codes as migrate-check.
EXIT = {"safe": 0, "changes": 3, "fails": 1}
ORDER = ("safe", "changes", "fails")


@dataclass
class UpgradeGate:
    before: list[Pool]
    after: list[Pool]
    baseline: Baseline
    gated: set[tuple[str, str]]
    current: dict[tuple[str, str], Cell] = field(default_factory=dict)
    under_baseline: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def worst(self, configuration: str) -> str:
        cells = self.current if configuration == "current" else self.under_baseline
        gated = (c.verdict for key, c in cells.items() if key in self.gated)
        return max(gated, key=ORDER.index, default="safe")


def upgrade_gate(spec: Spec, before: Iterable[Host], after: Iterable[Host]) -> UpgradeGate:
    judge = Judge(spec)
    running = pools_of(spec, before, prefix="B")
    upgraded = pools_of(spec, after, prefix="A")
    baseline = choose_baseline(judge, running)
    gate = UpgradeGate(running, upgraded, baseline, _gated(running, upgraded))
    for source in running:
        in_set = source.id in baseline.pools
        values = baseline.values(source) if in_set else source.defaults
        for target in upgraded:
            key = (source.id, target.id)
            gate.current[key] = judge.restore(source, source.defaults, target)
            created = values_for(target, baseline) if in_set else None
            gate.under_baseline[key] = judge.restore(source, values, target, created)
    return gate


def _gated(running: list[Pool], upgraded: list[Pool]) -> set[tuple[str, str]]:
    """The pairs a rollout needs: each running pool to the pools its own hosts become; every
    running pool to the pools of new hosts (named only after); and a running pool none of
    whose hosts is named after, to every upgraded pool (its VMs must go somewhere)."""
    before = {h.name for pool in running for h in pool.hosts}
    after = {h.name: pool.id for pool in upgraded for h in pool.hosts}
    gated = {(p.id, after[h.name]) for p in running for h in p.hosts if h.name in after}
    new = {pool_id for name, pool_id in after.items() if name not in before}
    gated |= {(p.id, target) for p in running for target in new}
    for pool in running:
        if not any(h.name in after for h in pool.hosts):
            gated |= {(pool.id, target.id) for target in upgraded}
    return gated


def as_text(gate: UpgradeGate, configuration: str, unread: int = 0) -> str:
    """Every pair under both configurations (`gate` marks those the exit status judges), and
    the verdict; with `unread` files left out, no verdict can pass."""
    lines = [
        f"upgrade gate: {count_of(host_count(gate.before), 'running host')} in "
        f"{count_of(len(gate.before), 'pool')}, {count_of(host_count(gate.after), 'upgraded host')} "
        f"in {count_of(len(gate.after), 'pool')}"
    ]
    for pools, word in ((gate.before, "running"), (gate.after, "upgraded")):
        for pool in pools:
            lines.append(
                f"  {word} {pool.id}: {count_of(len(pool.hosts), 'host')}, "
                f"{'/'.join(pool.kernels)}: {pool.name}"
            )
    lines.append(f"baseline of the running fleet: {', '.join(gate.baseline.pools)}")
    for name, cells in (("current configuration", gate.current), ("baseline", gate.under_baseline)):
        lines.append(f"under the {name} (gate: a pair the exit status judges):")
        for (source, target), cell in cells.items():
            mark = "gate" if (source, target) in gate.gated else "    "
            outside = (
                " (not in the baseline's set: as configured now)"
                if name == "baseline" and source not in gate.baseline.pools
                else ""
            )
            lines.append(f"  {mark} {source} -> {target}: {explain(cell)}{outside}")
    if unread:
        lines.append(
            f"gate: BLIND: {count_of(unread, 'file')} could not be read; a gate that cannot see "
            "every host passes nothing"
        )
        return "\n".join(lines) + "\n"
    worst = gate.worst(configuration)
    verdicts = {
        "safe": "every running pool can move its VMs onto the upgraded hosts unchanged",
        "changes": "VMs restore on the upgraded hosts, but some guests see their firmware change",
        "fails": "some running pools cannot move their VMs onto the upgraded hosts",
    }
    lines.append(f"gate ({configuration} configuration): {worst.upper()}: {verdicts[worst]}")
    return "\n".join(lines) + "\n"
