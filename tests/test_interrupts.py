"""Ctrl-C during generate, certify or qemu leaves no half-written file and no QEMU behind,
and says so in one line with exit code 130.

No test here depends on timing. Each one interrupts at a point it has made certain the command
has reached: a fault injected at every step of generate's write sequence, an import held open
until the test has interrupted it, an agent that hangs, a QEMU child that exists, a run that
cannot report its next case until the test reads. Deadlines only bound how long a failure
takes to show; no test sleeps and assumes progress, or measures how long something took.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar

import pytest

import kvm_fwspec.codegen.generate as generate_module
from kvm_fwspec.codegen import atomic
from kvm_fwspec.codegen.generate import generate, render_all
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec
from tests.checkout import KVM_FWSPEC, ROOT

# The line the user sees, spelled out rather than imported: importing the CLI module would
# install its start-up SIGINT handler in this pytest process.
INTERRUPTED = "kvm-fwspec: interrupted; nothing half-written was left behind\n"
CLI = "kvm_fwspec.conformance.commands.cli"
POLL = 0.02  # how often an event is looked for; never an assumption that it has happened

T = TypeVar("T")


def wait_for(event: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """What `event` returns once it is not None; fail if that takes more than `timeout` s."""
    deadline = time.monotonic() + timeout
    while (found := event()) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}")
        time.sleep(POLL)
    return found


def read_line(stream: IO[bytes], timeout: float = 60) -> str:
    """The first line `stream` carries (or all it carried before it closed)."""
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                pytest.fail(f"no line within {timeout:g} s; read {data!r}")
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            data += chunk
    return data.decode()


@contextlib.contextmanager
def started(command: list[str], **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running; killed on the way out if a failed assertion left it running."""
    process = subprocess.Popen(command, **popen)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def read_to_end(stream: IO[bytes], timeout: float = 120) -> bytes:
    """All that `stream` carries until its writers have closed it."""
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                pytest.fail(f"still open after {timeout:g} s; read {data[-200:]!r}")
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                return data
            data += chunk


def leftovers(root: Path) -> list[Path]:
    return sorted(root.rglob("*.tmp"))


# Ctrl-C during generate, at every step of its write sequence. In-process, on a scratch root:
# the command itself writes only into the checkout it is imported from.


@pytest.fixture(scope="module")
def edited_spec(tmp_path_factory: pytest.TempPathFactory) -> Spec:
    """The spec with one sentence of kernels.yaml edited. Every output's banner records each
    spec file's sha256, so every output this spec renders differs from the checkout's."""
    copy = tmp_path_factory.mktemp("spec")
    for source in (ROOT / "spec").glob("*.yaml"):
        shutil.copy(source, copy)
    shutil.copytree(ROOT / "spec" / "schema", copy / "schema")
    kernels = copy / "kernels.yaml"
    text = kernels.read_text(encoding="utf-8")
    assert "oldest first" in text
    kernels.write_text(text.replace("oldest first", "oldest first (edited)"), encoding="utf-8")
    return load_spec(copy)


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(ROOT / "spec")


