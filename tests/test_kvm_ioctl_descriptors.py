"""The kvm adapter touches nothing but the file descriptors it created: every ioctl, mmap and
close in conformance/kvm_ioctl.py acts on an `fd` attribute, and every `fd` attribute is
assigned only from opening the KVM device or from a KVM ioctl that creates a descriptor. The
numbers it declares beside the spec's (the VM attribute ioctl and the SMCCC filter's group) are
the kernel's, as gcc reads them in real uapi headers, and the capabilities it reports are the
spec's by name and number."""

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


# -- the numbers kvm_ioctl declares itself, held against the spec and the kernel's headers ----

SPEC = load_spec()
# What kvm_ioctl.py declares beside the spec's generated constants, by the C expression of the
# kernel's uapi headers that must give the same number (the struct's size and field offsets
# too: KVM reads the struct at the address it is given).
OWN_NUMBERS: dict[str, int] = {
    "KVM_HAS_DEVICE_ATTR": kvm_ioctl.KVM_HAS_DEVICE_ATTR,
    "KVM_ARM_VM_SMCCC_CTRL": kvm_ioctl.KVM_ARM_VM_SMCCC_CTRL,
    "KVM_ARM_VM_SMCCC_FILTER": kvm_ioctl.KVM_ARM_VM_SMCCC_FILTER,
    "sizeof(struct kvm_device_attr)": kvm_ioctl.KVM_DEVICE_ATTR.size,
    "__builtin_offsetof(struct kvm_device_attr, group)": struct.calcsize("<I"),
    "__builtin_offsetof(struct kvm_device_attr, attr)": struct.calcsize("<II"),
    "__builtin_offsetof(struct kvm_device_attr, addr)": struct.calcsize("<IIQ"),
    **{
        next(c.c_name for c in SPEC.capabilities if c.name == name): number
        for name, number in kvm_ioctl.HOST_CAPABILITIES.items()
    },
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


def test_the_attribute_ioctl_is_composed_as_the_spec_composes_its_ioctls() -> None:
    """The same _IOC layout as spec/resolve/api.py: KVM_SET_ONE_REG (_IOW, 16 bytes) comes
    out of kvm_ioctl's composition as the spec's generated number."""
    set_one_reg = kvm_ioctl._IOC_WRITE << 30 | 16 << 16 | kvm_ioctl.KVMIO << 8 | 0xAC
    assert set_one_reg == abi.Ioctl.KVM_SET_ONE_REG


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
    """The struct written without its addr field (16 bytes), and the attribute numbered as the
    group's next one: both differ from what the kernel compiles."""
    wrong = dict(OWN_NUMBERS)
    wrong["KVM_HAS_DEVICE_ATTR"] = kvm_ioctl._IOC_WRITE << 30 | 16 << 16 | 0xAE << 8 | 0xE3
    wrong["KVM_ARM_VM_SMCCC_FILTER"] = 1
    assert differences(wrong, kernel_612) == {
        "KVM_HAS_DEVICE_ATTR": (0x4010AEE3, 0x4018AEE3),
        "KVM_ARM_VM_SMCCC_FILTER": (1, 0),
    }
