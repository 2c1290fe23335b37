"""A fingerprint records the host's CPU and KVM capabilities when the implementation reports
them in its hello (docs/agent-protocol.md: `cpu`, `kvm-capabilities`), and says in
`not-recorded` what it did not report: old agents keep working without the fields, a hello
that has them of the wrong type is refused in one line, the reference reports only what the
spec dates, and real KVM (Debian kernels under QEMU, the lab tier) reports its own."""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from kvm_fwspec.conformance.adapters import Capabilities, reported_host
from kvm_fwspec.conformance.adapters.agent import AgentError, create
from kvm_fwspec.conformance.analyses.fingerprint import NOT_RECORDED, SCHEMA, not_recorded, take
from kvm_fwspec.conformance.analyses.fleet_hosts import host_of
from kvm_fwspec.conformance.guest.host_cpu import host_cpu
from kvm_fwspec.conformance.guest.kvm_ioctl import REPORTED_CAPABILITIES
from kvm_fwspec.conformance.lab.qemu import Guest
from kvm_fwspec.conformance.lab.qemu_adapter import QemuAdapter, default_cache, prepare
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.reference_agent import reference_capabilities, reference_served
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.reference_impl.tables import MODEL
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Release
from tests.checkout import KVM_FWSPEC

SPEC = load_spec()
PROFILE = resolve_profile(SPEC, "7.2", "mitigated")
ALL_CAPABILITIES = {"arm-psci-0.2": 1, "arm-system-suspend": 1, "arm-vm-smccc-filter": 1}

# An agent whose hello is the reference's for 7.2 with the given fields merged in (a field
# given as null is left out, as an agent older than it leaves it out), and whose programs
# the reference runs: a host that reports what the test says it does.
REPORTING_AGENT = """
import json, sys
from kvm_fwspec.conformance.guest.agent import Served, Session, serve_stream
from kvm_fwspec.conformance.reference_agent import reference_capabilities, reference_served
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.reference_impl.tables import MODEL
served = reference_served({"kernel": "7.2", "host": "mitigated"})
hello = {**served.hello, **json.loads(sys.argv[1])}
hello = {key: value for key, value in hello.items() if value is not None}
serve_stream(Session(Served(served.implementation, hello)), sys.stdin.buffer, sys.stdout)
"""


def reporting_agent(tmp_path: Path, fields: dict[str, Any]) -> str:
    script = tmp_path / "agent.py"
    script.write_text(REPORTING_AGENT, encoding="utf-8")
    return shlex.join([sys.executable, str(script), json.dumps(fields)])


def capabilities_of(tmp_path: Path, fields: dict[str, Any]) -> Capabilities:
    adapter = create(PROFILE, {"command": reporting_agent(tmp_path, fields)})
    try:
        return adapter.capabilities()
    finally:
        adapter.close()


def validate(document: dict[str, Any]) -> None:
    jsonschema.validate(document, json.loads(SCHEMA.read_text(encoding="utf-8")))


# -- the adapter reads the hello's optional fields ------------------------------------------


def test_the_hello_s_cpu_and_capabilities_reach_the_adapter_written_as_fingerprints_write_hex(
    tmp_path: Path,
) -> None:
    cpu = {"midr": "0x00000000410FD0C1", "revidr": "0x0000000000000001"}
    capabilities = capabilities_of(tmp_path, {"cpu": cpu, "kvm-capabilities": ALL_CAPABILITIES})
    assert capabilities.cpu == {"midr": "0x410fd0c1", "revidr": "0x1"}
    assert capabilities.kvm_capabilities == ALL_CAPABILITIES


def test_an_agent_without_the_fields_is_served_as_before(tmp_path: Path) -> None:
    capabilities = capabilities_of(tmp_path, {"cpu": None, "kvm-capabilities": None})
    assert capabilities.cpu is None and capabilities.kvm_capabilities is None
    assert capabilities.host_levels and capabilities.kernel == "7.2"


def test_a_revidr_the_agent_could_not_read_is_null(tmp_path: Path) -> None:
    capabilities = capabilities_of(tmp_path, {"cpu": {"midr": "0xf0510"}})
    assert capabilities.cpu == {"midr": "0xf0510", "revidr": None}


