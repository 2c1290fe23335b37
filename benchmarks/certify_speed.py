"""How fast the suite certifies: cases per second in-process, through the agent, and under
pytest serially versus with two xdist workers. Prints numbers; asserts nothing.

    python benchmarks/certify_speed.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from codegen.loader import load_spec
from conformance.adapters import load_adapter
from conformance.cases import build_cases
from conformance.profile import resolve_profile
from conformance.verdicts import certify_cases


def timed(label: str, cases: int, seconds: float) -> None:
    print(f"{label:<52} {cases:>7} cases {seconds:>7.2f} s {cases / seconds:>9.0f} cases/s")


def main() -> None:
    spec = load_spec()
    start = time.perf_counter()
    total = 0
    for release in spec.releases:
        for host in spec.host_profiles:
            profile = resolve_profile(spec, str(release), host.name)
            cases = build_cases(spec, profile)
            _, results = certify_cases(load_adapter("reference", profile, {}), cases)
            total += len(results)
    timed(f"reference in-process, {len(spec.releases)} releases x {len(spec.host_profiles)} hosts", total,
          time.perf_counter() - start)  # fmt: skip

    profile = resolve_profile(spec, "7.2", "mitigated")
    cases = build_cases(spec, profile)
    command = f"{sys.executable} -m codegen.cli agent --kernel 7.2"
    for batch in ("1", "256"):
        adapter = load_adapter("agent", profile, {"command": command, "batch": batch})
        start = time.perf_counter()
        certify_cases(adapter, cases)
        adapter.close()
        timed(
            f"reference through the stdio agent, batch {batch}",
            len(cases),
            time.perf_counter() - start,
        )

    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in (
            ("pytest serial", []),
            ("pytest -n 2 --dist loadgroup", ["-n", "2", "--dist", "loadgroup"]),
        ):
            args = [sys.executable, "-m", "pytest", "--pyargs", "conformance.suite", "-q", "-p", "no:cacheprovider",
                    "--fwspec-adapter=reference", "--fwspec-kernel=7.2", f"--fwspec-report={Path(tmp) / label}",
                    *extra]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(args, check=True, capture_output=True)
            timed(f"{label} (whole process, 7.2)", len(cases), time.perf_counter() - start)


if __name__ == "__main__":
    main()
