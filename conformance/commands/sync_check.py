"""kvm-fwspec sync-check: a copy of the uapi constants (C or Rust) against the spec."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kvm_fwspec.codegen.atomic import write_atomically
from kvm_fwspec.codegen.sync_check import (
    CopyContents,
    Finding,
    FixPlan,
    check_inputs,
    claimed_by,
    classify,
    fix_patches,
    hints,
    read_copy,
)
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

HELP = "check a copy of the uapi constants against the spec"
ARCHES = ("arm64", "arm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument(
        "--kernel",
        default=None,
        help="the release the copy should match, e.g. 6.12 or 6.12.y (default: the release the "
        "files claim, from a kernel tree's Makefile or an installed linux/version.h)",
    )
    parser.add_argument(
        "--arch", default="arm64", choices=ARCHES, help="the copy's architecture (default arm64)"
    )
    parser.add_argument(
        "--defined-only",
        action="store_true",
        help="check only the constants the files define (a VMM's own constants file), not "
        "whether every constant of the release is there",
    )
    parser.add_argument(
        "--fix",
        action="store_true",
        help="write FILE.kvm-fwspec.patch for each file that needs a change",
    )


def run(args: argparse.Namespace) -> int:
    check_inputs(args.files)
    spec = load_spec(args.spec_dir)
    kernel = parse_kernel_name(spec, args.kernel or claimed_by(args.files))
    contents = read_copy(spec, args.files, args.arch)
    findings = classify(spec, contents, kernel, args.arch, args.defined_only)
    wrong = [f for f in findings if f.wrong]
    agrees = sum(f.status == "agrees" for f in findings)
    claim = "" if args.kernel else " (the release the files claim)"
    mode = (
        "checked: only the constants the files define"
        if args.defined_only
        else f"checked: every constant the spec has in {kernel}"
    )
    lines = [
        f"{', '.join(map(str, args.files))}: {agrees} constants agree with the spec for "
        f"{kernel}{claim}, {_counts(findings)} ({mode}, {args.arch})"
    ]
    shown = ("agrees", "beyond-bindgen")
    lines += [f"  {finding}" for finding in findings if finding.status not in shown]
    beyond = [f.name for f in findings if f.status == "beyond-bindgen"]
    if beyond:
        lines.append(
            f"  {len(beyond)} constants absent as bindgen leaves out what the kernel defines "
            f"through a function-like macro (BIT() included); the VMM must define them itself: "
            f"{', '.join(beyond)}"
        )
    lines += [f"  note: {hint}" for hint in hints(spec, contents, findings, args.arch)]
    if args.fix:
        lines += _fix(spec, contents, findings, args)
    return _print(lines, 1 if wrong else 0)


def _counts(findings: list[Finding]) -> str:
    """Every finding counted once, by what the lines below say of it: those that do not agree
    (exit 1), then those that cannot be judged, unknown to the spec, or beyond bindgen."""
    wrong = sum(f.wrong for f in findings)
    said = [f"{wrong} {'does' if wrong == 1 else 'do'} not"]
    unevaluated = sum(f.status == "unevaluated" for f in findings)
    if unevaluated:
        one = unevaluated == 1
        said.append(
            f"{unevaluated} {'does' if one else 'do'} not compile on {'its' if one else 'their'} own"
        )
    unknown = sum(f.status == "unknown" for f in findings)
    if unknown:
        said.append(f"{unknown} unknown to the spec")
    beyond = sum(f.status == "beyond-bindgen" for f in findings)
    if beyond:
        said.append(f"{beyond} beyond bindgen")
    return ", ".join(said)


def _fix(
    spec: Spec, contents: CopyContents, findings: list[Finding], args: argparse.Namespace
) -> list[str]:
    """Write a patch for each file that needs one; remove the patch an earlier run left beside
    a file that needs none now, so no patch for another release or an older copy stays behind."""
    lines = []
    wrong = [f for f in findings if f.wrong]
    plan = fix_patches(spec, contents, findings, args.arch) if wrong else FixPlan({}, ())
    for path, patch in plan.patches.items():
        target = _patch_of(path)
        try:
            write_atomically(target, patch)
        except OSError as error:
            raise UsageError(f"{target}: cannot write the patch: {error.strerror}") from None
        lines.append(f"  patch written to {target}")
    for path in dict.fromkeys(args.files):
        stale = _patch_of(path)
        if path in plan.patches or not stale.is_file():
            continue
        try:
            stale.unlink()
        except OSError as error:
            raise UsageError(f"{stale}: cannot remove the old patch: {error.strerror}") from None
        if any(f.file == path for f in wrong):
            lines.append(
                f"  removed {stale}: out of date, and nothing in {path} can be patched to agree"
            )
        else:
            lines.append(f"  removed {stale}: {path} agrees now")
    if wrong and plan.unplaced:
        lines.append(
            f"  not patched (no file given is their header; add them by hand): "
            f"{', '.join(plan.unplaced)}"
        )
    if wrong and not plan.patches:
        lines.append("  no patch written: nothing among the files can be changed to agree")
    return lines


def _patch_of(path: Path) -> Path:
    return path.with_name(path.name + ".kvm-fwspec.patch")


def _print(lines: list[str], status: int) -> int:
    """The report on stdout; a reader that stops early (`| head`) ends it quietly."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status
