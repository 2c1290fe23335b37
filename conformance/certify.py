"""`kvm-fwspec certify`: run the suite against an adapter and write the report."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvm_fwspec.conformance.adapters import adapter_names, load_adapter
from kvm_fwspec.conformance.plugin import load_document
from kvm_fwspec.conformance.profile import resolve_profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec

# The adapter declares this feature when its cases are slow enough (real KVM, remote agents)
# that xdist workers pay for their start-up; in-process the reference is faster serial.
PARALLEL_FEATURE = "parallel"


def worth_parallel(
    adapter: str, kernel: str, host: str, arch: str, options: dict[str, str]
) -> bool:
    profile = resolve_profile(load_spec(), kernel, host, arch)
    probe = load_adapter(adapter, profile, options)
    try:
        return PARALLEL_FEATURE in probe.capabilities().features
    finally:
        probe.close()


def certify(
    adapter: str,
    kernel: str,
    host: str,
    arch: str,
    options: dict[str, str],
    workers: str | None,
    report: Path,
) -> int:
    """Run the suite; print the verdict line; 0 when the implementation conforms."""
    spec = load_spec()
    resolve_profile(
        spec, kernel, spec.host_profiles[0].name if host == "auto" else host, arch
    )  # fail early
    if adapter not in adapter_names():
        raise UsageError(f"no adapter '{adapter}'; installed: {', '.join(adapter_names())}")
    args = [
        "--pyargs", "kvm_fwspec.conformance.suite",
        "-p", "no:cacheprovider",
        "-p", "no:benchmark",
        "-p", "no:hypothesispytest",  # would import hypothesis (0.8 s) to summarise no test of its
        "-q", "--no-header",
        # Independent of the ini file of whatever directory certify runs in; the suite was
        # imported before pytest starts, so it is not assertion-rewritten.
        "-o", "addopts=", "-o", "filterwarnings=default", "--assert=plain",
        f"--fwspec-adapter={adapter}", f"--fwspec-kernel={kernel}", f"--fwspec-host={host}",
        f"--fwspec-arch={arch}", f"--fwspec-report={report}",
    ]  # fmt: skip
    args += [f"--fwspec-option={key}={value}" for key, value in options.items()]
    if workers and workers != "0":
        if worth_parallel(adapter, kernel, host, arch, options):
            args += ["-n", workers, "--dist", "loadgroup"]
        else:
            print(
                f"kvm-fwspec: running serially: adapter '{adapter}' answers faster than xdist workers start"
            )
    code = pytest.main(args)
    if code == pytest.ExitCode.INTERRUPTED:
        raise KeyboardInterrupt  # the CLI says so; the run wrote no results
    results = report / "results.json"
    if not results.is_file():
        raise UsageError(f"the run wrote no results (pytest exit code {int(code)})")
    document = load_document(results)
    summary = document["summary"]
    print(
        f"kvm-fwspec: {'CONFORMS' if summary['conforms'] else 'DOES NOT CONFORM'}: {document['run']['implementation']} "
        f"as {arch} {document['run']['kernel']} host={host}: {summary['pass']} pass, {summary['fail']} fail, "
        f"{summary['not-applicable']} not-applicable, {summary['error']} error; report in {os.fspath(report)}"
    )
    return 0 if summary["conforms"] else 1
