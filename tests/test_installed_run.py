"""What the guest does with the wheels the harness brings: a user's own commands, in order,
and only what pip installed on the installed command's path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvm_fwspec.conformance.guest import installed_run
from kvm_fwspec.conformance.lab.installed import runtime_requirements


def test_the_guest_runs_a_user_s_commands(tmp_path: Path) -> None:
    (tmp_path / "pip-26.3-py3-none-any.whl").write_bytes(b"")
    venv, install, certify, dump, fingerprint = installed_run.steps(tmp_path)
    assert venv[1:] == ["-m", "venv", "--without-pip", "/tmp/venv"]
    assert install[:3] == [
        "/tmp/venv/bin/python",
        f"{tmp_path}/pip-26.3-py3-none-any.whl/pip",
        "install",
    ]
    assert install[-1] == "kvm-fwspec" and "--no-index" in install
    assert certify[:8] == ["/tmp/venv/bin/kvm-fwspec", "certify", "--adapter", "kvm",
                           "--kernel", "auto", "--host", "auto"]  # fmt: skip
    assert "--require-all" in certify
    assert dump[1] == "dump" and fingerprint[1] == "fingerprint"


def test_a_failed_step_stops_the_run_and_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip failing (exit 2) ends the run there; its output goes back, and no results."""
    (tmp_path / "pip-26.3-py3-none-any.whl").write_bytes(b"")
    ran: list[list[str]] = []
    envs: list[dict[str, str]] = []

    class Finished:
        def __init__(self, command: list[str]) -> None:
            self.returncode = 2 if "install" in command else 0
            self.stdout, self.stderr = "", "ERROR: No matching distribution found for kvm-fwspec"

    def run(command: list[str], capture_output: bool, text: bool, env: dict[str, str]) -> Finished:
        ran.append(command)
        envs.append(env)
        return Finished(command)

    monkeypatch.setattr(installed_run.subprocess, "run", run)
    monkeypatch.setenv("PYTHONPATH", "/opt/kvm-fwspec")
    monkeypatch.setattr(installed_run, "REPORT", tmp_path / "report")
    outcome = installed_run.run(tmp_path)
    assert len(ran) == 2  # the venv, then pip: nothing after a failed install
    assert [s["exit"] for s in outcome["steps"]] == [0, 2]
    assert "No matching distribution" in outcome["steps"][1]["output"]
    assert outcome["results"] is None
    assert all("PYTHONPATH" not in env for env in envs)  # only what pip installed
    json.dumps(outcome)  # what goes back over the port


def test_the_wheels_are_the_runtime_dependencies_only() -> None:
    declared = runtime_requirements()
    names = {r.split(">")[0].split("=")[0].lower() for r in declared}
    assert {"pyyaml", "jsonschema", "jinja2", "lark", "pytest"} <= names
    assert not names & {"sphinx", "hypothesis", "mypy", "ruff", "ansible-core"}  # extras


def test_every_command_loads_on_a_host_without_openssl() -> None:
    """The lab's guests, like minimal arm64 images, have no libssl: `import ssl` fails there.
    Only TLS may need it; every command, and the help that loads them all, must not."""
    script = (
        "import sys; sys.modules['ssl'] = None\n"  # what `import ssl` does without libssl
        "from kvm_fwspec.conformance.commands.cli import build_parser, subcommands\n"
        "build_parser()\n"
        "for name in subcommands(): build_parser(name)\n"
        "print('loaded', len(subcommands()))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("loaded ")
