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
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from codegen.errors import UsageError
from conformance.adapters import Capabilities
from conformance.agent import PROTOCOL
from conformance.profile import Profile

DEFAULT_BATCH = 256
DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Channel:
    """A byte stream to the agent: a readable descriptor to wait on, and how to use it."""

    fileno: int
    receive: Callable[[], bytes]
    send: Callable[[bytes], None]
    close: Callable[[], None]


class AgentError(Exception):
    """The agent broke the protocol, answered with an error, or did not answer in time."""


class AgentAdapter:
    name = "agent"

    def __init__(self, channel: Channel, batch: int, timeout: float) -> None:
        self.channel = channel
        self.batch = batch
        self.timeout = timeout
        self.ids = itertools.count(1)
        self.selector = selectors.DefaultSelector()
        self.selector.register(channel.fileno, selectors.EVENT_READ)
        self.buffer = b""
        self.hello: dict[str, Any] | None = None

    def _read_line(self) -> bytes:
        while b"\n" not in self.buffer:
            if not self.selector.select(self.timeout):
                raise AgentError(f"agent did not answer within {self.timeout:.0f} s")
            chunk = self.channel.receive()
            if not chunk:
                raise AgentError("agent closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self.ids)
        message = json.dumps(
            {"id": request_id, "method": method, "params": params}, separators=(",", ":")
        )
        self.channel.send(message.encode() + b"\n")
        response = json.loads(self._read_line())
        if response.get("id") != request_id:
            raise AgentError(
                f"answer to request {response.get('id')} while waiting for {request_id}"
            )
        if "error" in response:
            raise AgentError(response["error"].get("message", "unknown error"))
        result: dict[str, Any] = response["result"]
        return result

    def capabilities(self) -> Capabilities:
        """What the agent said in its hello (asked once, on first use)."""
        if self.hello is None:
            self.hello = self.request("hello", {"protocol": PROTOCOL})
            if self.hello.get("protocol") != PROTOCOL:
                raise AgentError(f"agent speaks {self.hello.get('protocol')!r}, not {PROTOCOL}")
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
            answer = self.request("run", {"programs": chunk})["observed"]
            if len(answer) != len(chunk):
                raise AgentError(f"{len(answer)} answers for {len(chunk)} programs")
            observed += answer
        return observed

    def close(self) -> None:
        with contextlib.suppress(AgentError, OSError, ValueError):
            self.request("bye", {})
        self.selector.close()
        self.channel.close()


def create(profile: Profile, options: Mapping[str, str]) -> AgentAdapter:
    batch = int(options.get("batch", DEFAULT_BATCH))
    timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
    if "command" in options:
        return AgentAdapter(_process_channel(shlex.split(options["command"])), batch, timeout)
    if "address" in options:
        host, _, port = options["address"].rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=timeout)
        return AgentAdapter(
            Channel(sock.fileno(), lambda: sock.recv(65536), sock.sendall, sock.close),
            batch,
            timeout,
        )
    raise UsageError("the agent adapter needs --option command=... or --option address=HOST:PORT")


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
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stdout.close()

    return Channel(stdout.fileno(), lambda: os.read(stdout.fileno(), 65536), send, stop)
