"""A kernel someone built: its arm64 Image read for the release it reports and the config it
was built with, and checked, before anything boots, to be able to serve as a KVM host.

The lab boots Debian's packaged kernels; a kernel developer or a distribution brings its own
`arch/arm64/boot/Image` (or a `vmlinuz`) and, where drivers are modules, the tree that
`make modules_install` leaves. Booting a kernel that cannot serve (no KVM, no virtio console
for the agent, no initramfs support) would only time out; each missing option is named
instead, in one line, so that a bisection can skip that build.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from kvm_fwspec.conformance.lab.kernels import (
    VIRTIO_MODULES,
    Kernel,
    module_files,
    virtio_modules,
)
from kvm_fwspec.spec.errors import UsageError

# arm64's Image header (Documentation/arch/arm64/booting.rst): the magic "ARM\x64" at 0x38.
IMAGE_MAGIC = b"ARM\x64"
IMAGE_MAGIC_OFFSET = 0x38
# An EFI zboot image (CONFIG_EFI_ZBOOT): "zimg" at 4, the payload's offset and size at 8 and
# 12, and its compression's name at 0x18 (drivers/firmware/efi/libstub/zboot-header.S).
ZBOOT_MAGIC = b"zimg"
BANNER = re.compile(rb"Linux version (\S+) [^\n\x00]*")
# The kernel embeds its config between these markers with CONFIG_IKCONFIG (kernel/configs.c).
IKCONFIG = re.compile(rb"IKCFG_ST(.*?)IKCFG_ED", re.DOTALL)

# What a guest host needs: KVM itself (arm64 builds it in, never as a module), the initramfs
# the agent lives in and the devices it mounts, an init script run by busybox, and the virtio
# transport and console the agent answers over (built in, or modules the tree provides).
BUILT_IN = ("CONFIG_VIRTUALIZATION", "CONFIG_KVM", "CONFIG_BLK_DEV_INITRD", "CONFIG_DEVTMPFS",
            "CONFIG_PROC_FS", "CONFIG_SYSFS", "CONFIG_BINFMT_ELF", "CONFIG_BINFMT_SCRIPT")  # fmt: skip
BUILT_IN_OR_MODULE = {
    "CONFIG_VIRTIO_MMIO": "virtio_mmio",
    "CONFIG_VIRTIO_CONSOLE": "virtio_console",
}


@dataclass(frozen=True)
class BuiltKernel:
    """An Image read and checked: what it says it is, and where its config came from."""

    kernel: Kernel
    banner: str
    config_source: str


def inspect(image: Path, modules: Path | None, cache: Path) -> BuiltKernel:
    """`image` (and `modules`, a `lib/modules/RELEASE` folder) read and checked; UsageError in
    one line for any reason it cannot serve as a guest host. The virtio modules the guest
    loads are copied, decompressed, under `cache`, never into the user's tree."""
    raw = _read(image)
    data = _image_bytes(image, raw)
    found = BANNER.search(data)
    if found is None:
        raise UsageError(
            f"{image}: no 'Linux version' banner in the image, so its release is unknown"
        )
    banner = found[0].decode("utf-8", "replace")
    uname = found[1].decode("utf-8", "replace")
    if modules is not None and modules.name != uname:
        raise UsageError(
            f"--modules {modules} holds the modules of {modules.name}, and the image is "
            f"{uname}: give its own lib/modules/{uname}"
        )
    text, source = _config(data, image, uname, modules)
    config = parse_config(text)
    missing = missing_options(config, modules)
    if missing:
        raise UsageError(f"{image} cannot serve as a KVM host ({source}): {'; '.join(missing)}")
    digest = hashlib.sha256(raw).hexdigest()
    # the modules it loads are decompressed afresh whenever the image or a module changed
    inputs = hashlib.sha256(digest.encode())
    wanted = [f for m in VIRTIO_MODULES for f in module_files(modules, m)] if modules else []
    for path in wanted:
        inputs.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    out = cache / "built-kernels" / inputs.hexdigest()[:16] / "modules"
    out.mkdir(parents=True, exist_ok=True)
    kernel = Kernel(
        line=uname,
        packages=(),
        image=image,
        modules=virtio_modules(modules, out) if modules is not None else (),
        uname=uname,
        source=f"{image.resolve()} (sha256 {digest})"
        + (f", modules {modules.resolve()}" if modules is not None else ""),
    )
    return BuiltKernel(kernel, banner, source)


