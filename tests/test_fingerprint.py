"""Host fingerprints: what a host's KVM offers, taken through the adapters certify uses and
checked against what the spec says each release and host offers (the reference and the agent
must agree with the spec, or the fingerprint is not the host's)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from kvm_fwspec.conformance.analyses.fingerprint import LABEL_PREFIX, SCHEMA
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC, ROOT

SPEC = load_spec()
AGENT = shlex.join([*KVM_FWSPEC, "agent"])
KUBERNETES_LABEL = re.compile(r"^[a-z0-9.-]+/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?=")


def fingerprint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVM_FWSPEC, "fingerprint", "--name", "host-a", *args], capture_output=True, text=True
    )


def taken(*args: str) -> dict[str, Any]:
    result = fingerprint(*args)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    return document


def registers(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in document["registers"]}


@pytest.mark.parametrize("kernel", ["5.10.y", "6.1", "6.12.y", "7.2"])
def test_psci_versions_a_host_accepts_are_those_the_spec_gives_its_release(kernel: str) -> None:
    """PSCI_VERSION accepts, on PSCI 0.2 vcpus, each version from 0.2 up to what the release
    implements; its default is the newest of them (the inference issue 15 plans kernels by)."""
    profile = resolve_profile(SPEC, kernel, "mitigated")
    expected = sorted(
        v.encoded for v in SPEC.psci_versions if v.encoded >= 2 and profile.has(v.lifetime)
    )
    psci = registers(taken("--kernel", kernel))["psci-version"]
    assert [int(v, 16) for v in psci["accepts"]] == expected
    assert int(psci["default"], 16) == max(expected)


def test_bitmaps_exist_from_5_19_and_accept_each_service_bit() -> None:
    before = registers(taken("--kernel", "5.10.y"))
    after = registers(taken("--kernel", "6.12"))
    assert "std-bmap" not in before and "std-bmap" in after
    bmap = next(r for r in SPEC.registers if r.name == "vendor-hyp-bmap")
    assert [int(v, 16) for v in after["vendor-hyp-bmap"]["accepts"]] == [b.mask for b in bmap.bits]


def test_a_vulnerable_host_through_the_agent_is_fingerprinted_as_itself() -> None:
    """The agent reports its host's levels; with --host auto the fingerprint is of that host:
    every workaround register reads not-avail and accepts only that."""
    command = f"command={AGENT} --kernel 6.1.y --host vulnerable"
    document = taken(
        "--adapter", "agent", "--option", command, "--kernel", "6.1.y", "--host", "auto"
    )
    assert document["host-levels"] == {
        "smccc-arch-workaround-1": 0,
        "smccc-arch-workaround-2": 0,
        "smccc-arch-workaround-3": 0,
    }
    levels = registers(document)
    for name in ("smccc-arch-workaround-1", "smccc-arch-workaround-2", "smccc-arch-workaround-3"):
        assert levels[name]["default"] == "0x0"
    assert levels["smccc-arch-workaround-1"]["accepts"] == ["0x0"]
    assert levels["smccc-arch-workaround-3"]["accepts"] == ["0x0"]
    # WA2 also takes UNKNOWN (1) there; never AVAIL (2) or NOT_REQUIRED (3), which it lacks.
    assert not {"0x2", "0x3"} & set(levels["smccc-arch-workaround-2"]["accepts"])


def test_an_agent_that_is_another_host_than_asked_is_refused_in_one_line() -> None:
    command = f"command={AGENT} --kernel 6.12 --host vulnerable"
    result = fingerprint("--adapter", "agent", "--option", command, "--kernel", "6.12")
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("kvm-fwspec: ") and "vulnerable" in line


def test_nfd_labels_are_kubernetes_labels_that_name_the_offer() -> None:
    result = fingerprint("--kernel", "6.12", "--format", "nfd")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    names = [line.partition("=")[0] for line in lines]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert all(KUBERNETES_LABEL.match(line) for line in lines), lines
    assert f"{LABEL_PREFIX}psci-version=1.1" in lines
    assert f"{LABEL_PREFIX}std-bmap.trng-v1.0=true" in lines
    assert f"{LABEL_PREFIX}kernel=6.12" in lines


def test_output_is_written_whole_and_a_bad_output_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "fp.json"
    result = fingerprint("--kernel", "7.2", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["kernel"]["judged-as"] == "7.2"
    refused = fingerprint("--output", str(tmp_path))
    assert refused.returncode == 2 and "is a folder" in refused.stderr
    assert refused.stderr.rstrip().endswith(f"e.g. {tmp_path / 'fingerprint.json'}")  # not dump
    assert len(refused.stderr.splitlines()) == 1


def test_the_same_host_gives_byte_identical_fingerprints() -> None:
    first, second = (fingerprint("--kernel", "6.1.y").stdout for _ in range(2))
    assert first == second and first


FIRECRACKER = sorted((ROOT / "tests" / "fixtures" / "firecracker-fingerprints").glob("*.json"))


def imported(path: Path) -> dict[str, Any]:
    return taken("--from-firecracker", str(path))


def test_the_public_graviton_fingerprints_are_all_imported() -> None:
    assert len(FIRECRACKER) == 14
    judged = {imported(p)["kernel"]["judged-as"] for p in FIRECRACKER}
    # Amazon Linux 2's 4.14 is older than the spec's first release: judged by its registers.
    assert judged == {"4.16.y", "5.10.y", "6.1.y", "6.18.y"}


@pytest.mark.parametrize("path", FIRECRACKER, ids=[p.stem for p in FIRECRACKER])
def test_real_amazon_linux_kvm_has_the_spec_defaults_of_its_series(path: Path) -> None:
    """Each real host's PSCI version and bitmaps, read by Firecracker on Graviton, are what
    the reference gives for the stable series its Amazon Linux kernel is judged as."""
    real = registers(imported(path))
    kernel = imported(path)["kernel"]["judged-as"]
    reference = registers(taken("--kernel", kernel))
    assert set(real) == set(reference)
    for name in real:
        if not name.startswith("smccc-arch-workaround"):  # the host's levels, not the kernel's
            assert real[name]["default"] == reference[name]["default"], name


def test_graviton_generations_differ_in_no_firmware_register_on_one_kernel() -> None:
    """A finding of the public data: N1, V1, V2 and V3 (Graviton 2 to 5) on the same kernel
    line report the same firmware registers (even on different point releases); the kernel,
    not the CPU, sets the pools."""
    by_kernel: dict[str, set[str]] = {}
    for path in FIRECRACKER:
        document = imported(path)
        by_kernel.setdefault(document["kernel"]["judged-as"], set()).add(
            json.dumps(document["registers"], sort_keys=True)
        )
    assert len(by_kernel) == 4 and all(len(seen) == 1 for seen in by_kernel.values())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(lambda text: text[: len(text) // 2], "not a Firecracker fingerprint", id="truncated"),
        pytest.param(
            lambda text: text.replace('"0x603000000014', '"0x603000000013'),
            "records no firmware register",
            id="no-firmware",
        ),
        pytest.param(lambda text: text.replace('"kernel_version"', '"kernel"'), "no 'kernel_version'", id="foreign"),
        pytest.param(lambda text: text.replace('"bitmap": "0b', '"bitmap": "0x', 1), "bitmap", id="bad-bitmap"),
    ],
)  # fmt: skip
def test_a_damaged_firecracker_file_is_one_line(tmp_path: Path, edit: Any, message: str) -> None:
    damaged = tmp_path / "damaged.json"
    damaged.write_text(edit(FIRECRACKER[0].read_text()))
    result = fingerprint("--from-firecracker", str(damaged))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"kvm-fwspec: {damaged}: ") and message in line


def test_kernel_auto_takes_the_kernel_the_agent_reports() -> None:
    """--kernel auto, as the DaemonSet and the playbook can use it: the kernel is the one the
    implementation's hello names, judged as the spec judges that name."""
    command = f"command={AGENT} --kernel 5.10.y --host vulnerable"
    document = taken(
        "--adapter", "agent", "--option", command, "--kernel", "auto", "--host", "auto"
    )
    assert document["kernel"]["reported"] == "5.10.y"
    assert document["kernel"]["judged-as"] == "5.10.y"
    assert "std-bmap" not in registers(document)  # a 5.10 host, not the newest release


