"""A guest host for VMM certification: a real-KVM kernel whose initramfs carries QEMU builds
and the VMM agent, booted and greeted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.adapters.agent import AgentAdapter
from kvm_fwspec.conformance.guest.vmm_agent import PROTOCOL as VMM_PROTOCOL
from kvm_fwspec.conformance.lab.debian import IsolatedApt, cache_lock
from kvm_fwspec.conformance.lab.initramfs import build
from kvm_fwspec.conformance.lab.kernels import fetch_kernel, line_for
from kvm_fwspec.conformance.lab.qemu import BOOT_TIMEOUT, Guest
from kvm_fwspec.conformance.lab.vmm import SOURCES, fetch_vmm
from kvm_fwspec.spec.errors import UsageError


def boot_vmm_host(
    release: str, cache: Path, builds: tuple[str, ...] = tuple(SOURCES)
) -> tuple[Guest, AgentAdapter]:
    """A guest host of `release` with real KVM, the QEMU `builds` and the VMM agent, and a
    client for it (hello already answered)."""
    guest, client = start_vmm_host(release, cache, builds)
    greet_vmm_host(client, builds)
    return guest, client


def start_vmm_host(
    release: str, cache: Path, builds: tuple[str, ...]
) -> tuple[Guest, AgentAdapter]:
    """The guest host started, not yet booted. Start hosts from one thread: the kernel kills a
    QEMU (PR_SET_PDEATHSIG) when the thread that started it ends, not only the process."""
    with cache_lock(cache):
        apt = IsolatedApt(cache / "apt")
        apt.update()
        kernel = fetch_kernel(apt, cache, line_for(release))
        vmms = tuple(fetch_vmm(cache, name) for name in builds)
        initramfs = build(apt, cache, kernel, vmms)
    guest = Guest(kernel, initramfs)
    return guest, AgentAdapter(guest.channel(), 1, BOOT_TIMEOUT)


def greet_vmm_host(client: AgentAdapter, builds: tuple[str, ...]) -> dict[str, Any]:
    """Wait for a started guest host's VMM agent to say hello with the expected builds, and
    answer its hello; any thread may wait. The host is stopped if it does not."""
    try:
        hello = client.request("hello", {})
    except BaseException:
        client.close()
        raise
    if hello.get("protocol") != VMM_PROTOCOL or sorted(hello.get("builds", [])) != sorted(builds):
        client.close()
        raise UsageError(f"the guest host's VMM agent said {hello}")
    return hello
