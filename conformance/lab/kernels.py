"""Which Debian kernel package certifies which release line, fetched and unpacked once."""

from __future__ import annotations

import lzma
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from kvm_fwspec.conformance.lab.debian import AptError, IsolatedApt, Package, extract
from kvm_fwspec.spec.errors import UsageError

LINES_FILE = resources.files("kvm_fwspec.conformance.lab") / "kernel-lines.yaml"
# Loaded in this order when they are modules rather than built in (modules.builtin says which).
VIRTIO_MODULES = ("virtio", "virtio_ring", "virtio_mmio", "virtio_console")


@dataclass(frozen=True)
class KernelLine:
    release: str
    suites: tuple[str, ...]
    packages: tuple[str, ...]
    doc: str
    headers: str  # the package of the line's arm64 uapi headers (a pattern, like packages)
    unstable: bool = False


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel: its Image, the virtio modules the guest must load, and provenance:
    Debian's packages, or for a kernel someone built (`source`) the image it came from."""

    line: str
    packages: tuple[Package, ...]
    image: Path
    modules: tuple[Path, ...]
    uname: str
    source: str = ""

    @property
    def label(self) -> str:
        return ", ".join(f"{p.name} {p.version}" for p in self.packages) or self.source


def kernel_lines() -> list[KernelLine]:
    raw = yaml.safe_load(LINES_FILE.read_text(encoding="utf-8"))
    return [
        KernelLine(
            line["release"],
            tuple(line["suites"]),
            tuple(line["packages"]),
            line["doc"],
            line["headers"],
            line.get("unstable", False),
        )
        for line in raw["lines"]
    ]


def line_for(release: str) -> KernelLine:
    for line in kernel_lines():
        if line.release == release:
            return line
    known = ", ".join(line.release for line in kernel_lines())
    raise UsageError(f"no Debian kernel line for {release}; {LINES_FILE.name} names {known}")


def fetch_kernel(
    apt: IsolatedApt, cache: Path, line: KernelLine, exact: str | None = None
) -> Kernel:
    """The newest package of `line` the registry really serves (or `exact`), unpacked."""
    main_pattern = re.escape(exact) if exact else line.packages[0]
    errors = []
    for package in apt.candidates(main_pattern, line.suites):
        try:
            debs = [apt.download(package)]
            extras = []
            abi = re.sub(r"^linux-(?:binary-unsigned|image)-", "", package.name).removesuffix(
                "-unsigned"
            )
            for pattern in line.packages[1:]:
                extra = apt.candidates(re.escape(pattern.format(abi=abi)), line.suites)
                if not extra:
                    raise AptError(f"no {pattern.format(abi=abi)} in {', '.join(line.suites)}")
                extras.append(extra[0])
                debs.append(apt.download(extra[0]))
        except AptError as exc:
            errors.append(str(exc))  # an index can list what its pool does not serve: try the next
            continue
        return _unpack(cache, line.release, (package, *extras), debs)
    raise UsageError(
        f"no package of the {line.release} line could be fetched: {'; '.join(errors) or 'none listed'}"
    )


def _unpack(cache: Path, release: str, packages: tuple[Package, ...], debs: list[Path]) -> Kernel:
    root = (
        cache / "kernels" / "_".join(f"{p.name}_{p.version}" for p in packages).replace(":", "%3a")
    )
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        for deb in debs:
            extract(deb, root / "tree")
        (root / ".complete").touch()
    tree = root / "tree"
    module_dirs = sorted(
        p
        for base in ("lib/modules", "usr/lib/modules")
        for p in (tree / base).glob("*")
        if p.is_dir()
    )
    if not module_dirs:
        raise UsageError(f"{packages[0].name} has no lib/modules directory")
    uname = module_dirs[0].name
    images = sorted(tree.glob("boot/vmlinuz-*")) + sorted(module_dirs[0].glob("vmlinuz*"))
    if not images:
        raise UsageError(f"{packages[0].name} contains no vmlinuz")
    return Kernel(
        release, packages, images[0], virtio_modules(module_dirs[0], root / "modules"), uname
    )


def module_files(modules: Path, name: str) -> list[Path]:
    """A module's files in a modules tree (`lib/modules/RELEASE`), compressed or not."""
    return sorted(modules.glob(f"kernel/drivers/*/{name}.ko*"))


def virtio_modules(modules: Path, out: Path) -> tuple[Path, ...]:
    """The virtio modules this kernel builds as modules, decompressed, in load order."""
    builtin = (
        set((modules / "modules.builtin").read_text().split())
        if (modules / "modules.builtin").exists()
        else set()
    )
    out.mkdir(exist_ok=True)
    result = []
    for name in VIRTIO_MODULES:
        found = module_files(modules, name)
        if not found or any(b.endswith(f"/{name}.ko") for b in builtin):
            continue
        target = out / f"{name}.ko"
        if not target.exists():
            data = found[0].read_bytes()
            target.write_bytes(lzma.decompress(data) if found[0].suffix == ".xz" else data)
        result.append(target)
    return tuple(result)
