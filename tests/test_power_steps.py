"""The agent side of the vcpu power steps: powered-off vcpus, the mp-state step, and a KVM_RUN
that sleeps because its vcpu is powered off.

A powered-off vcpu's KVM_RUN does not return until a signal interrupts it. The kvm agent's
interval timer brings it back with EINTR, and KVM_GET_MP_STATE then decides: a stopped vcpu
is reported, a runnable one (a CPU_SUSPEND waiting for an interrupt) is run on. These tests
play KVM at the ioctl boundary, so that no outcome here depends on a timer firing.
"""

from __future__ import annotations

import errno
import signal
import struct
import time
from typing import Any

import pytest

from kvm_fwspec.codegen.generated import kvm_fw_constants as abi
from kvm_fwspec.conformance.guest import kvm_ioctl
from kvm_fwspec.conformance.guest.program import execute
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from tests.test_filter_steps import KVM_ANSWER, ForwardingVcpu, Ioctls, call, recorded_ioctls


class PoweredVcpu(ForwardingVcpu):
    """A vcpu whose KVM_RUN may sleep (`sleeps` in `exits`: EINTR, as when the agent's timer
    fires) and whose KVM_GET_MP_STATE reads `mp_states` in turn."""

    def __init__(self, exits: list[str], mp_states: list[int]) -> None:
        super().__init__(exits)
        self.mp_states = mp_states

    def __call__(self, fd: int, request: int, arg: Any) -> None:
        if request == abi.Ioctl.KVM_GET_MP_STATE:
            state = self.mp_states.pop(0)
            self.events.append(f"mp-state {state}")
            arg[:] = struct.pack("<I", state)
            return
        if request == abi.Ioctl.KVM_RUN and self.exits[0] == "sleeps":
            self.exits.pop(0)
            self.events.append("run sleeps")
            raise InterruptedError(errno.EINTR, "Interrupted system call")
        super().__call__(fd, request, arg)


@pytest.fixture
def kvm_ioctls(monkeypatch: pytest.MonkeyPatch) -> Ioctls:
    return recorded_ioctls(monkeypatch)


