"""kvm-fwspec certify: run the conformance suite through an adapter and write the report."""

from __future__ import annotations

import argparse

from kvm_fwspec.conformance.adapters import parse_options
from kvm_fwspec.conformance.certify import Request, certify
from kvm_fwspec.conformance.commands._arguments import (
    add_adapter_options,
    add_profile_arguments,
    nonempty_path,
)

HELP = "certify an implementation through an adapter and write the report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", default="reference", help="adapter name (default: reference)")
    add_profile_arguments(parser, auto=True)
    add_adapter_options(parser)
    parser.add_argument(
        "-n",
        dest="workers",
        type=_workers,
        default=None,
        help="xdist workers (a number or 'auto'), used when the adapter gains from them",
    )
    parser.add_argument(
        "--report", type=nonempty_path, default=None, help="report directory (default: reports/...)"
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress lines, only failures and the verdict",
    )
    parser.add_argument(
        "--require-all",
        action="store_true",
        help="full certification: a case the adapter cannot run (not applicable) fails it",
    )
    parser.add_argument(
        "--sign",
        type=nonempty_path,
        metavar="KEY",
        default=None,
        help="sign results.json with this OpenSSH private key (ssh-keygen -Y sign)",
    )


def _workers(text: str) -> str:
    if text == "auto" or (text.isdigit() and int(text) >= 0):
        return text
    raise argparse.ArgumentTypeError(f"'{text}' is not a number of workers or 'auto'")


def run(args: argparse.Namespace) -> int:
    return certify(
        Request(
            adapter=args.adapter,
            kernel=args.kernel,
            host=args.host,
            arch=args.arch,
            options=parse_options(args.option),
            workers=args.workers,
            report=args.report,
            quiet=args.quiet,
            require_all=args.require_all,
            sign=args.sign,
        )
    )
