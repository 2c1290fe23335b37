"""What stands between an agent and its clients. An agent creates VMs and runs guest code on
its host, so it is a privileged service: every message has a size limit (read with a bound,
so an endless line costs no memory), every connection a request rate, and a listener beyond
loopback admits only a client that proves it holds the shared token in its hello, over TLS
when a certificate is given (mutual TLS when a client CA is). Stdlib only: the agent runs
inside a minimal guest."""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import ssl

TOKEN_VARIABLE = "KVM_FWSPEC_AGENT_TOKEN"


class GuardError(Exception):
    """The agent cannot be started as asked: an exposed listener without a token, an address
    it cannot listen on."""


class LineSource(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Guard:
    max_message: int = 16 << 20  # a batch of 256 programs is well under 1 MiB
    max_rate: float = 1000.0  # requests per second on one connection
    token: str | None = None


DEFAULT_GUARD = Guard()


class TooLong(Exception):
    pass


def read_message(source: LineSource, guard: Guard) -> bytes:
    """One line, at most `guard.max_message` bytes; b"" at end of input."""
    line = source.readline(guard.max_message + 1)
    if len(line) > guard.max_message:
        raise TooLong(f"message longer than {guard.max_message} bytes; closing the connection")
    return line


class Pacer:
    """Spaces one connection's requests to the guard's rate."""

    def __init__(self, guard: Guard) -> None:
        self.interval = 1.0 / guard.max_rate
        self.last = 0.0

    def wait(self) -> None:
        pause = self.last + self.interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self.last = time.monotonic()


def admits(line: bytes, token: str) -> tuple[bool, dict[str, Any]]:
    """Whether the first request is a hello carrying the token; if not, the refusal to send."""
    try:
        request = json.loads(line)
        request_id = request.get("id")
        offered = request.get("params", {}).get("token")
        method = request.get("method")
    except (ValueError, AttributeError):
        return False, {
            "id": None,
            "error": {"message": "authentication required: send hello with the token"},
        }
    if method != "hello" or not isinstance(offered, str):
        return False, {
            "id": request_id,
            "error": {"message": "authentication required: send hello with the token"},
        }
    if not hmac.compare_digest(offered.encode(), token.encode()):
        return False, {"id": request_id, "error": {"message": "wrong token"}}
    return True, {}


def is_loopback(host: str) -> bool:
    try:
        return all(
            ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None)
        )
    except (OSError, ValueError):
        return False


def check_listener(host: str, token: str | None) -> None:
    """Refuse to expose an agent beyond loopback to anyone who can connect."""
    if not is_loopback(host) and not token:
        raise GuardError(
            f"listening on {host} exposes the host's KVM; set {TOKEN_VARIABLE} (or --token-file) "
            "so clients must prove they hold it"
        )


def server_tls(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """TLS for the listener; with `client_ca`, clients must present a certificate it signed.
    Imported here: the guest's minimal Python may lack libssl, and needs no TLS."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
