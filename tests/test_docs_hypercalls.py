"""The hypercalls page (docs/reference/hypercalls.rst) follows the spec: every SMCCC function
with the answers the spec fixes and no others, every bitmap bit that gates a service, and
every SMCCC filter rule in its table's order, each an anchor; a spec edit changes the page.

The page is rendered in memory from the spec (or an edited copy of it), so these tests run in
the fast tier; tests/test_docs.py builds the whole site with Sphinx."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kvm_fwspec.codegen.generate import render_all
from kvm_fwspec.spec.filter_names import FILTER_OPS
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec
from tests.checkout import ROOT

PAGE = "docs/reference/hypercalls.rst"
INDEX = "docs/reference/index.rst"


def render(spec: Spec, path: str = PAGE) -> str:
    return render_all(spec, only=lambda p: p == path)[path]


def anchor(rule_id: str) -> str:
    return f".. _rule-{rule_id.replace('/', '-')}:"


def row(page: str, label: str) -> str:
    """The list-table row that starts with the anchor `label`, up to the next row."""
    start = page.index(f"   * - .. _{label}:")
    end = page.find("\n   * - ", start + 1)
    return page[start : end if end != -1 else len(page)]


def missing_from_page(spec: Spec, page: str) -> list[str]:
    """The filter rules and SMCCC functions of `spec` the page does not show as it should."""
    missing = [r.id for r in spec.smccc_filter.rules if anchor(r.id) not in page]
    for f in spec.smccc_functions:
        label = f"smccc-function-{f.name}"
        if f"   * - .. _{label}:" not in page:
            missing.append(f.name)
            continue
        text = row(page, label)
        if f"``{f.c_name}``" not in text or f"``{f.function_id:#010x}``" not in text:
            missing.append(f.name)
    return missing


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec()


@pytest.fixture(scope="module")
def page(spec: Spec) -> str:
    return render(spec)


def edited_spec(tmp_path: Path, file: str, old: str | re.Pattern[str], new: str) -> Spec:
    """The spec with one edit to one of its files, loaded from a copy."""
    copy = tmp_path / "spec"
    shutil.copytree(ROOT / "spec", copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    target = copy / file
    text = target.read_text()
    edited = (
        old.sub(new, text, count=1) if isinstance(old, re.Pattern) else text.replace(old, new, 1)
    )
    assert edited != text, f"the edit did not apply to {file}"
    target.write_text(edited)
    return load_spec(copy)


def test_the_page_lists_every_filter_rule_and_smccc_function(spec: Spec, page: str) -> None:
    assert missing_from_page(spec, page) == []
    assert spec.smccc_filter.rules and spec.smccc_functions  # not vacuous


def test_filter_rules_are_in_table_order_with_their_results(spec: Spec, page: str) -> None:
    expected = [r.id for op in FILTER_OPS for r in spec.smccc_filter.table(op)]
    shown = re.findall(r"\.\. _rule-smccc-filter-[a-z0-9.-]+:", page)
    assert shown == [anchor(i) for i in expected]
    for rule in spec.smccc_filter.rules:
        text = row(page, f"rule-{rule.id.replace('/', '-')}")
        assert f"``{rule.id}``" in text
        assert (f"``{rule.when_text}``" if rule.when_text else "(otherwise)") in text
        if rule.errno:
            assert f"-{rule.errno.name}" in text, rule.id
        assert f":fwspec-verdicts:`{rule.id} " in text  # the cases and the reference's verdicts


def test_each_gating_bitmap_bit_is_named_with_its_release(spec: Spec, page: str) -> None:
    gates = [(r, b) for r in spec.registers for b in r.bits if b.service is not None]
    assert gates
    for register, bit in gates:
        assert (
            f"``{bit.c_name}`` (bit {bit.bit}) of :ref:`{register.c_name} "
            f"<register-{register.name}>`, since {bit.lifetime.since}"
        ) in page


def test_an_answer_the_spec_does_not_fix_is_not_invented(spec: Spec, page: str) -> None:
    for f in spec.smccc_functions:
        text = row(page, f"smccc-function-{f.name}")
        if f.returns_register is not None:
            assert "* call: the VM's :ref:" in text, f.name
        elif f.returns is not None:
            assert f"* call: ``{f.returns:#x}``" in text, f.name
        elif f.calls:  # by argument, shapes in words, never a value the spec leaves open
            assert "* call: by argument: x1=" in text, f.name
            assert all(
                str(w) not in text for c in f.calls for w in c.answers if not isinstance(w, int)
            )
        elif spec.stolen_time.table(f.name):  # PV time: by the vcpu's address, its own tables
            assert f"* call: by the vcpu's stolen-time address: :ref:`stolen-time-{f.name}`" in text
        else:
            assert "* call: not fixed by the spec" in text, f.name


def test_the_stolen_time_tables_are_on_the_page_with_every_rule(spec: Spec, page: str) -> None:
    assert spec.stolen_time.rules  # not vacuous
    for op in ("set", "get", "pv-time-features", "pv-time-st"):
        assert f".. _stolen-time-{op}:" in page
    missing = [r.id for r in spec.stolen_time.rules if anchor(r.id) not in page]
    assert missing == []
    assert "``KVM_ARM_VCPU_PVTIME_CTRL`` (2), ``KVM_ARM_VCPU_PVTIME_IPA`` (0)" in page
    assert "``0xffffffffffffffff``" in page


def test_the_reference_index_lists_the_page(spec: Spec) -> None:
    assert "\n   hypercalls\n" in render(spec, INDEX)


def test_a_removed_filter_rule_leaves_the_page(spec: Spec, page: str, tmp_path: Path) -> None:
    """A spec that lost a rule renders a page without it, and the check names that rule."""
    removed = "smccc-filter/set/after-run"
    block = re.compile(rf"  - id: {re.escape(removed)}\n(?:    .*\n)+")
    edited = render(edited_spec(tmp_path, "smccc-filter.yaml", block, ""))
    assert anchor(removed) not in edited and anchor(removed) in page
    assert missing_from_page(spec, edited) == [removed]


def test_a_changed_answer_changes_the_page(page: str, tmp_path: Path) -> None:
    """TRNG_VERSION's fixed answer dropped from the spec: the page no longer states one."""
    old = "service: trng, returns: 0x10000, since"
    edited = render(edited_spec(tmp_path, "smccc.yaml", old, "service: trng, since"))
    assert "* call: ``0x10000``" in row(page, "smccc-function-trng-version")
    assert "* call: not fixed by the spec" in row(edited, "smccc-function-trng-version")
