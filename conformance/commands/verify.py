"""kvm-fwspec verify: re-judge a results file under the spec it names, and check who signed it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvm_fwspec.conformance.verify import verify_results

HELP = "re-judge a results file's verdicts from its evidence, and check its signature"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path, help="a results.json that certify wrote")
    parser.add_argument(
        "--signers",
        type=Path,
        default=None,
        metavar="FILE",
        help="OpenSSH allowed-signers file: require results.json.sig by a key it lists",
    )


def run(args: argparse.Namespace) -> int:
    verification = verify_results(args.results, args.signers)
    for problem in verification.problems:
        print(f"kvm-fwspec: {problem}", file=sys.stderr)
    if verification.stands:
        print(verification.verdict)
    return 0 if verification.stands else 1
