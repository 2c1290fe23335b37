"""kvm-fwspec migrate-proof: migrate-check's predictions against real restores."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvm_fwspec.conformance.campaigns.migration_proof import run_proof

HELP = "check migrate-check against real restores between the pinned kernels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", type=Path, default=Path("reports/migration"))
    parser.add_argument(
        "--save-fixtures",
        type=Path,
        default=None,
        help="also keep the real dumps and outcomes here",
    )


def run(args: argparse.Namespace) -> int:
    return run_proof(args.report, args.save_fixtures)
