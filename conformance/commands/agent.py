"""kvm-fwspec agent: serve an implementation over the agent protocol, on stdio or TCP."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from kvm_fwspec.conformance.commands._arguments import add_profile_arguments
from kvm_fwspec.conformance.guest.agent import Served, kvm_served, run_agent
from kvm_fwspec.conformance.guest.agent_guard import TOKEN_VARIABLE, Guard, GuardError, server_tls
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.reference_agent import reference_served
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec

HELP = "serve an implementation over the agent protocol (stdio or TCP)"

IMPLEMENTATIONS: dict[str, Callable[[Mapping[str, str]], Served]] = {
    "reference": reference_served,
    "kvm": kvm_served,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--impl", default="reference")
    add_profile_arguments(parser)
    parser.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="serve TCP instead of stdin/stdout (HOST defaults to 127.0.0.1; any other address "
        "needs a token)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="clients must send this file's token in their hello (default: $KVM_FWSPEC_AGENT_TOKEN)",
    )
    parser.add_argument("--tls-cert", default=None, help="serve TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    parser.add_argument(
        "--tls-client-ca", default=None, help="require client certificates signed by this CA"
    )
    parser.add_argument(
        "--max-message", type=int, default=16 << 20, help="largest request in bytes"
    )
    parser.add_argument(
        "--max-rate", type=float, default=1000.0, help="requests per second per connection"
    )


def run(args: argparse.Namespace) -> int:
    if args.impl not in IMPLEMENTATIONS:
        raise UsageError(
            f"no agent implementation '{args.impl}'; have: {', '.join(sorted(IMPLEMENTATIONS))}"
        )
    profile = resolve_profile(load_spec(args.spec_dir), args.kernel, args.host, args.arch)
    options = {"kernel": str(profile.release), "host": profile.host.name, "arch": profile.arch}
    token = (
        args.token_file.read_text(encoding="utf-8").strip()
        if args.token_file
        else os.environ.get(TOKEN_VARIABLE)
    )
    guard = Guard(args.max_message, args.max_rate, token or None)
    tls = server_tls(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    try:
        run_agent(IMPLEMENTATIONS[args.impl](options), args.listen, guard=guard, tls=tls)
    except GuardError as exc:
        raise UsageError(str(exc)) from None
    return 0
