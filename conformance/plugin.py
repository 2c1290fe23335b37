"""The pytest plugin behind `kvm-fwspec certify` and plain `pytest --pyargs kvm_fwspec.conformance.suite`.

Inert unless --fwspec-adapter is given. One pytest item carries the cases of one rule in one
VM scenario and runs them in one adapter round trip; every case keeps its own id and verdict
in the results, which the controlling process (not the xdist workers) writes.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from kvm_fwspec.conformance.adapters import (
    Adapter,
    Capabilities,
    load_adapter,
    parse_options,
    reported_host,
)
from kvm_fwspec.conformance.cases import Case, build_cases
from kvm_fwspec.conformance.profile import Profile, claims_profile, resolve_profile
from kvm_fwspec.conformance.results import build_document, write_report
from kvm_fwspec.conformance.verdicts import CaseResult, certify_cases
from kvm_fwspec.spec.errors import SpecError, UsageError
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kvm-fwspec", "kvm-fwspec kvm_fwspec.conformance")
    group.addoption(
        "--fwspec-adapter", help="adapter to certify (entry point in kvm_fwspec.adapters)"
    )
    group.addoption(
        "--fwspec-kernel", default="latest", help="kernel release profile (default: newest)"
    )
    group.addoption("--fwspec-host", default="mitigated", help="host profile")
    group.addoption("--fwspec-arch", default="arm64", help="architecture")
    group.addoption(
        "--fwspec-option", action="append", default=[], help="KEY=VALUE passed to the adapter"
    )
    group.addoption(
        "--fwspec-report", default=None, help="directory for results.json, JUnit XML, report.html"
    )
    group.addoption(
        "--fwspec-require-all",
        action="store_true",
        help="full certification: a case the adapter cannot run (not applicable) fails the run",
    )
    group.addoption(
        "--fwspec-judged-as-named",
        action="store_true",
        help="judge the implementation as --fwspec-kernel whatever kernel it says it is (a "
        "build the user names the release of)",
    )
    group.addoption(
        "--fwspec-progress",
        action="store_true",
        help="a line on stderr at each tenth of the cases: done, failed so far, elapsed",
    )


@dataclass(frozen=True)
class OpenedAdapter:
    """An adapter `kvm-fwspec certify` opened and greeted before pytest started, handed to the
    run (as a plugin object) so a booted guest or started agent is not started twice. The
    caller closes it."""

    adapter: Adapter


PREFETCH_CASES = 256  # the agent protocol's default batch: one request per prefetch


@dataclass
class ConformanceRun:
    """Spec, profile and cases of this process; the adapter is opened on first use."""

    spec: Spec
    profile: Profile
    adapter_name: str
    options: dict[str, str]
    groups: dict[str, list[Case]]
    _adapter: Adapter | None = None
    owns_adapter: bool = True
    collected: list[dict[str, Any]] = field(default_factory=list)
    capabilities: dict[str, Any] | None = None
    # Without xdist the selected groups are known in their running order, so each adapter
    # call carries the next groups' cases too (up to PREFETCH_CASES): a few round trips for a
    # whole run instead of one per group. A fault still costs only that call's cases.
    selected: list[str] | None = None
    judged_as_named: bool = (
        False  # the user named the kernel: the implementation's claim stands aside
    )
    _ready: dict[str, tuple[Capabilities, list[CaseResult]]] = field(default_factory=dict)

    @property
    def adapter(self) -> Adapter:
        if self._adapter is None:
            self._adapter = load_adapter(self.adapter_name, self.profile, self.options)
        return self._adapter

    def run_group(self, group: str) -> tuple[Capabilities, list[CaseResult]]:
        if self.selected is not None and group not in self._ready:
            self._prefetch(group)
        capabilities, results = (
            self._ready.pop(group)
            if group in self._ready
            else certify_cases(self.adapter, self.groups[group])
        )
        claimed = capabilities.kernel
        if (
            claimed is not None
            and not self.judged_as_named
            and not claims_profile(self.spec, claimed, self.profile)
            and capabilities.implementation != "unavailable"
        ):
            reason = f"the implementation is KVM {claimed}, the profile is {self.profile.kernel}"
            results = [
                CaseResult(r.case, "error", r.expected, None, r.duration, reason) for r in results
            ]
        return capabilities, results

    def _prefetch(self, first: str) -> None:
        """Run `first` and the selected groups after it, up to PREFETCH_CASES cases, at once."""
        order = self.selected or [first]
        following = order[order.index(first) :] if first in order else [first]
        chunk: list[str] = []
        count = 0
        for group in following:
            if chunk and count + len(self.groups[group]) > PREFETCH_CASES:
                break
            chunk.append(group)
            count += len(self.groups[group])
        capabilities, results = certify_cases(
            self.adapter, [case for group in chunk for case in self.groups[group]]
        )
        by_id = {result.id: result for result in results}
        for group in chunk:
            self._ready[group] = (capabilities, [by_id[c.id] for c in self.groups[group]])

    def close(self) -> None:
        if self._adapter is not None and self.owns_adapter:
            self._adapter.close()


class ConformancePlugin:
    def __init__(self, config: pytest.Config) -> None:
        spec = load_spec()
        kernel, host, arch = (config.getoption(f"--fwspec-{o}") for o in ("kernel", "host", "arch"))
        name, options = (
            config.getoption("--fwspec-adapter"),
            parse_options(config.getoption("--fwspec-option")),
        )
        opened = next(
            (p for p in config.pluginmanager.get_plugins() if isinstance(p, OpenedAdapter)), None
        )
        adapter = opened.adapter if opened else None
        if host == "auto":
            adapter = adapter or load_adapter(
                name, resolve_profile(spec, kernel, spec.host_profiles[0].name, arch), options
            )
            try:
                host = reported_host(adapter, spec)
            except BaseException:  # Ctrl-C while a guest boots: stop it before pytest gives up
                if opened is None:
                    adapter.close()
                raise
        profile = resolve_profile(spec, kernel, host, arch)
        groups: dict[str, list[Case]] = defaultdict(list)
        for case in build_cases(spec, profile):
            groups[case.group].append(case)
        self.run = ConformanceRun(
            spec, profile, name, options, dict(groups), adapter, owns_adapter=opened is None
        )
        self.run.judged_as_named = config.getoption("--fwspec-judged-as-named")
        self.config = config
        self.progress = Progress(
            sum(map(len, groups.values())), config.getoption("--fwspec-progress")
        )

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput"):
            return  # an xdist worker learns its groups one at a time
        self.run.selected = [
            str(item.callspec.params["fwspec_group"])
            for item in session.items
            if isinstance(item, pytest.Function) and "fwspec_group" in item.callspec.params
        ]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "fwspec_group" not in metafunc.fixturenames:
            return
        params = [
            pytest.param(name, marks=pytest.mark.xdist_group(cases[0].scenario), id=name)
            for name, cases in sorted(self.run.groups.items())
        ]
        metafunc.parametrize("fwspec_group", params)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == "fwspec-results":
                results = cast(list[dict[str, Any]], value)
                self.run.collected.extend(results)
                self.progress.add(results)
            elif key == "fwspec-capabilities":
                self.run.capabilities = cast(dict[str, Any], value)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(session.config, "workerinput") or self.run.capabilities is None:
            return  # workers report to the controller, which writes the results
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            return  # an interrupted run's results would be incomplete: write none
        caps = self.run.capabilities
        capabilities = Capabilities(
            caps["implementation"],
            caps["kernel"],
            caps["arch"],
            frozenset(caps["features"]),
            None,
            caps["provenance"],
        )
        document = build_document(
            self.run.spec,
            self.run.profile,
            self.run.adapter_name,
            capabilities,
            self.run.collected,
            self.config.getoption("--fwspec-require-all"),
        )
        self.config.stash[DOCUMENT] = document
        report = self.config.getoption("--fwspec-report")
        if report:
            write_report(Path(report), document)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        document = self.config.stash.get(DOCUMENT, None)
        if document is None:
            return
        summary = document["summary"]
        verdict = "yes" if summary["conforms"] else "no"
        terminalreporter.write_line(
            f"kvm-fwspec: conforms for {self.run.profile.label}: {verdict} "
            f"({summary['pass']} pass, {summary['fail']} fail, {summary['not-applicable']} not-applicable, "
            f"{summary['error']} error of {summary['total']} cases)"
        )


DOCUMENT = pytest.StashKey[dict[str, Any]]()


class Progress:
    """Cases done, failures and errors so far and time taken, one line on stderr at each tenth of the run:
    a long run (real KVM, a slow agent) shows it is alive, and a short one stays short."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.done = 0
        self.failed = 0
        self.errors = 0
        self.start = time.monotonic()

    def add(self, results: list[dict[str, Any]]) -> None:
        tenth = self.done * 10 // max(self.total, 1)
        self.done += len(results)
        self.failed += sum(r["outcome"] == "fail" for r in results)
        self.errors += sum(r["outcome"] == "error" for r in results)
        if self.enabled and self.done * 10 // max(self.total, 1) > tenth:
            print(
                f"kvm-fwspec: {self.done}/{self.total} cases, {self.failed} fail, {self.errors} error, "
                f"{time.monotonic() - self.start:.0f} s",
                file=sys.stderr,
                flush=True,
            )


