"""Real KVM through /dev/kvm: the implementation the `kvm` agent serves from inside a host.

Stdlib only (os, fcntl, mmap, struct, signal, array), so it runs in a minimal arm64 guest.
Guest calls run three instructions at a guest-physical address unique to the VM:

    hvc #0             the call: KVM's PSCI/SMCCC handler answers in x0 (it clobbers x0-x3)
                       (a call the VM's SMCCC filter forwards is answered by this side,
                       at KVM_EXIT_HYPERCALL, as a VMM would)
    str x0, [x19]      x19 points at an unbacked address: KVM_RUN exits with KVM_EXIT_MMIO
    b   <hvc>          the next KVM_RUN completes the store and calls again

x0 arrives as the MMIO exit's data; a call that answers in more registers (CALL_UID,
TRNG_GET_UUID) has x1-x3 read with KVM_GET_ONE_REG at that exit, which the store leaves alone.

x19 is callee-saved, so it survives the call; the MMIO address, also unique to the VM, proves
which program ran (under TCG a fresh VM at a reused address can run an earlier VM's code).

A vcpu that is powered off (KVM_ARM_VCPU_POWER_OFF, PSCI CPU_OFF) does not exit: KVM_RUN
sleeps until another vcpu's CPU_ON or a signal. An interval timer's signal brings it back
with EINTR, and KVM_GET_MP_STATE then tells a stopped vcpu from one still on its way.
"""

from __future__ import annotations

import array
import errno
import fcntl
import mmap
import os
import signal
import struct
import time
from typing import Any

from kvm_fwspec.codegen.generated import kvm_fw_constants as abi
from kvm_fwspec.conformance.guest.program import (
    DATA_BASE,
    DATA_SIZE,
    NOT_SUPPORTED_U64,
    Implementation,
    execute,
)

CODE = struct.pack("<III", 0xD4000002, 0xF9000260, 0x17FFFFFE)  # hvc #0; str x0, [x19]; b .-8
SLOT_SIZE = 0x10000
CODE_BASE = 0x4000_0000
MMIO_BASE = 0x1000_0000
RUN_TIMEOUT = 5.0  # seconds a KVM_RUN may take before the agent calls it stuck
TICK = 0.05  # seconds between the signals that bring a sleeping KVM_RUN back to this side


# What a fingerprint records of the host's KVM beyond its registers: KVM_CHECK_EXTENSION of
# these capabilities on /dev/kvm, by the spec's names (spec/api.yaml declares their numbers)...
HOST_CAPABILITIES = {
    "arm-psci-0.2": abi.KVM_CAP_ARM_PSCI_0_2,
    "arm-system-suspend": abi.KVM_CAP_ARM_SYSTEM_SUSPEND,
}
# ... and whether a VM has these attributes (KVM_HAS_DEVICE_ATTR on a VM fd), by the kernel's
# name of the attribute: (group, attribute), as the spec declares them. The SMCCC filter
# (KVM_ARM_VM_SMCCC_CTRL / KVM_ARM_VM_SMCCC_FILTER) came in Linux 6.4.
VM_ATTRIBUTES = {"arm-vm-smccc-filter": abi.SMCCC_FILTER_ATTRIBUTE}
REPORTED_CAPABILITIES = (*HOST_CAPABILITIES, *VM_ATTRIBUTES)
"""The names of the hello's `kvm-capabilities` a real-KVM agent reports, in that order."""

# struct kvm_device_attr (include/uapi/linux/kvm.h): flags, group, attr, addr. The spec
# declares the ioctls that take it, not the struct; tests/test_kvm_ioctl_descriptors.py holds
# its layout, and every number below taken from the spec, against real uapi headers.
KVM_DEVICE_ATTR = struct.Struct("<IIQQ")
# struct kvm_enable_cap: cap, flags, args[4] (left 0) and 64 pad bytes; the same test holds it.
KVM_ENABLE_CAP = struct.Struct("<II32x64x")
# Before 6.4 arm64's VM ioctl does not take KVM_HAS_DEVICE_ATTR (EINVAL); from 6.4 a group
# or attribute it lacks is ENXIO. Either way the VM has no such attribute.
NO_ATTRIBUTE = (errno.errorcode[errno.EINVAL], errno.errorcode[errno.ENXIO])


