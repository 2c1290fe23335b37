"""`kvm-fwspec verify RESULTS`: do a results file's verdicts follow from its evidence, under the
spec it names, and who vouches for the evidence?

A results file records, for every case, what the spec expected, what the implementation was
observed to do, and the verdict. Only the first can be recomputed by a reader: the cases are
rebuilt from the spec the file names, and every expected value, every verdict (judged again from
the recorded observations by the same function the run used), every count and the summary must
come out the same; a case missing or extra is refused. That catches a failing case relabelled
`pass`, an edited expectation and a summary that lies, whatever digest the file carries (anyone
can recompute a sha256).

It cannot catch what only the run saw: observations rewritten to match, capabilities trimmed to
make failures not applicable, another implementation's name. Those are claims of whoever wrote
the file, and only a signature (signing.py) ties them to someone. So the verdict line always
says which of the two was checked, and never calls an unsigned file untampered.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from kvm_fwspec.codegen import __version__
from kvm_fwspec.conformance.cases import Case, build_cases
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.results import SCHEMA_PATH, canonical_digest, conforms
from kvm_fwspec.conformance.signing import SignatureCheck, check_signature, require_signers
from kvm_fwspec.conformance.verdicts import OUTCOMES, judge
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec

# A results document is six levels deep (document, cases, case, observed, step, value); a
# program in a case adds a few. Anything far deeper is not one, and would exhaust the stack of
# the schema validator and of json itself.
MAX_DEPTH = 32


UNSIGNED = SignatureCheck(state="unsigned")


class NotResults(Exception):
    """The file was read but is not a results document; the message says why, in one line."""


@dataclass(frozen=True, kw_only=True)
class Verification:
    """What verify established about one results file."""

    path: Path
    problems: tuple[str, ...]
    cases: int = 0
    spec: str = ""
    profile: str = ""
    outcome: str = ""  # the verdict the file records, which re-judging upheld
    signature: SignatureCheck = UNSIGNED

    @property
    def stands(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        """The line for a file that stands: exactly what was checked, and what was not."""
        return (
            f"{self.path}: re-judged {self.cases} cases ({self.profile}) against spec "
            f"{self.spec}: consistent: {self.outcome}; {self.signature.summary}"
        )


def spec_hash(spec_files: dict[str, str]) -> str:
    """One short name for a set of spec files: sha256 over their names and hashes, sorted."""
    listing = "".join(f"{name} {sha}\n" for name, sha in sorted(spec_files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def verify(path: Path) -> list[str]:
    """Problems found by re-judging the file, one line each; empty when its verdicts stand.
    (Says nothing of who wrote it: see verify_results.)"""
    return list(rejudge(path).problems)


def verify_results(path: Path, signers: Path | None = None) -> Verification:
    """Re-judge the file, then check its signature against `signers` (an OpenSSH
    allowed-signers file) when given; a bad signature, or none when signers are given, is a
    problem."""
    if signers is not None:
        require_signers(signers)  # before the work of re-judging: a mistyped name fails at once
    judged = rejudge(path)
    signature = check_signature(path, signers)
    problems = list(judged.problems)
    if signature.state == "bad":
        problems.append(f"{path}: {signature.problem}")
    if signature.state == "unsigned" and signers is not None:
        problems.append(
            f"{path}: unsigned: no {path.name}.sig beside it, so who produced it cannot be checked"
        )
    return Verification(
        path=path,
        problems=tuple(problems),
        cases=judged.cases,
        spec=judged.spec,
        profile=judged.profile,
        outcome=judged.outcome,
        signature=signature,
    )


def rejudge(path: Path) -> Verification:
    """Rebuild the cases of the profile the file names from the spec it names (which must be
    the one loaded: the project's, or --spec-dir's) and judge every recorded case again."""
    try:
        document = read_results(path)
    except NotResults as exc:
        return Verification(path=path, problems=(f"{path}: {exc}",))
    spec = load_spec()
    current = {f.name: f.sha256 for f in spec.files}
    recorded_files: dict[str, str] = document["run"]["spec-files"]
    if recorded_files != current:
        return Verification(path=path, problems=tuple(_other_spec(path, recorded_files, current)))
    run = document["run"]
    try:
        profile = resolve_profile(spec, run["kernel"], run["host-profile"], run["arch"])
    except UsageError as exc:
        return Verification(path=path, problems=(f"{path}: the run's profile: {exc}",))
    problems = [f"{path}: {p}" for p in _problems(document, build_cases(spec, profile))]
    if problems and run["suite-version"] != __version__:
        problems.append(
            f"{path}: written by suite {run['suite-version']}, re-judged by {__version__}: "
            "its cases may differ"
        )
    return Verification(
        path=path,
        problems=tuple(problems),
        cases=len(document["cases"]),
        spec=spec_hash(current),
        profile=profile.label,
        outcome=recorded_verdict(document),
    )


def recorded_verdict(document: dict[str, Any]) -> str:
    """`DOES NOT CONFORM (408 pass, 154 fail, 0 not-applicable, 0 error)`: what the file says,
    so a consistent file of a failed run is never read as a pass."""
    summary = document["summary"]
    verdict = "CONFORMS" if summary["conforms"] else "DOES NOT CONFORM"
    if document["run"]["require-all"]:
        verdict += " under --require-all"
    counts = ", ".join(f"{summary[o]} {o}" for o in OUTCOMES)
    return f"{verdict} ({counts})"


def read_results(path: Path) -> dict[str, Any]:
    """The document in `path`, parsed and schema-checked. A file that cannot be read at all is
    the user's mistake (UsageError); one that can but is not results fails verification."""
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        hint = " (the results are its results.json)" if (path / "results.json").is_file() else ""
        raise UsageError(f"{path}: is a folder, not a results file{hint}")
    if not path.is_file():  # a FIFO or a device would be read forever
        raise UsageError(f"{path}: is not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotResults(
            f"not a results file: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None
    try:
        document = json.loads(
            text, object_pairs_hook=_refuse_duplicate_keys, parse_constant=_refuse_constant
        )
    except RecursionError:
        raise NotResults("not a results file: JSON nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        raise NotResults(
            f"not a results file: not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:  # from the hooks
        raise NotResults(f"not a results file: {exc}") from None
    if _depth(document) > MAX_DEPTH:
        raise NotResults(f"not a results file: JSON nested more than {MAX_DEPTH} levels deep")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.path)
    )
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path)
        raise NotResults(f"not a results document: {where or 'top'}: {errors[0].message}")
    checked: dict[str, Any] = document
    return checked


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Two values for one key: readers disagree on which counts (json keeps the last)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key '{key}' appears twice in one object")
        seen[key] = value
    return seen


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    """How deeply lists and objects nest, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _other_spec(path: Path, recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """One line per spec file that differs: the results were judged under another spec."""
    problems = []
    for name in sorted(set(recorded) | set(current)):
        if name not in current:
            problems.append(f"{path}: results name spec file {name}, which this spec lacks")
        elif name not in recorded:
            problems.append(f"{path}: results do not name spec file {name}")
        elif recorded[name] != current[name]:
            problems.append(
                f"{path}: results are for another spec: {name} is {recorded[name][:12]} "
                f"there, {current[name][:12]} in the spec loaded"
            )
    return problems


def _normal(value: Any) -> Any:
    """A value as JSON gives it back (tuples become lists), for comparing with a file's."""
    return json.loads(json.dumps(value))


