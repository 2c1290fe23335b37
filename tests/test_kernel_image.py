"""A kernel someone built, read and checked before it boots: its banner, its config (embedded,
in the build tree, beside a vmlinuz), and each option a KVM host needs, named when missing.

The images here are made by hand: an arm64 Image header and a banner are all the reader looks
at. tests/test_built_kernel_lab.py boots Debian's real kernels laid out as build trees.
"""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest

from kvm_fwspec.conformance.lab.kernel_image import inspect, missing_options, parse_config
from kvm_fwspec.spec.errors import UsageError
from tests.checkout import KVM_FWSPEC

BANNER = b"Linux version 6.12.18-local (dev@box) (gcc 14) #1 SMP PREEMPT Mon Dec  7 2026\n"
GOOD_CONFIG = "\n".join(
    [
        "CONFIG_VIRTUALIZATION=y",
        "CONFIG_KVM=y",
        "CONFIG_BLK_DEV_INITRD=y",
        "CONFIG_DEVTMPFS=y",
        "CONFIG_PROC_FS=y",
        "CONFIG_SYSFS=y",
        "CONFIG_BINFMT_ELF=y",
        "CONFIG_BINFMT_SCRIPT=y",
        "CONFIG_VIRTIO_MMIO=y",
        "CONFIG_VIRTIO_CONSOLE=y",
    ]
)


def image_bytes(extra: bytes = b"") -> bytes:
    """An arm64 Image: the header's magic at 0x38, then the kernel's banner."""
    header = bytearray(64)
    header[0x38:0x3C] = b"ARM\x64"
    return bytes(header) + b"\x00" * 64 + BANNER + extra


def build_tree(root: Path, config: str = GOOD_CONFIG, image: bytes | None = None) -> Path:
    """A kernel tree as `make` leaves it: arch/arm64/boot/Image and .config at the top."""
    path = root / "arch" / "arm64" / "boot" / "Image"
    path.parent.mkdir(parents=True)
    path.write_bytes(image if image is not None else image_bytes())
    (root / ".config").write_text(config + "\n")
    return path


def test_a_build_tree_is_read_for_its_release_and_config(tmp_path: Path) -> None:
    built = inspect(build_tree(tmp_path / "linux"), None, tmp_path / "cache")
    assert built.kernel.uname == "6.12.18-local"
    assert built.banner.startswith("Linux version 6.12.18-local (dev@box)")
    assert built.config_source == str(tmp_path / "linux" / ".config")
    assert built.kernel.packages == () and built.kernel.modules == ()
    assert built.kernel.label.startswith(f"{tmp_path / 'linux/arch/arm64/boot/Image'} (sha256 ")


def test_a_kernel_without_kvm_is_refused_naming_each_option(tmp_path: Path) -> None:
    config = GOOD_CONFIG.replace("CONFIG_KVM=y", "# CONFIG_KVM is not set").replace(
        "\nCONFIG_VIRTIO_CONSOLE=y", ""
    )
    image = build_tree(tmp_path / "linux", config)
    with pytest.raises(UsageError) as refused:
        inspect(image, None, tmp_path / "cache")
    assert str(refused.value) == (
        f"{image} cannot serve as a KVM host ({tmp_path / 'linux' / '.config'}): CONFIG_KVM is "
        "n, it must be y; CONFIG_VIRTIO_CONSOLE is not set, it must be y or m"
    )


def test_a_driver_built_as_a_module_needs_the_modules_tree(tmp_path: Path) -> None:
    config = parse_config(GOOD_CONFIG.replace("CONFIG_VIRTIO_MMIO=y", "CONFIG_VIRTIO_MMIO=m"))
    assert missing_options(config, None) == [
        "CONFIG_VIRTIO_MMIO=m, so virtio_mmio is a module: give --modules DIR"
    ]
    modules = tmp_path / "lib" / "modules" / "6.12.18-local"
    (modules / "kernel" / "drivers" / "virtio").mkdir(parents=True)
    assert missing_options(config, modules) == [
        f"CONFIG_VIRTIO_MMIO=m, so virtio_mmio is a module: {modules} has no virtio_mmio.ko"
    ]
    (modules / "kernel" / "drivers" / "virtio" / "virtio_mmio.ko").write_bytes(b"\x7fELF")
    assert missing_options(config, modules) == []


