"""migrate-check's predictions against real restores recorded on four real kernels.

tests/fixtures/real-kvm/real-restores.json holds firmware registers saved on Debian's 5.10.223,
6.1.192, 6.12.117 and 7.2.13 under QEMU (default PSCI version, each older version pinned,
vcpus without PSCI 0.2) and the real outcome of restoring each into fresh VMs on every one of
those kernels, with and without PSCI 0.2. `kvm-fwspec migrate-proof` in .ci/run records them
again against today's kernels; this test re-checks the kept ones against today's spec.
"""

from __future__ import annotations

import json
from pathlib import Path

from kvm_fwspec.conformance.campaigns.migration_proof import compare
from kvm_fwspec.spec.loader import load_spec

FIXTURE = Path(__file__).parent / "fixtures" / "real-kvm" / "real-restores.json"


def test_every_real_restore_matches_the_prediction_register_by_register() -> None:
    data = json.loads(FIXTURE.read_text())
    comparisons = compare(load_spec(), data["dumps"], data["restores"])
    assert len(comparisons) == 152 and sum(c.agree for c in comparisons) == 1008
    assert [d for c in comparisons for d in c.disagree] == []


def test_the_fixture_covers_controls_failures_and_all_kernels() -> None:
    data = json.loads(FIXTURE.read_text())
    kernels = {d["kernel"] for d in data["dumps"]}
    assert kernels == {"5.10.y", "6.1.y", "6.12.y", "7.2.y"}
    outcomes = [o for r in data["restores"] for o in r["outcomes"]]
    assert (
        {"ok": True} in outcomes
        and {"errno": "EINVAL"} in outcomes
        and {"errno": "ENOENT"} in outcomes
    )
    controls = [
        r
        for r in data["restores"]
        if r["source"].startswith(r["target"] + ":psci-0.2") and r["target-features"]
    ]
    assert controls and all(o == {"ok": True} for r in controls for o in r["outcomes"])
