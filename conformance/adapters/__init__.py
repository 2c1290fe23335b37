"""Adapters: how the suite reaches an implementation. Registered as `kvm_fwspec.adapters`
entry points; each factory takes the profile and adapter options and returns an Adapter."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol

from kvm_fwspec.conformance.profile import Profile, observed_host
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.model import Spec

ENTRY_POINT_GROUP = "kvm_fwspec.adapters"


@dataclass(frozen=True)
class Capabilities:
    """What an implementation declares it can do; cases needing more are not applicable."""

    implementation: str
    kernel: str | None
    arch: str
    features: frozenset[str] = field(default_factory=frozenset)
    host_levels: dict[str, int] | None = field(default=None, compare=False)
    provenance: dict[str, str] = field(default_factory=dict, compare=False)
    # What a fingerprint records of the host beyond its registers, when the implementation
    # reports it (None when it does not): MIDR_EL1/REVIDR_EL1 as lowercase hex strings, and
    # KVM_CHECK_EXTENSION-style answers by capability name (docs/agent-protocol.md, hello).
    cpu: dict[str, str | None] | None = field(default=None, compare=False, kw_only=True)
    kvm_capabilities: dict[str, int] | None = field(default=None, compare=False, kw_only=True)


class AdapterError(Exception):
    """A failure the adapter explains in its own words (an agent that exited, timed out or
    broke the protocol): reported as its message, without a Python class name."""


def describe_failure(exc: Exception) -> str:
    """An adapter's failure as a case's reason: its words, or for an exception the adapter did
    not explain (a bug in it), the exception's class too."""
    return str(exc) if isinstance(exc, AdapterError) else f"{type(exc).__name__}: {exc}"


class Adapter(Protocol):
    name: str

    def capabilities(self) -> Capabilities: ...

    def run_programs(self, programs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]: ...

    def close(self) -> None: ...


AdapterFactory = Callable[[Profile, Mapping[str, str]], Adapter]


def reported_host(adapter: Adapter, spec: Spec) -> str:
    """`--host auto`: the host profile whose levels the implementation reports."""
    levels = adapter.capabilities().host_levels
    if levels is None:
        raise UsageError(
            "--host auto needs an adapter that reports its host's levels (real KVM does)"
        )
    return observed_host(spec, levels)


def parse_options(pairs: list[str]) -> dict[str, str]:
    """Adapter options given as KEY=VALUE strings."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"adapter options take KEY=VALUE, not '{pair}'")
        options[key] = value
    return options


def refuse_unknown_options(adapter: str, options: Mapping[str, str], known: Iterable[str]) -> None:
    """One line for the first option `adapter` does not take, with the closest it does."""
    names = list(known)
    for key in options:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"it takes: {', '.join(names)}"
            raise UsageError(f"the {adapter} adapter has no option '{key}'; {hint}")


def whole_number_option(options: Mapping[str, str], key: str, default: int) -> int:
    text = options.get(key, str(default))
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f"option {key}={text}: need a whole number of at least 1")
    return number


def seconds_option(options: Mapping[str, str], key: str, default: float) -> float:
    text = options.get(key, str(default))
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise UsageError(f"option {key}={text}: need a finite number of seconds above 0")
    return seconds


def adapter_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_adapter(name: str, profile: Profile, options: Mapping[str, str]) -> Adapter:
    """Instantiate the adapter registered under `name`."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise UsageError(f"no adapter '{name}'; installed: {', '.join(adapter_names()) or 'none'}")
    factory: AdapterFactory = found[0].load()
    return factory(profile, options)
