"""Debian's arm64 uapi headers for a kernel line, fetched and unpacked once, for sync-proof.

linux-libc-dev installs them as a C library sees them (usr/include/aarch64-linux-gnu/asm/kvm.h
with linux/version.h beside); linux-headers-*-common keeps the kernel tree's layout
(arch/arm64/include/uapi/asm/kvm.h with the top-level Makefile). Either way sync-check can tell
the release from the package itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvm_fwspec.conformance.lab.debian import AptError, IsolatedApt, Package, extract
from kvm_fwspec.conformance.lab.kernels import KernelLine
from kvm_fwspec.spec.errors import UsageError

# Where each layout keeps the two files the firmware-register constants live in.
LAYOUTS = (
    ("usr/include/aarch64-linux-gnu/asm/kvm.h", "usr/include/linux/psci.h"),
    ("usr/src/*/arch/arm64/include/uapi/asm/kvm.h", "usr/src/*/include/uapi/linux/psci.h"),
)


@dataclass(frozen=True)
class HeaderCopy:
    line: str
    package: Package
    files: tuple[Path, ...]

    @property
    def label(self) -> str:
        return f"{self.package.name} {self.package.version}"


def fetch_headers(apt: IsolatedApt, cache: Path, line: KernelLine) -> HeaderCopy:
    """The newest headers package of the line the registry really serves, unpacked."""
    errors = []
    for package in apt.candidates(line.headers, line.suites):
        try:
            deb = apt.download(package)
        except AptError as exc:
            errors.append(str(exc))  # listed but not served: try the next
            continue
        root = cache / "headers" / f"{package.name}_{package.version}".replace(":", "%3a")
        if not (root / ".complete").exists():
            extract(deb, root / "tree")
            (root / ".complete").touch()
        return HeaderCopy(line.release, package, _uapi_files(root / "tree", package))
    raise UsageError(
        f"no {line.headers} of the {line.release} line could be fetched: "
        f"{'; '.join(errors) or 'none listed in ' + ', '.join(line.suites)}"
    )


def _uapi_files(tree: Path, package: Package) -> tuple[Path, ...]:
    for layout in LAYOUTS:
        found = [sorted(tree.glob(pattern)) for pattern in layout]
        if all(len(paths) == 1 for paths in found):
            return tuple(paths[0] for paths in found)
    raise UsageError(f"{package.name} {package.version} has no arm64 asm/kvm.h and linux/psci.h")
