"""Fuzz every target of tests/fuzz_targets.py with many more inputs than CI does, in parallel,
and print how many each took and how fast. Over a million inputs by default; asserts nothing
beyond what the targets assert (a crash or a disagreement stops the run with its example).

    python benchmarks/fuzz.py [--inputs 1000000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests import fuzz_targets as t

# name -> (share of the inputs, strategy, target taking one drawn value)
TARGETS: dict[str, tuple[float, Any, Any]] = {
    "agent: any request line": (0.2, t.agent_lines, t.agent_request),
    "client: any answer bytes": (0.15, st.binary(max_size=300), t.client_response),
    "agent: bounded reader": (0.1, st.binary(max_size=400), t.agent_reader),
    "decoder: any 64-bit id": (0.15, t.U64, t.register_id),
    "decoder: any id text": (0.1, st.text(max_size=40), t.register_id_text),
    "rule language: any text": (0.15, t.rule_texts, t.rule_expression),
    "reference: any program": (0.05, st.tuples(t.profiles(), t.programs),
                               lambda drawn: t.reference_program(*drawn)),
    "reference vs rules: random accesses": (
        0.1,
        st.data(),
        lambda data: (lambda p: t.matches_the_rules(p, data.draw(t.scenarios), data.draw(t.accesses(p))))(
            data.draw(t.profiles())
        ),
    ),
}  # fmt: skip


def fuzz(name: str, inputs: int) -> tuple[str, int, float, str]:
    _, strategy, target = TARGETS[name]
    count = 0

    def counted(value: Any) -> None:
        nonlocal count
        count += 1
        target(value)

    test = settings(
        max_examples=inputs,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(given(strategy)(counted))
    start = time.perf_counter()
    try:
        test()
    except Exception as exc:  # a finding: report it whole, as text the pool can carry back
        notes = "\n".join(getattr(exc, "__notes__", []))
        return name, count, time.perf_counter() - start, f"{type(exc).__name__}: {exc}\n{notes}"
    return name, count, time.perf_counter() - start, ""


def _limit_memory() -> None:
    """A worker that blows up its memory raises MemoryError, a finding with its example,
    instead of being killed by the kernel with the whole run (as 10**20 vcpus once did)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


MEMORY_LIMIT = 4 << 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    # Each target in slices, so the jobs share the work evenly.
    slices = [
        (name, max(1, int(args.inputs * share / 10)))
        for name, (share, _, _) in TARGETS.items()
        for _ in range(10)
    ]
    start = time.perf_counter()
    totals: dict[str, list[float]] = {name: [0, 0.0] for name in TARGETS}
    findings: list[str] = []
    with ProcessPoolExecutor(args.jobs, initializer=_limit_memory) as pool:
        for name, count, seconds, finding in pool.map(fuzz, *zip(*slices, strict=True)):
            totals[name][0] += count
            totals[name][1] += seconds
            if finding:
                findings.append(f"{name}: {finding}")
    wall = time.perf_counter() - start
    print(f"{'target':<40} {'inputs':>10} {'cpu s':>8} {'inputs/s':>10}")
    for name, (count, seconds) in totals.items():
        print(f"{name:<40} {int(count):>10} {seconds:>8.1f} {count / seconds:>10.0f}")
    total = int(sum(c for c, _ in totals.values()))
    print(
        f"{'all targets':<40} {total:>10} {wall:>8.1f} {total / wall:>10.0f}  (wall clock, {args.jobs} jobs)"
    )
    print(f"findings: {len(findings)}")
    for finding in findings:
        print(finding)
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
