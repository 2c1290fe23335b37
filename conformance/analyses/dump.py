"""`kvm-fwspec dump`: save a VM's firmware registers exactly as a VMM would (dump_file.py
reads such a file back).

A fresh VM with one vcpu initialised with the given features; KVM_GET_REG_LIST for the
firmware classes, in KVM's order, then KVM_GET_ONE_REG of each id. An optional PSCI version
is written first, as a VMM pinning the version would.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvm_fwspec.codegen.atomic import write_atomically
from kvm_fwspec.conformance.adapters import Adapter, reported_host
from kvm_fwspec.conformance.adapters.agent import AgentError
from kvm_fwspec.conformance.greeting import greeted_adapter, greeted_for_its_kernel
from kvm_fwspec.conformance.oracle import Access, Oracle
from kvm_fwspec.conformance.profile import (
    LEVELS_PREFIX,
    Profile,
    level_registers,
    observed_host,
    resolve_profile,
)
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

FORMAT = "kvm-fwspec-dump/1"
FEATURES = ("psci-0.2",)
U64 = 1 << 64


def parse_features(text: str) -> tuple[str, ...]:
    if text in ("psci-0.2", "0.2"):
        return FEATURES
    if text in ("none", "psci-0.1", "0.1", ""):
        return ()
    raise UsageError(f"vcpu features '{text}': use psci-0.2 or none")


def parse_psci_value(text: str, what: str) -> int:
    """A PSCI version as the register holds it: 0x10001 or 65537 (major << 16 | minor). A
    version name such as 1.1 is refused with its encoding: the register takes any 64-bit
    value, refused ones included, and a value is what is written."""
    if re.fullmatch(r"\d+\.\d+", text):
        major, minor = (int(part) for part in text.split("."))
        raise UsageError(
            f"{what} '{text}' is a version name, not a register value: PSCI {text} is "
            f"{major << 16 | minor:#x} (major << 16 | minor)"
        )
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(
            f"{what} '{text}' is not a register value such as 0x10001 (PSCI 1.1)"
        ) from None
    if not 0 <= value < U64:
        raise UsageError(f"{what} '{text}' does not fit in the 64-bit register")
    return value


def check_output(path: Path, option: str = "--output", example: str = "dump.json") -> None:
    """Refuse, before any work, an `option` path that cannot become the file it names: a
    folder, a device, a path under a file, or a folder nothing can be created in (/proc). The
    probe is an unnamed temporary file, gone when closed: nothing is left behind."""
    try:
        _check_output(path, option, example)
    except OSError as exc:  # a name longer than the system allows, a folder we may not enter
        raise UsageError(f"{option} {path}: {exc.strerror}") from None


def _check_output(path: Path, option: str, example: str) -> None:
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; name a file, e.g. {path / example}")
    if path.exists() and not path.is_file():
        raise UsageError(f"{option} {path} exists and is not a regular file")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the file's missing folders are created below this one
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in {folder}: {exc.strerror}") from None


def dump(
    adapter_name: str,
    profile_name: tuple[str, str, str],
    features_text: str,
    psci: int | None,
    options: dict[str, str],
    output: Path,
) -> dict[str, Any]:
    """Dump through `adapter_name` a fresh VM of (kernel, host, arch) into `output`. The file
    records the kernel and host the implementation is: one that says it is another kernel
    (greeted_adapter), or reports another host's levels, is refused rather than recorded
    under the profile's names."""
    check_output(output)
    features = parse_features(features_text)
    spec = load_spec()
    adapter, profile = greeted_as_host(adapter_name, spec, profile_name, options)
    try:
        document = dump_with(adapter, spec, profile, features, psci)
    except AgentError as exc:
        raise UsageError(f"the implementation could not be dumped: {exc}") from None
    finally:
        adapter.close()
    try:
        write_atomically(output, json.dumps(document, indent=1) + "\n")
    except OSError as exc:
        raise UsageError(f"--output {output}: {exc.strerror}") from None
    return document


def greeted_as_host(
    adapter_name: str, spec: Spec, profile_name: tuple[str, str, str], options: Mapping[str, str]
) -> tuple[Adapter, Profile]:
    """The adapter, greeted, and the profile of the host it is: `--host auto` takes the host
    its hello reports, and a named host it does not report is refused (check_host), so what
    is recorded of an implementation is what it is, never the profile's names for another;
    `--kernel auto` takes the kernel its hello reports (`uname -r` on real KVM)."""
    kernel, host, arch = profile_name
    first_host = spec.host_profiles[0].name if host == "auto" else host
    if kernel == "auto":
        adapter, kernel = greeted_for_its_kernel(adapter_name, spec, first_host, arch, options)
    else:
        named = resolve_profile(spec, kernel, first_host, arch)
        adapter = greeted_adapter(adapter_name, spec, named, options)
    try:
        profile = resolve_profile(spec, kernel, first_host, arch)
        if host == "auto":
            profile = resolve_profile(spec, kernel, reported_host(adapter, spec), arch)
        else:
            check_host(spec, adapter.capabilities().host_levels, profile)
    except BaseException:
        adapter.close()
        raise
    return adapter, profile


