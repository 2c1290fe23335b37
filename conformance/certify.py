"""`kvm-fwspec certify`: run the suite against an adapter and publish the report.

A verdict is printed only from this run's own evidence: the adapter is opened and greeted once
before the suite starts (a wrong option or a dead agent is one line, not hundreds of errors),
the run writes into a staging folder, and the report folder is replaced only by a run that
completed and executed cases.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kvm_fwspec.conformance.adapters import Adapter, adapter_names, reported_host
from kvm_fwspec.conformance.cases import build_cases
from kvm_fwspec.conformance.greeting import greeted_adapter, greeted_for_its_kernel
from kvm_fwspec.conformance.oracle import Oracle
from kvm_fwspec.conformance.plugin import OpenedAdapter, load_document
from kvm_fwspec.conformance.profile import Profile, resolve_profile
from kvm_fwspec.conformance.report_folder import RESULTS, ReportFolder
from kvm_fwspec.conformance.results import lacking_capabilities
from kvm_fwspec.conformance.signing import check_signing_key, sign_results
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

# The adapter declares this feature when its cases are slow enough (real KVM, remote agents)
# that xdist workers pay for their start-up; in-process the reference is faster serial.
PARALLEL_FEATURE = "parallel"
FAILURES_SHOWN = 5
SELF_EXPLAINING = ("latest", "latest.y")  # kernel names certify need not explain


@dataclass(frozen=True, kw_only=True)
class Request:
    """What the user asked certify to do, as the command line gave it."""

    adapter: str
    kernel: str
    host: str
    arch: str
    options: dict[str, str]
    workers: str | None
    report: Path | None  # None: reports/ADAPTER-ARCH-KERNEL-HOST, the kernel as judged
    quiet: bool = False
    require_all: bool = False
    sign: Path | None = None
    # The user named the kernel to judge the implementation as, whatever it says it is (a
    # build judged with `qemu --kernel-image --release`): its claim is not held against it.
    judged_as_named: bool = False


def certify(request: Request) -> int:
    """Run the suite; print the verdict line; 0 when the implementation conforms."""
    spec = load_spec()
    if request.adapter not in adapter_names():
        raise UsageError(f"no adapter '{request.adapter}'; installed: {', '.join(adapter_names())}")
    opened = None
    if request.kernel == "auto":
        opened, claimed = _kernel_from_hello(spec, request)
        request = dataclasses.replace(request, kernel=claimed)
    try:
        return _certify(spec, request, opened)
    finally:
        if opened is not None:
            opened.close()


def _kernel_from_hello(spec: Spec, request: Request) -> tuple[Adapter, str]:
    """`--kernel auto`: the adapter, greeted, and the kernel its hello names (`uname -r` on
    real KVM), which the rest of the run judges it as."""
    placeholder = spec.host_profiles[0].name if request.host == "auto" else request.host
    adapter, claimed = greeted_for_its_kernel(
        request.adapter, spec, placeholder, request.arch, request.options
    )
    try:
        parse_kernel_name(spec, claimed)
    except UsageError as exc:
        adapter.close()
        raise UsageError(
            f"--kernel auto: the implementation says it is KVM {claimed}: {exc}"
        ) from None
    return adapter, claimed


def _certify(spec: Spec, request: Request, opened: Adapter | None) -> int:
    placeholder = spec.host_profiles[0].name if request.host == "auto" else request.host
    profile = resolve_profile(spec, request.kernel, placeholder, request.arch)
    if not Oracle(spec, profile).registers:  # the filter's absence alone is not worth a run
        raise UsageError(
            f"the spec defines no firmware register for {profile.arch} {profile.kernel}: "
            "nothing to certify"
            + (f" (its stable series {profile.kernel}.y has some)" if not profile.stable else "")
        )
    if request.sign is not None:
        check_signing_key(request.sign)  # before the run: a passphrase prompt would come after it
    kernel = parse_kernel_name(spec, request.kernel)
    report = request.report or Path("reports") / "-".join(
        (request.adapter, request.arch, str(kernel), request.host)
    )
    folder = ReportFolder(report)
    if request.kernel not in (str(kernel), *SELF_EXPLAINING):  # say what a uname -r is judged as
        print(f"kvm-fwspec: {kernel.how}")
    try:
        host, code = _run_suite(spec, profile, request, folder.staging, opened)
        document = _this_runs_document(spec, profile, host, folder.staging, code)
        if request.sign is not None:
            sign_results(folder.staging / RESULTS, request.sign)
        folder.publish()
    finally:
        folder.discard()
    _show_failures(document)
    conforms = document["summary"]["conforms"]
    qualifier = _not_applicable(document)
    verdict = "CONFORMS" if conforms else "DOES NOT CONFORM"
    if qualifier:
        verdict += f" ({'--require-all: ' if request.require_all else ''}{qualifier})"
    summary, run = document["summary"], document["run"]
    print(
        f"kvm-fwspec: {verdict}: {run['implementation']} as {run['arch']} {run['kernel']} "
        f"host={run['host-profile']}: {summary['pass']} pass, {summary['fail']} fail, "
        f"{summary['not-applicable']} not-applicable, {summary['error']} error; "
        f"report in {os.fspath(report)}"
    )
    return 0 if conforms else 1


def _run_suite(
    spec: Spec, profile: Profile, request: Request, staging: Path, opened: Adapter | None
) -> tuple[str, pytest.ExitCode | int]:
    """Greet the adapter (unless `opened`, greeted already, whose caller closes it), resolve
    `--host auto` from what it reports, run pytest into `staging`; the resolved host
    profile's name and pytest's exit code."""
    adapter = opened or greeted_adapter(
        request.adapter, spec, profile, request.options, kernel_from_hello=request.judged_as_named
    )
    try:
        host = reported_host(adapter, spec) if request.host == "auto" else request.host
        resolve_profile(spec, request.kernel, host, request.arch)  # a reported host is valid
        parallel = bool(request.workers and request.workers != "0")
        if parallel and PARALLEL_FEATURE not in adapter.capabilities().features:
            print(
                f"kvm-fwspec: running serially: adapter '{request.adapter}' answers faster "
                "than xdist workers start"
            )
            parallel = False
        args = _pytest_arguments(request, host, staging)
        if parallel:
            args += ["-n", str(request.workers), "--dist", "loadgroup"]
        # Under xdist each worker opens its own adapter; in one process the greeted one is
        # handed over, so a booted guest or started agent is not started twice.
        plugins = [] if parallel else [OpenedAdapter(adapter)]
        code = pytest.main(args, plugins=plugins)
    finally:
        if opened is None:
            adapter.close()
    if code == pytest.ExitCode.INTERRUPTED:
        raise KeyboardInterrupt  # the CLI says so; the report folder was left as it was
    return host, code


def _pytest_arguments(request: Request, host: str, staging: Path) -> list[str]:
    args = [
        "--pyargs", "kvm_fwspec.conformance.suite",
        "-p", "no:cacheprovider",
        "-p", "no:benchmark",
        "-p", "no:hypothesispytest",  # would import hypothesis (0.8 s) to summarise no test of its
        # The verdict, progress and failures are certify's to print, one line each; pytest's
        # per-test report of 600 cases would bury them. Internal errors still reach stderr.
        "-p", "no:terminal",
        # Independent of the ini file of whatever directory certify runs in; the suite was
        # imported before pytest starts, so it is not assertion-rewritten.
        "-o", "addopts=", "-o", "filterwarnings=default", "--assert=plain",
        f"--fwspec-adapter={request.adapter}", f"--fwspec-kernel={request.kernel}",
        f"--fwspec-host={host}", f"--fwspec-arch={request.arch}", f"--fwspec-report={staging}",
    ]  # fmt: skip
    if not request.quiet:
        args.append("--fwspec-progress")
    if request.require_all:
        args.append("--fwspec-require-all")
    if request.judged_as_named:
        args.append("--fwspec-judged-as-named")
    return args + [f"--fwspec-option={key}={value}" for key, value in request.options.items()]


def _this_runs_document(
    spec: Spec, profile: Profile, host: str, staging: Path, code: pytest.ExitCode | int
) -> dict[str, Any]:
    """The results this run wrote, if it completed and executed its cases; otherwise one line
    saying why there is no verdict."""
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        raise UsageError(
            f"the suite stopped before it finished (pytest exit code {int(code)}); "
            "the report folder was left as it was"
        )
    results = staging / RESULTS
    if not results.is_file():
        raise UsageError("the run wrote no results; the report folder was left as it was")
    document = load_document(results)
    required = len(build_cases(spec, resolve_profile(spec, profile.kernel, host, profile.arch)))
    summary = document["summary"]
    if summary["total"] != required:
        raise UsageError(f"the run judged {summary['total']} of the {required} cases; no verdict")
    if summary["pass"] + summary["fail"] == 0:
        first = next(
            (c["reason"] for c in document["cases"] if c["outcome"] == "error"),
            next((c["reason"] for c in document["cases"]), ""),
        )
        raise UsageError(f"no case executed, so there is no verdict: {first}")
    return document


def _not_applicable(document: dict[str, Any]) -> str:
    """`28 of 527 cases not applicable: needs guest-calls`, or empty when all applied."""
    skipped = document["summary"]["not-applicable"]
    if not skipped:
        return ""
    lacking = ", ".join(lacking_capabilities(document))
    return f"{skipped} of {document['summary']['total']} cases not applicable: needs {lacking}"


def _show_failures(document: dict[str, Any]) -> None:
    bad = [c for c in document["cases"] if c["outcome"] in ("fail", "error")]
    for case in bad[:FAILURES_SHOWN]:
        print(f"kvm-fwspec: {case['outcome']}: {case['id']}: {case['reason']}")
    if len(bad) > FAILURES_SHOWN:
        print(f"kvm-fwspec: ... and {len(bad) - FAILURES_SHOWN} more in report.html")
