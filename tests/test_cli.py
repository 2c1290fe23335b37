"""The command line: decode, show and validate as a user runs them, and what every command
shares: --version, --spec-dir and one-line usage errors (tests/test_bad_commands.py runs every
bad command, and a reader that goes away)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kvm_fwspec.codegen import __version__
from kvm_fwspec.conformance.commands import generate as generate_command
from kvm_fwspec.conformance.commands.cli import main
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


def test_show_an_smccc_filter_rule_and_suggest_it_for_a_typo() -> None:
    rule = kvm_fwspec("show", "smccc-filter/call/forward")
    assert "a guest's call while the VM has an SMCCC filter, arm64, since 6.4" in rule.stdout
    assert "then: KVM_RUN exits with KVM_EXIT_HYPERCALL (3)" in rule.stdout
    typo = kvm_fwspec("show", "smccc-filter/call/foward")
    assert typo.returncode == 2
    assert "did you mean smccc-filter/call/forward," in typo.stderr


def test_show_a_stolen_time_rule_its_attribute_and_suggest_it_for_a_typo() -> None:
    rule = kvm_fwspec("show", "stolen-time/pv-time-st/address")
    assert "a guest's PV_TIME_ST, arm64, since 5.5" in rule.stdout
    assert "then: the vcpu's stolen-time address\n" in rule.stdout
    attribute = kvm_fwspec("show", "kvm_arm_vcpu_pvtime_ctrl")
    assert attribute.stdout.startswith(
        "the vcpu attribute group of stolen time (since 5.5): KVM_ARM_VCPU_PVTIME_CTRL "
        "(pvtime-ctrl) = 2: "
    )
    section = kvm_fwspec("show", "stolen-time").stdout.splitlines()
    assert section[0].startswith("stolen time (PV time, since 5.5): ")
    assert section[-1] == (
        "  pv-time-st: stolen-time/pv-time-st/no-address, stolen-time/pv-time-st/address"
    )
    typo = kvm_fwspec("show", "stolen-time/set/alredy-set")
    assert typo.returncode == 2
    assert "did you mean stolen-time/set/already-set," in typo.stderr


def test_show_names_the_smccc_filter_s_abi_by_its_kernel_names() -> None:
    action = kvm_fwspec("show", "kvm_smccc_filter_fwd_to_user")
    assert action.stdout.startswith(
        "an SMCCC filter action (since 6.4): KVM_SMCCC_FILTER_FWD_TO_USER (fwd-to-user) = 2: "
    )
    exit_reason = kvm_fwspec("show", "KVM_EXIT_HYPERCALL")
    assert "KVM_EXIT_HYPERCALL (hypercall) = 3" in exit_reason.stdout
    typo = kvm_fwspec("show", "KVM_ARM_VM_SMCCC_FILTR")
    assert "did you mean KVM_ARM_VM_SMCCC_FILTER" in typo.stderr


def test_show_names_the_api_s_states_features_capabilities_and_ioctls() -> None:
    """The names a VMM author meets in the power and capability cases are found by their
    kernel names (any case) and the spec's, and a typo of one is suggested."""
    stopped = kvm_fwspec("show", "kvm_mp_state_stopped")
    assert stopped.stdout.startswith("KVM_GET_MP_STATE state KVM_MP_STATE_STOPPED (stopped) = 5: ")
    assert "vcpu feature KVM_ARM_VCPU_POWER_OFF (bit 0" in kvm_fwspec("show", "power-off").stdout
    capability = kvm_fwspec("show", "KVM_CAP_ARM_SYSTEM_SUSPEND").stdout
    assert "= 216, since 5.19; enabled on a VM with KVM_ENABLE_CAP" in capability
    assert kvm_fwspec("show", "KVM_ENABLE_CAP").stdout.startswith(
        "ioctl KVM_ENABLE_CAP = 0x4068aea3"
    )
    assert "did you mean KVM_MP_STATE_STOPPED" in kvm_fwspec("show", "KVM_MP_STATE_STOPED").stderr


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
    assert f"{len(spec.smccc_filter.rules)} SMCCC filter rules" in result.stdout


