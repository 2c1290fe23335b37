"""Inside the guest host: run Debian's QEMU builds (unpacked under /vmm/NAME with their own
loader) on the host's real KVM and drive them over QMP, for the VMM harness outside.

Protocol `kvm-fwspec-vmm/1`, JSON lines over the same virtio-serial port and guard as the
agent: `hello`; `start` {build, args} starts a QEMU (its QMP on a Unix socket of its own,
capabilities negotiated) and answers its id and QMP greeting; `qmp` {vm, execute, arguments}
answers QEMU's `return` or `error`, with the events that came before it; `console` {vm} the
guest's UART output so far; `put-file` / `get-file` {name, data} move a file (base64) in and
out of the work folder; `stop` {vm} ends it and answers its exit status and stderr tail;
`probe-vcpu` {sets, without} makes a vcpu with QEMU's features and answers its register list and
KVM's answer to each SET [id, value]; `bye`.
Stdlib only: this runs on the guest host's minimal Python.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.guest.agent import Method, dispatch, serve_channel
from kvm_fwspec.conformance.guest.kvm_ioctl import KvmHost

PROTOCOL = "kvm-fwspec-vmm/1"
BUILDS = Path("/vmm")
WORK = Path("/tmp/vmm")
QMP_TIMEOUT = 30.0
STDERR_LIMIT = 64 << 10


@dataclass
class RunningVmm:
    process: subprocess.Popen[bytes]
    qmp: socket.socket
    console: Path
    stderr: Path
    buffer: bytes = b""
    events: list[dict[str, Any]] = field(default_factory=list)

    def message(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.qmp.recv(65536)
            if not chunk:
                raise RuntimeError(f"QEMU closed QMP; stderr: {tail(self.stderr)}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        request = {"execute": command} | ({"arguments": arguments} if arguments else {})
        self.qmp.sendall(json.dumps(request).encode() + b"\n")
        while True:
            reply = self.message()
            if "event" in reply:
                self.events.append(reply)
                continue
            return reply


def _work_file(name: str) -> Path:
    """Files move only in and out of the work folder, by plain names."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"'{name}' is not a plain file name")
    return WORK / name


def _connect(sock: socket.socket, path: Path, process: subprocess.Popen[bytes]) -> None:
    """Connect to QEMU's QMP socket once QEMU has made it; the last OSError if QEMU exits
    first or does not make it within QMP_TIMEOUT."""
    deadline = time.monotonic() + QMP_TIMEOUT
    while True:
        try:
            sock.connect(str(path))
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def tail(path: Path, lines: int = 8) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return " | ".join(text.strip().splitlines()[-lines:])


