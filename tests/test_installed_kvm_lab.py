"""`kvm-fwspec certify --adapter kvm` from a user's install, inside each of the four Debian
guests, which are real arm64 hosts with /dev/kvm: the same verdicts as through the agent.

The harness brings the wheels (kvm-fwspec's from this checkout, its dependencies' for aarch64
from the package index, pip's); the guest makes a virtual environment, pip-installs
kvm-fwspec offline and certifies its own KVM in-process, kernel and host read from the host.
The same kernel is then certified through the kvm agent, case by case.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvm_fwspec.conformance.analyses import migration
from kvm_fwspec.conformance.cases import build_cases
from kvm_fwspec.conformance.lab.installed import certify_installed
from kvm_fwspec.conformance.lab.qemu import Guest
from kvm_fwspec.conformance.lab.qemu_adapter import QemuAdapter, default_cache, prepare
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.verdicts import certify_cases
from kvm_fwspec.spec.loader import load_spec

pytestmark = pytest.mark.lab  # Debian kernels booted under QEMU

SPEC = load_spec()
CACHE = default_cache()


@pytest.mark.parametrize("line", ["5.10", "6.1", "6.12", "7.2"])
def test_an_installed_kvm_fwspec_certifies_its_own_kvm_as_the_agent_does(
    line: str, tmp_path: Path
) -> None:
    report = certify_installed(line, CACHE)
    venv, install, certify, dump, fingerprint = report["steps"]
    print(f"{line}: installed in {install['seconds']} s, certified in {certify['seconds']} s, "
          f"{report['seconds']} s from boot")  # fmt: skip
    assert venv["command"][1:] == ["-m", "venv", "--without-pip", "/tmp/venv"]
    assert install["exit"] == 0, install["output"]
    assert "Successfully installed" in install["output"]
    assert certify["command"][0] == "/tmp/venv/bin/kvm-fwspec"  # the installed command
    assert certify["exit"] == 0, certify["output"]
    installed = json.loads(report["results"])
    run = installed["run"]
    assert run["adapter"] == "kvm" and run["kernel"] == f"{line}.y"
    assert installed["summary"]["conforms"] and installed["summary"]["not-applicable"] == 0
    # dump and fingerprint from the same install: a dump migrate-check reads, of this host
    assert dump["exit"] == 0 and fingerprint["exit"] == 0, dump["output"] + fingerprint["output"]
    saved = tmp_path / "vm.json"
    saved.write_text(report["dump"])
    side = migration.side_from_dump(SPEC, saved)
    assert str(side.profile.release) == line and side.registers
    host = json.loads(report["fingerprint"])
    assert host["kernel"]["judged-as"] == f"{line}.y"
    assert host["kernel"]["reported"] == run["implementation"].removeprefix("Linux KVM ")

    profile = resolve_profile(SPEC, run["kernel"], run["host-profile"])
    kernel, initramfs = prepare(line, CACHE)
    adapter = QemuAdapter(kernel, Guest(kernel, initramfs), 256)
    try:
        assert adapter.capabilities().kernel == run["implementation"].removeprefix("Linux KVM ")
        _, through_agent = certify_cases(adapter, build_cases(SPEC, profile))
    finally:
        adapter.close()
    by_agent = {r.case.id: r.outcome for r in through_agent}
    in_process = {c["id"]: c["outcome"] for c in installed["cases"]}
    assert in_process == by_agent
