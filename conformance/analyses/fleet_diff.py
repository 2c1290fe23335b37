"""`kvm-fwspec fleet diff`: before a kernel rollout, can the running pools move their VMs onto
the upgraded hosts? Each running pool against each upgraded pool, under the VMs' current
configuration (the source's defaults) and under the running fleet's baseline, with an exit
code a CI job or a rollout system gates on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kvm_fwspec.conformance.analyses.fleet import (
    Baseline,
    Cell,
    Judge,
    Pool,
    choose_baseline,
    pools_of,
    values_for,
)
from kvm_fwspec.conformance.analyses.fleet_hosts import Host
from kvm_fwspec.conformance.analyses.fleet_report import explain
from kvm_fwspec.spec.model import Spec

# The worst cell decides: the same codes as migrate-check.
EXIT = {"safe": 0, "changes": 3, "fails": 1}
ORDER = ("safe", "changes", "fails")


@dataclass
class UpgradeGate:
    before: list[Pool]
    after: list[Pool]
    baseline: Baseline
    current: dict[tuple[str, str], Cell] = field(default_factory=dict)
    under_baseline: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def worst(self, configuration: str) -> str:
        cells = self.current if configuration == "current" else self.under_baseline
        return max((c.verdict for c in cells.values()), key=ORDER.index, default="safe")


def upgrade_gate(spec: Spec, before: Iterable[Host], after: Iterable[Host]) -> UpgradeGate:
    judge = Judge(spec)
    running = pools_of(spec, before, prefix="B")
    upgraded = pools_of(spec, after, prefix="A")
    baseline = choose_baseline(judge, running)
    gate = UpgradeGate(running, upgraded, baseline)
    for source in running:
        in_set = source.id in baseline.pools
        values = baseline.values(source) if in_set else source.defaults
        for target in upgraded:
            key = (source.id, target.id)
            gate.current[key] = judge.restore(source, source.defaults, target)
            created = values_for(target, baseline) if in_set else None
            gate.under_baseline[key] = judge.restore(source, values, target, created)
    return gate


def as_text(gate: UpgradeGate, configuration: str) -> str:
    lines = [
        f"upgrade gate: {sum(len(p.hosts) for p in gate.before)} running hosts in "
        f"{len(gate.before)} pools, {sum(len(p.hosts) for p in gate.after)} upgraded hosts in "
        f"{len(gate.after)} pools"
    ]
    for pools, word in ((gate.before, "running"), (gate.after, "upgraded")):
        for pool in pools:
            lines.append(
                f"  {word} {pool.id}: {len(pool.hosts)} hosts, {'/'.join(pool.kernels)}: {pool.name}"
            )
    lines.append(f"baseline of the running fleet: {', '.join(gate.baseline.pools)}")
    for name, cells in (("current configuration", gate.current), ("baseline", gate.under_baseline)):
        lines.append(f"under the {name}:")
        for (source, target), cell in cells.items():
            lines.append(f"  {source} -> {target}: {explain(cell)}")
    worst = gate.worst(configuration)
    verdicts = {
        "safe": "every running pool can move its VMs onto the upgraded hosts unchanged",
        "changes": "VMs restore on the upgraded hosts, but some guests see their firmware change",
        "fails": "some running pools cannot move their VMs onto the upgraded hosts",
    }
    lines.append(f"gate ({configuration} configuration): {worst.upper()}: {verdicts[worst]}")
    return "\n".join(lines) + "\n"