def smccc_filter(base: int, nr_functions: int, action: int, pad: int) -> bytes:
    """struct kvm_smccc_filter as KVM reads it, each field little-endian at the spec's offset.
    `pad` fills the first 8 of the 15 pad bytes (the program's step carries a u64), the
    other 7 stay zero: KVM refuses any bit set there."""
    values = {"base": base, "nr-functions": nr_functions, "action": action, "pad": pad}
    data = bytearray(abi.SMCCC_FILTER_SIZE)
    for name, (offset, size) in abi.SMCCC_FILTER_FIELDS.items():
        data[offset : offset + size] = values[name].to_bytes(size, "little")
    return bytes(data)


class RunTimeout(Exception):
    """KVM_RUN did not return within the watchdog's bound."""


class Stopped(Exception):
    """KVM_RUN sleeps because the vcpu is powered off (KVM_MP_STATE_STOPPED)."""


def _on_tick(signum: int, frame: Any) -> None:
    """Nothing: the signal only interrupts KVM_RUN, which then fails with EINTR."""


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


class _Buffer:
    """Memory whose userspace address KVM can be given: an array's storage, aligned."""

    def __init__(self, size: int, align: int = 8) -> None:
        self.storage = array.array("B", bytes(size + align))
        address = self.storage.buffer_info()[0]
        self.offset = -address % align
        self.address = address + self.offset
        self.size = size

    def write(self, data: bytes, at: int = 0) -> None:
        start = self.offset + at
        self.storage[start : start + len(data)] = array.array("B", data)

    def read(self, length: int, at: int = 0) -> bytes:
        start = self.offset + at
        return self.storage[start : start + length].tobytes()


class KvmHost:
    """/dev/kvm on this machine; each program gets a fresh VM from it."""

    def __init__(self, device: str = "/dev/kvm") -> None:
        self.fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        self.run_size = fcntl.ioctl(self.fd, abi.Ioctl.KVM_GET_VCPU_MMAP_SIZE)
        self.serial = 0
        signal.signal(signal.SIGALRM, _on_tick)

    def create_vm(self) -> KvmVm:
        self.serial += 1
        return KvmVm(self, self.serial)

    def offered_features(self) -> list[str]:
        """The vcpu features whose capability this KVM reports: what QEMU's `-cpu host`
        asks for (with PSCI 0.2, PMUv3, SVE and pointer authentication at their defaults)."""
        return [
            name
            for name, (_, capability, _) in abi.VCPU_FEATURES.items()
            if capability is not None
            and fcntl.ioctl(self.fd, abi.Ioctl.KVM_CHECK_EXTENSION, capability) > 0
        ]

    def kvm_capabilities(self) -> dict[str, int]:
        """What the hello's `kvm-capabilities` reports: each of HOST_CAPABILITIES as
        KVM_CHECK_EXTENSION answers it (0 when this KVM lacks it), and 1 or 0 for whether a
        fresh VM has each of VM_ATTRIBUTES. An errno other than NO_ATTRIBUTE's is raised."""
        answers = {
            name: fcntl.ioctl(self.fd, abi.Ioctl.KVM_CHECK_EXTENSION, capability)
            for name, capability in HOST_CAPABILITIES.items()
        }
        vm = self.create_vm()
        try:
            for name, (group, attribute) in VM_ATTRIBUTES.items():
                answer = vm.has_attribute(group, attribute)
                if answer is not None and answer not in NO_ATTRIBUTE:
                    # Not an answer about the attribute (EFAULT: KVM could not read the struct).
                    raise OSError(
                        f"KVM_HAS_DEVICE_ATTR ({group}, {attribute}) failed with {answer}"
                    )
                answers[name] = int(answer is None)
        finally:
            vm.close()
        return answers


