"""The client side of the agent protocol: certify any implementation that speaks it.

Options: `command=...` starts the agent and talks over its stdin/stdout; `address=HOST:PORT`
connects over TCP. Programs travel in batches (`batch=N`, default 256) so one round trip
carries many operations; requests are answered in order. Every option is checked when the
adapter is created, before any agent starts; the agent itself starts on the first request.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from kvm_fwspec.conformance.adapters import (
    AdapterError,
    Capabilities,
    refuse_unknown_options,
    seconds_option,
    whole_number_option,
)
from kvm_fwspec.conformance.guest.agent_guard import TOKEN_VARIABLE
from kvm_fwspec.conformance.guest.wire import (
    PROTOCOL_V1,
    PROTOCOLS,
    WireError,
    decode_outcome,
    encode_program,
    from_hex,
    to_hex,
)
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec.errors import UsageError

if TYPE_CHECKING:
    import ssl

PROTOCOL = PROTOCOLS[0]  # what the client offers; it also speaks every older one in PROTOCOLS
DEFAULT_BATCH = 256
DEFAULT_TIMEOUT = 120.0
BYE_TIMEOUT = 2.0  # for bye, and for an agent to exit once its input ends; then it is killed
# A freshly started agent's hello waits at least this long: starting a process and importing
# its code is not the implementation's answer time, and a loaded machine stretches it.
START_TIMEOUT = 60.0
DEFAULT_MAX_MESSAGE = 64 << 20  # an answer to 256 programs is well under 1 MiB
# A hung implementation hangs again in the fresh agent that replaces it: after this many
# timeouts in a row (or faults of any kind, each costing an agent start) the remaining
# requests fail at once instead of each being waited out.
TIMEOUTS_IN_A_ROW = 2
FAULTS_IN_A_ROW = 5
STDERR_LINES = 5  # of an agent's standard error, quoted when it fails
STDERR_WIDTH = 300  # characters kept of each of those lines


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
    # Why the other end is gone, once it closed the stream: "agent exited with status 1:
    # FATAL: ..."; None where the channel cannot tell (a socket).
    ended: Callable[[], str | None] = lambda: None
    # The last lines of the agent's standard error, "" where there are none to quote.
    stderr_tail: Callable[[], str] = lambda: ""


class AgentError(AdapterError):
    """The agent broke the protocol, answered with an error, or did not answer in time."""


class AgentTimeout(AgentError):
    """The agent did not answer within its time limit."""


class AgentAdapter:
    """A client that survives a faulty agent: any broken answer (none in time, garbage, too
    long, cut short, for another request) ends that connection and is the error of the cases
    that request carried. With `reconnect` (an agent the client starts or dials), the next
    request gets a fresh agent, so the other cases still run, until the agent has timed out
    twice in a row (or failed FAULTS_IN_A_ROW requests in a row): then, as without `reconnect`
    (a booted guest), the next requests fail at once with the reason instead of each waiting
    it out."""

    name = "agent"

    def __init__(
        self,
        channel: Channel | None,
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
        self.given_up: str | None = None
        self.hello: dict[str, Any] | None = None
        self.protocol: str | None = None  # the version this connection's hello settled
        self.timeouts_in_a_row = 0
        self.faults_in_a_row = 0
        self.first_fault: str | None = None  # of the current run of faults
        self.agents_started = 0
        if channel is not None:
            self._attach(channel)

    def _attach(self, channel: Channel) -> None:
        self.channel = channel
        self.protocol = None
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
                tail = channel.stderr_tail()
                said = f" (its stderr ends: {tail})" if tail else ""
                raise AgentTimeout(f"agent did not answer within {limit:g} s{said}")
            chunk = channel.receive()
            if not chunk:
                cut = f" after {len(self.buffer)} bytes of an answer" if self.buffer else ""
                raise AgentError(f"{channel.ended() or 'agent closed the connection'}{cut}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        if len(line) > self.max_message:
            raise AgentError(f"answer longer than {self.max_message} bytes")
        return line

    def _connected(self) -> Channel:
        if self.channel is not None:
            return self.channel
        if self.given_up is not None:
            raise AgentError(self.given_up)
        if self.reconnect is None:
            raise AgentError(f"agent unusable after an earlier fault: {self.fault}")
        try:
            channel = self.reconnect()
        except (OSError, AgentError) as exc:
            self._count_fault(f"cannot start or reach the agent: {exc}", timeout=False)
            raise AgentError(f"cannot start or reach the agent: {exc}") from None
        self.agents_started += 1
        self._attach(channel)
        if self.hello is not None:  # a fresh agent must say again what it is
            self._check_hello(self.request("hello", self._hello_params()))
        return self._connected()

    def _count_fault(self, why: str, timeout: bool) -> None:
        """Note a fault; after too many in a row, give up on the agent for the rest of the run."""
        self.first_fault = self.first_fault or why
        self.faults_in_a_row += 1
        self.timeouts_in_a_row = self.timeouts_in_a_row + 1 if timeout else 0
        if self.timeouts_in_a_row >= TIMEOUTS_IN_A_ROW:
            self.given_up = (
                f"not run: the agent timed out {_times(self.timeouts_in_a_row)} in a row "
                f"({self.first_fault})"
            )
        elif self.faults_in_a_row >= FAULTS_IN_A_ROW:
            self.given_up = (
                f"not run: the agent failed {self.faults_in_a_row} requests in a row "
                f"({self.first_fault})"
            )

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
            self._count_fault(str(exc), timeout=isinstance(exc, AgentTimeout))
            raise (AgentTimeout if isinstance(exc, AgentTimeout) else AgentError)(
                str(exc)
            ) from None
        if method != "hello":  # a fresh agent's hello proves little: a hung one answers it too
            self.timeouts_in_a_row = self.faults_in_a_row = 0
            self.first_fault = None
        if "error" in response:  # the agent refused this request and keeps serving
            raise AgentError(str(response["error"].get("message", "unknown error")))
        result: dict[str, Any] = response["result"]
        return result

    def _hello_params(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL} | ({"token": self.token} if self.token else {})

    def _check_hello(self, hello: dict[str, Any]) -> dict[str, Any]:
        """The hello of a protocol version this client speaks, which the connection then uses."""
        spoken = hello.get("protocol")
        if spoken not in PROTOCOLS:
            why = f"agent speaks {spoken!r}, not {' or '.join(PROTOCOLS)}"
            self._detach(why)
            self._count_fault(why, timeout=False)
            raise AgentError(why)
        problem = _hello_problem(hello)
        if problem:
            self._detach(problem)
            self._count_fault(problem, timeout=False)
            raise AgentError(problem)
        self.protocol = spoken
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
            cpu=_cpu(self.hello.get("cpu")),
            kvm_capabilities=self.hello.get("kvm-capabilities"),
        )

    def describe(self) -> dict[str, str]:
        """Provenance the results should carry beyond the hello (the booted kernel package)."""
        return {}

    def run_programs(self, programs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        self.capabilities()  # the version to write the programs in
        observed: list[list[dict[str, Any]]] = []
        for start in range(0, len(programs), self.batch):
            chunk = programs[start : start + self.batch]
            channel = self._connected()  # a fresh agent's hello settles its version first
            protocol = self.protocol or PROTOCOL_V1
            wire = [encode_program(program, protocol) for program in chunk]
            answer: Any = self.request("run", {"programs": wire}).get("observed")
            problem = _shape_problem(answer, chunk)
            if problem:
                if self.channel is channel:
                    self._detach(problem)
                self._count_fault(problem, timeout=False)
                raise AgentError(problem)
            observed += [[_decoded(o, protocol) for o in outcomes] for outcomes in answer]
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


def _hello_problem(hello: dict[str, Any]) -> str | None:
    """Why a hello's fields are not of the types docs/agent-protocol.md gives; None if they are."""
    for key in ("implementation", "arch"):
        if key in hello and not isinstance(hello[key], str):
            return f"the agent's hello: {key} {hello[key]!r} is not a string"
    if hello.get("kernel") is not None and not isinstance(hello["kernel"], str):
        return f'the agent\'s hello: kernel {hello["kernel"]!r} is not a string such as "6.12"'
    features = hello.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        return f"the agent's hello: features {features!r} is not an array of strings"
    levels = hello.get("host-levels", {})
    if not isinstance(levels, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in levels.values()
    ):
        return f"the agent's hello: host-levels {levels!r} is not an object of integers"
    cpu = hello.get("cpu")
    cpu_problem = None if cpu is None else _cpu_problem(cpu)
    if cpu_problem:
        return f"the agent's hello: cpu {cpu!r} {cpu_problem}"
    capabilities = hello.get("kvm-capabilities")
    if capabilities is not None and not (
        isinstance(capabilities, dict) and all(_is_count(v) for v in capabilities.values())
    ):
        return (
            f"the agent's hello: kvm-capabilities {capabilities!r} is not an object of "
            "integers from 0"
        )
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _cpu_problem(cpu: Any) -> str | None:
    """Why a hello's `cpu` is not {"midr": HEX, "revidr": HEX or null}; None if it is."""
    if not isinstance(cpu, dict):
        return 'is not an object such as {"midr": "0x410fd0c1", "revidr": "0x0"}'
    for key in ("midr", "revidr"):
        value = cpu.get(key)
        if key == "revidr" and value is None:
            continue  # absent or null: the agent could not read it
        try:
            from_hex(value)
        except WireError:
            return f'has a {key} of {value!r}, not a hex string such as "0x410fd0c1"'
    return None


