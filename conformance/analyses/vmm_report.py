"""The VMM certification's report: JSON for tools, Markdown for people, both from one matrix.

The Markdown gives, per QEMU build, the verdict of each VMM rule over the whole matrix and the
matrix itself; then both builds side by side, pair by pair; then each migration with QEMU's
own words, the registers responsible for a refusal and the rule behind each, and every
verdict with its evidence.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from kvm_fwspec.codegen.atomic import write_atomically
from kvm_fwspec.conformance.analyses.vmm_judge import Judgement, Matrix, qemu_named, show, to_json
from kvm_fwspec.spec.model import Spec

VERDICTS = ("holds", "broken", "not-applicable")


def write_report(spec: Spec, matrix: Matrix, directory: Path, elapsed: float) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "kernels": matrix.unames,
        "builds": matrix.qemus,
        "rules": [r.id for r in spec.vmm_rules],
        "elapsed-seconds": round(elapsed, 1),
        "vcpu-mismatches": matrix.vcpu_mismatches,
        "migrations": [to_json(j) for j in matrix.judgements],
    }
    paths = [directory / "vmm-report.json", directory / "vmm-report.md"]
    write_atomically(paths[0], json.dumps(document, indent=1) + "\n")
    write_atomically(paths[1], render(spec, matrix, elapsed))
    return paths


def summary(matrix: Matrix) -> list[str]:
    """One line per build: migrations, completed, broken rules, disagreements with the spec;
    then whether the probe's vcpu matched QEMU's on every host."""
    lines = []
    for build in matrix.builds:
        judged = [j for j in matrix.judgements if j.load.source.build == build]
        broken = Counter(v.rule for j in judged for v in j.verdicts if v.verdict == "broken")
        lines.append(
            f"{build} (QEMU {matrix.qemus[build]}): {len(judged)} migrations, "
            f"{sum(j.load.completed for j in judged)} completed; rules broken: "
            + (", ".join(f"{r} x{n}" for r, n in sorted(broken.items())) or "none")
            + f"; firmware answers unlike migrate-check: {sum(len(j.disagreements) for j in judged)}"
            + f"; guest answers unlike migrate-check: "
            f"{sum(len(j.answer_disagreements) for j in judged)} of "
            f"{sum(j.answers_compared for j in judged)}"
        )
    lines += matrix.vcpu_mismatches or [f"the vcpu the target KVM was asked about lists exactly the registers "
                            f"QEMU saved, in all {len(matrix.saves)} saves"]  # fmt: skip
    return lines


def render(spec: Spec, matrix: Matrix, elapsed: float) -> str:
    out = ["# kvm-fwspec VMM certification: QEMU's save and restore across real kernels", ""]
    out.append("Kernels (guest hosts with real KVM): "
               + ", ".join(f"{k} ({u})" for k, u in matrix.unames.items()) + ".")  # fmt: skip
    out.append("QEMU builds: " + ", ".join(f"{b} (QEMU {q})" for b, q in matrix.qemus.items())
               + f". {len(matrix.judgements)} migrations in {elapsed:.0f} s.")  # fmt: skip
    out += ["", *[f"- {line}" for line in summary(matrix)], ""]
    for build in matrix.builds:
        out += _build_section(spec, matrix, build)
    out += _side_by_side(matrix)
    out += ["## Each migration", ""]
    for judgement in matrix.judgements:
        out += _details(judgement)
    return "\n".join(out).rstrip() + "\n"


def _build_section(spec: Spec, matrix: Matrix, build: str) -> list[str]:
    judged = [j for j in matrix.judgements if j.load.source.build == build]
    out = [f"## {build}: QEMU {matrix.qemus[build]}", "", "| VMM rule | " +
           " | ".join(VERDICTS) + " |", "|---|" + "---|" * len(VERDICTS)]  # fmt: skip
    for rule in spec.vmm_rules:
        counts = Counter(v.verdict for j in judged for v in j.verdicts if v.rule == rule.id)
        out.append(f"| `{rule.id}` | " + " | ".join(str(counts[v]) for v in VERDICTS) + " |")
    out += ["", "Source (state) down, target across: `ok` completed; otherwise the registers the "
            "target refused, firmware ones by name.", ""]  # fmt: skip
    out += ["| source | state | " + " | ".join(matrix.kernels) + " |",
            "|---|---|" + "---|" * len(matrix.kernels)]  # fmt: skip
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for j in judged:
        rows.setdefault((j.load.source.kernel, j.state), {})[j.load.target] = _cell(j)
    for (kernel, state), cells in rows.items():
        out.append(f"| {kernel} | {state} | "
                   + " | ".join(cells.get(t, "") for t in matrix.kernels) + " |")  # fmt: skip
    return [*out, ""]


def _cell(judgement: Judgement) -> str:
    if judgement.load.completed:
        return "ok" + (" (guest saw a change)" if judgement.changes else "")
    firmware = [b.name.removeprefix("KVM_REG_ARM_") for b in judgement.refused_firmware]
    others = sum(not b.firmware for b in judgement.refused)
    parts = firmware + ([f"{others} other"] if others else [])
    return "refused: " + (", ".join(parts) if parts else "no register (see details)")


def _side_by_side(matrix: Matrix) -> list[str]:
    """The default state under every build, pair by pair."""
    out = ["## Side by side (QEMU's default PSCI state)", "",
           "| source -> target | " + " | ".join(
               f"{b} (QEMU {matrix.qemus[b]})" for b in matrix.builds) + " |",
           "|---|" + "---|" * len(matrix.builds)]  # fmt: skip
    by_pair: dict[tuple[str, str], dict[str, Judgement]] = {}
    for j in matrix.judgements:
        if j.load.source.setting is None:
            by_pair.setdefault((j.load.source.kernel, j.load.target), {})[j.load.source.build] = j
    for (source, target), judged in by_pair.items():
        cells = [(_cell(judged[b]) + (f" -- {_qemu_words(judged[b])}"
                                      if not judged[b].load.completed else ""))
                 if b in judged else "" for b in matrix.builds]  # fmt: skip
        out.append(f"| {source} -> {target} | " + " | ".join(cells) + " |")
    return [*out, ""]


def _seen(answers: dict[str, int]) -> str:
    """The guest's answers, the PSCI_FEATURES ones counted (0 or more: supported)."""
    features = [v for k, v in answers.items() if k.startswith("PSCI_FEATURES(")]
    others = ", ".join(
        f"{k} {show(v)}" for k, v in answers.items() if not k.startswith("PSCI_FEATURES(")
    )
    return f"{others}; PSCI_FEATURES: {sum(v >= 0 for v in features)} of {len(features)} supported"


