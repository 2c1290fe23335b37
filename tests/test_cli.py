"""The command line: decode, show and validate as a user runs them."""

from __future__ import annotations

import subprocess

from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC


def kvm_fwspec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVM_FWSPEC, *args],
        capture_output=True,
        text=True,
    )


def test_decode_psci_version_register() -> None:
    result = kvm_fwspec("decode", "0x6030000000140000")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "id 0x6030000000140000"
    assert "arch      bits 63-56 = 0x60 arm64 (KVM_REG_ARM64)" in lines[1]
    assert "size      bits 55-52 = 0x3 u64 (KVM_REG_SIZE_U64)" in lines[2]
    assert "class     bits 27-16 = 0x14 fw (KVM_REG_ARM_FW)" in lines[4]
    assert "index     bits 15-0  = 0x0" in lines[5]
    assert "register: KVM_REG_ARM_PSCI_VERSION (psci-version)" in result.stdout
    assert "history: since 4.17 (backported to 4.16); arm hosts until 5.7" in result.stdout
    assert (
        "default (KVM_ARM_PSCI_LATEST): 1.0 from 4.16, 1.1 from 5.18, 1.3 from 6.13"
        in result.stdout
    )


def test_decode_accepts_the_documentation_spelling_and_arm_ids() -> None:
    result = kvm_fwspec("decode", "0x4030 0000 0014 0002")
    assert "register: KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2" in result.stdout
    assert "arm (KVM_REG_ARM)" in result.stdout


def test_decode_names_fields_of_registers_the_spec_does_not_define() -> None:
    result = kvm_fwspec(
        "decode", "0x603000000013c082"
    )  # a sysreg id: op0=3 op1=0 crn=1 crm=0 op2=2
    assert "sysreg (KVM_REG_ARM64_SYSREG)" in result.stdout
    assert "index fields: op0=3, op1=0, crn=1, crm=0, op2=2" in result.stdout
    assert "not a firmware pseudo-register the spec defines" in result.stdout


def test_decode_flags_reserved_bits() -> None:
    result = kvm_fwspec("decode", "0x6030000100140000")
    assert "reserved  bits 51-28 = 0x10  <- must be zero" in result.stdout


def test_decode_rejects_garbage_with_one_line() -> None:
    result = kvm_fwspec("decode", "0xnothex")
    assert result.returncode == 2
    assert (
        result.stderr
        == "kvm-fwspec: '0xnothex' is not a register id (expected hex such as 0x6030000000140000)\n"
    )


def test_show_a_rule_and_a_value() -> None:
    rule = kvm_fwspec("show", "psci-version/set/reject-0.1-with-psci-0.2")
    assert "when: value == psci(0, 1) and vcpu.psci-0.2" in rule.stdout
    assert "then: errno EINVAL (22)" in rule.stdout
    value = kvm_fwspec("show", "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_ENABLED")
    assert "bit 4 of KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2" in value.stdout


def test_show_unknown_name_is_a_usage_error() -> None:
    result = kvm_fwspec("show", "no-such-thing")
    assert result.returncode == 2
    assert result.stderr == "kvm-fwspec: nothing in the spec is named 'no-such-thing'\n"


def test_validate_prints_counts_from_the_spec() -> None:
    spec = load_spec()
    result = kvm_fwspec("validate")
    assert result.returncode == 0
    assert f"{len(spec.registers)} registers" in result.stdout
    assert f"{len(spec.rules)} rules" in result.stdout


def test_missing_spec_directory_is_one_line() -> None:
    result = kvm_fwspec("validate", "/nonexistent/spec")
    assert result.returncode == 1
    assert result.stderr == "kvm-fwspec: /nonexistent/spec:1: spec directory does not exist\n"
