"""The PSCI page's section on which vcpus are on (docs/reference/psci-matrix.rst) follows the
spec: every vcpu power rule in its table's order, each an anchor with its result, the MPIDR
layout KVM names vcpus by, and the mp-states; a spec edit changes the page.

Rendered in memory from the spec (or an edited copy), in the fast tier; tests/test_docs.py
builds the whole site with Sphinx."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec
from kvm_fwspec.spec.power_names import POWER_OPS
from tests.test_docs_hypercalls import anchor, edited_spec, render, row

PAGE = "docs/reference/psci-matrix.rst"


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec()


@pytest.fixture(scope="module")
def page(spec: Spec) -> str:
    return render(spec, PAGE)


def test_power_rules_are_in_table_order_with_their_results(spec: Spec, page: str) -> None:
    expected = [r.id for op in POWER_OPS for r in spec.vcpu_power.table(op)]
    assert len(expected) == len(spec.vcpu_power.rules) > 0
    assert re.findall(r"\.\. _rule-psci-power-[a-z0-9.-]+:", page) == [anchor(i) for i in expected]
    for rule in spec.vcpu_power.rules:
        text = row(page, f"rule-{rule.id.replace('/', '-')}")
        assert (f"``{rule.when_text}``" if rule.when_text else "(otherwise)") in text
        if rule.x0 is not None:
            assert f"x0 = {rule.x0}" in text, rule.id
        for state in (rule.caller, rule.target, rule.every_vcpu):
            if state is not None:
                assert f"``{state.c_name}``" in text, rule.id
        assert f":fwspec-verdicts:`{rule.id} " in text
        assert ", ".join(rule.source.confirmed_on) in text


def test_the_page_shows_how_kvm_names_a_vcpu_and_its_states(spec: Spec, page: str) -> None:
    assert f":``MPIDR_HWID_BITMASK``: ``{spec.vcpu_power.hwid_mask:#x}``" in page
    assert "MPIDR bits 15 to 8: vcpu id bits 11 to 4" in page  # aff1
    for state in spec.mp_states:
        assert f"``{state.c_name}``\n     - {state.value}\n" in page


def test_a_changed_release_and_layout_change_the_page(page: str, tmp_path: Path) -> None:
    """The reserved-bits check dated from 5.10 and Aff1 holding 4 id bits: the page says so."""
    dated = render(
        edited_spec(tmp_path / "a", "psci.yaml", '      since: "5.15"\n', '      since: "5.10"\n'),
        PAGE,
    )
    text = row(dated, "rule-psci-power-cpu-on-reserved-affinity-bits")
    assert "5.10+" in text and "5.15+" in row(page, "rule-psci-power-cpu-on-reserved-affinity-bits")
    narrow = "      - {name: aff1, shift: 8, id-shift: 4, id-bits: 4,"
    layout = edited_spec(
        tmp_path / "b",
        "psci.yaml",
        "      - {name: aff1, shift: 8, id-shift: 4, id-bits: 8,",
        narrow,
    )
    assert "MPIDR bits 11 to 8: vcpu id bits 7 to 4" in render(layout, PAGE)
