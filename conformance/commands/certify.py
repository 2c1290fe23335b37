"""kvm-fwspec certify: run the conformance suite through an adapter and write the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvm_fwspec.conformance.adapters import parse_options
from kvm_fwspec.conformance.certify import certify
from kvm_fwspec.conformance.commands._arguments import (
    add_adapter_options,
    add_profile_arguments,
)

HELP = "certify an implementation through an adapter and write the report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", default="reference", help="adapter name (default: reference)")
    add_profile_arguments(parser)
    add_adapter_options(parser)
    parser.add_argument(
        "-n",
        dest="workers",
        default=None,
        help="xdist workers, used when the adapter gains from them",
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="report directory (default: reports/...)"
    )


def run(args: argparse.Namespace) -> int:
    report = (
        args.report or Path("reports") / f"{args.adapter}-{args.arch}-{args.kernel}-{args.host}"
    )
    return certify(
        args.adapter,
        args.kernel,
        args.host,
        args.arch,
        parse_options(args.option),
        args.workers,
        report,
    )
