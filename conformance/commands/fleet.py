"""kvm-fwspec fleet: plan migrations across a fleet from its hosts' fingerprints.

`fleet plan FILE...` groups hosts into pools, draws the pool x pool migration matrix and finds
the baseline configuration for the largest mutually migratable set; `fleet diff --before
FILES --after FILES` is the kernel-upgrade gate. A FILE may be a folder, read for its *.json.
A file that is not a usable fingerprint is left out with one line naming it and the field,
and the rest of the fleet is still planned; the exit status then says some were left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvm_fwspec.codegen.atomic import write_atomically
from kvm_fwspec.conformance.analyses.dump import check_output
from kvm_fwspec.conformance.analyses.fleet import make_plan
from kvm_fwspec.conformance.analyses.fleet_diff import EXIT, upgrade_gate
from kvm_fwspec.conformance.analyses.fleet_diff import as_text as gate_text
from kvm_fwspec.conformance.analyses.fleet_hosts import Host, Refused, read_hosts
from kvm_fwspec.conformance.analyses.fleet_report import as_html, as_json, as_text, count_of
from kvm_fwspec.conformance.commands._arguments import nonempty_path
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

HELP = "plan migrations across a fleet from host fingerprints (pools, matrix, baseline, gate)"
SOME_LEFT_OUT = 1  # planned, but some files were not fingerprints: fix them and plan again
# A gate that could not read every host passes nothing: 2, apart from its verdicts 0, 3 and 1.
GATE_BLIND = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="{plan,diff}", required=True)
    plan = actions.add_parser("plan", help="pools, the migration matrix and the baseline")
    plan.add_argument(
        "fingerprints",
        nargs="+",
        type=nonempty_path,
        metavar="FINGERPRINT",
        help="fingerprint files (kvm-fwspec's, Firecracker's fingerprint dumps, kvm-fwspec "
        "dumps) or folders, read for their *.json",
    )
    plan.add_argument("--json", action="store_true", help="the plan as JSON on standard output")
    plan.add_argument(
        "--html", type=nonempty_path, metavar="DIR", default=None, help="also write DIR/index.html"
    )
    plan.add_argument(
        "--pools",
        action="append",
        default=[],
        metavar="P1,P2",
        help="find the baseline among these pools only (repeatable; default: all)",
    )
    diff = actions.add_parser("diff", help="can the running pools move VMs onto upgraded hosts?")
    diff.add_argument(
        "--before",
        nargs="+",
        type=nonempty_path,
        required=True,
        metavar="FILE",
        help="the running hosts' fingerprints (files or folders)",
    )
    diff.add_argument(
        "--after",
        nargs="+",
        type=nonempty_path,
        required=True,
        metavar="FILE",
        help="the upgraded hosts' fingerprints (files or folders); a host named in both is "
        "the same host upgraded",
    )
    diff.add_argument(
        "--gate",
        choices=("current", "baseline"),
        default="current",
        help="the configuration the exit status judges (default: the VMs' current one)",
    )


def run(args: argparse.Namespace) -> int:
    spec = load_spec()
    if args.action == "plan":
        return _plan(spec, args)
    return _diff(spec, args)


def _plan(spec: Spec, args: argparse.Namespace) -> int:
    chosen = [p.strip() for text in args.pools for p in text.split(",") if p.strip()]
    if args.pools and not chosen:
        raise UsageError("--pools names no pool: give pool ids such as P1,P3, or leave it out")
    if args.html is not None:
        _check_html(args.html)
    hosts, refused = _read(spec, args.fingerprints, "")
    plan = make_plan(spec, hosts, refused, chosen)
    sys.stdout.write(as_json(plan) if args.json else as_text(plan))
    if args.html is not None:
        write_atomically(args.html / "index.html", as_html(plan))
        print(f"{args.html / 'index.html'}: the plan drawn", file=sys.stderr)
    return _left_out(refused)


def _check_html(folder: Path) -> None:
    """Refuse, before any work, an --html folder index.html cannot be written in."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--html {folder} is a file; name a folder for index.html")
    check_output(folder / "index.html", "--html")


def _diff(spec: Spec, args: argparse.Namespace) -> int:
    before, refused_before = _read(spec, args.before, "--before: ")
    after, refused_after = _read(spec, args.after, "--after: ")
    gate = upgrade_gate(spec, before, after)
    refused = refused_before + refused_after
    sys.stdout.write(gate_text(gate, args.gate, len(refused)))
    if refused:
        _left_out(refused)
        return GATE_BLIND
    return EXIT[gate.worst(args.gate)]


def _read(spec: Spec, arguments: list[Path], side: str) -> tuple[list[Host], list[Refused]]:
    files: list[Path] = []
    for argument in arguments:
        if argument.is_dir():
            found = sorted(argument.glob("*.json"))
            if not found:
                raise UsageError(f"{side}{argument}: a folder with no *.json fingerprint in it")
            files += found
        else:
            files.append(argument)
    hosts, refused = read_hosts(spec, files)
    for problem in refused:
        print(f"kvm-fwspec: {side}left out {problem.reason}", file=sys.stderr)
    if not hosts:
        raise UsageError(f"{side}no fingerprint could be read: nothing to plan")
    return hosts, refused


def _left_out(refused: list[Refused]) -> int:
    if refused:
        print(
            f"kvm-fwspec: {count_of(len(refused), 'file')} left out; the plan covers the rest",
            file=sys.stderr,
        )
        return SOME_LEFT_OUT
    return 0