class HalfWrite:
    """A file whose write stops halfway, the first half on disk, when Ctrl-C is pressed."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def __enter__(self) -> HalfWrite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        assert os.fstat(self.handle.fileno()).st_size == len(data) // 2 > 0
        raise KeyboardInterrupt


class CtrlC:
    """`os` as kvm_fwspec.codegen.atomic sees it, with Ctrl-C pressed at one step of the
    `at`-th file it writes: in the middle of the write, just before the rename, or just
    after it."""

    def __init__(self, step: str, at: int) -> None:
        self.step, self.at = step, at
        self.opened = self.replaced = 0
        self.pressed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdopen(self, fd: int, mode: str) -> Any:
        handle = os.fdopen(fd, mode)
        self.opened += 1
        if self.step == "mid-write" and self.opened == self.at:
            self.pressed = True
            return HalfWrite(handle)
        return handle

    def replace(self, source: str, target: Path) -> None:
        self.replaced += 1
        now = self.replaced == self.at
        if now and self.step == "before-rename":
            self.pressed = True
            raise KeyboardInterrupt
        os.replace(source, target)
        if now and self.step == "after-rename":
            self.pressed = True
            raise KeyboardInterrupt


def lay_out(root: Path, files: dict[str, str]) -> None:
    shutil.rmtree(root, ignore_errors=True)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")


def everything_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("step", ["after-rename", "before-rename", "mid-write"])
def test_interrupted_generate_leaves_each_file_old_or_new(
    step: str, spec: Spec, edited_spec: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For every file generate writes, Ctrl-C at `step` of that file: the files before it are
    new, it and the ones after are old (it is new once its rename is done), none is
    half-written, and nothing else (a temporary) is left beside them."""
    old, new = render_all(edited_spec), render_all(spec)
    order = list(new)  # generate writes in this order
    assert old.keys() == new.keys() and all(old[p] != new[p] for p in order)
    assert len(order) >= 15

    def render_once(given: Spec, only: object = None) -> dict[str, str]:
        """The one rendering, reused: what is under test is the writing, ~25 times over."""
        assert given is spec
        return dict(new)

    monkeypatch.setattr(generate_module, "render_all", render_once)
    root = tmp_path / "checkout"
    for at, path in enumerate(order, start=1):
        lay_out(root, old)
        ctrl_c = CtrlC(step, at)
        monkeypatch.setattr(atomic, "os", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            generate(spec, root)
        assert ctrl_c.pressed
        done = at if step == "after-rename" else at - 1
        expected = {p: (new if i < done else old)[p].encode() for i, p in enumerate(order)}
        found = everything_under(root)
        where = f"Ctrl-C {step} of file {at}, {path}"
        assert sorted(found.keys() - expected.keys()) == [], f"{where}: left behind"
        assert sorted(expected.keys() - found.keys()) == [], f"{where}: removed"
        half = [p for p in order if found[p] not in (old[p].encode(), new[p].encode())]
        assert half == [], f"{where}: neither old nor new"
        wrong = [p for p in order if found[p] != expected[p]]
        assert wrong == [], f"{where}: these are not the {done} new then old"
    monkeypatch.setattr(atomic, "os", os)
    lay_out(root, old)
    assert generate(spec, root) == order  # uninterrupted, the same sequence writes them all
    assert everything_under(root) == {p: text.encode() for p, text in new.items()}


# Ctrl-C while the command imports: a launcher runs the CLI as the `kvm-fwspec` script does,
# with an import finder that holds the import of one module until the test has interrupted it.

LAUNCHER = f"""
import sys

GATED = sys.argv[1]
fired = False


class Gate:
    @staticmethod
    def find_spec(name, path=None, target=None):
        global fired
        if name == GATED and not fired:
            fired = True
            cli = sys.modules.get({CLI!r})
            phase = "before-cli" if cli is None else "in-main" if hasattr(cli, "main") else "in-cli"
            print("importing", name, phase, flush=True)
            sys.stdin.readline()  # until the test interrupts it
        return None


sys.meta_path.insert(0, Gate)
from {CLI} import main

sys.exit(main(sys.argv[2:]))
"""

# (subcommand's arguments, module held, where it is imported from: in-cli while cli.py imports
# its own dependencies, after its first statement installed the start-up handler; in-main when
# main() imports the subcommand's module).
IMPORTS = [
    pytest.param(["certify"], "kvm_fwspec.conformance.certify", "in-main",
                 id="certify-importing-certify"),
    pytest.param(["certify"], "pytest", "in-main", id="certify-importing-pytest"),
    pytest.param(["generate", "--check"], "argparse", "in-cli", id="cli-importing-argparse"),
    pytest.param(["generate", "--check"], "kvm_fwspec.spec.errors", "in-cli",
                 id="cli-importing-spec-errors"),
    pytest.param(["generate", "--check"], "kvm_fwspec.codegen.generate", "in-main",
                 id="generate-check-importing-generate"),
    pytest.param(["generate", "--check"], "jinja2", "in-main", id="generate-check-importing-jinja2"),
]  # fmt: skip


@pytest.mark.parametrize(("arguments", "module", "phase"), IMPORTS)
def test_interrupted_while_importing_says_so_in_one_line(
    arguments: list[str], module: str, phase: str, tmp_path: Path
) -> None:
    command = [sys.executable, "-c", LAUNCHER, module, *arguments]
    if arguments[0] == "certify":  # were it not interrupted, its report would go here
        command += ["--report", str(tmp_path / "report")]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with started(command, cwd=tmp_path, **pipes) as process:
        assert process.stdout is not None
        ready = read_line(process.stdout)
        assert ready == f"importing {module} {phase}\n", "the import was not where expected"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr.decode(), stdout.decode()) == (130, INTERRUPTED, "")
    assert os.listdir(tmp_path) == []


