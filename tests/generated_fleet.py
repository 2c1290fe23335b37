"""Fleets for the plan's tests and benchmark: real fingerprints taken from the reference
implementation (through the same take() as real KVM) for each release and host profile the
spec knows, copied onto many hosts with the CPUs of real Graviton machines."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.analyses.dump import greeted_as_host
from kvm_fwspec.conformance.analyses.fingerprint import as_json, take
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.model import Spec

# MIDR_EL1 and REVIDR_EL1 of Neoverse N1, V1 and V2 hosts, as Firecracker's published
# Graviton fingerprints record them (tests/fixtures/firecracker-fingerprints).
GRAVITON_CPUS = (("0x413fd0c1", "0xff"), ("0x411fd401", "0x1"), ("0x410fd4f1", "0x17"))


def reference_fingerprint(
    spec: Spec, kernel: str, host: str, name: str, arch: str = "arm64"
) -> dict[str, Any]:
    adapter, profile = greeted_as_host("reference", spec, (kernel, host, arch), {})
    try:
        return take(adapter, spec, profile, parse_kernel_name(spec, kernel), name)
    finally:
        adapter.close()


def kinds(spec: Spec) -> list[dict[str, Any]]:
    """One fingerprint per release (as tagged and its stable series) and host profile."""
    found = []
    for release in spec.releases:
        for kernel in (str(release), f"{release}.y"):
            for host in spec.host_profiles:
                try:
                    found.append(
                        reference_fingerprint(spec, kernel, host.name, f"{kernel}-{host.name}")
                    )
                except UsageError:
                    continue  # a release with no firmware register (4.16 as tagged)
    return found


def fleet(spec: Spec, hosts: int, folder: Path) -> list[Path]:
    """`hosts` fingerprint files in `folder`: the kinds dealt round-robin, each host with its
    own name and one of the Graviton CPUs."""
    paths = []
    kinds_cycle = itertools.cycle(kinds(spec))
    for number in range(hosts):
        document = dict(next(kinds_cycle))
        midr, revidr = GRAVITON_CPUS[number % len(GRAVITON_CPUS)]
        document["host"] = f"host-{number:05d}"
        document["cpu"] = {"midr": midr, "revidr": revidr}
        path = folder / f"host-{number:05d}.json"
        path.write_text(as_json(document), encoding="utf-8")
        paths.append(path)
    return paths


def write_kinds(spec: Spec, folder: Path) -> list[Path]:
    paths = []
    for document in kinds(spec):
        path = folder / f"{document['host']}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        paths.append(path)
    return paths
