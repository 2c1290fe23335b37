"""kvm-fwspec migrate-check: will a VM's firmware registers restore on another KVM?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kvm_fwspec.conformance.analyses import migration
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

HELP = "will a VM's firmware registers restore on another KVM?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        help="a dump file, or KERNEL[:HOST[:FEATURES]] (e.g. 6.13:mitigated:psci-0.2)",
    )
    parser.add_argument(
        "--to", dest="target", required=True, help="KERNEL[:HOST[:FEATURES]] or a dump file"
    )
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")


def _side(spec: Spec, text: str) -> migration.Side:
    """A dump file if one is there, else a profile."""
    path = Path(text)
    if path.is_file():
        return migration.side_from_dump(spec, path)
    return migration.side_from_profile(spec, text)


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec_dir)
    source, target = _side(spec, args.source), _side(spec, args.target)
    report = migration.check(spec, source, target.profile, target.features)
    print(json.dumps(report.to_json(), indent=1) if args.json else migration.render(report))
    return 0 if report.safe else 1
