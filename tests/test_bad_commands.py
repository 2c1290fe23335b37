"""Every bad command a user can give dump, migrate-check, decode, show, validate and generate
(issue 14's list, with typos and folders given for files) ends as one line, `kvm-fwspec: ...`,
with a non-zero exit, no traceback and nothing written. Run as the user runs them: a process.

certify's, verify's, agent's and sync-check's own mistakes are tested beside those commands;
here only what every command shares (--spec-dir) reaches them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checkout import KVM_FWSPEC, ROOT

REAL_DUMP = json.loads(
    (ROOT / "tests" / "fixtures" / "real-kvm" / "real-restores.json").read_text()
)["dumps"][5]  # a 6.1.y dump saved on real KVM

# Files each command is run among, in a fresh folder: a regular file, a folder, and dumps that
# are wrong in the ways issue 14 found.
BAD_DUMPS = {
    "kernel-a-number.json": json.dumps(REAL_DUMP | {"kernel": 6.1}),
    "nested.json": "[" * 100_000 + "]" * 100_000,
    "system-register.json": json.dumps(
        REAL_DUMP | {"registers": [*REAL_DUMP["registers"], {"id": 0x603000000013C082, "value": 0}]}
    ),
    "value-beyond-64-bits.json": json.dumps(
        REAL_DUMP | {"registers": [{"id": 0x6030000000140000, "value": 1 << 64}]}
    ),
    "duplicate-id.json": json.dumps(
        REAL_DUMP | {"registers": [REAL_DUMP["registers"][0], REAL_DUMP["registers"][0]]}
    ),
}

# An agent that completes its hello (protocol 1, claiming no kernel) and answers {"ok": true}
# to every step, whatever the step asked: what an implementation's bug in its `list` looks like.
OK_AGENT = """\
import json, sys
for line in sys.stdin:
    request = json.loads(line)
    method = request["method"]
    if method == "hello":
        result = {"protocol": "kvm-fwspec-agent/1"}
    elif method == "run":
        programs = request["params"]["programs"]
        result = {"observed": [[{"ok": True} for _ in p["steps"]] for p in programs]}
    else:
        result = {}
    print(json.dumps({"id": request["id"], "result": result}), flush=True)
    if method == "bye":
        break
