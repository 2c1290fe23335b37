"""Fingerprint files read back for `kvm-fwspec fleet`: each checked whole, then believed.

A fleet's files come from many hosts and several tools, so one bad file must not stop the
plan: every problem is one line naming the file and the JSON field, the file is left out,
and the rest of the fleet is planned. A file is refused when it is not JSON, not a
fingerprint (its schema), or contradicts itself: a register's default outside the values
the same file says the register accepts, an id listed twice, a host named twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema

from kvm_fwspec.conformance.analyses.accepts_inference import inferred_accepts
from kvm_fwspec.conformance.analyses.dump import FORMAT as DUMP_FORMAT
from kvm_fwspec.conformance.analyses.dump_fingerprint import import_dump
from kvm_fwspec.conformance.analyses.fingerprint import FORMAT, SCHEMA
from kvm_fwspec.conformance.analyses.firecracker_fingerprint import import_firecracker
from kvm_fwspec.conformance.analyses.json_file import read_json
from kvm_fwspec.conformance.profile import Profile, resolve_profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.model import Register, Spec

INFERRED = (
    "accepts not recorded: inferred from the default (the newest PSCI version it takes, down "
    "to 0.2; a bitmap's default is its mask, an opt-in bitmap's only the bits it holds; a "
    "workaround level at most the host's)"
)


JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "true or false", type(None): "null"}  # fmt: skip


@dataclass(frozen=True)
class Offer:
    """One firmware register as a host offers it: what a fresh VM reads and what SET takes."""

    reg_id: int
    name: str
    kind: str  # the spec's register kind, or "unknown" for an id the spec does not know
    default: int
    accepts: frozenset[int]
    inferred: bool

    def takes(self, value: int) -> bool:
        """Would KVM_SET_ONE_REG of `value` succeed on a fresh VM of this host? Bitmaps take
        any subset of the bits the host offers; the others take the values it accepted."""
        if self.kind == "bitmap":
            return value & ~self.mask == 0
        return value in self.accepts

    @property
    def mask(self) -> int:
        mask = 0
        for bit in self.accepts:
            mask |= bit
        return mask


@dataclass(frozen=True)
class Host:
    """A fingerprint believed: one host, the kernel the spec judged it as, its offers by id."""

    name: str
    file: str
    arch: str
    kernel: str
    judged_as: str
    offers: tuple[Offer, ...]
    cpu: str | None  # MIDR_EL1, where the fingerprint recorded it

    def offer(self, reg_id: int) -> Offer | None:
        return next((o for o in self.offers if o.reg_id == reg_id), None)


@dataclass(frozen=True)
class Refused:
    """A file left out of the plan, and the one line that says why."""

    file: str
    reason: str


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator: jsonschema.protocols.Validator = validator_class(schema)
    return validator


def read_hosts(spec: Spec, paths: Iterable[Path]) -> tuple[list[Host], list[Refused]]:
    """Every readable fingerprint as a Host, and one Refused per file that is not one."""
    hosts: list[Host] = []
    refused: list[Refused] = []
    seen: dict[str, str] = {}
    unique: dict[Path, Path] = {}
    for path in paths:  # named twice (a folder and a glob, fp/../fp/x.json, a link): once
        unique.setdefault(path.resolve(), path)
    for path in unique.values():
        try:
            host = read_host(spec, path)
        except UsageError as exc:
            reason = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
            refused.append(Refused(str(path), reason))
            continue
        if host.name in seen:
            refused.append(
                Refused(
                    str(path), f"{path}: host: {host.name} was already read from {seen[host.name]}"
                )
            )
            continue
        seen[host.name] = str(path)
        hosts.append(host)
    return hosts, refused


def read_host(spec: Spec, path: Path) -> Host:
    """One fingerprint file, checked whole, or a UsageError naming the file and field. A
    Firecracker `fingerprint dump` file or a `kvm-fwspec dump` file is imported on the way
    (the host named after the file), so a fleet's existing data is planned as it lies."""
    document = read_json(path, "a fingerprint")
    if isinstance(document, dict) and "guest_cpu_config" in document:
        document = import_firecracker(spec, path, path.stem)
    elif isinstance(document, dict) and document.get("format") == DUMP_FORMAT:
        document = import_dump(spec, path, path.stem)
    return host_of(spec, document, str(path))


