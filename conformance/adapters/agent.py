"""The client side of the agent protocol: certify any implementation that speaks it.

Options: `command=...` starts the agent and talks over its stdin/stdout; `address=HOST:PORT`
connects over TCP. Programs travel in batches (`batch=N`, default 256) so one round trip
carries many operations; requests are answered in order.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import selectors
import shlex
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kvm_fwspec.conformance.adapters import Capabilities
from kvm_fwspec.conformance.guest.agent import PROTOCOL
from kvm_fwspec.conformance.guest.agent_guard import TOKEN_VARIABLE
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec.errors import UsageError

DEFAULT_BATCH = 256
DEFAULT_TIMEOUT = 120.0
BYE_TIMEOUT = 2.0  # for bye, and for an agent to exit once its input ends; then it is killed
# A freshly started agent's hello waits at least this long: starting a process and importing
# its code is not the implementation's answer time, and a loaded machine stretches it.
START_TIMEOUT = 60.0
DEFAULT_MAX_MESSAGE = 64 << 20  # an answer to 256 programs is well under 1 MiB


@dataclass(frozen=True)
class Channel:
    """A byte stream to the agent: a readable descriptor to wait on, and how to use it."""

    fileno: int
    receive: Callable[[], bytes]
    send: Callable[[bytes], None]
    close: Callable[[], None]
    # Bytes already received but not yet read (TLS decrypts whole records, which the
    # descriptor no longer shows as readable).
    pending: Callable[[], int] = lambda: 0


class AgentError(Exception):
    """The agent broke the protocol, answered with an error, or did not answer in time."""


class AgentAdapter:
    """A client that survives a faulty agent: any broken answer (none in time, garbage, too
    long, cut short, for another request) ends that connection and is the error of the cases
    that request carried. With `reconnect` (an agent the client starts or dials), the next
    request gets a fresh agent, so the other cases still run; without it (a booted guest), the
    next requests fail at once with the first fault's reason instead of each waiting it out."""

    name = "agent"

    def __init__(
        self,
        channel: Channel,
        batch: int,
        timeout: float,
        reconnect: Callable[[], Channel] | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
        token: str | None = None,
    ) -> None:
        self.batch = batch
        self.timeout = timeout
        self.reconnect = reconnect
        self.max_message = max_message
        self.token = token
        self.ids = itertools.count(1)
        self.selector = selectors.DefaultSelector()
        self.channel: Channel | None = None
        self.fault: str | None = None
        self.hello: dict[str, Any] | None = None
        self._attach(channel)

    def _attach(self, channel: Channel) -> None:
        self.channel = channel
        self.buffer = b""
        self.selector.register(channel.fileno, selectors.EVENT_READ)

    def _detach(self, why: str) -> None:
        """Forget a connection that broke the protocol; its agent is not asked again."""
        # Forgotten first: a Ctrl-C while it closes must not leave a half-detached channel
        # that close() would try to detach again.
        channel, self.channel = self.channel, None
        self.fault = why
        if channel is not None:
            self.selector.unregister(channel.fileno)
            with contextlib.suppress(Exception):
                channel.close()

    def _read_line(self, channel: Channel, limit: float) -> bytes:
        deadline = time.monotonic() + limit
        while b"\n" not in self.buffer:
            if len(self.buffer) > self.max_message:
                raise AgentError(f"answer longer than {self.max_message} bytes")
            left = deadline - time.monotonic()
            if not channel.pending() and (left <= 0 or not self.selector.select(left)):
                raise AgentError(f"agent did not answer within {limit:g} s")
            chunk = channel.receive()
            if not chunk:
                cut = f" after {len(self.buffer)} bytes of an answer" if self.buffer else ""
                raise AgentError(f"agent closed the connection{cut}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        if len(line) > self.max_message:
            raise AgentError(f"answer longer than {self.max_message} bytes")
        return line

    def _connected(self) -> Channel:
        if self.channel is not None:
            return self.channel
        if self.reconnect is None:
            raise AgentError(f"agent unusable after an earlier fault: {self.fault}")
        self._attach(self.reconnect())
        if self.hello is not None:  # a fresh agent must say again what it is
            self._check_hello(self.request("hello", self._hello_params()))
        return self._connected()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._connected()
        request_id = next(self.ids)
        message = json.dumps(
            {"id": request_id, "method": method, "params": params}, separators=(",", ":")
        )
        try:
            channel.send(message.encode() + b"\n")
            limit = max(self.timeout, START_TIMEOUT) if method == "hello" else self.timeout
            response = _parse(self._read_line(channel, limit=limit), request_id)
        except (AgentError, OSError) as exc:
            self._detach(str(exc))
            raise AgentError(str(exc)) from None
        if "error" in response:  # the agent refused this request and keeps serving
            raise AgentError(str(response["error"].get("message", "unknown error")))
        result: dict[str, Any] = response["result"]
        return result

    def _hello_params(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL} | ({"token": self.token} if self.token else {})

    def _check_hello(self, hello: dict[str, Any]) -> dict[str, Any]:
        if hello.get("protocol") != PROTOCOL:
            self._detach(f"agent speaks {hello.get('protocol')!r}, not {PROTOCOL}")
            raise AgentError(f"agent speaks {hello.get('protocol')!r}, not {PROTOCOL}")
        return hello

    def capabilities(self) -> Capabilities:
        """What the agent said in its hello (asked once, on first use)."""
        if self.hello is None:
            self.hello = self._check_hello(self.request("hello", self._hello_params()))
        return Capabilities(
            self.hello.get("implementation", "unknown"),
            self.hello.get("kernel"),
            self.hello.get("arch", "arm64"),
            frozenset(self.hello.get("features", [])),
            self.hello.get("host-levels"),
            self.describe(),
        )

    def describe(self) -> dict[str, str]:
        """Provenance the results should carry beyond the hello (the booted kernel package)."""
        return {}

    def run_programs(self, programs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        observed: list[list[dict[str, Any]]] = []
        for start in range(0, len(programs), self.batch):
            chunk = programs[start : start + self.batch]
            answer: Any = self.request("run", {"programs": chunk}).get("observed")
            problem = _shape_problem(answer, chunk)
            if problem:
                self._detach(problem)
                raise AgentError(problem)
            observed += answer
        return observed

    def close(self) -> None:
        if self.channel is not None:
            self.timeout = min(self.timeout, BYE_TIMEOUT)  # a hung agent must not hold us up
            with contextlib.suppress(AgentError, OSError, ValueError):
                self.request("bye", {})
        if self.channel is not None:
            with contextlib.suppress(Exception):
                self.channel.close()
        self.selector.close()


def create(profile: Profile, options: Mapping[str, str]) -> AgentAdapter:
    batch = int(options.get("batch", DEFAULT_BATCH))
    timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
    max_message = int(options.get("max-message", DEFAULT_MAX_MESSAGE))
    token = options.get("token") or os.environ.get(TOKEN_VARIABLE)
    connect: Callable[[], Channel]
    if "command" in options:
        argv = shlex.split(options["command"])
        connect = lambda: _process_channel(argv)  # noqa: E731
    elif "address" in options:
        host, _, port = options["address"].rpartition(":")
        tls = _client_tls(options)
        connect = lambda: _socket_channel(host, int(port), timeout, tls)  # noqa: E731
    else:
        raise UsageError(
            "the agent adapter needs --option command=... or --option address=HOST:PORT"
        )
    return AgentAdapter(connect(), batch, timeout, connect, max_message, token)


def _parse(line: bytes, request_id: int) -> dict[str, Any]:
    """A response that is one JSON object answering `request_id`, or an AgentError saying why not."""
    try:
        response = json.loads(line)
    except ValueError:
        raise AgentError(f"answer is not JSON: {line[:80]!r}") from None
    if not isinstance(response, dict) or not ("result" in response or "error" in response):
        raise AgentError(f"answer is not a response object: {line[:80]!r}")
    if response.get("id") != request_id:
        raise AgentError(f"answer to request {response.get('id')!r} while waiting for {request_id}")
    if "result" in response and not isinstance(response["result"], dict):
        raise AgentError(f"answer's result is not an object: {line[:80]!r}")
    if "error" in response and not isinstance(response["error"], dict):
        raise AgentError(f"answer's error is not an object: {line[:80]!r}")
    return response


def _shape_problem(answer: Any, programs: list[dict[str, Any]]) -> str | None:
    """Why `answer` is not one list of outcome objects per program, one per step; None if it is."""
    if not isinstance(answer, list) or len(answer) != len(programs):
        count = len(answer) if isinstance(answer, list) else "no list of"
        return f"{count} answers for {len(programs)} programs"
    for i, (outcomes, program) in enumerate(zip(answer, programs, strict=True)):
        if not isinstance(outcomes, list) or len(outcomes) != len(program["steps"]):
            return f"program {i}: outcomes do not match its {len(program['steps'])} steps"
        if not all(isinstance(o, dict) for o in outcomes):
            return f"program {i}: an outcome is not an object"
    return None


def _client_tls(options: Mapping[str, str]) -> ssl.SSLContext | None:
    """TLS to the agent when `tls-ca` names the CA that signed its certificate; `tls-cert` and
    `tls-key` are this client's own, for an agent that requires them."""
    if "tls-ca" not in options:
        return None
    context = ssl.create_default_context(cafile=options["tls-ca"])
    if "tls-cert" in options:
        context.load_cert_chain(options["tls-cert"], options.get("tls-key"))
    return context


def _socket_channel(
    host: str, port: int, timeout: float, tls: ssl.SSLContext | None = None
) -> Channel:
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls is not None:
        secure = tls.wrap_socket(sock, server_hostname=host)
        return Channel(
            secure.fileno(),
            lambda: secure.recv(65536),
            secure.sendall,
            secure.close,
            secure.pending,
        )
    return Channel(sock.fileno(), lambda: sock.recv(65536), sock.sendall, sock.close)


def _process_channel(argv: list[str]) -> Channel:
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    def send(data: bytes) -> None:
        try:
            stdin.write(data)
            stdin.flush()
        except BrokenPipeError:
            raise AgentError(f"the agent exited with {process.wait()}") from None

    def stop() -> None:
        with contextlib.suppress(BrokenPipeError):  # an agent that already exited
            stdin.close()
        try:
            process.wait(timeout=BYE_TIMEOUT)  # an agent exits at end of input
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stdout.close()

    return Channel(stdout.fileno(), lambda: os.read(stdout.fileno(), 65536), send, stop)
