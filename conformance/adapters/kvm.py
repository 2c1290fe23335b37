"""Real KVM on this machine, called in-process: `--adapter kvm` on an arm64 host with
/dev/kvm (a workstation, a cloud instance, a board), with no agent process in between. It runs
the very implementation the `kvm` agent serves (conformance/guest), so its answers and its
hello (kernel, host levels, CPU, capabilities) are the agent's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from kvm_fwspec.conformance.adapters import Capabilities, refuse_unknown_options
from kvm_fwspec.conformance.guest.agent import (
    ARM64_MACHINES,
    KvmUnavailable,
    Served,
    kvm_served,
)
from kvm_fwspec.conformance.guest.program import execute
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec.errors import UsageError

OPTIONS = ("device",)


class KvmAdapter:
    """Each program on a fresh VM of this machine's /dev/kvm."""

    name = "kvm"

    def __init__(self, served: Served) -> None:
        self.served = served

    def capabilities(self) -> Capabilities:
        hello = self.served.hello
        return Capabilities(
            hello["implementation"],
            hello["kernel"],
            hello["arch"],
            frozenset(hello["features"]),
            hello["host-levels"],
            {"uname": os.uname().release},
            cpu=hello["cpu"],
            kvm_capabilities=hello["kvm-capabilities"],
        )

    def run_programs(self, programs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        return [execute(self.served.implementation, program) for program in programs]

    def close(self) -> None:
        """Each VM is closed with its program; /dev/kvm goes with the process."""


def create(profile: Profile, options: Mapping[str, str]) -> KvmAdapter:
    """Options: `device=PATH` (default /dev/kvm). A machine that cannot serve arm64 KVM (not
    arm64, no device, a device this user may not open) is one line saying which."""
    refuse_unknown_options("kvm", options, OPTIONS)
    machine = os.uname().machine
    if machine not in ARM64_MACHINES:  # the agent's own line names the agent's options
        raise UsageError(
            f"--adapter kvm: real KVM needs an arm64 host, and this machine is {machine} (use "
            "--adapter reference, or --adapter qemu to boot a Debian arm64 kernel under QEMU)"
        )
    try:
        return KvmAdapter(kvm_served(options))
    except KvmUnavailable as exc:
        raise UsageError(f"--adapter kvm: {exc}") from None