def _qemu_words(judgement: Judgement) -> str:
    """Which registers QEMU's own message names, for a table cell."""
    named = qemu_named(judgement.load.qemu_error)
    if not named:
        return "QEMU names no register"
    shown = ", ".join(named[:4]) + (f" and {len(named) - 4} more" if len(named) > 4 else "")
    return f"QEMU names {len(named)}: {shown}"


def _details(judgement: Judgement) -> list[str]:
    load = judgement.load
    out = [f"### {load.source.build}: {load.source.kernel} -> {load.target}, {judgement.state}",
           "", f"- QEMU {load.source.qemu}: "
           + ("completed the migration and resumed the guest" if load.completed
              else "refused the migration")]  # fmt: skip
    if not load.completed:
        words = [w for w in load.qemu_error.strip().splitlines() if w.strip()][-8:]
        out += ["- QEMU said:", "", "  ```", *[f"  {w}" for w in words], "  ```"]
    out.append(f"- the guest saw before the save: {_seen(judgement.seen_before)}")
    if judgement.seen_after is not None:
        out.append(f"- and after the resume: {_seen(judgement.seen_after)}")
    if judgement.length_note:
        out.append(f"- {judgement.length_note}")
    others = [b for b in judgement.refused if not b.firmware]
    for b in judgement.refused_firmware:
        holds = "does not have it" if b.target_holds is None else f"holds {b.target_holds:#x}"
        out.append(f"- firmware register {b.name} ({b.reg_id:#x}): the stream carries "
                   f"{b.saved:#x}, a fresh VM of the target {holds}; the target's KVM answers "
                   f"{b.answer}, by `{b.rule}`; migrate-check predicted {b.predicted}")  # fmt: skip
    if others:
        named = ", ".join(f"{b.name} ({b.answer})" for b in others)
        out.append(f"- not firmware registers, refused by the target's KVM: {named}")
    if judgement.disagreements:
        out.append("- DISAGREES WITH THE SPEC: " + ", ".join(
            f"{b.name} answered {b.answer}, migrate-check predicted {b.predicted}"
            for b in judgement.disagreements))  # fmt: skip
    elif judgement.firmware:
        out.append(f"- all {len(judgement.firmware)} saved firmware registers answered as "
                   "migrate-check predicts")  # fmt: skip
    if judgement.answer_disagreements:
        out.append("- GUEST ANSWERS DISAGREE WITH THE SPEC: "
                   + "; ".join(judgement.answer_disagreements))  # fmt: skip
    else:
        out.append(f"- all {judgement.answers_compared} of the guest's answers the spec defines "
                   "are migrate-check's")  # fmt: skip
    if load.completed:
        out.append("- the guest after the resume: "
                   + ("; ".join(judgement.changes) if judgement.changes else "saw no change"))  # fmt: skip
    out += ["", "| VMM rule | verdict | evidence |", "|---|---|---|"]
    out += [f"| `{v.rule}` | {v.verdict} | {v.evidence} |" for v in judgement.verdicts]
    return [*out, ""]
