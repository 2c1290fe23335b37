"""What the docs' reference pages need beyond the model: bit diagrams, matrices, examples.

Everything here is computed from the spec, so changing the spec changes the pages on the
next `kvm-fwspec generate`; nothing in docs/reference or docs/kernel is written by hand.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import Counter
from dataclasses import dataclass
from html import escape

from codegen.model import Field, Lifetime, Register, Release, Spec

CELL = 26  # pixels per diagram cell


def id_diagram(spec: Spec, register: Register, arch: str) -> str:
    """An SVG of the register id's fields: name, bit range and this register's value in each."""
    layout = spec.layout("reg-id")
    reg_id = register.ids[arch]
    boxes = []
    x = 0
    widths = {"arch": 3, "size": 2, "reserved": 4, "class": 3, "index": 3}
    for field in layout.fields:
        width = widths.get(field.name, 3) * CELL * 2
        value = field.extract(reg_id)
        label = _value_label(field, value, arch)
        boxes.append(
            f'<g class="field field-{field.name}"><rect x="{x}" y="20" width="{width}" height="44" '
            f'fill="{"#eeeeee" if field.reserved else "#dbe9f6"}" stroke="#333"/>'
            f'<text x="{x + width / 2}" y="38" text-anchor="middle" font-size="13">{escape(field.name)}</text>'
            f'<text x="{x + width / 2}" y="56" text-anchor="middle" font-size="12" font-family="monospace">'
            f"{escape(label)}</text>"
            f'<text x="{x + 2}" y="14" font-size="10">{field.high}</text>'
            f'<text x="{x + width - 2}" y="14" font-size="10" text-anchor="end">{field.low}</text></g>'
        )
        x += width
    title = f"{register.c_name} on {arch}: {reg_id:#018x}"
    return (
        f'<svg class="reg-id-diagram" xmlns="http://www.w3.org/2000/svg" width="{x + 1}" height="70" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>{"".join(boxes)}</svg>'
    )


def _value_label(field: Field, value: int, arch: str) -> str:
    named = next((v for v in field.values if v.value == value and arch in v.architectures), None)
    return f"{value:#x} {named.name}" if named else f"{value:#x}"


def change_points(spec: Spec) -> list[Release]:
    """The releases where some register, value, bit or rule appears or goes: the matrix columns."""
    points: set[Release] = set()

    def add(lifetime: Lifetime) -> None:
        points.add(lifetime.since)
        if lifetime.until:
            points.add(lifetime.until)

    for register in spec.registers:
        add(register.lifetime)
        for value in register.values:
            add(value.lifetime)
        for bit in register.bits:
            add(bit.lifetime)
    for rule in spec.rules:
        add(rule.lifetime)
    for version in spec.psci_versions:
        add(version.lifetime)
    return sorted(p for p in points if p in spec.releases)


@dataclass(frozen=True)
class PsciCell:
    handled: bool
    features: str


def psci_matrix(spec: Spec) -> list[tuple[str, str, list[PsciCell]]]:
    """Per PSCI function: its ids, and per PSCI version what KVM does with it."""
    rows = []
    for function in spec.psci_functions:
        cells = []
        for version in spec.psci_versions:
            kvm = function.kvm
            handled = (
                kvm is not None
                and version.encoded >= kvm.from_version.encoded
                and version.name != "0.1"
            )
            if handled and kvm is not None:
                since = (
                    f" from {kvm.lifetime.since}" if kvm.lifetime.since != spec.releases[0] else ""
                )
                needs = f", needs {kvm.needs_capability.c_name}" if kvm.needs_capability else ""
                cells.append(PsciCell(True, f"handled{since}{needs}; FEATURES {kvm.features}"))
            else:
                cells.append(PsciCell(False, "NOT_SUPPORTED"))
        ids = ", ".join(f"``{fid:#010x}``" for _, fid in sorted(function.ids.items()))
        rows.append((function.name, ids, cells))
    return rows


def cli_examples(commands: list[list[str]]) -> list[tuple[str, str]]:
    """Run CLI commands in-process and capture what they print, for pages that must not drift.
    `--help` is captured at a fixed width so the page does not depend on the terminal."""
    from codegen.cli import run

    results = []
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        for args in commands:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
                run(args)
            results.append((" ".join(["kvm-fwspec", *args]), buffer.getvalue().rstrip("\n")))
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return results


def reference_verdicts(spec: Spec, kernel: str, host: str) -> dict[str, Counter[str]]:
    """Per rule, the verdicts of the reference implementation built from this very spec
    (its tables made in memory, so the page never lags the tables file on disk)."""
    from codegen.json_model import model_to_json
    from conformance.adapters.reference import ReferenceAdapter
    from conformance.cases import build_cases
    from conformance.profile import resolve_profile
    from conformance.verdicts import certify_cases
    from reference_impl.kvm import ReferenceKvm

    profile = resolve_profile(spec, kernel, host)
    levels = {name: value.name for name, value in profile.host.levels.items()}
    kvm = ReferenceKvm(
        str(profile.release), levels, tables=model_to_json(spec), stable=profile.stable
    )
    _, results = certify_cases(ReferenceAdapter(kvm), build_cases(spec, profile))
    verdicts: dict[str, Counter[str]] = {}
    for result in results:
        verdicts.setdefault(result.rule, Counter())[result.outcome] += 1
    return verdicts


@dataclass(frozen=True)
class MatrixVerdict:
    """One distinct outcome of a migration: the registers that fail and what the guest sees change."""

    status: str  # safe, changes, fails
    failures: tuple[str, ...]
    changes: tuple[str, ...]


def migration_matrix(
    spec: Spec,
) -> tuple[list[Release], dict[tuple[Release, Release], int], list[MatrixVerdict]]:
    """Every pair of releases (default PSCI version, psci-0.2 vcpus, the first host profile):
    each cell points at one of the distinct verdicts, so the page lists each reason once."""
    from conformance import migration

    host = spec.host_profiles[0].name
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
