"""The embedded reference implementation, called in-process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvm_fwspec.conformance.adapters import Capabilities, refuse_unknown_options
from kvm_fwspec.conformance.case import CASE_REQUIREMENTS
from kvm_fwspec.conformance.guest.program import PROGRAM_MEMORY, execute
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.reference_impl.kvm import ReferenceKvm
from kvm_fwspec.spec.errors import UsageError

OPTIONS = ("without",)


FEATURES = frozenset(CASE_REQUIREMENTS)


class ReferenceAdapter:
    """Runs each program on a fresh VM of a ReferenceKvm set to the run's profile."""

    name = "reference"

    def __init__(self, kvm: ReferenceKvm, without: frozenset[str] = frozenset()) -> None:
        self.kvm = kvm
        self.features = FEATURES - without

    def capabilities(self) -> Capabilities:
        release = "{}.{}".format(*self.kvm.release)
        return Capabilities("kvm-fwspec reference", release, self.kvm.arch, self.features)

    def run_programs(self, programs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        return [execute(self.kvm, program) for program in programs]

    def close(self) -> None:
        """Nothing to release: the reference lives in this process."""


def create(profile: Profile, options: Mapping[str, str]) -> ReferenceAdapter:
    """Options: `without=guest-calls,...` withholds capabilities, to certify as a narrower
    implementation would (its cases then report not-applicable)."""
    refuse_unknown_options("reference", options, OPTIONS)
    without = frozenset(filter(None, options.get("without", "").split(",")))
    if without - FEATURES:
        raise UsageError(
            f"without={','.join(sorted(without - FEATURES))}: the reference has no such "
            f"capability; it has {', '.join(sorted(FEATURES))}"
        )
    levels = {name: value.name for name, value in profile.host.levels.items()}
    # Always its generated tables, never the spec under test: under --spec-dir the reference
    # is an implementation held to that spec, and an edit it does not follow must fail it.
    kvm = ReferenceKvm(
        str(profile.release), levels, profile.arch, stable=profile.stable, memory=PROGRAM_MEMORY
    )
    return ReferenceAdapter(kvm, without)
