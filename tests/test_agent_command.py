"""`kvm-fwspec agent` refuses what it cannot serve in one line and exit status 2, before it
serves anything: no traceback, nothing listening."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kvm_fwspec.conformance.guest.agent import KvmUnavailable, check_kvm_host
from tests.checkout import KVM_FWSPEC

MACHINE = os.uname().machine

WRONG = [
    (["--listen", ":notaport"], "--listen :notaport: the port 'notaport' is not a number"),
    (["--listen", ":99999"], "--listen :99999: port 99999 is beyond 65535"),
    (["--listen", "7777"], "--listen 7777: need HOST:PORT, such as 127.0.0.1:7777"),
    (["--listen", "nosuch.invalid:7777", "--token-file", "{token}"], "cannot listen on nosuch.invalid:7777: "),
    (["--token-file", "/missing/token"], "--token-file /missing/token: No such file or directory"),
    (["--token-file", "{empty}"], "--token-file {empty}: the file is empty"),
    (["--listen", ":0", "--tls-cert", "/missing/a.pem"], "--tls-cert /missing/a.pem: No such file or directory"),
    (["--listen", "127.0.0.1:0", "--tls-cert", "{token}"], "--tls-cert {token}: "),
    (["--tls-cert", "{token}"], "--tls-cert needs --listen: TLS is for TCP, not stdin/stdout"),
    (["--tls-key", "{token}"], "--tls-key needs --tls-cert"),
    (["--max-rate", "0"], "--max-rate 0: need a number of requests per second above 0"),
    (["--max-rate", "-2"], "--max-rate -2: need a number of requests per second above 0"),
    (["--max-rate", "nan"], "--max-rate nan: need a number of requests per second above 0"),
    (["--max-message", "0"], "--max-message 0: need a number of bytes from 1 to 1073741824 (1 GiB)"),
    (["--max-message", "9" * 30], f"--max-message {'9' * 30}: need a number of bytes from 1 to"),
    (["--impl", "nope"], "no agent implementation 'nope'; have: kvm, reference"),
    (["--impl", "kvm", "--kernel", "6.1"], "--impl kvm serves this host's own KVM, whose kernel"),
]  # fmt: skip
if MACHINE not in ("aarch64", "arm64"):
    WRONG.append(
        (["--impl", "kvm"], f"real KVM needs an arm64 host, and this machine is {MACHINE}: ")
    )


@pytest.mark.parametrize(("arguments", "message"), WRONG, ids=[" ".join(a) for a, _ in WRONG])
def test_a_bad_agent_command_is_one_line(
    arguments: list[str], message: str, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("a token\n")
    (tmp_path / "empty").write_text("\n")
    names = {"{token}": str(tmp_path / "token"), "{empty}": str(tmp_path / "empty")}
    for name, path in names.items():
        arguments = [a.replace(name, path) for a in arguments]
        message = message.replace(name, path)
    env = {k: v for k, v in os.environ.items() if k != "KVM_FWSPEC_AGENT_TOKEN"}
    result = subprocess.run(
        [*KVM_FWSPEC, "agent", *arguments],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "", "it served before refusing"
    assert result.stderr.startswith(f"kvm-fwspec: {message}"), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_real_kvm_needs_an_arm64_machine() -> None:
    with pytest.raises(KvmUnavailable, match=r"needs an arm64 host, and this machine is x86_64"):
        check_kvm_host("/dev/kvm", "x86_64")


def test_real_kvm_needs_its_device(tmp_path: Path) -> None:
    with pytest.raises(KvmUnavailable, match=r"/missing/kvm does not exist: KVM is not enabled"):
        check_kvm_host("/missing/kvm", "aarch64")
    folder = tmp_path / "kvm"
    folder.mkdir()
    with pytest.raises(KvmUnavailable, match=r"cannot open .*/kvm: Is a directory"):
        check_kvm_host(str(folder), "aarch64")