def _cpu(cpu: Any) -> dict[str, str | None] | None:
    """A checked hello's `cpu`, its registers written as the fingerprint writes numbers."""
    if cpu is None:
        return None
    revidr = cpu.get("revidr")
    return {
        "midr": to_hex(from_hex(cpu["midr"])),
        "revidr": None if revidr is None else to_hex(from_hex(revidr)),
    }


def _times(count: int) -> str:
    return {2: "twice"}.get(count, f"{count} times")


def _decoded(outcome: dict[str, Any], protocol: str) -> dict[str, Any]:
    """An outcome with integers for its numbers; one written against the connection's version
    is that step's error, naming the field, while the connection itself stays usable."""
    try:
        return decode_outcome(outcome, protocol)
    except WireError as exc:
        return {
            "error": f"the agent's outcome {json.dumps(outcome)[:120]} breaks {protocol}: {exc}"
        }


OPTIONS = {
    "command": "start the agent with this command line and talk over its stdin/stdout",
    "address": "connect to an agent listening on HOST:PORT",
    "batch": "programs per request (default 256)",
    "timeout": "seconds to wait for each answer (default 120)",
    "max-message": "longest answer in bytes (default 64 MiB)",
    "token": f"the agent's shared token (default ${TOKEN_VARIABLE})",
    "tls-ca": "connect with TLS, trusting this CA's certificate file (address= only)",
    "tls-cert": "this client's certificate file, for mutual TLS (with tls-ca)",
    "tls-key": "the private key of tls-cert",
}