class KvmVm:
    def __init__(self, host: KvmHost, serial: int) -> None:
        self.host = host
        self.fd = fcntl.ioctl(host.fd, abi.Ioctl.KVM_CREATE_VM, 0)
        self.code_base = CODE_BASE + (serial % 1024) * SLOT_SIZE
        self.mmio = MMIO_BASE + serial % (1 << 20) * 64
        self.memory = _Buffer(SLOT_SIZE, SLOT_SIZE)
        self.memory.write(CODE)
        self.data = _Buffer(DATA_SIZE, SLOT_SIZE)
        for slot, (base, buffer) in enumerate(
            ((self.code_base, self.memory), (DATA_BASE, self.data))
        ):
            region = struct.pack("<IIQQQ", slot, 0, base, buffer.size, buffer.address)
            fcntl.ioctl(self.fd, abi.Ioctl.KVM_SET_USER_MEMORY_REGION, bytearray(region))
        target = bytearray(32)
        fcntl.ioctl(self.fd, abi.Ioctl.KVM_ARM_PREFERRED_TARGET, target)
        self.target = struct.unpack_from("<I", target)[0]
        self.vcpus: list[KvmVcpu] = []

    def _device_attr(self, request: int, group: int, attribute: int, address: int) -> str | None:
        """A device-attribute ioctl on the VM: None, or the errno's name."""
        attr = bytearray(KVM_DEVICE_ATTR.pack(0, group, attribute, address))
        try:
            fcntl.ioctl(self.fd, request, attr)
        except OSError as exc:
            return _errno_name(exc)
        return None

    def has_attribute(self, group: int, attribute: int) -> str | None:
        """KVM_HAS_DEVICE_ATTR on the VM: None if it has the attribute, or the errno."""
        return self._device_attr(abi.Ioctl.KVM_HAS_DEVICE_ATTR, group, attribute, 0)

    def enable_capability(self, cap: int) -> str | None:
        """KVM_ENABLE_CAP on the VM: struct kvm_enable_cap with flags and args 0."""
        try:
            fcntl.ioctl(self.fd, abi.Ioctl.KVM_ENABLE_CAP, bytearray(KVM_ENABLE_CAP.pack(cap, 0)))
        except OSError as exc:
            return _errno_name(exc)
        return None

    def set_smccc_filter(self, base: int, nr_functions: int, action: int, pad: int) -> str | None:
        """KVM_SET_DEVICE_ATTR of one SMCCC filter range: None, or the errno. KVM copies the
        struct from `addr`, so it lives in a buffer whose address stays put."""
        buffer = _Buffer(abi.SMCCC_FILTER_SIZE)
        buffer.write(smccc_filter(base, nr_functions, action, pad))
        group, attribute = abi.SMCCC_FILTER_ATTRIBUTE
        return self._device_attr(abi.Ioctl.KVM_SET_DEVICE_ATTR, group, attribute, buffer.address)

    def create_vcpu(self) -> KvmVcpu:
        vcpu = KvmVcpu(self, len(self.vcpus))
        self.vcpus.append(vcpu)
        return vcpu

    def close(self) -> None:
        for vcpu in self.vcpus:
            vcpu.close()
        os.close(self.fd)


