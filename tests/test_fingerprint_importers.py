"""Fingerprints from files hosts already left: `kvm-fwspec dump` files (the reference's, taken
here, and real KVM's kept by migrate-proof) and QEMU migration streams saved on real kernels.
What each import says must be what the host reported, and what it infers must be what the
host, asked directly, would have answered."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from kvm_fwspec.conformance.analyses.fingerprint import SCHEMA
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC, ROOT

SPEC = load_spec()
FIXTURES = ROOT / "tests" / "fixtures"
REAL_DUMPS: list[dict[str, Any]] = json.loads(
    (FIXTURES / "real-kvm" / "real-restores.json").read_text()
)["dumps"]
DEFAULT_DUMPS = [d for d in REAL_DUMPS if d["features"] and d["psci-version-set"] is None]
OTHER_DUMPS = [d for d in REAL_DUMPS if d not in DEFAULT_DUMPS]
# A level's settable values, and an opt-in bitmap's (reset to 0 whatever KVM knows), are not
# in a register's default.
NOT_INFERRED = {r.name for r in SPEC.registers if r.kind == "level"} | {"vendor-hyp-bmap-2"}
STREAMS = sorted((FIXTURES / "qemu-streams").glob("*.stream.gz"))
# Each stream's kernel, as `uname -r` printed it on the host that saved it (PROVENANCE).
STREAM_KERNELS = {
    "qemu-7.2.22-5.10.0-32-arm64": "5.10.0-32-arm64",
    "qemu-7.2.22-6.12.118+deb12-arm64": "6.12.118+deb12-arm64",
    "qemu-11.1.3-7.2.13+deb14-arm64": "7.2.13+deb14-arm64",
}


def kvm_fwspec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KVM_FWSPEC, *args], capture_output=True, text=True)


def taken(*args: str) -> dict[str, Any]:
    result = kvm_fwspec("fingerprint", *args)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    return document


def rows(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in document["registers"]}


def saved(tmp_path: Path, dump: dict[str, Any]) -> Path:
    path = tmp_path / f"{dump['kernel']}.json"
    path.write_text(json.dumps(dump, indent=1))
    return path


def unpacked(tmp_path: Path, stream: Path) -> Path:
    path = tmp_path / stream.name.removesuffix(".gz")
    path.write_bytes(gzip.decompress(stream.read_bytes()))
    return path


def stream_kernel(stream: Path) -> str:
    return STREAM_KERNELS[stream.name.removesuffix(".stream.gz")]


@pytest.mark.parametrize(
    ("kernel", "host"), [("5.10.y", "vulnerable"), ("6.1", "mitigated"), ("7.2", "mitigated")]
)
def test_a_reference_dump_imports_as_the_fingerprint_the_reference_takes(
    tmp_path: Path, kernel: str, host: str
) -> None:
    """What the import infers from the defaults (every PSCI version from 0.2 up to the
    default, a bitmap's default as its mask) is what the same host answers when asked."""
    dump = tmp_path / "dump.json"
    made = kvm_fwspec("dump", "--adapter", "reference", "--kernel", kernel, "--host", host,
                      "--output", str(dump))  # fmt: skip
    assert made.returncode == 0, made.stderr
    imported = taken("--from-dump", str(dump))
    asked = taken("--kernel", kernel, "--host", host)
    assert imported["kernel"]["judged-as"] == asked["kernel"]["judged-as"] == kernel
    assert imported["host"] == "dump"
    assert imported["provenance"]["file"] == "dump.json"
    assert "inferred" in imported["provenance"]
    assert rows(imported).keys() == rows(asked).keys()
    for reg_id, entry in rows(imported).items():
        expected = rows(asked)[reg_id]
        assert (entry["name"], entry["default"]) == (expected["name"], expected["default"])
        if entry["name"] in NOT_INFERRED:
            assert entry["accepts"] is None  # a level's, an opt-in bitmap's: not in a dump
        else:
            assert entry["accepts"] == expected["accepts"], entry["name"]
    (profile,) = (h for h in SPEC.host_profiles if h.name == host)
    listed = {entry["name"] for entry in imported["registers"]}
    expected_levels = {n: level.value for n, level in profile.levels.items() if n in listed}
    assert imported["host-levels"] == expected_levels


@pytest.mark.parametrize("dump", DEFAULT_DUMPS, ids=[d["kernel"] for d in DEFAULT_DUMPS])
def test_a_real_kvm_dump_imports_as_what_real_kvm_reported(
    tmp_path: Path, dump: dict[str, Any]
) -> None:
    """Debian's kernels, dumped through `kvm-fwspec qemu` by migrate-proof: each register's
    default is the value real KVM gave, the kernel is its uname judged as the dump's series,
    and the spec's reference for that kernel and host agrees on every one of them."""
    imported = taken("--from-dump", str(saved(tmp_path, dump)))
    real = {hex(r["id"]): hex(r["value"]) for r in dump["registers"]}
    assert {i: e["default"] for i, e in rows(imported).items()} == real
    assert imported["kernel"] == {
        "reported": dump["provenance"]["kernel-uname"],
        "judged-as": dump["kernel"],
        "how": imported["kernel"]["how"],
    }
    assert imported["provenance"]["kernel-packages"] == dump["provenance"]["kernel-packages"]
    reference = taken("--kernel", dump["kernel"], "--host", dump["host-profile"])
    assert {i: e["default"] for i, e in rows(reference).items()} == real
    levels = {e["name"]: int(e["default"], 16) for e in imported["registers"]
              if e["name"].startswith("smccc-arch-workaround")}  # fmt: skip
    assert imported["host-levels"] == levels


@pytest.mark.parametrize(
    "dump",
    OTHER_DUMPS,
    ids=[f"{d['kernel']}-{d['features'] or 'psci-0.1'}-{d['psci-version-set']}" for d in OTHER_DUMPS],
)  # fmt: skip
def test_a_real_dump_of_a_vm_not_at_its_defaults_is_refused(
    tmp_path: Path, dump: dict[str, Any]
) -> None:
    """migrate-proof also dumps PSCI 0.1 vcpus and pinned PSCI versions: real, but what the
    VMM asked for, not what the host offers a fresh VM."""
    path = saved(tmp_path, dump)
    result = kvm_fwspec("fingerprint", "--from-dump", str(path))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    key = "features" if not dump["features"] else "psci-version-set"
    assert line.startswith(f"kvm-fwspec: {path}: {key}: ")


@pytest.mark.parametrize("stream", STREAMS, ids=[s.name for s in STREAMS])
def test_a_real_qemu_stream_imports_as_what_the_same_kernel_dumped(
    tmp_path: Path, stream: Path
) -> None:
    """Two real observations of one kernel line agree: the firmware registers QEMU saved in
    its stream, and those `kvm-fwspec dump` read through the agent on the same Debian line
    (migrate-proof's dumps, a few point releases apart)."""
    uname = stream_kernel(stream)
    imported = taken("--from-qemu-stream", str(unpacked(tmp_path, stream)), "--kernel", uname)
    judged = imported["kernel"]["judged-as"]
    assert imported["kernel"]["reported"] == uname and "--kernel" in imported["kernel"]["how"]
    assert imported["host"] == stream.name.removesuffix(".gz").removesuffix(".stream")
    (dump,) = (d for d in DEFAULT_DUMPS if d["kernel"] == judged)
    from_dump = taken("--from-dump", str(saved(tmp_path, dump)))
    assert imported["registers"] == from_dump["registers"]
    assert imported["host-levels"] == from_dump["host-levels"]
    assert imported["reg-list-length"] is None and "reg-list-length" in imported["not-recorded"]
    # The guest hosts are QEMU TCG's `-cpu max`, whose MIDR_EL1 (implementer 0, part 0x051)
    # KVM passes to the vcpu as a real CPU's.
    assert imported["cpu"] == {"midr": "0xf0510", "revidr": "0x0"}


def test_the_streams_psci_version_is_the_one_the_guest_read_before_the_save(
    tmp_path: Path,
) -> None:
    """PROVENANCE records the guest's PSCI_VERSION answer before each save: QEMU's stream
    carries the register that answer came from."""
    provenance = (FIXTURES / "qemu-streams" / "PROVENANCE").read_text()
    answers = ["0x10000", "0x10001", "0x10003"]  # in the order PROVENANCE lists the files
    assert f"was {answers[0]}, {answers[1]} and {answers[2]}" in provenance
    listed = [s for s in STREAM_KERNELS if s in provenance]
    for name, answer in zip(listed, answers, strict=True):
        stream = FIXTURES / "qemu-streams" / f"{name}.stream.gz"
        imported = taken("--from-qemu-stream", str(unpacked(tmp_path, stream)),
                         "--kernel", STREAM_KERNELS[name])  # fmt: skip
        (psci,) = (e for e in imported["registers"] if e["name"] == "psci-version")
        assert psci["default"] == answer


def test_an_imported_fingerprint_makes_nfd_labels(tmp_path: Path) -> None:
    (dump,) = (d for d in DEFAULT_DUMPS if d["kernel"] == "7.2.y")
    result = kvm_fwspec("fingerprint", "--from-dump", str(saved(tmp_path, dump)), "--format", "nfd")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "kvm-fwspec.io/psci-version=1.3" in lines
    assert "kvm-fwspec.io/kernel=7.2.y" in lines


def _real_dump(tmp_path: Path) -> Path:
    (dump,) = (d for d in DEFAULT_DUMPS if d["kernel"] == "6.12.y")
    return saved(tmp_path, dump)


def _edited_dump(tmp_path: Path, edit: Any) -> Path:
    path = _real_dump(tmp_path)
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document, indent=1))
    return path


