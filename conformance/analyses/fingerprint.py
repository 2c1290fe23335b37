"""`kvm-fwspec fingerprint`: what one host's KVM offers a VM's firmware, as the host itself
reports it: each firmware register's default, the values a VMM may set it to, and the length
of its register list. Fleet planning groups hosts by these answers, so they are taken through
the same adapters certify uses (real KVM included), never read off the kernel version.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from kvm_fwspec.conformance.adapters import Adapter, Capabilities
from kvm_fwspec.conformance.analyses.dump import dump_with
from kvm_fwspec.conformance.guest.kvm_ioctl import REPORTED_CAPABILITIES
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import KernelName
from kvm_fwspec.spec.model import Register, Spec

FORMAT = "kvm-fwspec-fingerprint/1"
SCHEMA = resources.files("kvm_fwspec.conformance") / "schemas" / "fingerprint.schema.json"
# What the implementation did not report, said in the file rather than left out silently.
NOT_RECORDED = {
    "cpu": "the implementation reported no MIDR_EL1/REVIDR_EL1 (an agent whose hello has no "
    "cpu, or an implementation that runs on no CPU, as the reference does)",
    "capabilities": "the implementation reported no KVM_CHECK_EXTENSION answers (an agent "
    "whose hello has no kvm-capabilities)",
}
LABEL_PREFIX = "kvm-fwspec.io/"
# Kubernetes label values: at most 63 of these characters, starting and ending alphanumeric.
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def take(
    adapter: Adapter, spec: Spec, profile: Profile, kernel: KernelName, host: str
) -> dict[str, Any]:
    """One host's fingerprint, from a fresh VM of PSCI 0.2 vcpus (as VMMs create them), with
    the CPU and capabilities the implementation reported in its hello."""
    saved = dump_with(adapter, spec, profile, ("psci-0.2",), None)
    capabilities = adapter.capabilities()
    known = {int(r.ids[profile.arch]): r for r in spec.registers if profile.arch in r.ids}
    listed = [(entry["id"], entry["value"], known.get(entry["id"])) for entry in saved["registers"]]
    probes = [
        (reg_id, value)
        for reg_id, _, register in listed
        if register is not None
        for value in candidates(spec, register)
    ]
    programs = [
        {
            "vcpus": 1,
            "features": ["psci-0.2"],
            "steps": [{"op": "set", "vcpu": 0, "reg": reg_id, "value": value}],
        }
        for reg_id, value in probes
    ]
    listing = {
        "vcpus": 1,
        "features": ["psci-0.2"],
        "steps": [{"op": "list", "vcpu": 0, "mask": 0, "match": 0}],
    }
    observed = adapter.run_programs([*programs, listing])
    accepted: dict[int, list[int]] = {}
    for (reg_id, value), outcomes in zip(probes, observed[:-1], strict=True):
        if outcomes[0].get("ok") is True:
            accepted.setdefault(reg_id, []).append(value)
    all_ids = observed[-1][0].get("ids")
    return {
        "format": FORMAT,
        "host": host,
        "implementation": capabilities.implementation,
        "provenance": capabilities.provenance,
        "kernel": {"reported": capabilities.kernel, "judged-as": str(kernel), "how": kernel.how},
        "arch": profile.arch,
        "cpu": capabilities.cpu,
        "kvm-capabilities": capabilities.kvm_capabilities,
        "host-levels": capabilities.host_levels,
        "registers": [
            {
                "name": register.name if register else None,
                "id": hex(reg_id),
                "default": hex(value),
                # An id the spec does not know was not probed: its accepted values are unknown.
                "accepts": None
                if register is None
                else [hex(v) for v in sorted(accepted.get(reg_id, []))],
            }
            for reg_id, value, register in listed
        ],
        "reg-list-length": len(all_ids) if isinstance(all_ids, list) else None,
        "not-recorded": not_recorded(capabilities),
    }


def not_recorded(capabilities: Capabilities) -> dict[str, str]:
    """NOT_RECORDED's entries for what the implementation did not report: the CPU, and the
    capabilities, all of them or (an implementation that reports only what it knows, as the
    reference reports only what the spec dates) those of REPORTED_CAPABILITIES it left out."""
    missing = {}
    if capabilities.cpu is None:
        missing["cpu"] = NOT_RECORDED["cpu"]
    reported = capabilities.kvm_capabilities
    if reported is None:
        missing["capabilities"] = NOT_RECORDED["capabilities"]
    else:
        absent = [name for name in REPORTED_CAPABILITIES if name not in reported]
        if absent:
            missing["capabilities"] = f"the implementation did not report {', '.join(absent)}"
    return missing


def judged_by_registers(
    spec: Spec, kernel_text: str, arch: str, defaults: dict[int, int]
) -> KernelName:
    """A kernel the spec does not know by version (Amazon Linux 2's 4.14 carries the PSCI
    version register as a backport), judged by what it reported instead of refused: the
    oldest release or stable series the spec describes with the same firmware registers and
    the same default PSCI version (KVM's newest), or failing that the same registers."""
    psci = next(r for r in spec.registers if r.kind == "psci-version")
    reported = set(defaults)
    newest = defaults.get(int(psci.ids[arch])) if arch in psci.ids else None
    best: tuple[int, KernelName] | None = None
    for release in spec.releases:
        for stable in (False, True):
            ids = {int(r.ids[arch]) for r in spec.registers if r.exists_on(arch, release, stable)}
            if ids != reported:
                continue
            versions = [v.encoded for v in spec.psci_versions if v.lifetime.covers(release, stable)]
            score = 2 if newest is not None and versions and max(versions) == newest else 1
            name = KernelName(release, stable, text=kernel_text)
            if best is None or score > best[0]:
                best = (score, name)
    if best is None:
        raise UsageError(
            f"kernel {kernel_text!r}: no release the spec describes has its firmware registers "
            f"({', '.join(hex(i) for i in sorted(reported))})"
        )
    score, name = best
    matched = "firmware registers and default PSCI version" if score == 2 else "firmware registers"
    how = (
        f"the spec does not describe kernel {kernel_text}; judged as {name}, the oldest release "
        f"it describes whose {matched} match what the host reported (a distribution backport)"
    )
    return KernelName(name.release, name.stable, how=how, text=kernel_text)


def candidates(spec: Spec, register: Register) -> list[int]:
    """The values worth trying on `register`: every PSCI version, level or single bit the spec
    knows in any release (what a host accepts is the question, not what the spec expects)."""
    if register.kind == "psci-version":
        return sorted(v.encoded for v in spec.psci_versions)
    if register.kind == "level":
        return sorted(v.value for v in register.values)
    return sorted(b.mask for b in register.bits)


def as_json(fingerprint: dict[str, Any]) -> str:
    return json.dumps(fingerprint, indent=1, sort_keys=True) + "\n"


def as_nfd(spec: Spec, fingerprint: dict[str, Any]) -> str:
    """A node-feature-discovery local feature file (`label=value` lines, sorted): the kernel
    as judged, each register's default by name, the newest PSCI version a VMM may pin, and
    each bitmap service the host offers, so schedulers can place and move VMs by label."""
    by_name = {r.name: r for r in spec.registers}
    versions = {v.encoded: v.name for v in spec.psci_versions}
    labels = {"kernel": fingerprint["kernel"]["judged-as"]}
    for entry in fingerprint["registers"]:
        register = by_name.get(entry["name"] or "")
        if register is None:
            continue
        default = int(entry["default"], 16)
        accepts = [int(v, 16) for v in entry["accepts"] or []]
        if register.kind == "psci-version":
            labels["psci-version"] = versions.get(default, hex(default))
            if accepts:
                labels["psci-version.newest-settable"] = versions.get(
                    max(accepts), hex(max(accepts))
                )
        elif register.kind == "level":
            level = next((v.name for v in register.values if v.value == default), hex(default))
            labels[register.name] = level
        elif entry["accepts"] is not None:  # not recorded: no label, rather than a false one
            for bit in register.bits:
                labels[f"{register.name}.{bit.name}"] = "true" if bit.mask in accepts else "false"
    lines = []
    for name, value in sorted(labels.items()):
        assert LABEL_VALUE.match(value), f"label {name}={value} is not a Kubernetes label value"
        lines.append(f"{LABEL_PREFIX}{name}={value}")
    return "\n".join(lines) + "\n"
