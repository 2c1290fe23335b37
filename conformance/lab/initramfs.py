"""The guest's initramfs: busybox as /init, Debian's Python 3.11 and the kvm agent.

Built from unpacked arm64 packages plus this project's agent modules, written as an
uncompressed newc cpio with fixed owners and times, so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from kvm_fwspec.conformance.lab.debian import IsolatedApt, extract
from kvm_fwspec.conformance.lab.guest_payload import guest_payload
from kvm_fwspec.conformance.lab.kernels import Kernel
from kvm_fwspec.conformance.lab.vmm import VmmBuild

USERLAND = ("busybox-static", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
            "libc6", "zlib1g", "libexpat1")  # fmt: skip
USERLAND_SUITES = ("bookworm-security", "bookworm")
# What an installed kvm-fwspec needs beyond the agent: its dependencies' compiled wheels (rpds-py,
# a Rust extension) link against the GCC runtime.
WHOLE_USERLAND = (*USERLAND, "libgcc-s1")
# Parts of the stdlib and libc the agent never touches; leaving them out shortens the boot.
PRUNE = ("usr/share", "usr/lib/python3.11/test", "usr/lib/python3.11/idlelib", "usr/lib/python3.11/tkinter",
         "usr/lib/python3.11/ensurepip", "usr/lib/python3.11/lib2to3", "usr/lib/python3.11/pydoc_data",
         "usr/lib/python3.11/distutils", "usr/lib/python3.11/unittest", "usr/lib/python3.11/asyncio",
         "usr/lib/python3.11/email", "usr/lib/python3.11/sqlite3", "usr/lib/python3.11/xml",
         "usr/lib/aarch64-linux-gnu/gconv", "usr/lib/locale", "usr/bin/pydoc3.11")  # fmt: skip
PORT = "/dev/vport0p1"

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin  # sh and cat, for QEMU's exec: migration streams
for module in {modules}; do /bin/busybox insmod /modules/$module || echo "kvm-fwspec: insmod $module failed"; done
i=0
while [ ! -e {port} ] && [ $i -lt 200 ]; do /bin/busybox usleep 20000; i=$((i+1)); done
[ -e /dev/kvm ] || echo "kvm-fwspec: no /dev/kvm in this guest"
export PYTHONPATH=/opt/kvm-fwspec PYTHONDONTWRITEBYTECODE=1
if [ -d /wheels ]; then
  echo "kvm-fwspec: installing kvm-fwspec from /wheels and certifying from that install"
  /usr/bin/python3.11 -m kvm_fwspec.conformance.guest.installed_run --port {port} --wheels /wheels
elif [ -d /vmm ]; then
  echo "kvm-fwspec: starting the VMM agent on {port}"
  /usr/bin/python3.11 -m kvm_fwspec.conformance.guest.vmm_agent --channel {port}
else
  echo "kvm-fwspec: starting agent on {port}"
  /usr/bin/python3.11 -m kvm_fwspec.conformance.guest.agent --channel {port}
fi
echo "kvm-fwspec: agent exited with $?"
/bin/busybox poweroff -f
"""


def userland(apt: IsolatedApt, cache: Path, whole: bool = False) -> Path:
    """Busybox, Python and its libraries, unpacked once per set of package versions; `whole`
    keeps the standard library whole (pip and pytest use what the agent never does) and adds
    what the dependencies' compiled wheels link against."""
    names = WHOLE_USERLAND if whole else USERLAND
    found = apt.candidates("|".join(name.replace(".", r"\.") for name in names), USERLAND_SUITES)
    packages = []
    for name in names:
        newest = next((p for p in found if p.name == name), None)
        if newest is None:
            raise RuntimeError(f"{name} not found in {', '.join(USERLAND_SUITES)}")
        packages.append(newest)
    key = hashlib.sha256("\n".join(f"{p.name}={p.version}" for p in packages).encode()).hexdigest()[
        :16
    ]
    root = cache / "userland" / (f"{key}-whole" if whole else key)
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        for package in packages:
            extract(apt.download(package), root / "tree")
        for prune in () if whole else PRUNE:
            shutil.rmtree(root / "tree" / prune, ignore_errors=True)
        _precompile(root / "tree" / "usr/lib/python3.11")
        (root / ".complete").touch()
    return root / "tree"


