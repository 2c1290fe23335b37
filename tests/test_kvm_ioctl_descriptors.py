"""The kvm adapter touches nothing but the file descriptors it created: every ioctl, mmap and
close in conformance/kvm_ioctl.py acts on an `fd` attribute, and every `fd` attribute is
assigned only from opening the KVM device or from a KVM ioctl that creates a descriptor. The
numbers it uses to reach the SMCCC filter (the attribute ioctls, the group and attribute, struct
kvm_smccc_filter, the hypercall exit and its fields and flags), whether the spec generated them
or kvm_ioctl declares them (struct kvm_device_attr), are the kernel's, as gcc reads them in
Linux 6.12's uapi headers (6.4 added the filter, so older headers lack them), and the
capabilities it reports are the spec's by name and number."""

from __future__ import annotations

import ast
import struct

import pytest

from kvm_fwspec.codegen.generated import kvm_fw_constants as abi
from kvm_fwspec.conformance.guest import kvm_ioctl
from kvm_fwspec.spec.loader import load_spec
from tests.c_probe import evaluate
from tests.checkout import ROOT
from tests.test_uapi_headers import _headers_612, install_overlay

SOURCE = ROOT / "conformance" / "guest" / "kvm_ioctl.py"
TREE = ast.parse(SOURCE.read_text(encoding="utf-8"))
USES = {("fcntl", "ioctl"), ("mmap", "mmap"), ("os", "close"), ("os", "read"), ("os", "write")}
CREATORS = {"KVM_CREATE_VM", "KVM_CREATE_VCPU"}


def dotted(node: ast.expr) -> str:
    return ast.unparse(node)


def calls() -> list[ast.Call]:
    return [
        n for n in ast.walk(TREE) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    ]


def test_every_descriptor_use_is_an_fd_attribute() -> None:
    uses = [
        c
        for c in calls()
        if isinstance(c.func.value, ast.Name) and (c.func.value.id, c.func.attr) in USES
    ]  # type: ignore[attr-defined]
    assert len(uses) >= 8
    foreign = [f"line {c.lineno}: {dotted(c)}" for c in uses
               if not (isinstance(c.args[0], ast.Attribute) and c.args[0].attr == "fd")]  # fmt: skip
    assert foreign == []


def test_every_fd_attribute_comes_from_opening_kvm_or_a_creating_ioctl() -> None:
    assignments = [
        n for n in ast.walk(TREE)
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "fd" for t in n.targets)
    ]  # fmt: skip
    assert len(assignments) == 3
    for assignment in assignments:
        value = assignment.value
        assert isinstance(value, ast.Call), dotted(value)
        source = dotted(value.func)
        if source == "os.open":
            assert dotted(value.args[0]) == "device"  # the KVM device the agent was given
        else:
            assert source == "fcntl.ioctl", dotted(value)
            assert isinstance(value.args[1], ast.Attribute) and value.args[1].attr in CREATORS
            assert isinstance(value.args[0], ast.Attribute) and value.args[0].attr == "fd"


# -- the numbers kvm_ioctl uses, held against the spec and the kernel's headers -------------

SPEC = load_spec()
FILTER = SPEC.smccc_filter
GROUP, ATTRIBUTE = kvm_ioctl.VM_ATTRIBUTES["arm-vm-smccc-filter"]


def run_field(name: str, member: str) -> dict[str, int]:
    """A struct kvm_run field kvm_ioctl reads, by offset and size."""
    offset, size = abi.KVM_RUN_FIELDS[name]
    return {
        f"__builtin_offsetof(struct kvm_run, {member})": offset,
        f"sizeof(((struct kvm_run *)0)->{member})": size,
    }


def filter_fields() -> dict[str, int]:
    """struct kvm_smccc_filter as kvm_ioctl.smccc_filter lays it out: the spec's fields, by
    the kernel's member names (nr-functions is nr_functions)."""
    numbers = {f"sizeof(struct {FILTER.struct_c_name})": abi.SMCCC_FILTER_SIZE}
    for name, (offset, size) in abi.SMCCC_FILTER_FIELDS.items():
        member = name.replace("-", "_")
        numbers[f"__builtin_offsetof(struct {FILTER.struct_c_name}, {member})"] = offset
        numbers[f"sizeof(((struct {FILTER.struct_c_name} *)0)->{member})"] = size
    return numbers