def _problems(document: dict[str, Any], cases: list[Case]) -> list[str]:
    """Every way the document's cases, counts and summary differ from the spec's and from
    the verdicts its observations earn."""
    problems = []
    if canonical_digest(document) != document["digest"]:
        problems.append("digest mismatch: the file was changed after the run wrote it")
    capabilities = frozenset(document["run"]["capabilities"])
    rebuilt = {c.id: c for c in cases}
    recorded: dict[str, dict[str, Any]] = {}
    outcomes: Counter[str] = Counter()
    for entry in document["cases"]:
        case_id = entry["id"]
        if case_id in recorded:
            problems.append(f"case {case_id}: recorded twice")
            continue
        recorded[case_id] = entry
        case = rebuilt.get(case_id)
        if case is None:
            problems.append(f"case {case_id}: not a case the suite defines for this profile")
            outcomes[entry["outcome"]] += 1
            continue
        outcome, found = _rejudge_case(case, entry, capabilities)
        outcomes[outcome] += 1
        problems += [f"case {case_id}: {p}" for p in found]
    problems += [
        f"case {case_id}: missing (the suite requires it)"
        for case_id in sorted(set(rebuilt) - set(recorded))
    ]
    problems += _summary_problems(
        document["summary"], outcomes, len(document["cases"]), document["run"]["require-all"]
    )
    return problems


