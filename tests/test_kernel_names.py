"""Kernel names as users have them: each maps to one release or stable series, says how, and a
name the spec cannot judge is refused in one line that says why."""

from __future__ import annotations

import pytest

from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import KernelName, parse_kernel_name
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Release

SPEC = load_spec()
OLDEST, NEWEST = SPEC.releases[0], SPEC.releases[-1]

# (what a user types, what the spec judges it as, words `how` must contain)
JUDGED = [
    ("6.12", "6.12", "as tagged"),
    ("v6.1", "6.1", "as tagged"),
    ("6.12.0", "6.12", "as tagged (sublevel 0)"),
    ("6.12.y", "6.12.y", "stable series"),
    ("latest", str(NEWEST), "newest release"),
    ("latest.y", f"{NEWEST}.y", "stable series"),
    ("6.12.18", "6.12.y", "by series, not by the point release"),
    ("v6.12.18", "6.12.y", "a stable release of the 6.12 line"),
    ("6.1.5-rc1", "6.1.y", "candidate for the stable release 6.1.5"),
    ("6.9-rc2", "6.9", "merge window that rc1 closed"),
    ("6.9.0-rc2", "6.9", "release candidate of 6.9"),
    ("v6.13-rc1", "6.13", "release candidate of 6.13"),
    ("6.9.0-rc2-00123-gabcdef012345", "6.9", "release candidate of 6.9"),
    ("6.1.0-13-arm64", "6.1.y", "Debian kernel of the 6.1 line"),
    ("6.1.0-57-cloud-arm64", "6.1.y", "Debian kernel"),
    ("6.12.118+deb12-arm64", "6.12.y", "Debian kernel"),
    ("5.10.0-32-arm64", "5.10.y", "not in the spec"),
    ("5.15.0-91-generic", "5.15.y", "Ubuntu kernel of the 5.15 line"),
    ("6.8.0-1015-aws", "6.8.y", "Ubuntu kernel"),
    ("6.12.18-200.fc41.aarch64", "6.12.y", "Fedora kernel of the 6.12 line"),
    ("5.14.0-427.13.1.el9_4.aarch64", "5.14.y", "Red Hat Enterprise Linux"),
    ("6.1.102-111.182.amzn2023.aarch64", "6.1.y", "Amazon Linux kernel"),
    ("6.1.0-7-foo", "6.1.y", "Debian or Ubuntu kernel"),
    ("6.8.0+", "6.8", "local suffix '+'"),
    ("6.1.0-custom", "6.1", "local suffix '-custom'"),
    (" 6.1.0-13-arm64\n", "6.1.y", "Debian kernel"),  # `uname -r` pasted with its newline
]


@pytest.mark.parametrize(
    ("text", "judged_as", "said"), JUDGED, ids=[t.strip() for t, _, _ in JUDGED]
)
def test_a_name_users_have_is_judged_as_one_release_or_series(
    text: str, judged_as: str, said: str
) -> None:
    name = parse_kernel_name(SPEC, text)
    assert str(name) == judged_as
    assert said in name.how
    assert name.how.startswith(text.strip())
    assert name.text == text.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the kernel name is empty"),
        ("   ", "the kernel name is empty"),
        ("6.x", "kernel '6.x' is not a kernel name"),
        ("abc", "kernel 'abc' is not a kernel name"),
        ("6.1.", "kernel '6.1.' is not a kernel name"),
        ("6", "kernel '6' is not a kernel name"),
        ("6.01", "kernel '6.01' is not a kernel name"),
        ("6.1.y.y", "kernel '6.1.y.y' is not a kernel name"),
        ("6.1-rc0", "kernel '6.1-rc0' is not a kernel name"),
        ("latest-rc1", "kernel 'latest-rc1' is not a kernel name"),
        ("6.1\nrm -rf", "kernel '6.1\\nrm -rf' is not a kernel name"),
        ("6.1.y-rc1", "mixes a stable series (.y) with more after it"),
        (
            "4.14",
            f"kernel 4.14 is not a release the spec describes (it knows {OLDEST} to {NEWEST})",
        ),
        ("9.0", f"kernel 9.0 is not a release the spec describes (it knows {OLDEST} to {NEWEST})"),
        ("9.0.y", "kernel 9.0.y is not a release the spec describes"),
        (
            "7.3-rc1",
            "kernel '7.3-rc1' is a kernel of the 7.3 line, which the spec does not describe",
        ),
        (
            "4.14.355-275.570.amzn2.aarch64",
            "is an Amazon Linux kernel of the 4.14 line, which the spec does not describe "
            f"(it knows {OLDEST} to {NEWEST})",
        ),
        (
            "v6.8-1234-gabcdef012345",
            "1234 commits after the 6.8 tag, part of the next merge window",
        ),
        ("6.1.0-00013-g1234567", "13 commits after the 6.1 tag"),
    ],
)
def test_a_name_the_spec_cannot_judge_is_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_kernel_name(SPEC, text)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_every_release_and_series_the_spec_knows_is_its_own_name() -> None:
    for release in SPEC.releases:
        assert parse_kernel_name(SPEC, str(release)) == KernelName(release, False)
        assert parse_kernel_name(SPEC, f"{release}.y") == KernelName(release, True)
        assert parse_kernel_name(SPEC, f"v{release}") == KernelName(release, False)


def test_how_a_name_was_read_does_not_make_it_another_kernel() -> None:
    """Profiles and reports key on the kernel judged; two spellings of it are one kernel."""
    debian = parse_kernel_name(SPEC, "6.1.0-13-arm64")
    stable = parse_kernel_name(SPEC, "6.1.192")
    assert debian == stable == KernelName(Release(6, 1), True)
    assert debian.how != stable.how
