"""kvm-fwspec verify: is a results file complete, untampered and for this spec?"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvm_fwspec.conformance.verify import verify

HELP = "check a results file for completeness and tampering"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path)


def run(args: argparse.Namespace) -> int:
    problems = verify(args.results)
    for problem in problems:
        print(f"kvm-fwspec: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.results}: complete, untampered, for this spec")
    return 1 if problems else 0