# What kvm_ioctl.py uses to reach the SMCCC filter and its exits, from the spec's generated
# constants or declared itself (struct kvm_device_attr), by the C expression of the kernel's
# uapi headers that must give the same number: the structs' sizes and field offsets too, since
# KVM reads them at the address it is given. The spec's exit flags are held too: an outcome's
# `hypercall-flags` is read with them.
OWN_NUMBERS: dict[str, int] = {
    "KVM_SET_DEVICE_ATTR": abi.Ioctl.KVM_SET_DEVICE_ATTR,
    "KVM_HAS_DEVICE_ATTR": abi.Ioctl.KVM_HAS_DEVICE_ATTR,
    FILTER.group.c_name: GROUP,
    FILTER.attr.c_name: ATTRIBUTE,
    "sizeof(struct kvm_device_attr)": kvm_ioctl.KVM_DEVICE_ATTR.size,
    "__builtin_offsetof(struct kvm_device_attr, group)": struct.calcsize("<I"),
    "__builtin_offsetof(struct kvm_device_attr, attr)": struct.calcsize("<II"),
    "__builtin_offsetof(struct kvm_device_attr, addr)": struct.calcsize("<IIQ"),
    "KVM_EXIT_HYPERCALL": abi.ExitReason.HYPERCALL,
    **run_field("hypercall-nr", "hypercall.nr"),
    **run_field("hypercall-flags", "hypercall.flags"),
    **filter_fields(),
    **{f"KVM_SMCCC_FILTER_{action.name}": action.value for action in abi.SmcccFilterAction},
    **{flag.c_name: flag.value for flag in FILTER.exit_flags},
    **{
        next(c.c_name for c in SPEC.capabilities if c.name == name): number
        for name, number in kvm_ioctl.HOST_CAPABILITIES.items()
    },
    # the power steps: KVM_GET_MP_STATE and its states, the vcpu feature that starts a vcpu
    # off, KVM_ENABLE_CAP's struct, and the SUSPEND event SYSTEM_SUSPEND exits with
    "KVM_GET_MP_STATE": abi.Ioctl.KVM_GET_MP_STATE,
    **{f"KVM_MP_STATE_{state.name}": state.value for state in abi.MpState},
    "KVM_ARM_VCPU_POWER_OFF": abi.VCPU_FEATURES["power-off"][0],
    "KVM_ENABLE_CAP": abi.Ioctl.KVM_ENABLE_CAP,
    "sizeof(struct kvm_enable_cap)": kvm_ioctl.KVM_ENABLE_CAP.size,
    "__builtin_offsetof(struct kvm_enable_cap, flags)": struct.calcsize("<I"),
    "__builtin_offsetof(struct kvm_enable_cap, args)": struct.calcsize("<II"),
    **{f"KVM_SYSTEM_EVENT_{event.name}": event.value for event in abi.SystemEvent},
}


def vocabulary_problems(capabilities: dict[str, int]) -> list[str]:
    """Where HOST_CAPABILITIES' names or numbers are not the spec's capabilities."""
    declared = {c.name: c.value for c in SPEC.capabilities}
    return [
        f"{name}: {number} is not the spec's {declared.get(name)}"
        for name, number in capabilities.items()
        if declared.get(name) != number
    ]


def test_the_capabilities_reported_are_the_spec_s_by_name_and_number() -> None:
    assert vocabulary_problems(kvm_ioctl.HOST_CAPABILITIES) == []
    assert set(kvm_ioctl.REPORTED_CAPABILITIES) == {
        *kvm_ioctl.HOST_CAPABILITIES,
        *kvm_ioctl.VM_ATTRIBUTES,
    }