def test_missing_spec_directory_is_one_line() -> None:
    """A usage error (exit 2, as for --spec-dir), with no line number: there is no file."""
    result = kvm_fwspec("validate", "/nonexistent/spec")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "kvm-fwspec: SPEC_DIR /nonexistent/spec does not exist\n"


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


def test_decode_reads_several_ids_on_a_line() -> None:
    """Ids separated by whitespace on one line (as pasted from a listing) are separate ids;
    the kernel documentation's spelling of one id in groups of four stays one id."""
    result = kvm_fwspec(
        "decode", stdin="0x6030000000160000 6931039826524504064\n0x6030 0000 0014 0002\t0x1\n"
    )
    assert result.returncode == 0, result.stderr
    firsts = [line for line in result.stdout.splitlines() if line.startswith("id ")]
    assert firsts == [
        "id 0x6030000000160000",
        "id 0x6030000000140000",
        "id 0x6030000000140002",
        "id 0x0000000000000001",
    ]


def test_decode_refuses_thousands_of_digits_on_standard_input_in_one_line() -> None:
    result = kvm_fwspec("decode", stdin="9" * 5000 + "\n")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"kvm-fwspec: '{'9' * 40}...' (5000 characters) does not fit in 64 bits\n"
    )


@pytest.mark.parametrize(
    ("errors", "stderr"),
    [
        ("surrogateescape", "kvm-fwspec: '0x60\\xff' is not a register id (expected hex such "
                            "as 0x6030000000140000, or decimal as dump files write it)\n"),
        ("strict", "kvm-fwspec: decode: standard input is not text (byte 0xff at offset 4 is "
                   "not utf-8)\n"),
    ],
    ids=["escaped-by-the-locale", "strict-decoding"],
)  # fmt: skip
def test_bytes_that_are_not_text_on_standard_input_are_one_line(errors: str, stderr: str) -> None:
    """Python reads standard input with surrogateescape under the C locale and strictly under
    a UTF-8 one; either way a byte that is not text is one line, shown as an escape."""
    result = subprocess.run(
        [*KVM_FWSPEC, "decode"],
        input=b"0x60\xff\n",
        capture_output=True,
        env=os.environ | {"PYTHONIOENCODING": f"utf-8:{errors}"},
    )
    assert (result.returncode, result.stdout, result.stderr.decode()) == (2, b"", stderr)


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


def test_show_describes_a_host_profile() -> None:
    result = kvm_fwspec("show", "mitigated")
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert (
        lines[0] == "host profile: mitigated (--host mitigated, or levels:avail/not-required/avail)"
    )
    assert lines[1].startswith("  A host whose CPUs are affected")
    assert lines[2:] == [
        "  KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1 (smccc-arch-workaround-1): avail = 1, "
        "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1_AVAIL",
        "  KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2 (smccc-arch-workaround-2): not-required = 3, "
        "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2_NOT_REQUIRED",
        "  KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3 (smccc-arch-workaround-3): avail = 1, "
        "KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3_AVAIL",
    ]
    every = [kvm_fwspec("show", host.name) for host in load_spec().host_profiles]
    assert all(r.returncode == 0 and r.stdout.startswith("host profile: ") for r in every)


def test_show_suggests_a_host_profile_for_a_typo() -> None:
    result = kvm_fwspec("show", "mitigatd")
    assert (result.returncode, result.stderr) == (
        2,
        "kvm-fwspec: nothing in the spec is named 'mitigatd'; did you mean mitigated?\n",
    )


