"""QEMU's save and restore of the tiny guest between real kernels, as QEMU itself does it.

One guest host per kernel stays up for the whole matrix. On a source host QEMU starts the
guest, which reports what it sees in rounds; QEMU stops it between rounds and saves it to a
stream file with QMP. On a target host a fresh QEMU loads that stream with `-incoming defer`
and `migrate-incoming`, and resumes the guest. Beside QEMU's own verdict the lab keeps the
evidence a report needs: the registers the stream carries, what the guest saw before and
after, the registers the target holds after the resume (QEMU saves again there), and the
target KVM's own answer to each register QEMU restores (a vcpu made as QEMU makes it, given
the same SETs), which names the registers QEMU's message does not.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.adapters.agent import AgentAdapter, AgentError
from kvm_fwspec.conformance.analyses.migration_stream import cpregs
from kvm_fwspec.conformance.analyses.vmm_evidence import PSCI_SETTING, Load, Saved
from kvm_fwspec.conformance.lab.qemu import Guest
from kvm_fwspec.conformance.lab.tiny_guest import LOAD_ADDRESS, assemble, observed
from kvm_fwspec.conformance.lab.vmm_host import greet_vmm_host, start_vmm_host

MACHINE = ["-machine", "virt,gic-version=3", "-accel", "kvm", "-cpu", "host", "-m", "64",
           "-display", "none", "-nodefaults",
           "-device", f"loader,file=/tmp/vmm/guest.bin,addr={LOAD_ADDRESS:#x},cpu-num=0"]  # fmt: skip
SETTLE = 60.0  # seconds for rounds to appear or a migration to end, under nested emulation


class Lab:
    """Guest hosts of `kernels` carrying the QEMU `builds`, kept up until closed."""

    def __init__(
        self, kernels: Sequence[str], builds: Sequence[str], calls: Sequence[tuple[int, int]],
        cache: Path,
    ) -> None:  # fmt: skip
        self.calls = list(calls)
        self.image = base64.b64encode(assemble(calls, rounds=0)).decode()
        self.hosts: dict[str, tuple[Guest, AgentAdapter]] = {}
        self.unames: dict[str, str] = {}  # each host's running kernel, from its hello
        try:
            for kernel in kernels:  # started from this thread, booting side by side
                self.hosts[kernel] = start_vmm_host(kernel, cache, tuple(builds))
            with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
                greeted = [
                    pool.submit(greet_vmm_host, c, tuple(builds)) for _, c in self.hosts.values()
                ]
            for kernel, greeting in zip(self.hosts, greeted, strict=True):
                self.unames[kernel] = str(greeting.result()["kernel"])
            for kernel in kernels:
                self._client(kernel).request("put-file", {"name": "guest.bin", "data": self.image})
        except BaseException:
            self.close()
            raise

    def _client(self, kernel: str) -> AgentAdapter:
        return self.hosts[kernel][1]

    def save(self, kernel: str, build: str, setting: str | None = None) -> Saved:
        """Start the guest on `kernel` (with QEMU's PSCI version `setting`, if any), let it
        report twice, stop it between rounds and save it."""
        client = self._client(kernel)
        started = client.request("start", {"build": build, "args": machine(setting)})
        vm = started["vm"]
        try:
            version = started["greeting"]["QMP"]["version"]["qemu"]
            properties = _properties(client, vm)
            before = self._rounds(client, vm, 2)[-1]
            stream = _save(client, vm, "saved")
        finally:
            client.request("stop", {"vm": vm})
        probe = self._probe(kernel, setting, [])
        return Saved(kernel, self.unames[kernel], build, setting,
                     f"{version['major']}.{version['minor']}.{version['micro']}", before,
                     cpregs(stream), sorted(probe["listed"]), probe["features"], properties,
                     stream)  # fmt: skip

    def load(self, saved: Saved, target: str) -> Load:
        """Load `saved` on `target` as an incoming migration; resume and save again if QEMU
        accepts it; then ask the target's KVM about each register QEMU had to restore."""
        client = self._client(target)
        data = base64.b64encode(saved.stream).decode()
        client.request("put-file", {"name": "incoming", "data": data})
        args = [*machine(saved.setting), "-incoming", "defer"]  # the source's configuration
        completed, after, held = False, None, None
        try:
            vm = client.request("start", {"build": saved.build, "args": args})["vm"]
        except AgentError as exc:  # QEMU would not even start with the source's setting
            return self._refused(saved, target, str(exc))
        try:
            _qmp(client, vm, "migrate-incoming", {"uri": "exec:cat /tmp/vmm/incoming"})
            try:
                completed = _migration_done(client, vm).get("status") == "completed"
            except AgentError:
                completed = False  # QEMU exits when an incoming migration fails
            if completed:
                _qmp(client, vm, "cont", None)
                after = self._rounds(client, vm, 1)[0]
                held = cpregs(_save(client, vm, "resaved"))
        finally:
            stopped = client.request("stop", {"vm": vm})
        if completed:
            listed, answers = self._answers(saved, target)
            return Load(saved, target, True, "", after, held, listed, answers)
        return self._refused(saved, target, stopped["stderr"])

    def _refused(self, saved: Saved, target: str, error: str) -> Load:
        listed, answers = self._answers(saved, target)
        return Load(saved, target, False, error, None, None, listed, answers)

    def _answers(self, saved: Saved, target: str) -> tuple[list[int], dict[int, str | None]]:
        """The target KVM's list for QEMU's vcpu, and its answer to each saved register."""
        sets = sorted(saved.registers.items())
        probe = self._probe(target, saved.setting, sets)
        return sorted(probe["listed"]), {i: probe["sets"][n] for n, (i, _) in enumerate(sets)}

    def _probe(
        self, kernel: str, setting: str | None, sets: list[tuple[int, int]]
    ) -> dict[str, Any]:
        """The VMM agent's probe-vcpu on `kernel`, for a vcpu as QEMU makes it with `setting`."""
        arguments = {"sets": [list(s) for s in sets], "without": _without(setting)}
        probe: dict[str, Any] = self._client(kernel).request("probe-vcpu", arguments)
        if probe["init"] or probe["list-errno"]:
            raise AgentError(f"a vcpu as QEMU makes it could not be made on {kernel}: {probe}")
        return probe

    def _rounds(self, client: AgentAdapter, vm: int, wanted: int) -> list[list[int]]:
        """At least `wanted` whole rounds of answers the guest wrote since it (re)started."""
        deadline = time.monotonic() + SETTLE
        while True:
            uart = base64.b64decode(client.request("console", {"vm": vm})["data"])
            rounds = observed(uart, len(self.calls))
            if len(rounds) >= wanted:
                return rounds
            if time.monotonic() > deadline:
                raise AgentError(f"the guest wrote {len(rounds)} rounds in {SETTLE:.0f} s")
            time.sleep(0.2)

    def close(self) -> None:
        for _, client in self.hosts.values():
            client.close()  # closing the client stops its guest host
        self.hosts.clear()


def machine(setting: str | None) -> list[str]:
    """QEMU's arguments for the tiny guest; `setting` is QEMU 11's kvm-psci-version."""
    cpu = "host" if setting is None else f"host,{PSCI_SETTING}={setting}"
    return [cpu if a == "host" else a for a in MACHINE]


def _without(setting: str | None) -> list[str]:
    """The vcpu features QEMU leaves out for `setting`: PSCI 0.1 is a vcpu without PSCI 0.2."""
    return ["psci-0.2"] if setting == "0.1" else []


def _qmp(client: AgentAdapter, vm: int, command: str, arguments: dict[str, Any] | None) -> Any:
    reply = client.request("qmp", {"vm": vm, "execute": command, "arguments": arguments})["reply"]
    if "error" in reply:
        raise AgentError(f"QMP {command}: {reply['error'].get('desc')}")
    return reply["return"]


def _save(client: AgentAdapter, vm: int, name: str) -> bytes:
    """Stop the guest and save it to the work file `name`, as `migrate` to a file does."""
    _qmp(client, vm, "stop", None)
    _qmp(client, vm, "migrate", {"uri": f"exec:cat > /tmp/vmm/{name}"})
    saved = _migration_done(client, vm)
    if saved.get("status") != "completed":
        raise AgentError(f"QEMU could not save the guest: {saved}")
    return base64.b64decode(client.request("get-file", {"name": name})["data"])


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


def _properties(client: AgentAdapter, vm: int) -> dict[str, str]:
    """Every QOM property of QEMU's machine and of the `-cpu host` type, with its description:
    where a setting for the PSCI version or the hypercall bitmaps would be, if QEMU offered
    one, and the values it takes."""
    found = {f"machine.{p['name']}": p.get("description", "")
             for p in _qmp(client, vm, "qom-list", {"path": "/machine"})}  # fmt: skip
    arguments = {"typename": "host-arm-cpu"}
    for p in _qmp(client, vm, "qom-list-properties", arguments):
        found[f"cpu.{p['name']}"] = p.get("description", "")
    return dict(sorted(found.items()))
