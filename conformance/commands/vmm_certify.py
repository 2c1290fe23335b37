"""kvm-fwspec vmm-certify: QEMU's save and restore of the firmware registers, on real kernels."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvm_fwspec.conformance.campaigns.vmm_certification import run_certification
from kvm_fwspec.conformance.commands._arguments import add_cache_option

HELP = "certify QEMU's save and restore of the firmware registers across real kernels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", type=Path, default=Path("reports/vmm"))
    parser.add_argument(
        "--kernels", default=None, help="kernel lines, e.g. 5.10,7.2 (default: all pinned)"
    )
    parser.add_argument(
        "--builds", default=None, help="QEMU builds: bookworm,unstable (default: both)"
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="guest hosts driven at once (default: one per core)"
    )
    add_cache_option(parser)


def run(args: argparse.Namespace) -> int:
    kernels = args.kernels.split(",") if args.kernels else None
    builds = args.builds.split(",") if args.builds else None
    return run_certification(kernels, builds, args.cache, args.report, args.jobs)
