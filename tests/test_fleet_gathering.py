"""Gathering fingerprints with the tools operators already run: the Ansible playbook and
ad-hoc lines of docs/fleet-gathering.rst, run with ansible-core against localhost, bring home
fingerprints that validate and carry each host's inventory name, and fail with kvm-fwspec's
own line where a host cannot be fingerprinted; the NFD DaemonSet is a DaemonSet for arm64
nodes whose command the real `kvm-fwspec fingerprint` parser accepts."""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kvm_fwspec.conformance.adapters import parse_options
from kvm_fwspec.conformance.analyses.fingerprint import SCHEMA
from kvm_fwspec.conformance.commands import agent, fingerprint
from tests.checkout import KVM_FWSPEC, ROOT

PLAYBOOK = ROOT / "docs" / "fleet" / "gather-fingerprints.yml"
DAEMONSET = ROOT / "docs" / "fleet" / "nfd-daemonset.yaml"
PAGE = ROOT / "docs" / "fleet-gathering.rst"
NFD_FEATURES = "/etc/kubernetes/node-feature-discovery/features.d"
REFERENCE_ARGS = "--adapter reference --kernel 6.1"
# What the page and the playbook run on a real host; the ad-hoc test swaps it for the reference.
REAL_HOST_ARGS = '--adapter agent --option "command=kvm-fwspec agent --impl kvm" --host auto --kernel "$(uname -r)"'
UNKNOWN_KERNEL_LINE = "kvm-fwspec: kernel 9.99 is not a release the spec describes"


# --- the DaemonSet (fast tier) -------------------------------------------------------------


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """The command's own arguments, raising instead of exiting (exit_on_error does not cover
    every error argparse reports)."""

    def error(self, message: str) -> Any:
        raise _Refused(message)


def parsed(add_arguments: Any, argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="kvm-fwspec")
    add_arguments(parser)
    return parser.parse_args(argv)


def fingerprint_pod(manifest: dict[str, Any]) -> tuple[dict[str, Any], argparse.Namespace]:
    """The DaemonSet's pod spec and its fingerprint invocation, parsed by the real
    `kvm-fwspec fingerprint` arguments; AssertionError or _Refused says what is wrong."""
    assert manifest["apiVersion"] == "apps/v1" and manifest["kind"] == "DaemonSet"
    assert manifest["metadata"]["name"] and manifest["metadata"]["namespace"]
    spec = manifest["spec"]
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert pod["spec"]["containers"], "a DaemonSet's pod needs a container"
    (init,) = pod["spec"]["initContainers"]
    words = init["command"]
    assert words[:2] == ["kvm-fwspec", "fingerprint"], words[:2]
    return pod["spec"], parsed(fingerprint.add_arguments, words[2:])


def check_daemonset(manifest: dict[str, Any]) -> None:
    pod, args = fingerprint_pod(manifest)
    assert args.format == "nfd"
    assert args.adapter == "agent" and args.host == "auto"
    assert args.kernel == "auto", "no shell runs the command: only --kernel auto names the node's"
    served = parsed(agent.add_arguments, shlex.split(parse_options(args.option)["command"])[2:])
    assert served.impl == "kvm" and served.impl in agent.IMPLEMENTATIONS
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    (init,) = pod["initContainers"]
    mounted = {m["mountPath"]: host_paths.get(m["name"]) for m in init["volumeMounts"]}
    assert mounted.get("/dev/kvm") == "/dev/kvm", mounted
    assert mounted.get(str(args.output.parent)) == NFD_FEATURES, (args.output, mounted)


def daemonset() -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(DAEMONSET.read_text())
    return manifest


def test_the_daemonset_writes_nfd_labels_of_arm64_nodes_from_their_kvm() -> None:
    check_daemonset(daemonset())


def _renamed_option(manifest: dict[str, Any]) -> None:
    init = manifest["spec"]["template"]["spec"]["initContainers"][0]
    init["command"][init["command"].index("--format")] = "--fmt"


def _json_format(manifest: dict[str, Any]) -> None:
    init = manifest["spec"]["template"]["spec"]["initContainers"][0]
    init["command"][init["command"].index("nfd")] = "json"


def _amd64_nodes(manifest: dict[str, Any]) -> None:
    manifest["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/arch": "amd64"}


