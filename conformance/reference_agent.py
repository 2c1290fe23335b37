"""The reference implementation as the agent serves it (`kvm-fwspec agent --impl reference`).

It lives here rather than beside the guest's `kvm_served` because the guest package must not
import the reference: only the guest's own files go into the initramfs."""

from __future__ import annotations

from collections.abc import Mapping

from kvm_fwspec.conformance.guest.agent import Served
from kvm_fwspec.reference_impl.kvm import ReferenceKvm


def reference_served(options: Mapping[str, str]) -> Served:
    """A ReferenceKvm for the options' kernel, host and arch, with the hello it gives."""
    kvm = ReferenceKvm(options["kernel"], options["host"], options.get("arch", "arm64"))
    hello = {
        "implementation": "kvm-fwspec reference",
        "kernel": options["kernel"],
        "arch": kvm.arch,
        "features": ["guest-calls", "psci-0.1-vcpus"],
    }
    return Served(kvm, hello)
