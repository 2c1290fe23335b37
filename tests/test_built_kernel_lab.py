"""A kernel someone built, certified as Debian's are, and a regression bisected with it.

Debian's 6.12 and 5.10 arm64 kernels are laid out as `make` and `make modules_install`
leave a build: `arch/arm64/boot/Image`, `.config` at the top, `lib/modules/RELEASE`. One is
certified from that tree, one with KVM configured out is refused before it boots, and a real
`git bisect run` over commits that point at the two kernels finds the first broken one.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kvm_fwspec.conformance.lab.kernels import Kernel
from kvm_fwspec.conformance.lab.qemu_adapter import default_cache, prepare
from tests.checkout import KVM_FWSPEC

pytestmark = pytest.mark.lab  # Debian kernels booted under QEMU

CACHE = default_cache()
# The rule 5.10 breaks and 6.12 keeps: CPU_ON of a target with MPIDR bit 31 set is refused
# since 5.15; 5.10 masks the bit and starts the vcpu (tests/test_power_real.py).
REGRESSION = "psci-power/cpu-on/reserved-affinity-bits"


def build_tree(kernel: Kernel, root: Path) -> tuple[Path, Path]:
    """Debian's kernel laid out as a build tree: the Image and .config, and its modules."""
    package = kernel.image.parents[1] if kernel.image.parent.name == "boot" else None
    image = root / "arch" / "arm64" / "boot" / "Image"
    image.parent.mkdir(parents=True)
    shutil.copyfile(kernel.image, image)
    configs = sorted((package or kernel.image.parent).glob(f"**/config-{kernel.uname}"))
    shutil.copyfile(configs[0], root / ".config")
    source = next(p for p in kernel.image.parents if (p / "lib" / "modules").is_dir() or
                  (p / "usr" / "lib" / "modules").is_dir())  # fmt: skip
    modules_from = next(
        d / kernel.uname for d in (source / "lib/modules", source / "usr/lib/modules") if d.is_dir()
    )
    modules = root / "mod" / "lib" / "modules" / kernel.uname
    shutil.copytree(modules_from, modules, symlinks=True)
    return image, modules


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("builds")
    return {line: build_tree(prepare(line, CACHE)[0], root / line) for line in ("6.12", "5.10")}


def qemu(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVM_FWSPEC, "qemu", *map(str, args), "--cache", str(CACHE)],
        capture_output=True, text=True, cwd=cwd, timeout=1200,
    )  # fmt: skip


def test_a_kernel_built_locally_is_certified_as_debian_s_are(
    trees: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    image, modules = trees["6.12"]
    started = time.monotonic()
    result = qemu("--kernel-image", image, "--modules", modules, "--report", "r", cwd=tmp_path)
    print(f"local build certified in {time.monotonic() - started:.0f} s")  # the CI log's time
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("kvm-fwspec: Linux version 6.12.118+deb12-arm64 ")
    assert lines[1].startswith(
        f"kvm-fwspec: config from {image.parents[3] / '.config'}; judged as 6.12.y: "
    )
    verdict = next(line for line in lines if "CONFORMS" in line)
    assert verdict.startswith(
        "kvm-fwspec: CONFORMS: Linux KVM 6.12.118+deb12-arm64 as arm64 6.12.y"
    )
    assert " 0 fail, 0 not-applicable, 0 error;" in verdict
    results = (tmp_path / "r" / "results.json").read_text()
    assert '"kernel-image": "' + str(image) in results


def test_a_build_without_kvm_is_refused_before_it_boots(
    trees: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    image = trees["6.12"][0]
    broken = tmp_path / "linux"
    shutil.copytree(image.parents[3], broken, symlinks=True)
    config = broken / ".config"
    config.write_text(config.read_text().replace("CONFIG_KVM=y", "# CONFIG_KVM is not set"))
    started = time.monotonic()
    result = qemu("--kernel-image", broken / "arch/arm64/boot/Image", cwd=tmp_path)
    print(f"unsuitable build refused in {time.monotonic() - started:.1f} s")
    assert result.returncode == 125, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"kvm-fwspec: cannot test this build: {broken / 'arch/arm64/boot/Image'} cannot serve "
        f"as a KVM host ({config}): CONFIG_KVM is n, it must be y; CONFIG_VIRTIO_MMIO=m, so "
        "virtio_mmio is a module: give --modules DIR"
    ]


def test_git_bisect_run_finds_the_first_broken_build(
    trees: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """Four commits: two point at 6.12 (good), two at 5.10 (broken by REGRESSION, judged as
    6.12.y). `git bisect run` with the command as it is names the third commit."""
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip

    git("init", "-q")
    git("config", "user.email", "bisect@kvm-fwspec.invalid")
    git("config", "user.name", "bisect")
    commits = []
    for number, line in enumerate(("6.12", "6.12", "5.10", "5.10"), start=1):
        image, modules = trees[line]
        (repo / "build").write_text(f"{image}\n{modules}\ncommit {number}\n")
        git("add", "build")
        git("commit", "-q", "-m", f"commit {number}: {line}")
        commits.append(git("rev-parse", "HEAD").strip())
    script = tmp_path / "test-build.sh"  # outside the tree bisect checks out
    script.write_text(
        "#!/bin/sh\n"
        f'{{ read image; read modules; }} < "{repo / "build"}"\n'
        f'exec {" ".join(KVM_FWSPEC)} qemu --kernel-image "$image" --modules "$modules" '
        f"--release 6.12.y --only {REGRESSION} --cache {CACHE} --report {tmp_path / 'r'}\n"
    )
    script.chmod(0o755)
    git("bisect", "start", commits[-1], commits[0])
    started = time.monotonic()
    outcome = subprocess.run(
        ["git", "-C", str(repo), "bisect", "run", str(tmp_path / "test-build.sh")],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    print(f"bisection in {time.monotonic() - started:.0f} s")
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert f"{commits[2]} is the first bad commit" in outcome.stdout
