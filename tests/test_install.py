"""`pip install .` into a fresh virtual environment, as a user outside the checkout has it:
one namespace, kvm_fwspec, and no top-level codegen, conformance or reference_impl module (PyPI
has unrelated packages by those names); the README's main job, the suite as a pytest plugin and
a real-KVM certification all run from the wheel's own files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.checkout import ROOT

pytestmark = pytest.mark.lab  # pip downloads the dependencies; qemu boots a Debian kernel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with kvm-fwspec installed from a copy of the checkout (so the wheel is
    built from what is committed or changed here, not from an editable path)."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", ".*_cache", ".namespace", "reports", "build", "dist"))  # fmt: skip
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    shutil.rmtree(source)  # the installed package must not lean on its source tree
    yield venv


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("name", ["codegen", "conformance", "reference_impl", "spec"])
def test_no_generic_top_level_module(installed: Path, name: str, tmp_path: Path) -> None:
    result = run(installed, str(installed / "bin/python"), "-c", f"import {name}", cwd=tmp_path)
    assert result.returncode == 1
    assert f"No module named '{name}'" in result.stderr


def test_the_namespace_holds_each_folder(installed: Path, tmp_path: Path) -> None:
    code = (
        "import importlib.resources as r, kvm_fwspec.spec.loader as l, kvm_fwspec.conformance.plugin;"
        "print(sorted(p.name for p in r.files('kvm_fwspec.spec').iterdir() if p.name.endswith('.yaml')));"
        "print(l.default_spec_dir())"
    )
    result = run(installed, str(installed / "bin/python"), "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "'registers.yaml'" in result.stdout and "'rules.yaml'" in result.stdout
    assert str(installed) in result.stdout  # the spec comes from the wheel, not a checkout


def test_the_main_job_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    result = run(installed, "kvm-fwspec", "certify", "--report", "reports/reference", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kvm-fwspec: CONFORMS: kvm-fwspec reference as arm64 7.2" in result.stdout
    assert "warnings summary" not in result.stdout  # the newest pytest, which pip just chose
    for name in ("results.json", "results.junit.xml", "report.html"):
        assert (tmp_path / "reports/reference" / name).is_file()
    verified = run(
        installed, "kvm-fwspec", "verify", "reports/reference/results.json", cwd=tmp_path
    )
    assert verified.returncode == 0, verified.stderr


def test_the_suite_is_a_pytest_plugin_of_the_wheel(installed: Path, tmp_path: Path) -> None:
    result = run(installed, str(installed / "bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "--pyargs", "kvm_fwspec.conformance.suite", "--fwspec-adapter", "reference",
                 "--fwspec-kernel", "6.1", f"--fwspec-report={tmp_path / 'r'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    assert " passed" in result.stdout


def test_generate_refuses_an_installation_that_is_not_a_checkout(
    installed: Path, tmp_path: Path
) -> None:
    result = run(installed, "kvm-fwspec", "generate", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "kvm-fwspec: generate writes into a kvm-fwspec source checkout, and this installation is not one\n"
    )


def test_real_kvm_certifies_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """The guest's agent comes from the wheel's files: the initramfs is built from them."""
    result = run(installed, "kvm-fwspec", "qemu", "--kernel", "6.1", "--report", "q", cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "yes" in (tmp_path / "q" / "summary.md").read_text(encoding="utf-8")
