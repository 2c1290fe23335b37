"""Generated files are fresh, deterministic, written only on change, and staleness is explained."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kvm_fwspec.codegen.generate import check, generate, render_all
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC, ROOT


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVM_FWSPEC, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_committed_files_are_fresh() -> None:
    result = run_cli("generate", "--check")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_two_runs_are_byte_identical(tmp_path: Path) -> None:
    spec = load_spec()
    first, second = tmp_path / "one", tmp_path / "two"
    assert len(generate(spec, first)) == len(render_all(spec))
    generate(load_spec(), second)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files and files == sorted(
        p.relative_to(second) for p in second.rglob("*") if p.is_file()
    )
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_unchanged_files_are_not_rewritten(tmp_path: Path) -> None:
    spec = load_spec()
    generate(spec, tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert generate(spec, tmp_path) == []
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}


def _project_copy(tmp_path: Path) -> Path:
    """A git checkout of the project as committed plus the working tree's files."""
    copy = tmp_path / "project"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", ".*_cache", ".namespace", "reports"
        ),
    )
    return copy


def test_check_fails_on_a_hand_edit(tmp_path: Path) -> None:
    copy = _project_copy(tmp_path)
    header = copy / "codegen/generated/c/kvm_fw_arm64.h"
    header.write_text(header.read_text().replace("KVM_REG_ARM_FW_REG(0)", "KVM_REG_ARM_FW_REG(9)"))
    problems = check(load_spec(copy / "spec"), copy)
    assert problems == [
        "codegen/generated/c/kvm_fw_arm64.h: stale: its contents differ from the generator's output "
        "(edited by hand, or a template changed); run 'kvm-fwspec generate'"
    ]


def test_check_fails_on_a_spec_edit_naming_the_spec_file(tmp_path: Path) -> None:
    copy = _project_copy(tmp_path)
    registers = copy / "spec/registers.yaml"
    registers.write_text(
        registers.read_text().replace(
            "    index: 3\n    kind: level", "    index: 4\n    kind: level"
        )
    )
    result = run_cli("--spec-dir", str(copy / "spec"), "generate", "--check", cwd=copy)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == len(render_all(load_spec())), result.stderr
    assert all("spec/registers.yaml changed since it was generated" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_check_reports_a_missing_and_an_orphaned_file(tmp_path: Path) -> None:
    copy = _project_copy(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    (copy / "codegen/generated/rust/kvm_fw.rs").unlink()
    (copy / "codegen/generated/c/old.h").write_text("/*\n * kvm-fwspec-generated: c-old\n */\n")
    problems = check(load_spec(copy / "spec"), copy)
    assert "codegen/generated/rust/kvm_fw.rs: missing; run 'kvm-fwspec generate'" in problems
    assert (
        "codegen/generated/c/old.h: carries the generated marker but no generator writes it"
        in problems
    )


def test_every_output_carries_banner_and_marker() -> None:
    spec = load_spec()
    for path, text in render_all(spec).items():
        head = text[:2000]
        assert "DO NOT EDIT" in head, path
        assert all(f"{f.name} sha256:{f.sha256}" in head for f in spec.files), path
        assert "kvm-fwspec-generated:" in head, path


def test_json_model_validates_against_its_published_schema() -> None:
    import json

    import jsonschema

    schema = json.loads((ROOT / "codegen/schemas/kvm-fwspec-model.schema.json").read_text())
    document = json.loads((ROOT / "codegen/generated/json/kvm-fwspec.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(document)
    broken = {**document, "registers": [{**document["registers"][0], "index": "zero"}]}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))
