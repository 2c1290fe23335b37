"""The agent adapter checks every option when it is created, before any agent starts, and
refuses a wrong one in one line naming it; `certify` turns that into exit status 2 with no
pytest output and no report."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvm_fwspec.conformance.adapters.agent import create
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC, ROOT

PROFILE = resolve_profile(load_spec(), "6.12", "mitigated")

WRONG = [
    ({"timout": "5"}, "the agent adapter has no option 'timout'; did you mean 'timeout'?"),
    ({"timeout": "abc"}, "option timeout=abc: need a finite number of seconds above 0"),
    ({"timeout": "0"}, "option timeout=0: need a finite number of seconds above 0"),
    ({"timeout": "-3"}, "option timeout=-3: need a finite number of seconds above 0"),
    ({"timeout": "inf"}, "option timeout=inf: need a finite number of seconds above 0"),
    ({"batch": "0"}, "option batch=0: need a whole number of at least 1"),
    ({"batch": "-5"}, "option batch=-5: need a whole number of at least 1"),
    ({"batch": "2.5"}, "option batch=2.5: need a whole number of at least 1"),
    ({"max-message": "xyz"}, "option max-message=xyz: need a whole number of at least 1"),
    ({"command": ""}, "option command= is empty: give the agent's command line"),
    ({"command": "  "}, "option command= is empty: give the agent's command line"),
    ({"command": "agent 'unbalanced"}, "option command=agent 'unbalanced: no closing quotation"),
    ({"command": "/nonexistent/agent"}, "option command=: the program /nonexistent/agent does not exist"),
    ({"command": "no-such-agent-program --x"}, "option command=: no program 'no-such-agent-program' on PATH"),
    ({"command": "{text}"}, "option command=: the program {text} is not executable"),
    ({"command": "/tmp"}, "option command=: the program /tmp is a directory"),
    ({"command": "true", "address": "127.0.0.1:7777"}, "give the agent adapter command= or address=, not both"),
    ({}, "the agent adapter needs --option command=... or --option address=HOST:PORT"),
    ({"address": "host"}, "option address=host: need HOST:PORT, such as 127.0.0.1:7777"),
    ({"address": ":7777"}, "option address=:7777: need HOST:PORT, such as 127.0.0.1:7777"),
    ({"address": "host:http"}, "option address=host:http: the port 'http' is not a number from 1 to 65535"),
    ({"address": "host:99999"}, "option address=host:99999: the port '99999' is not a number from 1 to 65535"),
    ({"address": "host:0"}, "option address=host:0: the port '0' is not a number from 1 to 65535"),
    ({"address": "h:1", "tls-ca": "/missing/ca.pem"}, "option tls-ca=/missing/ca.pem: no such file"),
    ({"address": "h:1", "tls-cert": "{text}"}, "option tls-cert needs tls-ca, the CA that signed the agent's"),
    ({"address": "h:1", "tls-ca": "{text}"}, "option tls-ca={text}: not a PEM file TLS can use"),
    ({"command": "true", "tls-ca": "{text}"}, "option tls-ca is for address=: an agent on stdin/stdout has no"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "message"), WRONG, ids=[m for _, m in WRONG])
def test_a_wrong_option_is_one_line_naming_it_and_starts_nothing(
    options: dict[str, str], message: str, tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    agent = (
        f"{sys.executable} -m tests.faulty_agent v1-only {tmp_path / 'fired'} "
        f"--kernel 6.12 --host mitigated --starts {starts}"
    )
    text = tmp_path / "notes.txt"  # a file that is neither a program nor a certificate
    text.write_text("not a program\n")
    text.chmod(0o644)
    options = {k: v.replace("{text}", str(text)) for k, v in options.items()}
    message = message.replace("{text}", str(text))
    # Every wrong option but those about command= itself comes with a good agent command, so
    # an agent started anyway would show in `starts`.
    if "command" not in options and "address" not in options and options:
        options = {**options, "command": agent}
    with pytest.raises(UsageError) as raised:
        create(PROFILE, options)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
    assert not starts.exists()


def test_good_options_start_no_agent_until_the_first_request(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    agent = (
        f"{sys.executable} -m tests.faulty_agent v1-only {tmp_path / 'fired'} "
        f"--kernel 6.12 --host mitigated --starts {starts}"
    )
    adapter = create(PROFILE, {"command": agent, "timeout": "30", "batch": "7"})
    assert not starts.exists()
    try:
        assert adapter.capabilities().kernel == "6.12"
        assert len(starts.read_text().splitlines()) == 1
    finally:
        adapter.close()


def test_nothing_listening_at_the_address_is_one_line() -> None:
    with socket_without_listener() as port:
        adapter = create(PROFILE, {"address": f"127.0.0.1:{port}"})
        with pytest.raises(Exception, match=r"cannot start or reach the agent: .*refused"):
            adapter.capabilities()
        adapter.close()


@contextlib.contextmanager
def socket_without_listener() -> Iterator[int]:
    """A loopback port bound but not listening: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


CLI_WRONG = [
    ("timout=5", "did you mean 'timeout'?"),
    ("timeout=abc", "option timeout=abc"),
    ("batch=0", "option batch=0"),
    ("command=/nonexistent/agent", "/nonexistent/agent does not exist"),
    ("command=agent 'x", "no closing quotation"),
]


@pytest.mark.parametrize(("option", "message"), CLI_WRONG, ids=[o for o, _ in CLI_WRONG])
def test_certify_refuses_a_wrong_option_in_one_line(
    option: str, message: str, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    extra = [] if option.startswith("command=") else ["--option", "command=true"]
    result = subprocess.run(
        [*KVM_FWSPEC, "certify", "--adapter", "agent", "--kernel", "6.12", "--option", option,
         *extra, "--report", str(report)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not report.exists()