def _wa1_not_avail(document: dict[str, Any]) -> None:
    """A workaround register edited to another level than the file's host-profile names."""
    document["registers"][1]["value"] = 0


def _psci_0_1_on_psci_0_2(document: dict[str, Any]) -> None:
    document["registers"][0]["value"] = 1


def _fingerprint_file(tmp_path: Path) -> Path:
    path = tmp_path / "fingerprint.json"
    path.write_text(kvm_fwspec("fingerprint", "--kernel", "6.12").stdout)
    return path


def _real_stream(tmp_path: Path) -> Path:
    return unpacked(tmp_path, STREAMS[0])


def _damaged(path: Path, edit: Any) -> Path:
    path.write_bytes(edit(path.read_bytes()))
    return path


BAD_INPUTS = {
    "dump-missing": (lambda tmp: tmp / "absent.json", ["--from-dump"], "cannot read"),
    "dump-folder": (lambda tmp: tmp, ["--from-dump"], "cannot read"),
    "dump-truncated": (
        lambda tmp: _damaged(_real_dump(tmp), lambda b: b[: len(b) // 2]),
        ["--from-dump"],
        "not JSON",
    ),
    "dump-foreign": (
        lambda tmp: FIXTURES / "firecracker-fingerprints" / "fingerprint_ARM_NEOVERSE_V1_6.1host.json",
        ["--from-dump"],
        "not a kvm-fwspec dump: it has no 'format' key; a Firecracker fingerprint?",
    ),
    "dump-is-a-fingerprint": (
        lambda tmp: _fingerprint_file(tmp),
        ["--from-dump"],
        "its format is 'kvm-fwspec-fingerprint/1', not 'kvm-fwspec-dump/1'",
    ),
    "dump-levels-contradict-host": (
        lambda tmp: _edited_dump(tmp, _wa1_not_avail),
        ["--from-dump"],
        "smccc-arch-workaround-1 reads 0x0, but the dump's host-profile",
    ),
    "dump-psci-contradicts-features": (
        lambda tmp: _edited_dump(tmp, _psci_0_1_on_psci_0_2),
        ["--from-dump"],
        "below PSCI 0.2",
    ),
    "stream-missing": (
        lambda tmp: tmp / "absent.stream",
        ["--kernel", "6.12", "--from-qemu-stream"],
        "no such file",
    ),
    "stream-folder": (lambda tmp: tmp, ["--kernel", "6.12", "--from-qemu-stream"], "is a folder"),
    "stream-wrong-magic": (
        lambda tmp: _damaged(_real_stream(tmp), lambda b: b"QEVX" + b[4:]),
        ["--kernel", "5.10.0-32-arm64", "--from-qemu-stream"],
        "no QEVM magic",
    ),
    "stream-truncated": (
        lambda tmp: _damaged(_real_stream(tmp), lambda b: b[: len(b) // 2]),
        ["--kernel", "5.10.0-32-arm64", "--from-qemu-stream"],
        "found 0",
    ),
    "stream-is-a-dump": (
        lambda tmp: _real_dump(tmp),
        ["--kernel", "6.12", "--from-qemu-stream"],
        "no QEVM magic",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_a_bad_input_is_one_line_naming_the_file_and_writes_nothing(
    tmp_path: Path, name: str
) -> None:
    make, options, message = BAD_INPUTS[name]
    path = make(tmp_path)
    output = tmp_path / "out" / "fingerprint.json"
    result = kvm_fwspec("fingerprint", "--output", str(output), *options, str(path))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"kvm-fwspec: {path}: ") and message in line, line
    assert not output.exists() and not output.parent.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--from-dump", "a.json", "--from-qemu-stream", "b"], "--from-dump and --from-qemu-stream each name"),
        (["--from-firecracker", "a.json", "--from-dump", "b"], "--from-firecracker and --from-dump each name"),
        (["--from-dump", "a.json", "--adapter", "reference"], "--from-dump reads a file: it takes no --adapter"),
        (["--from-dump", "a.json", "--kernel", "6.12"], "--from-dump reads a file: it takes no --kernel"),
        (["--from-dump", "a.json", "--option", "command=x"], "it takes no --option"),
        (["--from-qemu-stream", "s", "--kernel", "6.12", "--host", "vulnerable"], "it takes no --host"),
        (["--from-qemu-stream", "s"], "--from-qemu-stream needs --kernel"),
        (["--from-qemu-stream", "s", "--kernel", "penguin"], "is not a kernel name"),
    ],
)  # fmt: skip
def test_options_that_cannot_go_together_are_one_line(options: list[str], message: str) -> None:
    result = kvm_fwspec("fingerprint", *options)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("kvm-fwspec: ") and message in line, line
