"""Real QEMU guests' own answers, held to migrate-check's view of their migration.

tests/fixtures/real-kvm/vmm-guest-answers.json keeps what the guests of one vmm-certify run
answered (QEMU 7.2 and 11.1 on Debian's 5.10, 6.1, 6.12 and 7.2; .ci/run repeats the run,
and vmm-certify itself fails on a disagreement): before each save and after each resume. The
judge predicts each answer from the spec for the pair, as QEMU configured the VM (its default
stolen time included), and every one the spec defines must be the guest's.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from kvm_fwspec.conformance.analyses import vmm_judge
from kvm_fwspec.conformance.analyses.vmm_evidence import Saved
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec
from tests.real_kvm_record import load_record

RECORD = load_record("vmm-guest-answers.json")
SPEC = load_spec()
CALLS = vmm_judge.guest_calls(SPEC)


def setting(state: str) -> str | None:
    """The PSCI setting QEMU was given, from the judge's name of the state."""
    if state == "default":
        return None
    if state.startswith("no PSCI 0.2"):
        return "0.1"
    pinned = re.search(r"PSCI (\d+\.\d+)", state)
    assert pinned is not None, state
    return pinned[1]


def disagreements(spec: Spec, migration: dict[str, Any], stolen_time: bool = True) -> list[str]:
    """The judge's comparison for one recorded migration."""
    registers = {int(reg, 16): saved for reg, saved, _ in migration["firmware"]}
    holds = {int(reg, 16): held for reg, _, held in migration["firmware"] if held is not None}
    saved = Saved(migration["source"], migration["source-uname"], migration["build"],
                  setting(migration["state"]), migration["qemu"], [], registers, [], [], {},
                  b"")  # fmt: skip
    target = vmm_judge.profile_for(spec, migration["target"], holds)
    predicted = vmm_judge.predict(spec, saved, target, stolen_time)
    labels = RECORD["calls"]
    before = dict(zip(labels, migration["before"], strict=True))
    after = (
        None if migration["after"] is None else dict(zip(labels, migration["after"], strict=True))
    )
    differ, _ = vmm_judge.compare_answers(spec, CALLS, predicted, before, after)
    return differ


def test_the_record_asks_the_calls_the_judge_makes() -> None:
    assert RECORD["calls"] == [c.label for c in CALLS]
    assert set(RECORD["builds"].values()) == {"7.2.22", "11.1.3"}
    assert len(RECORD["migrations"]) == 100


@pytest.mark.parametrize("build", ["bookworm", "unstable"])
def test_every_answer_real_qemu_guests_gave_is_the_spec_s(build: str) -> None:
    migrations = [m for m in RECORD["migrations"] if m["build"] == build]
    assert len(migrations) >= 16  # every ordered pair of the four kernels, by default
    for migration in migrations:
        assert migration["firmware"]  # the stream carried firmware registers
        assert disagreements(SPEC, migration) == [], (migration["source"], migration["target"])


def test_a_qemu_without_stolen_time_would_disagree_on_pv_time() -> None:
    """Modelled without QEMU's stolen time, the guests' PV_TIME_FEATURES(PV_TIME_ST) = 0 is a
    disagreement: the comparison can fail, and it is the VMM's configuration that decides."""
    first = RECORD["migrations"][0]
    assert disagreements(SPEC, first, stolen_time=False) == [
        "before the save, PV_TIME_FEATURES(pv-time-st): spec -1, guest 0",
        "after the resume, PV_TIME_FEATURES(pv-time-st): spec -1, guest 0",
    ]


def test_an_edited_guest_answer_is_named() -> None:
    edited = copy.deepcopy(RECORD["migrations"][0])
    index = RECORD["calls"].index("ARCH_FEATURES(smccc-arch-workaround-1)")
    edited["after"][index] = -1
    assert disagreements(SPEC, edited) == [
        f"after the resume, ARCH_FEATURES(smccc-arch-workaround-1): spec "
        f"{vmm_judge.show(RECORD['migrations'][0]['after'][index])}, guest -1"
    ]


def test_a_psci_0_1_guest_s_psci_version_call_is_not_supported() -> None:
    """The view's PSCI_VERSION of a PSCI 0.1 VM is the version (0x1), which the guest cannot
    ask for: its PSCI_VERSION call is NOT_SUPPORTED, as real guests answered."""
    old = [m for m in RECORD["migrations"] if m["state"].startswith("no PSCI 0.2")]
    assert old
    index = RECORD["calls"].index("PSCI_VERSION")
    assert {m["before"][index] for m in old} == {-1}
    assert all(disagreements(SPEC, m) == [] for m in old)