def test_interrupted_certify_writes_no_results(tmp_path: Path) -> None:
    """Ctrl-C while an agent has hung on a request: no results, and the agent stopped too."""
    fired = tmp_path / "fired"
    agent = f"{sys.executable} -m tests.faulty_agent hang {fired} --kernel 6.12 --host mitigated"
    report = tmp_path / "report"
    command = [*KVM_FWSPEC, "certify", "-q", "--adapter", "agent", "--kernel", "6.12",
               "--option", f"command={agent}", "--option", "timeout=600", "--report", str(report)]  # fmt: skip
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with started(command, cwd=ROOT, **pipes) as process:
        wait_for(lambda: fired.exists() or None, "the agent to hang")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.decode() == INTERRUPTED
    assert not (report / "results.json").exists() and leftovers(tmp_path) == []
    hung = subprocess.run(["pgrep", "-f", str(fired)], capture_output=True, text=True).stdout
    assert hung == "", f"the hung agent outlived certify: {hung}"


# The lab: a real Debian kernel booted under qemu-system-aarch64.

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def qemu_children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"qemu-system-aarch64" in cmdline:
                found.append(int(proc.name))
    return found


def has_ended(pid: int, timeout: float) -> bool:
    """Whether process `pid` is gone or a zombie within `timeout` s (its pidfd turns readable
    when it exits: an event, not a poll of /proc)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(pidfd)


@pytest.fixture
def adopted() -> Iterator[set[int]]:
    """The QEMUs a test saw. Meanwhile this process is the subreaper of whatever its runs leave:
    a QEMU a run did not stop and reap itself becomes this process's zombie (rather than one
    that init may reap at any moment), so "reaped by the run itself" is checked, not raced."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    guests: set[int] = set()
    try:
        yield guests
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid in guests:  # a failed test's guest: stopped, and reaped if it became ours
            if not has_ended(pid, 30):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def qemu_arguments(report: Path) -> list[str]:
    return ["qemu", "--kernel", "6.12", "--report", str(report)]


def qemu_run(report: Path) -> list[str]:
    return [*KVM_FWSPEC, *qemu_arguments(report)]


def started_guests(process: subprocess.Popen[bytes], guests: set[int]) -> list[int]:
    """The QEMUs `process` started, as soon as there are any (a first run downloads a kernel)."""

    def found() -> list[int] | None:
        assert process.poll() is None, f"the run ended with {process.returncode} before QEMU"
        return qemu_children(process.pid) or None

    started_now = wait_for(found, "QEMU to start", timeout=600)
    guests.update(started_now)
    return started_now


def interrupt_booting(tmp_path: Path, guests: set[int]) -> tuple[int, str, bytes]:
    """Ctrl-C as soon as the run's QEMU exists: the guest is starting or booting."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with started(qemu_run(tmp_path / "report"), cwd=ROOT, **pipes) as process:
        started_guests(process, guests)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stderr.decode(), stdout


# Room left in the stderr pipe: one progress line fits (`kvm-fwspec: 66/562 cases, 0 fail,
# 0 error, 3 s` is 46 to 56 bytes), the next does not, and a pipe write of fewer than PIPE_BUF
# bytes is all or nothing, so the run blocks on its second progress line.
PROGRESS_ROOM = 60


def interrupt_certifying(tmp_path: Path, guests: set[int]) -> tuple[int, str, bytes]:
    """Ctrl-C once the run has reported its first tenth of the cases, so the guest's agent has
    answered; its stderr is a pipe the test keeps full but for one progress line, so the run
    cannot report a second, let alone finish, before the interrupt reaches it."""
    reader, writer = os.pipe()
    capacity = fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, 4096)
    filler = b"#" * (capacity - PROGRESS_ROOM)
    os.write(writer, filler)
    command = qemu_run(tmp_path / "report")
    with (
        os.fdopen(reader, "rb") as stderr,
        (tmp_path / "stdout").open("w+b") as stdout,
        started(command, cwd=ROOT, stdout=stdout, stderr=writer) as process,
    ):
        os.close(writer)

        def reported() -> bool | None:
            assert process.poll() is None, f"the run ended with {process.returncode}"
            queued = fcntl.ioctl(stderr, termios.FIONREAD, bytes(4))
            return int.from_bytes(queued, sys.byteorder) > len(filler) or None

        started_guests(process, guests)
        wait_for(reported, "the run to report its first tenth of the cases", timeout=300)
        assert set(qemu_children(process.pid)) == guests, "certifying, yet not on its guest"
        process.send_signal(signal.SIGINT)
        errors = read_to_end(stderr)  # the run's end closes it
        process.wait(timeout=60)
        stdout.seek(0)
        output = stdout.read()
        (tmp_path / "stdout").unlink()
    assert errors.startswith(filler), "something else was written to stderr first"
    progress, _, after = errors[len(filler) :].partition(b"\n")
    assert b" cases, " in progress, f"interrupted before certifying: {progress!r}"
    # Linux fills the pipe's last page with what fits of the blocked second line before it
    # waits, so the interrupt may come after part of that line: only a part, never a newline.
    blocked, mark, said = after.partition(INTERRUPTED.encode()[:24])
    assert b"\n" not in blocked and b"kvm-fwspec: ".startswith(blocked[:12]), blocked
    return process.returncode, (mark + said).decode(), output


HOLD_RUN = f"""
import os, subprocess, sys

