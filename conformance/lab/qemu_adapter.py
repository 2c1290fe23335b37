"""Real KVM: an arm64 kernel booted under QEMU, its /dev/kvm served by the kvm agent.

Options: `kernel-package=NAME` pins an exact Debian package instead of the newest of the
release line; `kernel-image=PATH` (with `modules=DIR` where drivers are modules) boots a
kernel someone built instead; `cache=DIR` (default ~/.cache/kvm-fwspec) keeps downloads,
kernels and images.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kvm_fwspec.conformance.adapters import (
    refuse_unknown_options,
    seconds_option,
    whole_number_option,
)
from kvm_fwspec.conformance.adapters.agent import AgentAdapter
from kvm_fwspec.conformance.lab.debian import IsolatedApt, cache_lock
from kvm_fwspec.conformance.lab.initramfs import build
from kvm_fwspec.conformance.lab.kernel_image import inspect
from kvm_fwspec.conformance.lab.kernels import Kernel, fetch_kernel, line_for
from kvm_fwspec.conformance.lab.qemu import BOOT_TIMEOUT, Guest
from kvm_fwspec.conformance.profile import Profile


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kvm-fwspec"


class QemuAdapter(AgentAdapter):
    """The agent adapter over a booted guest; closing it powers the guest off."""

    name = "qemu"

    def __init__(self, kernel: Kernel, guest: Guest, batch: int) -> None:
        super().__init__(guest.channel(), batch, BOOT_TIMEOUT)
        self.kernel = kernel
        self.guest = guest

    def describe(self) -> dict[str, str]:
        origin = "kernel-packages" if self.kernel.packages else "kernel-image"
        return {origin: self.kernel.label, "kernel-uname": self.kernel.uname}


def prepare(release: str, cache: Path, exact: str | None = None) -> tuple[Kernel, Path]:
    """Fetch the kernel of `release` (or the exact package) and build its initramfs."""
    with cache_lock(cache):
        apt = IsolatedApt(cache / "apt")
        apt.update()
        kernel = fetch_kernel(apt, cache, line_for(release), exact)
        return kernel, build(apt, cache, kernel)


def prepare_built(image: Path, modules: Path | None, cache: Path) -> tuple[Kernel, Path]:
    """A kernel someone built, checked to be able to serve, and its initramfs."""
    kernel = inspect(image, modules, cache).kernel
    with cache_lock(cache):
        apt = IsolatedApt(cache / "apt")
        apt.update()
        return kernel, build(apt, cache, kernel)


OPTIONS = ("cache", "line", "kernel-package", "kernel-image", "modules", "batch", "timeout")


def create(profile: Profile, options: Mapping[str, str]) -> QemuAdapter:
    """Options: `line` boots another Debian line than the profile's release (unstable moved on),
    `timeout` bounds each answer (boot included) in seconds. All are checked before anything
    is downloaded or booted."""
    refuse_unknown_options("qemu", options, OPTIONS)
    batch = whole_number_option(options, "batch", 256)
    timeout = seconds_option(options, "timeout", BOOT_TIMEOUT)
    cache = Path(options.get("cache", default_cache()))
    if "kernel-image" in options:
        modules = Path(options["modules"]) if "modules" in options else None
        kernel, initramfs = prepare_built(Path(options["kernel-image"]), modules, cache)
    else:
        line = line_for(options.get("line", str(profile.release))).release
        kernel, initramfs = prepare(line, cache, options.get("kernel-package"))
    adapter = QemuAdapter(kernel, Guest(kernel, initramfs), batch)
    adapter.timeout = timeout
    return adapter
