"""How users name a kernel, and which of the spec's kernels each name is judged as.

The spec describes releases as Linus tagged them (`6.12`) and, for each, the newest stable
release of that line with what was backported to it (`6.12.y`). Users have other names: a
stable point release (`6.12.18`), a release candidate (`6.9-rc2`), a git tag (`v6.1`), or
whatever `uname -r` prints on their distribution (`6.1.0-13-arm64`, `5.15.0-91-generic`,
`6.12.18-200.fc41.aarch64`). One parser maps every such name to a release or a stable series
and says how in `KernelName.how`, so that every subcommand accepts, refuses and explains the
same names the same way.

The mappings, and why:
- `X.Y` and `vX.Y`, and `X.Y.0` as a mainline build reports itself: the release as tagged.
- `X.Y.y`: the stable series.
- `X.Y.Z` (Z > 0): a stable point release, judged as `X.Y.y`. The spec records a backport by
  the series it went to, not by the point release that first carried it, so the mapping is by
  series: a point release older than a backport is judged as if it had it.
- `X.Y-rcN` (`X.Y.0-rcN` from uname): judged as `X.Y`. KVM's uapi and its register handling for
  a release are merged in the merge window that rc1 closes; later rcs take only fixes, which
  the spec dates to the release (a fix merged after rcN is judged present).
- A distribution kernel (`6.1.0-13-arm64`, `5.15.0-91-generic`, `6.12.18-200.fc41.aarch64`):
  judged as the stable series of its line, whatever its sublevel, since distributions build on
  the stable series; what they backport on their own is not in the spec.
- A git-describe name between two releases (`v6.8-1234-gabcdef012345`) is refused: it has part
  of the next release's merge window, which is neither release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.model import Release, Spec

_NUMBER = r"(?:0|[1-9][0-9]*)"
_NAME = re.compile(
    rf"""
    v?(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})
    (?:(?P<series>\.y)|\.(?P<sublevel>{_NUMBER}))?
    (?:-rc(?P<rc>[1-9][0-9]*))?
    (?P<local>\+|(?!-rc)[-+][-+.~_A-Za-z0-9]*[A-Za-z0-9+])?  # not an rc suffix: -rc0 is none
    """,
    re.VERBOSE,
)
_GIT_DESCRIBE = re.compile(r"-(?P<commits>[0-9]+)-g[0-9a-f]{7,40}")

# Distributions by the marks their `uname -r` carries; the first that matches names it.
_DISTRIBUTIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Fedora", re.compile(r"\.fc[0-9]+")),
    ("Oracle UEK", re.compile(r"\.el[0-9]+uek")),
    ("Red Hat Enterprise Linux (or a rebuild of it)", re.compile(r"\.el[0-9]+")),
    ("Amazon Linux", re.compile(r"\.amzn[0-9]+")),
    ("Debian", re.compile(r"\+deb[0-9]+")),
    (
        "Ubuntu",
        re.compile(
            r"^-[0-9]+-(?:generic|lowlatency|aws|azure|gcp|gke|oracle|kvm|raspi|nvidia|ibm"
            r"|intel|oem|realtime|virtual|hwe)"
        ),
    ),
    ("Debian", re.compile(r"^-[0-9]+-(?:arm64|amd64|cloud-|rt-|armmp|686|marvell|rpi)")),
    ("SUSE", re.compile(r"-(?:default|64kb|azure)$")),
)
# Debian's and Ubuntu's ABI naming, `X.Y.0-ABI-flavour`, when the flavour is not one listed.
_ABI_NAMING = re.compile(r"^-[0-9]+-[a-z]")


@dataclass(frozen=True)
class KernelName:
    """A kernel as the spec judges it: a release, or with `stable` the newest stable release of
    that line. `text` is what the user wrote and `how` says how it was read."""

    release: Release
    stable: bool
    how: str = field(default="", compare=False)
    text: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.release}.y" if self.stable else str(self.release)


def parse_kernel_name(spec: Spec, text: str) -> KernelName:
    """The release or stable series `text` names, or UsageError in one line saying why not."""
    given = text.strip()
    if given in ("latest", "latest.y"):
        return _latest(spec, given)
    match = _NAME.fullmatch(given)
    if match is None:
        shown = given.encode("unicode_escape").decode("ascii")  # the error stays one line
        what = f"kernel '{shown}' is not a kernel name" if given else "the kernel name is empty"
        raise UsageError(
            f"{what}: give a release (6.12, v6.12), its stable series (6.12.y), a stable or rc "
            "release (6.12.18, 6.9-rc2), what uname -r prints, or latest"
        )
    release = Release(int(match["major"]), int(match["minor"]))
    local = match["local"] or ""
    sublevel = int(match["sublevel"]) if match["sublevel"] is not None else None
    if match["series"] and (match["rc"] or local):
        raise UsageError(f"kernel '{given}' mixes a stable series (.y) with more after it")
    distribution = _distribution(local, sublevel)
    _require_known(spec, given, release, distribution)
    stable, how = _judged(
        given, release, match["series"] is not None, sublevel, match["rc"], local, distribution
    )
    return KernelName(release, stable, how=how, text=given)


def _latest(spec: Spec, given: str) -> KernelName:
    release = spec.releases[-1]
    if given == "latest":
        return KernelName(
            release,
            False,
            how=f"latest is {release}, the newest release the spec knows",
            text=given,
        )
    return KernelName(
        release,
        True,
        how=f"latest.y is {release}.y, the stable series of the newest release the spec knows",
        text=given,
    )


def _distribution(local: str, sublevel: int | None) -> str | None:
    """The distribution whose `uname -r` has this suffix, if any says so."""
    if _GIT_DESCRIBE.fullmatch(local):
        return None
    for name, pattern in _DISTRIBUTIONS:
        if pattern.search(local):
            return name
    if sublevel == 0 and _ABI_NAMING.match(local):
        return "Debian or Ubuntu"
    return None


def _judged(
    given: str,
    release: Release,
    series: bool,
    sublevel: int | None,
    rc: str | None,
    local: str,
    distribution: str | None,
) -> tuple[bool, str]:
    """Whether `given` is judged as the stable series, and the sentence that says why."""
    by_series = (
        f"judged as {release}.y, the newest stable release of that line the spec describes "
        "(the spec records backports by series, not by the point release that first had them)"
    )
    describe = _GIT_DESCRIBE.fullmatch(local)
    if series:
        return True, f"{given} is the {release} stable series, with what was backported to it"
    if distribution is not None:
        return True, (
            f"{given} is {_article(distribution)} {distribution} kernel of the {release} line: "
            f"{by_series}; what the distribution backports on its own is not in the spec"
        )
    if sublevel:
        kind = (
            f"a candidate for the stable release {release}.{sublevel}" if rc else "a stable release"
        )
        return True, f"{given} is {kind} of the {release} line: {by_series}"
    if rc:
        return False, (
            f"{given} is a release candidate of {release}: judged as {release}, whose KVM uapi "
            "landed in the merge window that rc1 closed (fixes merged after it are judged present)"
        )
    if describe is not None:
        raise UsageError(
            f"kernel '{given}' is {int(describe['commits'])} commits after the {release} tag, "
            "part of the next merge window: name the release or rc it became"
        )
    if local:
        return False, f"{given} is a build of {release} as tagged, with the local suffix '{local}'"
    if sublevel == 0:
        return False, f"{given} is {release} as tagged (sublevel 0)"
    return False, f"{given} is the release {release} as tagged"


def _require_known(spec: Spec, given: str, release: Release, distribution: str | None) -> None:
    if release in spec.releases:
        return
    known = f"it knows {spec.releases[0]} to {spec.releases[-1]}"
    if given in (str(release), f"{release}.y"):
        raise UsageError(f"kernel {given} is not a release the spec describes ({known})")
    what = f"{_article(distribution)} {distribution} kernel" if distribution else "a kernel"
    raise UsageError(
        f"kernel '{given}' is {what} of the {release} line, which the spec does not describe "
        f"({known})"
    )


def _article(word: str) -> str:
    return "an" if word[0] in "AEIOU" else "a"
