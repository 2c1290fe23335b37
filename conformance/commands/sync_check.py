"""kvm-fwspec sync-check: a copy of the uapi constants (C or Rust) against the spec."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvm_fwspec.codegen.sync_check import check, claimed_by, fix_patch
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.loader import load_spec

HELP = "check a copy of the uapi constants against the spec"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument(
        "--kernel",
        default=None,
        help="the release the copy should match, e.g. 6.12 or 6.12.y (default: the release the "
        "files claim, from a kernel tree's Makefile or an installed linux/version.h)",
    )
    parser.add_argument("--arch", default="arm64")
    parser.add_argument(
        "--fix", action="store_true", help="write FILE.kvm-fwspec.patch that makes the copy agree"
    )


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec_dir)
    kernel = parse_kernel_name(spec, args.kernel or claimed_by(args.files))
    findings = check(spec, args.files, kernel, args.arch)
    wrong = [f for f in findings if f.wrong]
    agrees = sum(f.status == "agrees" for f in findings)
    claim = "" if args.kernel else " (the release the files claim)"
    files = ", ".join(map(str, args.files))
    print(
        f"{files}: {agrees} constants agree with the spec for {kernel}{claim}, {len(wrong)} do not"
    )
    for finding in findings:
        if finding.status != "agrees":
            print(f"  {finding}")
    if wrong and args.fix:
        patch = args.files[0].with_name(args.files[0].name + ".kvm-fwspec.patch")
        patch.write_text(fix_patch(spec, args.files[0], findings, args.arch), encoding="utf-8")
        print(f"  patch written to {patch}")
    return 1 if wrong else 0