def _precompile(directory: Path) -> None:
    """Debian ships no .pyc; compiling on the host halves the guest's Python start-up.
    Only a host Python of the same minor version writes bytecode the guest can use."""
    if sys.version_info[:2] != (3, 11) or not directory.exists():
        return
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(directory)],
        check=True, capture_output=True,
    )  # fmt: skip


def _entries(tree: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for name in [*sorted(dirnames), *sorted(filenames)]:
            path = Path(dirpath) / name
            yield path.relative_to(tree).as_posix(), path


class Cpio:
    """A newc cpio archive written entry by entry."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.inode = 1

    def add(self, name: str, mode: int, content: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        fields = (self.inode, mode, 0, 0, 1, 0, len(content), 0, 0, 0, 0, len(encoded), 0)
        header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        self.inode += 1
        self.data += header + encoded
        self.data += b"\0" * (-len(self.data) % 4)
        self.data += content
        self.data += b"\0" * (-len(self.data) % 4)

    def add_tree(self, tree: Path, prefix: str = "") -> None:
        for name, path in _entries(tree):
            target = f"{prefix}{name}"
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                self.add(target, stat.S_IFLNK | 0o777, os.readlink(path).encode())
            elif stat.S_ISDIR(info.st_mode):
                self.add(target, stat.S_IFDIR | 0o755)
            elif stat.S_ISREG(info.st_mode):
                self.add(target, stat.S_IFREG | (info.st_mode & 0o777), path.read_bytes())

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return bytes(self.data)


def agent_tree(cache: Path) -> Path:
    """This project's agent modules, byte-compiled, as the guest will import them."""
    tree = cache / "agent"
    shutil.rmtree(tree, ignore_errors=True)
    for name, source in guest_payload().files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tree / name)
    _precompile(tree)
    return tree


def build(
    apt: IsolatedApt,
    cache: Path,
    kernel: Kernel,
    vmms: tuple[VmmBuild, ...] = (),
    wheels: tuple[Path, ...] = (),
) -> Path:
    """The initramfs for `kernel`, rebuilt only when an input changed; with `vmms`, those QEMU
    builds under /vmm/NAME and the VMM agent instead of the kvm agent; with `wheels`, those
    under /wheels, and a guest that installs kvm-fwspec from them and certifies from there."""
    tree = userland(apt, cache, whole=bool(wheels))
    inputs = hashlib.sha256(tree.parent.name.encode() + INIT.encode())
    for vmm in vmms:
        inputs.update(f"{vmm.name}:{vmm.tree.parent.name}".encode())
    payload = guest_payload().files
    for name, path in (
        *payload.items(),
        *((m.name, m) for m in kernel.modules),
        *((f"wheels/{w.name}", w) for w in wheels),
    ):
        inputs.update(name.encode() + hashlib.sha256(path.read_bytes()).digest())
    path = cache / "initramfs" / f"{kernel.uname}-{inputs.hexdigest()[:16]}.cpio"
    if path.exists():
        return path
    agent = agent_tree(cache)
    archive = Cpio()
    for directory in ("dev", "proc", "sys", "tmp", "modules", "opt"):
        archive.add(directory, stat.S_IFDIR | 0o755)
    archive.add_tree(tree)
    archive.add("opt/kvm-fwspec", stat.S_IFDIR | 0o755)
    archive.add_tree(agent, "opt/kvm-fwspec/")
    for module in kernel.modules:
        archive.add(f"modules/{module.name}", stat.S_IFREG | 0o644, module.read_bytes())
    if wheels:
        archive.add("wheels", stat.S_IFDIR | 0o755)
    for wheel in wheels:
        archive.add(f"wheels/{wheel.name}", stat.S_IFREG | 0o644, wheel.read_bytes())
    if vmms:
        archive.add("vmm", stat.S_IFDIR | 0o755)
    for vmm in vmms:
        root = f"vmm/{vmm.name}"
        archive.add(root, stat.S_IFDIR | 0o755)
        archive.add_tree(vmm.tree, f"{root}/")
        command = json.dumps(vmm.command(f"/{root}")).encode()
        archive.add(f"{root}/command.json", stat.S_IFREG | 0o644, command)
    modules = " ".join(m.name for m in kernel.modules)
    archive.add("init", stat.S_IFREG | 0o755, INIT.format(modules=modules, port=PORT).encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(archive.finish())
    temporary.replace(path)
    return path
