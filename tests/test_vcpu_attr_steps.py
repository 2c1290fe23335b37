"""The agent side of the vcpu attribute steps (set-vcpu-attr, get-vcpu-attr) and the data
region every VM of the kvm agent has: what the agent hands KVM at the ioctl boundary, and how
the executor checks the steps before any ioctl."""

from __future__ import annotations

import ctypes
import errno
import struct
from typing import Any

import pytest

from kvm_fwspec.codegen.generated import kvm_fw_constants as abi
from kvm_fwspec.conformance.guest import kvm_ioctl
from kvm_fwspec.conformance.guest.program import DATA_BASE, DATA_SIZE, PROGRAM_MEMORY, execute
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.spec.loader import load_spec
from tests.test_filter_steps import Ioctls, recorded_ioctls

STOLEN_TIME = load_spec().stolen_time
GROUP, ATTR = STOLEN_TIME.group.value, STOLEN_TIME.attr.value


@pytest.fixture
def kvm_ioctls(monkeypatch: pytest.MonkeyPatch) -> Ioctls:
    return recorded_ioctls(monkeypatch)


def fake_vcpu(fd: int) -> kvm_ioctl.KvmVcpu:
    """A KvmVcpu whose descriptor is `fd`, with no vcpu behind it: only the ioctl boundary."""
    vcpu = object.__new__(kvm_ioctl.KvmVcpu)
    vcpu.fd, vcpu.value = fd, kvm_ioctl._Buffer(256)
    return vcpu


def test_set_points_kvm_at_the_address_as_a_little_endian_u64(kvm_ioctls: Ioctls) -> None:
    seen: list[tuple[tuple[int, ...], int]] = []

    def kernel(fd: int, request: int, arg: Any) -> None:
        fields = kvm_ioctl.KVM_DEVICE_ATTR.unpack(bytes(arg))
        seen.append((fields, int.from_bytes(ctypes.string_at(fields[3], 8), "little")))

    kvm_ioctls.kernel = kernel
    assert fake_vcpu(9).set_attribute(GROUP, ATTR, DATA_BASE + 0x40) is None
    ((fd, request, _, _),) = kvm_ioctls
    assert (fd, request) == (9, abi.Ioctl.KVM_SET_DEVICE_ATTR)
    (flags, group, attr, _), value = seen[0]
    assert (flags, group, attr, value) == (0, 2, 0, 0x9000_0040)


def test_get_reads_back_what_kvm_wrote_and_an_errno_is_named(kvm_ioctls: Ioctls) -> None:
    def kernel(fd: int, request: int, arg: Any) -> None:
        address = kvm_ioctl.KVM_DEVICE_ATTR.unpack(bytes(arg))[3]
        if kvm_ioctl.KVM_DEVICE_ATTR.unpack(bytes(arg))[2] != ATTR:
            raise OSError(errno.ENXIO, "No such device or address")
        ctypes.memmove(address, struct.pack("<Q", STOLEN_TIME.unset), 8)

    kvm_ioctls.kernel = kernel
    vcpu = fake_vcpu(9)
    assert vcpu.get_attribute(GROUP, ATTR) == (None, (1 << 64) - 1)
    assert kvm_ioctls[-1][1] == abi.Ioctl.KVM_GET_DEVICE_ATTR
    assert vcpu.get_attribute(GROUP, ATTR + 1) == ("ENXIO", None)


def test_every_vm_of_the_kvm_agent_maps_the_data_region_in_its_own_slot(
    kvm_ioctls: Ioctls, monkeypatch: pytest.MonkeyPatch
) -> None:
    regions: list[tuple[int, int, int, int, int]] = []

    def kernel(fd: int, request: int, arg: Any) -> int | None:
        if request == abi.Ioctl.KVM_SET_USER_MEMORY_REGION:
            regions.append(struct.unpack("<IIQQQ", bytes(arg)))
        return None

    kvm_ioctls.kernel = kernel
    host = object.__new__(kvm_ioctl.KvmHost)
    host.fd = 3
    kvm_ioctl.KvmVm(host, 1)
    slots = {(slot, base, size) for slot, _, base, size, _ in regions}
    assert (1, DATA_BASE, DATA_SIZE) in slots
    assert len({slot for slot, _, _ in slots}) == len(slots) == 2  # code and data, each its own
    assert PROGRAM_MEMORY == ((DATA_BASE, DATA_SIZE),)


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ({"op": "set-vcpu-attr", "vcpu": 0, "group": 2, "attr": 0}, "a set-vcpu-attr step needs value"),
        ({"op": "get-vcpu-attr", "group": 2, "attr": 0}, "a get-vcpu-attr step needs vcpu, one of 0 to 0"),
        ({"op": "set-vcpu-attr", "vcpu": 0, "group": 2, "attr": 0, "value": -1},
         "value -0x1 is not a number from 0 to 0xffffffffffffffff"),
    ],
)  # fmt: skip
def test_a_malformed_vcpu_attribute_step_is_its_error(step: dict[str, Any], error: str) -> None:
    program = {"vcpus": 1, "features": ["psci-0.2"], "steps": [step]}
    assert execute(ReferenceKvm("6.12", "mitigated"), program) == [{"error": error}]


def test_a_group_the_spec_does_not_define_is_a_gap_not_a_guess() -> None:
    """The reference knows only stolen time's group: another (the PMU's 0, the timer's 1) is
    reported as the spec's gap rather than answered."""
    program = {"vcpus": 1, "features": ["psci-0.2"],
               "steps": [{"op": "get-vcpu-attr", "vcpu": 0, "group": 1, "attr": 0}]}  # fmt: skip
    (outcome,) = execute(ReferenceKvm("6.12", "mitigated", memory=PROGRAM_MEMORY), program)
    assert outcome["error"].startswith("SpecGap: the spec has no vcpu attribute group 1")
