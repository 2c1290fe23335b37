"""kvm-fwspec replay: rerun one case of a results file and show expected against observed."""

from __future__ import annotations

import argparse

from kvm_fwspec.conformance.adapters import parse_options
from kvm_fwspec.conformance.commands._arguments import add_adapter_options, nonempty_path
from kvm_fwspec.conformance.replay import replay

HELP = "rerun one case of a results file and print expected against observed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=nonempty_path, help="a results.json that certify wrote")
    parser.add_argument("case", metavar="CASE-ID", help="the id of the case to rerun")
    parser.add_argument(
        "--adapter", default=None, help="adapter to rerun it on (default: the one recorded)"
    )
    add_adapter_options(parser)


def run(args: argparse.Namespace) -> int:
    return replay(args.results, args.case, args.adapter, parse_options(args.option))
