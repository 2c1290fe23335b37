"""Answers the spec fixes only by shape: entropy (TRNG_RND32/64) and a clock (the vendor PTP
call) are checked as "any value of at most N bits", never by value, and a value outside the
shape fails for the right reason."""

from __future__ import annotations

from kvm_fwspec.conformance.cases import build_cases
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.verdicts import describe_outcome, judge, matches
from kvm_fwspec.spec.loader import load_spec

SPEC = load_spec()
SHAPE_32 = {"bits": 32}


def test_a_value_within_the_shape_matches_and_one_beyond_does_not() -> None:
    expected = {"x0": 0, "x1": SHAPE_32}
    assert matches(expected, {"x0": 0, "x1": 0})
    assert matches(expected, {"x0": 0, "x1": 0xFFFFFFFF})
    assert not matches(expected, {"x0": 0, "x1": 0x1_0000_0000})  # a 33rd bit
    assert not matches(expected, {"x0": 0, "x1": -1})  # read signed
    assert not matches(expected, {"x0": 0, "x1": True})
    assert not matches(expected, {"x0": 0})  # x1 not reported
    assert not matches(expected, {"x0": 1, "x1": 0})  # the fixed part still counts
    assert not matches(expected, dict(expected))  # an observation is a number, never a shape


def test_the_shape_is_described_in_words() -> None:
    assert describe_outcome({"x0": 0, "x1": SHAPE_32}) == "x0=0, x1=any 32-bit value"


def case(kernel: str, suffix: str):  # type: ignore[no-untyped-def]
    profile = resolve_profile(SPEC, kernel, "mitigated")
    return next(c for c in build_cases(SPEC, profile) if c.id.endswith(suffix))


def test_the_ptp_clock_is_checked_by_shape_and_an_unknown_counter_by_value() -> None:
    ptp = case("6.12", ".guest-vendor-hyp-kvm-ptp")
    assert ptp.rule == "vendor-hyp-bmap/get/stored"  # the bitmap that offers PTP decides
    assert ptp.expected[1] == {"x0": {"bits": 31}, "x1": SHAPE_32, "x2": SHAPE_32, "x3": SHAPE_32}
    assert ptp.expected[3] == {"x0": -1, "x1": 0, "x2": 0, "x3": 0}
    clock = {"x0": 0x188, "x1": 0x12345678, "x2": 0x1, "x3": 0x9ABCDEF0}
    assert judge(ptp, [ptp.expected[0], clock, clock, ptp.expected[3]], 0.0).outcome == "pass"
    wrong_top = {**clock, "x0": 0x8000_0000}  # x0's top bit: KVM never sets it
    result = judge(ptp, [ptp.expected[0], wrong_top, clock, ptp.expected[3]], 0.0)
    assert result.outcome == "fail" and "x0=any 31-bit value" in str(result.reason)


def test_a_release_without_the_call_refuses_every_row() -> None:
    """5.10 has neither TRNG (5.12) nor PTP (5.13): every row is NOT_SUPPORTED, zeros after."""
    for suffix in (".guest-trng-rnd64", ".guest-vendor-hyp-kvm-ptp"):
        refused = case("5.10", suffix).expected[1:]
        assert refused and all(e == {"x0": -1, "x1": 0, "x2": 0, "x3": 0} for e in refused)


def test_kvm_features_answers_vendor_hyp_bmap_2_in_x2_where_the_release_has_it() -> None:
    """Real 7.2 answered x2 = 0 by default and 3 once the VMM set both bits; the reference
    does so from the spec's register-results, and a release before the register gives 0."""
    from kvm_fwspec.conformance.guest.program import execute
    from kvm_fwspec.reference_impl.kvm import ReferenceKvm

    features = {"op": "call", "vcpu": 0, "function": 0x86000000, "args": [], "results": 4}
    both = {"op": "set", "vcpu": 0, "reg": 0x6030000000160003, "value": 3}
    program = {"vcpus": 1, "features": ["psci-0.2"], "steps": [features, both, features]}
    assert execute(ReferenceKvm("7.2", "mitigated"), program) == [
        {"x0": 3, "x1": 0, "x2": 0, "x3": 0},
        {"errno": "EBUSY"},  # the VM has run: the bitmap is fixed
        {"x0": 3, "x1": 0, "x2": 0, "x3": 0},
    ]
    program["steps"] = [both, features]
    assert execute(ReferenceKvm("7.2", "mitigated"), program)[1]["x2"] == 3
    assert execute(ReferenceKvm("6.12", "mitigated"), program) == [
        {"errno": "ENOENT"},
        {"x0": 3, "x1": 0, "x2": 0, "x3": 0},
    ]
