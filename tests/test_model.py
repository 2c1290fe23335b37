"""Facts of the resolved model that users rely on, derived rather than typed in."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvm_fwspec.spec import model
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Lifetime, Release, Spec

SPEC = load_spec()


def test_firmware_ids_follow_the_documented_patterns() -> None:
    for register in SPEC.registers:
        prefix = {"fw": 0x0014, "fw-feat-bmap": 0x0016}[register.register_class.name]
        assert register.ids["arm64"] == 0x6030_0000_0000_0000 | prefix << 16 | register.index
        if "arm" in register.ids:
            assert register.ids["arm"] == 0x4030_0000_0000_0000 | prefix << 16 | register.index


def test_psci_versions_encode_major_and_minor() -> None:
    encoded = {v.name: v.encoded for v in SPEC.psci_versions}
    assert encoded == {
        "0.1": 0x1,
        "0.2": 0x2,
        "1.0": 0x10000,
        "1.1": 0x10001,
        "1.2": 0x10002,
        "1.3": 0x10003,
    }


def test_default_psci_version_by_release() -> None:
    assert SPEC.psci_latest_in(Release(4, 17)).name == "1.0"
    assert SPEC.psci_latest_in(Release(5, 18)).name == "1.1"
    assert SPEC.psci_latest_in(Release(6, 12)).name == "1.1"
    assert SPEC.psci_latest_in(Release(6, 13)).name == "1.3"


def test_register_lists_grow_as_the_kernel_did() -> None:
    def count(release: Release) -> int:
        return sum(r.exists_on("arm64", release) for r in SPEC.registers)

    counts = [count(Release.parse(r)) for r in ("4.17", "5.3", "5.17", "5.19", "6.15")]
    assert counts == [1, 3, 4, 7, 8]
    assert not any(r.exists_on("arm", Release(5, 7)) for r in SPEC.registers)


def test_function_ids_are_composed_from_smccc_fields() -> None:
    ids = {f.name: f.ids for f in SPEC.psci_functions}
    assert ids["psci-version"] == {"smc32": 0x84000000}
    assert ids["cpu-on"] == {"smc32": 0x84000003, "smc64": 0xC4000003}
    smccc = {f.name: f.function_id for f in SPEC.smccc_functions}
    assert smccc["smccc-arch-workaround-1"] == 0x80008000
    assert smccc["trng-rnd64"] == 0xC4000053
    assert smccc["vendor-hyp-call-uid"] == 0x8600FF01


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_reg_id_fields_tile_every_id(reg_id: int) -> None:
    layout = SPEC.layout("reg-id")
    rebuilt = 0
    for field in layout.fields:
        rebuilt |= field.extract(reg_id) << field.low
    assert rebuilt == reg_id


def test_guest_view_of_psci_functions() -> None:
    handled = {f.name: f.kvm for f in SPEC.psci_functions if f.kvm is not None}
    from_02 = {n for n, k in handled.items() if k.from_version.name == "0.2"}
    assert from_02 == {
        "psci-version", "cpu-suspend", "cpu-off", "cpu-on", "affinity-info",
        "migrate-info-type", "system-off", "system-reset",
    }  # fmt: skip
    assert handled["system-reset2"].from_version.name == "1.1"
    assert handled["system-reset2"].lifetime.since == Release(5, 18)
    assert handled["system-off2"].features == 1  # PSCI_1_3_OFF_TYPE_HIBERNATE_OFF
    suspend = handled["system-suspend"].needs_capability
    assert suspend is not None and suspend.c_name == "KVM_CAP_ARM_SYSTEM_SUSPEND"
    assert "migrate" not in handled and "mem-protect" not in handled


def test_every_bitmap_bit_names_a_service_with_function_ids() -> None:
    for register in SPEC.registers:
        for bit in register.bits:
            if register.kind == "bitmap":
                assert bit.service is not None
                assert any(f.service == bit.service for f in SPEC.smccc_functions), bit.name


# Records that stay positional, and why: a Release is written as the version it is, and a
# Lifetime starts with `since` (its `until` is keyword-only).
POSITIONAL = {"Release": "Release(6, 1)", "Lifetime": "since"}


def test_records_are_keyword_only() -> None:
    records = [
        value
        for value in vars(model).values()
        if dataclasses.is_dataclass(value) and value.__module__ == model.__name__
    ]
    assert len(records) > 30
    for record in records:
        if record.__name__ not in POSITIONAL:
            assert all(f.kw_only for f in dataclasses.fields(record)), record.__name__


def test_swapped_fields_are_refused_not_built() -> None:
    """By position, exit_reasons and system_events (or since and until) could trade places."""
    values = [getattr(SPEC, f.name) for f in dataclasses.fields(Spec)]
    with pytest.raises(TypeError, match="positional"):
        Spec(*values)  # type: ignore[misc]
    with pytest.raises(TypeError, match="positional"):
        Lifetime(Release(5, 10), Release(5, 3))  # type: ignore[misc]
    assert Lifetime(Release(5, 3), until=Release(5, 10)).covers(Release(5, 9))
