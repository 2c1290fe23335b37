"""`kvm-fwspec dump`: save a VM's firmware registers exactly as a VMM would.

A fresh VM with one vcpu initialised with the given features; KVM_GET_REG_LIST for the
firmware classes, in KVM's order, then KVM_GET_ONE_REG of each id. An optional PSCI version
is written first, as a VMM pinning the version would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.adapters import Adapter, load_adapter, reported_host
from kvm_fwspec.conformance.analyses.migration import parse_features
from kvm_fwspec.conformance.profile import Profile, resolve_profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec


def dump(adapter_name: str, kernel: str, host: str, features_text: str, psci: int | None,
         options: dict[str, str], output: Path) -> dict[str, Any]:  # fmt: skip
    spec = load_spec()
    profile = resolve_profile(spec, kernel, spec.host_profiles[0].name if host == "auto" else host)
    adapter = load_adapter(adapter_name, profile, options)
    try:
        if host == "auto":
            host = reported_host(adapter, spec)
        document = dump_with(
            adapter, spec, resolve_profile(spec, kernel, host), parse_features(features_text), psci
        )
    finally:
        adapter.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return document


def dump_with(
    adapter: Adapter, spec: Spec, profile: Profile, features: tuple[str, ...], psci: int | None
) -> dict[str, Any]:
    """The dump document of one fresh VM, through an adapter that is already open."""
    capabilities = adapter.capabilities()
    classes = sorted({r.register_class for r in spec.registers}, key=lambda c: c.value)
    class_field = spec.layout("reg-id").field("class")
    prefix = (
        []
        if psci is None
        else [{"op": "set", "vcpu": 0, "reg": _psci_id(spec, profile.arch), "value": psci}]
    )
    listing = [
        {"op": "list", "vcpu": 0, "mask": class_field.mask, "match": c.value << class_field.low}
        for c in classes
    ]
    observed = adapter.run_programs(
        [{"vcpus": 1, "features": list(features), "steps": prefix + listing}]
    )[0]
    _fail_on_errors(observed, prefix)
    ids = [reg_id for outcome in observed[len(prefix) :] for reg_id in outcome["ids"]]
    gets = [{"op": "get", "vcpu": 0, "reg": reg_id} for reg_id in ids]
    values = adapter.run_programs(
        [{"vcpus": 1, "features": list(features), "steps": prefix + gets}]
    )[0]
    _fail_on_errors(values, prefix)
    return {
        "format": "kvm-fwspec-dump/1",
        "implementation": capabilities.implementation,
        "provenance": capabilities.provenance,
        "kernel": profile.kernel,
        "arch": profile.arch,
        "host-profile": profile.host.name,
        "features": list(features),
        "psci-version-set": psci,
        "registers": [
            {"id": reg_id, "value": v["value"]}
            for reg_id, v in zip(ids, values[len(prefix) :], strict=True)
        ],
    }


def _psci_id(spec: Spec, arch: str) -> int:
    return int(next(r for r in spec.registers if r.kind == "psci-version").ids[arch])


def _fail_on_errors(observed: list[dict[str, Any]], prefix: list[dict[str, Any]]) -> None:
    for step, outcome in enumerate(observed):
        if "error" in outcome or ("errno" in outcome and step >= len(prefix)):
            raise UsageError(f"the implementation could not be read: step {step}: {outcome}")
        if "errno" in outcome:
            raise UsageError(f"setting the PSCI version was refused with {outcome['errno']}")
