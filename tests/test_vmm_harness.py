"""Debian's QEMU builds, unpacked with their whole library closure and their own loader, run
on the real KVM inside a Debian guest host and answer QMP: the ground the VMM certification
stands on."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator

import pytest

from kvm_fwspec.conformance.adapters.agent import AgentAdapter, AgentError
from kvm_fwspec.conformance.lab.qemu_adapter import default_cache
from kvm_fwspec.conformance.lab.tiny_guest import LOAD_ADDRESS, ROUND, assemble, observed
from kvm_fwspec.conformance.lab.vmm import SOURCES, fetch_vmm
from kvm_fwspec.conformance.lab.vmm_host import boot_vmm_host
from kvm_fwspec.conformance.oracle import Oracle
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.spec.loader import load_spec

SPEC = load_spec()

KVM_MACHINE = ["-machine", "virt,gic-version=3", "-accel", "kvm", "-cpu", "host", "-m", "64",
               "-display", "none", "-nodefaults", "-S"]  # fmt: skip


@pytest.fixture(scope="module")
def vmm_host() -> Iterator[AgentAdapter]:
    _, client = boot_vmm_host("6.12", default_cache())  # closing the client stops the guest
    yield client
    client.close()


@pytest.mark.lab
def test_closures_are_whole_and_reduced() -> None:
    for name, major in (("bookworm", "7.2"), ("unstable", None)):
        vmm = fetch_vmm(default_cache(), name)
        assert vmm.packages > 40, vmm
        if major:
            assert vmm.version.split(":")[1].startswith(major), vmm.version
        files = [p for p in vmm.tree.rglob("*") if p.is_file()]
        assert 20 < len(files) < 200  # the binary, its libraries and the loader, not 150 MB
        assert (vmm.tree / vmm.loader).exists()


@pytest.mark.lab
@pytest.mark.parametrize("build", sorted(SOURCES))
def test_each_build_runs_on_real_kvm_and_answers_qmp(vmm_host: AgentAdapter, build: str) -> None:
    started = vmm_host.request("start", {"build": build, "args": KVM_MACHINE})
    version = started["greeting"]["QMP"]["version"]["qemu"]
    assert (version["major"], version["minor"]) == (
        (7, 2) if build == "bookworm" else (version["major"], version["minor"])
    )
    assert version["major"] >= 7
    kvm = vmm_host.request("qmp", {"vm": started["vm"], "execute": "query-kvm"})["reply"]
    assert kvm == {"return": {"enabled": True, "present": True}}
    status = vmm_host.request("qmp", {"vm": started["vm"], "execute": "query-status"})["reply"]
    assert status["return"]["status"] == "prelaunch"
    assert "status" in vmm_host.request("stop", {"vm": started["vm"]})


@pytest.mark.lab
def test_a_qemu_that_will_not_start_is_an_error_with_its_reason(vmm_host: AgentAdapter) -> None:
    with pytest.raises(
        AgentError, match=r"before QMP: qemu-system-aarch64: unsupported machine type"
    ):
        vmm_host.request("start", {"build": "bookworm", "args": ["-machine", "no-such-machine"]})
    with pytest.raises(AgentError, match="KeyError: 'no-such-build'"):
        vmm_host.request("start", {"build": "no-such-build", "args": []})


@pytest.mark.lab
def test_a_qemu_that_quits_after_opening_qmp_is_an_error_quoting_it(vmm_host: AgentAdapter) -> None:
    """QEMU 11 opens its QMP socket before it finds that KVM will not take its PSCI setting."""
    args = [*KVM_MACHINE]
    args[args.index("host")] = "host,kvm-psci-version=2.0"
    with pytest.raises(AgentError, match=r"before QMP: .*does not support PSCI version 2\.0"):
        vmm_host.request("start", {"build": "unstable", "args": args})
    assert vmm_host.request("hello", {})["protocol"] == "kvm-fwspec-vmm/1"


@pytest.mark.lab
def test_probe_vcpu_makes_qemus_vcpu_and_answers_each_set(vmm_host: AgentAdapter) -> None:
    psci_version = 0x6030000000140000
    sets = [[psci_version, 0x10003], [psci_version, 0x10000], [0x6030000000140099, 0]]
    probe = vmm_host.request("probe-vcpu", {"sets": sets})
    assert probe["init"] is None and probe["list-errno"] is None
    assert {"psci-0.2", "pmu-v3"} <= set(probe["features"])
    assert psci_version in probe["listed"]
    assert probe["sets"] == ["EINVAL", None, "ENOENT"]  # 6.12 implements PSCI up to 1.1, not 1.3
    without = vmm_host.request("probe-vcpu", {"sets": [], "without": ["psci-0.2"]})
    assert "psci-0.2" not in without["features"] and without["init"] is None


def guest_calls() -> tuple[list[tuple[int, int]], list[int]]:
    """PSCI_VERSION, PSCI_FEATURES of every PSCI function id the spec knows, SMCCC_VERSION and
    TRNG_VERSION, with what the spec says a default guest of 6.12.y sees for each."""
    profile = resolve_profile(SPEC, "6.12.y", "mitigated")
    oracle = Oracle(SPEC, profile)
    latest = oracle.psci_latest
    version_fid = next(f for f in SPEC.psci_functions if f.name == "psci-version").ids["smc32"]
    features_fid = next(f for f in SPEC.psci_functions if f.name == "psci-features").ids["smc32"]
    calls, expected = [(version_fid, 0)], [latest]
    for function in SPEC.psci_functions:
        for fid in sorted(function.ids.values()):
            calls.append((features_fid, fid))
            expected.append(oracle.psci_features(fid, latest))
    for name in ("smccc-version", "trng-version"):
        smccc = next(f for f in SPEC.smccc_functions if f.name == name)
        assert smccc.returns is not None
        calls.append((smccc.function_id, 0))
        expected.append(smccc.returns)
    return calls, expected


@pytest.mark.lab
@pytest.mark.parametrize("build", sorted(SOURCES))
def test_the_tiny_guest_sees_what_the_spec_says(vmm_host: AgentAdapter, build: str) -> None:
    """The guest, booted by QEMU on real KVM, reports PSCI_VERSION, every PSCI_FEATURES answer, the
    SMCCC and TRNG versions over its UART, then powers itself off."""
    calls, expected = guest_calls()
    image = base64.b64encode(assemble(calls)).decode()
    vmm_host.request("put-file", {"name": "guest.bin", "data": image})
    loader = f"loader,file=/tmp/vmm/guest.bin,addr={LOAD_ADDRESS:#x},cpu-num=0"
    vm = vmm_host.request(
        "start", {"build": build, "args": [*KVM_MACHINE[:-1], "-device", loader]}
    )["vm"]
    deadline = time.monotonic() + 300  # waiting for the guest's power-off, not timing it
    while (console := vmm_host.request("console", {"vm": vm}))[
        "running"
    ] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not console["running"], "the guest did not power off"
    assert vmm_host.request("stop", {"vm": vm})["status"] == 0  # QEMU left on SYSTEM_OFF
    assert observed(base64.b64decode(console["data"]), len(calls)) == [expected]
    assert len(calls) > 30


def test_rounds_are_found_at_any_byte() -> None:
    """A guest saved in the middle of writing a word resumes on the target mid-word."""
    marker = struct.pack("<q", ROUND)
    uart = (
        b"\x01\x02\x03" + marker + struct.pack("<qq", 0x10001, -1) + marker + struct.pack("<q", 5)
    )
    assert observed(uart, 2) == [[0x10001, -1]]  # the last round is cut short
