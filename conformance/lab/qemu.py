"""Boot an arm64 Debian kernel under qemu-system-aarch64 with emulated EL2, so that it brings
up KVM itself, and reach the agent in its initramfs over virtio-serial.

The PL011 console carries only the boot log (it drops bytes under load); requests and answers
go over a virtio-serial port backed by a Unix socket.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from kvm_fwspec.conformance.adapters.agent import AgentError, Channel
from kvm_fwspec.conformance.lab.kernels import Kernel

QEMU = "qemu-system-aarch64"
BOOT_TIMEOUT = 120.0


class GuestError(Exception):
    """The guest did not come up or went away; the message ends with its console's last lines."""


def _die_with_parent() -> None:
    """In the child before QEMU starts: the kernel kills QEMU if kvm-fwspec dies, however it
    dies (Ctrl-C, SIGKILL, a crash), so no guest outlives the run. SIGINT, blocked in the
    parent while it forks, is QEMU's again."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


_RUNNING: set[Guest] = set()  # guests started and not yet stopped, for the exit hook


@atexit.register
def _stop_leftovers() -> None:
    """A Ctrl-C between a guest's start and the code that would stop it (an adapter not yet
    built around it) still leaves no QEMU: the run reaps it on its way out."""
    for guest in list(_RUNNING):
        guest.process.kill()  # Popen's kill: never signals a pid already reaped and reused
        guest.process.wait()
        shutil.rmtree(guest.workdir, ignore_errors=True)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Guest:
    """One running QEMU with a real KVM host inside."""

    def __init__(
        self, kernel: Kernel, initramfs: Path, cpus: int = 1, memory_mib: int = 2048
    ) -> None:
        if shutil.which(QEMU) is None:
            raise GuestError(f"{QEMU} is not installed (Debian package qemu-system-arm)")
        # One vCPU: under TCG a second one made the guest slower (562 cases of 6.12 in 7.1 s
        # with two, 4.0 s with one; boot 3.1 s vs 2.7 s), and lets lines run side by side.
        self.kernel = kernel
        self.workdir = Path(tempfile.mkdtemp(prefix="kvm-fwspec-guest-"))
        self.socket_path = self.workdir / "agent.sock"
        self.console = self.workdir / "console.log"
        self.started = time.monotonic()
        # A Ctrl-C inside Popen, after the fork, would leave a QEMU this object never knew;
        # held until Popen returns, it lands in the try below, which ends that QEMU.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.process = self._start_qemu(kernel, initramfs, cpus, memory_mib)
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            raise
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            self.sock = self._connect()
        except BaseException:  # Ctrl-C or a guest that never came up: no QEMU left behind
            self.process.kill()
            self.process.wait()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        _RUNNING.add(self)

    def _start_qemu(
        self, kernel: Kernel, initramfs: Path, cpus: int, memory_mib: int
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                QEMU,
                "-machine", "virt,virtualization=on,gic-version=3",
                "-cpu", "max,pauth-impdef=on",  # plain max is ~2.7x slower: pointer auth emulation
                "-smp", str(cpus), "-m", str(memory_mib),
                "-nic", "none",  # without it QEMU wants an efi-virtio.rom it does not have
                "-no-reboot", "-display", "none", "-monitor", "none",
                "-serial", f"file:{self.console}",
                "-kernel", str(kernel.image), "-initrd", str(initramfs),
                "-append", "console=ttyAMA0 panic=-1 cryptomgr.notests",
                "-chardev", f"socket,id=agent,path={self.socket_path},server=on,wait=off",
                "-device", "virtio-serial-device",
                "-device", "virtserialport,chardev=agent,name=kvm-fwspec",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GuestError(f"QEMU exited with {self.process.returncode}{self.tail()}")
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(self.socket_path))
                return sock
            except OSError:
                sock.close()
                time.sleep(0.05)
        raise GuestError(f"QEMU did not open its agent socket{self.tail()}")

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.console.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return "; console: " + " | ".join(line.strip() for line in text) if text else ""

    def gone(self, why: str) -> AgentError:
        """The error for a guest that went away, with QEMU's exit status and the console."""
        try:
            status = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return AgentError(f"the guest stopped answering ({why}){self.tail()}")
        return AgentError(f"the guest's QEMU exited with {status} ({why}){self.tail()}")

    def channel(self) -> Channel:
        def receive() -> bytes:
            try:
                data = self.sock.recv(65536)
            except OSError as exc:
                raise self.gone(str(exc)) from None
            if not data:
                raise self.gone("connection closed")
            return data

        def send(data: bytes) -> None:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise self.gone(str(exc)) from None

        return Channel(self.sock.fileno(), receive, send, self.stop)

    def stop(self) -> None:
        """Close the channel and end QEMU (the agent powers the guest off on bye)."""
        self.sock.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        _RUNNING.discard(self)

    def kill(self) -> None:
        """End QEMU at once, as a crash would."""
        os.kill(self.process.pid, 9)