def reported_kernel(adapter: Adapter) -> str:
    """The kernel an adapter's hello named (greeted_adapter has refused one that named none)."""
    kernel = adapter.capabilities().kernel
    assert kernel is not None
    return kernel


def check_host(spec: Spec, reported: dict[str, int] | None, profile: Profile) -> None:
    """Refuse an implementation whose workaround registers report another host than --host
    names: its dump would be saved, and migrate-checked, as a host it is not. Only the
    registers it reports are compared (a kernel without WORKAROUND_3 reports no level for it);
    one that reports none (the in-process reference, an agent without host-levels) says
    nothing to contradict --host."""
    if not reported:
        return
    expected = {name: level.value for name, level in profile.host.levels.items()}
    if all(reported[name] == expected[name] for name in reported if name in expected):
        return
    try:
        named = observed_host(spec, reported)
    except UsageError:  # a level the spec does not define: show the numbers
        named = ""
    shown = _levels_text(spec, reported)
    if named and not named.startswith(LEVELS_PREFIX):
        shown += f" ({named})"
    suggestion = f"--host {named} or " if named else ""
    raise UsageError(
        f"the implementation's workaround registers report {shown}, not --host "
        f"{profile.host.name}'s {_levels_text(spec, expected)}: give {suggestion}--host auto"
    )


def _levels_text(spec: Spec, levels: dict[str, int]) -> str:
    """Levels as `levels:A/B/C` spells them, in the spec's order of the workaround registers
    (a number where the spec names no such level, `-` for a register not reported)."""
    names = []
    for register in level_registers(spec):
        value = levels.get(register.name)
        named = next((v.name for v in register.values if v.value == value), None)
        names.append("-" if value is None else named or str(value))
    return LEVELS_PREFIX + "/".join(names)


def dump_with(
    adapter: Adapter, spec: Spec, profile: Profile, features: tuple[str, ...], psci: int | None
) -> dict[str, Any]:
    """The dump document of one fresh VM, through an adapter that is already open."""
    capabilities = adapter.capabilities()
    if capabilities.arch != profile.arch:
        raise UsageError(
            f"the implementation is {capabilities.arch}, so it cannot be dumped as "
            f"{profile.arch} (use --arch {capabilities.arch})"
        )
    classes = sorted({r.register_class for r in spec.registers}, key=lambda c: c.value)
    class_field = spec.layout("reg-id").field("class")
    prefix = (
        []
        if psci is None
        else [{"op": "set", "vcpu": 0, "reg": _psci_id(spec, profile.arch), "value": psci}]
    )
    listing = [
        {"op": "list", "vcpu": 0, "mask": class_field.mask, "match": c.value << class_field.low}
        for c in classes
    ]
    program = {"vcpus": 1, "features": list(features), "steps": prefix + listing}
    observed = adapter.run_programs([program])[0]
    _check_outcomes(spec, profile, program, observed)
    ids = [reg_id for outcome in observed[len(prefix) :] for reg_id in outcome["ids"]]
    _check_listed(spec, profile.arch, listing, observed[len(prefix) :])
    gets = [{"op": "get", "vcpu": 0, "reg": reg_id} for reg_id in ids]
    program = {"vcpus": 1, "features": list(features), "steps": prefix + gets}
    values = adapter.run_programs([program])[0]
    _check_outcomes(spec, profile, program, values)
    return {
        "format": FORMAT,
        "implementation": capabilities.implementation,
        "provenance": capabilities.provenance,
        "kernel": profile.kernel,
        "arch": profile.arch,
        "host-profile": profile.host.name,
        "features": list(features),
        "psci-version-set": psci,
        "registers": [
            {"id": reg_id, "value": v["value"]}
            for reg_id, v in zip(ids, values[len(prefix) :], strict=True)
        ],
    }


def _psci_id(spec: Spec, arch: str) -> int:
    register = next(r for r in spec.registers if r.kind == "psci-version")
    if arch not in register.ids:
        raise UsageError(f"{register.c_name} has no id on {arch}")
    return int(register.ids[arch])


