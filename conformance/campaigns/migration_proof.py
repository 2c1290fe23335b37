"""Prove migrate-check on real KVM: save firmware registers on each real kernel, restore them
into fresh VMs on every kernel (itself included, as the control), and compare each register's
real outcome with the checker's prediction.

Sources: each kernel with its default PSCI version, with each older version pinned, and with
vcpus without PSCI 0.2. Targets: each kernel, with and without PSCI 0.2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.analyses import migration
from kvm_fwspec.conformance.analyses.dump import dump_with
from kvm_fwspec.conformance.lab.kernels import kernel_lines
from kvm_fwspec.conformance.lab.qemu import Guest
from kvm_fwspec.conformance.lab.qemu_adapter import QemuAdapter, default_cache, prepare
from kvm_fwspec.conformance.profile import Profile, observed_host, resolve_profile
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

PINNED_VERSIONS = (0x2, 0x10000, 0x10001)


@dataclass(frozen=True)
class Comparison:
    source: str
    target: str
    target_features: tuple[str, ...]
    agree: int
    disagree: list[str]


def _boot(line: str, cache: Path) -> tuple[QemuAdapter, Profile]:
    kernel, initramfs = prepare(line, cache)
    adapter = QemuAdapter(kernel, Guest(kernel, initramfs), 256)
    spec = load_spec()
    levels = adapter.capabilities().host_levels or {}
    return adapter, resolve_profile(spec, f"{line}.y", observed_host(spec, levels))


def collect_dumps(spec: Spec, cache: Path) -> list[dict[str, Any]]:
    dumps = []
    for line in kernel_lines():
        adapter, profile = _boot(line.release, cache)
        try:
            choices: list[tuple[tuple[str, ...], int | None]] = [(("psci-0.2",), None), ((), None)]
            implemented = {v.encoded for v in spec.psci_versions if profile.has(v.lifetime)}
            choices += [(("psci-0.2",), v) for v in PINNED_VERSIONS if v in implemented]
            for features, psci in choices:
                dumps.append(dump_with(adapter, spec, profile, features, psci))
        finally:
            adapter.close()
    return dumps


def restore_all(dumps: list[dict[str, Any]], cache: Path) -> list[dict[str, Any]]:
    """Real outcomes of restoring every dump on every kernel, register by register."""
    restores = []
    for line in kernel_lines():
        adapter, profile = _boot(line.release, cache)
        try:
            for features in (["psci-0.2"], []):
                programs = [
                    {"vcpus": 1, "features": features, "steps": _restore_steps(dump)}
                    for dump in dumps
                ]
                for dump, observed in zip(dumps, adapter.run_programs(programs), strict=True):
                    restores.append({
                        "source": _label(dump), "target": profile.kernel, "target-host": profile.host.name,
                        "target-features": features, "outcomes": observed,
                    })  # fmt: skip
        finally:
            adapter.close()
    return restores


def _restore_steps(dump: dict[str, Any]) -> list[dict[str, Any]]:
    """What a VMM does on restore: every saved register written back, in the saved order."""
    return [
        {"op": "set", "vcpu": 0, "reg": r["id"], "value": r["value"]} for r in dump["registers"]
    ]


def _label(dump: dict[str, Any]) -> str:
    features = "psci-0.2" if dump["features"] else "none"
    pinned = f"@{dump['psci-version-set']:#x}" if dump.get("psci-version-set") is not None else ""
    return f"{dump['kernel']}:{features}{pinned}"


def compare(
    spec: Spec, dumps: list[dict[str, Any]], restores: list[dict[str, Any]]
) -> list[Comparison]:
    """The checker's prediction for every recorded restore, register by register."""
    by_label = {_label(d): d for d in dumps}
    comparisons = []
    for restore in restores:
        dump = by_label[restore["source"]]
        source = migration.Side(
            resolve_profile(spec, dump["kernel"], dump["host-profile"]),
            tuple(dump["features"]),
            {int(r["id"]): int(r["value"]) for r in dump["registers"]},
            restore["source"],
        )
        target = resolve_profile(spec, restore["target"], restore["target-host"])
        report = migration.check(spec, source, target, tuple(restore["target-features"]))
        agree, disagree = 0, []
        for verdict, outcome in zip(report.registers, restore["outcomes"], strict=True):
            predicted = {"ok": True} if verdict.restored else {"errno": verdict.errno}
            if predicted == outcome:
                agree += 1
            else:
                disagree.append(
                    f"{verdict.name}={verdict.value:#x}: predicted {predicted} by {verdict.rule}, real {outcome}"
                )
        comparisons.append(
            Comparison(
                restore["source"],
                restore["target"],
                tuple(restore["target-features"]),
                agree,
                disagree,
            )
        )
    return comparisons


def run_proof(report: Path, fixtures: Path | None) -> int:
    spec = load_spec()
    cache = default_cache()
    dumps = collect_dumps(spec, cache)
    restores = restore_all(dumps, cache)
    report.mkdir(parents=True, exist_ok=True)
    data = {"dumps": dumps, "restores": restores}
    (report / "real-restores.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    if fixtures is not None:
        fixtures.mkdir(parents=True, exist_ok=True)
        (fixtures / "real-restores.json").write_text(
            json.dumps(data, indent=1) + "\n", encoding="utf-8"
        )
    comparisons = compare(spec, dumps, restores)
    registers = sum(c.agree + len(c.disagree) for c in comparisons)
    wrong = [
        f"{c.source} -> {c.target} ({'psci-0.2' if c.target_features else 'none'}): {d}"
        for c in comparisons
        for d in c.disagree
    ]
    print(
        f"migrate-check vs real KVM: {len(comparisons)} restores, {registers} registers, {len(wrong)} disagreements"
    )
    for line in wrong:
        print(f"  {line}")
    return 1 if wrong else 0
