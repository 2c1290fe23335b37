"""Spec facts corrected by what real kernels and real header copies showed.

Each test states the real observation it comes from; each failed on the spec before the fix.
"""

from __future__ import annotations

import pytest

from kvm_fwspec.conformance.oracle import Access, Oracle
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.reference_impl.kvm import ReferenceKvm, SpecGap
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Lifetime, Register, Release

SPEC = load_spec()


def _psci_header_names_since(release: Release) -> set[str]:
    """The psci.h names the spec says first appeared in the uapi header of `release`."""
    names = {
        c_name
        for function in SPEC.psci_functions
        if function.header_since == release
        for c_name in function.c_names.values()
    }
    names |= {
        constant.c_name
        for group in SPEC.psci_constant_groups
        if group.header_since == release
        for constant in group.constants
    }
    return names


def test_the_psci_names_dated_to_5_2_are_those_qemus_5_2_rc1_sync_added() -> None:
    """QEMU's linux-headers update against Linux 5.2-rc1 (a188339ca5a3, May 2019) added to
    linux/psci.h exactly SET_SUSPEND_MODE, both SYSTEM_RESET2 ids, PSCI_1_0_OS_INITIATED and
    the two SUSPEND_MODE constants; QEMU's earlier syncs (4.16 to 5.1) have none of them. The
    spec has no OS_INITIATED (the header spells it BIT(0)), so the rest must be dated 5.2."""
    assert _psci_header_names_since(Release(5, 2)) == {
        "PSCI_1_0_FN_SET_SUSPEND_MODE",
        "PSCI_1_1_FN_SYSTEM_RESET2",
        "PSCI_1_1_FN64_SYSTEM_RESET2",
        "PSCI_1_0_SUSPEND_MODE_PC",
        "PSCI_1_0_SUSPEND_MODE_OSI",
    }


def test_a_5_1_header_is_not_expected_to_have_the_suspend_modes() -> None:
    group = next(g for g in SPEC.psci_constant_groups if g.name == "suspend-mode")
    assert group.header_since is not None
    in_header = Lifetime(group.header_since)
    assert not in_header.covers(Release(5, 1), stable=True)
    assert in_header.covers(Release(5, 2))


def _register(name: str) -> Register:
    return next(r for r in SPEC.registers if r.name == name)


def _sized(register: Register, size: str) -> int:
    field = SPEC.layout("reg-id").field("size")
    return register.ids["arm64"] & ~field.mask | field.value_named(size).value << field.low


def _reference_set(kernel: str, reg_id: int) -> str | None:
    """What the reference answers to one SET on an initialised PSCI 0.2 vcpu of `kernel`."""
    kvm = ReferenceKvm(kernel.removesuffix(".y"), "mitigated", stable=kernel.endswith(".y"))
    vcpu = kvm.create_vm().create_vcpu()
    vcpu.init(["psci-0.2"])
    return vcpu.set_one_reg(reg_id, 0)


def _oracle_set(kernel: str, reg_id: int) -> tuple[str, str | None, str | None]:
    oracle = Oracle(SPEC, resolve_profile(SPEC, kernel, "mitigated"))
    decision = oracle.decide(
        Access(
            op="set",
            reg_id=reg_id,
            vcpu_initialized=True,
            psci_02=True,
            has_run=False,
            stored=oracle.reset_values(),
            value=0,
        )
    )
    assert decision is not None
    return decision.rule.id, decision.errno, decision.undefined


# Real 5.10.223 (Debian) and 6.1.192 (Debian) answer ENOENT to a 128-bit SET: a25bc8486f9c
# went to 5.10.180, 5.15.110, 6.1.26 and 6.2.13 (Debian's changelogs of 5.10.223 and 6.1.192
# list it under ChangeLog-5.10.180 and ChangeLog-6.1.26).
WIDE_SETS = [
    ("5.10.y", "psci-version", "fw/set/wrong-size"),
    ("5.15.y", "smccc-arch-workaround-1", "fw/set/wrong-size"),
    ("6.1.y", "psci-version", "fw/set/wrong-size"),
    ("6.1.y", "std-bmap", "fw-feat-bmap/set/wrong-size"),
    ("6.2.y", "vendor-hyp-bmap", "fw-feat-bmap/set/wrong-size"),
    ("6.3", "psci-version", "fw/set/wrong-size"),
]


@pytest.mark.parametrize(
    ("kernel", "register", "rule"), WIDE_SETS, ids=[f"{k}-{r}" for k, r, _ in WIDE_SETS]
)
def test_stable_series_with_the_size_fix_refuse_a_wide_set(
    kernel: str, register: str, rule: str
) -> None:
    reg_id = _sized(_register(register), "u128")
    assert _reference_set(kernel, reg_id) == "ENOENT"
    assert _oracle_set(kernel, reg_id) == (rule, "ENOENT", None)


@pytest.mark.parametrize("kernel", ["5.10", "5.15", "6.1", "6.2", "5.11.y", "5.4.y"])
def test_a_release_without_the_size_fix_still_overflows(kernel: str) -> None:
    """5.10 and 6.1 as tagged, and series the fix never went to, copy 16 bytes into a u64."""
    reg_id = _sized(_register("psci-version"), "u128")
    with pytest.raises(SpecGap, match="fw/set/oversize-overflows"):
        _reference_set(kernel, reg_id)
    assert _oracle_set(kernel, reg_id)[0] == "fw/set/oversize-overflows"


def test_the_size_fix_records_the_stable_series_it_went_to() -> None:
    rules = {r.id: r for r in SPEC.rules}
    assert set(rules["fw/set/wrong-size"].lifetime.backports) == {
        Release(5, 10),
        Release(5, 15),
        Release(6, 1),
        Release(6, 2),
    }
    # The bitmap class is 5.19's: of those series only 6.1 and 6.2 have it.
    assert set(rules["fw-feat-bmap/set/wrong-size"].lifetime.backports) == {
        Release(6, 1),
        Release(6, 2),
    }


@pytest.mark.parametrize("kernel", ["4.16", "5.10", "5.10.y", "5.18", "5.18.y"])
def test_before_the_bitmap_class_a_wide_bitmap_id_is_an_unknown_system_register(
    kernel: str,
) -> None:
    """Before 5.19 an id of class 0x0016 went down the system-register path, which refuses a
    size other than 64 bits (ENOENT) before anything is copied: real 5.10.223 answers ENOENT
    to a 128-bit SET of STD_BMAP's id."""
    reg_id = _sized(_register("std-bmap"), "u128")
    assert _reference_set(kernel, reg_id) == "ENOENT"
    assert _oracle_set(kernel, reg_id) == ("fw-feat-bmap/set/unknown-register", "ENOENT", None)


def test_the_bitmap_overflow_rule_starts_with_the_bitmap_class() -> None:
    rule = next(r for r in SPEC.rules if r.id == "fw-feat-bmap/set/oversize-overflows")
    assert rule.lifetime.since == Release(5, 19)
    assert rule.lifetime.until == Release(6, 3)
