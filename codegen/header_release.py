"""Which kernel release a copy of the uapi headers says it comes from.

A kernel tree (and Debian's linux-headers-*-common) carries the top-level Makefile with
VERSION/PATCHLEVEL/SUBLEVEL; an installed set of headers (linux-libc-dev) carries
linux/version.h with LINUX_VERSION_CODE. A copy with neither (QEMU's linux-headers, a VMM's own
header) claims nothing, and sync-check asks for --kernel instead.
"""

from __future__ import annotations

import re
from pathlib import Path


def claimed_kernel(path: Path) -> str | None:
    """`6.12.y` for a stable release, `6.12` for a release as tagged (or one of its -rc), from
    the nearest directory above `path` that says; None when none does."""
    for directory in path.resolve().parents:
        found = _from_makefile(directory / "Makefile") or _from_version_h(
            directory / "linux" / "version.h"
        )
        if found:
            return found
    return None


def _name(major: int, minor: int, sublevel: int) -> str:
    return f"{major}.{minor}.y" if sublevel else f"{major}.{minor}"


def _from_makefile(makefile: Path) -> str | None:
    if not makefile.is_file():
        return None
    head = makefile.read_text(encoding="utf-8", errors="replace")[:2000]
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL) = (\d+)$", head, re.MULTILINE))
    if set(fields) != {"VERSION", "PATCHLEVEL", "SUBLEVEL"}:
        return None  # some other project's Makefile
    return _name(int(fields["VERSION"]), int(fields["PATCHLEVEL"]), int(fields["SUBLEVEL"]))


def _from_version_h(version_h: Path) -> str | None:
    if not version_h.is_file():
        return None
    match = re.search(r"^#define LINUX_VERSION_CODE (\d+)$", version_h.read_text(), re.MULTILINE)
    if not match:
        return None
    code = int(match.group(1))
    return _name(code >> 16, (code >> 8) & 0xFF, code & 0xFF)
