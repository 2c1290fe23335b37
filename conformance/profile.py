"""What a certification run is about: an architecture, a kernel release and a host profile."""

from __future__ import annotations

from dataclasses import dataclass

from codegen.errors import UsageError
from codegen.model import HostProfile, Release, Spec


@dataclass(frozen=True)
class Profile:
    """The KVM an implementation claims to be: which release, on which host, for which arch."""

    arch: str
    release: Release
    host: HostProfile

    @property
    def label(self) -> str:
        return f"{self.arch} {self.release} host={self.host.name}"


def resolve_profile(spec: Spec, kernel: str, host: str, arch: str = "arm64") -> Profile:
    """Validate user-given names against the spec; `latest` is the newest release it knows."""
    release = spec.releases[-1] if kernel == "latest" else None
    if release is None:
        try:
            release = Release.parse(kernel)
        except ValueError:
            raise UsageError(f"kernel '{kernel}' is not a release such as 6.12") from None
        if release not in spec.releases:
            raise UsageError(
                f"kernel {release} is not a release the spec knows ({spec.releases[0]}-{spec.releases[-1]})"
            )
    found = next((h for h in spec.host_profiles if h.name == host), None)
    if found is None:
        names = ", ".join(h.name for h in spec.host_profiles)
        raise UsageError(f"host profile '{host}' is not one of: {names}")
    architecture = next((a for a in spec.architectures if a.name == arch), None)
    if architecture is None or not architecture.lifetime.covers(release):
        raise UsageError(f"KVM on {arch} hosts does not exist in {release}")
    return Profile(arch, release, found)
