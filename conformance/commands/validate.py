"""kvm-fwspec validate: load and check the spec, and summarise what it holds."""

from __future__ import annotations

import argparse

from kvm_fwspec.conformance.commands._arguments import nonempty_path
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import file_kind, load_spec
from kvm_fwspec.spec.model import Spec

HELP = "check the spec and print a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec_path",
        nargs="?",
        type=nonempty_path,
        default=None,
        metavar="SPEC_DIR",
        help="the folder of spec files (default: --spec-dir, else the project's spec/)",
    )


def summary(spec: Spec) -> str:
    values = sum(len(r.values) + len(r.bits) for r in spec.registers)
    functions = (
        len(spec.psci_functions) + len(spec.smccc_functions) + len(spec.kvm_psci_01_functions)
    )
    return (
        f"spec OK: {len(spec.registers)} registers, {values} values and bits, "
        f"{len(spec.psci_versions)} PSCI versions, {functions} function ids, "
        f"{len(spec.rules)} rules, {len(spec.smccc_filter.rules)} SMCCC filter rules, "
        f"{len(spec.vcpu_power.rules)} vcpu power rules, "
        f"{len(spec.stolen_time.rules)} stolen-time rules, "
        f"{len(spec.vmm_rules)} VMM rules, "
        f"releases {spec.releases[0]}-{spec.releases[-1]}"
    )


def run(args: argparse.Namespace) -> int:
    if args.spec_path is not None:
        try:
            kind = file_kind(args.spec_path)
        except OSError as exc:  # a name too long, a folder we may not enter
            raise UsageError(f"SPEC_DIR {args.spec_path}: {exc.strerror}") from None
        if kind is None:
            raise UsageError(f"SPEC_DIR {args.spec_path} does not exist")
        if kind != "a folder":
            raise UsageError(f"{args.spec_path} is {kind}; SPEC_DIR is the folder of spec files")
    print(summary(load_spec(args.spec_path or args.spec_dir)))
    return 0
