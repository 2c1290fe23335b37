"""A VMM that no one here wrote, as Debian ships it for arm64: QEMU's qemu-system-aarch64 with
its whole library closure and its own dynamic loader, resolved by apt for an empty system and
unpacked with dpkg -x, so it runs inside the guest host whatever that host's userland is.

Two builds: bookworm's QEMU 7.2 (with its security updates) and unstable's current one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kvm_fwspec.conformance.lab.debian import IsolatedApt, extract
from kvm_fwspec.spec.errors import UsageError

SOURCES = {"bookworm": ("bookworm", "bookworm-security"), "unstable": ("unstable",)}
PACKAGE = "qemu-system-arm"  # qemu-system-aarch64 lives in it


LIBRARY_DIRS = ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib", "usr/lib")
LOADER = "ld-linux-aarch64.so.1"
BINARY = "usr/bin/qemu-system-aarch64"


@dataclass(frozen=True)
class VmmBuild:
    """One QEMU reduced to its binary, the libraries it loads and its loader, and how to start
    it with that loader (never the guest host's)."""

    name: str
    version: str
    packages: int
    tree: Path  # the binary, its libraries and loader, in the packages' own layout
    loader: str  # the loader's path inside the tree

    def command(self, root: str) -> list[str]:
        """argv that starts this QEMU from `root`, the tree's place inside the guest host."""
        libraries = ":".join(f"{root}/{d}" for d in LIBRARY_DIRS[:2])
        return [f"{root}/{self.loader}", "--library-path", libraries, f"{root}/{BINARY}"]


def fetch_vmm(cache: Path, name: str) -> VmmBuild:
    """The named build, downloaded, unpacked and reduced once per closure."""
    if name not in SOURCES:
        raise UsageError(f"no VMM build '{name}'; have {', '.join(SOURCES)}")
    apt = IsolatedApt(cache / f"apt-vmm-{name}", SOURCES[name])
    apt.update()
    debs = apt.download_closure(PACKAGE)
    main = next((d for d in debs if d.name.startswith(f"{PACKAGE}_")), None)
    if main is None:
        raise UsageError(f"apt did not resolve {PACKAGE} in {', '.join(SOURCES[name])}")
    version = main.name.split("_")[1].replace("%3a", ":")
    key = hashlib.sha256("\n".join(d.name for d in debs).encode()).hexdigest()[:16]
    root = cache / "vmm" / f"{name}-{key}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        for deb in debs:
            extract(deb, root / "unpacked")
        _reduce(root / "unpacked", root / "tree")
        shutil.rmtree(root / "unpacked")
        (root / ".complete").touch()
    tree = root / "tree"
    return VmmBuild(name, version, len(debs), tree, _library(tree, LOADER))


def _reduce(unpacked: Path, tree: Path) -> None:
    """Copy qemu-system-aarch64 and, following ELF NEEDED entries, every library it loads,
    with the symlinks that name them, and the loader; the rest of the closure (150 MB) stays
    behind."""
    if not (unpacked / BINARY).exists():
        raise UsageError(f"{PACKAGE} has no {BINARY}")
    pending, done = [BINARY], set()
    while pending:
        relative = pending.pop()
        if relative in done:
            continue
        done.add(relative)
        _copy_with_links(unpacked, tree, relative)
        pending += [_library(unpacked, needed, relative) for needed in _needed(unpacked / relative)]
    _copy_with_links(unpacked, tree, _library(unpacked, LOADER))


def _library(tree: Path, name: str, needed_by: str = "QEMU") -> str:
    """Where the closure keeps library `name`, as a path inside `tree`."""
    found = next((f"{d}/{name}" for d in LIBRARY_DIRS if (tree / d / name).exists()), None)
    if found is None:
        raise UsageError(f"{needed_by} needs {name}, which the closure does not have")
    return found


def _needed(path: Path) -> list[str]:
    shown = subprocess.run(
        ["readelf", "-d", str(path.resolve())], capture_output=True, text=True, check=True
    )
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", shown.stdout)


def _copy_with_links(unpacked: Path, tree: Path, relative: str) -> None:
    """`relative` into `tree`, following a chain of symlinks and copying each link and the file."""
    source = unpacked / relative
    target = tree / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        link = os.readlink(source)
        if not target.is_symlink():
            target.symlink_to(link)
        resolved = (source.parent / link).resolve().relative_to(unpacked.resolve())
        _copy_with_links(unpacked, tree, resolved.as_posix())
    elif not target.exists():
        shutil.copy2(source, target)