def test_a_capability_named_or_numbered_otherwise_than_the_spec_is_caught() -> None:
    typo = {"arm-psci-02": abi.KVM_CAP_ARM_PSCI_0_2}
    swapped = {"arm-system-suspend": abi.KVM_CAP_ARM_PSCI_0_2}
    assert vocabulary_problems(typo) == ["arm-psci-02: 102 is not the spec's None"]
    assert vocabulary_problems(swapped) == ["arm-system-suspend: 102 is not the spec's 216"]


def test_the_spec_names_every_filter_number_kvm_ioctl_uses() -> None:
    """The filter's actions and exit flags as the spec declares them, all of them: a number
    the generated module or the spec lost would leave a kernel constant unchecked."""
    assert (
        {a.c_name for a in FILTER.actions}
        == {f"KVM_SMCCC_FILTER_{a.name}" for a in abi.SmcccFilterAction}
        == {"KVM_SMCCC_FILTER_HANDLE", "KVM_SMCCC_FILTER_DENY", "KVM_SMCCC_FILTER_FWD_TO_USER"}
    )
    assert {f.c_name for f in FILTER.exit_flags} == {
        "KVM_HYPERCALL_EXIT_SMC",
        "KVM_HYPERCALL_EXIT_16BIT",
    }
    assert (FILTER.group.c_name, FILTER.attr.c_name) == (
        "KVM_ARM_VM_SMCCC_CTRL",
        "KVM_ARM_VM_SMCCC_FILTER",
    )


@pytest.fixture(scope="module")
def kernel_612(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """OWN_NUMBERS' expressions as gcc evaluates them against Linux 6.12's uapi headers (the
    SMCCC filter's group came in 6.4, so libc-dev's 6.1 headers lack it)."""
    workdir = tmp_path_factory.mktemp("uapi-6.12")
    flags = install_overlay(_headers_612(), workdir)
    (workdir / "probe").mkdir()
    return evaluate(["<linux/kvm.h>", "<asm/kvm.h>"], flags, list(OWN_NUMBERS), workdir / "probe")


def differences(declared: dict[str, int], kernel: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {e: (declared[e], kernel[e]) for e in declared if declared[e] != kernel[e]}


@pytest.mark.tools  # gcc and Debian's linux-headers-6.12 common package
def test_the_numbers_kvm_ioctl_declares_are_the_kernel_s(kernel_612: dict[str, int]) -> None:
    assert set(kernel_612) == set(OWN_NUMBERS)
    assert differences(OWN_NUMBERS, kernel_612) == {}


@pytest.mark.tools
def test_a_wrong_number_is_caught_by_the_kernel_s_headers(kernel_612: dict[str, int]) -> None:
    """Realistic slips, each differing from what the kernel compiles: the attribute ioctl
    composed for a struct without its addr field (16 bytes), the attribute numbered as the
    group's next one, hypercall.flags placed right after nr (forgetting args[6] and ret), the
    filter's pad aligned to 4 bytes, and the 16-bit flag taken for bit 2."""
    wrong = dict(OWN_NUMBERS)
    wrong["KVM_HAS_DEVICE_ATTR"] = 1 << 30 | 16 << 16 | 0xAE << 8 | 0xE3
    wrong["KVM_ARM_VM_SMCCC_FILTER"] = 1
    wrong["__builtin_offsetof(struct kvm_run, hypercall.flags)"] = 40
    wrong["__builtin_offsetof(struct kvm_smccc_filter, pad)"] = 12
    wrong["KVM_HYPERCALL_EXIT_16BIT"] = 4
    assert differences(wrong, kernel_612) == {
        "KVM_HAS_DEVICE_ATTR": (0x4010AEE3, 0x4018AEE3),
        "KVM_ARM_VM_SMCCC_FILTER": (1, 0),
        "__builtin_offsetof(struct kvm_run, hypercall.flags)": (40, 96),
        "__builtin_offsetof(struct kvm_smccc_filter, pad)": (12, 9),
        "KVM_HYPERCALL_EXIT_16BIT": (4, 2),
    }
