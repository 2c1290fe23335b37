"""The command line: decode, show and validate as a user runs them, and what every command
shares: --version, --spec-dir and one-line usage errors (tests/test_bad_commands.py runs every
bad command, and a reader that goes away)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kvm_fwspec.codegen import __version__
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC, ROOT


def kvm_fwspec(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVM_FWSPEC, *args],
        capture_output=True,
        text=True,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
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
        == "kvm-fwspec: '0xnothex' is not a register id (expected hex such as 0x6030000000140000, "
        "or decimal as dump files write it)\n"
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


def test_decode_reads_decimal_ids_as_dump_files_write_them() -> None:
    decimal = kvm_fwspec("decode", str(0x6030000000140000))
    assert decimal.returncode == 0, decimal.stderr
    assert decimal.stdout.splitlines()[0] == "id 0x6030000000140000"
    assert decimal.stdout == kvm_fwspec("decode", "0x6030000000140000").stdout


def test_decode_reads_bare_hex_with_a_letter_and_refuses_the_ambiguous_width() -> None:
    bare = kvm_fwspec("decode", "603000000014000a")
    assert bare.stdout.splitlines()[0] == "id 0x603000000014000a"
    ambiguous = kvm_fwspec("decode", "6030000000140000")
    assert ambiguous.returncode == 2
    assert ambiguous.stderr == (
        "kvm-fwspec: '6030000000140000' could be decimal or hex: write 0x6030000000140000 "
        "for hex (a decimal id has 19 or 20 digits)\n"
    )


def test_decode_reads_ids_from_standard_input() -> None:
    ids = "0x6030000000140000\n\n6931039826524635136\n"
    for args in (["decode", "-"], ["decode"]):
        result = kvm_fwspec(*args, stdin=ids)
        assert result.returncode == 0, result.stderr
        firsts = [line for line in result.stdout.splitlines() if line.startswith("id ")]
        assert firsts == ["id 0x6030000000140000", "id 0x6030000000160000"]


def test_decode_with_nothing_to_decode_is_one_line() -> None:
    result = kvm_fwspec("decode")  # standard input is /dev/null: no ids on it
    assert (result.returncode, result.stderr) == (
        2,
        "kvm-fwspec: decode: standard input held no register ids\n",
    )


def test_decode_json_gives_ids_as_hex_strings() -> None:
    result = kvm_fwspec("decode", "--json", "0x6030000000140000", "0x603000000013c082")
    assert result.returncode == 0, result.stderr
    psci, sysreg = json.loads(result.stdout)
    assert psci["id"] == "0x6030000000140000"
    assert psci["id-decimal"] == "6931039826524504064"
    assert psci["fields"]["class"] | {"bits": None} == {
        "bits": None, "value": 0x14, "name": "fw", "c-name": "KVM_REG_ARM_FW"
    }  # fmt: skip
    assert psci["register"] == {
        "name": "psci-version", "c-name": "KVM_REG_ARM_PSCI_VERSION", "kind": "psci-version"
    }  # fmt: skip
    assert sysreg["register"] is None
    assert sysreg["fields"]["class"]["index-fields"] == {
        "op0": 3, "op1": 0, "crn": 1, "crm": 0, "op2": 2
    }  # fmt: skip


def test_show_finds_values_and_bits_by_spec_name() -> None:
    bit = kvm_fwspec("show", "trng-v1.0")
    assert bit.returncode == 0, bit.stderr
    assert bit.stdout.startswith(
        "bit: KVM_REG_ARM_STD_BIT_TRNG_V1_0 (trng-v1.0) = bit 0 of KVM_REG_ARM_STD_BMAP"
    )
    shared = kvm_fwspec("show", "not-required")  # a level of all three workaround registers
    owners = [line.split(" of ")[1].split(",")[0] for line in shared.stdout.splitlines()]
    assert owners == [f"KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_{n}" for n in (1, 2, 3)]


def test_show_suggests_close_names() -> None:
    result = kvm_fwspec("show", "trng-v1.1")
    assert (result.returncode, result.stderr) == (
        2,
        "kvm-fwspec: nothing in the spec is named 'trng-v1.1'; did you mean trng-v1.0?\n",
    )


def test_version_is_the_package_version() -> None:
    result = kvm_fwspec("--version")
    assert (result.returncode, result.stdout) == (0, f"kvm-fwspec {__version__}\n")


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (["dump"], "kvm-fwspec: dump: the following arguments are required: --output "
                   "(see kvm-fwspec dump --help)\n"),
        (["dump", "--ouput", "x.json"], "kvm-fwspec: dump: unrecognized option '--ouput'; "
                                        "did you mean --output? (see kvm-fwspec dump --help)\n"),
        (["dumpp"], "kvm-fwspec: no command 'dumpp'; did you mean dump? (see kvm-fwspec --help)\n"),
        ([], "kvm-fwspec: the following arguments are required: COMMAND (see kvm-fwspec --help)\n"),
    ],
    ids=["missing-required", "mistyped-option", "mistyped-command", "no-command"],
)  # fmt: skip
def test_argparse_mistakes_are_one_line(args: list[str], stderr: str) -> None:
    result = kvm_fwspec(*args)
    assert (result.returncode, result.stderr, result.stdout) == (2, stderr, "")


def _edited_spec(tmp_path: Path) -> Path:
    """A copy of spec/ whose `unaffected` host profile is renamed: only a command that loads
    this copy knows the new name."""
    copy = tmp_path / "edited-spec"
    shutil.copytree(ROOT / "spec", copy, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    registers = copy / "registers.yaml"
    text = registers.read_text(encoding="utf-8")
    assert text.count("  - name: unaffected\n") == 1
    registers.write_text(text.replace("  - name: unaffected\n", "  - name: edited-unaffected\n"))
    return copy


@pytest.mark.parametrize("where", ["before", "after"], ids=["before-command", "after-command"])
def test_dump_loads_the_spec_dir_it_is_given(tmp_path: Path, where: str) -> None:
    spec_dir, output = _edited_spec(tmp_path), tmp_path / "dump.json"
    dump = ["dump", "--host", "edited-unaffected", "--output", str(output)]
    unedited = kvm_fwspec(*dump)
    assert unedited.returncode == 2 and "'edited-unaffected' is not one of" in unedited.stderr
    option = ["--spec-dir", str(spec_dir)]
    result = kvm_fwspec(*(option + dump if where == "before" else dump + option))
    assert result.returncode == 0, result.stderr
    assert json.loads(output.read_text())["host-profile"] == "edited-unaffected"


@pytest.mark.parametrize("command", [["verify", "results.json"], ["validate"], ["decode", "0x1"]],
                         ids=["verify", "validate", "decode"])  # fmt: skip
def test_a_missing_spec_dir_is_one_line(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing"
    result = kvm_fwspec(command[0], "--spec-dir", str(missing), *command[1:])
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"kvm-fwspec: --spec-dir {missing} does not exist\n"
