"""`kvm-fwspec qemu --kernel-image`: certify a kernel someone built, booted as Debian's are.

The release is read from the image's own banner and mapped to the spec's release or stable
series as every command maps a kernel's name (`--release` overrides it). The exit codes are
those `git bisect run` expects, so that a bisection can run the command as it is: 0 the
kernel conforms (or passes every case of the `--only` rules), 1 it does not, 125 this build
cannot be tested (it cannot serve as a KVM host, does not boot, or its release is unknown to
the spec). A mistake in the command line itself stays a usage error, 2, as for every command.
"""

from __future__ import annotations

import difflib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.adapters.agent import AgentError
from kvm_fwspec.conformance.certify import Request, certify
from kvm_fwspec.conformance.lab.kernel_image import inspect
from kvm_fwspec.conformance.lab.qemu import GuestError
from kvm_fwspec.conformance.lab.qemu_adapter import default_cache
from kvm_fwspec.conformance.report_folder import RESULTS
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import KernelName, parse_kernel_name
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

CONFORMS, DOES_NOT_CONFORM, CANNOT_TEST = 0, 1, 125


@dataclass(frozen=True)
class BuiltRun:
    """What the user asked of a kernel they built."""

    image: Path
    modules: Path | None
    release: str | None
    only: tuple[str, ...]
    cache: Path | None
    report: Path


def run_built_kernel(run: BuiltRun) -> int:
    spec = load_spec()
    # The user's mistakes, not the build's: usage errors, exit 2, which stop a bisection
    only = checked_rule_ids(spec, run.only)
    named = parse_kernel_name(spec, run.release) if run.release is not None else None
    cache = run.cache or default_cache()
    started = time.monotonic()
    try:
        built = inspect(run.image, run.modules, cache)
        name = named or judged_as(spec, built.kernel.uname)
    except UsageError as exc:
        return _cannot_test(str(exc))
    print(f"kvm-fwspec: {built.banner}")
    print(f"kvm-fwspec: config from {built.config_source}; judged as {name}: {name.how}")
    options = {"cache": str(cache), "kernel-image": str(run.image)}
    if run.modules is not None:
        options["modules"] = str(run.modules)
    try:
        code = certify(
            Request(
                adapter="qemu",
                kernel=str(name),
                host="auto",
                arch="arm64",
                options=options,
                workers=None,
                report=run.report,
                require_all=True,  # our own agent offers every capability, as for Debian's
                judged_as_named=True,  # by its banner, or as --release says
            )
        )
    except (UsageError, GuestError, AgentError) as exc:  # it did not boot, or its agent died
        return _cannot_test(str(exc))
    print(f"kvm-fwspec: {time.monotonic() - started:.0f} s from reading the image to the verdict")
    if not only:
        return code
    return judged_by(only, json.loads((run.report / RESULTS).read_text(encoding="utf-8")))


def _cannot_test(reason: str) -> int:
    """Exit 125 with its reason on stderr, where every command's refusals go."""
    print(f"kvm-fwspec: cannot test this build: {reason}", file=sys.stderr)
    return CANNOT_TEST


def judged_as(spec: Spec, uname: str) -> KernelName:
    """The spec's kernel for a build, by the release its banner names."""
    try:
        return parse_kernel_name(spec, uname)
    except UsageError as exc:
        raise UsageError(
            f"its release {uname} is not one the spec judges ({exc}); give --release"
        ) from None


def checked_rule_ids(spec: Spec, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """`wanted`, each a rule of the spec; a misspelt one is named with the closest there are,
    before anything boots (a bisection would otherwise judge every build by nothing)."""
    known = spec.rule_ids
    for rule in wanted:
        if rule not in known:
            close = difflib.get_close_matches(rule, known, n=3, cutoff=0.8)
            hint = f"; did you mean {', '.join(close)}?" if close else " (kvm-fwspec show RULE-ID)"
            raise UsageError(f"--only {rule}: no such rule in the spec{hint}")
    return wanted


def judged_by(only: tuple[str, ...], document: dict[str, Any]) -> int:
    """0 when every case of the `only` rules passed, 1 when one did not; a rule with no case
    in this kernel's run cannot judge it (125)."""
    cases = [c for c in document["cases"] if c["rule"] in only]
    bad = [c for c in cases if c["outcome"] != "pass"]
    absent = [r for r in only if not any(c["rule"] == r for c in cases)]
    if absent:
        return _cannot_test(
            f"--only {', '.join(absent)}: no case of this kernel's run is filed under it"
        )
    verdict = "passes" if not bad else f"FAILS ({', '.join(c['id'] for c in bad)})"
    counted = f"{len(cases)} case" + ("s" if len(cases) != 1 else "")
    print(
        f"kvm-fwspec: judged by --only {' '.join(only)}: {counted}, {verdict}; the exit status "
        "follows these rules (the whole run's verdict above is for information)"
    )
    return DOES_NOT_CONFORM if bad else CONFORMS
