"""kvm-fwspec decode: any KVM arm/arm64 register id, field by field."""

from __future__ import annotations

import argparse

from kvm_fwspec.spec.decode import describe_id, parse_id
from kvm_fwspec.spec.loader import load_spec

HELP = "decode KVM arm/arm64 register ids"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="+", metavar="ID")


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec_dir)
    for text in args.ids:
        print("\n".join(describe_id(spec, parse_id(text))))
    return 0
