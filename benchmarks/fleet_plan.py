"""Plan a fleet of 10,000 host fingerprints and print the time of each stage.

The fleet is generated (not timed): one fingerprint per release, stable series and host
profile the spec knows, taken from the reference implementation, dealt round-robin onto the
hosts with the CPUs of Graviton machines, each written to its own file as operators collect
them. The plan itself is timed from the files on: reading and checking them, pooling,
the pool x pool matrix, the baseline, and the text and JSON outputs. The claim it checks:
under 2 s on a two-core machine, growing with the number of pools, not hosts.

    python benchmarks/fleet_plan.py [--hosts 1000 10000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvm_fwspec.conformance.analyses.fleet import (
    Judge,
    Plan,
    baseline_matrix_of,
    choose_baseline,
    matrix_of,
    pools_of,
)
from kvm_fwspec.conformance.analyses.fleet_hosts import read_hosts
from kvm_fwspec.conformance.analyses.fleet_report import as_json, as_text
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec
from tests.generated_fleet import fleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1_000, 10_000])
    args = parser.parse_args()
    spec = load_spec()
    for hosts in args.hosts:
        plan_fleet(spec, hosts)


def plan_fleet(spec: Spec, count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        paths = fleet(spec, count, Path(folder))
        stages: list[tuple[str, float]] = []
        start = time.perf_counter()

        def stage(name: str) -> None:
            stages.append((name, time.perf_counter() - start - sum(t for _, t in stages)))

        hosts, refused = read_hosts(spec, paths)
        stage(f"read and check {len(paths)} files")
        judge = Judge(spec)
        pools = pools_of(spec, hosts)
        stage(f"pool {len(hosts)} hosts")
        matrix = matrix_of(judge, pools)
        stage(f"matrix, {len(matrix)} cells")
        baseline = choose_baseline(judge, pools)
        stage(f"baseline ({len(baseline.pools)} pools in the largest set)")
        plan = Plan(spec, pools, refused, tuple(p.id for p in pools), matrix)
        plan.baseline = baseline
        plan.baseline_matrix = baseline_matrix_of(judge, pools, baseline)
        stage("baseline matrix")
        text, document = as_text(plan), as_json(plan)
        stage(f"text ({len(text)} bytes) and JSON ({len(document)} bytes)")
    total = sum(t for _, t in stages)
    print(f"fleet plan: {len(hosts)} hosts, {len(pools)} pools, {len(refused)} refused")
    for name, seconds in stages:
        print(f"  {name:<45} {seconds * 1000:8.0f} ms")
    print(f"  {'total':<45} {total * 1000:8.0f} ms")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
