"""`--adapter kvm`: real KVM in-process. On a machine that cannot serve arm64 KVM every command
that opens it says why in one line; on arm64 (the QEMU guests of the lab, issue 17's proof) it
runs the `kvm` agent's own implementation, so the two cannot drift apart."""

from __future__ import annotations

import os
import subprocess

import pytest

from kvm_fwspec.conformance.adapters import kvm
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC

SPEC = load_spec()
PROFILE = resolve_profile(SPEC, "6.1", "mitigated")
NOT_ARM64 = os.uname().machine not in ("aarch64", "arm64")


@pytest.mark.skipif(not NOT_ARM64, reason="the refusal of a machine that is not arm64")
@pytest.mark.parametrize(
    "command",
    [
        ["fingerprint", "--adapter", "kvm", "--kernel", "auto", "--host", "auto"],
        ["dump", "--adapter", "kvm", "--kernel", "auto", "--host", "auto", "--output", "d.json"],
        ["certify", "--adapter", "kvm", "--kernel", "6.1"],
        ["certify", "--adapter", "kvm", "--kernel", "auto", "--host", "auto"],
    ],
    ids=["fingerprint", "dump", "certify", "certify-auto"],
)
def test_a_machine_that_is_not_arm64_is_one_line(command: list[str], tmp_path: object) -> None:
    result = subprocess.run(
        [*KVM_FWSPEC, *command], capture_output=True, text=True, cwd=str(tmp_path)
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"kvm-fwspec: --adapter kvm: real KVM needs an arm64 host, and this machine is {os.uname().machine}"
    ), result.stderr
    assert "(use --adapter reference, or --adapter qemu" in result.stderr  # options it has
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_an_unknown_option_is_refused_before_kvm_is_opened() -> None:
    with pytest.raises(UsageError, match="devic"):
        kvm.create(PROFILE, {"devic": "/dev/kvm"})