HELD = sys.argv[1]
# The test's pipes, kept aside: inside pytest.main, where the run boots its guest, pytest has
# replaced sys.stdin and may capture descriptors 0 and 1.
READY, WAIT = os.dup(1), os.dup(0)


def hold(event):
    os.write(READY, f"{{event}}\\n".encode())
    os.read(WAIT, 1)  # until the test interrupts it


if HELD == "qemu-created":  # inside Popen: QEMU forked, its exec not yet confirmed
    fork_exec = subprocess._fork_exec

    def held(args, *rest):
        pid = fork_exec(args, *rest)
        if "qemu-system" in os.fsdecode(args[0]):
            hold(f"qemu-created {{pid}}")
        return pid

    subprocess._fork_exec = held
elif HELD == "agent-awaited":  # the run waits for its guest's first answer, as it boots
    from kvm_fwspec.conformance.adapters.agent import AgentAdapter

    read_line = AgentAdapter._read_line

    def held(self, channel, **limit):
        AgentAdapter._read_line = read_line
        hold("agent-awaited")
        return read_line(self, channel, **limit)

    AgentAdapter._read_line = held
from {CLI} import main

sys.exit(main(sys.argv[2:]))
"""


def interrupt_held(held: str, tmp_path: Path, guests: set[int]) -> tuple[int, str, bytes]:
    """Ctrl-C while a launcher holds the run at `held`, a moment that a loaded machine can
    stretch for as long as its scheduler likes."""
    command = [sys.executable, "-c", HOLD_RUN, held, *qemu_arguments(tmp_path / "report")]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with started(command, cwd=ROOT, **pipes) as process:
        assert process.stdout is not None
        ready = read_line(process.stdout, timeout=600).split()
        assert ready[:1] == [held], ready
        guests.update([int(ready[1])] if held == "qemu-created" else qemu_children(process.pid))
        assert guests, "no QEMU"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stderr.decode(), stdout


def interrupt_starting(tmp_path: Path, guests: set[int]) -> tuple[int, str, bytes]:
    """Ctrl-C at the instant QEMU is created, while Popen still waits for its exec."""
    return interrupt_held("qemu-created", tmp_path, guests)


def interrupt_awaiting_agent(tmp_path: Path, guests: set[int]) -> tuple[int, str, bytes]:
    """Ctrl-C while the run, connected to its guest, waits for the agent's first answer."""
    return interrupt_held("agent-awaited", tmp_path, guests)


MOMENTS = [
    pytest.param(interrupt_awaiting_agent, id="awaiting-agent"),
    pytest.param(interrupt_booting, id="booting"),
    pytest.param(interrupt_certifying, id="certifying"),
    pytest.param(interrupt_starting, id="starting"),
]


@pytest.mark.lab
@pytest.mark.parametrize("interrupt", MOMENTS)
def test_interrupted_qemu_leaves_no_guest(
    interrupt: Callable[[Path, set[int]], tuple[int, str, bytes]],
    tmp_path: Path,
    adopted: set[int],
) -> None:
    returncode, stderr, _ = interrupt(tmp_path, adopted)
    assert returncode == 130, stderr
    assert stderr == INTERRUPTED
    for pid in adopted:  # stopped and reaped by the run itself, not left to the kernel
        assert not Path(f"/proc/{pid}").exists(), f"QEMU {pid} outlived the run"
    assert not list(tmp_path.rglob("results.json")) and leftovers(tmp_path) == []


@pytest.mark.lab
def test_a_killed_run_takes_its_guest_with_it(tmp_path: Path, adopted: set[int]) -> None:
    """Even SIGKILL, which no handler sees: the kernel ends QEMU with its parent."""
    pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    with started(qemu_run(tmp_path / "report"), cwd=ROOT, **pipes) as process:
        guests = started_guests(process, adopted)
        process.send_signal(signal.SIGKILL)
        process.wait()
    for pid in guests:  # gone, or a zombie awaiting its new parent's wait
        assert has_ended(pid, timeout=60), f"QEMU {pid} outlived a killed run"
