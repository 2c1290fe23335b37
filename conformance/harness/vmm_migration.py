"""One migration of the tiny guest by a real QEMU between two real kernels: started on a guest
host of the source kernel, stopped between rounds, saved to a stream file with QMP, carried
out through the VMM agent, loaded with `-incoming` on a fresh guest host of the target
kernel, and resumed. What the guest saw before and after, and QEMU's own verdict, are kept.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.adapters.agent import AgentAdapter, AgentError
from conformance.harness.tiny_guest import LOAD_ADDRESS, assemble, observed
from conformance.harness.vmm import boot_vmm_host

MACHINE = ["-machine", "virt,gic-version=3", "-accel", "kvm", "-cpu", "host", "-m", "64",
           "-display", "none", "-nodefaults",
           "-device", f"loader,file=/tmp/vmm/guest.bin,addr={LOAD_ADDRESS:#x},cpu-num=0"]  # fmt: skip
SETTLE = 60.0  # seconds for rounds to appear or a migration to end, under nested emulation


@dataclass(frozen=True)
class Migration:
    source: str
    target: str
    build: str
    before: list[int]  # what the guest saw on the source (its last whole round)
    completed: bool  # whether the target QEMU loaded the stream and resumed the guest
    qemu_error: str  # QEMU's own words when it did not
    after: list[int] | None  # what the guest saw on the target, if it ran there
    stream_bytes: int


def migrate(
    source: str, target: str, build: str, calls: Sequence[tuple[int, int]], cache: Path
) -> Migration:
    image = base64.b64encode(assemble(calls, rounds=0)).decode()
    _, client = boot_vmm_host(source, cache, (build,))
    try:
        client.request("put-file", {"name": "guest.bin", "data": image})
        vm = client.request("start", {"build": build, "args": MACHINE})["vm"]
        before = _rounds(client, vm, len(calls), 2)[-1]
        client.request("qmp", {"vm": vm, "execute": "stop"})
        _qmp(client, vm, "migrate", {"uri": "exec:cat > /tmp/vmm/stream"})
        saved = _migration_done(client, vm)
        if saved.get("status") != "completed":
            raise AgentError(f"saving on {source} failed: {saved}")
        stream = client.request("get-file", {"name": "stream"})["data"]
        client.request("stop", {"vm": vm})
    finally:
        client.close()
    _, client = boot_vmm_host(target, cache, (build,))
    try:
        client.request("put-file", {"name": "guest.bin", "data": image})
        client.request("put-file", {"name": "stream", "data": stream})
        vm = client.request("start", {"build": build, "args": [*MACHINE, "-incoming", "defer"]})[
            "vm"
        ]
        _qmp(client, vm, "migrate-incoming", {"uri": "exec:cat /tmp/vmm/stream"})
        try:
            loaded = _migration_done(client, vm)
        except AgentError:
            loaded = {"status": "failed"}  # QEMU exits when an incoming migration fails
        if loaded.get("status") != "completed":
            stopped = client.request("stop", {"vm": vm})
            return Migration(source, target, build, before, False, stopped["stderr"], None,
                             len(base64.b64decode(stream)))  # fmt: skip
        _qmp(client, vm, "cont", None)
        after = _rounds(client, vm, len(calls), 1)[0]
        client.request("stop", {"vm": vm})
        return Migration(
            source, target, build, before, True, "", after, len(base64.b64decode(stream))
        )
    finally:
        client.close()


def _qmp(client: AgentAdapter, vm: int, command: str, arguments: dict[str, Any] | None) -> Any:
    reply = client.request("qmp", {"vm": vm, "execute": command, "arguments": arguments})["reply"]
    if "error" in reply:
        raise AgentError(f"QMP {command}: {reply['error'].get('desc')}")
    return reply["return"]


def _migration_done(client: AgentAdapter, vm: int) -> dict[str, Any]:
    deadline = time.monotonic() + SETTLE
    while True:
        state: dict[str, Any] = _qmp(client, vm, "query-migrate", None)
        if (
            state.get("status") in ("completed", "failed", "cancelled")
            or time.monotonic() > deadline
        ):
            return state
        time.sleep(0.1)


def _rounds(client: AgentAdapter, vm: int, calls: int, wanted: int) -> list[list[int]]:
    """At least `wanted` whole rounds of answers the guest has written since it (re)started."""
    deadline = time.monotonic() + SETTLE
    while True:
        uart = base64.b64decode(client.request("console", {"vm": vm})["data"])
        rounds = observed(uart, calls)
        if len(rounds) >= wanted:
            return rounds
        if time.monotonic() > deadline:
            raise AgentError(f"the guest wrote {len(rounds)} rounds in {SETTLE:.0f} s")
        time.sleep(0.2)
