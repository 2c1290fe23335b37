"""kvm-fwspec fleet plan and fleet diff: pools, matrix, baseline and the upgrade gate, over
real Graviton fingerprints (Firecracker's published files) and fingerprints taken from the
reference implementation; every check shown failing on a realistic wrong input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvm_fwspec.conformance.analyses import migration
from kvm_fwspec.conformance.analyses.fingerprint import SCHEMA, as_json
from kvm_fwspec.conformance.analyses.firecracker_fingerprint import import_firecracker
from kvm_fwspec.conformance.analyses.fleet import make_plan
from kvm_fwspec.conformance.analyses.fleet_hosts import host_of, read_hosts
from kvm_fwspec.conformance.analyses.fleet_report import as_html, as_text, explain
from kvm_fwspec.conformance.analyses.fleet_report import as_json as plan_json
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.spec.loader import load_spec
from tests.generated_fleet import reference_fingerprint, write_kinds

FIRECRACKER = Path(__file__).parent / "fixtures" / "firecracker-fingerprints"
SPEC = load_spec()
KINDS = [("5.10", "mitigated"), ("5.10", "vulnerable"), ("6.1", "mitigated"), ("6.12", "mitigated"),
         ("6.1", "vulnerable"), ("7.2", "mitigated"), ("4.17", "mitigated"), ("5.10.y", "mitigated")]  # fmt: skip
REFERENCE = {kind: reference_fingerprint(SPEC, *kind, f"{kind[0]}-{kind[1]}") for kind in KINDS}


def graviton_files(tmp_path: Path, lines: tuple[str, ...] = ("5.10", "6.1", "6.18")) -> list[Path]:
    paths = []
    for source in sorted(FIRECRACKER.glob("fingerprint_ARM_NEOVERSE_V[12]_*host.json")) + sorted(
        FIRECRACKER.glob("fingerprint_ARM_NEOVERSE_N1_*host.json")
    ):
        line = source.name.split("_")[-1].removesuffix("host.json")
        if line in lines:
            path = tmp_path / f"{source.stem}.json"
            path.write_text(as_json(import_firecracker(SPEC, source, source.stem)))
            paths.append(path)
    return paths


def reference_files(tmp_path: Path, kinds: list[tuple[str, str]]) -> list[Path]:
    paths = []
    for kind in kinds:
        path = tmp_path / f"{kind[0]}-{kind[1]}.json"
        path.write_text(as_json(REFERENCE[kind]))
        paths.append(path)
    return paths


def fleet(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "kvm_fwspec.conformance.commands.cli",
            "fleet",
            *map(str, arguments),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def folder(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def plan_of(paths: list[Path]) -> Any:
    hosts, refused = read_hosts(SPEC, paths)
    return make_plan(SPEC, hosts, refused)


# The public Graviton fingerprints: what an operator of such a fleet learns.


def test_graviton_pools_are_kernel_lines_whatever_the_cpu(tmp_path: Path) -> None:
    plan = plan_of(graviton_files(tmp_path))
    assert len(plan.pools) == 3 and plan.hosts == 9
    for pool in plan.pools:
        assert len(pool.hosts) == 3 and len(pool.kernels) == 1  # N1, V1 and V2 together
        assert len(pool.cpus) == 3
    assert sorted(p.kernels[0] for p in plan.pools) == ["5.10.y", "6.1.y", "6.18.y"]


def test_graviton_matrix_upgrades_work_downgrades_fail_on_named_registers(tmp_path: Path) -> None:
    plan = plan_of(graviton_files(tmp_path))
    by_kernel = {p.kernels[0]: p.id for p in plan.pools}
    cell = lambda a, b: plan.matrix[(by_kernel[a], by_kernel[b])]  # noqa: E731
    assert cell("6.1.y", "6.18.y").verdict == "safe"
    up = cell("5.10.y", "6.1.y")
    assert up.verdict == "changes"
    assert "service trng: absent -> available" in up.changes
    down = cell("6.18.y", "6.1.y")
    assert down.verdict == "fails"
    assert [(f.register, f.errno, f.rule) for f in down.failures] == [
        ("psci-version", "EINVAL", "psci-version/set/reject-unimplemented"),
        ("vendor-hyp-bmap-2", "ENOENT", "fw-feat-bmap/set/unknown-register"),
    ]
    assert all(plan.matrix[(p.id, p.id)].verdict == "safe" for p in plan.pools)


def test_graviton_baseline_names_why_each_other_pool_is_out(tmp_path: Path) -> None:
    plan = plan_of(graviton_files(tmp_path))
    baseline = plan.baseline
    assert len(baseline.pools) == 1 and len(baseline.excluded) == 2
    reasons = " | ".join(e.why for _, why in baseline.excluded for e in why)
    assert "ENOENT on restore" in reasons
    text = as_text(plan)
    assert "KVM_SET_ONE_REG psci-version" in text and "left out" in text


# The plan's restore verdicts agree with migrate-check's, register by register.


@pytest.mark.parametrize("source", KINDS, ids=lambda k: "-".join(k))
def test_plan_fails_exactly_where_migrate_check_fails(
    tmp_path: Path, source: tuple[str, str]
) -> None:
    plan = plan_of(reference_files(tmp_path, KINDS))
    pool_of = {h.name: p for p in plan.pools for h in p.hosts}
    for target in KINDS:
        cell = plan.matrix[(pool_of["-".join(source)].id, pool_of["-".join(target)].id)]
        side = migration.side_from_profile(SPEC, f"{source[0]}:{source[1]}")
        report = migration.check(SPEC, side, resolve_profile(SPEC, *target), ("psci-0.2",))
        failed = [(r.name, r.errno) for r in report.registers if not r.restored]
        assert [(f.register, f.errno) for f in cell.failures] == failed, (source, target)


# The baseline holds: every pair of its set is safe; a changed input moves it.


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6, unique=True))
def test_every_pair_of_the_baseline_set_is_safe(
    tmp_path: Path, kinds: list[tuple[str, str]]
) -> None:
    where = tmp_path / "-".join("".join(k) for k in kinds)
    where.mkdir(exist_ok=True)
    plan = plan_of(reference_files(where, kinds))
    members = plan.baseline.pools
    assert members
    for a in members:
        for b in members:
            assert plan.baseline_matrix[(a, b)].verdict == "safe", (a, b)
    out = {p for p, _ in plan.baseline.excluded}
    assert out | set(members) == {p.id for p in plan.pools} and not out & set(members)


def test_6_1_and_6_12_share_a_pool_and_7_2_is_kept_out_by_its_register_and_pin(
    tmp_path: Path,
) -> None:
    plan = plan_of(reference_files(tmp_path, [("6.1", "mitigated"), ("6.12", "mitigated")]))
    assert len(plan.pools) == 1  # identical behaviour: one pool, two kernels
    plan = plan_of(reference_files(tmp_path, [("6.1", "mitigated"), ("7.2", "mitigated")]))
    out = dict(plan.baseline.excluded)
    assert len(out) == 1
    # The tie goes to 7.2 (the newer pin): 6.1 lacks its register and refuses its PSCI 1.3.
    assert [(e.kind, e.subject) for e in next(iter(out.values()))] == [
        ("lacks", "vendor-hyp-bmap-2"),
        ("pin", "psci-version"),
    ]


def test_a_lower_workaround_level_is_named_as_what_keeps_a_pool_out(tmp_path: Path) -> None:
    plan = plan_of(
        reference_files(
            tmp_path, [("6.1", "mitigated"), ("6.12", "mitigated"), ("6.1", "vulnerable")]
        )
    )
    ((_pool, reasons),) = plan.baseline.excluded
    assert [(e.kind, e.subject) for e in reasons] == [
        ("level", "smccc-arch-workaround-1"),
        ("level", "smccc-arch-workaround-2"),
        ("level", "smccc-arch-workaround-3"),
    ]
    assert "smccc-arch-workaround-1 is 0x0, below the set's 0x1" in reasons[0].why


def test_a_kernel_the_spec_has_not_seen_is_planned_from_what_it_reported(tmp_path: Path) -> None:
    """A distribution kernel reporting the 7.2 registers under a 6.1 version (a backport):
    planned by its registers, its accepted values inferred where not recorded, never refused."""
    document = dict(REFERENCE[("7.2", "mitigated")], host="backport")
    document["kernel"] = {"reported": "6.1.0-99-arm64", "judged-as": "6.1.y", "how": "test"}
    document["registers"] = [dict(r, accepts=None) for r in document["registers"]]
    host = host_of(SPEC, document, "backport.json")
    assert all(o.inferred for o in host.offers)
    psci = next(o for o in host.offers if o.name == "psci-version")
    assert psci.accepts == {0x2, 0x10000, 0x10001, 0x10002, 0x10003}
    plan = make_plan(SPEC, [host], [])
    assert "inferred" in as_text(plan)


# Bad input: one line naming the file and field; the rest of the fleet still planned.


def _edit(path: Path, change: Any) -> Path:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    return path


def test_bad_files_are_named_and_the_rest_is_planned(tmp_path: Path) -> None:
    good = reference_files(tmp_path, [("6.1", "mitigated"), ("5.10", "mitigated")])
    truncated = tmp_path / "truncated.json"
    truncated.write_text(good[0].read_text()[:200])
    foreign = tmp_path / "results.json"
    foreign.write_text(json.dumps({"format": "kvm-fwspec-results/2", "cases": []}))
    contradictory = _edit(
        reference_files(folder(tmp_path, "c"), [("6.12", "mitigated")])[0],
        lambda d: d["registers"][0].update(default="0x10003"),
    )
    duplicate = tmp_path / "again.json"
    duplicate.write_text(good[0].read_text())
    missing = tmp_path / "absent.json"
    result = fleet("plan", *good, truncated, foreign, contradictory, duplicate, missing)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 6 and "Traceback" not in result.stderr
    assert f"{truncated}: line 9: not a fingerprint: Unterminated string" in lines[0]
    assert f"{foreign}: format: 'kvm-fwspec-results/2' is not kvm-fwspec-fingerprint/1" in lines[1]
    assert (
        f"{contradictory}: registers[0].default: 0x10003 is outside what the same file says psci-version accepts"
        in lines[2]
    )
    assert f"{duplicate}: host: 6.1-mitigated was already read from {good[0]}" in lines[3]
    assert f"{missing}: no such file" in lines[4]
    assert lines[5] == "kvm-fwspec: 5 files left out; the plan covers the rest"
    assert result.stdout.startswith("fleet plan: 2 hosts in 2 pools")


def test_a_schema_violation_names_its_field(tmp_path: Path) -> None:
    path = _edit(
        reference_files(tmp_path, [("6.1", "mitigated")])[0],
        lambda d: d["registers"][1].update(id="0xZZ"),
    )
    result = fleet("plan", path)
    assert result.returncode == 2
    assert f"{path}: registers[1].id: '0xZZ' does not match" in result.stderr
    assert (
        result.stderr.splitlines()[-1]
        == "kvm-fwspec: no fingerprint could be read: nothing to plan"
    )


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_fast_validator_agrees_with_jsonschema(data: st.DataObject) -> None:
    """Mutated fingerprints: fastjsonschema (the fast path) and jsonschema (the reference) say
    the same thing, so the fast path never lets through what the schema refuses."""
    document = json.loads(as_json(REFERENCE[("7.2", "mitigated")]))
    path = data.draw(
        st.sampled_from(["host", "arch", "cpu", "reg-list-length", "registers", "kernel"])
    )
    value = data.draw(
        st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=5), st.just([]), st.just({}))
    )
    if path == "registers" and data.draw(st.booleans()):
        field = data.draw(st.sampled_from(["id", "default", "accepts", "name", "extra"]))
        document["registers"][0][field] = value
    else:
        document[path] = value
    schema = json.loads(SCHEMA.read_text())
    valid = jsonschema.validators.validator_for(schema)(schema).is_valid(document)
    try:
        fastjsonschema.compile(schema)(document)
        fast = True
    except fastjsonschema.JsonSchemaException:
        fast = False
    assert fast == valid


def test_usage_errors(tmp_path: Path) -> None:
    paths = reference_files(tmp_path, [("6.1", "mitigated")])
    assert fleet("plan", *paths, "--pools", "P9").stderr.strip() == (
        "kvm-fwspec: --pools: P9 not in this plan's pools (P1)"
    )
    (tmp_path / "empty").mkdir()
    result = fleet("plan", tmp_path / "empty")
    assert result.returncode == 2 and "a folder with no *.json fingerprint in it" in result.stderr
    result = fleet("plan", *paths, "--html", paths[0])
    assert result.returncode == 2 and "is a file; name a folder" in result.stderr


def test_outputs_are_byte_identical_whatever_the_order(tmp_path: Path) -> None:
    paths = reference_files(tmp_path, KINDS) + graviton_files(tmp_path)
    first, second = plan_of(paths), plan_of(list(reversed(paths)))
    assert plan_json(first) == plan_json(second)
    assert as_text(first) == as_text(second) and as_html(first) == as_html(second)


def test_json_output_names_every_cell(tmp_path: Path) -> None:
    result = fleet("plan", *graviton_files(tmp_path), "--json")
    document = json.loads(result.stdout)
    assert document["format"] == "kvm-fwspec-fleet-plan/1"
    assert len(document["matrix"]) == 9 and document["baseline"]["vcpu-features"] == ["psci-0.2"]
    failing = [c for c in document["matrix"] if c["verdict"] == "fails"]
    assert failing and all(f["register"] and f["why"] for c in failing for f in c["failures"])


# The upgrade gate.


def test_gate_passes_an_upgrade_that_keeps_the_firmware(tmp_path: Path) -> None:
    before = reference_files(folder(tmp_path, "b"), [("6.1", "mitigated")])
    after = reference_files(folder(tmp_path, "a"), [("6.12", "mitigated")])
    result = fleet("diff", "--before", *before, "--after", *after)
    assert result.returncode == 0, result.stdout
    assert "gate (current configuration): SAFE" in result.stdout


def test_gate_fails_a_downgrade_and_names_the_register(tmp_path: Path) -> None:
    before = reference_files(folder(tmp_path, "b"), [("7.2", "mitigated")])
    after = reference_files(folder(tmp_path, "a"), [("6.1", "mitigated")])
    result = fleet("diff", "--before", *before, "--after", *after)
    assert result.returncode == 1
    assert "B1 -> A1: fails: psci-version=0x10003 EINVAL" in result.stdout
    assert "vendor-hyp-bmap-2=0x0 ENOENT" in result.stdout


def test_gate_says_changes_with_3_and_is_blind_with_a_bad_file(tmp_path: Path) -> None:
    before = reference_files(folder(tmp_path, "b"), [("5.10", "mitigated")])
    after = reference_files(folder(tmp_path, "a"), [("6.1", "mitigated")])
    result = fleet("diff", "--before", *before, "--after", *after)
    assert result.returncode == 3 and "CHANGES" in result.stdout
    broken = tmp_path / "a" / "broken.json"
    broken.write_text("{")
    result = fleet("diff", "--before", *before, "--after", *after, broken)
    assert result.returncode == 2 and f"--after: left out {broken}" in result.stderr


# The page, as a browser draws it.


class Page(HTMLParser):
    """The matrix cells (class, title, link) and every id of a rendered plan page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.cells: list[dict[str, str]] = []
        self._table = ""
        self._cell: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "table" and "matrix" in values.get("class", ""):
            self._table = values["id"]
        if tag == "td" and self._table:
            self._cell = {
                "table": self._table,
                "class": values.get("class", ""),
                "title": values.get("title", ""),
            }
            self.cells.append(self._cell)
        if tag == "a" and self._cell is not None:
            self._cell["href"] = values.get("href", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = ""
        if tag == "td":
            self._cell = None


@pytest.mark.tools
def test_the_plan_page_in_chromium_draws_and_explains_every_cell(tmp_path: Path) -> None:
    assert shutil.which("chromium"), "chromium is not installed; .ci/run installs it with apt-get"
    result = fleet("plan", *graviton_files(tmp_path), "--html", tmp_path / "html")
    assert result.returncode == 0, result.stderr
    page = tmp_path / "html" / "index.html"
    chromium = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run(
        [*chromium, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = Page()
    parsed.feed(dom.stdout)
    matrix = [c for c in parsed.cells if c["table"] == "matrix"]
    assert len(matrix) == 9
    assert {c["class"] for c in matrix} == {"safe", "changes", "fails"}
    for cell in matrix:
        assert cell["href"].startswith("#") and cell["href"][1:] in parsed.ids
        assert cell["title"].split(": ", 1)[1].split(":")[0] in (
            "safe",
            "fails",
            "restores, guest sees",
        )
    assert any("EINVAL" in c["title"] for c in matrix if c["class"] == "fails")
    assert "baseline-configuration" in parsed.ids
    shot = tmp_path / "plan.png"
    drawn = subprocess.run([*chromium, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert drawn.returncode == 0 and shot.stat().st_size > 10_000


def test_amazon_linux_2_on_4_14_is_planned_by_its_backported_register(tmp_path: Path) -> None:
    """Firecracker's real 4.14 Graviton files: a kernel older than the spec's first release,
    carrying only PSCI_VERSION. Judged by its registers, with the inference said; its VMs
    restore on 5.10 with the workaround registers appearing, and 5.10's never come back."""
    files = sorted(FIRECRACKER.glob("fingerprint_ARM_NEOVERSE_[NV]1_*host.json"))
    plan = plan_of([f for f in files if "_4.14" in f.name or "_5.10" in f.name])
    old = next(p for p in plan.pools if "4.14" in p.hosts[0].kernel)
    assert [o.name for o in old.offers] == ["psci-version"] and len(old.hosts) == 2
    fingerprint = import_firecracker(SPEC, files[0], "al2")
    assert "does not describe kernel 4.14" in fingerprint["kernel"]["how"]
    new = next(p for p in plan.pools if p is not old)
    assert plan.matrix[(old.id, new.id)].verdict == "changes"
    back = plan.matrix[(new.id, old.id)]
    assert back.verdict == "fails"
    assert {f.register for f in back.failures} == {f"smccc-arch-workaround-{n}" for n in (1, 2, 3)}


# What a new user's trial found, each held.


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(lambda d: d["registers"][0].update(default="0xdeadbeef", accepts=["0xdeadbeef"]),
                     "registers[0].default: 0xdeadbeef is not a PSCI version the spec knows", id="psci"),
        pytest.param(lambda d: d["registers"][1].update(default="0x7", accepts=["0x7"]),
                     "registers[1].default: 0x7 is not a smccc-arch-workaround-1 level the spec defines",
                     id="level"),
        pytest.param(lambda d: d["registers"][4].update(default="0x3", accepts=["0x1", "0x2"]),
                     "registers[4].default: 0x3 is not made of std-bmap bits the spec knows", id="bits"),
        pytest.param(lambda d: d.update({"reg-list-length": 2}),
                     "reg-list-length: 2, fewer than the 7 firmware registers", id="list-length"),
        pytest.param(lambda d: d["registers"][0].update(id="0x6030000000140009"),
                     "registers[0].id: 0x6030000000140009, but psci-version is 0x6030000000140000", id="id"),
        pytest.param(lambda d: d["kernel"].update({"judged-as": "9.99"}),
                     "kernel.judged-as: kernel 9.99 is not a release the spec describes", id="judged-as"),
        pytest.param(lambda d: d.update(arch="arm"), "kernel.judged-as: KVM on arm hosts does not exist in 6.1",
                     id="arm-after-5.6"),
    ],
)  # fmt: skip
def test_values_no_kvm_gives_are_refused_and_the_rest_planned(
    tmp_path: Path, edit: Any, message: str
) -> None:
    good, bad = reference_files(tmp_path, [("5.10", "mitigated"), ("6.1", "mitigated")])
    _edit(bad, edit)
    result = fleet("plan", good, bad)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"left out {bad}: {message}" in result.stderr, result.stderr
    assert result.stdout.startswith("fleet plan: 1 host in 1 pool")


def test_a_file_named_twice_is_read_once_and_a_list_says_what_it_is(tmp_path: Path) -> None:
    (path,) = reference_files(tmp_path, [("6.1", "mitigated")])
    (tmp_path / "link.json").symlink_to(path)
    result = fleet("plan", path, tmp_path, path, tmp_path / ".." / tmp_path.name / path.name)
    assert result.returncode == 0 and result.stdout.startswith("fleet plan: 1 host in 1 pool")
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    result = fleet("plan", path, listed)
    assert f"{listed}: top level: an array, not a fingerprint (a JSON object)" in result.stderr
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    result = fleet("plan", path, fifo)  # would block for ever if it were opened
    assert f"{fifo}: is not a regular file, not a fingerprint" in result.stderr


def test_a_kvm_fwspec_dump_is_planned_as_it_lies(tmp_path: Path) -> None:
    dump = tmp_path / "host-a.json"
    taken = subprocess.run(
        [sys.executable, "-m", "kvm_fwspec.conformance.commands.cli", "dump", "--kernel", "6.1",
         "--output", str(dump)], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert taken.returncode == 0, taken.stderr
    (other,) = reference_files(folder(tmp_path, "b"), [("6.12", "mitigated")])
    plan = plan_of([dump, other])
    assert [h.name for p in plan.pools for h in p.hosts] == ["6.12-mitigated", "host-a"]
    assert len(plan.pools) == 1  # the dump's host behaves as 6.12's


def test_the_baseline_leaves_opt_in_services_off(tmp_path: Path) -> None:
    """VENDOR_HYP_BMAP_2's services are answered by userspace: a 7.2 host takes its bits, but a
    VM created with defaults has none, and neither has the baseline."""
    plan = plan_of(reference_files(tmp_path, [("7.2", "mitigated")]))
    assert dict(plan.baseline.bitmaps)["vendor-hyp-bmap-2"] == 0


def test_an_unwritable_html_folder_is_one_line_before_any_work(tmp_path: Path) -> None:
    (path,) = reference_files(tmp_path, [("6.1", "mitigated")])
    result = fleet("plan", path, "--html", path / "sub")
    assert result.returncode == 2 and result.stdout == ""
    assert (
        result.stderr.strip()
        == f"kvm-fwspec: --html {path / 'sub' / 'index.html'}: {path} is a file, not a folder"
    )


def test_an_arm_pool_is_out_of_reach_for_its_architecture_not_its_registers(tmp_path: Path) -> None:
    arm = tmp_path / "arm.json"
    arm.write_text(as_json(reference_fingerprint(SPEC, "5.4", "mitigated", "arm-host", arch="arm")))
    (arm64,) = reference_files(tmp_path, [("5.10", "mitigated")])
    plan = plan_of([arm, arm64])
    by_arch = {p.profile.arch: p.id for p in plan.pools}
    cell = plan.matrix[(by_arch["arm"], by_arch["arm64"])]
    assert cell.verdict == "fails"
    assert explain(cell) == "fails: an arm VM, an arm64 host: no register is compared"
    assert f"{by_arch['arm']}: 1 host, arm 5.4" in as_text(plan)


def test_many_pools_are_summarised_per_source_in_text(tmp_path: Path) -> None:
    paths = write_kinds(SPEC, tmp_path)  # every release, stable series and host profile
    plan = plan_of(paths)
    assert len(plan.pools) > 30
    text = as_text(plan)
    assert "too many pools for a grid; each source's targets by verdict" in text
    assert "  P1 -> safe: P1" in text


# The upgrade gate follows the hosts through a rolling upgrade.


def test_a_rollout_that_changes_nothing_passes(tmp_path: Path) -> None:
    fleet_files = reference_files(
        tmp_path, [("5.10", "mitigated"), ("6.1", "mitigated"), ("7.2", "mitigated")]
    )
    result = fleet("diff", "--before", *fleet_files, "--after", *fleet_files)
    assert result.returncode == 0, result.stdout
    assert "gate (current configuration): SAFE" in result.stdout


def rollout(
    tmp_path: Path, before: dict[str, tuple[str, str]], after: dict[str, tuple[str, str]]
) -> subprocess.CompletedProcess[str]:
    """`fleet diff` of hosts named before and after, each the reference kind given."""
    sides = []
    for name, hosts in (("before", before), ("after", after)):
        where = folder(tmp_path, name)
        for host, kind in hosts.items():
            (where / f"{host}.json").write_text(as_json(dict(REFERENCE[kind], host=host)))
        sides.append(where)
    return fleet("diff", "--before", sides[0], "--after", sides[1])


def test_a_rolling_upgrade_is_judged_by_each_hosts_own_pools(tmp_path: Path) -> None:
    """Host a goes 6.1 -> 6.12 (safe), host b 5.10 -> 6.1 (changes): the gate says 3, whatever
    the 6.1 VMs would do on the 5.10 host no longer there."""
    before = {"a": ("6.1", "mitigated"), "b": ("5.10", "mitigated")}
    after = {"a": ("6.12", "mitigated"), "b": ("6.1", "mitigated")}
    result = rollout(tmp_path, before, after)
    assert result.returncode == 3, result.stdout
    gated = [line for line in result.stdout.splitlines() if line.startswith("  gate ")]
    assert len(gated) == 4  # two pairs, under both configurations


def test_a_host_name_with_a_newline_is_refused(tmp_path: Path) -> None:
    good, bad = reference_files(tmp_path, [("5.10", "mitigated"), ("6.1", "mitigated")])
    _edit(bad, lambda d: d.update(host="node-a\nfleet plan: 0 hosts"))
    result = fleet("plan", good, bad)
    assert result.returncode == 1 and f"left out {bad}: host: " in result.stderr
    assert not any(line.startswith("fleet plan: 0") for line in result.stdout.splitlines())
    assert len(result.stderr.splitlines()) == 2  # the refusal, escaped, and the count


def test_pools_may_be_spaced_and_repeated(tmp_path: Path) -> None:
    paths = reference_files(
        tmp_path, [("5.10", "mitigated"), ("6.1", "mitigated"), ("7.2", "mitigated")]
    )
    spaced = json.loads(fleet("plan", *paths, "--json", "--pools", "P1, P2").stdout)
    repeated = json.loads(fleet("plan", *paths, "--json", "--pools", "P1", "--pools", "P2").stdout)
    assert spaced["baseline"]["chosen-from"] == repeated["baseline"]["chosen-from"] == ["P1", "P2"]


def test_a_new_host_in_a_rolling_upgrade_is_judged_for_every_running_pool(tmp_path: Path) -> None:
    """Host a goes 6.1 -> 6.12 and a new 5.10 host c joins: the 6.1 VMs cannot go onto c, so
    the gate fails; host b (5.10), not named after, is judged against every upgraded pool."""
    before = {"a": ("6.1", "mitigated"), "b": ("5.10", "mitigated")}
    after = {"a": ("6.12", "mitigated"), "c": ("5.10", "mitigated")}
    result = rollout(tmp_path, before, after)
    assert result.returncode == 1, result.stdout
    current = result.stdout.split("under the baseline")[0]
    gated = [line for line in current.splitlines() if line.startswith("  gate ")]
    assert len(gated) == 4  # a's pool to both, b's pool (nowhere named) to both


def test_a_register_outside_the_firmware_classes_and_empty_pools_are_refused(
    tmp_path: Path,
) -> None:
    good, bad = reference_files(tmp_path, [("5.10", "mitigated"), ("6.1", "mitigated")])
    midr = {"name": None, "id": "0x603000000013c000", "default": "0x0", "accepts": None}
    _edit(bad, lambda d: (d.update({"reg-list-length": 300}), d["registers"].append(midr)))
    result = fleet("plan", good, bad)
    assert (
        f"left out {bad}: registers[7].id: 0x603000000013c000 is not a firmware register (class 0x13"
        in (result.stderr)
    )
    result = fleet("plan", good, "--pools", ",")
    assert result.returncode == 2 and "--pools names no pool" in result.stderr
