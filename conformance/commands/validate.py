"""kvm-fwspec validate: load and check the spec, and summarise what it holds."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

HELP = "check the spec and print a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec_path", nargs="?", type=Path, default=None, metavar="SPEC_DIR")


def summary(spec: Spec) -> str:
    values = sum(len(r.values) + len(r.bits) for r in spec.registers)
    functions = (
        len(spec.psci_functions) + len(spec.smccc_functions) + len(spec.kvm_psci_01_functions)
    )
    return (
        f"spec OK: {len(spec.registers)} registers, {values} values and bits, "
        f"{len(spec.psci_versions)} PSCI versions, {functions} function ids, "
        f"{len(spec.rules)} rules, {len(spec.vmm_rules)} VMM rules, "
        f"releases {spec.releases[0]}-{spec.releases[-1]}"
    )


def run(args: argparse.Namespace) -> int:
    if args.spec_path is not None and args.spec_path.exists() and not args.spec_path.is_dir():
        raise UsageError(f"{args.spec_path} is a file; SPEC_DIR is the folder of spec files")
    print(summary(load_spec(args.spec_path or args.spec_dir)))
    return 0
