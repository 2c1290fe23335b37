"""kvm-fwspec generate: write every generated file into the checkout, or --check them."""

from __future__ import annotations

import argparse
import sys

from kvm_fwspec.codegen.checkout import checkout_root
from kvm_fwspec.codegen.generate import check, generate
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec

HELP = "write every generated file (or --check them)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="fail, naming each stale file and why")


def run(args: argparse.Namespace) -> int:
    root = checkout_root()
    if root is None and args.check:
        raise UsageError(
            "generate --check compares a kvm-fwspec source checkout's generated files with "
            "the spec; an installed package has no such files to compare (run it in a checkout)"
        )
    if root is None:
        raise UsageError(
            "generate writes into a kvm-fwspec source checkout, and this installation is not one"
        )
    spec = load_spec(args.spec_dir)
    if args.check:
        problems = check(spec, root)
        for problem in problems:
            print(f"kvm-fwspec: {problem}", file=sys.stderr)
        if problems:
            return 1
        print("generated files are up to date")
        return 0
    changed = generate(spec, root)
    print(f"wrote {len(changed)} file(s)" + "".join(f"\n  {path}" for path in changed))
    return 0
