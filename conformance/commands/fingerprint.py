"""kvm-fwspec fingerprint: record what one host's KVM offers a VM's firmware, for fleet planning."""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from kvm_fwspec.codegen.atomic import write_atomically
from kvm_fwspec.conformance.adapters import parse_options
from kvm_fwspec.conformance.adapters.agent import AgentError
from kvm_fwspec.conformance.analyses.dump import check_output, greeted_as_host
from kvm_fwspec.conformance.analyses.fingerprint import as_json, as_nfd, take
from kvm_fwspec.conformance.analyses.firecracker_fingerprint import import_firecracker
from kvm_fwspec.conformance.commands._arguments import (
    add_adapter_options,
    add_profile_arguments,
    nonempty_path,
)
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

HELP = "record one host's firmware-register defaults and accepted values (JSON or NFD labels)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", default="reference", help="adapter name (default: reference)")
    add_profile_arguments(parser)
    add_adapter_options(parser)
    parser.add_argument(
        "--format",
        choices=("json", "nfd"),
        default="json",
        help="json (schema: conformance/schemas/fingerprint.schema.json) or nfd, a "
        "node-feature-discovery local feature file of kvm-fwspec.io/ labels",
    )
    parser.add_argument(
        "--output", type=nonempty_path, default=None, help="write here (default: standard output)"
    )
    parser.add_argument("--name", default=None, help="the host's name (default: this machine's)")
    parser.add_argument(
        "--from-firecracker",
        type=nonempty_path,
        metavar="FILE",
        default=None,
        help="import a Firecracker `cpu-template-helper fingerprint dump` file instead of "
        "asking an adapter (accepted values inferred from the defaults, and said so)",
    )


def run(args: argparse.Namespace) -> int:
    if args.output is not None:
        check_output(args.output)
    spec = load_spec()
    if args.from_firecracker is not None:
        if args.adapter != "reference" or args.option:
            raise UsageError("--from-firecracker reads a file: it takes no --adapter or --option")
        name = args.name or args.from_firecracker.stem
        fingerprint = import_firecracker(spec, args.from_firecracker, name)
        return _write(args, spec, fingerprint, fingerprint["kernel"]["judged-as"])
    kernel = parse_kernel_name(spec, args.kernel)
    names = (args.kernel, args.host, args.arch)
    adapter, profile = greeted_as_host(args.adapter, spec, names, parse_options(args.option))
    try:
        fingerprint = take(adapter, spec, profile, kernel, args.name or socket.gethostname())
    except AgentError as exc:
        raise UsageError(f"the implementation could not be fingerprinted: {exc}") from None
    finally:
        adapter.close()
    return _write(args, spec, fingerprint, profile.label)


def _write(args: argparse.Namespace, spec: Spec, fingerprint: dict[str, Any], label: str) -> int:
    text = as_json(fingerprint) if args.format == "json" else as_nfd(spec, fingerprint)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomically(args.output, text)
        print(f"{args.output}: fingerprint of {fingerprint['host']} ({label})")
    return 0