def check_options(options: Mapping[str, str]) -> None:
    """Every option the agent adapter is given, checked before any agent starts: a UsageError
    of one line naming the first wrong one."""
    refuse_unknown_options("agent", options, OPTIONS)
    whole_number_option(options, "batch", DEFAULT_BATCH)
    whole_number_option(options, "max-message", DEFAULT_MAX_MESSAGE)
    seconds_option(options, "timeout", DEFAULT_TIMEOUT)
    if "command" in options and "address" in options:
        raise UsageError("give the agent adapter command= or address=, not both")
    if "command" in options:
        _program(options["command"])
        for key in ("tls-ca", "tls-cert", "tls-key"):
            if key in options:
                raise UsageError(
                    f"option {key} is for address=: an agent on stdin/stdout has no TLS"
                )
    elif "address" in options:
        _address(options["address"])
        for key in ("tls-cert", "tls-key"):
            if key in options and "tls-ca" not in options:
                raise UsageError(
                    f"option {key} needs tls-ca, the CA that signed the agent's certificate"
                )
        if "tls-key" in options and "tls-cert" not in options:
            raise UsageError("option tls-key needs tls-cert, the certificate it belongs to")
        _client_tls(options)
    else:
        raise UsageError(
            "the agent adapter needs --option command=... or --option address=HOST:PORT"
        )


def _program(command: str) -> list[str]:
    """The argv of `command`, whose program exists and may be executed."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"option command={command}: {str(exc).lower()}") from None
    if not argv:
        raise UsageError("option command= is empty: give the agent's command line")
    program = argv[0]
    if os.sep in program:
        if not os.path.isfile(program):
            why = "is a directory" if os.path.isdir(program) else "does not exist"
            raise UsageError(f"option command=: the program {program} {why}")
        if not os.access(program, os.X_OK):
            raise UsageError(f"option command=: the program {program} is not executable")
    elif shutil.which(program) is None:
        raise UsageError(f"option command=: no program '{program}' on PATH")
    return argv


def _address(address: str) -> tuple[str, int]:
    """HOST:PORT (or [IPV6]:PORT) with a port from 1 to 65535."""
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        raise UsageError(f"option address={address}: need HOST:PORT, such as 127.0.0.1:7777")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(
            f"option address={address}: the port '{port}' is not a number from 1 to 65535"
        )
    return host.removeprefix("[").removesuffix("]"), int(port)


def create(profile: Profile, options: Mapping[str, str]) -> AgentAdapter:
    """The adapter, its options checked; the agent starts (or is dialled) on the first request."""
    check_options(options)
    batch = whole_number_option(options, "batch", DEFAULT_BATCH)
    timeout = seconds_option(options, "timeout", DEFAULT_TIMEOUT)
    max_message = whole_number_option(options, "max-message", DEFAULT_MAX_MESSAGE)
    token = options.get("token") or os.environ.get(TOKEN_VARIABLE)
    connect: Callable[[], Channel]
    if "command" in options:
        argv = _program(options["command"])
        connect = lambda: _process_channel(argv)  # noqa: E731
    else:
        host, port = _address(options["address"])
        tls = _client_tls(options)
        connect = lambda: _socket_channel(host, port, timeout, tls)  # noqa: E731
    return AgentAdapter(None, batch, timeout, connect, max_message, token)


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
    `tls-key` are this client's own, for an agent that requires them. The ssl module is loaded
    only then: a minimal arm64 host without OpenSSL's library (as the lab's guests are) runs
    every command that needs no TLS."""
    if "tls-ca" not in options:
        return None
    try:
        import ssl
    except ImportError as exc:
        raise UsageError(
            f"option tls-ca: TLS needs Python's ssl module, which cannot load here ({exc})"
        ) from None
    for key in ("tls-ca", "tls-cert", "tls-key"):
        if key in options and not os.path.isfile(options[key]):
            raise UsageError(f"option {key}={options[key]}: no such file")
    try:
        context = ssl.create_default_context(cafile=options["tls-ca"])
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"option tls-ca={options['tls-ca']}: {_tls_problem(exc)}") from None
    if "tls-cert" in options:
        try:
            context.load_cert_chain(options["tls-cert"], options.get("tls-key"))
        except (ssl.SSLError, OSError) as exc:
            raise UsageError(
                f"option tls-cert={options['tls-cert']}: {_tls_problem(exc)}"
            ) from None
    return context


