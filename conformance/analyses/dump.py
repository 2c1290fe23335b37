"""`kvm-fwspec dump`: save a VM's firmware registers exactly as a VMM would, and read such a
file back for `migrate-check`, refusing anything that is not one.

A fresh VM with one vcpu initialised with the given features; KVM_GET_REG_LIST for the
firmware classes, in KVM's order, then KVM_GET_ONE_REG of each id. An optional PSCI version
is written first, as a VMM pinning the version would.

A dump read back is checked whole before any of it is believed: every problem is one line
naming the file and the JSON path, so a hand-edited or foreign file (a VMM's full register
list, a kernel written as a number) is refused for what it is, never judged as a migration.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvm_fwspec.codegen.atomic import write_atomically
from kvm_fwspec.conformance.adapters import Adapter, reported_host
from kvm_fwspec.conformance.adapters.agent import AgentError
from kvm_fwspec.conformance.greeting import greeted_adapter
from kvm_fwspec.conformance.oracle import Access, Oracle
from kvm_fwspec.conformance.profile import (
    LEVELS_PREFIX,
    Profile,
    level_registers,
    levels_profile,
    observed_host,
    resolve_profile,
)
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Spec

FORMAT = "kvm-fwspec-dump/1"
FEATURES = ("psci-0.2",)
U64 = 1 << 64
MOST_PROBLEMS = 20  # a file wrong everywhere is reported by its first problems, and a count


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


def check_output(path: Path) -> None:
    """Refuse, before any work, an --output that cannot become the dump file: a folder, a
    device, a path under a file, or a folder nothing can be created in (/proc). The probe is
    an unnamed temporary file, gone when closed: nothing is left behind."""
    try:
        _check_output(path)
    except OSError as exc:  # a name longer than the system allows, a folder we may not enter
        raise UsageError(f"--output {path}: {exc.strerror}") from None


def _check_output(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"--output {path} is a folder; name a file, e.g. {path / 'dump.json'}")
    if path.exists() and not path.is_file():
        raise UsageError(f"--output {path} exists and is not a regular file")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the dump creates the missing folders below this one
    if not folder.is_dir():
        raise UsageError(f"--output {path}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"--output {path}: cannot write in {folder}: {exc.strerror}") from None


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
    kernel, host, arch = profile_name
    check_output(output)
    features = parse_features(features_text)
    spec = load_spec()
    first_host = spec.host_profiles[0].name if host == "auto" else host
    profile = resolve_profile(spec, kernel, first_host, arch)
    adapter = greeted_adapter(adapter_name, profile, options)
    try:
        if host == "auto":
            profile = resolve_profile(spec, kernel, reported_host(adapter, spec), arch)
        else:
            check_host(spec, adapter.capabilities().host_levels, profile)
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
        return set(outcome) == {"ids"} and isinstance(ids, list) and all(map(_is_u64, ids))
    return set(outcome) == {"value"} and _is_u64(outcome["value"])


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
        Access(
            op="set",
            reg_id=step["reg"],
            vcpu_initialized=True,
            psci_02="psci-0.2" in program["features"],
            has_run=False,
            stored=oracle.reset_values(),
            value=step["value"],
        )
    )
    if decision is None:
        return f"{refused}; the spec has no rule for that write"
    if decision.errno == errno:
        return f"{refused}, as the spec says ({decision.rule.id}: {' '.join(decision.rule.doc.split())})"
    expected = f"errno {decision.errno}" if decision.errno else "accepted"
    return f"{refused}, where the spec says {expected} ({decision.rule.id})"


# Reading a dump back.


@dataclass(frozen=True, kw_only=True)
class SavedDump:
    """A dump file, checked: where it ran and its firmware registers in the saved order."""

    profile: Profile
    features: tuple[str, ...]
    registers: dict[int, int]
    implementation: str


REQUIRED = ("format", "kernel", "host-profile", "features", "registers")
OPTIONAL = ("arch", "implementation", "provenance", "psci-version-set")


class _Problems:
    """Problems found in one file, each one line: `FILE: PATH: message`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.lines.append(
            f"{self.path}: {where}: {message}" if where else f"{self.path}: {message}"
        )

    def raise_any(self) -> None:
        if not self.lines:
            return
        shown = self.lines[:MOST_PROBLEMS]
        if len(self.lines) > MOST_PROBLEMS:
            shown.append(f"{self.path}: and {len(self.lines) - MOST_PROBLEMS} more problems")
        raise UsageError("\n".join(shown))


