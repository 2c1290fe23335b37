"""certify gives a verdict only from this run's evidence, and publishes a report only for a run
that completed. Each test feeds it a wrong input a user really gives (an earlier report in the
folder, a kernel with nothing to certify, a dead agent, a file for a folder) and checks the one
line, the exit code and that the report folder is left exactly as it was."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kvm_fwspec.conformance.report_folder import ReportFolder
from kvm_fwspec.spec.errors import UsageError
from tests.checkout import KVM_FWSPEC, ROOT

AGENT = shlex.join([*KVM_FWSPEC, "agent"])


def certify(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVM_FWSPEC, "certify", "-q", *args], capture_output=True, text=True, cwd=cwd
    )


def one_line_refusal(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a refused run, with nothing on stdout and no traceback."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvm-fwspec: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def earlier_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a real, conforming 6.1 report, as a user's reports/ would."""
    folder = tmp_path_factory.mktemp("reports") / "d"
    result = certify("--kernel", "6.1", "--report", str(folder))
    assert result.returncode == 0, result.stderr
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_kernel_without_firmware_registers_is_refused_not_reported_as_the_earlier_run(
    earlier_report: Path,
) -> None:
    before = snapshot(earlier_report)
    line = one_line_refusal(certify("--kernel", "4.16", "--report", str(earlier_report)))
    assert "no firmware register for arm64 4.16" in line and "4.16.y" in line
    assert snapshot(earlier_report) == before


def test_an_agent_that_cannot_start_is_one_line_and_leaves_the_earlier_report(
    earlier_report: Path,
) -> None:
    before = snapshot(earlier_report)
    result = certify(
        "--adapter", "agent", "--option", "command=/nonexistent/agent",
        "--report", str(earlier_report),
    )  # fmt: skip
    assert "/nonexistent/agent" in one_line_refusal(result)
    assert snapshot(earlier_report) == before


def test_an_agent_that_dies_before_its_hello_is_one_line(earlier_report: Path) -> None:
    before = snapshot(earlier_report)
    dying = shlex.join([sys.executable, "-c", "import sys; sys.exit(3)"])
    result = certify(
        "--adapter", "agent", "--option", f"command={dying}", "--report", str(earlier_report)
    )
    assert "did not complete its hello" in one_line_refusal(result)
    assert snapshot(earlier_report) == before


def test_an_agent_claiming_another_kernel_is_refused_before_any_case(tmp_path: Path) -> None:
    command = f"command={AGENT} --kernel 6.1"
    result = certify(
        "--adapter",
        "agent",
        "--option",
        command,
        "--kernel",
        "6.12",
        "--report",
        str(tmp_path / "r"),
    )
    line = one_line_refusal(result)
    assert "says it is KVM 6.1" in line and "6.12" in line
    assert not (tmp_path / "r").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no staging folder left behind


def test_an_agent_naming_the_stable_series_is_held_to_it(tmp_path: Path) -> None:
    """An agent's hello may name its kernel as --kernel does (`6.1.y`); it used to have to equal
    the bare release, or every case became an error."""
    command = f"command={AGENT} --kernel 6.1.y"
    result = certify(
        "--adapter",
        "agent",
        "--option",
        command,
        "--kernel",
        "6.1.y",
        "--report",
        str(tmp_path / "r"),
    )
    assert result.returncode == 0, result.stderr
    assert "CONFORMS: kvm-fwspec reference as arm64 6.1.y" in result.stdout


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: d.write_text("not a folder"), id="report-is-a-file"),
        pytest.param(
            lambda d: (d / "results.json").mkdir(parents=True), id="results-json-is-a-folder"
        ),
    ],
)
def test_a_report_folder_that_cannot_take_a_report_is_refused_before_the_run(
    tmp_path: Path, make: object
) -> None:
    target = tmp_path / "r"
    make(target)  # type: ignore[operator]
    line = one_line_refusal(certify("--report", str(target)))
    assert str(target) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_report_under_a_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    line = one_line_refusal(certify("--report", str(tmp_path / "plain" / "r")))
    assert f"{tmp_path / 'plain'} is a file" in line


