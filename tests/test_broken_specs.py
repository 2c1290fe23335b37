"""Each broken spec in tests/broken_specs/ fails with exactly its expected one-line errors.

A case is a find/replace applied to a copy of the real spec, so the corpus follows the spec
as it grows. `{line}` in an expected error is the line of the case's `at` text in the broken
file (default: where the replacement starts), so line numbers are checked, not guessed.

A case's keys: `doc`; `errors`, the expected stderr lines; `file`, `find` (text occurring
exactly once in that spec file), `replace` and optional `at`. Errors about whole files use
instead, or as well, `write` (spec-relative path -> text, creating or overwriting a file and
its folders) and `delete` (spec-relative paths, `.` being spec/ itself), applied after the
replacement, deletions first; `encoding` writes the replaced file in another encoding than UTF-8.

The corpus must reach every error the loader can report: each problem message of
spec/resolve/*.py, loader.py, yaml_source.py, rule_language.py and rule_names.py, and each
assertion keyword the schema uses, must match some case's expected error
(test_every_error_site_has_a_case and test_every_schema_keyword_has_a_case), short of the
exemptions listed with their reasons.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvm_fwspec.conformance.commands.cli import main
from kvm_fwspec.spec.loader import SPEC_FILES
from tests.checkout import KVM_FWSPEC, ROOT

CASES = sorted((Path(__file__).parent / "broken_specs").glob("*.yaml"))


def apply_case(case: dict[str, Any], workdir: Path) -> list[str]:
    """Write the broken spec under workdir/spec; return the expected error lines."""
    spec = workdir / "spec"
    shutil.copytree(ROOT / "spec", spec)
    line = None
    if "file" in case:
        target = spec / case["file"]
        text = target.read_text(encoding="utf-8")
        assert text.count(case["find"]) == 1, (
            f"'find' must occur once in {case['file']}; the spec moved on"
        )
        broken = text.replace(case["find"], case["replace"])
        target.write_text(broken, encoding=case.get("encoding", "utf-8"))
        marker = case.get("at", case["replace"])
        assert broken.count(marker) == 1, "'at' must occur once in the broken file"
        line = broken.count("\n", 0, broken.index(marker)) + 1
    for name in case.get("delete", []):
        doomed = (spec / name).resolve()
        assert doomed.exists(), f"'delete' names {name}, which the spec does not have"
        if doomed.is_dir():
            shutil.rmtree(doomed)
        else:
            doomed.unlink()
    for name, content in case.get("write", {}).items():
        (spec / name).parent.mkdir(parents=True, exist_ok=True)
        (spec / name).write_text(content, encoding="utf-8")
    assert line is not None or not any("{line}" in e for e in case["errors"]), (
        "{line} needs a find/replace"
    )
    # Not str.format: schema errors quote objects such as `{}` in their messages.
    return [e.replace("{line}", str(line)) for e in case["errors"]]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case_file", CASES, ids=[c.stem for c in CASES])
def test_broken_spec_gives_its_error(
    case_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`kvm-fwspec validate spec` in a folder holding the broken copy, run in-process (the
    corpus is large; test_a_broken_spec_is_one_line_per_problem_from_the_installed_command
    runs one case as its own process)."""
    case = yaml.safe_load(case_file.read_text(encoding="utf-8"))
    expected = apply_case(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "spec"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == expected


def test_a_broken_spec_is_one_line_per_problem_from_the_installed_command(tmp_path: Path) -> None:
    case = yaml.safe_load(CASES[-1].read_text(encoding="utf-8"))
    expected = apply_case(case, tmp_path)
    result = subprocess.run(
        [*KVM_FWSPEC, "validate", "spec"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == expected


# -- coverage: every error the loader can report has a case ---------------------------------

# The loader's modules that report problems, as globs under spec/: the resolver is one module
# per spec file.
ERROR_SOURCES = ("resolve/*.py", "loader.py", "yaml_source.py", "rule_language.py", "rule_names.py")

# The call that reports a problem, and which of its arguments is the message.
MESSAGE_ARGUMENT = {"error": 2, "SpecProblem": 3, "_problem": 2, "problem": 1, "ExpressionError": 0}

# How jsonschema words the failure of each assertion keyword, as the loader prints it.
SCHEMA_MESSAGES = {
    "type": r".+ is not of type '\w+'",
    "required": r"'[^']+' is a required property",
    "additionalProperties": r"Additional properties are not allowed \(.+ unexpected\)",
    "pattern": r".+ does not match '\^.*'",
    "enum": r".+ is not one of \[.*\]",
    "const": r".+ was expected",
    "minimum": r".+ is less than the minimum of -?\d+",
    "maximum": r".+ is greater than the maximum of -?\d+",
    "minLength": r"'.*' (should be non-empty|is too short)",
    "minItems": r"\[.*\] (should be non-empty|is too short)",
    "maxItems": r"\[.*\] (is too long|has too many items)",
    "uniqueItems": r"\[.*\] has non-unique elements",
    "minProperties": r"\{.*\} (should be non-empty|does not have enough properties)",
    "maxProperties": r"\{.*\} (is expected to be empty|has too many properties)",
    "oneOf": r"needs exactly one of '.+'; it has .+",
    "items": r"Expected at most \d+ items? but found \d+ extra: .+",
}
# Keywords that never fail on their own: annotations, and `$ref`, whose target's keywords do.
SCHEMA_SILENT = {"$schema", "$id", "title", "description", "$ref"}
# Schema keywords with no case, and why.
SCHEMA_EXEMPT: dict[str, str] = {}

# Problem messages computed at run time, by (file, function): what their expected lines look like.
NON_LITERAL_MESSAGES = {
    ("resolve/registers.py", "resolve_resets"): (
        r"spec/registers\.yaml:(\d+|\{line\}): registers\[\d+\]\.reset: "
    ),
    ("resolve/rules.py", "_expression"): (
        r"spec/rules\.yaml:(\d+|\{line\}): rules\[\d+\]\.(when|result\.value|result\.store): "
    ),
    (
        "resolve/decision_tables.py",
        "checked_when",
    ): r"spec/(smccc-filter|psci)\.yaml:(\d+|\{line\}): (power\.)?rules\[\d+\]\.when: ",
    ("loader.py", "_validate"): "|".join(f"(: {m}$)" for m in SCHEMA_MESSAGES.values()),
    # A Function.check's own message, such as psci()'s (sites of their own in rule_names.py).
    ("rule_language.py", "_infer_call"): r": psci\(",
}

# Problem messages with no case, by their template, and why.
EXEMPT_MESSAGES: dict[str, str] = {}


@dataclass(frozen=True)
class ErrorSite:
    """One place in the loader that reports a problem, and how its message reads."""

    where: str
    template: str
    pattern: str


def _template(message: ast.expr) -> tuple[str, str] | None:
    """A literal or f-string message as readable text and as a regex; None if computed."""
    if isinstance(message, ast.Constant) and isinstance(message.value, str):
        return message.value, re.escape(message.value)
    if not isinstance(message, ast.JoinedStr):
        return None
    text, regex = "", ""
    for part in message.values:
        if isinstance(part, ast.FormattedValue):
            text += "{" + ast.unparse(part.value) + "}"
            regex += ".*?"
        else:
            text += ast.literal_eval(part)
            regex += re.escape(ast.literal_eval(part))
    return text, regex


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            yield node


def _called(call: ast.Call) -> str:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else ""


def _messages(function: ast.FunctionDef) -> Iterator[tuple[int, ast.expr, str | None]]:
    """(line, message, spec file stem if fixed) for each problem `function` itself reports."""
    own = [n for n in ast.walk(function) if n is not function]
    nested = {id(n) for f in own if isinstance(f, ast.FunctionDef) for n in ast.walk(f)}
    parameters = {a.arg for a in function.args.args}
    returns_problem = function.returns is not None and ast.unparse(function.returns) == "str | None"
    for node in own:
        if id(node) in nested:
            continue
        if isinstance(node, ast.Call):
            index = MESSAGE_ARGUMENT.get(_called(node))
            if index is None or len(node.args) <= index:
                continue
            message = node.args[index]
            if isinstance(message, ast.Name) and message.id in parameters:
                continue  # a helper passing its caller's message on
            stem = node.args[0] if _called(node) == "error" else None
            fixed = stem.value if isinstance(stem, ast.Constant) else None
            yield node.lineno, message, fixed if isinstance(fixed, str) else None
        elif (
            returns_problem
            and isinstance(node, ast.Return)
            and node.value
            and _template(node.value)
        ):
            yield node.lineno, node.value, None  # a rule-language Function.check's problem


def error_sources() -> list[str]:
    """The files ERROR_SOURCES names, relative to spec/; a pattern that names none is stale."""
    sources = []
    for pattern in ERROR_SOURCES:
        found = sorted(
            p.relative_to(ROOT / "spec").as_posix() for p in (ROOT / "spec").glob(pattern)
        )
        assert found, f"ERROR_SOURCES: nothing matches spec/{pattern}"
        sources += found
    return sources


def error_sites() -> list[ErrorSite]:
    sites = []
    for source in error_sources():
        tree = ast.parse((ROOT / "spec" / source).read_text(encoding="utf-8"))
        for function in _functions(tree):
            for line, message, stem in _messages(function):
                where = f"spec/{source}:{line} ({function.name})"
                found = _template(message)
                if found is None:
                    key = (source, function.name)
                    assert key in NON_LITERAL_MESSAGES, (
                        f"{where} reports a computed message; add {key} to NON_LITERAL_MESSAGES"
                    )
                    sites.append(ErrorSite(where, ast.unparse(message), NON_LITERAL_MESSAGES[key]))
                    continue
                text, regex = found
                prefix = (
                    rf"spec/{re.escape(stem)}\.yaml:(\d+|\{{line\}}): (\S+: )?" if stem else ": "
                )
                sites.append(ErrorSite(where, text, f"{prefix}{regex}$"))
    return sites


def expected_errors() -> list[str]:
    errors: list[str] = []
    for case_file in CASES:
        errors += yaml.safe_load(case_file.read_text(encoding="utf-8"))["errors"]
    return errors


def test_every_error_site_has_a_case() -> None:
    """Every problem the loader can report is held to its exact wording by some case."""
    sites = error_sites()
    errors = expected_errors()
    assert len(sites) > 50, "the AST scan no longer finds the loader's error calls"
    covered = {s.where: any(re.search(s.pattern, e) for e in errors) for s in sites}
    missing = [
        f"{s.where}: {s.template}"
        for s in sites
        if not covered[s.where] and s.template not in EXEMPT_MESSAGES
    ]
    assert not missing, "no broken spec reaches:\n" + "\n".join(missing)
    templates = {s.template for s in sites}
    assert set(EXEMPT_MESSAGES) <= templates, "an exemption names a message no longer reported"
    now_covered = [s.template for s in sites if covered[s.where] and s.template in EXEMPT_MESSAGES]
    assert not now_covered, f"a case now reaches these; drop their exemptions: {now_covered}"


def test_every_resolver_module_is_scanned() -> None:
    """The resolver has one module per spec file, and each reports problems of its own: a
    module the scan missed (a new folder, a renamed helper) would leave its errors unchecked."""
    scanned = {s.where.split(":")[0] for s in error_sites()}
    missing = {f"spec/resolve/{stem.replace('-', '_')}.py" for stem in SPEC_FILES} - scanned
    assert not missing, f"no error site found in {sorted(missing)}"


def _schema_keywords(schema: Any, groups: set[str]) -> Iterator[str]:
    """The keywords used anywhere in `schema`, descending into the schemas inside it.

    `groups` are the $defs that are not schemas but hold some, referred into by `$ref`s such
    as `#/$defs/lifetime/since`.
    """
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        if key == "$defs":
            for name, definition in value.items():
                for sub in definition.values() if name in groups else [definition]:
                    yield from _schema_keywords(sub, groups)
        elif key == "properties":
            for sub in value.values():
                yield from _schema_keywords(sub, groups)
        elif key in ("prefixItems", "oneOf", "anyOf", "allOf"):
            if key != "prefixItems":
                yield key  # fails with its own message when no (or several) branches hold
            for sub in value:
                yield from _schema_keywords(sub, groups)
        elif key in ("items", "additionalProperties", "propertyNames") and isinstance(value, dict):
            yield from _schema_keywords(value, groups)  # only its subschema's keywords fail
        else:
            yield key


def test_every_schema_keyword_has_a_case() -> None:
    """Every assertion keyword the schema uses fails, in some case, with its exact wording."""
    text = (ROOT / "spec/schema/kvm-fwspec.schema.yaml").read_text(encoding="utf-8")
    groups = set(re.findall(r"#/\$defs/([\w.-]+)/", text))
    used = set(_schema_keywords(yaml.safe_load(text), groups))
    unknown = used - set(SCHEMA_MESSAGES) - SCHEMA_SILENT - set(SCHEMA_EXEMPT)
    assert not unknown, f"say in SCHEMA_MESSAGES how these keywords fail: {sorted(unknown)}"
    assert set(SCHEMA_EXEMPT) <= used, "an exemption names a keyword the schema no longer uses"
    errors = expected_errors()
    missing = [
        keyword
        for keyword in sorted(used & set(SCHEMA_MESSAGES))
        if not any(re.search(f": {SCHEMA_MESSAGES[keyword]}$", e) for e in errors)
    ]
    assert not missing, f"no broken spec fails these schema keywords: {missing}"