class KvmVcpu:
    def __init__(self, vm: KvmVm, index: int) -> None:
        self.vm = vm
        self.fd = fcntl.ioctl(vm.fd, abi.Ioctl.KVM_CREATE_VCPU, index)
        self.run_area = mmap.mmap(
            self.fd, vm.host.run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self.value = _Buffer(256)
        self.one_reg = bytearray(16)
        self.started = False

    def close(self) -> None:
        self.run_area.close()
        os.close(self.fd)

    def init(self, features: list[str]) -> str | None:
        """KVM_ARM_VCPU_INIT with the spec's named features (`power-off` among them, for a
        vcpu that starts powered off), then KVM_ARM_VCPU_FINALIZE for each that needs it
        (SVE): until then KVM refuses to list or touch the registers."""
        unknown = sorted(set(features) - set(abi.VCPU_FEATURES))
        if unknown:
            raise ValueError(f"unknown vcpu features {unknown}")
        bits = 0
        for name in features:
            bits |= 1 << abi.VCPU_FEATURES[name][0]
        try:
            fcntl.ioctl(
                self.fd,
                abi.Ioctl.KVM_ARM_VCPU_INIT,
                bytearray(struct.pack("<I7I", self.vm.target, bits, *[0] * 6)),
            )
            for name in features:
                bit, _, finalize = abi.VCPU_FEATURES[name]
                if finalize:
                    fcntl.ioctl(
                        self.fd, abi.Ioctl.KVM_ARM_VCPU_FINALIZE, bytearray(struct.pack("<i", bit))
                    )
        except OSError as exc:
            return _errno_name(exc)
        return None

    def _one_reg(self, request: int, reg_id: int) -> None:
        struct.pack_into("<QQ", self.one_reg, 0, reg_id, self.value.address)
        fcntl.ioctl(self.fd, request, self.one_reg)

    def get_one_reg(self, reg_id: int) -> tuple[str | None, int | None]:
        size = 1 << ((reg_id & abi.REG_SIZE_MASK) >> abi.REG_SIZE_SHIFT)
        self.value.write(bytes(size))
        try:
            self._one_reg(abi.Ioctl.KVM_GET_ONE_REG, reg_id)
        except OSError as exc:
            return _errno_name(exc), None
        return None, int.from_bytes(self.value.read(size), "little")

    def set_one_reg(self, reg_id: int, value: int) -> str | None:
        size = 1 << ((reg_id & abi.REG_SIZE_MASK) >> abi.REG_SIZE_SHIFT)
        self.value.write((value & ((1 << 8 * size) - 1)).to_bytes(size, "little"))
        try:
            self._one_reg(abi.Ioctl.KVM_SET_ONE_REG, reg_id)
        except OSError as exc:
            return _errno_name(exc)
        return None

    def reg_list(self) -> tuple[str | None, list[int]]:
        capacity = 4096  # > 1024 bytes, so fcntl passes the buffer itself and KVM fills it
        buffer = bytearray(struct.pack("<Q", capacity) + bytes(8 * capacity))
        try:
            fcntl.ioctl(self.fd, abi.Ioctl.KVM_GET_REG_LIST, buffer)
        except OSError as exc:
            return _errno_name(exc), []
        count = struct.unpack_from("<Q", buffer)[0]
        return None, list(struct.unpack_from(f"<{count}Q", buffer, 8))

    def _core(self, name: str, index: int = 0) -> int:
        first, _ = abi.CORE_REGISTER_WORDS[name]
        return abi.CORE_REGISTER_BASE + first + 2 * index

    def _set_core(self, name: str, value: int, index: int = 0) -> None:
        errno_name = self.set_one_reg(self._core(name, index), value)
        if errno_name:
            raise OSError(f"setting core register {name}{index} failed with {errno_name}")

    def _device_attr(self, request: int, group: int, attribute: int) -> str | None:
        """A device-attribute ioctl on the vcpu, `addr` pointing at the u64 in self.value:
        None, or the errno's name."""
        attr = bytearray(KVM_DEVICE_ATTR.pack(0, group, attribute, self.value.address))
        try:
            fcntl.ioctl(self.fd, request, attr)
        except OSError as exc:
            return _errno_name(exc)
        return None

    def set_attribute(self, group: int, attr: int, value: int) -> str | None:
        """KVM_SET_DEVICE_ATTR on the vcpu with a u64 (the stolen-time IPA's type)."""
        self.value.write(value.to_bytes(8, "little"))
        return self._device_attr(abi.Ioctl.KVM_SET_DEVICE_ATTR, group, attr)

    def get_attribute(self, group: int, attr: int) -> tuple[str | None, int | None]:
        """KVM_GET_DEVICE_ATTR on the vcpu into a u64."""
        self.value.write(bytes(8))
        failed = self._device_attr(abi.Ioctl.KVM_GET_DEVICE_ATTR, group, attr)
        return (failed, None) if failed else (None, int.from_bytes(self.value.read(8), "little"))

    def mp_state(self) -> tuple[str | None, str | None]:
        """KVM_GET_MP_STATE: (None, the state's name in the spec), or (the errno, None)."""
        state = bytearray(4)
        try:
            fcntl.ioctl(self.fd, abi.Ioctl.KVM_GET_MP_STATE, state)
        except OSError as exc:
            return _errno_name(exc), None
        value = struct.unpack("<I", state)[0]
        names = {int(s): s.name.lower() for s in abi.MpState}
        return None, names.get(value, f"mp-state-{value}")

    def run(self) -> dict[str, Any]:
        """KVM_RUN once; the guest makes a call with x0 = 0, which every KVM refuses (and
        which, should a filter forward it, is answered NOT_SUPPORTED)."""
        outcome = self.call(0, [], NOT_SUPPORTED_U64)
        return {key: outcome[key] for key in ("errno", "mp-state") if key in outcome} or {
            "ok": True
        }

    def call(
        self, function_id: int, args: list[int], answer: int, results: int = 1
    ) -> dict[str, Any]:
        """The guest's HVC with x0 = function_id and x1-x3 = args. A call the VM's SMCCC
        filter forwards ends KVM_RUN with KVM_EXIT_HYPERCALL: this side is then the VMM,
        writes `answer` to x0 and runs the vcpu on (the PC is already past the HVC), so the
        guest stores what it got, and the outcome says which call was forwarded and how.
        With `results` above 1, the outcome of a call that returns to the guest also has
        x1 to x{results - 1} as the guest then holds them (after a forwarded call: what the
        guest passed, since this side answers only x0)."""
        if not self.started:
            self._set_core("pc", self.vm.code_base)
            self._set_core("x", self.vm.mmio, 19)
        for index, value in enumerate([function_id, *args, 0, 0, 0][:4]):
            self._set_core("x", value, index)
        try:
            failed = self._run()
        except Stopped:
            return {"mp-state": "stopped"}
        if failed:
            return {"errno": failed}
        self.started = True
        if self._field("exit-reason") != abi.ExitReason.HYPERCALL:
            return self._with_results(self._exit(), results)
        forwarded = {
            "hypercall": self._field("hypercall-nr"),
            "hypercall-flags": self._field("hypercall-flags"),
        }
        self._set_core("x", answer, 0)
        failed = self._run()
        if failed:  # not an answer of the ABI: KVM took the call and then would not go on
            function = forwarded["hypercall"]
            raise OSError(f"KVM_RUN after answering forwarded call {function:#x}: {failed}")
        outcome = self._exit()
        if "x0" not in outcome:
            raise RuntimeError(f"the guest did not store x0 after its forwarded call: {outcome}")
        return {**self._with_results(outcome, results), **forwarded}

    def _with_results(self, outcome: dict[str, Any], results: int) -> dict[str, Any]:
        """`outcome` and, if the guest got the call's answer (it stored x0), its x1 to
        x{results - 1}, read now: the vcpu is stopped at the store, past the HVC."""
        if "x0" not in outcome:
            return outcome
        read = dict(outcome)
        for index in range(1, results):
            failed, value = self.get_one_reg(self._core("x", index))
            if failed:
                raise OSError(f"reading x{index} after the call failed with {failed}")
            read[f"x{index}"] = value
        return read

    def _run(self) -> str | None:
        """KVM_RUN until KVM exits to this side: None, or the errno's name; Stopped if the
        vcpu is powered off. Every TICK a signal interrupts a KVM_RUN that sleeps: a stopped
        vcpu is then reported, any other is run on (it resumes where it was), until
        RUN_TIMEOUT. How often the signal comes changes how soon, never what, is reported."""
        deadline = time.monotonic() + RUN_TIMEOUT
        signal.setitimer(signal.ITIMER_REAL, TICK, TICK)
        try:
            while not self._entered():
                failed, state = self.mp_state()
                if failed:
                    raise RuntimeError(f"KVM_GET_MP_STATE after KVM_RUN failed with {failed}")
                if state == abi.MpState.STOPPED.name.lower():
                    raise Stopped()
                if time.monotonic() > deadline:
                    raise RunTimeout(f"KVM_RUN did not return within {RUN_TIMEOUT} s")
        except OSError as exc:
            return _errno_name(exc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return None

    def _entered(self) -> bool:
        """One KVM_RUN: True once it returns, False if a signal interrupted it (EINTR)."""
        try:
            fcntl.ioctl(self.fd, abi.Ioctl.KVM_RUN)
        except InterruptedError:
            return False
        return True

    def _field(self, name: str) -> int:
        offset, size = abi.KVM_RUN_FIELDS[name]
        return int.from_bytes(self.run_area[offset : offset + size], "little")

    def _exit(self) -> dict[str, Any]:
        reason = self._field("exit-reason")
        if reason == abi.ExitReason.MMIO:
            address = self._field("mmio-phys-addr")
            if address != self.vm.mmio or not self._field("mmio-is-write"):
                raise RuntimeError(
                    f"guest accessed {address:#x}, not this VM's {self.vm.mmio:#x}: another VM's code ran"
                )
            x0 = self._field("mmio-data")
            return {"x0": x0 - (1 << 64) if x0 >> 63 else x0}
        if reason == abi.ExitReason.SYSTEM_EVENT:
            event = self._field("system-event-type")
            names = {int(e): e.name.lower() for e in abi.SystemEvent}  # the spec's event names
            outcome: dict[str, Any] = {"exit": names.get(event, f"system-event-{event}")}
            flags = self._field("system-event-flags")  # SYSTEM_RESET2's and SYSTEM_OFF2's
            if flags:
                outcome["flags"] = flags
            return outcome
        raise RuntimeError(f"unexpected KVM_RUN exit reason {reason}")


WORKAROUND_REGISTERS = {
    "smccc-arch-workaround-1": abi.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1,
    "smccc-arch-workaround-2": abi.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2,
    "smccc-arch-workaround-3": abi.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3,
}


def host_levels(implementation: Implementation) -> dict[str, int]:
    """What an implementation's workaround registers report, read on a fresh vcpu of PSCI 0.2
    as a VMM would: the host profile to certify against. Real KVM and the reference agent read
    it the same way."""
    program = {
        "vcpus": 1,
        "features": ["psci-0.2"],
        "steps": [{"op": "get", "vcpu": 0, "reg": reg} for reg in WORKAROUND_REGISTERS.values()],
    }
    outcomes = execute(implementation, program)
    return {
        name: outcome["value"]
        for name, outcome in zip(WORKAROUND_REGISTERS, outcomes, strict=True)
        if "value" in outcome
    }
