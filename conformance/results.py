"""The results of a run: one JSON document, JUnit XML beside it, and a human HTML report.

The JSON carries provenance (suite and spec versions and hashes, adapter, profile, date,
source tree state) and a digest over its canonical form, so `verify` can tell an edited or
incomplete results file from a genuine one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from kvm_fwspec.codegen import __version__
from kvm_fwspec.codegen.atomic import write_atomically
from kvm_fwspec.codegen.checkout import checkout_root
from kvm_fwspec.conformance.adapters import Capabilities
from kvm_fwspec.conformance.page_templates import environment
from kvm_fwspec.conformance.profile import Profile
from kvm_fwspec.conformance.verdicts import OUTCOMES
from kvm_fwspec.spec.model import Spec

SCHEMA_PATH = resources.files("kvm_fwspec.conformance") / "schemas" / "results.schema.json"
FORMAT = "kvm-fwspec-results/2"


def source_tree() -> dict[str, Any]:
    """The suite's git commit and whether the tree had local changes (certification wants none);
    unknown for an installed wheel, which has no tree."""
    root = checkout_root()
    if root is None:
        return {"commit": None, "clean": None}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "clean": None}
    return {"commit": commit.stdout.strip(), "clean": status.stdout.strip() == ""}


def canonical_digest(document: dict[str, Any]) -> str:
    """sha256 over the document without its digest, keys sorted, no whitespace."""
    body = {k: v for k, v in document.items() if k != "digest"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def conforms(counts: Mapping[str, int], total: int, require_all: bool) -> bool:
    """The verdict the outcomes earn: no failure, no error, some case judged, and under
    `--require-all` (full certification) no case left not applicable either."""
    complete = counts.get("not-applicable", 0) == 0 or not require_all
    return counts.get("fail", 0) == 0 and counts.get("error", 0) == 0 and total > 0 and complete


def build_document(
    spec: Spec,
    profile: Profile,
    adapter: str,
    capabilities: Capabilities,
    cases: list[dict[str, Any]],
    require_all: bool = False,
) -> dict[str, Any]:
    cases = sorted(cases, key=lambda c: c["id"])
    counts = Counter(c["outcome"] for c in cases)
    document: dict[str, Any] = {
        "format": FORMAT,
        "run": {
            "suite-version": __version__,
            "spec-files": {f.name: f.sha256 for f in spec.files},
            "adapter": adapter,
            "implementation": capabilities.implementation,
            "capabilities": sorted(capabilities.features),
            "implementation-provenance": capabilities.provenance,
            "arch": profile.arch,
            "kernel": profile.kernel,
            "host-profile": profile.host.name,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "python": platform.python_version(),
            "command": sys.argv,
            "source-tree": source_tree(),
            "require-all": require_all,
        },
        "summary": {
            **{outcome: counts.get(outcome, 0) for outcome in OUTCOMES},
            "total": len(cases),
            "conforms": conforms(counts, len(cases), require_all),
        },
        "cases": cases,
    }
    document["digest"] = canonical_digest(document)
    return document


def junit_xml(document: dict[str, Any]) -> bytes:
    """One testcase per kvm_fwspec.conformance case, classname = its rule, for CI systems."""
    summary = document["summary"]
    suite = ET.Element(
        "testsuite",
        name=f"kvm-fwspec {document['run']['adapter']} {document['run']['kernel']}",
        tests=str(summary["total"]),
        failures=str(summary["fail"]),
        errors=str(summary["error"]),
        skipped=str(summary["not-applicable"]),
    )
    for case in document["cases"]:
        element = ET.SubElement(
            suite, "testcase", classname=case["rule"], name=case["id"], time=str(case["duration"])
        )
        if case["outcome"] == "fail":
            ET.SubElement(element, "failure", message=case["reason"])
        elif case["outcome"] == "error":
            ET.SubElement(element, "error", message=case["reason"])
        elif case["outcome"] == "not-applicable":
            ET.SubElement(element, "skipped", message=f"not applicable: {case['reason']}")
    ET.indent(suite)
    data: bytes = ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def lacking_capabilities(document: dict[str, Any]) -> list[str]:
    """The capabilities the run's not-applicable cases needed and its implementation lacked,
    sorted: what `needs ...` in their reasons names."""
    skipped = [c for c in document["cases"] if c["outcome"] == "not-applicable"]
    return sorted(
        {need.strip() for c in skipped for need in c["reason"].removeprefix("needs ").split(",")}
    )


def html_report(document: dict[str, Any]) -> str:
    by_rule: dict[str, Counter[str]] = {}
    for case in document["cases"]:
        by_rule.setdefault(case["rule"], Counter())[case["outcome"]] += 1
    failures: dict[str, list[dict[str, Any]]] = {}
    for case in document["cases"]:
        if case["outcome"] in ("fail", "error"):
            failures.setdefault(case["rule"], []).append(case)
    env = environment(html=True)
    return env.get_template("report.html.j2").render(
        doc=document,
        by_rule=dict(sorted(by_rule.items())),
        failures=dict(sorted(failures.items())),
        outcomes=OUTCOMES,
        lacking=lacking_capabilities(document),
    )


def write_report(directory: Path, document: dict[str, Any]) -> list[Path]:
    """The three files, each replaced whole (results.json last, so a reader that finds it
    finds its JUnit and HTML beside it)."""
    written = {
        directory / "results.junit.xml": junit_xml(document),
        directory / "report.html": html_report(document).encode(),
        directory / "results.json": (json.dumps(document, indent=1) + "\n").encode(),
    }
    for path, data in written.items():
        write_atomically(path, data)
    return list(written)