WRONG_HELLOS = {
    "cpu-a-string": (
        {"cpu": "0x410fd0c1"},
        'cpu \'0x410fd0c1\' is not an object such as {"midr": "0x410fd0c1", "revidr": "0x0"}',
    ),
    "midr-an-integer": (
        {"cpu": {"midr": 1091555521, "revidr": "0x0"}},
        "cpu {'midr': 1091555521, 'revidr': '0x0'} has a midr of 1091555521, "
        'not a hex string such as "0x410fd0c1"',
    ),
    "midr-missing": (
        {"cpu": {"revidr": "0x0"}},
        "cpu {'revidr': '0x0'} has a midr of None, not a hex string such as \"0x410fd0c1\"",
    ),
    "revidr-decimal": (
        {"cpu": {"midr": "0xf0510", "revidr": "12"}},
        "cpu {'midr': '0xf0510', 'revidr': '12'} has a revidr of '12', "
        'not a hex string such as "0x410fd0c1"',
    ),
    "capabilities-a-list": (
        {"kvm-capabilities": ["arm-psci-0.2"]},
        "kvm-capabilities ['arm-psci-0.2'] is not an object of integers from 0",
    ),
    "capability-a-boolean": (
        {"kvm-capabilities": {"arm-psci-0.2": True}},
        "kvm-capabilities {'arm-psci-0.2': True} is not an object of integers from 0",
    ),
    "capability-a-string": (
        {"kvm-capabilities": {"arm-system-suspend": "1"}},
        "kvm-capabilities {'arm-system-suspend': '1'} is not an object of integers from 0",
    ),
    "capability-negative": (
        {"kvm-capabilities": {"arm-vm-smccc-filter": -22}},
        "kvm-capabilities {'arm-vm-smccc-filter': -22} is not an object of integers from 0",
    ),
}


@pytest.mark.parametrize("wrong", sorted(WRONG_HELLOS))
def test_a_hello_with_the_fields_of_the_wrong_type_is_refused_in_one_line(
    wrong: str, tmp_path: Path
) -> None:
    fields, problem = WRONG_HELLOS[wrong]
    adapter = create(PROFILE, {"command": reporting_agent(tmp_path, fields)})
    try:
        with pytest.raises(AgentError) as raised:
            adapter.capabilities()
    finally:
        adapter.close()
    assert str(raised.value) == f"the agent's hello: {problem}"