def _other_folder(manifest: dict[str, Any]) -> None:
    for volume in manifest["spec"]["template"]["spec"]["volumes"]:
        if volume["name"] == "nfd-features":
            volume["hostPath"]["path"] = "/etc/kubernetes/node-feature-discovery/source.d"


def _no_kvm(manifest: dict[str, Any]) -> None:
    init = manifest["spec"]["template"]["spec"]["initContainers"][0]
    init["volumeMounts"] = [m for m in init["volumeMounts"] if m["mountPath"] != "/dev/kvm"]


def _reference_agent(manifest: dict[str, Any]) -> None:
    init = manifest["spec"]["template"]["spec"]["initContainers"][0]
    at = init["command"].index("command=kvm-fwspec agent --impl kvm")
    init["command"][at] = "command=kvm-fwspec agent --impl reference"


def _selector_not_in_template(manifest: dict[str, Any]) -> None:
    manifest["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "other"}


MISTAKES = {
    "amd64-nodes": _amd64_nodes,
    "json-format": _json_format,
    "no-dev-kvm": _no_kvm,
    "other-host-folder": _other_folder,
    "reference-agent": _reference_agent,
    "renamed-option": _renamed_option,
    "selector-not-in-template": _selector_not_in_template,
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_daemonset_with_a_realistic_mistake_is_refused(mistake: str) -> None:
    manifest = copy.deepcopy(daemonset())
    MISTAKES[mistake](manifest)
    with pytest.raises((AssertionError, _Refused)):
        check_daemonset(manifest)


def test_a_renamed_option_is_refused_by_the_commands_own_parser() -> None:
    """Not by a list kept here: the check reads fingerprint.add_arguments itself."""
    manifest = copy.deepcopy(daemonset())
    _renamed_option(manifest)
    with pytest.raises(_Refused, match="unrecognized arguments: --fmt nfd"):
        fingerprint_pod(manifest)


# --- the playbook and the ad-hoc lines, run by ansible-core (tools tier) --------------------


def ansible_env(tmp_path: Path) -> dict[str, str]:
    """Hermetic: no ansible.cfg or ANSIBLE_* of the caller, temporary folders under tmp_path,
    this interpreter on the 'remote' side (CI runs as root, with no ssh)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(tmp_path / "no-ansible.cfg"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        TMPDIR=str(tmp_path / "host-tmp"),  # where the playbook's private folder is made
    )
    (tmp_path / "host-tmp").mkdir(exist_ok=True)
    return env


def ansible(tool: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`ansible-playbook` or `ansible` of this interpreter's ansible-core (test extra)."""
    return subprocess.run(
        [sys.executable, "-m", f"ansible.cli.{tool}", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ansible_env(tmp_path),
    )


def inventory(tmp_path: Path, hosts: dict[str, str]) -> Path:
    """Hosts that are all this machine (local connection), each with its own inventory name
    and, where given, its own fingerprint arguments."""
    lines = ["[kvm_hosts]"]
    for name, args in hosts.items():
        variables = {"ansible_connection": "local"}
        if args:
            variables["fwspec_fingerprint_args"] = args
        lines.append(" ".join([name, *(f"{k}={shlex.quote(v)}" for k, v in variables.items())]))
    path = tmp_path / "inventory.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def playbook(
    tmp_path: Path, hosts: dict[str, str], **extra: str
) -> subprocess.CompletedProcess[str]:
    variables = {
        "fwspec_command": shlex.join(KVM_FWSPEC),
        "fwspec_fingerprints_dir": "fingerprints",
    }
    variables.update(extra)
    inv = inventory(tmp_path, hosts)
    return ansible(
        "playbook", ["-i", str(inv), str(PLAYBOOK), "-e", json.dumps(variables)], tmp_path
    )


def valid_fingerprint(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    return document


def gathered(tmp_path: Path) -> list[str]:
    folder = tmp_path / "fingerprints"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.tools
def test_the_playbook_brings_home_one_valid_fingerprint_per_host(tmp_path: Path) -> None:
    result = playbook(
        tmp_path, {"node-a": "", "node-b": ""}, fwspec_fingerprint_args=REFERENCE_ARGS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert gathered(tmp_path) == ["node-a.json", "node-b.json"]
    for name in ("node-a", "node-b"):
        document = valid_fingerprint(tmp_path / "fingerprints" / f"{name}.json")
        assert document["host"] == name  # the inventory's name, not this machine's
        assert document["implementation"] == "kvm-fwspec reference"
        assert document["kernel"]["judged-as"] == "6.1"
    assert not list((tmp_path / "host-tmp").iterdir()), "the private folder is left behind"


@pytest.mark.tools
def test_a_host_that_cannot_be_fingerprinted_fails_with_kvm_fwspecs_line(tmp_path: Path) -> None:
    """node-b's fingerprint command fails (a kernel the spec does not know): the play fails,
    says kvm-fwspec's own line for node-b, and node-a's file still arrives."""
    result = playbook(
        tmp_path, {"node-a": REFERENCE_ARGS, "node-b": "--adapter reference --kernel 9.99"}
    )
    assert result.returncode != 0, result.stdout
    failed = [line for line in result.stdout.splitlines() if line.startswith("fatal: [node-b]")]
    assert len(failed) == 1 and UNKNOWN_KERNEL_LINE in failed[0], result.stdout
    assert "fatal: [node-a]" not in result.stdout
    assert gathered(tmp_path) == ["node-a.json"]


@pytest.mark.tools
def test_a_host_without_kvm_fwspec_fails_naming_the_command(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-bin" / "kvm-fwspec"
    result = playbook(
        tmp_path,
        {"node-a": ""},
        fwspec_command=str(missing),
        fwspec_fingerprint_args=REFERENCE_ARGS,
    )
    assert result.returncode != 0, result.stdout
    assert f"could not run {missing} fingerprint {REFERENCE_ARGS}" in result.stdout, result.stdout
    assert gathered(tmp_path) == []


@pytest.mark.tools
def test_the_default_arguments_take_the_fingerprint_from_this_hosts_kvm(tmp_path: Path) -> None:
    """The playbook's real-host default, run here: the `kvm` agent starts, judged as this
    machine's `uname -r`. This project's CI is x86_64, where the agent refuses in one line
    (it serves arm64 KVM only); an arm64 machine with /dev/kvm gets its fingerprint."""
    result = playbook(tmp_path, {"node-a": ""})
    if os.uname().machine == "aarch64":
        assert result.returncode == 0, result.stdout + result.stderr
        document = valid_fingerprint(tmp_path / "fingerprints" / "node-a.json")
        assert document["implementation"] == f"Linux KVM {os.uname().release}"
    else:
        assert result.returncode != 0, result.stdout
        assert "kvm-fwspec: real KVM needs an arm64 host" in result.stdout, result.stdout
        assert gathered(tmp_path) == []


def ad_hoc_lines() -> list[list[str]]:
    """The page's ad-hoc commands, as argv."""
    prompt = "   $ ansible kvm_hosts "
    lines = [
        line[len("   $ ") :] for line in PAGE.read_text().splitlines() if line.startswith(prompt)
    ]
    assert len(lines) == 2, lines
    return [shlex.split(line) for line in lines]


@pytest.mark.tools
def test_the_pages_ad_hoc_lines_gather_the_same_fingerprint(tmp_path: Path) -> None:
    run_line, fetch_line = ad_hoc_lines()
    assert run_line[:4] == ["ansible", "kvm_hosts", "-m", "ansible.builtin.shell"]
    assert fetch_line[:4] == ["ansible", "kvm_hosts", "-m", "ansible.builtin.fetch"]
    remote = tmp_path / "remote"
    remote.mkdir()
    command = run_line[5]
    assert REAL_HOST_ARGS in command and "/tmp/kvm-fwspec-fingerprint.json" in command
    command = command.replace(REAL_HOST_ARGS, REFERENCE_ARGS)
    command = command.replace("kvm-fwspec fingerprint", f"{shlex.join(KVM_FWSPEC)} fingerprint")
    command = command.replace("/tmp/", f"{remote}/")
    fetch = fetch_line[5].replace("src=/tmp/", f"src={remote}/")
    inv = str(inventory(tmp_path, {"node-a": ""}))
    for module, args in ((run_line[3], command), (fetch_line[3], fetch)):
        result = ansible("adhoc", ["kvm_hosts", "-i", inv, "-m", module, "-a", args], tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
    assert gathered(tmp_path) == ["node-a.json"]
    assert valid_fingerprint(tmp_path / "fingerprints" / "node-a.json")["host"] == "node-a"