def host_of(spec: Spec, document: Any, where: str) -> Host:
    """A fingerprint document (from a file named `where`, or taken in this process), checked
    whole against its schema and itself."""
    if not isinstance(document, dict):
        kind = JSON_KINDS.get(type(document), "not an object")
        raise UsageError(f"{where}: top level: {kind}, not a fingerprint (a JSON object)")
    if document.get("format") != FORMAT:
        raise UsageError(
            f"{where}: format: {document.get('format')!r} is not {FORMAT}: not a kvm-fwspec "
            "fingerprint"
        )
    error = _schema_error(document)
    if error is not None and list(error.absolute_path) == ["host"] and error.validator == "pattern":
        raise UsageError(f"{where}: host: {document['host']!r} has a control character")
    if error is not None:
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise UsageError(f"{where}: {field.lstrip('.') or 'top level'}: {error.message}")
    return _believed(spec, where, document)


def _schema_error(document: dict[str, Any]) -> jsonschema.ValidationError | None:
    """The schema's main complaint about `document`, or None. A fleet is thousands of files,
    so each is first checked by fastjsonschema (the schema compiled to Python, some 25 times
    faster); only a file it refuses is checked again by jsonschema, the reference validator,
    for the message that names the field (tests/test_fleet.py holds the two to the same
    verdicts on mutated fingerprints)."""
    try:
        _compiled()(document)
        return None
    except fastjsonschema.JsonSchemaException:
        error: jsonschema.ValidationError | None = jsonschema.exceptions.best_match(
            _validator().iter_errors(document)
        )
        return error


@cache
def _compiled() -> Callable[[Any], Any]:
    compiled: Callable[[Any], Any] = fastjsonschema.compile(
        json.loads(SCHEMA.read_text(encoding="utf-8"))
    )
    return compiled


def _believed(spec: Spec, path: str, document: dict[str, Any]) -> Host:
    arch = document["arch"]
    try:
        profile_of(spec, document["kernel"]["judged-as"], arch)
    except UsageError as exc:  # a fingerprint of a kvm-fwspec that knows newer kernels
        raise UsageError(f"{path}: kernel.judged-as: {exc}") from None
    known = {int(r.ids[arch]): r for r in spec.registers if arch in r.ids}
    named = {r.name: r for r in spec.registers}
    firmware_class = spec.layout("reg-id").field("class")
    classes = {r.register_class.value for r in spec.registers}
    listed = document["reg-list-length"]
    if listed is not None and listed < len(document["registers"]):
        raise UsageError(
            f"{path}: reg-list-length: {listed}, fewer than the {len(document['registers'])} "
            "firmware registers the file lists"
        )
    offers = []
    seen: set[int] = set()
    for index, entry in enumerate(document["registers"]):
        where = f"{path}: registers[{index}]"
        reg_id = int(entry["id"], 16)
        if reg_id in seen:
            raise UsageError(f"{where}.id: {reg_id:#x} is listed twice")
        seen.add(reg_id)
        if firmware_class.extract(reg_id) not in classes:
            raise UsageError(
                f"{where}.id: {reg_id:#x} is not a firmware register (class "
                f"{firmware_class.extract(reg_id):#x}; firmware registers are class "
                f"{' or '.join(hex(c) for c in sorted(classes))})"
            )
        register = known.get(reg_id)
        if register is not None and entry["name"] not in (None, register.name):
            raise UsageError(
                f"{where}.name: {entry['name']!r} but the spec names {reg_id:#x} {register.name}"
            )
        if register is None and entry["name"] in named:
            spec_id = named[entry["name"]].ids.get(arch)
            shown = f"{int(spec_id):#x}" if spec_id is not None else f"no {arch} id"
            raise UsageError(
                f"{where}.id: {reg_id:#x}, but {entry['name']} is {shown} for {arch} in the spec"
            )
        offer = _offer(spec, register, reg_id, entry)
        if register is not None:
            _check_values(spec, register, offer, where)
        if not offer.takes(offer.default):
            accepted = ", ".join(f"{v:#x}" for v in sorted(offer.accepts)) or "nothing"
            raise UsageError(
                f"{where}.default: {offer.default:#x} is outside what the same file says "
                f"{offer.name} accepts ({accepted})"
            )
        offers.append(offer)
    return Host(
        name=document["host"],
        file=path,
        arch=arch,
        kernel=document["kernel"]["reported"] or document["kernel"]["judged-as"],
        judged_as=document["kernel"]["judged-as"],
        offers=tuple(sorted(offers, key=lambda o: o.reg_id)),
        cpu=(document.get("cpu") or {}).get("midr"),
    )