NO_KERNEL_AGENT = """
import json, sys
from kvm_fwspec.conformance.guest.agent import Session
from kvm_fwspec.conformance.reference_agent import reference_served
session = Session(reference_served({"kernel": "6.1", "host": "mitigated"}))
for line in sys.stdin:
    response, done = session(line)
    if json.loads(line)["method"] == "hello":
        response["result"].pop("kernel", None)
    print(json.dumps(response), flush=True)
    if done:
        break
"""


def test_kernel_auto_with_an_agent_that_names_no_kernel_is_one_line(tmp_path: Path) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(NO_KERNEL_AGENT)
    command = f"command={shlex.join([sys.executable, str(agent)])}"
    result = fingerprint("--adapter", "agent", "--option", command, "--kernel", "auto")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith(
        "does not say which kernel it is; name it with --kernel"
    ), result.stderr


def test_output_dash_is_standard_output(tmp_path: Path) -> None:
    result = subprocess.run([*KVM_FWSPEC, "fingerprint", "--kernel", "6.1", "--output", "-"],
                            capture_output=True, text=True, cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 0 and json.loads(result.stdout)["kernel"]["judged-as"] == "6.1"
    assert not (tmp_path / "-").exists()


def test_nfd_labels_leave_out_services_whose_offer_was_not_recorded() -> None:
    """Firecracker's 6.18 file records VENDOR_HYP_BMAP_2 at its reset value (0) only: whether
    the host offers its services is unknown, so no label says it does not."""
    path = (
        ROOT
        / "tests"
        / "fixtures"
        / "firecracker-fingerprints"
        / "fingerprint_ARM_NEOVERSE_V2_6.18host.json"
    )
    labels = fingerprint("--from-firecracker", str(path), "--format", "nfd").stdout
    assert f"{LABEL_PREFIX}vendor-hyp-bmap-2." not in labels
    assert f"{LABEL_PREFIX}vendor-hyp-bmap.ptp=true" in labels


@pytest.mark.parametrize(
    ("kernel", "message"),
    [
        ("banana", "kernel_version: kernel 'banana'"),
        ("9.1.0-1.amzn2023.aarch64", "kernel_version: kernel"),
    ],
    ids=["not-a-kernel", "newer-than-the-spec"],
)
def test_only_a_kernel_older_than_the_spec_is_judged_by_its_registers(
    tmp_path: Path, kernel: str, message: str
) -> None:
    source = (
        ROOT
        / "tests"
        / "fixtures"
        / "firecracker-fingerprints"
        / "fingerprint_ARM_NEOVERSE_N1_6.1host.json"
    )
    edited = tmp_path / "edited.json"
    edited.write_text(
        re.sub(r'"kernel_version": "[^"]*"', f'"kernel_version": "{kernel}"', source.read_text())
    )
    result = fingerprint("--from-firecracker", str(edited))
    assert result.returncode == 2 and f"{edited}: {message}" in result.stderr, result.stderr


def test_a_fingerprint_fleet_plan_would_refuse_is_not_written(tmp_path: Path) -> None:
    """A host spelt by levels no KVM since 5.10 reports (WORKAROUND_2 AVAIL): the reference
    reads a default it then refuses, so the fingerprint contradicts itself."""
    output = tmp_path / "fp.json"
    result = fingerprint(
        "--kernel", "6.1", "--host", "levels:avail/avail/avail", "--output", str(output)
    )
    assert result.returncode == 2 and not output.exists()
    assert result.stderr.startswith(
        "kvm-fwspec: not written: the fingerprint: registers[2].default: 0x2"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "a\nb"], "--name 'a\\nb': a host name of printable characters"),
        (
            ["--kernel", "auto"],
            "--kernel auto: the in-process reference is whichever kernel --kernel names",
        ),
    ],
    ids=["control-character", "auto-with-the-reference"],
)
def test_names_a_fingerprint_cannot_carry_are_one_line(args: list[str], message: str) -> None:
    result = subprocess.run([*KVM_FWSPEC, "fingerprint", *args], capture_output=True, text=True)
    assert (
        result.returncode == 2
        and result.stderr == f"kvm-fwspec: {message}" + result.stderr.split(message)[1]
    )
    assert len(result.stderr.splitlines()) == 1


def test_a_kernel_the_agent_is_not_says_which_to_give() -> None:
    command = f"command={AGENT} --kernel 6.1.y"
    result = fingerprint("--adapter", "agent", "--option", command, "--kernel", "6.1")
    assert result.returncode == 2
    assert "(give --kernel 6.1.y, or --kernel auto where the command takes it)" in result.stderr
