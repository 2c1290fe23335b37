"""kvm-fwspec verify re-judges a results file from its evidence and the spec it names, and claims
who produced it only when it checked a signature.

Each false pass of issue 14 is here as the edit a tamperer would make to a genuine results file
(the reference certified once per module), digest recomputed, as anyone can.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvm_fwspec.conformance.results import canonical_digest
from kvm_fwspec.conformance.signing import NAMESPACE, sign_results, signature_path
from kvm_fwspec.conformance.verify import spec_hash, verify, verify_results
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import default_spec_dir
from tests.checkout import KVM_FWSPEC

Document = dict[str, Any]


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine results.json: the reference certified as arm64 6.1, mitigated host."""
    report = tmp_path_factory.mktemp("certified")
    result = subprocess.run(
        [*KVM_FWSPEC, "certify", "-q", "--kernel", "6.1", "--report", str(report)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return report / "results.json"


def genuine(certified: Path) -> Document:
    loaded: Document = json.loads(certified.read_text())
    return loaded


def write(path: Path, document: Document) -> Path:
    """The document as a tamperer would leave it: digest recomputed."""
    document["digest"] = canonical_digest(document)
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def edited(certified: Path, tmp_path: Path, edit: Callable[[Document], Any]) -> tuple[Path, Any]:
    """The genuine file with `edit` applied, and what `edit` returned (the cases it touched)."""
    document = genuine(certified)
    touched = edit(document)
    return write(tmp_path / "results.json", document), touched


def first_case(document: Document, suffix: str = "") -> Document:
    """The first case whose id ends with `suffix` and whose last step reads a value."""
    case: Document = next(
        c
        for c in document["cases"]
        if c["id"].endswith(suffix) and c["outcome"] == "pass" and "value" in c["expected"][-1]
    )
    return case


def fail_it(document: Document) -> Document:
    """What a run of an implementation that returns a wrong value on one read would write."""
    case = first_case(document)
    case["observed"][-1] = {"value": case["expected"][-1]["value"] ^ 1}
    case["outcome"] = "fail"
    case["reason"] = "a wrong value"
    document["summary"].update(
        {"pass": document["summary"]["pass"] - 1, "fail": 1, "conforms": False}
    )
    return case


def run_verify(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KVM_FWSPEC, "verify", *args], capture_output=True, text=True, cwd=cwd)


# -- re-judging ----------------------------------------------------------------------------------


def test_a_genuine_file_is_consistent_and_said_to_be_unsigned(
    certified: Path, tmp_path: Path
) -> None:
    shutil.copy(certified, tmp_path / "results.json")
    result = run_verify("results.json", cwd=tmp_path)
    document = genuine(certified)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == (
        f"results.json: re-judged {len(document['cases'])} cases (arm64 6.1 host=mitigated) "
        f"against spec {spec_hash(document['run']['spec-files'])}: consistent: CONFORMS "
        f"({len(document['cases'])} pass, 0 fail, 0 not-applicable, 0 error); "
        "unsigned (authenticity not checked)\n"
    )


def test_a_genuine_failing_file_is_consistent(certified: Path, tmp_path: Path) -> None:
    """Re-judging does not refuse a failure: a verdict that follows from its evidence stands."""
    path, _ = edited(certified, tmp_path, fail_it)
    assert verify(path) == []


def test_a_failing_case_relabelled_pass_is_refused_whatever_the_digest(
    certified: Path, tmp_path: Path
) -> None:
    """Issue 14, false pass 3: the digest is recomputed, so only re-judging can tell."""

    def relabel(document: Document) -> str:
        case = fail_it(document)
        case["outcome"], case["reason"] = "pass", ""
        document["summary"].update(
            {"pass": document["summary"]["pass"] + 1, "fail": 0, "conforms": True}
        )
        return str(case["id"])

    path, case_id = edited(certified, tmp_path, relabel)
    problems = verify(path)
    assert problems[0].startswith(
        f"{path}: case {case_id}: recorded pass, the observations earn fail (step "
    )
    assert problems[1:] == [
        f"{path}: summary counts {genuine(certified)['summary']['pass']} pass, the re-judged cases "
        f"{genuine(certified)['summary']['pass'] - 1}",
        f"{path}: summary counts 0 fail, the re-judged cases 1",
        f"{path}: summary says conforms=true, the re-judged cases say false",
    ]
    result = run_verify(str(path), cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert "untampered" not in result.stdout + result.stderr


def test_an_edited_expected_value_is_refused(certified: Path, tmp_path: Path) -> None:
    """Issue 14: `expected` edited to what the implementation did, the verdict left at pass."""

    def expect_the_wrong_value(document: Document) -> Document:
        case = first_case(document)
        wrong = {"value": case["expected"][-1]["value"] ^ 1}
        case["expected"][-1] = case["observed"][-1] = wrong
        return case

    path, case = edited(certified, tmp_path, expect_the_wrong_value)
    step = len(case["expected"]) - 1
    right = genuine(certified)
    spec_gives = next(c for c in right["cases"] if c["id"] == case["id"])["expected"][-1]
    problems = verify(path)
    assert problems[0] == (
        f"{path}: case {case['id']}: expected outcome of step {step} recorded as "
        f"{json.dumps(case['expected'][-1])}, the spec gives {json.dumps(spec_gives)}"
    )
    assert f"{path}: case {case['id']}: recorded pass, the observations earn fail" in problems[1]


def test_a_renamed_implementation_is_never_called_authentic(
    certified: Path, tmp_path: Path
) -> None:
    """Issue 14: the implementation renamed. Its name is the file's claim, not a consequence of
    the spec: any name is consistent with the evidence, so re-judging must accept it. What it
    must not do is vouch for it: the verdict says unsigned, and does not repeat the name."""

    def rename(document: Document) -> None:
        document["run"]["implementation"] = "acme hypervisor 9"

    edited(certified, tmp_path, rename)
    result = run_verify("results.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("0 error); unsigned (authenticity not checked)\n")
    assert "untampered" not in result.stdout and "acme" not in result.stdout


def test_capabilities_that_do_not_explain_a_verdict_are_refused(
    certified: Path, tmp_path: Path
) -> None:
    """Guest-call failures hidden as not-applicable by dropping guest-calls from the
    capabilities, but one left recorded as pass; and a case recorded not-applicable though
    the capabilities cover it."""

    def trim(document: Document) -> tuple[str, str]:
        document["run"]["capabilities"].remove("guest-calls")
        guest = [c for c in document["cases"] if c["id"].endswith(".guest")]
        for case in guest[1:]:
            case.update(outcome="not-applicable", observed=None)
        plain = first_case(document)
        plain.update(outcome="not-applicable", observed=None)
        document["summary"].update(
            {"pass": document["summary"]["pass"] - len(guest), "not-applicable": len(guest)}
        )
        return guest[0]["id"], plain["id"]

    path, (guest_id, plain_id) = edited(certified, tmp_path, trim)
    problems = verify(path)
    assert (
        f"{path}: case {guest_id}: recorded pass, but it needs guest-calls, which the run's "
        "capabilities lack: it is not-applicable"
    ) in problems
    assert (
        f"{path}: case {plain_id}: recorded not-applicable, but the run's capabilities "
        "(call-results, enable-cap, psci-0.1-vcpus, smccc-filter, vcpu-attr, vcpu-power) "
        "include all it needs: it is an error"
    ) in problems


def test_an_error_needs_an_observed_error_or_no_observation(
    certified: Path, tmp_path: Path
) -> None:
    def errors(document: Document) -> str:
        honest, dishonest = document["cases"][0], document["cases"][1]
        honest.update(outcome="error", observed=None, reason="adapter unavailable")
        dishonest.update(outcome="error", reason="made up")
        document["summary"].update(
            {"pass": document["summary"]["pass"] - 2, "error": 2, "conforms": False}
        )
        return str(dishonest["id"])

    path, dishonest = edited(certified, tmp_path, errors)
    assert verify(path) == [
        f"{path}: case {dishonest}: recorded error, the observations earn pass",
        f"{path}: summary counts {genuine(certified)['summary']['pass'] - 2} pass, "
        f"the re-judged cases {genuine(certified)['summary']['pass'] - 1}",
        f"{path}: summary counts 2 error, the re-judged cases 1",
    ]


def test_missing_extra_duplicated_and_misfiled_cases_are_each_named(
    certified: Path, tmp_path: Path
) -> None:
    def shuffle(document: Document) -> tuple[str, str, str, Document]:
        cases = document["cases"]
        dropped = cases.pop(3)
        extra = dict(cases[0], id=cases[0]["id"] + ".extra")
        cases += [extra, dict(cases[5])]
        cases[6]["rule"] = cases[200]["rule"]
        # The summary counts the extra case (judged as recorded), not the duplicate.
        document["summary"].update({"pass": len(cases) - 1, "total": len(cases)})
        return dropped["id"], extra["id"], cases[5]["id"], cases[6]

    path, (dropped, extra, duplicated, misfiled) = edited(certified, tmp_path, shuffle)
    problems = verify(path)
    right_rule = next(c for c in genuine(certified)["cases"] if c["id"] == misfiled["id"])["rule"]
    assert problems == [
        f"{path}: case {misfiled['id']}: recorded rule {misfiled['rule']}, the spec's is {right_rule}",
        f"{path}: case {extra}: not a case the suite defines for this profile",
        f"{path}: case {duplicated}: recorded twice",
        f"{path}: case {dropped}: missing (the suite requires it)",
    ]


def test_an_edited_program_is_refused(certified: Path, tmp_path: Path) -> None:
    def reroute(document: Document) -> str:
        case = first_case(document)
        case["program"]["steps"][-1]["vcpu"] = 0
        return str(case["id"])

    path, case_id = edited(certified, tmp_path, reroute)
    [problem] = verify(path)
    assert problem.startswith(f"{path}: case {case_id}: program differs from the spec's at steps/")
    assert problem.endswith("/vcpu: recorded 0, the spec gives 1")


def test_a_summary_that_does_not_count_the_cases_is_refused(
    certified: Path, tmp_path: Path
) -> None:
    def lie(document: Document) -> None:
        document["summary"]["total"] += 1

    path, _ = edited(certified, tmp_path, lie)
    total = len(genuine(certified)["cases"])
    assert verify(path) == [
        f"{path}: summary counts {total + 1} cases in all, the file has {total}"
    ]


def test_an_edit_the_digest_does_not_cover_is_named(certified: Path, tmp_path: Path) -> None:
    document = genuine(certified)
    document["run"]["date"] = "2020-01-01T00:00:00Z"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document))
    assert verify(path) == [f"{path}: digest mismatch: the file was changed after the run wrote it"]