def _tls_problem(exc: OSError) -> str:
    import ssl  # loaded already: only TLS setup gets here

    if isinstance(exc, ssl.SSLError):  # OpenSSL's reason is often bare ("PEM lib") or absent
        return f"not a PEM file TLS can use ({exc.reason or 'no usable certificate or key in it'})"
    return exc.strerror or str(exc)


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


class _StderrTail:
    """The last lines an agent wrote to its standard error, kept by a thread that drains the
    pipe, so the agent never blocks on a full pipe and an endless line costs no memory. Not
    passed through to the terminal: certify's output stays its own, and the lines that matter
    reach the reasons of the cases the agent's failure affected."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.lock = threading.Lock()  # the drain thread appends while a fault reads
        self.thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self.thread.start()

    def _drain(self, pipe: IO[bytes]) -> None:
        with pipe:
            line, skipping = b"", False
            while chunk := os.read(pipe.fileno(), 65536):
                *complete, rest = chunk.split(b"\n")
                for piece in complete:
                    if not skipping:
                        self._keep(line + piece)
                    line, skipping = b"", False
                if not skipping:
                    line += rest
                    if len(line) > STDERR_WIDTH:  # keep its start, drop the rest of the line
                        self._keep(line)
                        line, skipping = b"", True
            if line:
                self._keep(line)

    def _keep(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").strip()
        if text:
            with self.lock:
                self.lines.append(text[:STDERR_WIDTH] + ("..." if len(text) > STDERR_WIDTH else ""))

    def text(self) -> str:
        with self.lock:
            return " | ".join(self.lines)

    def finish(self, timeout: float) -> str:
        """The last lines once the agent has exited (and its stderr has been read to its end)."""
        self.thread.join(timeout)
        return self.text()


def _exit_status(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"agent was killed by {signal.Signals(-status).name}"
        return f"agent was killed by signal {-status}"
    return f"agent exited with status {status}"


def _process_channel(argv: list[str]) -> Channel:
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    stdin, stdout = process.stdin, process.stdout
    stderr = _StderrTail(process.stderr)

    def ended() -> str:
        """Why the agent closed its output: its exit status and the last of its stderr."""
        try:
            status = process.wait(timeout=BYE_TIMEOUT)
        except subprocess.TimeoutExpired:
            tail = stderr.text()
            return "agent closed its output but is still running" + (f": {tail}" if tail else "")
        tail = stderr.finish(BYE_TIMEOUT)
        return _exit_status(status) + (f": {tail}" if tail else "")

    def send(data: bytes) -> None:
        try:
            stdin.write(data)
            stdin.flush()
        except BrokenPipeError:
            raise AgentError(ended()) from None

    def stop() -> None:
        with contextlib.suppress(BrokenPipeError):  # an agent that already exited
            stdin.close()
        try:
            process.wait(timeout=BYE_TIMEOUT)  # an agent exits at end of input
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stdout.close()
        stderr.finish(BYE_TIMEOUT)

    return Channel(
        stdout.fileno(),
        lambda: os.read(stdout.fileno(), 65536),
        send,
        stop,
        ended=ended,
        stderr_tail=stderr.text,
    )