PLUGIN_NAME = "kvm-fwspec-conformance"


@pytest.fixture(scope="session")
def fwspec_run(request: pytest.FixtureRequest) -> Iterator[ConformanceRun]:
    """The run of this session, closed (its adapter released) when the session ends. A module
    fixture: pytest 9.2 deprecates session fixtures defined as methods of a plugin object."""
    plugin = request.config.pluginmanager.get_plugin(PLUGIN_NAME)
    assert isinstance(plugin, ConformancePlugin), "run with --fwspec-adapter"
    yield plugin.run
    plugin.run.close()


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fwspec-adapter"):
        try:
            plugin = ConformancePlugin(config)
        except (UsageError, SpecError) as exc:
            raise pytest.UsageError(str(exc)) from None
        config.pluginmanager.register(plugin, PLUGIN_NAME)


def record(node: pytest.Item, capabilities: Capabilities, results: list[CaseResult]) -> None:
    """Attach a group's verdicts to its pytest item, so they reach the controller under xdist."""
    node.user_properties.append(("fwspec-results", [r.to_json() for r in results]))
    node.user_properties.append(
        (
            "fwspec-capabilities",
            {
                "implementation": capabilities.implementation,
                "kernel": capabilities.kernel,
                "arch": capabilities.arch,
                "features": sorted(capabilities.features),
                "provenance": capabilities.provenance,
            },
        )
    )


def describe_failures(results: list[CaseResult]) -> str:
    bad = [r for r in results if r.outcome in ("fail", "error")]
    return "\n".join(f"{r.id}: {r.outcome}: {r.reason}" for r in bad[:20]) + (
        f"\n... and {len(bad) - 20} more" if len(bad) > 20 else ""
    )


def load_document(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded
