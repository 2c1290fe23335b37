"""A file written by `kvm-fwspec dump`, read back for `migrate-check` and refused if it is not one.

A dump read back is checked whole before any of it is believed: every problem is one line
naming the file and the JSON path, so a hand-edited or foreign file (a VMM's full register
list, a kernel written as a number) is refused for what it is, never judged as a migration.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvm_fwspec.conformance.analyses.dump import FEATURES, FORMAT, is_u64
from kvm_fwspec.conformance.profile import LEVELS_PREFIX, Profile, levels_profile, resolve_profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.model import Spec

MOST_PROBLEMS = 20  # a file wrong everywhere is reported by its first problems, and a count


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
    if pinned is not None and not is_u64(pinned):
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
            elif not is_u64(entry[key]):
                problems.add(f"{where}.{key}", _not_u64(entry[key]))
        reg_id, saved = entry.get("id"), entry.get("value")
        if not isinstance(reg_id, int) or not is_u64(reg_id):
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
        if isinstance(saved, int) and is_u64(saved):
            registers[reg_id] = saved
    return registers


def _not_u64(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value} does not fit in 64 bits" if value >= 0 else f"{value} is negative"
    return f"{value!r} is {_kind(value)}, not a 64-bit integer"