def _read(image: Path) -> bytes:
    """The file's bytes, read once: they are both decompressed and hashed."""
    if not image.exists():
        raise UsageError(f"{image}: no such kernel image")
    if not image.is_file():
        raise UsageError(
            f"{image} is not a file: give the Image (arch/arm64/boot/Image) or a vmlinuz"
        )
    return image.read_bytes()


def _image_bytes(image: Path, data: bytes) -> bytes:
    """The Image's bytes, decompressed from a gzip vmlinuz or an EFI zboot image."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise UsageError(f"{image}: a gzip file that does not decompress ({exc})") from None
    elif data[:2] == b"MZ" and data[4:8] == ZBOOT_MAGIC:
        data = _zboot_payload(image, data)
    if data[IMAGE_MAGIC_OFFSET : IMAGE_MAGIC_OFFSET + 4] != IMAGE_MAGIC:
        raise UsageError(
            f"{image} is not an arm64 kernel Image (no ARM\\x64 magic at byte 0x38): give "
            "arch/arm64/boot/Image or a vmlinuz built for arm64"
        )
    return data


def _zboot_payload(image: Path, data: bytes) -> bytes:
    offset, size = struct.unpack_from("<II", data, 8)
    kind = data[0x18:0x20].rstrip(b"\x00").decode("ascii", "replace")
    if kind != "gzip":
        raise UsageError(
            f"{image}: an EFI zboot image compressed with {kind}, which this tool cannot open: "
            "give the uncompressed arch/arm64/boot/Image"
        )
    return gzip.decompress(data[offset : offset + size])


def _config(data: bytes, image: Path, uname: str, modules: Path | None) -> tuple[str, str]:
    """The kernel's config and where it was found: embedded in the image (CONFIG_IKCONFIG),
    the build tree's .config (the Image is arch/arm64/boot/Image), config-RELEASE beside a
    vmlinuz (/boot), or the modules tree's build link."""
    embedded = IKCONFIG.search(data)
    if embedded is not None:
        try:
            return gzip.decompress(embedded[1]).decode("utf-8", "replace"), "its embedded config"
        except (OSError, EOFError, zlib.error):
            pass  # the markers without a config between them: look beside the image
    candidates = [image.parent / f"config-{uname}"]
    if image.parent.name == "boot" and image.parent.parent.name == "arm64":
        candidates.insert(0, image.parents[3] / ".config")
    if modules is not None:
        candidates.append(modules / "build" / ".config")
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8", errors="replace"), str(path)
    raise UsageError(
        f"{image}: no kernel config found (none embedded with CONFIG_IKCONFIG; looked for "
        f"{', '.join(str(c) for c in candidates)}), so whether it can serve is unknown"
    )


def parse_config(text: str) -> dict[str, str]:
    """`CONFIG_X=value` lines; `# CONFIG_X is not set` as `n`."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        if match := re.fullmatch(r"(CONFIG_\w+)=(.*)", line.strip()):
            config[match[1]] = match[2]
        elif match := re.fullmatch(r"# (CONFIG_\w+) is not set", line.strip()):
            config[match[1]] = "n"
    return config


def missing_options(config: dict[str, str], modules: Path | None) -> list[str]:
    """Each option the kernel lacks to serve, as a user would fix it."""
    missing = [
        f"{o} is {config.get(o, 'not set')}, it must be y" for o in BUILT_IN if config.get(o) != "y"
    ]
    for option, module in BUILT_IN_OR_MODULE.items():
        value = config.get(option)
        if value not in ("y", "m"):
            missing.append(f"{option} is {value or 'not set'}, it must be y or m")
        elif value == "m" and (modules is None or not _has_module(modules, module)):
            where = "give --modules DIR" if modules is None else f"{modules} has no {module}.ko"
            missing.append(f"{option}=m, so {module} is a module: {where}")
    return missing


def _has_module(modules: Path, name: str) -> bool:
    return bool(module_files(modules, name))
