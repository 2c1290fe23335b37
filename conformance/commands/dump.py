"""kvm-fwspec dump: save a VM's firmware registers through an adapter, as a VMM would."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvm_fwspec.conformance.adapters import parse_options
from kvm_fwspec.conformance.analyses.dump import dump
from kvm_fwspec.conformance.commands._arguments import (
    add_adapter_options,
    add_profile_arguments,
)

HELP = "save a VM's firmware registers through an adapter, as a VMM would"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", default="reference")
    add_profile_arguments(parser)
    parser.add_argument("--features", default="psci-0.2", help="vcpu features: psci-0.2 or none")
    parser.add_argument(
        "--psci-version", default=None, help="write this PSCI version first (e.g. 0x10000)"
    )
    add_adapter_options(parser)
    parser.add_argument("--output", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    psci = int(args.psci_version, 0) if args.psci_version else None
    document = dump(
        args.adapter,
        args.kernel,
        args.host,
        args.features,
        psci,
        parse_options(args.option),
        args.output,
    )
    registers = len(document["registers"])
    print(f"{args.output}: {registers} firmware registers of {document['implementation']}")
    return 0