def test_an_unfinished_run_leaves_the_report_folder_as_it_was(earlier_report: Path) -> None:
    before = snapshot(earlier_report)
    folder = ReportFolder(earlier_report)
    (folder.staging / "results.json").write_text("{}")  # what a run stopped halfway left
    folder.discard()
    assert snapshot(earlier_report) == before
    assert not folder.staging.exists()


def test_publishing_removes_an_earlier_runs_signature(tmp_path: Path) -> None:
    target = tmp_path / "r"
    target.mkdir()
    (target / "results.json.sig").write_text("signature of another run")
    (target / "notes.txt").write_text("the user's own file")
    folder = ReportFolder(target)
    (folder.staging / "results.json").write_text("{}")
    folder.publish()
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt", "results.json"]


def test_report_files_are_readable_as_the_umask_allows(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "sh",
            "-c",
            'umask 022 && exec "$@"',
            "sh",
            *KVM_FWSPEC,
            "certify",
            "-q",
            "--report",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for path in (tmp_path / "r").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_run_without_guest_calls_never_earns_a_bare_conforms(tmp_path: Path) -> None:
    narrow = ("--option", "without=guest-calls", "--report", str(tmp_path / "r"))
    result = certify(*narrow)
    assert result.returncode == 0, result.stderr
    assert "CONFORMS (121 of 759 cases not applicable: needs guest-calls)" in result.stdout
    page = (tmp_path / "r" / "report.html").read_text()
    assert (
        "121 of 759 cases were not applicable</b>: the implementation lacks what they need" in page
    )
    assert "lacks what they need (guest-calls), so they were not judged" in page
    strict = certify(*narrow, "--require-all")
    assert strict.returncode == 1
    assert "DOES NOT CONFORM (--require-all: 121 of 759" in strict.stdout


def test_the_verdict_names_the_host_profile_auto_resolved_to(tmp_path: Path) -> None:
    command = f"command={AGENT} --kernel 6.12 --host mitigated-ssbs"
    result = certify(
        "--adapter", "agent", "--option", command, "--kernel", "6.12", "--host", "auto",
        "--report", str(tmp_path / "r"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "host=mitigated-ssbs:" in result.stdout and "auto" not in result.stdout


def test_progress_is_shown_unless_quiet(tmp_path: Path) -> None:
    result = subprocess.run(
        [*KVM_FWSPEC, "certify", "--report", str(tmp_path / "r")], capture_output=True, text=True
    )
    progress = result.stderr.splitlines()
    assert len(progress) == 10 and progress[-1].startswith(
        "kvm-fwspec: 759/759 cases, 0 fail, 0 error,"
    )


def test_a_failing_implementation_is_reproduced_by_replay(tmp_path: Path) -> None:
    """A wrong host (vulnerable, certified as mitigated) fails the workaround cases; the recorded
    program of one replays to the same difference, and passes on the reference."""
    wrong = f"command={AGENT} --kernel 6.12 --host vulnerable"
    report = tmp_path / "r"
    result = certify(
        "--adapter", "agent", "--option", wrong, "--kernel", "6.12", "--report", str(report)
    )
    assert result.returncode == 1 and "DOES NOT CONFORM" in result.stdout
    document = json.loads((report / "results.json").read_text())
    failed = next(c for c in document["cases"] if c["outcome"] == "fail")
    assert all(step["reg"].startswith("0x") for step in failed["program"]["steps"] if "reg" in step)
    again = subprocess.run(
        [*KVM_FWSPEC, "replay", str(report / "results.json"), failed["id"], "--option", wrong],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1, again.stderr
    assert "!= step" in again.stdout
    assert f"kvm-fwspec: replayed fail (recorded fail): {failed['reason']}" in again.stdout
    on_reference = subprocess.run(
        [
            *KVM_FWSPEC,
            "replay",
            str(report / "results.json"),
            failed["id"],
            "--adapter",
            "reference",
        ],
        capture_output=True,
        text=True,
    )
    assert on_reference.returncode == 0, on_reference.stderr
    assert "replayed pass (recorded fail)" in on_reference.stdout


def test_replay_refuses_a_case_the_results_lack_with_a_suggestion(earlier_report: Path) -> None:
    document = json.loads((earlier_report / "results.json").read_text())
    case = document["cases"][0]["id"]
    result = subprocess.run(
        [*KVM_FWSPEC, "replay", str(earlier_report / "results.json"), case[:-1] + "x"],
        capture_output=True,
        text=True,
    )
    line = one_line_refusal(result)
    assert f"did you mean {case}?" in line


def test_replay_refuses_a_program_edited_in_the_results(
    earlier_report: Path, tmp_path: Path
) -> None:
    document = json.loads((earlier_report / "results.json").read_text())
    case = document["cases"][0]
    case["program"]["steps"][0]["vcpu"] = 0 if case["program"]["steps"][0]["vcpu"] else 1
    edited = tmp_path / "results.json"
    edited.write_text(json.dumps(document))
    line = one_line_refusal(
        subprocess.run(
            [*KVM_FWSPEC, "replay", str(edited), case["id"]], capture_output=True, text=True
        )
    )
    assert "recorded another program" in line


def test_a_report_folder_check_is_a_usage_error_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="is a file"):
        ReportFolder(tmp_path / "f")
    assert os.listdir(tmp_path) == ["f"]


@pytest.mark.tools  # ssh-keygen
def test_a_signed_report_verifies_and_a_later_unsigned_run_leaves_no_stale_signature(
    tmp_path: Path,
) -> None:
    key = tmp_path / "key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci@example", "-f", str(key)],
        check=True,
    )
    signers = tmp_path / "signers"
    signers.write_text("ci@example " + " ".join(key.with_suffix(".pub").read_text().split()[:2]))
    report = tmp_path / "r"
    assert certify("--sign", str(key), "--report", str(report)).returncode == 0
    verify = [*KVM_FWSPEC, "verify", "--signers", str(signers), str(report / "results.json")]
    signed = subprocess.run(verify, capture_output=True, text=True)
    assert signed.returncode == 0 and "signed by ci@example (checked" in signed.stdout
    assert certify("--report", str(report)).returncode == 0
    assert not (report / "results.json.sig").exists()
    unsigned = subprocess.run(verify, capture_output=True, text=True)
    assert unsigned.returncode == 1 and "unsigned" in unsigned.stderr


def test_a_missing_signing_key_is_refused_before_the_run(tmp_path: Path) -> None:
    line = one_line_refusal(
        certify("--sign", str(tmp_path / "nokey"), "--report", str(tmp_path / "r"))
    )
    assert "nokey" in line
    assert not (tmp_path / "r").exists()


def test_under_spec_dir_the_reference_is_held_to_the_edited_spec(tmp_path: Path) -> None:
    """An edited spec (STD_BMAP reset to 0 instead of its known bits) changes the expected
    outcomes; the embedded reference keeps its own generated tables, so it must fail exactly
    there: built from the spec under test, it would pass any edit (a trial found that)."""
    spec = tmp_path / "spec"
    shutil.copytree(ROOT / "spec", spec)
    registers = spec / "registers.yaml"
    text = registers.read_text()
    first = "    reset: known-bits\n"
    assert text.count(first) >= 1
    registers.write_text(text.replace(first, '    reset: "0"\n', 1))
    report = tmp_path / "r"
    result = subprocess.run(
        [*KVM_FWSPEC, "--spec-dir", str(spec), "certify", "-q", "--report", str(report)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "DOES NOT CONFORM" in result.stdout
    document = json.loads((report / "results.json").read_text())
    failed = {c["rule"] for c in document["cases"] if c["outcome"] == "fail"}
    assert failed and all(rule.startswith("std-bmap/") for rule in failed), failed
    unedited = subprocess.run(
        [*KVM_FWSPEC, "verify", str(report / "results.json")], capture_output=True, text=True
    )
    assert unedited.returncode == 1 and "spec" in unedited.stderr


def test_a_closed_pipe_on_stdout_leaves_a_complete_report(tmp_path: Path) -> None:
    """`certify | head -0`: the report was published before the verdict line was printed, so
    the reader that went away costs nothing but that line (it once left a half-written report
    whose results.json claimed conforms)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [*KVM_FWSPEC, "certify", "--report", str(tmp_path / "r")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141 and "Traceback" not in result.stderr, result.stderr
    verify = subprocess.run(
        [*KVM_FWSPEC, "verify", str(tmp_path / "r" / "results.json")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr


@pytest.mark.parametrize(
    ("option", "named"),
    [
        pytest.param("lin=6.1", "did you mean 'line'?", id="qemu-typo"),
        pytest.param("timeout=0", "timeout=0", id="qemu-timeout-zero"),
        pytest.param("batch=abc", "batch=abc", id="qemu-batch-word"),
        pytest.param("line=6.3", "no Debian kernel line for 6.3", id="qemu-unknown-line"),
    ],
)
def test_qemu_adapter_options_are_checked_before_anything_is_booted(
    tmp_path: Path, option: str, named: str
) -> None:
    result = certify("--adapter", "qemu", "--option", option, "--report", str(tmp_path / "r"))
    assert named in one_line_refusal(result)
    assert list(tmp_path.iterdir()) == []


def test_reference_adapter_options_are_checked(tmp_path: Path) -> None:
    result = certify("--option", "witout=guest-calls", "--report", str(tmp_path / "r"))
    assert "did you mean 'without'?" in one_line_refusal(result)


def test_an_architecture_the_spec_lacks_is_named_as_such(tmp_path: Path) -> None:
    line = one_line_refusal(certify("--arch", "x86", "--report", str(tmp_path / "r")))
    assert "no architecture 'x86' in the spec: it has arm64, arm" in line


def test_an_adapter_without_either_capability_names_each_once(tmp_path: Path) -> None:
    result = certify(
        "--option", "without=guest-calls,psci-0.1-vcpus", "--report", str(tmp_path / "r")
    )
    assert result.returncode == 0, result.stderr
    assert "not applicable: needs guest-calls, psci-0.1-vcpus):" in result.stdout


def test_an_agent_for_a_host_named_by_its_levels_is_certified_as_that_host(
    tmp_path: Path,
) -> None:
    """A host no profile names (`levels:avail/not-avail/not-avail`) served by the reference
    agent, whose hello reports those levels: --host auto resolves to the same levels (the agent
    once crashed on such a host)."""
    host = "levels:avail/not-avail/not-avail"
    command = f"command={AGENT} --kernel 6.12 --host {host}"
    result = certify(
        "--adapter", "agent", "--option", command, "--kernel", "6.12", "--host", "auto",
        "--report", str(tmp_path / "r"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"host={host}: 675 pass, 0 fail" in result.stdout


def test_an_empty_report_path_is_refused_not_taken_for_the_current_folder(tmp_path: Path) -> None:
    line = one_line_refusal(certify("--report", "", cwd=tmp_path))
    assert "--report: an empty path" in line
    assert list(tmp_path.iterdir()) == []


def test_replay_on_an_implementation_of_another_kernel_names_the_recorded_one(
    earlier_report: Path,
) -> None:
    """replay takes its profile from the results, so the refusal points there, not at a
    --kernel option replay does not have (a trial found it suggested one)."""
    document = json.loads((earlier_report / "results.json").read_text())
    kernel = document["run"]["kernel"]
    other = "6.1" if not kernel.startswith("6.1") else "5.10"
    result = subprocess.run(
        [*KVM_FWSPEC, "replay", str(earlier_report / "results.json"), document["cases"][0]["id"],
         "--adapter", "agent", "--option", f"command={AGENT} --kernel {other}"],
        capture_output=True, text=True,
    )  # fmt: skip
    line = one_line_refusal(result)
    assert f"says it is KVM {other}; the results were recorded for {kernel}" in line
    assert "--kernel" not in line
