"""The reference implementation as the agent serves it (`kvm-fwspec agent --impl reference`).

It lives here rather than beside the guest's `kvm_served` because the guest package must not
import the reference: only the guest's own files go into the initramfs."""

from __future__ import annotations

from collections.abc import Mapping

from kvm_fwspec.conformance.guest.agent import Served
from kvm_fwspec.reference_impl.kvm import ReferenceKvm


def reference_served(options: Mapping[str, str]) -> Served:
    """A ReferenceKvm for the options' kernel (`6.1`, or `6.1.y` for its stable series), host
    and arch, with the hello it gives."""
    kernel = options["kernel"]
    release = kernel.removesuffix(".y")
    kvm = ReferenceKvm(
        release, options["host"], options.get("arch", "arm64"), stable=kernel != release
    )
    hello = {
        "implementation": "kvm-fwspec reference",
        "kernel": kernel,
        "arch": kvm.arch,
        "features": ["guest-calls", "psci-0.1-vcpus"],
    }
    return Served(kvm, hello)
