"""A fleet plan as an operator reads it: JSON for tools, text for a terminal, and an HTML page
with the matrix drawn and every cell explained."""

from __future__ import annotations

import json
from typing import Any

from kvm_fwspec.conformance.analyses.fleet import FEATURES, FORMAT, Cell, Plan, Pool, pool_number
from kvm_fwspec.conformance.analyses.fleet_hosts import INFERRED
from kvm_fwspec.conformance.page_templates import environment

SYMBOLS = {"safe": "ok", "changes": "~", "fails": "x"}
LEGEND = "ok: safe; ~: restores, but the guest sees its firmware change; x: a register fails"
WIDEST_TEXT_GRID = 30  # more pools than this: the grid is in --json and --html only


def as_json(plan: Plan) -> str:
    return json.dumps(plan_document(plan), indent=1, sort_keys=True) + "\n"


def plan_document(plan: Plan) -> dict[str, Any]:
    baseline = plan.baseline
    return {
        "format": FORMAT,
        "hosts": plan.hosts,
        "refused": [{"file": r.file, "reason": r.reason} for r in plan.refused],
        "pools": [_pool(p) for p in plan.pools],
        "matrix": [_cell(c) for c in plan.matrix.values()],
        "baseline": None
        if baseline is None
        else {
            "chosen-from": list(plan.chosen),
            "pools": list(baseline.pools),
            "hosts": plan.baseline_hosts,
            "vcpu-features": list(FEATURES),
            "psci-version": _hex(baseline.psci_version),
            "bitmaps": {name: _hex(value) for name, value in baseline.bitmaps},
            "excluded": [
                {
                    "pool": p,
                    "why": "; ".join(e.why for e in reasons),
                    "reasons": [
                        {"kind": e.kind, "subject": e.subject, "why": e.why} for e in reasons
                    ],
                }
                for p, reasons in baseline.excluded
            ],
            "matrix": [_cell(c) for c in plan.baseline_matrix.values()],
        },
    }


def _hex(value: int | None) -> str | None:
    return None if value is None else f"{value:#x}"


def _pool(pool: Pool) -> dict[str, Any]:
    return {
        "id": pool.id,
        "name": pool.name,
        "hosts": [h.name for h in pool.hosts],
        "arch": pool.profile.arch,
        "kernels": pool.kernels,
        "cpus": pool.cpus,
        "judged-by-spec-as": pool.profile.kernel,
        "inferred": INFERRED if pool.inferred else None,
        "registers": [
            {
                "name": o.name,
                "id": f"{o.reg_id:#x}",
                "default": f"{o.default:#x}",
                "accepts": [f"{v:#x}" for v in sorted(o.accepts)],
            }
            for o in pool.offers
        ],
    }


def _cell(cell: Cell) -> dict[str, Any]:
    return {
        "source": cell.source,
        "target": cell.target,
        "verdict": cell.verdict,
        "failures": [
            {
                "register": f.register,
                "value": f"{f.value:#x}",
                "errno": f.errno,
                "rule": f.rule or None,
                "why": f.why,
            }
            for f in cell.failures
        ],
        "changes": list(cell.changes),
    }


def explain(cell: Cell) -> str:
    """One cell in one line: what fails (register, value, errno, rule) or what changes."""
    if cell.verdict == "fails":
        return "fails: " + "; ".join(
            f.why
            if not f.register
            else f"{f.register}={f.value:#x} "
            + (f.errno or "refused by the host, errno not recorded (the spec expects otherwise)")
            + (f" ({f.rule})" if f.rule else "")
            for f in cell.failures
        )
    if cell.verdict == "changes":
        return "restores, guest sees: " + "; ".join(cell.changes)
    return "safe"


