"""kvm-fwspec sync-proof: sync-check on Debian's real uapi headers of the pinned lines."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvm_fwspec.conformance.campaigns.sync_proof import run_sync_proof

HELP = "check sync-check on Debian's arm64 uapi headers of the pinned kernel lines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", type=Path, default=Path("reports/sync-check"))


def run(args: argparse.Namespace) -> int:
    return run_sync_proof(args.report)
