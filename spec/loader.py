"""Load a spec directory: read each file with lines, validate it, resolve it into the model."""

from __future__ import annotations

import hashlib
import os
import stat
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml

from kvm_fwspec.spec.errors import SpecError, SpecProblem, UsageError
from kvm_fwspec.spec.model import Spec, SpecFile
from kvm_fwspec.spec.resolve import resolve
from kvm_fwspec.spec.yaml_source import SourceDocument, load_document

SPEC_FILES = (
    "kernels",
    "encoding",
    "api",
    "registers",
    "psci",
    "smccc",
    "smccc-filter",
    "rules",
    "vmm",
)
SCHEMA_FILE = Path("schema") / "kvm-fwspec.schema.yaml"


SPEC_DIR_VARIABLE = "KVM_FWSPEC_SPEC_DIR"


def default_spec_dir() -> Path:
    """The folder named by $KVM_FWSPEC_SPEC_DIR if set (`kvm-fwspec --spec-dir` sets it, so the
    command and every process it starts, pytest's workers included, load the same spec), else
    the spec's own folder, this package's data: spec/ in a checkout, kvm_fwspec/spec in a
    wheel. Installs are unpacked (pip never runs a wheel zipped), so it is a real folder."""
    chosen = os.environ.get(SPEC_DIR_VARIABLE)
    if chosen:
        folder = Path(chosen)
        try:
            kind = file_kind(folder)
        except OSError as exc:
            kind = f"unreachable ({exc.strerror})"
        if kind != "a folder":
            problem = "does not exist" if kind is None else f"is {kind}, not a folder"
            raise UsageError(
                f"${SPEC_DIR_VARIABLE} names {chosen}, which {problem}: point it at the folder "
                "of spec files, or unset it"
            )
        return folder
    return Path(str(resources.files("kvm_fwspec.spec")))


def file_kind(path: Path) -> str | None:
    """What is at `path`, in words (`a folder`, `a FIFO`), or None if nothing is: a spec file
    must be a regular file, since reading a FIFO or a device waits for a writer that may
    never come, and the user is told what they pointed at instead. OSError where the path
    cannot be looked at (a name too long, a folder we may not enter), for the caller to say
    with the option that named it."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there, or a file on the way
        return None
    kinds = (
        (stat.S_ISREG, "a file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _refuse_unless_regular(path: Path) -> None:
    """A spec or schema file that is there but is no regular file (a FIFO, a device) is
    refused before it is opened, in one line: opening it could wait forever. A folder is the
    reader's to report (`cannot read: Is a directory`), as a problem of the spec."""
    try:
        kind = file_kind(path)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    if kind not in (None, "a file", "a folder"):
        raise UsageError(f"{path} is {kind}, not a regular file: a spec file must be one")


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
    try:
        kind = file_kind(spec_dir)
    except OSError as exc:
        raise UsageError(f"spec directory {spec_dir}: {exc.strerror}") from None
    if kind != "a folder":
        # Not a problem of the spec, which is not there to have one: no line number, exit 2.
        problem = "does not exist" if kind is None else f"is {kind}, not a folder"
        raise UsageError(f"spec directory {spec_dir} {problem}")
    schema_path = spec_dir / SCHEMA_FILE
    spec_paths = [spec_dir / f"{stem}.yaml" for stem in SPEC_FILES]
    if not schema_path.exists() and not any(path.exists() for path in spec_paths):
        raise UsageError(
            f"spec directory {spec_dir} holds none of the spec files "
            f"({', '.join(p.name for p in spec_paths)}, {SCHEMA_FILE}): is it the spec folder?"
        )
    for path in (schema_path, *spec_paths):
        _refuse_unless_regular(path)
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
