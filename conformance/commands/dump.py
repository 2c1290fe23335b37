"""kvm-fwspec dump: save a VM's firmware registers through an adapter, as a VMM would."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvm_fwspec.conformance.adapters import parse_options
from kvm_fwspec.conformance.analyses.dump import dump, parse_psci_value
from kvm_fwspec.conformance.commands._arguments import (
    add_adapter_options,
    add_profile_arguments,
    nonempty_path,
)
from kvm_fwspec.spec.errors import UsageError

HELP = "save a VM's firmware registers through an adapter, as a VMM would"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", default="reference", help="adapter name (default: reference)")
    add_profile_arguments(parser, auto=True)
    parser.add_argument("--features", default="psci-0.2", help="vcpu features: psci-0.2 or none")
    parser.add_argument(
        "--psci-version",
        default=None,
        help="write this PSCI version first, as the register holds it (0x10000 for 1.0)",
    )
    add_adapter_options(parser)
    parser.add_argument(
        "--output", type=nonempty_path, required=True, help="the dump file (JSON), replaced whole"
    )


def run(args: argparse.Namespace) -> int:
    # Every argument is checked before the adapter starts (dump() checks --output first): a
    # mistake costs no VM and writes nothing.
    if args.output == Path("-"):
        raise UsageError("--output -: a dump is a file migrate-check reads back; name the file")
    psci = (
        None if args.psci_version is None else parse_psci_value(args.psci_version, "--psci-version")
    )
    options = parse_options(args.option)
    document = dump(
        args.adapter,
        (args.kernel, args.host, args.arch),
        args.features,
        psci,
        options,
        args.output,
    )
    registers = len(document["registers"])
    print(
        f"{args.output}: {registers} firmware registers of {document['implementation']} "
        f"({document['arch']} {document['kernel']} host={document['host-profile']})"
    )
    return 0