def as_text(plan: Plan) -> str:
    lines = [
        f"fleet plan: {count_of(plan.hosts, 'host')} in {count_of(len(plan.pools), 'pool')}"
        + (f"; {count_of(len(plan.refused), 'file')} refused" if plan.refused else "")
    ]
    lines += [f"refused: {r.reason}" for r in plan.refused]
    lines.append("pools (hosts of identical firmware behaviour):")
    for pool in plan.pools:
        registers = ", ".join(f"{o.name}={o.default:#x}" for o in pool.offers) or "none"
        inferred = " (accepted values inferred)" if pool.inferred else ""
        lines.append(
            f"  {pool.id}: {count_of(len(pool.hosts), 'host')}, {pool.profile.arch} "
            f"{'/'.join(pool.kernels)}: {pool.name}{inferred}"
        )
        cpus = f"; CPUs (MIDR_EL1) {', '.join(pool.cpus)}" if pool.cpus else ""
        lines.append(f"      {registers}{cpus}")
    lines += _grid("VMs created with the source's defaults", plan, plan.matrix)
    lines += _baseline_text(plan)
    return "\n".join(lines) + "\n"


def count_of(count: int, noun: str) -> str:
    """`1 host`, `2 hosts`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _grid(title: str, plan: Plan, matrix: dict[tuple[str, str], Cell]) -> list[str]:
    sources = sorted({s for s, _ in matrix}, key=pool_number)
    targets = [p.id for p in plan.pools]
    lines = [f"matrix, {title} (row: from, column: to; {LEGEND}):"]
    if len(targets) > WIDEST_TEXT_GRID:
        lines[0] = f"matrix, {title}: too many pools for a grid; each source's targets by verdict"
        lines += [f"  {source} -> {_targets(matrix, source, targets)}" for source in sources]
        lines.append("  each cell explained: --json or --html")
        return lines
    width = max(len(t) for t in targets) + 1
    lines.append("  " + " " * width + "".join(t.rjust(width) for t in targets))
    for source in sources:
        row = "".join(SYMBOLS[matrix[(source, t)].verdict].rjust(width) for t in targets)
        lines.append("  " + source.ljust(width) + row)
    for (source, target), cell in matrix.items():
        if cell.verdict != "safe":
            lines.append(f"  {source} -> {target}: {explain(cell)}")
    return lines


def _targets(matrix: dict[tuple[str, str], Cell], source: str, targets: list[str]) -> str:
    """`safe: P1, P4; changes: P2; fails: 57 pools`: one source's row, in words."""
    parts = []
    for verdict in ("safe", "changes", "fails"):
        found = [t for t in targets if matrix[(source, t)].verdict == verdict]
        if found:
            shown = ", ".join(found) if len(found) <= 8 else count_of(len(found), "pool")
            parts.append(f"{verdict}: {shown}")
    return "; ".join(parts)


def _baseline_text(plan: Plan) -> list[str]:
    baseline = plan.baseline
    if baseline is None:
        return []
    lines = [
        f"baseline: {', '.join(baseline.pools)} ({count_of(plan.baseline_hosts, 'host')}) can "
        "exchange VMs with the guest's "
        "firmware unchanged when the VMM creates each VM so:",
        "  vcpus with KVM_ARM_VCPU_PSCI_0_2",
    ]
    if baseline.psci_version is not None:
        lines.append(f"  KVM_SET_ONE_REG psci-version = {baseline.psci_version:#x}")
    lines += [f"  KVM_SET_ONE_REG {name} = {value:#x}" for name, value in baseline.bitmaps]
    lines += [
        f"  left out {pool}: {'; '.join(e.why for e in reasons)}"
        for pool, reasons in baseline.excluded
    ]
    lines += _grid("VMs created with the baseline", plan, plan.baseline_matrix)
    return lines


def as_html(plan: Plan) -> str:
    env = environment(html=True)
    return env.get_template("fleet_plan.html.j2").render(
        plan=plan, doc=plan_document(plan), explain=explain, symbols=SYMBOLS, legend=LEGEND
    )