@pytest.fixture
def timer(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """signal.setitimer recorded, never armed."""
    armed: list[tuple[float, float]] = []

    def setitimer(which: int, seconds: float, interval: float = 0.0) -> tuple[float, float]:
        assert which == signal.ITIMER_REAL
        armed.append((seconds, interval))
        return (0.0, 0.0)

    monkeypatch.setattr(signal, "setitimer", setitimer)
    return armed


STOPPED, RUNNABLE = abi.MpState.STOPPED, abi.MpState.RUNNABLE


def test_a_vcpu_that_powers_itself_off_is_reported_stopped(
    kvm_ioctls: Ioctls, timer: list[tuple[float, float]]
) -> None:
    kernel = PoweredVcpu(["sleeps"], [STOPPED])
    assert call(kvm_ioctls, kernel, 0, []) == {"mp-state": "stopped"}
    assert kernel.events[-2:] == ["run sleeps", f"mp-state {int(STOPPED)}"]
    # the timer repeats every TICK while KVM_RUN may sleep, and is stopped after
    assert timer == [(kvm_ioctl.TICK, kvm_ioctl.TICK), (0, 0.0)]


def test_a_runnable_vcpu_interrupted_in_kvm_run_is_run_on_to_its_answer(
    kvm_ioctls: Ioctls, timer: list[tuple[float, float]]
) -> None:
    """A CPU_SUSPEND waits in KVM_RUN like WFI: the interrupted vcpu is still runnable, so
    it is run again, and the answer it then stores is the call's."""
    kernel = PoweredVcpu(["sleeps", "sleeps", "answered"], [RUNNABLE, RUNNABLE])
    assert call(kvm_ioctls, kernel, 0, []) == {"x0": KVM_ANSWER}
    runs = [e for e in kernel.events if e.startswith(("run", "mp-state"))]
    assert runs == ["run sleeps", "mp-state 0", "run sleeps", "mp-state 0", "run answered"]


def test_a_vcpu_that_never_comes_back_is_a_timeout_not_an_answer(
    kvm_ioctls: Ioctls, timer: list[tuple[float, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([0.0, 1.0, kvm_ioctl.RUN_TIMEOUT + 1])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    kernel = PoweredVcpu(["sleeps", "sleeps"], [RUNNABLE, RUNNABLE])
    with pytest.raises(kvm_ioctl.RunTimeout):
        call(kvm_ioctls, kernel, 0, [])
    assert timer[-1] == (0, 0.0)  # disarmed even so


def test_a_failed_mp_state_read_is_the_call_s_error(
    kvm_ioctls: Ioctls, timer: list[tuple[float, float]]
) -> None:
    class Refusing(PoweredVcpu):
        def __call__(self, fd: int, request: int, arg: Any) -> None:
            if request == abi.Ioctl.KVM_GET_MP_STATE:
                raise OSError(errno.EFAULT, "Bad address")
            super().__call__(fd, request, arg)

    with pytest.raises(RuntimeError, match="KVM_GET_MP_STATE after KVM_RUN failed with EFAULT"):
        call(kvm_ioctls, Refusing(["sleeps"], []), 0, [])


def test_the_mp_state_step_names_the_state_by_the_spec(kvm_ioctls: Ioctls) -> None:
    kernel = PoweredVcpu([], [STOPPED, 7])
    kvm_ioctls.kernel = kernel
    vcpu = object.__new__(kvm_ioctl.KvmVcpu)
    vcpu.fd = 6
    assert vcpu.mp_state() == (None, "stopped")
    assert vcpu.mp_state() == (None, "mp-state-7")  # a value the spec does not name
    sent = [(fd, request) for fd, request, _, _ in kvm_ioctls]
    assert sent == [(6, abi.Ioctl.KVM_GET_MP_STATE)] * 2


def test_the_mp_state_ioctl_and_states_are_the_uapi_s() -> None:
    """_IOR(KVMIO, 0x98, struct kvm_mp_state) and KVM_MP_STATE_STOPPED 5, as
    include/uapi/linux/kvm.h has them (the tools tier compiles them against real headers)."""
    assert abi.Ioctl.KVM_GET_MP_STATE == (2 << 30) | (4 << 16) | (0xAE << 8) | 0x98
    assert (int(RUNNABLE), int(STOPPED)) == (0, 5)


@pytest.mark.parametrize(
    ("program", "error"),
    [
        ({"powered-off": [2]}, "powered-off [2] is not a list of the program's vcpus, 0 to 1"),
        ({"powered-off": 1}, "powered-off 1 is not a list of the program's vcpus, 0 to 1"),
        ({"powered-off": [True]}, "powered-off [true] is not a list of the program's vcpus, 0 to 1"),
        ({"powered-off": [1], "features": None},
         "powered-off needs features: an uninitialised vcpu has no power state"),
    ],
    ids=["beyond-the-vcpus", "not-a-list", "a-boolean", "uninitialised"],
)  # fmt: skip
def test_a_malformed_powered_off_is_the_program_s_error(
    program: dict[str, Any], error: str
) -> None:
    steps = [{"op": "mp-state", "vcpu": 0}, {"op": "run", "vcpu": 1}]
    full = {"vcpus": 2, "features": ["psci-0.2"], "steps": steps} | program
    assert execute(ReferenceKvm("6.12", "mitigated"), full) == [
        {"error": error},
        {"error": "not run"},
    ]


def test_powered_off_vcpus_are_initialised_with_the_power_off_feature() -> None:
    """What each vcpu's KVM_ARM_VCPU_INIT is asked for: vcpu 1 alone gets power-off."""
    asked: list[list[str]] = []

    class Vcpu:
        def init(self, features: list[str]) -> str | None:
            asked.append(features)
            return None

    class Vm:
        def create_vcpu(self) -> Vcpu:
            return Vcpu()

    class Implementation:
        def create_vm(self) -> Vm:
            return Vm()

    program = {"vcpus": 2, "features": ["psci-0.2"], "powered-off": [1], "steps": []}
    assert execute(Implementation(), program) == []  # type: ignore[arg-type]
    assert asked == [["psci-0.2"], ["psci-0.2", "power-off"]]


# -- KVM_ENABLE_CAP on the VM ----------------------------------------------------------------


def test_enable_cap_hands_kvm_the_capability_with_flags_and_args_zero(
    kvm_ioctls: Ioctls,
) -> None:
    vm = object.__new__(kvm_ioctl.KvmVm)
    vm.fd = 9
    assert vm.enable_capability(216) is None

    def refusing(fd: int, request: int, arg: Any) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    kvm_ioctls.kernel = refusing
    assert vm.enable_capability(999) == "EINVAL"
    (fd, request, data, _), _ = kvm_ioctls
    assert (fd, request) == (9, abi.Ioctl.KVM_ENABLE_CAP)
    assert len(data) == 104 and data[:4] == struct.pack("<I", 216) and not any(data[4:])


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ({"op": "enable-cap", "vcpu": 0, "cap": 216}, "an enable-cap step is made on the VM and names no vcpu"),
        ({"op": "enable-cap"}, "an enable-cap step needs cap"),
        ({"op": "enable-cap", "cap": 1 << 32}, "cap 0x100000000 is not a number from 0 to 0xffffffff"),
    ],
    ids=["with-a-vcpu", "without-cap", "cap-beyond-u32"],
)  # fmt: skip
def test_a_malformed_enable_cap_step_is_its_error(step: dict[str, Any], error: str) -> None:
    program = {"vcpus": 1, "features": ["psci-0.2"], "steps": [step]}
    assert execute(ReferenceKvm("6.12", "mitigated"), program) == [{"error": error}]


def test_system_suspend_answers_only_on_a_vm_that_enabled_its_capability() -> None:
    """On the reference of 6.12: NOT_SUPPORTED until KVM_CAP_ARM_SYSTEM_SUSPEND is enabled,
    then a SUSPEND exit that leaves both vcpus runnable; 5.10 has no such capability."""
    suspend = {"op": "call", "vcpu": 1, "function": 0x8400000E, "args": [0, 0]}
    states = [{"op": "mp-state", "vcpu": 0}, {"op": "mp-state", "vcpu": 1}]
    enable = {"op": "enable-cap", "cap": 216}
    program = {"vcpus": 2, "features": ["psci-0.2"], "steps": [suspend, enable, suspend, *states]}
    assert execute(ReferenceKvm("6.12", "mitigated"), program) == [
        {"x0": -1},
        {"ok": True},
        {"exit": "suspend"},
        {"mp-state": "runnable"},
        {"mp-state": "runnable"},
    ]
    assert execute(ReferenceKvm("5.10", "mitigated"), program)[:3] == [
        {"x0": -1},
        {"errno": "EINVAL"},
        {"x0": -1},
    ]