def test_a_fingerprint_command_given_such_an_agent_fails_in_one_line(tmp_path: Path) -> None:
    command = reporting_agent(tmp_path, {"kvm-capabilities": {"arm-psci-0.2": "yes"}})
    result = subprocess.run(
        [*KVM_FWSPEC, "fingerprint", "--adapter", "agent", "--option", f"command={command}",
         "--kernel", "7.2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("kvm-fwspec: ") and "kvm-capabilities" in line, line


# -- the reference agent reports what the spec dates, and no CPU -----------------------------


@pytest.mark.parametrize(
    ("kernel", "suspend", "smccc_filter"),
    [("5.10", 0, 0), ("5.10.y", 0, 0), ("6.1", 1, 0), ("6.3", 1, 0), ("6.4", 1, 1),
     ("7.2", 1, 1)],
)  # fmt: skip
def test_the_reference_agent_reports_the_capabilities_the_spec_dates(
    kernel: str, suspend: int, smccc_filter: int
) -> None:
    hello = reference_served({"kernel": kernel, "host": "mitigated"}).hello
    assert hello["cpu"] is None
    assert hello["kvm-capabilities"] == {
        "arm-psci-0.2": 1,
        "arm-system-suspend": suspend,
        "arm-vm-smccc-filter": smccc_filter,
    }
    # the numbers are the spec's dates, not the test's: suspend and the filter came in the
    # releases the spec names
    release = Release.parse(kernel.removesuffix(".y"))
    since = next(c for c in SPEC.capabilities if c.name == "arm-system-suspend").lifetime.since
    assert suspend == int(release >= since)
    assert smccc_filter == int(release >= SPEC.smccc_filter.lifetime.since)


def leave_out(edit: Callable[[dict[str, Any]], None]) -> dict[str, int]:
    tables = copy.deepcopy(MODEL)
    edit(tables)
    return reference_capabilities(ReferenceKvm("7.2", "mitigated", tables=tables))


def test_the_reference_agent_reports_every_capability_the_spec_declares() -> None:
    hello = reference_served({"kernel": "7.2", "host": "mitigated"}).hello
    assert list(hello["kvm-capabilities"]) == list(REPORTED_CAPABILITIES)


def test_the_reference_agent_leaves_out_what_the_spec_does_not_declare() -> None:
    """Tables without KVM_CAP_ARM_SYSTEM_SUSPEND, and tables whose filter is another VM
    attribute than the one a real agent asks about: neither is guessed."""

    def without_suspend(tables: dict[str, Any]) -> None:
        tables["capabilities"] = [
            c for c in tables["capabilities"] if c["name"] != "arm-system-suspend"
        ]

    def another_attribute(tables: dict[str, Any]) -> None:
        tables["smccc-filter"]["attr"]["value"] = 1

    assert leave_out(without_suspend) == {"arm-psci-0.2": 1, "arm-vm-smccc-filter": 1}
    assert leave_out(another_attribute) == {"arm-psci-0.2": 1, "arm-system-suspend": 1}


# -- take() records what was reported, and not-recorded what was not -------------------------


def fingerprint_through(command: str, kernel: str) -> dict[str, Any]:
    result = subprocess.run(
        [*KVM_FWSPEC, "fingerprint", "--name", "host-a", "--adapter", "agent",
         "--option", f"command={command}", "--kernel", kernel],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    validate(document)
    host_of(SPEC, document, "host-a")  # and the fleet plan reads it
    return document


def test_a_host_that_reports_everything_leaves_nothing_of_it_unrecorded(tmp_path: Path) -> None:
    cpu = {"midr": "0x410fd0c1", "revidr": "0x0"}
    document = fingerprint_through(
        reporting_agent(tmp_path, {"cpu": cpu, "kvm-capabilities": ALL_CAPABILITIES}), "7.2"
    )
    assert document["cpu"] == cpu
    assert document["kvm-capabilities"] == ALL_CAPABILITIES
    assert document["not-recorded"] == {}


def test_the_reference_agent_s_fingerprint_names_what_it_did_not_report() -> None:
    """The reference has no CPU; every capability it reports, the filter's absence included."""
    agent = shlex.join([*KVM_FWSPEC, "agent", "--kernel", "5.10.y"])
    document = fingerprint_through(agent, "5.10.y")
    assert document["cpu"] is None
    assert document["kvm-capabilities"] == {
        "arm-psci-0.2": 1,
        "arm-system-suspend": 0,
        "arm-vm-smccc-filter": 0,
    }
    assert document["not-recorded"] == {"cpu": NOT_RECORDED["cpu"]}


def test_an_old_agent_s_fingerprint_records_neither(tmp_path: Path) -> None:
    document = fingerprint_through(
        reporting_agent(tmp_path, {"cpu": None, "kvm-capabilities": None}), "7.2"
    )
    assert document["cpu"] is None and document["kvm-capabilities"] is None
    assert document["not-recorded"] == NOT_RECORDED


def test_not_recorded_drops_an_entry_only_for_what_was_reported() -> None:
    def of(**fields: Any) -> dict[str, str]:
        return not_recorded(Capabilities("x", "7.2", "arm64", **fields))

    assert of() == NOT_RECORDED
    assert set(of(cpu={"midr": "0x1", "revidr": None})) == {"capabilities"}
    assert set(of(kvm_capabilities=ALL_CAPABILITIES)) == {"cpu"}
    partial = of(kvm_capabilities={"arm-psci-0.2": 1})
    assert partial["capabilities"] == (
        "the implementation did not report arm-system-suspend, arm-vm-smccc-filter"
    )


# -- the schema: the new field is optional and nullable, and typed --------------------------


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    """A fingerprint as a reporting host's would be (the reference's, with the fields set)."""
    result = subprocess.run(
        [*KVM_FWSPEC, "fingerprint", "--name", "host-a", "--kernel", "6.12"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    document["cpu"] = {"midr": "0xf0510", "revidr": "0x0"}
    document["kvm-capabilities"] = ALL_CAPABILITIES
    document["not-recorded"] = {}
    return document


def test_the_schema_takes_the_fields_present_null_or_absent(recorded: dict[str, Any]) -> None:
    validate(recorded)
    for value in (None, {}):
        validate({**recorded, "kvm-capabilities": value})
    validate({key: value for key, value in recorded.items() if key != "kvm-capabilities"})


@pytest.mark.parametrize(
    "wrong",
    [{"arm-psci-0.2": "1"}, {"arm-psci-0.2": -1}, {"arm-psci-0.2": 1.5}, ["arm-psci-0.2"]],
    ids=["string", "negative", "fraction", "list"],
)
def test_the_schema_refuses_capabilities_that_are_not_counts(
    recorded: dict[str, Any], wrong: Any
) -> None:
    document = copy.deepcopy(recorded)
    document["kvm-capabilities"] = wrong
    with pytest.raises(jsonschema.ValidationError):
        validate(document)
    with pytest.raises(UsageError) as refused:  # the fleet plan's reader refuses it too
        host_of(SPEC, document, "host-a.json")
    assert "kvm-capabilities" in str(refused.value)


# -- the agent reads cpu0's identification registers ------------------------------------------


def test_the_cpu_is_read_from_sysfs_as_arm64_linux_writes_it(tmp_path: Path) -> None:
    (tmp_path / "midr_el1").write_text("0x00000000410fd0c1\n")  # cpuinfo.c writes %016llx
    (tmp_path / "revidr_el1").write_text("0x0000000000000000\n")
    assert host_cpu(tmp_path) == {"midr": "0x410fd0c1", "revidr": "0x0"}
    (tmp_path / "revidr_el1").unlink()
    assert host_cpu(tmp_path) == {"midr": "0x410fd0c1", "revidr": None}
    (tmp_path / "midr_el1").write_text("garbage\n")
    assert host_cpu(tmp_path) is None
    assert host_cpu(tmp_path / "absent") is None  # not arm64 Linux


# -- real KVM: each Debian kernel under QEMU reports its own CPU and capabilities ------------

# QEMU's `-cpu max` (what conformance/lab/qemu.py boots) sets MIDR_EL1 so that no guest takes
# it for a real part (target/arm/cpu64.c, aarch64_max_tcg_initfn): implementer 0 ("reserved
# for software use"), architecture 0xf, part number 'Q', variant and revision 0.
QEMU_MAX_MIDR = {"implementer": (24, 0), "variant": (20, 0), "architecture": (16, 0xF),
                 "part-number": (4, ord("Q")), "revision": (0, 0)}  # fmt: skip
# The SMCCC filter's VM attribute group came in Linux 6.4 (arch/arm64/include/uapi/asm/kvm.h:
# Debian's 6.1 linux-libc-dev lacks KVM_ARM_VM_SMCCC_CTRL, 6.12's headers have it), as
# spec/smccc-filter.yaml dates it.
SMCCC_FILTER_SINCE = SPEC.smccc_filter.lifetime.since


def midr(fields: dict[str, tuple[int, int]]) -> str:
    return hex(sum(value << shift for shift, value in fields.values()))


@pytest.mark.lab  # boots each Debian kernel under QEMU (TCG, emulated EL2) with its own KVM
@pytest.mark.parametrize("line", ["5.10", "6.1", "6.12", "7.2"])
def test_real_kvm_reports_its_cpu_and_capabilities(line: str) -> None:
    kernel, initramfs = prepare(line, default_cache())
    adapter = QemuAdapter(kernel, Guest(kernel, initramfs), 256)
    adapter.timeout = 300
    try:
        arguments = [str(a) for a in adapter.guest.process.args]
        assert arguments[arguments.index("-cpu") + 1].split(",")[0] == "max"
        capabilities = adapter.capabilities()  # the hello: waits for the boot
        judged = parse_kernel_name(SPEC, kernel.uname)
        host = reported_host(adapter, SPEC)
        profile = resolve_profile(SPEC, str(judged), host, capabilities.arch)
        document = take(adapter, SPEC, profile, judged, f"debian-{line}")
    finally:
        adapter.close()
    validate(document)
    host_of(SPEC, document, f"debian-{line}")
    print(f"{kernel.uname}: cpu {document['cpu']}, kvm-capabilities {document['kvm-capabilities']}")
    release = Release.parse(line)
    suspend = next(c for c in SPEC.capabilities if c.name == "arm-system-suspend")
    # QEMU's max leaves REVIDR_EL1 at 0: no errata fixes to declare
    assert document["cpu"] == {"midr": midr(QEMU_MAX_MIDR), "revidr": "0x0"}
    assert document["kvm-capabilities"] == {
        "arm-psci-0.2": 1,
        "arm-system-suspend": int(suspend.lifetime.covers(release, stable=True)),
        "arm-vm-smccc-filter": int(release >= SMCCC_FILTER_SINCE),
    }
    assert "cpu" not in document["not-recorded"]
    assert "capabilities" not in document["not-recorded"]