def _is_u64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < U64


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _load_json(path: Path, problems: _Problems) -> Any:
    """The file's JSON, with a key given twice in one object as a problem (json keeps the
    last silently) and nesting too deep for the parser as one line, not a traceback."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                problems.add("", f"key '{key}' appears twice in one object")
            seen[key] = value
        return seen

    try:
        return json.loads(path.read_bytes(), object_pairs_hook=pairs)
    except OSError as exc:
        problems.add("", f"cannot read: {exc.strerror}")
    except json.JSONDecodeError as exc:
        problems.add("", f"not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}")
    except UnicodeDecodeError:
        problems.add("", "not JSON: not UTF-8 text")
    except RecursionError:
        problems.add("", "not a dump: nested too deeply (a dump is three levels deep)")
    except ValueError:  # Python reads no integer of more than 4300 digits
        problems.add("", "not a dump: it holds a number of thousands of digits")
    return None


def read_dump(spec: Spec, path: Path) -> SavedDump:
    """A file written by `kvm-fwspec dump`, checked whole; UsageError lists every problem."""
    problems = _Problems(path)
    document = _load_json(path, problems)
    problems.raise_any()
    if not isinstance(document, dict):
        problems.add("", f"not a dump: the file holds {_kind(document)}, not an object")
        problems.raise_any()
    for key in REQUIRED:
        if key not in document:
            problems.add("", f"key '{key}' is missing")
    for key in sorted(set(document) - set(REQUIRED) - set(OPTIONAL)):
        problems.add(key, "not a key of a dump")
    if "format" in document and document["format"] != FORMAT:
        problems.add("format", f"{document['format']!r} is not {FORMAT!r}")
    profile = _profile(spec, document, problems)
    features = _features(document.get("features", []), problems)
    for key, check in (("implementation", _is_str), ("provenance", _is_str_map)):
        if key in document and not check(document[key]):
            problems.add(
                key, f"must be {'a string' if check is _is_str else 'an object of strings'}"
            )
    pinned = document.get("psci-version-set")
    if pinned is not None and not _is_u64(pinned):
        problems.add("psci-version-set", f"{pinned!r} is not null or a 64-bit register value")
    registers = _registers(spec, document.get("registers", []), profile, problems)
    problems.raise_any()
    assert profile is not None  # every way it can be None added a problem
    return SavedDump(
        profile=profile,
        features=features,
        registers=registers,
        implementation=str(document.get("implementation", "unknown")),
    )


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _profile(spec: Spec, document: dict[str, Any], problems: _Problems) -> Profile | None:
    """Where the dump ran, each name checked on its own so each problem names its key."""
    checks: dict[str, Callable[[str], object]] = {
        "kernel": lambda text: parse_kernel_name(spec, text),
        "host-profile": lambda text: _host(spec, text),
        "arch": lambda text: _arch(spec, text),
    }
    names: dict[str, str] = {}
    for key, check in checks.items():
        if key not in document and key != "arch":
            continue  # reported as missing
        value = document.get(key, "arm64")  # dumps before `arch` were all arm64
        if not isinstance(value, str):
            hint = f'; write the release as a string, "{value}"' if key == "kernel" else ""
            problems.add(key, f"{value!r} is {_kind(value)}, not a string{hint}")
            continue
        try:
            check(value)
        except UsageError as exc:
            problems.add(key, str(exc))
            continue
        names[key] = value
    if len(names) < len(checks):
        return None
    try:
        return resolve_profile(spec, names["kernel"], names["host-profile"], names["arch"])
    except UsageError as exc:  # what remains: no KVM on that arch in that release
        problems.add("arch", str(exc))
        return None


def _host(spec: Spec, name: str) -> None:
    if name.startswith(LEVELS_PREFIX):
        levels_profile(spec, name)
    elif name not in {h.name for h in spec.host_profiles}:
        known = ", ".join(h.name for h in spec.host_profiles)
        raise UsageError(f"host profile '{name}' is not one of: {known}, or {LEVELS_PREFIX}A/B/C")


def _arch(spec: Spec, name: str) -> None:
    if name not in {a.name for a in spec.architectures}:
        known = ", ".join(a.name for a in spec.architectures)
        raise UsageError(f"architecture '{name}' is not one of: {known}")


def _features(value: Any, problems: _Problems) -> tuple[str, ...]:
    if not isinstance(value, list):
        problems.add("features", f"must be a list, not {_kind(value)}")
        return ()
    for i, feature in enumerate(value):
        if feature not in FEATURES:
            problems.add(
                f"features[{i}]", f"{feature!r} is not a vcpu feature ({', '.join(FEATURES)})"
            )
    return tuple(f for f in value if f in FEATURES)


def _registers(
    spec: Spec, value: Any, profile: Profile | None, problems: _Problems
) -> dict[int, int]:
    """The saved registers in their order: each a firmware register id of the dump's arch,
    once, with a 64-bit value."""
    if not isinstance(value, list):
        problems.add("registers", f"must be a list, not {_kind(value)}")
        return {}
    layout = spec.layout("reg-id")
    classes = {v.value: v for v in layout.field("class").values}
    arches = {v.value: v.name for v in layout.field("arch").values}
    registers: dict[int, int] = {}
    first: dict[int, int] = {}
    for i, entry in enumerate(value):
        where = f"registers[{i}]"
        if not isinstance(entry, dict):
            problems.add(where, f"must be an object with id and value, not {_kind(entry)}")
            continue
        for key in sorted(set(entry) - {"id", "value"}):
            problems.add(f"{where}.{key}", "not a key of a saved register (id, value)")
        for key in ("id", "value"):
            if key not in entry:
                problems.add(where, f"key '{key}' is missing")
            elif not _is_u64(entry[key]):
                problems.add(f"{where}.{key}", _not_u64(entry[key]))
        reg_id, saved = entry.get("id"), entry.get("value")
        if not isinstance(reg_id, int) or not _is_u64(reg_id):
            continue
        register_class = classes.get(layout.field("class").extract(reg_id))
        if register_class is None or not register_class.firmware:
            kind = f"a {register_class.name} id" if register_class else "an id of no known class"
            firmware = ", ".join(v.c_name or v.name for v in classes.values() if v.firmware)
            problems.add(
                f"{where}.id",
                f"{reg_id:#018x} is {kind}, outside the firmware registers ({firmware}); "
                "a dump holds only those",
            )
            continue
        arch = arches.get(layout.field("arch").extract(reg_id))
        if profile is not None and arch != profile.arch:
            problems.add(
                f"{where}.id",
                f"{reg_id:#018x} is not an {profile.arch} id (the dump's arch)",
            )
            continue
        if reg_id in first:
            problems.add(
                f"{where}.id", f"{reg_id:#018x} was saved already, as registers[{first[reg_id]}]"
            )
            continue
        first[reg_id] = i
        if isinstance(saved, int) and _is_u64(saved):
            registers[reg_id] = saved
    return registers


def _not_u64(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value} does not fit in 64 bits" if value >= 0 else f"{value} is negative"
    return f"{value!r} is {_kind(value)}, not a 64-bit integer"
