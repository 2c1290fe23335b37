"""kvm-fwspec qemu: certify real KVM of Debian's arm64 kernels, each booted under QEMU."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvm_fwspec.conformance.campaigns.real_kvm import run_qemu
from kvm_fwspec.conformance.commands._arguments import add_cache_option

HELP = "certify real KVM: boot Debian arm64 kernels under QEMU and run the suite"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernel",
        default="pinned",
        help="a release line (5.10, 6.1, ...), 'pinned' (all) or 'latest'",
    )
    parser.add_argument(
        "--kernel-package", default=None, help="an exact Debian package for the line"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="lines certified at once, one guest each (default: one per core)",
    )
    add_cache_option(parser)
    parser.add_argument(
        "--report", type=Path, default=Path("reports/real-kvm"), help="report directory"
    )


def run(args: argparse.Namespace) -> int:
    return run_qemu(args.kernel, args.kernel_package, args.cache, args.report, args.jobs)
