"""Sphinx directives for what the docs show by running something: the reference
implementation's verdicts on each rule's cases, every command's help and output, and the
migration grid.

The generated reference pages come from the spec alone (`kvm-fwspec generate`); these parts
are computed when the site is built, by the code being documented, so they cannot drift from
it and the generator library never runs the suite. docs/conf.py loads this extension.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective, SphinxRole
from sphinx.util.nodes import nested_parse_with_titles

from kvm_fwspec.codegen.json_model import model_to_json
from kvm_fwspec.conformance.adapters.reference import ReferenceAdapter
from kvm_fwspec.conformance.analyses import migration
from kvm_fwspec.conformance.cases import build_cases
from kvm_fwspec.conformance.commands.cli import run, subcommands
from kvm_fwspec.conformance.guest.program import PROGRAM_MEMORY
from kvm_fwspec.conformance.page_templates import environment
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.verdicts import certify_cases
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Release, Spec

HELP_WIDTH = "100"  # --help is captured at a fixed width, so pages do not depend on a terminal
COLOURS = {"safe": "#8fd18f", "changes": "#f3dc6b", "fails": "#e78a8a"}


@functools.cache
def reference_verdicts(kernel: str, host: str) -> dict[str, Counter[str]]:
    """Per rule, the verdicts of the reference implementation built from this very spec
    (its tables made in memory, so the page never lags the tables file on disk)."""
    spec = load_spec()
    profile = resolve_profile(spec, kernel, host)
    levels = {name: value.name for name, value in profile.host.levels.items()}
    kvm = ReferenceKvm(
        str(profile.release),
        levels,
        tables=model_to_json(spec),
        stable=profile.stable,
        memory=PROGRAM_MEMORY,
    )
    _, results = certify_cases(ReferenceAdapter(kvm), build_cases(spec, profile))
    verdicts: dict[str, Counter[str]] = {}
    for result in results:
        verdicts.setdefault(result.rule, Counter())[result.outcome] += 1
    return verdicts


def command_output(args: list[str]) -> str:
    """What `kvm-fwspec ARGS` prints, run in-process."""
    buffer = io.StringIO()
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
            run(args)
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return buffer.getvalue().rstrip("\n")


def console_block(args: list[str], shown: list[str] | None = None) -> list[str]:
    """reStructuredText for a console session of one command (shown as `shown`, if given)."""
    lines = [".. code-block:: console", "", f"   $ {' '.join(['kvm-fwspec', *(shown or args)])}"]
    output = command_output(args)
    for arg, written in zip(args, shown or args, strict=True):
        output = output.replace(arg, written)
    lines += [f"   {line}".rstrip() for line in output.splitlines()]
    return [*lines, ""]


@dataclass(frozen=True)
class MatrixVerdict:
    """One distinct outcome of a migration: the registers that fail and what the guest sees change."""

    status: str  # safe, changes, fails
    failures: tuple[str, ...]
    changes: tuple[str, ...]


def migration_matrix(
    spec: Spec, host: str
) -> tuple[list[Release], dict[tuple[Release, Release], int], list[MatrixVerdict]]:
    """Every pair of releases (default PSCI version, psci-0.2 vcpus, host profile `host`):
    each cell points at one of the distinct verdicts, so the page lists each reason once."""
    sides = {r: migration.side_from_profile(spec, f"{r}:{host}:psci-0.2") for r in spec.releases}
    verdicts: list[MatrixVerdict] = []
    cells: dict[tuple[Release, Release], int] = {}
    for source in spec.releases:
        for target in spec.releases:
            report = migration.check(
                spec, sides[source], sides[target].profile, sides[target].features
            )
            failures = tuple(
                f"{r.name} {r.value:#x}: {r.errno or 'no rule'} ({r.rule or 'none'})"
                for r in report.registers
                if not r.restored
            )
            status = "safe" if report.safe else "changes" if report.restored else "fails"
            verdict = MatrixVerdict(status, failures, tuple(report.changes))
            if verdict not in verdicts:
                verdicts.append(verdict)
            cells[(source, target)] = verdicts.index(verdict)
    return list(spec.releases), cells, verdicts


@dataclass(frozen=True)
class AnswerChange:
    """Migrations whose only change is in the guest's SMCCC answers, grouped by those changes:
    between releases on one host profile, or between host profiles on one release."""

    between: str  # "releases" or "hosts"
    where: str  # the host profile, or the host profiles source -> target
    changes: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]  # (source, target) releases, or (release, release)


def answer_changes(spec: Spec, host: str) -> list[AnswerChange]:
    """Every release pair on `host` and every pair of host profiles on one release whose
    restore succeeds and whose guest sees only SMCCC answers change (ARCH_FEATURES of the
    workarounds, SMCCC_VERSION, TRNG_VERSION, KVM_FEATURES): the verdicts the whole view
    changed from safe."""

    names = {host, *(h.name for h in spec.host_profiles)}
    sides = {
        (release, name): migration.side_from_profile(spec, f"{release}:{name}:psci-0.2")
        for release in spec.releases
        for name in names
    }
    groups: dict[tuple[str, str, tuple[str, ...]], list[tuple[str, str]]] = {}
    for source in spec.releases:
        for target in spec.releases:
            before, after = sides[source, host], sides[target, host]
            report = migration.check(spec, before, after.profile, after.features)
            if report.seen_only_in_smccc_answers:
                key = ("releases", host, tuple(report.changes))
                groups.setdefault(key, []).append((str(source), str(target)))
    for release in spec.releases:
        for a in spec.host_profiles:
            for b in spec.host_profiles:
                if a is b:
                    continue
                before, after = sides[release, a.name], sides[release, b.name]
                report = migration.check(spec, before, after.profile, after.features)
                if report.seen_only_in_smccc_answers:
                    key = ("hosts", f"{a.name} -> {b.name}", tuple(report.changes))
                    groups.setdefault(key, []).append((str(release), str(release)))
    return [AnswerChange(b, w, c, tuple(pairs)) for (b, w, c), pairs in groups.items()]


def spans(spec: Spec, releases: set[str]) -> str:
    """Releases as runs of consecutive ones the spec knows: `5.10-5.16, 6.1`."""
    order = [str(r) for r in spec.releases]
    runs: list[list[str]] = []
    for name in order:
        if name not in releases:
            continue
        if runs and order.index(runs[-1][-1]) == order.index(name) - 1:
            runs[-1].append(name)
        else:
            runs.append([name])
    return ", ".join(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


class _RstDirective(SphinxDirective):
    """A directive whose output is reStructuredText, parsed in place."""

    titles: ClassVar[bool] = False  # whether the text has section titles of its own

    def rst(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.section() if self.titles else nodes.container()
        source = self.get_source_info()[0]
        nested_parse_with_titles(self.state, StringList(self.rst(), source), container)
        return list(container.children)


class CommandDirective(_RstDirective):
    """``.. fwspec-command:: ARGS``: the command and what it prints."""

    required_arguments = 1
    final_argument_whitespace = True

    def rst(self) -> list[str]:
        """A path written relative to the checkout (tests/fixtures/...) is found from the docs
        folder, wherever sphinx-build runs, and shown as written."""
        checkout = Path(self.env.srcdir).parent
        written = self.arguments[0].split()
        found = [str(checkout / a) if (checkout / a).exists() and "/" in a else a for a in written]
        return console_block(found, shown=written)


class CommandHelpDirective(_RstDirective):
    """``.. fwspec-command-help::``: `--help` of every subcommand."""

    def rst(self) -> list[str]:
        return [line for name in subcommands() for line in console_block([name, "--help"])]


class MigrationMatrixDirective(_RstDirective):
    """``.. fwspec-migration-matrix:: HOST``: the grid of every pair of releases."""

    required_arguments = 1
    titles = True

    def rst(self) -> list[str]:
        spec = load_spec()
        releases, cells, verdicts = migration_matrix(spec, self.arguments[0])
        templates = environment(html=False)
        text = templates.get_template("migration_matrix.rst.j2").render(
            releases=releases, cells=cells, verdicts=verdicts, colours=COLOURS
        )
        return text.splitlines()


class AnswerChangesDirective(_RstDirective):
    """``.. fwspec-answer-changes:: HOST``: the migrations only the guest's SMCCC answers
    tell apart from safe, each group once with the releases it holds for."""

    required_arguments = 1

    def rst(self) -> list[str]:
        spec = load_spec()
        lines = [".. list-table::", "   :header-rows: 1", "", "   * - between", "     - pairs",
                 "     - what the guest sees change"]  # fmt: skip
        for group in answer_changes(spec, self.arguments[0]):
            sources = spans(spec, {s for s, _ in group.pairs})
            if group.between == "hosts":
                pairs = f"host ``{group.where}`` on {sources}"
            else:
                targets = spans(spec, {t for _, t in group.pairs})
                pairs = f"{len(group.pairs)}: from {sources} to {targets}"
            lines += [f"   * - {group.between}", f"     - {pairs}",
                      "     - " + "; ".join(f"``{c}``" for c in group.changes)]  # fmt: skip
        return lines


class VerdictsRole(SphinxRole):
    """``:fwspec-verdicts:`RULE KERNEL HOST```: the reference's verdicts on a rule's cases."""

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        rule, kernel, host = self.text.split()
        counts = reference_verdicts(kernel, host).get(rule)
        text = (
            ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
            if counts
            else "no case in this profile"
        )
        return [nodes.Text(text)], []


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("fwspec-command", CommandDirective)
    app.add_directive("fwspec-command-help", CommandHelpDirective)
    app.add_directive("fwspec-migration-matrix", MigrationMatrixDirective)
    app.add_directive("fwspec-answer-changes", AnswerChangesDirective)
    app.add_role("fwspec-verdicts", VerdictsRole())
    return {"parallel_read_safe": True, "parallel_write_safe": True}
