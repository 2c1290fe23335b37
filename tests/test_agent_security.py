"""An agent is a privileged service: it refuses clients without the token, drops oversized
messages without holding them in memory, stays on loopback unless given a token, speaks
mutual TLS, and keeps serving its authenticated client through all of it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvm_fwspec.conformance.adapters.agent import AgentAdapter, AgentError, create
from kvm_fwspec.conformance.cases import build_cases
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.conformance.verdicts import certify_cases
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC

SPEC = load_spec()
PROFILE = resolve_profile(SPEC, "6.12", "mitigated")
TOKEN = "correct horse battery staple"


@contextlib.contextmanager
def agent(*extra: str, token: str | None = TOKEN) -> Iterator[tuple[subprocess.Popen[str], int]]:
    env = os.environ | ({"KVM_FWSPEC_AGENT_TOKEN": token} if token else {})
    process = subprocess.Popen(
        [*KVM_FWSPEC, "agent", "--kernel", "6.12", "--host", "mitigated",
         "--listen", "127.0.0.1:0", "--max-message", "1000000", *extra],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("listening on "), line
    try:
        yield process, int(line.strip().rsplit(":", 1)[1])
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def raw_exchange(port: int, payload: bytes) -> list[dict[str, object]]:
    """What the agent answers a client that sends `payload`, until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def verdicts(adapter: AgentAdapter) -> dict[str, str]:
    _, results = certify_cases(adapter, build_cases(SPEC, PROFILE)[:40])
    return {r.id: r.outcome for r in results}


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_intruders_are_refused_and_the_client_keeps_its_service() -> None:
    with agent() as (process, port):
        client = create(PROFILE, {"address": f"127.0.0.1:{port}", "token": TOKEN, "timeout": "10"})
        before = verdicts(client)
        assert set(before.values()) == {"pass"}

        hello = {"id": 1, "method": "hello", "params": {"protocol": "kvm-fwspec-agent/1"}}
        run = {"id": 1, "method": "run", "params": {"programs": [{"vcpus": 1, "steps": []}]}}
        assert raw_exchange(port, json.dumps(hello).encode() + b"\n") == [
            {"id": 1, "error": {"message": "authentication required: send hello with the token"}}
        ]
        assert raw_exchange(port, json.dumps(run).encode() + b"\n")[0]["error"]
        wrong = {**hello, "params": {"protocol": "kvm-fwspec-agent/1", "token": "guess"}}
        assert raw_exchange(port, json.dumps(wrong).encode() + b"\n") == [
            {"id": 1, "error": {"message": "wrong token"}}
        ]

        rss = rss_kib(process.pid)
        answers = raw_exchange(port, b"[" * (64 << 20))  # 64 MiB, no newline
        assert answers == [
            {
                "id": None,
                "error": {"message": "message longer than 1000000 bytes; closing the connection"},
            }
        ]
        assert rss_kib(process.pid) - rss < 16 << 10  # KiB: it never held the 64 MiB

        assert verdicts(client) == before
        client.close()


def test_the_token_gates_the_client_adapter_too() -> None:
    with agent() as (_, port):
        without = create(PROFILE, {"address": f"127.0.0.1:{port}", "timeout": "10"})
        with pytest.raises(AgentError, match="authentication required"):
            without.capabilities()
        without.close()


def test_an_exposed_listener_needs_a_token() -> None:
    result = subprocess.run(
        [*KVM_FWSPEC, "agent", "--listen", "0.0.0.0:0"],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "KVM_FWSPEC_AGENT_TOKEN"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("kvm-fwspec: listening on 0.0.0.0 exposes the host's KVM;")
    assert len(result.stderr.splitlines()) == 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a certificate for the agent (127.0.0.1) and one for the client, by openssl."""
    root = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *new_key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=kvm-fwspec test CA")  # fmt: skip
    for name in ("agent", "client"):
        openssl(
            "req", *new_key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"
        )
        (root / f"{name}.ext").write_text(
            "subjectAltName=IP:127.0.0.1\n" if name == "agent" else "extendedKeyUsage=clientAuth\n"
        )
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip
    return root


def test_mutual_tls(pki: Path) -> None:
    tls = ["--tls-cert", str(pki / "agent.pem"), "--tls-key", str(pki / "agent.key"),
           "--tls-client-ca", str(pki / "ca.pem")]  # fmt: skip
    with agent(*tls) as (_, port):
        options = {"address": f"127.0.0.1:{port}", "token": TOKEN, "timeout": "10",
                   "tls-ca": str(pki / "ca.pem")}  # fmt: skip
        client = create(PROFILE, options | {"tls-cert": str(pki / "client.pem"),
                                            "tls-key": str(pki / "client.key")})  # fmt: skip
        assert set(verdicts(client).values()) == {"pass"}
        client.close()
        with pytest.raises((ssl.SSLError, OSError, AgentError)):
            anonymous = create(PROFILE, options)  # no client certificate
            anonymous.capabilities()
