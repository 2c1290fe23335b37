"""`kvm-fwspec verify RESULTS`: is a results file complete, untampered and about this spec?"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from kvm_fwspec.conformance.cases import build_cases
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.results import SCHEMA_PATH, canonical_digest
from kvm_fwspec.spec.loader import load_spec


def verify(path: Path) -> list[str]:
    """Problems found, one line each; empty when the results stand."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{path}: cannot read results: {exc}"]
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.path)
    )
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path)
        return [f"{path}: not a results document: {where or 'top'}: {errors[0].message}"]
    problems = []
    if canonical_digest(document) != document["digest"]:
        problems.append(f"{path}: digest mismatch: the file was changed after the run wrote it")
    spec = load_spec()
    current = {f.name: f.sha256 for f in spec.files}
    if document["run"]["spec-files"] != current:
        problems.append(f"{path}: results are for a different spec (spec file hashes differ)")
        return problems
    run = document["run"]
    profile = resolve_profile(spec, run["kernel"], run["host-profile"], run["arch"])
    required = {c.id: c.rule for c in build_cases(spec, profile)}
    present = {c["id"]: c for c in document["cases"]}
    missing = sorted(set(required) - set(present))
    if missing:
        problems.append(
            f"{path}: incomplete: {len(missing)} required cases missing, first {missing[0]}"
        )
    unknown = sorted(set(present) - set(required))
    if unknown:
        problems.append(
            f"{path}: {len(unknown)} cases the suite does not define, first {unknown[0]}"
        )
    wrong_rule = sorted(
        i for i in set(required) & set(present) if present[i]["rule"] != required[i]
    )
    if wrong_rule:
        problems.append(f"{path}: case {wrong_rule[0]} is filed under the wrong rule")
    counts = {
        o: sum(c["outcome"] == o for c in document["cases"])
        for o in ("pass", "fail", "not-applicable", "error")
    }
    if any(document["summary"][o] != n for o, n in counts.items()) or document["summary"][
        "total"
    ] != len(present):
        problems.append(f"{path}: summary does not match the cases")
    conforms = counts["fail"] == 0 and counts["error"] == 0 and len(present) > 0
    if document["summary"]["conforms"] != conforms:
        problems.append(
            f"{path}: summary claims conforms={document['summary']['conforms']}, cases say {conforms}"
        )
    return problems
