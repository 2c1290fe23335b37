"""Debian's QEMU builds, unpacked with their whole library closure and their own loader, run
on the real KVM inside a Debian guest host and answer QMP: the ground the VMM certification
stands on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance.adapters.agent import AgentAdapter, AgentError
from conformance.adapters.qemu import default_cache
from conformance.harness.vmm import SOURCES, boot_vmm_host, fetch_vmm

KVM_MACHINE = ["-machine", "virt,gic-version=3", "-accel", "kvm", "-cpu", "host", "-m", "64",
               "-display", "none", "-nodefaults", "-S"]  # fmt: skip


@pytest.fixture(scope="module")
def vmm_host() -> Iterator[AgentAdapter]:
    _, client = boot_vmm_host("6.12", default_cache())  # closing the client stops the guest
    yield client
    client.close()


def test_closures_are_whole_and_reduced() -> None:
    for name, major in (("bookworm", "7.2"), ("unstable", None)):
        vmm = fetch_vmm(default_cache(), name)
        assert vmm.packages > 40, vmm
        if major:
            assert vmm.version.split(":")[1].startswith(major), vmm.version
        files = [p for p in vmm.tree.rglob("*") if p.is_file()]
        assert 20 < len(files) < 200  # the binary, its libraries and the loader, not 150 MB
        assert (vmm.tree / vmm.loader).exists()


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


def test_a_qemu_that_will_not_start_is_an_error_with_its_reason(vmm_host: AgentAdapter) -> None:
    with pytest.raises(
        AgentError, match=r"before QMP: qemu-system-aarch64: unsupported machine type"
    ):
        vmm_host.request("start", {"build": "bookworm", "args": ["-machine", "no-such-machine"]})
    with pytest.raises(AgentError, match="KeyError: 'no-such-build'"):
        vmm_host.request("start", {"build": "no-such-build", "args": []})