def test_generate_check_outside_a_checkout_says_what_check_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An installed wheel has no checkout (checkout_root() is None there): --check, which
    writes nothing, is not told that generate writes into a checkout."""
    monkeypatch.setattr(generate_command, "checkout_root", lambda: None)
    assert main(["generate", "--check"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        "kvm-fwspec: generate --check compares a kvm-fwspec source checkout's generated files "
        "with the spec; an installed package has no such files to compare (run it in a "
        "checkout)\n",
    )
    assert main(["generate"]) == 2
    assert "generate writes into a kvm-fwspec source checkout" in capsys.readouterr().err


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
        (["--versoin"], "kvm-fwspec: unrecognized option '--versoin'; did you mean --version? "
                        "(see kvm-fwspec --help)\n"),
        (["-x", "show", "psci-version"], "kvm-fwspec: unrecognized option '-x' "
                                         "(see kvm-fwspec --help)\n"),
        (["verify", "a.json", "b.json"], "kvm-fwspec: verify: unrecognized arguments: b.json "
                                         "(see kvm-fwspec verify --help)\n"),
    ],
    ids=["missing-required", "mistyped-option", "mistyped-command", "no-command",
         "mistyped-option-before-command", "unknown-short-option-before-command",
         "extra-argument-after-command"],
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


def test_spec_dir_arguments_work_after_a_top_level_option() -> None:
    """The top parser checks only its own words: `--spec-dir DIR` before the command, with its
    value, and a subcommand's options after it, are not taken for unknown options."""
    result = kvm_fwspec("--spec-dir", str(ROOT / "spec"), "decode", "--json", "0x6030000000140000")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["id"] == "0x6030000000140000"


def _spec_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "spec"
    shutil.copytree(ROOT / "spec", copy, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return copy


def _one_line(result: subprocess.CompletedProcess[str], status: int, stderr: str) -> None:
    assert "Traceback" not in result.stderr
    assert (result.returncode, result.stdout, result.stderr) == (status, "", stderr)


def test_an_empty_spec_file_is_said_to_be_empty(tmp_path: Path) -> None:
    spec = _spec_copy(tmp_path)
    (spec / "rules.yaml").write_bytes(b"")
    _one_line(
        kvm_fwspec("validate", str(spec)),
        1,
        f"kvm-fwspec: {spec}/rules.yaml:1: document is empty\n",
    )


def test_a_folder_without_spec_files_is_said_to_hold_none(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a spec\n")
    _one_line(
        kvm_fwspec("validate", str(tmp_path)),
        2,
        f"kvm-fwspec: spec directory {tmp_path} holds none of the spec files (kernels.yaml, "
        "encoding.yaml, api.yaml, registers.yaml, psci.yaml, smccc.yaml, smccc-filter.yaml, rules.yaml, vmm.yaml, "
        "schema/kvm-fwspec.schema.yaml): is it the spec folder?\n",
    )


@pytest.mark.parametrize("kind", ["missing", "file"], ids=["missing", "a-file"])
def test_a_bad_spec_dir_variable_is_named(tmp_path: Path, kind: str) -> None:
    chosen = tmp_path / "chosen"
    if kind == "file":
        chosen.write_text("a file\n")
    problem = "does not exist" if kind == "missing" else "is a file, not a folder"
    result = subprocess.run(
        [*KVM_FWSPEC, "show", "psci-version"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=os.environ | {"KVM_FWSPEC_SPEC_DIR": str(chosen)},
    )
    _one_line(
        result,
        2,
        f"kvm-fwspec: $KVM_FWSPEC_SPEC_DIR names {chosen}, which {problem}: point it at the "
        "folder of spec files, or unset it\n",
    )


# A FIFO where a file is read blocks until a writer comes: each command must refuse it
# without opening it. The timeout only keeps a regression from hanging the suite; a pass never
# depends on it.
NO_HANG = 120


@pytest.mark.parametrize(
    "where", ["rules.yaml", "schema/kvm-fwspec.schema.yaml"], ids=["spec-file", "schema"]
)
def test_a_fifo_in_the_spec_dir_is_refused_not_read(tmp_path: Path, where: str) -> None:
    spec = _spec_copy(tmp_path)
    (spec / where).unlink()
    os.mkfifo(spec / where)
    result = subprocess.run(
        [*KVM_FWSPEC, "validate", str(spec)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=NO_HANG,
    )
    _one_line(
        result,
        2,
        f"kvm-fwspec: {spec / where} is a FIFO, not a regular file: a spec file must be one\n",
    )


def test_validate_of_a_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = subprocess.run(
        [*KVM_FWSPEC, "validate", str(fifo)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=NO_HANG,
    )
    _one_line(result, 2, f"kvm-fwspec: {fifo} is a FIFO; SPEC_DIR is the folder of spec files\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]