class VmmHost:
    """The QEMUs this guest host runs, by id."""

    def __init__(self) -> None:
        self.running: dict[int, RunningVmm] = {}
        self.next_id = 1
        WORK.mkdir(parents=True, exist_ok=True)

    def builds(self) -> dict[str, list[str]]:
        """Each unpacked build and the argv prefix that starts it with its own loader."""
        found = {}
        for root in sorted(BUILDS.iterdir()) if BUILDS.exists() else []:
            command = json.loads((root / "command.json").read_text())
            found[root.name] = command
        return found

    def start(self, build: str, args: list[str]) -> dict[str, Any]:
        vm = self.next_id
        self.next_id += 1
        qmp_path, console, stderr = (WORK / f"{vm}.{n}" for n in ("qmp", "console", "stderr"))
        argv = [*self.builds()[build], *args, "-qmp", f"unix:{qmp_path},server=on,wait=off",
                "-serial", f"file:{console}"]  # fmt: skip
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=stderr.open("wb"))  # fmt: skip
        sock = socket.socket(socket.AF_UNIX)
        running = RunningVmm(process, sock, console, stderr)
        try:
            _connect(sock, qmp_path, process)
            greeting = running.message()
            running.execute("qmp_capabilities")
        except (
            OSError
        ):  # QEMU exited, or opened its QMP socket then gave up (a setting KVM refused)
            sock.close()
            process.kill()
            raise RuntimeError(
                f"QEMU exited with {process.wait()} before QMP: {tail(stderr)}"
            ) from None
        self.running[vm] = running
        return {"vm": vm, "greeting": greeting}

    def qmp(self, vm: int, execute: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        running = self.running[vm]
        reply = running.execute(execute, arguments)
        events, running.events = running.events, []
        return {"reply": reply, "events": events}

    def console(self, vm: int) -> dict[str, Any]:
        """The UART's bytes so far (base64: the tiny guest writes binary), and whether the
        QEMU is still running."""
        running = self.running[vm]
        data = running.console.read_bytes() if running.console.exists() else b""
        return {"data": base64.b64encode(data).decode(), "running": running.process.poll() is None}

    def put_file(self, name: str, data: str) -> dict[str, Any]:
        """A file from the harness (a guest image, a migration stream) into the work folder."""
        path = _work_file(name)
        path.write_bytes(base64.b64decode(data))
        return {"path": str(path)}

    def get_file(self, name: str) -> dict[str, Any]:
        return {"data": base64.b64encode(_work_file(name).read_bytes()).decode()}

    def stop(self, vm: int) -> dict[str, Any]:
        running = self.running.pop(vm)
        running.qmp.close()
        if running.process.poll() is None:
            running.process.kill()
        status = running.process.wait()
        stderr = running.stderr.read_text(errors="replace") if running.stderr.exists() else ""
        return {"status": status, "stderr": stderr[-STDERR_LIMIT:]}  # QEMU 11 names each register

    def probe_vcpu(self, sets: list[tuple[int, int]], without: list[str]) -> dict[str, Any]:
        """A vcpu made on this host's KVM as QEMU's `-cpu host` makes it (every vcpu feature
        KVM offers), never run, as on an incoming migration: its KVM_GET_REG_LIST, then
        KVM's answer to each SET of `sets` in order, as QEMU restores its register list.
        This names the registers a refused migration stream holds that QEMU's message does
        not. `without` names features QEMU was told to leave out (PSCI 0.2 for PSCI 0.1)."""
        kvm = KvmHost()
        try:
            features = [f for f in kvm.offered_features() if f not in without]
            vm = kvm.create_vm()
            try:
                vcpu = vm.create_vcpu()
                init = vcpu.init(features)
                list_errno, listed = vcpu.reg_list() if init is None else (None, [])
                answers = [vcpu.set_one_reg(i, v) for i, v in sets] if init is None else []
            finally:
                vm.close()
        finally:
            os.close(kvm.fd)
        return {"features": features, "init": init, "list-errno": list_errno,
                "listed": listed, "sets": answers}  # fmt: skip

    def close(self) -> None:
        for vm in list(self.running):
            self.stop(vm)


def respond(host: VmmHost, line: str) -> tuple[dict[str, Any], bool]:
    """One response of the VMM protocol, and whether the client said goodbye."""

    def bye(_: dict[str, Any]) -> dict[str, Any]:
        host.close()
        return {}

    methods: dict[str, Method] = {
        "hello": lambda _: {"protocol": PROTOCOL, "kernel": os.uname().release, "builds": sorted(host.builds())},
        "start": lambda p: host.start(p["build"], [str(a) for a in p["args"]]),
        "qmp": lambda p: host.qmp(int(p["vm"]), p["execute"], p.get("arguments")),
        "console": lambda p: host.console(int(p["vm"])),
        "put-file": lambda p: host.put_file(str(p["name"]), str(p["data"])),
        "get-file": lambda p: host.get_file(str(p["name"])),
        "stop": lambda p: host.stop(int(p["vm"])),
        "probe-vcpu": lambda p: host.probe_vcpu(
            [(int(i), int(v)) for i, v in p["sets"]], [str(f) for f in p.get("without", [])]
        ),
        "bye": bye,
    }  # fmt: skip
    return dispatch(methods, line)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m kvm_fwspec.conformance.guest.vmm_agent")
    parser.add_argument("--channel", required=True, help="the virtio-serial port to serve")
    args = parser.parse_args()
    host = VmmHost()
    try:
        serve_channel(lambda line: respond(host, line), args.channel)
    finally:
        host.close()


if __name__ == "__main__":
    main()
