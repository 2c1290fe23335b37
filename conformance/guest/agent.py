"""The agent side of the agent protocol: serve an implementation over JSON lines.

`kvm-fwspec agent --impl reference --kernel 6.12 --host mitigated` answers on stdin/stdout;
with `--listen HOST:PORT` it answers TCP connections instead, within the limits of
kvm_fwspec.conformance.guest.agent_guard. Stdlib only, so the same agent can run inside a minimal guest. The
protocol is documented in docs/agent-protocol.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from kvm_fwspec.conformance.guest.agent_guard import (
    DEFAULT_GUARD,
    Guard,
    LineSource,
    Pacer,
    TooLong,
    admits,
    check_listener,
    read_message,
)
from kvm_fwspec.conformance.guest.kvm_ioctl import KvmHost, host_levels
from kvm_fwspec.conformance.guest.program import Implementation, execute

if TYPE_CHECKING:
    import ssl  # only a TLS listener needs it; the guest's Python may lack libssl

PROTOCOL = "kvm-fwspec-agent/1"


@dataclass(frozen=True)
class Served:
    """An implementation with the description the agent gives in its hello."""

    implementation: Implementation
    hello: dict[str, Any]


Respond = Callable[[str], tuple[dict[str, Any], bool]]  # a request line -> (response, done)


def serve_stream(
    respond: Respond,
    reader: LineSource,
    writer: IO[str],
    guard: Guard = DEFAULT_GUARD,
    lock: threading.Lock | None = None,
) -> None:
    """Answer requests line by line until `bye`, end of input, or a breach of the guard."""
    pacer = Pacer(guard)
    admitted = guard.token is None
    while True:
        try:
            line = read_message(reader, guard)
        except TooLong as exc:
            _reply(writer, {"id": None, "error": {"message": str(exc)}})
            return
        if not line:
            return
        if not line.strip():
            continue
        pacer.wait()
        if not admitted:
            admitted, refusal = admits(line, guard.token or "")
            if not admitted:
                _reply(writer, refusal)
                return
        with lock or contextlib.nullcontext():
            response, done = respond(line.decode("utf-8", errors="replace"))
        _reply(writer, response)
        if done:
            return


def _reply(writer: IO[str], response: dict[str, Any]) -> None:
    writer.write(json.dumps(response, separators=(",", ":")) + "\n")
    writer.flush()


Method = Callable[[dict[str, Any]], dict[str, Any]]  # a request's params -> its result


def dispatch(methods: Mapping[str, Method], line: str) -> tuple[dict[str, Any], bool]:
    """The JSON-lines framing every agent shares: one response to a request line, from the
    method it names, and whether that method was `bye`. A failing method is that request's
    error; the agent keeps serving."""
    try:
        request = json.loads(line)
        request_id = request.get("id")
        method = request["method"]
        params = request.get("params") or {}
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        return {"id": None, "error": {"message": f"malformed request: {exc}"}}, False
    handler = methods.get(method) if isinstance(method, str) else None
    if handler is None:
        return {"id": request_id, "error": {"message": f"unknown method '{method}'"}}, False
    try:
        result = handler(params)
    except Exception as exc:  # a protocol error, not an agent crash
        return {"id": request_id, "error": {"message": f"{type(exc).__name__}: {exc}"}}, False
    return {"id": request_id, "result": result}, method == "bye"


def answer(served: Served, line: str) -> tuple[dict[str, Any], bool]:
    """One response of the agent protocol, and whether the client said goodbye."""

    def run(params: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        observed = [execute(served.implementation, program) for program in params["programs"]]
        elapsed = round(time.perf_counter() - start, 6)  # the floor benchmarks compare with
        return {"observed": observed, "elapsed": elapsed}

    return dispatch(
        {
            "hello": lambda _: {"protocol": PROTOCOL, **served.hello},
            "run": run,
            "bye": lambda _: {},
        },
        line,
    )


MAX_CONNECTIONS = 8
IDLE_TIMEOUT = 600.0  # seconds a connection may stay silent before the agent drops it


def serve_channel(respond: Respond, channel: str, guard: Guard = DEFAULT_GUARD) -> None:
    """Serve a character device (a virtio-serial port) until the other side says bye."""
    # One descriptor for both directions: a virtio-serial port can be open only once.
    fd = os.open(channel, os.O_RDWR)
    with io.BufferedReader(io.FileIO(fd, "r", closefd=False), 1 << 16) as reader:
        serve_stream(respond, reader, _TextWriter(io.FileIO(fd, "w")), guard)  # type: ignore[arg-type]


def serve_tcp(
    served: Served,
    host: str,
    port: int,
    ready: Callable[[int], None] | None = None,
    guard: Guard = DEFAULT_GUARD,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Serve host:port (port 0 picks one; `ready` learns it), a few connections at a time,
    one implementation call at a time: a refused or misbehaving client never holds up the
    authenticated one."""
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    respond = functools.partial(answer, served)

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            if not slots.acquire(blocking=False):
                return
            try:
                self.connection.settimeout(IDLE_TIMEOUT)
                if tls is not None:
                    self.connection.do_handshake()
                serve_stream(respond, self.rfile, _TextWriter(self.wfile), guard, lock)  # type: ignore[arg-type]
            except OSError:
                return  # a client that went away or failed the TLS handshake (SSLError)
            finally:
                slots.release()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    with Server((host, port), Handler, bind_and_activate=False) as server:
        server.server_bind()
        server.server_activate()
        if tls is not None:
            server.socket = tls.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        if ready is not None:
            ready(server.server_address[1])
        server.serve_forever()


class _TextWriter:
    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8"))
        while data:  # a raw device may take part of a large answer at a time
            written = self.raw.write(data)
            data = data[written if written is not None else 0 :]

    def flush(self) -> None:
        self.raw.flush()


def kvm_served(options: Mapping[str, str]) -> Served:
    """Real KVM on this machine: what it is, and the host levels its workarounds report."""
    host = KvmHost(options.get("device", "/dev/kvm"))
    hello = {
        "implementation": f"Linux KVM {os.uname().release}",
        "kernel": host.release(),
        "arch": "arm64",
        "features": ["guest-calls", "psci-0.1-vcpus"],
        "host-levels": host_levels(host),
    }
    return Served(host, hello)


def run_agent(
    served: Served,
    listen: str | None,
    channel: str | None = None,
    guard: Guard = DEFAULT_GUARD,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Serve an implementation on stdin/stdout, on a character device (a virtio-serial port), or on TCP
    (loopback unless told otherwise, and then only with a token)."""
    if listen is not None:
        host, _, port = listen.rpartition(":")
        host = host or "127.0.0.1"
        check_listener(host, guard.token)
    if channel is not None:
        serve_channel(functools.partial(answer, served), channel, guard)
        return
    if listen is None:
        serve_stream(functools.partial(answer, served), sys.stdin.buffer, sys.stdout, guard)
        return
    serve_tcp(
        served,
        host,
        int(port),
        lambda p: print(f"listening on {host}:{p}", flush=True),
        guard,
        tls,
    )


def main() -> None:
    """Serve this machine's real KVM without the rest of kvm-fwspec, for a minimal guest:
    python3 -m kvm_fwspec.conformance.guest.agent."""
    parser = argparse.ArgumentParser(prog="python3 -m kvm_fwspec.conformance.guest.agent")
    parser.add_argument(
        "--channel", default=None, help="character device to serve on (a virtio-serial port)"
    )
    parser.add_argument("--listen", default=None, metavar="HOST:PORT")
    args = parser.parse_args()
    run_agent(kvm_served({}), args.listen, args.channel)


if __name__ == "__main__":
    main()
