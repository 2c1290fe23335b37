"""kvm-fwspec fleet-proof: the fleet plan of the four real kernels against real restores."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvm_fwspec.conformance.campaigns.fleet_proof import run_proof

HELP = (
    "fingerprint the pinned Debian kernels under QEMU, plan them, and check the plan and its "
    "baseline against real save/restore between every ordered pair"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", type=Path, default=Path("reports/fleet"))
    parser.add_argument(
        "--save-fixtures",
        type=Path,
        default=None,
        help="also keep the real fingerprints, saves and outcomes here (fleet-proof.json)",
    )


def run(args: argparse.Namespace) -> int:
    return run_proof(args.report, args.save_fixtures)