def test_an_embedded_config_a_gzip_vmlinuz_and_a_zboot_image_are_read(tmp_path: Path) -> None:
    """CONFIG_IKCONFIG's config inside the image wins; the image may be gzip-compressed, or
    an EFI zboot image whose payload is gzip."""
    embedded = b"IKCFG_ST" + gzip.compress(GOOD_CONFIG.encode()) + b"IKCFG_ED"
    plain = image_bytes(embedded)
    vmlinuz = tmp_path / "vmlinuz-6.12.18-local"
    vmlinuz.write_bytes(gzip.compress(plain))
    assert inspect(vmlinuz, None, tmp_path / "cache").config_source == "its embedded config"
    payload = gzip.compress(plain)
    header = bytearray(0x40)
    header[0:2], header[4:8] = b"MZ", b"zimg"
    struct.pack_into("<II", header, 8, 0x40, len(payload))
    header[0x18:0x1C] = b"gzip"
    zboot = tmp_path / "zboot.efi"
    zboot.write_bytes(bytes(header) + payload)
    assert inspect(zboot, None, tmp_path / "cache").kernel.uname == "6.12.18-local"
    header[0x18:0x1C] = b"zstd"
    zboot.write_bytes(bytes(header) + payload)
    with pytest.raises(UsageError, match="compressed with zstd, which this tool cannot open"):
        inspect(zboot, None, tmp_path / "cache")


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: None, "no such kernel image"),
        (lambda p: p.mkdir(), "is not a file: give the Image (arch/arm64/boot/Image) or a vmlinuz"),
        (lambda p: p.write_bytes(b"\x7fELF" + b"\x00" * 100), "is not an arm64 kernel Image"),
        (lambda p: p.write_bytes(image_bytes().replace(b"Linux version", b"Linux VERSION")),
         "no 'Linux version' banner in the image, so its release is unknown"),
        (lambda p: p.write_bytes(image_bytes()), "no kernel config found"),
    ],
    ids=["missing", "a-folder", "not-arm64", "no-banner", "no-config"],
)  # fmt: skip
def test_an_image_that_cannot_be_read_is_one_line(tmp_path: Path, make, problem: str) -> None:  # type: ignore[no-untyped-def]
    image = tmp_path / "Image"
    make(image)
    with pytest.raises(UsageError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        inspect(image, None, tmp_path / "cache")


def qemu(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVM_FWSPEC, "qemu", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_an_unsuitable_build_exits_125_for_git_bisect_without_booting(tmp_path: Path) -> None:
    config = GOOD_CONFIG.replace("CONFIG_KVM=y", "# CONFIG_KVM is not set")
    image = build_tree(tmp_path / "linux", config)
    result = qemu("--kernel-image", str(image), "--cache", str(tmp_path / "c"), cwd=tmp_path)
    assert result.returncode == 125, result.stdout + result.stderr
    assert (result.stdout, result.stderr.splitlines()) == ("", [
        f"kvm-fwspec: cannot test this build: {image} cannot serve as a KVM host "
        f"({tmp_path / 'linux' / '.config'}): CONFIG_KVM is n, it must be y"
    ])  # fmt: skip
    assert not (tmp_path / "reports").exists()


def test_a_release_the_spec_does_not_judge_exits_125_and_asks_for_release(tmp_path: Path) -> None:
    image = build_tree(
        tmp_path / "linux",
        image=image_bytes().replace(b"6.12.18-local", b"6.8.0-01234-gabcdef012"),
    )
    result = qemu("--kernel-image", str(image), "--cache", str(tmp_path / "c"), cwd=tmp_path)
    assert result.returncode == 125
    (line,) = result.stderr.splitlines()
    assert line.startswith("kvm-fwspec: cannot test this build: its release 6.8.0-01234-gabcdef012")
    assert line.endswith("; give --release")


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (("--modules", "lib/modules/x"), "kvm-fwspec: --modules: only with --kernel-image\n"),
        (("--kernel-image", "Image", "--kernel", "6.12"),
         "kvm-fwspec: --kernel-image boots your kernel: give no --kernel or --kernel-package\n"),
        (("--kernel-image", "Image", "--only", "psci-power/cpu-on/reserved-afinity-bits"),
         "kvm-fwspec: --only psci-power/cpu-on/reserved-afinity-bits: no such rule in the spec; "
         "did you mean psci-power/cpu-on/reserved-affinity-bits?\n"),
        (("--kernel-image", "Image", "--release", "6.12.x"),
         "kvm-fwspec: kernel '6.12.x' is not a kernel name: give a release (6.12, v6.12), its "
         "stable series (6.12.y), a stable or rc release (6.12.18, 6.9-rc2), what uname -r "
         "prints, or latest\n"),
    ],
    ids=["modules-alone", "two-kernels", "rule-typo", "release-typo"],
)  # fmt: skip
def test_a_command_line_mistake_stays_a_usage_error(
    tmp_path: Path, args: tuple[str, ...], stderr: str
) -> None:
    result = qemu(*args, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", stderr)


def test_modules_of_another_release_are_refused(tmp_path: Path) -> None:
    """A --modules folder of another kernel would load that kernel's virtio modules."""
    modules = tmp_path / "mod" / "lib" / "modules" / "5.10.0-32-arm64"
    modules.mkdir(parents=True)
    image = build_tree(tmp_path / "linux")
    with pytest.raises(UsageError) as refused:
        inspect(image, modules, tmp_path / "cache")
    assert str(refused.value) == (
        f"--modules {modules} holds the modules of 5.10.0-32-arm64, and the image is "
        "6.12.18-local: give its own lib/modules/6.12.18-local"
    )