def _check_listed(
    spec: Spec, arch: str, listing: list[dict[str, Any]], observed: list[dict[str, Any]]
) -> None:
    """Never write one architecture's ids under another's name, an id of a class that was
    not asked for, or one id twice (read_dump would refuse the file it made)."""
    arch_field = spec.layout("reg-id").field("arch")
    wanted = next(v.value for v in arch_field.values if v.name == arch)
    seen: set[int] = set()
    for step, outcome in zip(listing, observed, strict=True):
        for reg_id in outcome["ids"]:
            if arch_field.extract(reg_id) != wanted:
                raise UsageError(
                    f"the implementation listed {reg_id:#018x}, which is not an {arch} id"
                )
            if reg_id & step["mask"] != step["match"]:
                raise UsageError(
                    f"the implementation listed {reg_id:#018x} when asked for the ids with "
                    f"id & {step['mask']:#x} == {step['match']:#x}, which it is not"
                )
            if reg_id in seen:
                raise UsageError(f"the implementation listed {reg_id:#018x} twice")
            seen.add(reg_id)


# What each step answers when it succeeds, as docs/agent-protocol.md writes it.
ANSWERS = {"set": '{"ok": true}', "list": '{"ids": [ID, ...]}', "get": '{"value": N}'}
QUOTED_AT_MOST = 120  # characters of a malformed answer quoted in its error line


def _well_formed(op: str, outcome: dict[str, Any]) -> bool:
    if set(outcome) == {"errno"}:
        return isinstance(outcome["errno"], str)
    if set(outcome) == {"error"}:
        return True
    if op == "set":
        return outcome == {"ok": True}
    if op == "list":
        ids = outcome.get("ids")
        return set(outcome) == {"ids"} and isinstance(ids, list) and all(map(is_u64, ids))
    return set(outcome) == {"value"} and is_u64(outcome["value"])


def _check_outcomes(
    spec: Spec, profile: Profile, program: dict[str, Any], observed: list[dict[str, Any]]
) -> None:
    """Every outcome is the protocol's answer to its step, and a success: anything else is one
    line naming the step and what the implementation answered (an adapter that does not check
    the shape of what it relays, a buggy agent), never a KeyError from reading it."""
    steps = program["steps"]
    if len(observed) != len(steps):
        raise UsageError(
            f"the implementation answered {len(observed)} outcomes to a program of "
            f"{len(steps)} steps"
        )
    for index, (step, outcome) in enumerate(zip(steps, observed, strict=True)):
        what = f"step {index} ({step['op']}" + (
            f" of {step['reg']:#018x})" if "reg" in step else ")"
        )
        if not isinstance(outcome, dict) or not _well_formed(step["op"], outcome):
            answer = json.dumps(outcome)
            if len(answer) > QUOTED_AT_MOST:
                answer = answer[:QUOTED_AT_MOST] + "..."
            raise UsageError(
                f"the implementation answered {answer} to {what}, which is not an answer to "
                f'it: {ANSWERS[step["op"]]} or {{"errno": NAME}}'
            )
        if "error" in outcome:
            raise UsageError(f"the implementation could not be read: {what}: {outcome['error']}")
        if "errno" in outcome and step["op"] == "set":
            raise UsageError(_refused_pin(spec, profile, program, outcome["errno"]))
        if "errno" in outcome:
            raise UsageError(
                f"the implementation could not be read: {what} failed with {outcome['errno']}"
            )


def _refused_pin(spec: Spec, profile: Profile, program: dict[str, Any], errno: str) -> str:
    """Why a --psci-version was refused: the value, the kernel, and the spec's rule for it
    (as migrate-check names it for a side's pin), or that the spec expected otherwise."""
    step = program["steps"][0]
    refused = f"--psci-version {step['value']:#x} was refused with {errno} by {profile.label}"
    oracle = Oracle(spec, profile)
    decision = oracle.decide(
        Access.before_first_run(
            "set",
            step["reg"],
            "psci-0.2" in program["features"],
            oracle.reset_values(),
            step["value"],
        )
    )
    if decision is None:
        return f"{refused}; the spec has no rule for that write"
    if decision.errno == errno:
        return f"{refused}, as the spec says ({decision.rule.id}: {' '.join(decision.rule.doc.split())})"
    expected = f"errno {decision.errno}" if decision.errno else "accepted"
    return f"{refused}, where the spec says {expected} ({decision.rule.id})"


def is_u64(value: Any) -> bool:
    """A register id or value as KVM carries it: an unsigned 64-bit integer, never a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < U64
