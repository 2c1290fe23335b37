"""The reference implementation as the agent serves it (`kvm-fwspec agent --impl reference`).

It lives here rather than beside the guest's `kvm_served` because the guest package must not
import the reference: only the guest's own files go into the initramfs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvm_fwspec.conformance.case import CASE_REQUIREMENTS
from kvm_fwspec.conformance.guest.agent import Served
from kvm_fwspec.conformance.guest.kvm_ioctl import (
    HOST_CAPABILITIES,
    REPORTED_CAPABILITIES,
    VM_ATTRIBUTES,
    host_levels,
)
from kvm_fwspec.conformance.guest.program import PROGRAM_MEMORY
from kvm_fwspec.conformance.profile import LEVELS_PREFIX, levels_profile
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.spec.loader import load_spec


def reference_served(options: Mapping[str, str]) -> Served:
    """A ReferenceKvm for the options' kernel (`6.1`, or `6.1.y` for its stable series), host
    and arch, with the hello it gives: no CPU, and the capabilities the spec gives the
    release."""
    kernel = options["kernel"]
    release = kernel.removesuffix(".y")
    host: str | dict[str, str] = options["host"]
    if options["host"].startswith(LEVELS_PREFIX):  # a host named by its levels, not a profile
        levels = levels_profile(load_spec(), options["host"]).levels
        host = {register: value.name for register, value in levels.items()}
    kvm = ReferenceKvm(
        release,
        host,
        options.get("arch", "arm64"),
        stable=kernel != release,
        memory=PROGRAM_MEMORY,
    )
    hello: dict[str, Any] = {
        "implementation": "kvm-fwspec reference",
        "kernel": kernel,
        "arch": kvm.arch,
        "features": list(CASE_REQUIREMENTS),
        "cpu": None,  # the reference runs on no CPU: a fingerprint records none
    }
    if kvm.arch == "arm64":
        hello["host-levels"] = host_levels(kvm)
        hello["kvm-capabilities"] = reference_capabilities(kvm)
    return Served(kvm, hello)


def reference_capabilities(kvm: ReferenceKvm) -> dict[str, int]:
    """What a real-KVM agent reports in `kvm-capabilities`, as the spec dates it (the
    reference's tables are the spec's): for a host capability, what KVM_CHECK_EXTENSION
    answers, 1 from the release the capability came in, else 0; for a VM attribute, 1 when
    KVM_HAS_DEVICE_ATTR on a fresh VM succeeds, which the SMCCC filter's `has` rules decide
    (1 from the filter's release, 6.4, else 0). One the spec does not declare (a capability
    its api.yaml lacks, an attribute other than the filter's) is left out, never guessed."""
    declared = {c["name"]: c for c in kvm.tables["capabilities"]}
    smccc_filter = kvm.tables["smccc-filter"]
    filter_attribute = (smccc_filter["group"]["value"], smccc_filter["attr"]["value"])
    answers: dict[str, int] = {}
    for name in REPORTED_CAPABILITIES:
        if name in HOST_CAPABILITIES and name in declared:
            answers[name] = int(kvm.covers(declared[name]))
        elif name in VM_ATTRIBUTES and VM_ATTRIBUTES[name] == filter_attribute:
            answers[name] = int(kvm.create_vm().has_attribute(*VM_ATTRIBUTES[name]) is None)
    return answers
