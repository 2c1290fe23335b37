"""Debian's arm64 packages through an apt configuration of our own.

Everything apt keeps (sources, lists, downloaded .debs) lives under the cache directory, so
the host's own apt sources are never touched. Packages are downloaded with `apt-get download`
and unpacked with `dpkg -x`, never installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MIRRORS = {
    "bullseye": "http://deb.debian.org/debian bullseye main",
    "bookworm": "http://deb.debian.org/debian bookworm main",
    "bookworm-security": "http://deb.debian.org/debian-security bookworm-security main",
    "unstable": "http://deb.debian.org/debian unstable main",
}
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class AptError(Exception):
    """apt could not do what was asked; the message says what."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    suite: str


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """One process at a time per cache (xdist workers and parallel runs share it): apt's own
    locking is off because its lists live in our cache, so this lock stands in for it."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class IsolatedApt:
    """apt-get and apt-cache confined to `root`, for arm64 packages of the suites above."""

    def __init__(self, root: Path, suites: tuple[str, ...] = tuple(MIRRORS)) -> None:
        self.root = root
        self.suites = suites
        self.sources = root / "sources.list"
        self.debs = root / "debs"

    def _options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::sourcelist={self.sources}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={self.root / 'lists'}",
            "-o", f"Dir::Cache={self.root / 'cache'}",
            # Keep apt's binary caches (images often turn them off): each apt-cache call would
            # otherwise re-parse every list, unstable's included, for over a second.
            "-o", "Dir::Cache::pkgcache=pkgcache.bin",
            "-o", "Dir::Cache::srcpkgcache=srcpkgcache.bin",
            "-o", "APT::Architecture=arm64",
            "-o", "APT::Architectures::=arm64",
            "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip

    def _run(self, *args: str, cwd: Path | None = None) -> str:
        result = subprocess.run(
            [*args[:1], *self._options(), *args[1:]], capture_output=True, text=True, cwd=cwd
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise AptError(f"{' '.join(args[:2])} failed: {last}")
        return result.stdout

    def update(self, max_age: float = 6 * 3600) -> None:
        """Write our sources list and fetch the package lists, unless they are fresh enough."""
        stamp = self.root / "lists" / ".updated"
        if (
            stamp.exists()
            and time.time() - stamp.stat().st_mtime < max_age
            and self.sources.exists()
        ):
            return
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.debs.mkdir(parents=True, exist_ok=True)
        lines = [f"deb [arch=arm64 signed-by={KEYRING}] {MIRRORS[suite]}" for suite in self.suites]
        self.sources.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._run("apt-get", "-q", "update")
        stamp.touch()

    def candidates(self, pattern: str, suites: tuple[str, ...]) -> list[Package]:
        """Packages whose whole name matches `pattern` in any of `suites`, newest first.

        Two apt-cache calls whatever the number of names: each call reads every list."""
        search = self._run("apt-cache", "search", "--names-only", f"^({pattern})$")
        names = sorted({line.split(" ", 1)[0] for line in search.splitlines()})
        if not names:
            return []
        found = [
            Package(name, version, suite)
            for name, versions in _policies(self._run("apt-cache", "policy", *names)).items()
            for version, in_suites in versions
            for suite in in_suites
            if suite in suites
        ]
        return sorted(found, key=lambda p: _version_key(p.version), reverse=True)

    def download(self, package: Package) -> Path:
        """The package's .deb, downloaded once into the cache."""
        existing = sorted(self.debs.glob(f"{package.name}_*.deb"))
        wanted = [p for p in existing if _deb_version(p) == package.version]
        if wanted:
            return wanted[0]
        self._run("apt-get", "-q", "download", f"{package.name}={package.version}", cwd=self.debs)
        wanted = [
            p for p in self.debs.glob(f"{package.name}_*.deb") if _deb_version(p) == package.version
        ]
        if not wanted:
            raise AptError(
                f"{package.name} {package.version} downloaded but not found in {self.debs}"
            )
        return wanted[0]

    def download_closure(self, package: str) -> list[Path]:
        """`package` and everything it depends on (not what it recommends), as apt resolves
        them for an empty system: the whole closure, to unpack rather than install."""
        empty = self.root / "empty-system"
        (empty / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (empty / "status").write_text("", encoding="utf-8")
        options = (
            "-o", f"Dir::State::status={empty / 'status'}", "-o", "APT::Install-Recommends=false",
            "-o", f"Dir::Cache::archives={empty / 'archives'}",
        )  # fmt: skip
        # A simulated install names every package and version (--print-uris would leave out
        # what is already downloaded); the files are apt's own names for them.
        plan = self._run("apt-get", *options, "install", "--simulate", "-qq", package)
        names = [
            f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
            for name, version, arch in re.findall(r"^Inst (\S+) \((\S+) .*\[(\w+)\]\)", plan, re.M)
        ]
        self._run("apt-get", *options, "install", "--download-only", "-y", "-qq", package)
        return [empty / "archives" / name for name in names]


def extract(deb: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg", "-x", str(deb), str(into)], check=True)


def _policies(policy: str) -> dict[str, list[tuple[str, list[str]]]]:
    """name -> (version, suites) pairs, from `apt-cache policy NAME...` output."""
    result: dict[str, list[tuple[str, list[str]]]] = {}
    versions: list[tuple[str, list[str]]] = []
    for line in policy.splitlines():
        if line and not line.startswith(" "):
            versions = result.setdefault(line.rstrip(":").removesuffix(":arm64"), [])
            continue
        match = re.match(r"^\s+(?:\*\*\* )?(\S+) \d+$", line)
        if match:
            versions.append((match.group(1), []))
        elif versions and "http" in line:
            versions[-1][1].append(line.split()[-3].split("/")[0])
    return result


def _deb_version(path: Path) -> str:
    return path.name.split("_")[1].replace("%3a", ":")


def _version_key(version: str) -> list[tuple[int, str]]:
    """Order Debian versions well enough for kernel packages: numbers compare as numbers."""
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+~:-]", version)]
