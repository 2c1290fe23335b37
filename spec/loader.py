"""Load a spec directory: read each file with lines, validate it, resolve it into the model."""

from __future__ import annotations

import hashlib
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml

from kvm_fwspec.spec.errors import SpecError, SpecProblem
from kvm_fwspec.spec.model import Spec, SpecFile
from kvm_fwspec.spec.resolve import resolve
from kvm_fwspec.spec.yaml_source import SourceDocument, load_document

SPEC_FILES = ("kernels", "encoding", "api", "registers", "psci", "smccc", "rules", "vmm")
SCHEMA_FILE = Path("schema") / "kvm-fwspec.schema.yaml"


SPEC_DIR_VARIABLE = "KVM_FWSPEC_SPEC_DIR"


def default_spec_dir() -> Path:
    """The folder named by $KVM_FWSPEC_SPEC_DIR if set (`kvm-fwspec --spec-dir` sets it, so the
    command and every process it starts, pytest's workers included, load the same spec), else
    the spec's own folder, this package's data: spec/ in a checkout, kvm_fwspec/spec in a
    wheel. Installs are unpacked (pip never runs a wheel zipped), so it is a real folder."""
    chosen = os.environ.get(SPEC_DIR_VARIABLE)
    if chosen:
        return Path(chosen)
    return Path(str(resources.files("kvm_fwspec.spec")))


@cache
def _schema(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        schema: dict[str, Any] = yaml.load(
            handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
    return schema


def _validate(document: SourceDocument, schema: dict[str, Any], stem: str) -> list[SpecProblem]:
    file_schema = {**schema, "$ref": f"#/$defs/{stem}-file"}
    validator = jsonschema.Draft202012Validator(file_schema)
    problems = []
    for error in validator.iter_errors(document.data):
        # A oneOf/anyOf failure is clearer reported by its most specific sub-error.
        best = jsonschema.exceptions.best_match([error])
        path = tuple(best.absolute_path)
        if best.validator == "additionalProperties" and isinstance(best.instance, dict):
            # Point at the first unexpected key's own line rather than its parent's.
            known = best.schema.get("properties", {})
            extra = next((k for k in best.instance if k not in known), None)
            path = (*path, extra) if extra is not None else path
        message = best.message
        if best.validator == "oneOf":
            message = _one_of_message(best) or message
        if "propertyNames" in best.schema_path:
            path = (*path, best.instance)  # the offending key's own line
        problems.append(document.problem(path, message))
    return problems


def _one_of_message(error: jsonschema.exceptions.ValidationError) -> str | None:
    """jsonschema dumps the whole object for a failed oneOf; where each alternative only
    requires one key, say which keys and how many were given instead."""
    alternatives: list[dict[str, Any]] = list(cast(list[dict[str, Any]], error.validator_value))
    keys = [
        a["required"][0]
        for a in alternatives
        if list(a) == ["required"] and len(a["required"]) == 1
    ]
    if len(keys) != len(alternatives) or not isinstance(error.instance, dict):
        return None
    given = [k for k in keys if k in error.instance]
    found = f"has {' and '.join(repr(k) for k in given)}" if given else "has none"
    return f"needs exactly one of {', '.join(repr(k) for k in keys)}; it {found}"


def read_documents(spec_dir: Path) -> dict[str, SourceDocument]:
    """Read and schema-check every spec file; raise SpecError listing every problem found."""
    if not spec_dir.is_dir():
        raise SpecError([SpecProblem(spec_dir, 1, "", "spec directory does not exist")])
    schema_path = spec_dir / SCHEMA_FILE
    if not schema_path.is_file():
        raise SpecError([SpecProblem(schema_path, 1, "", "schema file is missing")])
    problems: list[SpecProblem] = []
    expected = {f"{stem}.yaml" for stem in SPEC_FILES}
    for extra in sorted(p for p in spec_dir.glob("*.yaml") if p.name not in expected):
        problems.append(
            SpecProblem(extra, 1, "", f"unknown spec file; expected only {sorted(expected)}")
        )
    documents: dict[str, SourceDocument] = {}
    for stem in SPEC_FILES:
        path = spec_dir / f"{stem}.yaml"
        if not path.exists():
            problems.append(SpecProblem(path, 1, "", "spec file is missing"))
            continue
        try:
            documents[stem] = load_document(path)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(_validate(documents[stem], _schema(schema_path), stem))
    if problems:
        raise SpecError(problems)
    return documents


def load_spec(spec_dir: Path | None = None) -> Spec:
    """The resolved spec in `spec_dir` (default: the project's own spec/)."""
    spec_dir = spec_dir or default_spec_dir()
    documents = read_documents(spec_dir)
    files = tuple(
        SpecFile(
            name=f"spec/{stem}.yaml",
            sha256=hashlib.sha256(documents[stem].path.read_bytes()).hexdigest(),
        )
        for stem in SPEC_FILES
    )
    return resolve(documents, files)