def spec_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "spec"
    shutil.copytree(default_spec_dir(), copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return copy


def test_results_are_judged_under_the_spec_given_by_spec_dir(
    certified: Path, tmp_path: Path
) -> None:
    spec = spec_copy(tmp_path)
    shutil.copy(certified, tmp_path / "results.json")
    same = subprocess.run(
        [*KVM_FWSPEC, "--spec-dir", str(spec), "verify", "results.json"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert same.returncode == 0, same.stderr
    with (spec / "rules.yaml").open("a") as rules:
        rules.write("# a comment: the same rules, another file\n")
    other = subprocess.run(
        [*KVM_FWSPEC, "--spec-dir", str(spec), "verify", "results.json"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert other.returncode == 1 and other.stdout == ""
    [line] = other.stderr.splitlines()
    assert line.startswith(
        "kvm-fwspec: results.json: results are for another spec: spec/rules.yaml is "
    )


# -- files that are not results ------------------------------------------------------------------


# What the command line is given: each one line, the right exit, no traceback.
@pytest.mark.parametrize(
    ("name", "content", "code", "line"),
    [
        ("deep.json", b"[" * 100000, 1, "deep.json: not a results file: JSON nested too deeply to read"),
        ("latin1.json", '{"implementation": "Müller"}'.encode("latin-1"), 1,
         "latin1.json: not a results file: not UTF-8 text (byte 0xfc at offset 21)"),
        (None, None, 2, "missing.json: no such file"),
        ("folder", None, 2, "folder: is a folder, not a results file (the results are its results.json)"),
    ],
)  # fmt: skip
def test_what_is_not_results_is_one_line_and_the_right_exit(
    name: str | None, content: bytes | None, code: int, line: str, tmp_path: Path
) -> None:
    if name == "folder":
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder/results.json").write_text("{}")
    elif name is not None and content is not None:
        (tmp_path / name).write_bytes(content)
    result = run_verify(name or "missing.json", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (code, "", f"kvm-fwspec: {line}\n")


# The same path, in-process: each a problem of the file, in one line.
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"a":' * 200 + b"1" + b"}" * 200, "not a results file: JSON nested more than 32 levels deep"),
        (b'{"format": "kvm-fwspec-res', "not a results file: not JSON: line 1 column 12: "
         "Unterminated string starting at"),
        (b'{"digest": "a", "digest": "b"}', "not a results file: key 'digest' appears twice in one object"),
        (b'{"digest": NaN}', "not a results file: NaN is not a JSON number"),
        (b"{}", "not a results document: top: 'format' is a required property"),
    ],
)  # fmt: skip
def test_what_is_not_a_results_document_is_one_problem(
    content: bytes, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "results.json"
    path.write_bytes(content)
    assert verify(path) == [f"{path}: {problem}"]


def test_signers_that_are_missing_or_a_folder_are_one_line_exit_2(
    certified: Path, tmp_path: Path
) -> None:
    shutil.copy(certified, tmp_path / "results.json")
    for signers, said in (
        ("nobody", "kvm-fwspec: --signers nobody: no such file\n"),
        (".", "kvm-fwspec: --signers .: is a folder, not a file\n"),
    ):
        result = run_verify("results.json", "--signers", signers, cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (2, "", said)


# -- signatures ----------------------------------------------------------------------------------


def keygen(folder: Path, name: str, passphrase: str = "") -> Path:
    """An ed25519 key pair for `name`, as a user makes one."""
    folder.mkdir(exist_ok=True)
    key = folder / name.partition("@")[0]
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", str(key)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return key


def allowed_signers(path: Path, *entries: tuple[str, Path]) -> Path:
    """An OpenSSH allowed-signers file: each principal's key, for kvm-fwspec results only."""
    path.write_text(
        "".join(
            f'{who} namespaces="{NAMESPACE}" {key.with_suffix(".pub").read_text()}'
            for who, key in entries
        )
    )
    return path


@pytest.fixture
def signed(certified: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A results file signed by alice@example, and signers that list her."""
    results = tmp_path / "results.json"
    shutil.copy(certified, results)
    alice = keygen(tmp_path / "keys", "alice@example")
    assert sign_results(results, alice) == tmp_path / "results.json.sig"
    return results, allowed_signers(tmp_path / "signers", ("alice@example", alice))


@pytest.mark.tools
def test_a_signed_file_verifies_and_names_its_signer(signed: tuple[Path, Path]) -> None:
    results, _ = signed
    assert signature_path(results).read_text().startswith("-----BEGIN SSH SIGNATURE-----")
    result = run_verify("results.json", "--signers", "signers", cwd=results.parent)
    assert result.returncode == 0, result.stderr
    assert "0 error); signed by alice@example (checked, ED25519 SHA256:" in result.stdout
    unchecked = run_verify("results.json", cwd=results.parent)
    assert unchecked.returncode == 0, unchecked.stderr
    assert unchecked.stdout.endswith(
        "0 error); a results.json.sig is beside it, not checked: whether it is a signature, "
        "and whose, only --signers FILE says (authenticity not checked)\n"
    )


@pytest.mark.tools
def test_an_edited_signed_file_fails(signed: tuple[Path, Path]) -> None:
    """The renamed implementation of issue 14 again, now caught: the signature covers the
    claims re-judging cannot check."""
    results, signers = signed
    document = json.loads(results.read_text())
    document["run"]["implementation"] = "acme hypervisor 9"
    write(results, document)
    verification = verify_results(results, signers)
    assert verification.problems == (
        f"{results}: results.json.sig is not alice@example's signature of this file: the file "
        "was changed after it was signed, or it was signed for another use "
        "(ssh-keygen: Signature verification failed: incorrect signature)",
    )
    result = run_verify("results.json", "--signers", "signers", cwd=results.parent)
    assert (result.returncode, result.stdout) == (1, "")


@pytest.mark.tools
def test_an_unsigned_file_says_unsigned_and_fails_when_signers_are_required(
    certified: Path, tmp_path: Path
) -> None:
    shutil.copy(certified, tmp_path / "results.json")
    alice = keygen(tmp_path / "keys", "alice@example")
    allowed_signers(tmp_path / "signers", ("alice@example", alice))
    result = run_verify("results.json", "--signers", "signers", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "kvm-fwspec: results.json: unsigned: no results.json.sig beside it, so who produced it "
        "cannot be checked\n"
    )


@pytest.mark.tools
def test_a_signature_by_a_key_the_signers_do_not_list_fails(
    signed: tuple[Path, Path], tmp_path: Path
) -> None:
    results, _ = signed
    bob = keygen(tmp_path / "keys", "bob@example")
    others = allowed_signers(tmp_path / "others", ("bob@example", bob))
    [problem] = verify_results(results, others).problems
    assert problem.startswith(f"{results}: results.json.sig was made by a key (ED25519 SHA256:")
    assert problem.endswith(f") that {others} does not list")


@pytest.mark.tools
def test_a_signature_made_for_another_use_fails(certified: Path, tmp_path: Path) -> None:
    """Alice's git commit signature (namespace `git`) of the same bytes is not a signature of
    results."""
    results = tmp_path / "results.json"
    shutil.copy(certified, results)
    alice = keygen(tmp_path / "keys", "alice@example")
    signature = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", "git", "-f", str(alice)],
        input=results.read_bytes(), capture_output=True, check=True,
    ).stdout  # fmt: skip
    signature_path(results).write_bytes(signature)
    signers = allowed_signers(tmp_path / "signers", ("alice@example", alice))
    [problem] = verify_results(results, signers).problems
    assert problem.startswith(
        f"{results}: results.json.sig is not alice@example's signature of this file"
    )


@pytest.mark.tools
def test_signing_refuses_keys_it_cannot_use(certified: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    shutil.copy(certified, results)
    locked = keygen(tmp_path / "keys", "carol@example", passphrase="secret")
    cases = {
        locked: f"signing key {locked} is protected by a passphrase, which cannot be asked for "
        "here; sign with a key without one",
        tmp_path / "none": f"signing key {tmp_path / 'none'}: no such file",
        tmp_path / "keys": f"signing key {tmp_path / 'keys'}: is a folder, not a file",
    }
    for key, said in cases.items():
        with pytest.raises(UsageError) as refused:
            sign_results(results, key)
        assert str(refused.value) == said
    public = locked.with_suffix(".pub")  # the key's public half, given by mistake
    with pytest.raises(UsageError) as refused:
        sign_results(results, public)
    assert str(refused.value).startswith(f"signing key {public}: ssh-keygen cannot use it: ")
    assert not signature_path(results).exists()


def test_signing_without_ssh_keygen_is_one_line(
    certified: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results.json"
    shutil.copy(certified, results)
    (tmp_path / "key").write_text("a key file, never read: ssh-keygen is looked for first\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UsageError) as refused:
        sign_results(results, tmp_path / "key")
    assert str(refused.value) == (
        "ssh-keygen (OpenSSH) is not installed; it signs and checks results files "
        "(Debian: apt-get install openssh-client)"
    )


def test_a_consistent_file_of_a_failed_run_says_it_failed(tmp_path: Path) -> None:
    """verify vouches for the evidence, not for the implementation: a consistent file of a run
    that did not conform must say so, or a CI step running verify reads green (a trial did)."""
    agent = shlex.join([*KVM_FWSPEC, "agent", "--kernel", "6.12", "--host", "vulnerable"])
    certified = subprocess.run(
        [*KVM_FWSPEC, "certify", "-q", "--adapter", "agent", "--option", f"command={agent}",
         "--kernel", "6.12", "--report", str(tmp_path / "r")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert certified.returncode == 1, certified.stderr
    result = run_verify(str(tmp_path / "r" / "results.json"))
    assert result.returncode == 0, result.stderr
    assert "consistent: DOES NOT CONFORM (521 pass, 154 fail, 0 not-applicable, 0 error)" in (
        result.stdout
    )


def test_require_all_is_recorded_and_re_judged(tmp_path: Path) -> None:
    """Under --require-all a not-applicable case fails the run in the file too, and a file
    that drops the flag to claim conformance is caught."""
    report = tmp_path / "r"
    result = subprocess.run(
        [*KVM_FWSPEC, "certify", "-q", "--require-all", "--option", "without=guest-calls",
         "--report", str(report)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    document = json.loads((report / "results.json").read_text())
    assert document["run"]["require-all"] is True and document["summary"]["conforms"] is False
    assert "host=mitigated: no</h1>" in (report / "report.html").read_text()
    document["summary"]["conforms"] = True
    document["digest"] = canonical_digest(document)
    (report / "results.json").write_text(json.dumps(document))
    lied = run_verify(str(report / "results.json"))
    assert lied.returncode == 1
    assert "summary says conforms=true, the re-judged cases say false" in lied.stderr


def test_an_observation_outside_the_spec_s_shape_is_not_a_pass(
    certified: Path, tmp_path: Path
) -> None:
    """TRNG_RND32 of 33 bits answered with 2 bits in x2 (a KVM that forgot to clear the bits
    above the asked-for count): recorded pass, it earns fail, though only a shape is fixed."""

    def leak(document: Document) -> str:
        case = next(c for c in document["cases"] if c["id"].endswith(".guest-trng-rnd32"))
        assert case["expected"][2]["x2"] == {"bits": 1}  # the shape the record keeps
        case["observed"][2]["x2"] = 0x3
        return str(case["id"])

    path, case_id = edited(certified, tmp_path, leak)
    assert verify(path)[0] == (
        f"{path}: case {case_id}: recorded pass, the observations earn fail (step 2 (call): "
        "expected x0=0, x1=0x0, x2=any 1-bit value, x3=any 32-bit value, observed x0=0, "
        "x1=0x0, x2=0x3, x3=0xffffffff)"
    )


def test_an_observation_written_as_the_shape_itself_is_not_a_pass(
    certified: Path, tmp_path: Path
) -> None:
    """A results file whose observed x3 is the expected shape object, not a number (a trial
    found verify calling it consistent): only a number can match a shape."""

    def shaped(document: Document) -> str:
        case = next(c for c in document["cases"] if c["id"].endswith(".guest-trng-rnd32"))
        case["observed"][1]["x3"] = {"bits": 32}
        return str(case["id"])

    path, case_id = edited(certified, tmp_path, shaped)
    assert verify(path)[0].startswith(
        f"{path}: case {case_id}: recorded pass, the observations earn fail (step 1 (call): "
    )
