"""kvm-fwspec fingerprint: record what one host's KVM offers a VM's firmware, for fleet planning,
from an adapter or from a file the host already left (a Firecracker fingerprint, a dump, a QEMU
migration stream)."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import Any

from kvm_fwspec.codegen.atomic import write_atomically
from kvm_fwspec.conformance.adapters import parse_options
from kvm_fwspec.conformance.adapters.agent import AgentError
from kvm_fwspec.conformance.analyses.dump import check_output, greeted_as_host, reported_kernel
from kvm_fwspec.conformance.analyses.dump_fingerprint import import_dump
from kvm_fwspec.conformance.analyses.fingerprint import as_json, as_nfd, take
from kvm_fwspec.conformance.analyses.firecracker_fingerprint import import_firecracker
from kvm_fwspec.conformance.analyses.fleet_hosts import host_of
from kvm_fwspec.conformance.analyses.qemu_stream_fingerprint import import_qemu_stream
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
# What each file a host already left is imported by; each says its kernel and host (a stream
# its host, the user its kernel), so none takes the options that ask an adapter.
IMPORTERS = ("--from-firecracker", "--from-dump", "--from-qemu-stream")
ADAPTER_OPTIONS = ("--adapter", "--option", "--kernel", "--host", "--arch")
DEFAULTS = {"adapter": "reference", "kernel": "latest", "host": "mitigated", "arch": "arm64"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", default="reference", help="adapter name (default: reference)")
    add_profile_arguments(parser, auto=True)
    add_adapter_options(parser)
    parser.add_argument(
        "--format",
        choices=("json", "nfd"),
        default="json",
        help="json (schema: conformance/schemas/fingerprint.schema.json) or nfd, a "
        "node-feature-discovery local feature file of kvm-fwspec.io/ labels",
    )
    parser.add_argument(
        "--output",
        type=nonempty_path,
        default=None,
        help="write here (default, or -: standard output)",
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
    parser.add_argument(
        "--from-dump",
        type=nonempty_path,
        metavar="FILE",
        default=None,
        help="import a `kvm-fwspec dump` file of a fresh VM of PSCI 0.2 vcpus (kernel and host "
        "from the file; accepted values inferred from the defaults, and said so)",
    )
    parser.add_argument(
        "--from-qemu-stream",
        type=nonempty_path,
        metavar="FILE",
        default=None,
        help="import the firmware registers of an arm64 KVM VM's QEMU migration stream; "
        "needs --kernel (the host's uname -r), which a stream does not record",
    )
    # None where the user gave nothing, so an option an importer does not take is refused
    # rather than ignored; the adapter path fills in DEFAULTS.
    parser.set_defaults(**dict.fromkeys(DEFAULTS))


def run(args: argparse.Namespace) -> int:
    if args.name is not None and not args.name.isprintable():
        raise UsageError(f"--name {args.name!r}: a host name of printable characters, please")
    importer = _importer(args)
    if args.output == Path("-"):  # the shell convention for standard output, not a file "-"
        args.output = None
    if args.output is not None:
        check_output(args.output, example="fingerprint.json")
    spec = load_spec()
    if importer is not None:
        fingerprint = _imported(args, spec, importer)
        return _write(args, spec, fingerprint, fingerprint["kernel"]["judged-as"])
    for key, default in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    if args.kernel != "auto":
        parse_kernel_name(spec, args.kernel)  # a misspelt kernel, before anything starts
    names = (args.kernel, args.host, args.arch)
    adapter, profile = greeted_as_host(args.adapter, spec, names, parse_options(args.option))
    try:
        text = reported_kernel(adapter) if args.kernel == "auto" else args.kernel
        kernel = parse_kernel_name(spec, text)
        fingerprint = take(adapter, spec, profile, kernel, args.name or socket.gethostname())
    except AgentError as exc:
        raise UsageError(f"the implementation could not be fingerprinted: {exc}") from None
    finally:
        adapter.close()
    return _write(args, spec, fingerprint, profile.label)


def _importer(args: argparse.Namespace) -> str | None:
    """The --from-* option given, if any; one line for options that cannot go with it."""
    given = [o for o in IMPORTERS if getattr(args, _dest(o)) is not None]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} each name a host's file: give one of them")
    if not given:
        return None
    (importer,) = given
    allowed = {"--kernel"} if importer == "--from-qemu-stream" else set()
    extra = [o for o in ADAPTER_OPTIONS if o not in allowed and getattr(args, _dest(o))]
    if extra:
        raise UsageError(f"{importer} reads a file: it takes no {' or '.join(extra)}")
    if importer == "--from-qemu-stream" and args.kernel is None:
        raise UsageError(
            "--from-qemu-stream needs --kernel (uname -r of the host that saved the stream): "
            "a stream does not record it"
        )
    return importer


def _imported(args: argparse.Namespace, spec: Spec, importer: str) -> dict[str, Any]:
    path = getattr(args, _dest(importer))
    name = args.name or path.stem
    if importer == "--from-firecracker":
        return import_firecracker(spec, path, name)
    if importer == "--from-dump":
        return import_dump(spec, path, name)
    return import_qemu_stream(spec, path, name, args.kernel)


def _dest(option: str) -> str:
    return option.removeprefix("--").replace("-", "_")


def _write(args: argparse.Namespace, spec: Spec, fingerprint: dict[str, Any], label: str) -> int:
    """Write a fingerprint only if `fleet plan` would believe it: an implementation whose
    answers contradict themselves (a default it then refuses to take) or a file carrying
    values no KVM gives is refused here, in the same words, rather than later."""
    try:
        host_of(spec, fingerprint, "the fingerprint")
    except UsageError as exc:
        raise UsageError(f"not written: {exc}") from None
    text = as_json(fingerprint) if args.format == "json" else as_nfd(spec, fingerprint)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomically(args.output, text)
        print(f"{args.output}: fingerprint of {fingerprint['host']} ({label})")
    return 0
