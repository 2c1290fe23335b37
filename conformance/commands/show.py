"""kvm-fwspec show: describe one spec entity by its spec name or its kernel name."""

from __future__ import annotations

import argparse

from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.show import show

HELP = "describe a register, value, host profile, rule or function"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        help="a spec or C name: psci-version, KVM_REG_ARM_STD_BMAP, trng-v1.0, mitigated, "
        "psci-version/set/reject-unimplemented",
    )


def run(args: argparse.Namespace) -> int:
    print("\n".join(show(load_spec(args.spec_dir), args.name)))
    return 0
