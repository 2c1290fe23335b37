"""How users name a kernel: `6.12` for the release as Linus tagged it, `6.12.y` for the newest
stable release of that line (with what was backported to it), `latest` for the newest the spec
knows. One parser, so every subcommand accepts and refuses the same names."""

from __future__ import annotations

from dataclasses import dataclass

from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.model import Release, Spec


@dataclass(frozen=True)
class KernelName:
    release: Release
    stable: bool

    def __str__(self) -> str:
        return f"{self.release}.y" if self.stable else str(self.release)


def parse_kernel_name(spec: Spec, text: str) -> KernelName:
    stable = text.endswith(".y")
    text = text.removesuffix(".y")
    if text == "latest":
        return KernelName(spec.releases[-1], stable)
    try:
        release = Release.parse(text)
    except ValueError:
        raise UsageError(
            f"kernel '{text}' is not a release such as 6.12 (or 6.12.y for its stable series)"
        ) from None
    if release not in spec.releases:
        raise UsageError(
            f"kernel {release} is not a release the spec knows ({spec.releases[0]}-{spec.releases[-1]})"
        )
    return KernelName(release, stable)
