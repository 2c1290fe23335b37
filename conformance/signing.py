"""Who produced a results file: an OpenSSH signature beside it, checked against allowed signers.

A digest inside the file proves nothing about where it came from: anyone who edits the file can
recompute it. Re-judging the evidence (verify.py) catches a verdict that does not follow from
the observations, but not a false claim the spec cannot check (the implementation's name, its
capabilities, the observations themselves). Those need a signature by a key the reader trusts.

OpenSSH's `ssh-keygen -Y sign` is the tool: users already hold ed25519 keys and know how to
trust them, git signs commits with it, and its allowed-signers file says which key is whose.
The namespace binds a signature to this use, so a signed commit or file of another program
cannot pass as signed results. The signature covers the exact bytes of results.json.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kvm_fwspec.codegen.atomic import write_atomically
from kvm_fwspec.spec.errors import UsageError

NAMESPACE = "kvm-fwspec-results"
SIGNATURE_SUFFIX = ".sig"


def signature_path(results: Path) -> Path:
    """Where ssh-keygen -Y sign puts a file's signature: FILE.sig beside it."""
    return results.with_name(results.name + SIGNATURE_SUFFIX)


def _ssh_keygen() -> str:
    program = shutil.which("ssh-keygen")
    if program is None:
        raise UsageError(
            "ssh-keygen (OpenSSH) is not installed; it signs and checks results files "
            "(Debian: apt-get install openssh-client)"
        )
    return program


def _run(args: list[str], data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """ssh-keygen in its own session, so it has no terminal to prompt on (a passphrase
    prompt would otherwise read the results from standard input as the passphrase)."""
    return subprocess.run(
        [_ssh_keygen(), *args],
        input=data,
        capture_output=True,
        start_new_session=True,
        check=False,
    )


def _said(result: subprocess.CompletedProcess[bytes]) -> str:
    """ssh-keygen's own last word on a failure, as one line."""
    lines = [
        line.strip()
        for line in result.stderr.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.startswith("@")
    ]
    return lines[-1] if lines else f"exit status {result.returncode}"


def _readable_file(path: Path, what: str) -> None:
    if not path.exists():
        raise UsageError(f"{what} {path}: no such file")
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a folder, not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read it: {exc.strerror}") from None


def check_signing_key(key: Path) -> None:
    """A UsageError, in one line, unless `key` can sign here: ssh-keygen is installed and the
    key is an OpenSSH private key usable without a passphrase (a prompt cannot be answered
    here). certify calls it before the suite, so a wrong key costs a second, not a run."""
    _ssh_keygen()
    _readable_file(key, "signing key")
    unlocked = _run(["-y", "-P", "", "-f", os.fspath(key)])
    if unlocked.returncode != 0:
        said = _said(unlocked)
        if "passphrase" in said:
            raise UsageError(
                f"signing key {key} is protected by a passphrase, which cannot be asked for "
                "here; sign with a key without one"
            )
        raise UsageError(f"signing key {key}: ssh-keygen cannot use it: {said}")


def sign_results(results: Path, key: Path) -> Path:
    """Sign `results` with the OpenSSH private key `key`; write and return results.json.sig.

    The signature is written whole, replacing any older one, only once ssh-keygen has made it.
    A key that cannot sign (check_signing_key) is a UsageError."""
    check_signing_key(key)
    _readable_file(results, "results")
    # From standard input to standard output: ssh-keygen would ask before overwriting FILE.sig.
    signed = _run(["-Y", "sign", "-n", NAMESPACE, "-f", os.fspath(key)], results.read_bytes())
    if signed.returncode != 0 or not signed.stdout.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        raise UsageError(f"ssh-keygen could not sign {results} with {key}: {_said(signed)}")
    signature = signature_path(results)
    write_atomically(signature, signed.stdout)
    return signature


@dataclass(frozen=True, kw_only=True)
class SignatureCheck:
    """What is known about who produced a results file.

    state: `unsigned` (no signature beside it), `not-checked` (a signature, but no signers to
    check it against), `good` (made by `signer`'s key, over these exact bytes), or `bad`
    (`problem` says why)."""

    state: str
    signer: str = ""
    key: str = ""
    problem: str = ""

    @property
    def summary(self) -> str:
        """The part of verify's verdict line that says what was checked about authenticity."""
        if self.state == "good":
            return f"signed by {self.signer} (checked, {self.key})"
        if self.state == "not-checked":
            return (
                "a results.json.sig is beside it, not checked: whether it is a signature, and "
                "whose, only --signers FILE says (authenticity not checked)"
            )
        if self.state == "unsigned":
            return "unsigned (authenticity not checked)"
        return f"bad signature: {self.problem}"


def require_signers(signers: Path) -> None:
    """A UsageError unless `signers` is a file that can be read."""
    _readable_file(signers, "--signers")


_GOOD = re.compile(r"with (\S+) key (\S+)")


def check_signature(results: Path, signers: Path | None) -> SignatureCheck:
    """Whether results.json.sig is a good signature of `results` by a key `signers` (an OpenSSH
    allowed-signers file) lists, and by whom. The signer need not be named: the signers file
    says which principals hold the key that signed (ssh-keygen -Y find-principals), and each
    is tried in turn, so a principal's own restrictions (namespaces=, valid-before=) apply."""
    signature = signature_path(results)
    if signers is not None:
        require_signers(signers)
    if not signature.exists():
        return SignatureCheck(state="unsigned")
    if signers is None:
        return SignatureCheck(state="not-checked")
    _readable_file(signature, "signature")
    data = results.read_bytes()
    found = _run(["-Y", "find-principals", "-s", os.fspath(signature), "-f", os.fspath(signers)])
    principals = found.stdout.decode("utf-8", "replace").split()
    if found.returncode != 0 or not principals:
        return SignatureCheck(state="bad", problem=_unknown_signer(signature, signers, data))
    said = ""
    for principal in principals:
        checked = _run(
            ["-Y", "verify", "-f", os.fspath(signers), "-I", principal, "-n", NAMESPACE,
             "-s", os.fspath(signature)],
            data,
        )  # fmt: skip
        if checked.returncode == 0:
            good = _GOOD.search(checked.stdout.decode("utf-8", "replace"))
            key = f"{good.group(1)} {good.group(2)}" if good else "key checked"
            return SignatureCheck(state="good", signer=principal, key=key)
        said = _said(checked)
    return SignatureCheck(
        state="bad",
        problem=f"{signature.name} is not {' or '.join(principals)}'s signature of this file: "
        f"the file was changed after it was signed, or it was signed for another use "
        f"(ssh-keygen: {said})",
    )


def _unknown_signer(signature: Path, signers: Path, data: bytes) -> str:
    """Why no principal matched: a sound signature by a key the signers file does not list,
    or no valid signature of this file at all."""
    alone = _run(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", os.fspath(signature)], data)
    if alone.returncode == 0:
        good = _GOOD.search(alone.stdout.decode("utf-8", "replace"))
        key = f" ({good.group(1)} {good.group(2)})" if good else ""
        return f"{signature.name} was made by a key{key} that {signers} does not list"
    return (
        f"{signature.name} is not a good kvm-fwspec signature of this file "
        f"(ssh-keygen: {_said(alone)})"
    )
