"""The agent side of the agent protocol: serve an implementation over JSON lines.

`kvm-fwspec agent --impl reference --kernel 6.12 --host mitigated` answers on stdin/stdout;
with `--listen HOST:PORT` it answers TCP connections instead, within the limits of
kvm_fwspec.conformance.guest.agent_guard. Stdlib only, so the same agent can run inside a minimal guest. The
protocol is documented in docs/agent-protocol.md.
"""

from __future__ import annotations

import argparse
import contextlib
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
    GuardError,
    LineSource,
    Pacer,
    TooLong,
    admits,
    check_listener,
    read_message,
)
from kvm_fwspec.conformance.guest.host_cpu import host_cpu
from kvm_fwspec.conformance.guest.kvm_ioctl import KvmHost, host_levels
from kvm_fwspec.conformance.guest.program import Implementation, execute
from kvm_fwspec.conformance.guest.wire import (
    PROTOCOL_V1,
    PROTOCOL_V2,
    PROTOCOLS,
    WireError,
    decode_program,
    encode_outcome,
)

if TYPE_CHECKING:
    import ssl  # only a TLS listener needs it; the guest's Python may lack libssl

PROTOCOL = PROTOCOL_V2  # the newest version; Session serves every one in PROTOCOLS


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
    except ValueError as exc:
        return {"id": None, "error": {"message": f"not a JSON line: {exc}"}}, False
    request_id = request.get("id") if isinstance(request, dict) else None
    if not isinstance(request, dict) or not _is_id(request_id):
        why = "not an object" if not isinstance(request, dict) else "its id is not an integer"
        return {"id": None, "error": {"message": f"not a request: {why}"}}, False
    method, params = request.get("method"), request.get("params", {})
    handler = methods.get(method) if isinstance(method, str) else None
    if handler is None:
        known = ", ".join(methods)
        return {
            "id": request_id,
            "error": {"message": f"unknown method {method!r}; methods are {known}"},
        }, False
    if not isinstance(params, dict):
        return {"id": request_id, "error": {"message": "params is not an object"}}, False
    try:
        result = handler(params)
    except WireError as exc:  # the request broke the protocol: say how, in its words
        return {"id": request_id, "error": {"message": str(exc)}}, False
    except Exception as exc:  # a protocol error, not an agent crash
        return {"id": request_id, "error": {"message": f"{type(exc).__name__}: {exc}"}}, False
    return {"id": request_id, "result": result}, method == "bye"


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Session:
    """One client's conversation: the protocol version its hello settled, which says how the
    numbers of its programs and their outcomes are written. Until a hello, version 1."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.protocol = PROTOCOL_V1

    def __call__(self, line: str) -> tuple[dict[str, Any], bool]:
        return dispatch({"hello": self.hello, "run": self.run, "bye": lambda _: {}}, line)

    def hello(self, params: dict[str, Any]) -> dict[str, Any]:
        """Speak the version the client offers if this agent serves it; a client that offers
        none is an old one, of version 1; to one that offers only versions unknown here the
        answer names the newest this agent speaks, and the client decides."""
        offered = params.get("protocol", PROTOCOL_V1)
        if not isinstance(offered, str):
            raise WireError(f"hello's protocol {offered!r} is not a string such as {PROTOCOLS[0]}")
        self.protocol = offered if offered in PROTOCOLS else PROTOCOLS[0]
        return {"protocol": self.protocol, **self.served.hello}

    def run(self, params: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(params.get("programs"), list):
            raise WireError("run needs params.programs, an array of programs")
        programs = []
        for index, program in enumerate(params["programs"]):
            try:
                programs.append(decode_program(program, self.protocol))
            except WireError as exc:
                raise WireError(f"program {index}: {exc}") from None
        start = time.perf_counter()
        observed = [execute(self.served.implementation, program) for program in programs]
        elapsed = round(time.perf_counter() - start, 6)  # the floor benchmarks compare with
        return {
            "observed": [
                [encode_outcome(o, self.protocol) for o in outcomes] for outcomes in observed
            ],
            "elapsed": elapsed,
        }


def answer(served: Served, line: str) -> tuple[dict[str, Any], bool]:
    """One response of the agent protocol to a client that has not said hello (version 1),
    and whether the client said goodbye. A connection keeps its version in a Session."""
    return Session(served)(line)


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

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            if not slots.acquire(blocking=False):
                return
            try:
                self.connection.settimeout(IDLE_TIMEOUT)
                if tls is not None:
                    self.connection.do_handshake()
                session = Session(served)  # each connection settles its own version
                serve_stream(session, self.rfile, _TextWriter(self.wfile), guard, lock)  # type: ignore[arg-type]
            except OSError:
                return  # a client that went away or failed the TLS handshake (SSLError)
            finally:
                slots.release()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    with Server((host, port), Handler, bind_and_activate=False) as server:
        try:
            server.server_bind()
            server.server_activate()
        except OSError as exc:  # in use, not this machine's address, a name that does not resolve
            raise GuardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
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


class KvmUnavailable(Exception):
    """This machine cannot serve real KVM for arm64: another architecture, or no usable device."""


ARM64_MACHINES = ("aarch64", "arm64")


def check_kvm_host(device: str, machine: str) -> None:
    """Refuse, in one line, a machine that cannot serve arm64 KVM, before any ioctl: an x86
    /dev/kvm opens fine and answers the first arm64 ioctl with a bare ENOTTY."""
    if machine not in ARM64_MACHINES:
        raise KvmUnavailable(
            f"real KVM needs an arm64 host, and this machine is {machine}: its {device} "
            "cannot run arm64 guests (use --impl reference, or the qemu adapter)"
        )
    try:
        os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
    except FileNotFoundError:
        raise KvmUnavailable(
            f"{device} does not exist: KVM is not enabled on this host (it needs a kernel with "
            "CONFIG_KVM booted at EL2: bare metal, or a virtual machine with nested "
            "virtualization)"
        ) from None
    except PermissionError:
        raise KvmUnavailable(
            f"cannot open {device}: permission denied (add this user to the group that owns "
            f"it, usually kvm, or run as root)"
        ) from None
    except OSError as exc:
        raise KvmUnavailable(f"cannot open {device}: {exc.strerror}") from None


# What the real-KVM agent can carry out, by the names docs/agent-protocol.md's features table
# gives them (the suite's REQUIRES_* in kvm_fwspec.conformance.cases; a test ties the two).
# `smccc-filter` is the agent's: it runs the filter's steps on any kernel, and one before 6.4
# answers them EINVAL, which is what certifies the filter absent there.
KVM_FEATURES = (
    "guest-calls",
    "psci-0.1-vcpus",
    "smccc-filter",
    "call-results",
    "vcpu-power",
    "enable-cap",
    "vcpu-attr",
)


def kvm_served(options: Mapping[str, str]) -> Served:
    """Real KVM on this machine: what it is, the host levels its workarounds report, the CPU
    it runs on and the capabilities a fingerprint records."""
    device = options.get("device", "/dev/kvm")
    check_kvm_host(device, os.uname().machine)
    host = KvmHost(device)
    hello = {
        "implementation": f"Linux KVM {os.uname().release}",
        # uname -r whole (6.1.0-57-arm64), for the spec to judge: cut to its line (6.1) it
        # would read as the release Linus tagged, not the stable series Debian ships.
        "kernel": os.uname().release,
        "arch": "arm64",
        "features": list(KVM_FEATURES),
        "host-levels": host_levels(host),
        "cpu": host_cpu(),
        "kvm-capabilities": host.kvm_capabilities(),
    }
    return Served(host, hello)


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (loopback) or `[IPV6]:PORT`; port 0 picks a free one."""
    host, colon, port = listen.rpartition(":")
    if not colon:
        raise GuardError(f"--listen {listen}: need HOST:PORT, such as 127.0.0.1:7777")
    if not port.isdigit():
        raise GuardError(f"--listen {listen}: the port '{port}' is not a number")
    if int(port) > 65535:
        raise GuardError(f"--listen {listen}: port {port} is beyond 65535")
    return host.removeprefix("[").removesuffix("]") or "127.0.0.1", int(port)


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
        host, port = parse_listen(listen)
        check_listener(host, guard.token)
    if channel is not None:
        serve_channel(Session(served), channel, guard)
        return
    if listen is None:
        serve_stream(Session(served), sys.stdin.buffer, sys.stdout, guard)
        return
    serve_tcp(
        served,
        host,
        port,
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
    try:
        run_agent(kvm_served({}), args.listen, args.channel)
    except (KvmUnavailable, GuardError) as exc:
        sys.exit(f"FATAL: {exc}")  # one line on the console the lab quotes


if __name__ == "__main__":
    main()