def _rejudge_case(
    case: Case, entry: dict[str, Any], capabilities: frozenset[str]
) -> tuple[str, list[str]]:
    """The verdict the evidence earns, and what the entry says differently."""
    problems = _spec_derived_problems(case, entry)
    recorded, observed = entry["outcome"], entry["observed"]
    lacking = sorted(set(case.requires) - capabilities)
    if lacking:
        if recorded != "not-applicable":
            problems.append(
                f"recorded {recorded}, but it needs {', '.join(lacking)}, which the run's "
                "capabilities lack: it is not-applicable"
            )
        elif observed is not None:
            problems.append("recorded not-applicable, yet it has observations")
        return "not-applicable", problems
    if observed is None:
        # Nothing observed: the adapter could not run it, which is an error and only that.
        if recorded != "error":
            why = (
                f"the run's capabilities ({', '.join(sorted(capabilities)) or 'none'}) "
                "include all it needs"
                if recorded == "not-applicable"
                else "nothing was observed"
            )
            problems.append(f"recorded {recorded}, but {why}: it is an error")
        return "error", problems
    if len(observed) != len(case.expected):
        problems.append(f"{len(observed)} observations for a program of {len(case.expected)} steps")
        return "error", problems
    earned = judge(case, observed, 0.0)
    if recorded != earned.outcome:
        because = f" ({earned.reason})" if earned.reason else ""
        problems.append(f"recorded {recorded}, the observations earn {earned.outcome}{because}")
    return earned.outcome, problems


# What a case records that the spec alone decides, as the run wrote it (CaseResult.to_json).
SPEC_DERIVED = ("rule", "scenario", "program", "expected")


def _spec_derived_problems(case: Case, entry: dict[str, Any]) -> list[str]:
    """The recorded rule, scenario, program and expected outcomes against the rebuilt case's.
    The run's own serialisation gives the rebuilt ones (judging the expected outcomes as
    observations is just a way to get a CaseResult of the case), so an encoding the run uses,
    such as hex register ids, is the one compared."""
    derived = _normal(judge(case, list(case.expected), 0.0).to_json())
    problems = []
    for key in SPEC_DERIVED:
        if key not in derived or entry.get(key) == derived[key]:
            continue
        if key == "expected":
            problems.append(_expected_differs(entry["expected"], derived["expected"]))
        elif key == "program":
            where, recorded, given = _first_difference(entry.get(key), derived[key])
            problems.append(
                f"program differs from the spec's at {where or 'top'}: recorded "
                f"{json.dumps(recorded)}, the spec gives {json.dumps(given)}"
            )
        else:
            problems.append(f"recorded {key} {entry.get(key)}, the spec's is {derived[key]}")
    return problems


def _first_difference(recorded: Any, given: Any, where: str = "") -> tuple[str, Any, Any]:
    """The path to the first place two JSON values differ, and both values there (the depth
    is bounded by read_results, so recursing is safe)."""
    if isinstance(recorded, dict) and isinstance(given, dict):
        for key in sorted(set(recorded) | set(given)):
            if recorded.get(key) != given.get(key):
                return _first_difference(recorded.get(key), given.get(key), f"{where}/{key}")
    if isinstance(recorded, list) and isinstance(given, list) and len(recorded) == len(given):
        for index, (r, g) in enumerate(zip(recorded, given, strict=True)):
            if r != g:
                return _first_difference(r, g, f"{where}/{index}")
    return where.lstrip("/"), recorded, given


def _expected_differs(recorded: list[Any], expected: list[Any]) -> str:
    if len(recorded) != len(expected):
        return f"{len(recorded)} expected outcomes recorded, the spec gives {len(expected)}"
    step = next(i for i, (r, e) in enumerate(zip(recorded, expected, strict=True)) if r != e)
    return (
        f"expected outcome of step {step} recorded as {json.dumps(recorded[step])}, "
        f"the spec gives {json.dumps(expected[step])}"
    )


def _summary_problems(
    summary: dict[str, Any], outcomes: Counter[str], total: int, require_all: bool
) -> list[str]:
    """The summary must count the verdicts the evidence earns, and conform only by them."""
    problems = []
    for outcome in OUTCOMES:
        if summary[outcome] != outcomes[outcome]:
            problems.append(
                f"summary counts {summary[outcome]} {outcome}, the re-judged cases "
                f"{outcomes[outcome]}"
            )
    if summary["total"] != total:
        problems.append(f"summary counts {summary['total']} cases in all, the file has {total}")
    earned = conforms(outcomes, total, require_all)
    if summary["conforms"] != earned:
        problems.append(
            f"summary says conforms={str(summary['conforms']).lower()}, the re-judged cases "
            f"say {str(earned).lower()}"
        )
    return problems
