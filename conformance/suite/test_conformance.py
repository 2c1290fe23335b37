"""One test per (rule, VM scenario); its cases and their verdicts come from the plugin."""

from __future__ import annotations

import pytest

from kvm_fwspec.conformance.plugin import ConformanceRun, describe_failures, record


def test_rule(
    fwspec_group: str, fwspec_run: ConformanceRun, request: pytest.FixtureRequest
) -> None:
    capabilities, results = fwspec_run.run_group(fwspec_group)
    record(request.node, capabilities, results)
    assert all(r.outcome in ("pass", "not-applicable") for r in results), describe_failures(results)