"""

# The reference agent as its own process, started as a user starts it.
AGENT = "command={python} -m kvm_fwspec.conformance.commands.cli agent"

# (id, arguments, exit status, what the line says). {tmp} is the folder the command runs in,
# {python} this interpreter; a brace the line itself holds is doubled.
CASES = [
    # dump, as issue 14 lists them
    ("dump-psci-version-a-name", ["dump", "--psci-version", "1.0", "--output", "{tmp}/d.json"], 2,
     "--psci-version '1.0' is a version name, not a register value: PSCI 1.0 is 0x10000"),
    ("dump-psci-version-garbage", ["dump", "--psci-version", "abc", "--output", "{tmp}/d.json"], 2,
     "--psci-version 'abc' is not a register value"),
    ("dump-output-a-folder", ["dump", "--output", "{tmp}/folder"], 2,
     "--output {tmp}/folder is a folder; name a file"),
    ("dump-output-in-proc", ["dump", "--output", "/proc/x.json"], 2,
     "--output /proc/x.json: cannot write in /proc"),
    ("dump-output-under-a-file", ["dump", "--output", "{tmp}/FILE/x.json"], 2,
     "--output {tmp}/FILE/x.json: {tmp}/FILE is a file, not a folder"),
    ("dump-agent-without-command", ["dump", "--adapter", "agent", "--output", "{tmp}/d.json"], 2,
     "the agent adapter needs --option command="),
    ("dump-arch-arm-where-arm-has-no-kvm", ["dump", "--arch", "arm", "--output", "{tmp}/d.json"],
     2, "KVM on arm hosts does not exist in"),
    # dump, more mistakes
    ("dump-arch-arm-from-an-arm64-agent", ["dump", "--adapter", "agent", "--option",
     "command={python} -m kvm_fwspec.conformance.commands.cli agent --kernel 5.4", "--arch", "arm",
     "--kernel", "5.4", "--output", "{tmp}/d.json"], 2,
     "the implementation is arm64, so it cannot be dumped as arm (use --arch arm64)"),
    ("dump-output-a-device", ["dump", "--output", "/dev/null"], 2,
     "--output /dev/null exists and is not a regular file"),
    ("dump-psci-version-negative", ["dump", "--psci-version=-1", "--output", "{tmp}/d.json"], 2,
     "--psci-version '-1' does not fit in the 64-bit register"),
    ("dump-features-unknown", ["dump", "--features", "psci-1.0", "--output", "{tmp}/d.json"], 2,
     "vcpu features 'psci-1.0': use psci-0.2 or none"),
    ("dump-host-unknown", ["dump", "--host", "mitigate", "--output", "{tmp}/d.json"], 2,
     "host profile 'mitigate' is not one of"),
    ("dump-levels-unknown", ["dump", "--host", "levels:a/b/c", "--output", "{tmp}/d.json"], 2,
     "has no level 'a'"),
    ("dump-adapter-unknown", ["dump", "--adapter", "refrence", "--output", "{tmp}/d.json"], 2,
     "no adapter 'refrence'"),
    ("dump-option-not-key-value", ["dump", "--option", "without", "--output", "{tmp}/d.json"], 2,
     "adapter options take KEY=VALUE, not 'without'"),
    ("dump-option-mistyped", ["dump", "--ouptut", "{tmp}/d.json"], 2,
     "dump: unrecognized option '--ouptut'; did you mean --output?"),
    ("dump-output-missing", ["dump"], 2,
     "dump: the following arguments are required: --output"),
    ("dump-spec-dir-missing", ["dump", "--spec-dir", "{tmp}/missing", "--output", "{tmp}/d.json"],
     2, "--spec-dir {tmp}/missing does not exist"),
    ("dump-spec-dir-a-file", ["dump", "--spec-dir", "{tmp}/FILE", "--output", "{tmp}/d.json"], 2,
     "--spec-dir {tmp}/FILE is not a directory"),
    # dump, as the new-user trial found them
    ("dump-output-empty", ["dump", "--output", ""], 2,
     "kvm-fwspec: dump: argument --output: an empty path (see kvm-fwspec dump --help)"),
    ("dump-agent-answers-ok-to-list", ["dump", "--adapter", "agent", "--option",
     "command={python} {tmp}/ok_agent.py", "--output", "{tmp}/d.json"], 2,
     'the implementation answered {{"ok": true}} to step 0 (list), which is not an answer to '
     'it: {{"ids": [ID, ...]}} or {{"errno": NAME}}'),
    ("dump-agent-claims-another-kernel", ["dump", "--adapter", "agent", "--option",
     AGENT + " --kernel 6.1", "--output", "{tmp}/d.json"], 2,
     "kvm-fwspec reference says it is KVM 6.1; --kernel asks for 7.2"),
    ("dump-agent-on-another-host", ["dump", "--adapter", "agent", "--option",
     AGENT + " --host vulnerable", "--output", "{tmp}/d.json"], 2,
     "the implementation's workaround registers report levels:not-avail/not-avail/not-avail "
     "(vulnerable), not --host mitigated's levels:avail/not-required/avail: give --host "
     "vulnerable or --host auto"),
    ("dump-psci-version-refused", ["dump", "--kernel", "5.10", "--psci-version", "0x10001",
     "--output", "{tmp}/d.json"], 2,
     "--psci-version 0x10001 was refused with EINVAL by arm64 5.10 host=mitigated, as the spec "
     "says (psci-version/set/reject-unimplemented: "),
    # migrate-check, as issue 14 lists them
    ("migrate-dump-kernel-a-number", ["migrate-check", "--from", "{tmp}/kernel-a-number.json",
     "--to", "6.1"], 2, "{tmp}/kernel-a-number.json: kernel: 6.1 is a number, not a string"),
    ("migrate-deeply-nested", ["migrate-check", "--from", "{tmp}/nested.json", "--to", "6.1"], 2,
     "{tmp}/nested.json: not a dump: nested too deeply"),
    ("migrate-system-register", ["migrate-check", "--from", "{tmp}/system-register.json", "--to",
     "6.1"], 2, "is a sysreg id, outside the firmware registers"),
    ("migrate-value-beyond-64-bits", ["migrate-check", "--from", "{tmp}/value-beyond-64-bits.json",
     "--to", "6.1"], 2, "registers[0].value: 18446744073709551616 does not fit in 64 bits"),
    ("migrate-duplicate-id", ["migrate-check", "--from", "{tmp}/duplicate-id.json", "--to", "6.1"],
     2, "registers[1].id: 0x6030000000140000 was saved already, as registers[0]"),
    ("migrate-extra-field", ["migrate-check", "--from", "6.1:mitigated:psci-0.2:0x10001:x", "--to",
     "6.1"], 2, "has 1 field(s) too many: a side is KERNEL[:HOST[:FEATURES[:PSCI]]]"),
    # migrate-check, more mistakes
    ("migrate-from-a-folder", ["migrate-check", "--from", "{tmp}/folder", "--to", "6.1"], 2,
     "--from {tmp}/folder is not a dump file"),
    ("migrate-from-a-missing-dump", ["migrate-check", "--from", "{tmp}/none.json", "--to", "6.1"],
     2, "--from {tmp}/none.json: no such dump file"),
    ("migrate-from-a-non-json-file", ["migrate-check", "--from", "{tmp}/FILE", "--to", "6.1"], 2,
     "{tmp}/FILE: not JSON"),
    ("migrate-kernel-unknown", ["migrate-check", "--from", "6.1", "--to", "9.9"], 2,
     "--to: kernel 9.9 is not a release"),
    ("migrate-from-under-a-file", ["migrate-check", "--from", "{tmp}/FILE/x.json", "--to", "6.1"],
     2, "--from {tmp}/FILE/x.json: {tmp}/FILE is a file, so no dump file is under it"),
    ("migrate-from-empty", ["migrate-check", "--from", "", "--to", "6.1"], 2,
     "--from is empty: give a dump file or a side such as 6.13:mitigated"),
    ("migrate-host-mistyped", ["migrate-check", "--from", "6.1:mitigatd", "--to", "6.1"], 2,
     "host profile 'mitigatd' is not one of"),
    ("migrate-option-mistyped", ["migrate-check", "--form", "6.1", "--to", "6.1"], 2,
     "migrate-check: unrecognized option '--form'; did you mean --from?"),
    ("migrate-command-mistyped", ["migrate-chek", "--from", "6.1", "--to", "6.1"], 2,
     "no command 'migrate-chek'; did you mean migrate-check"),
    # decode and show
    ("decode-garbage", ["decode", "0xzz"], 2, "'0xzz' is not a register id"),
    ("decode-beyond-64-bits", ["decode", "0x1" + "0" * 16], 2, "does not fit in 64 bits"),
    ("decode-ambiguous", ["decode", "6030000000140000"], 2, "could be decimal or hex"),
    ("decode-one-bad-of-several", ["decode", "0x6030000000140000", "x"], 2,
     "'x' is not a register id"),
    ("decode-option-mistyped", ["decode", "--jsn", "0x1"], 2,
     "decode: unrecognized option '--jsn'; did you mean --json?"),
    ("decode-thousands-of-digits", ["decode", "9" * 5000], 2,
     "'" + "9" * 40 + "...' (5000 characters) does not fit in 64 bits"),
    ("decode-empty-argument", ["decode", ""], 2,
     "decode: argument 1 of 1 is empty; give a register id such as 0x6030000000140000"),
    ("show-unknown", ["show", "trng-v1.1"], 2,
     "nothing in the spec is named 'trng-v1.1'; did you mean trng-v1.0?"),
    ("show-nothing", ["show"], 2, "show: the following arguments are required: name"),
    # validate and generate
    ("validate-a-file", ["validate", "{tmp}/FILE"], 2, "{tmp}/FILE is a file"),
    ("validate-missing", ["validate", "{tmp}/missing"], 2,
     "kvm-fwspec: SPEC_DIR {tmp}/missing does not exist"),
    ("validate-empty-path", ["validate", ""], 2,
     "validate: argument SPEC_DIR: an empty path (see kvm-fwspec validate --help)"),
    ("validate-folder-without-spec-files", ["validate", "{tmp}/folder"], 2,
     "spec directory {tmp}/folder holds none of the spec files (kernels.yaml,"),
    ("generate-option-mistyped", ["generate", "--chek"], 2,
     "generate: unrecognized option '--chek'; did you mean --check?"),
    # every command takes --spec-dir, and refuses one that is not there
    ("verify-spec-dir-missing", ["verify", "--spec-dir", "/missing", "{tmp}/results.json"], 2,
     "--spec-dir /missing does not exist"),
    ("spec-dir-before-command-missing", ["--spec-dir", "/missing", "show", "psci-version"], 2,
     "--spec-dir /missing does not exist"),
    ("spec-dir-empty", ["--spec-dir", "", "show", "psci-version"], 2,
     "kvm-fwspec: argument --spec-dir: an empty path (see kvm-fwspec --help)"),
    ("no-command", [], 2, "the following arguments are required: COMMAND"),
    # what the top parser itself takes, and words a subcommand does not
    ("option-mistyped-before-command", ["--versoin"], 2,
     "kvm-fwspec: unrecognized option '--versoin'; did you mean --version? "
     "(see kvm-fwspec --help)"),
    ("unknown-short-option", ["-x"], 2,
     "kvm-fwspec: unrecognized option '-x' (see kvm-fwspec --help)"),
    ("unknown-option-before-a-command", ["--spec-dir", "{tmp}/folder", "-x", "show", "x"], 2,
     "kvm-fwspec: unrecognized option '-x' (see kvm-fwspec --help)"),
    ("verify-extra-argument", ["verify", "{tmp}/a.json", "{tmp}/b.json"], 2,
     "kvm-fwspec: verify: unrecognized arguments: {tmp}/b.json (see kvm-fwspec verify --help)"),
]  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "FILE").write_text("not a folder, not a dump\n")
    (tmp_path / "folder").mkdir()
    for name, text in BAD_DUMPS.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "ok_agent.py").write_text(OK_AGENT)
    return tmp_path


def _contents(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize(
    ("args", "status", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_bad_command_is_one_line(folder: Path, args: list[str], status: int, says: str) -> None:
    before = _contents(folder)
    argv = [a.format(tmp=folder, python=sys.executable) for a in args]
    says = says.format(tmp=folder)
    result = subprocess.run(
        [*KVM_FWSPEC, *argv], capture_output=True, text=True, cwd=folder, stdin=subprocess.DEVNULL
    )
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kvm-fwspec: ")
    assert says in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == status
    assert result.stdout == ""
    assert _contents(folder) == before  # nothing written, not even a temporary file
    assert not Path("/proc/x.json").exists()


@pytest.mark.parametrize(
    "args",
    [["decode", "0x6030000000140000", "6931039826524504065"], ["decode", "--json", "0x1"],
     ["show", "psci-version"], ["migrate-check", "--from", "6.13", "--to", "6.12"],
     ["validate"]],
    ids=["decode", "decode-json", "show", "migrate-check", "validate"],
)  # fmt: skip
def test_a_reader_gone_ends_the_command_quietly(args: list[str]) -> None:
    """`kvm-fwspec decode ... | head -1`, made certain: the pipe's reading end is closed before
    the command starts, so its first write finds no reader (no timing involved). 141 is what a
    shell reports for a C tool SIGPIPE killed; nothing is said on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [*KVM_FWSPEC, *args], stdout=write_end, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")
