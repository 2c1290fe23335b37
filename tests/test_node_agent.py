"""The agent protocol document is enough to write an agent in another language.

`tests/agents/node/fwspec-agent.js` was written from `docs/agent-protocol.md` alone: a Node.js
agent speaking kvm-fwspec-agent/2 (hex strings) to the suite and version 1 (JSON integers) to
a reference agent it starts as its implementation, so every 64-bit number crosses JavaScript's
2^53 limit both ways. It must certify as a conforming implementation on several kernels; its
`--wrong` variant, which answers a GET of SMCCC_ARCH_WORKAROUND_1 with 0, must not, and
`replay` must show the differing step.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.checkout import KVM_FWSPEC, ROOT

pytestmark = pytest.mark.tools

AGENT = ROOT / "tests" / "agents" / "node" / "fwspec-agent.js"
# A bound against a hung process, never a pass/fail criterion.
SAFETY_TIMEOUT = 600

PSCI_VERSION = 0x6030000000140000
WORKAROUND_1 = 0x6030000000140001
BMAP_STD = 0x6030000000160000


def node() -> str:
    found = shutil.which("node") or ("/usr/bin/node" if Path("/usr/bin/node").exists() else None)
    if found is None:
        pytest.fail("node is not installed (Debian package nodejs)")
    return found


def agent_argv(kernel: str, *extra: str, child: list[str] | None = None) -> list[str]:
    """The Node agent, starting this checkout's `kvm-fwspec agent` (not whatever is on PATH)."""
    return [
        node(),
        str(AGENT),
        "--kernel",
        kernel,
        "--host",
        "mitigated",
        "--child",
        shlex.join(KVM_FWSPEC if child is None else child),
        *extra,
    ]


def command_option(kernel: str, *extra: str) -> str:
    return "command=" + shlex.join(agent_argv(kernel, *extra))


def kvm_fwspec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVM_FWSPEC, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT,
        check=False,
    )


