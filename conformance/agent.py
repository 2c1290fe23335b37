"""The agent side of the agent protocol: serve an implementation over JSON lines.

`kvm-fwspec agent --impl reference --kernel 6.12 --host mitigated` answers on stdin/stdout;
with `--listen HOST:PORT` it answers TCP connections instead, one at a time. Stdlib only, so
the same agent can run inside a minimal guest. The protocol is documented in
docs/agent-protocol.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socketserver
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from conformance.program import Implementation, execute

PROTOCOL = "kvm-fwspec-agent/1"


@dataclass(frozen=True)
class Served:
    """An implementation with the description the agent gives in its hello."""

    implementation: Implementation
    hello: dict[str, Any]


def serve_stream(served: Served, reader: IO[str], writer: IO[str]) -> None:
    """Answer requests line by line until `bye` or end of input."""
    for line in reader:
        if not line.strip():
            continue
        response, done = answer(served, line)
        writer.write(json.dumps(response, separators=(",", ":")) + "\n")
        writer.flush()
        if done:
            return


def answer(served: Served, line: str) -> tuple[dict[str, Any], bool]:
    """One response, and whether the client said goodbye."""
    try:
        request = json.loads(line)
        request_id = request.get("id")
        method = request["method"]
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        return {"id": None, "error": {"message": f"malformed request: {exc}"}}, False
    try:
        if method == "hello":
            return {"id": request_id, "result": {"protocol": PROTOCOL, **served.hello}}, False
        if method == "run":
            programs = request["params"]["programs"]
            observed = [execute(served.implementation, program) for program in programs]
            return {"id": request_id, "result": {"observed": observed}}, False
        if method == "bye":
            return {"id": request_id, "result": {}}, True
        return {"id": request_id, "error": {"message": f"unknown method '{method}'"}}, False
    except Exception as exc:  # a protocol error, not an agent crash
        return {"id": request_id, "error": {"message": f"{type(exc).__name__}: {exc}"}}, False


def serve_tcp(
    served: Served, host: str, port: int, ready: Callable[[int], None] | None = None
) -> None:
    """Serve one connection at a time on host:port (port 0 picks one; `ready` learns it)."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            reader = _TextLines(self.rfile)
            writer = _TextWriter(self.wfile)
            serve_stream(served, reader, writer)  # type: ignore[arg-type]

    with socketserver.TCPServer((host, port), Handler) as server:
        if ready is not None:
            ready(server.server_address[1])
        server.serve_forever()


class _TextLines:
    """Iterate UTF-8 lines of a binary socket file."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def __iter__(self) -> Any:
        for line in self.raw:
            yield line.decode("utf-8")


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


def reference_served(options: Mapping[str, str]) -> Served:
    from reference_impl.kvm import ReferenceKvm

    kvm = ReferenceKvm(options["kernel"], options["host"], options.get("arch", "arm64"))
    hello = {
        "implementation": "kvm-fwspec reference",
        "kernel": options["kernel"],
        "arch": kvm.arch,
        "features": ["guest-calls", "psci-0.1-vcpus"],
    }
    return Served(kvm, hello)


def kvm_served(options: Mapping[str, str]) -> Served:
    """Real KVM on this machine: what it is, and the host levels its workarounds report."""
    from conformance.kvm_ioctl import KvmHost, host_levels

    host = KvmHost(options.get("device", "/dev/kvm"))
    hello = {
        "implementation": f"Linux KVM {os.uname().release}",
        "kernel": host.release(),
        "arch": "arm64",
        "features": ["guest-calls", "psci-0.1-vcpus"],
        "host-levels": host_levels(host),
    }
    return Served(host, hello)


IMPLEMENTATIONS: dict[str, Callable[[Mapping[str, str]], Served]] = {
    "reference": reference_served,
    "kvm": kvm_served,
}


def run_agent(
    impl: str, options: Mapping[str, str], listen: str | None, channel: str | None = None
) -> None:
    """Serve `impl` on stdin/stdout, on a character device (a virtio-serial port), or on TCP."""
    served = IMPLEMENTATIONS[impl](options)
    if channel is not None:
        # One descriptor for both directions: a virtio-serial port can be open only once.
        fd = os.open(channel, os.O_RDWR)
        with io.BufferedReader(io.FileIO(fd, "r", closefd=False), 1 << 16) as reader:
            serve_stream(served, _TextLines(reader), _TextWriter(io.FileIO(fd, "w")))  # type: ignore[arg-type]
        return
    if listen is None:
        serve_stream(served, sys.stdin, sys.stdout)
        return
    host, _, port = listen.rpartition(":")
    serve_tcp(
        served,
        host or "127.0.0.1",
        int(port),
        lambda p: print(f"listening on {host}:{p}", flush=True),
    )


def main() -> None:
    """Entry point without the rest of kvm-fwspec, for a minimal guest: python3 -m conformance.agent."""
    parser = argparse.ArgumentParser(prog="python3 -m conformance.agent")
    parser.add_argument("--impl", default="kvm", choices=sorted(IMPLEMENTATIONS))
    parser.add_argument(
        "--channel", default=None, help="character device to serve on (a virtio-serial port)"
    )
    parser.add_argument("--listen", default=None, metavar="HOST:PORT")
    args = parser.parse_args()
    run_agent(args.impl, {}, args.listen, args.channel)


if __name__ == "__main__":
    main()
