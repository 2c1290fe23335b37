"""kvm-fwspec agent: serve an implementation over the agent protocol, on stdio or TCP."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from kvm_fwspec.conformance.commands._arguments import add_profile_arguments
from kvm_fwspec.conformance.guest.agent import (
    KvmUnavailable,
    Served,
    kvm_served,
    parse_listen,
    run_agent,
)
from kvm_fwspec.conformance.guest.agent_guard import TOKEN_VARIABLE, Guard, GuardError, server_tls
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.reference_agent import reference_served
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec

if TYPE_CHECKING:
    import ssl

HELP = "serve an implementation over the agent protocol (stdio or TCP)"
MAX_MESSAGE_LIMIT = 1 << 30  # a request is read into memory whole: bound what a client may send

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
    if args.impl == "kvm" and (args.kernel, args.host) != ("latest", "mitigated"):
        raise UsageError(
            "--impl kvm serves this host's own KVM, whose kernel and host levels it reports "
            "in its hello: drop --kernel and --host (certify --kernel and --host auto judge it)"
        )
    guard, tls = _checked_limits(args)
    profile = resolve_profile(load_spec(args.spec_dir), args.kernel, args.host, args.arch)
    # `6.1.y` stays `6.1.y`: the stable series has backports the release lacks.
    options = {"kernel": profile.kernel, "host": profile.host.name, "arch": profile.arch}
    try:
        if args.listen is not None:
            parse_listen(args.listen)  # before the implementation: a typo costs no KVM setup
        served = IMPLEMENTATIONS[args.impl](options)
        run_agent(served, args.listen, guard=guard, tls=tls)
    except (GuardError, KvmUnavailable) as exc:
        raise UsageError(str(exc)) from None
    return 0


def _checked_limits(args: argparse.Namespace) -> tuple[Guard, ssl.SSLContext | None]:
    """The guard and TLS the options ask for, each option checked before anything starts."""
    if not 1 <= args.max_message <= MAX_MESSAGE_LIMIT:
        raise UsageError(
            f"--max-message {args.max_message}: need a number of bytes from 1 to "
            f"{MAX_MESSAGE_LIMIT} (1 GiB)"
        )
    if not 0 < args.max_rate < math.inf:
        raise UsageError(
            f"--max-rate {args.max_rate:g}: need a number of requests per second above 0"
        )
    token = os.environ.get(TOKEN_VARIABLE)
    if args.token_file is not None:
        token = _read(args.token_file, "--token-file").strip()
        if not token:
            raise UsageError(f"--token-file {args.token_file}: the file is empty")
    for option, path in (("--tls-key", args.tls_key), ("--tls-client-ca", args.tls_client_ca)):
        if path is not None and args.tls_cert is None:
            raise UsageError(
                f"{option} needs --tls-cert: the agent serves TLS only with a certificate"
            )
    if args.tls_cert is not None and args.listen is None:
        raise UsageError("--tls-cert needs --listen: TLS is for TCP, not stdin/stdout")
    tls = None
    if args.tls_cert is not None:
        for option, path in (
            ("--tls-cert", args.tls_cert),
            ("--tls-key", args.tls_key),
            ("--tls-client-ca", args.tls_client_ca),
        ):
            if path is not None:
                _read(Path(path), option)
        import ssl  # only a TLS listener needs OpenSSL's library, which a minimal host may lack

        try:
            tls = server_tls(args.tls_cert, args.tls_key, args.tls_client_ca)
        except ssl.SSLError as exc:  # OpenSSL's reason is often bare ("PEM lib")
            why = exc.reason or "not a PEM certificate and key"
            raise UsageError(
                f"--tls-cert {args.tls_cert}: cannot serve TLS with it ({why}; "
                "give a PEM certificate, and its key with --tls-key unless the file holds it)"
            ) from None
    return Guard(args.max_message, args.max_rate, token or None), tls


def _read(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise UsageError(f"{option} {path}: {why}") from None