def _check_values(spec: Spec, register: Register, offer: Offer, where: str) -> None:
    """A value no release of KVM gives this register (a PSCI version that does not exist, a
    level the spec does not define, a bit no bitmap has) is a damaged file, not a host."""
    if register.kind == "psci-version":
        possible = {v.encoded for v in spec.psci_versions}
        what = "a PSCI version the spec knows"
    elif register.kind == "level":
        possible = {v.value for v in register.values}
        what = f"a {register.name} level the spec defines"
    else:
        every_bit = 0
        for bit in register.bits:
            every_bit |= bit.mask
        possible = set()
        what = f"made of {register.name} bits the spec knows ({every_bit:#x})"
        for field, value in (("default", offer.default), *(("accepts", v) for v in offer.accepts)):
            if value & ~every_bit:
                raise UsageError(f"{where}.{field}: {value:#x} is not {what}")
        return
    for field, value in (
        ("default", offer.default),
        *(("accepts", v) for v in sorted(offer.accepts)),
    ):
        if value not in possible:
            raise UsageError(f"{where}.{field}: {value:#x} is not {what}")


def _offer(spec: Spec, register: Register | None, reg_id: int, entry: dict[str, Any]) -> Offer:
    default = int(entry["default"], 16)
    name = register.name if register is not None else f"{reg_id:#018x}"
    kind = register.kind if register is not None else "unknown"
    if entry["accepts"] is not None:
        return Offer(
            reg_id, name, kind, default, frozenset(int(v, 16) for v in entry["accepts"]), False
        )
    return Offer(reg_id, name, kind, default, planned_accepts(spec, register, default), True)


def planned_accepts(spec: Spec, register: Register | None, default: int) -> frozenset[int]:
    """What the plan takes a host to accept where its fingerprint did not record it (see
    INFERRED): the importers' inference, and where even that says nothing, no more than what
    the host already holds: a workaround level at most its own (KVM's `accept-at-most-host`
    rules), an opt-in bitmap's bits already set, an unknown register's own value."""
    inferred = inferred_accepts(spec, register, default)
    if inferred is not None:
        return frozenset(int(v, 16) for v in inferred)
    if register is not None and register.kind == "level":
        return frozenset(v.value for v in register.values if v.value <= default)
    if register is not None and register.kind == "bitmap":
        return frozenset(1 << bit for bit in range(64) if default >> bit & 1)
    return frozenset({default})


def profile_of(spec: Spec, judged_as: str, arch: str) -> Profile:
    """The spec's KVM for the release a host was judged as: what it says of the guest's
    answers beyond the registers (PSCI_FEATURES, which services exist). Remembered per spec
    object: a fleet has thousands of hosts and a handful of kernels (and hashing a Spec walks
    all of it, so the spec is told apart by identity)."""
    key = (id(spec), judged_as, arch)
    remembered = _PROFILES.get(key)
    if remembered is None or remembered[0] is not spec:
        remembered = (spec, resolve_profile(spec, judged_as, "mitigated", arch))
        _PROFILES[key] = remembered
    return remembered[1]


_PROFILES: dict[tuple[int, str, str], tuple[Spec, Profile]] = {}