def certify(kernel: str, report: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return kvm_fwspec(
        "certify",
        "-q",
        "--adapter",
        "agent",
        "--kernel",
        kernel,
        "--option",
        command_option(kernel, *extra),
        "--report",
        str(report),
    )


def converse(argv: list[str], requests: list[str]) -> tuple[list[Any], str, int]:
    """Send these lines, close stdin, and read every answer (the agent exits at end of input)."""
    done = subprocess.run(
        argv,
        input="".join(line + "\n" for line in requests),
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT,
        check=False,
    )
    # Python's json keeps integers exact, so 2^53 and above are checked as the agent wrote them.
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr, done.returncode


def request(id_: int, method: str, params: dict[str, Any]) -> str:
    return json.dumps({"id": id_, "method": method, "params": params}, separators=(",", ":"))


@pytest.mark.parametrize("kernel", ["5.10.y", "6.12", "7.2"])
def test_node_agent_conforms(kernel: str, tmp_path: Path) -> None:
    assert_conforms(kernel, tmp_path / "report")


def test_node_agent_conforms_in_version_1(tmp_path: Path) -> None:
    """Answering every hello with /1, as a pre-version-2 agent does, makes the suite speak
    version 1: the JSON-integer path of the same agent conforms too."""
    assert_conforms("6.12", tmp_path / "report", "--only-v1")


def assert_conforms(kernel: str, report: Path, *extra: str) -> None:
    done = certify(kernel, report, *extra)
    verdict = done.stdout + done.stderr
    assert done.returncode == 0, verdict
    assert "CONFORMS" in verdict and "DOES NOT CONFORM" not in verdict, verdict
    assert " 0 fail, " in verdict and " 0 error" in verdict, verdict
    assert "fwspec-agent.js proxy" in verdict, verdict
    checked = kvm_fwspec("verify", str(report / "results.json"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_wrong_node_agent_fails_and_replays(tmp_path: Path) -> None:
    report = tmp_path / "report"
    done = certify("6.12", report, "--wrong")
    verdict = done.stdout + done.stderr
    assert done.returncode == 1, verdict
    assert "DOES NOT CONFORM" in verdict, verdict
    results = json.loads((report / "results.json").read_text())
    failing = sorted(case["id"] for case in results["cases"] if case["outcome"] == "fail")
    assert failing, "the --wrong agent failed no case"
    # Only the corrupted register fails: every failing case reads SMCCC_ARCH_WORKAROUND_1.
    assert all(case_id.startswith("smccc-arch-workaround-1.") for case_id in failing), failing
    case_id = failing[0]

    replayed = kvm_fwspec(
        "replay",
        str(report / "results.json"),
        case_id,
        "--option",
        command_option("6.12", "--wrong"),
    )
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    differing = [line for line in replayed.stdout.splitlines() if "!= step" in line]
    assert differing, replayed.stdout + replayed.stderr
    assert "observed value=0x0" in differing[0], differing

    fixed = kvm_fwspec(
        "replay", str(report / "results.json"), case_id, "--option", command_option("6.12")
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "!= step" not in fixed.stdout, fixed.stdout


def programs(numbers: Any) -> list[dict[str, Any]]:
    """SET then GET PSCI_VERSION, list the PSCI/SMCCC registers, and a guest call returning -1."""
    return [
        {
            "vcpus": 2,
            "features": ["psci-0.2"],
            "steps": [
                {"op": "set", "vcpu": 0, "reg": numbers(PSCI_VERSION), "value": numbers(0x10000)},
                {"op": "get", "vcpu": 1, "reg": numbers(PSCI_VERSION)},
                {
                    "op": "list",
                    "vcpu": 0,
                    "mask": numbers(0xFFFF0000),
                    "match": numbers(0x140000),
                },
                {
                    "op": "call",
                    "vcpu": 1,
                    "function": numbers(0x8400000A),
                    "args": [numbers(0x8400FFFF)],
                },
            ],
        },
        {
            "vcpus": 2,
            "features": [],
            "steps": [
                {"op": "run", "vcpu": 0},
                {"op": "list", "vcpu": 0, "mask": numbers(0xFFF0000), "match": numbers(0x160000)},
            ],
        },
    ]


FIRMWARE_IDS = [PSCI_VERSION, WORKAROUND_1, 0x6030000000140002, 0x6030000000140003]


def test_version_1_client_gets_exact_integers() -> None:
    answers, stderr, status = converse(
        agent_argv("6.12"),
        [
            request(1, "hello", {"protocol": "kvm-fwspec-agent/1"}),
            request(2, "run", {"programs": programs(int)}),
            request(3, "bye", {}),
        ],
    )
    assert status == 0, stderr
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert answers[0]["result"]["protocol"] == "kvm-fwspec-agent/1"
    observed = answers[1]["result"]["observed"]
    assert observed == [
        [{"ok": True}, {"value": 0x10000}, {"ids": FIRMWARE_IDS}, {"x0": -1}],
        [{"ok": True}, {"ids": [BMAP_STD, BMAP_STD + 1, BMAP_STD + 2]}],
    ]
    # Exact, and integers, not floats or strings: 0x6030000000140000 is above 2^53.
    ids = observed[0][2]["ids"]
    assert all(type(i) is int for i in ids) and ids[0] == 6931039826524504064 > 2**53
    assert answers[2] == {"id": 3, "result": {}}


def test_version_2_client_gets_hex_strings() -> None:
    answers, stderr, status = converse(
        agent_argv("6.12"),
        [
            request(1, "hello", {"protocol": "kvm-fwspec-agent/2"}),
            request(2, "run", {"programs": programs(hex)}),
            request(3, "bye", {}),
        ],
    )
    assert status == 0, stderr
    assert answers[0]["result"]["protocol"] == "kvm-fwspec-agent/2"
    assert answers[1]["result"]["observed"] == [
        [
            {"ok": True},
            {"value": "0x10000"},
            {"ids": [hex(i) for i in FIRMWARE_IDS]},
            {"x0": "-0x1"},
        ],
        [{"ok": True}, {"ids": [hex(BMAP_STD), hex(BMAP_STD + 1), hex(BMAP_STD + 2)]}],
    ]
    assert answers[1]["result"]["observed"][0][2]["ids"][0] == "0x6030000000140000"


def test_hello_without_protocol_is_answered_in_version_1() -> None:
    answers, stderr, status = converse(agent_argv("6.12"), [request(1, "hello", {})])
    assert status == 0, stderr
    assert answers[0]["result"]["protocol"] == "kvm-fwspec-agent/1"


def test_wrong_agent_corrupts_workaround_1_only() -> None:
    read = {
        "vcpus": 1,
        "features": ["psci-0.2"],
        "steps": [
            {"op": "get", "vcpu": 0, "reg": hex(WORKAROUND_1)},
            {"op": "get", "vcpu": 0, "reg": hex(PSCI_VERSION)},
        ],
    }
    hello = request(1, "hello", {"protocol": "kvm-fwspec-agent/2"})
    run = request(2, "run", {"programs": [read]})
    right, _, _ = converse(agent_argv("6.12"), [hello, run])
    wrong, _, _ = converse(agent_argv("6.12", "--wrong"), [hello, run])
    # mitigated: WORKAROUND_1 reads 1 (avail); 6.12 defaults PSCI_VERSION to 1.1.
    assert right[1]["result"]["observed"] == [[{"value": "0x1"}, {"value": "0x10001"}]]
    assert wrong[1]["result"]["observed"] == [[{"value": "0x0"}, {"value": "0x10001"}]]


def test_protocol_hygiene() -> None:
    """Empty lines ignored, unparsable requests answered with id null, the agent keeps serving,
    logs stay off stdout, and end of input ends the agent with status 0."""
    answers, stderr, status = converse(
        agent_argv("6.12"),
        [
            "",
            request(1, "hello", {"protocol": "kvm-fwspec-agent/2"}),
            "not json",
            "[1, 2]",
            request(2, "frobnicate", {}),
            # A version-1 integer on a version-2 connection: the request's error, naming it.
            request(3, "run", {"programs": programs(int)}),
            "",
            request(4, "run", {"programs": []}),
        ],
    )
    assert status == 0, stderr
    assert [a["id"] for a in answers] == [1, None, None, 2, 3, 4]
    assert "result" in answers[0]
    assert all(isinstance(a["error"]["message"], str) for a in answers[1:5])
    assert "programs[0].steps[0].reg" in answers[4]["error"]["message"]
    assert answers[5]["result"]["observed"] == []


def test_bye_ends_the_session() -> None:
    answers, stderr, status = converse(
        agent_argv("6.12"),
        [request(1, "bye", {}), request(2, "hello", {"protocol": "kvm-fwspec-agent/2"})],
    )
    assert status == 0, stderr
    assert answers == [{"id": 1, "result": {}}]


FAKE_IMPLEMENTATION = """\
import json, sys
# Answers hello in version 1, then dies on the first run, as a crashing implementation would.
for line in sys.stdin:
    request = json.loads(line)
    if request["method"] == "hello":
        answer = {"protocol": "kvm-fwspec-agent/1", "implementation": "crashy", "kernel": "6.12"}
        print(json.dumps({"id": request["id"], "result": answer}), flush=True)
    else:
        print("FATAL: cannot open /dev/kvm", file=sys.stderr, flush=True)
        sys.exit(3)
"""


def test_crashing_implementation_is_each_step_s_error(tmp_path: Path) -> None:
    fake = tmp_path / "crashy.py"
    fake.write_text(FAKE_IMPLEMENTATION)
    answers, stderr, status = converse(
        agent_argv("6.12", child=[sys.executable, str(fake)]),
        [
            request(1, "hello", {"protocol": "kvm-fwspec-agent/2"}),
            request(2, "run", {"programs": programs(hex)}),
            # A fresh implementation serves the next request (and crashes again).
            request(3, "run", {"programs": programs(hex)[1:]}),
        ],
    )
    assert status == 0, stderr
    assert answers[0]["result"]["implementation"] == "fwspec-agent.js proxy over crashy"
    reason = "the reference agent exited with status 3: FATAL: cannot open /dev/kvm"
    assert answers[1]["result"]["observed"] == [
        [{"error": reason}] + [{"error": "not run"}] * 3,
        [{"error": reason}, {"error": "not run"}],
    ]
    assert answers[2]["result"]["observed"] == [[{"error": reason}, {"error": "not run"}]]


def test_missing_implementation_is_a_one_line_reason(tmp_path: Path) -> None:
    done = subprocess.run(
        agent_argv("6.12", child=[str(tmp_path / "missing")]),
        input="",
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert "FATAL: cannot start" in done.stderr and str(tmp_path / "missing") in done.stderr
    # certify refuses it before any case runs, quoting that reason.
    certified = kvm_fwspec(
        "certify",
        "-q",
        "--adapter",
        "agent",
        "--kernel",
        "6.12",
        "--option",
        "command=" + shlex.join(agent_argv("6.12", child=[str(tmp_path / "missing")])),
        "--report",
        str(tmp_path / "report"),
    )
    assert certified.returncode == 2, certified.stdout + certified.stderr
    assert "FATAL: cannot start" in certified.stderr, certified.stderr
    assert not (tmp_path / "report" / "results.json").exists()
