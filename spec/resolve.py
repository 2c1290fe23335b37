"""Turn schema-valid spec documents into the typed model, checking what a schema cannot.

The schema checks shapes; this pass checks meaning: names refer to things that exist, ids
composed from fields do not collide, layouts account for every bit, releases are known and
ordered, rules type-check and every decision table ends in a default. All problems are
collected and raised together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, cast

from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.errors import SpecError, SpecProblem
from kvm_fwspec.spec.model import (
    Architecture,
    Capability,
    Constant,
    ConstantGroup,
    CoreRegisters,
    Errno,
    Field,
    FieldValue,
    HeaderErratum,
    HostProfile,
    Ioctl,
    KernelDocs,
    KnownVmm,
    KvmPsci01Function,
    KvmPsciHandling,
    LatestPsci,
    Layout,
    Lifetime,
    NamedValue,
    Offset,
    PsciFunction,
    PsciVersion,
    Register,
    RegisterBit,
    Release,
    Rule,
    Service,
    SmcccFunction,
    Source,
    Spec,
    SpecFile,
    StateVariable,
    VcpuFeature,
    VmmRule,
    VmmSource,
)
from kvm_fwspec.spec.yaml_source import JsonPath, SourceDocument

Raw = dict[str, Any]


class _Resolver:
    def __init__(self, documents: Mapping[str, SourceDocument]) -> None:
        self.docs = documents
        self.problems: list[SpecProblem] = []
        self.releases: tuple[Release, ...] = ()

    # -- helpers ---------------------------------------------------------------------------

    def error(self, stem: str, path: JsonPath, message: str) -> None:
        self.problems.append(self.docs[stem].problem(path, message))

    def data(self, stem: str) -> Raw:
        return cast(Raw, self.docs[stem].data)

    def release(self, stem: str, path: JsonPath, text: str) -> Release:
        release = Release.parse(text)
        if self.releases and release not in self.releases:
            self.error(stem, path, f"unknown release '{text}' (not listed in kernels.yaml)")
        return release

    def lifetime(
        self, stem: str, path: JsonPath, raw: Raw, parent: Lifetime | None = None
    ) -> Lifetime:
        """[since, until) and backports; a part of something (a register's value, bit or rule)
        starts with it, and shares its stable backports when it starts with it."""
        since = (
            self.release(stem, (*path, "since"), raw["since"])
            if "since" in raw
            else parent.since
            if parent
            else self.releases[0]
        )
        until = self.release(stem, (*path, "until"), raw["until"]) if "until" in raw else None
        if until is not None and until <= since:
            self.error(stem, (*path, "until"), f"until {until} is not after since {since}")
        backports = tuple(
            self.release(stem, (*path, "backports", i), b)
            for i, b in enumerate(raw.get("backports", []))
        )
        for i, backport in enumerate(backports):
            if backport >= since:
                self.error(
                    stem,
                    (*path, "backports", i),
                    f"backport {backport} is not before since {since}",
                )
        if parent is not None and "backports" not in raw and since == parent.since:
            backports = parent.backports
        return Lifetime(since, until, backports)

    def unique(self, stem: str, path: JsonPath, items: Iterable[Raw], key: str, what: str) -> None:
        seen: dict[Any, int] = {}
        for i, item in enumerate(items):
            if key not in item:
                continue
            value = item[key]
            if value in seen:
                self.error(
                    stem,
                    (*path, i, key),
                    f"duplicate {what} '{value}' (also at index {seen[value]})",
                )
            else:
                seen[value] = i

    @staticmethod
    def source(raw: Raw | None) -> Source | None:
        if raw is None:
            return None
        return Source(raw["file"], raw.get("note", ""), tuple(raw.get("confirmed-on", [])))

    @staticmethod
    def kernel_docs(raw: Raw) -> KernelDocs:
        return KernelDocs(raw["file"], raw["says"], raw["code-does"], raw["real-kvm-follows"])

    # -- kernels ---------------------------------------------------------------------------

    def resolve_releases(self) -> tuple[Release, ...]:
        raw = self.data("kernels")["releases"]
        releases = tuple(Release.parse(r) for r in raw)
        for i in range(1, len(releases)):
            if releases[i] <= releases[i - 1]:
                self.error(
                    "kernels",
                    ("releases", i),
                    f"release {releases[i]} is not after {releases[i - 1]}",
                )
        self.releases = releases
        return releases

    def resolve_architectures(self, reg_id: Layout) -> tuple[Architecture, ...]:
        arch_field = reg_id.field("arch")
        result = []
        for i, raw in enumerate(self.data("kernels")["architectures"]):
            path = ("architectures", i)
            value = next((v for v in arch_field.values if v.name == raw["reg-arch"]), None)
            if value is None:
                self.error(
                    "kernels",
                    (*path, "reg-arch"),
                    f"no arch value named '{raw['reg-arch']}' in reg-id",
                )
                continue
            result.append(
                Architecture(raw["name"], raw["doc"], value, self.lifetime("kernels", path, raw))
            )
        self.unique(
            "kernels",
            ("architectures",),
            self.data("kernels")["architectures"],
            "name",
            "architecture",
        )
        return tuple(result)

    # -- encoding --------------------------------------------------------------------------

    def resolve_fields(
        self, stem: str, path: JsonPath, raws: list[Raw], width: int, low: int = 0
    ) -> tuple[Field, ...]:
        """Fields of a `width`-bit word starting at bit `low`; they must tile it exactly."""
        fields = []
        owner = [""] * width
        misplaced = False
        for i, raw in enumerate(raws):
            fpath = (*path, i)
            high_bit, low_bit = raw["bits"]
            if high_bit < low_bit:
                self.error(
                    stem, (*fpath, "bits"), f"bits [{high_bit}, {low_bit}] must be [high, low]"
                )
                misplaced = True
                continue
            if high_bit >= low + width or low_bit < low:
                self.error(
                    stem,
                    (*fpath, "bits"),
                    f"bits [{high_bit}, {low_bit}] fall outside the {width}-bit word",
                )
                misplaced = True
                continue
            for bit in range(low_bit, high_bit + 1):
                if owner[bit - low]:
                    self.error(
                        stem, (*fpath, "bits"), f"bit {bit} overlaps field '{owner[bit - low]}'"
                    )
                    break
                owner[bit - low] = raw["name"]
            values = self.resolve_field_values(
                stem, (*fpath, "values"), raw.get("values", []), high_bit - low_bit + 1
            )
            fields.append(
                Field(
                    raw["name"],
                    raw["doc"],
                    high_bit,
                    low_bit,
                    raw.get("reserved", False),
                    raw.get("c-mask"),
                    raw.get("c-shift"),
                    values,
                )
            )
        missing = [low + b for b, name in enumerate(owner) if not name]
        if missing and not misplaced:  # a misplaced field already explains the gap
            self.error(stem, path, f"bits {_ranges(missing)} are not accounted for by any field")
        self.unique(stem, path, raws, "name", "field name")
        return tuple(fields)

    def resolve_field_values(
        self, stem: str, path: JsonPath, raws: list[Raw], width: int
    ) -> tuple[FieldValue, ...]:
        values = []
        for i, raw in enumerate(raws):
            vpath = (*path, i)
            if raw["value"] >= 1 << width:
                self.error(
                    stem, (*vpath, "value"), f"value {raw['value']:#x} does not fit in {width} bits"
                )
            index_fields = (
                self.resolve_fields(stem, (*vpath, "index-fields"), raw["index-fields"], 16)
                if "index-fields" in raw
                else ()
            )
            values.append(
                FieldValue(
                    raw["name"],
                    raw["doc"],
                    raw["value"],
                    self.lifetime(stem, vpath, raw),
                    raw.get("c-name"),
                    raw.get("c-reg-macro"),
                    tuple(raw.get("architectures", ("arm64", "arm"))),
                    raw.get("firmware", False),
                    index_fields,
                    self.source(raw.get("source")),
                )
            )
        self.unique(stem, path, raws, "name", "value name")
        self.unique(stem, path, raws, "value", "value")
        return tuple(values)

    def resolve_layouts(self) -> tuple[Layout, ...]:
        layouts = []
        for i, raw in enumerate(self.data("encoding")["layouts"]):
            fields = self.resolve_fields(
                "encoding", ("layouts", i, "fields"), raw["fields"], raw["width"]
            )
            layouts.append(Layout(raw["name"], raw["doc"], raw["width"], fields))
        self.unique("encoding", ("layouts",), self.data("encoding")["layouts"], "name", "layout")
        names = {lay.name for lay in layouts}
        for required, fields_needed in (
            ("reg-id", {"arch", "size", "class", "index"}),
            ("smccc-function-id", {"call-type", "convention", "owner", "function"}),
        ):
            if required not in names:
                self.error("encoding", ("layouts",), f"layout '{required}' is required")
                continue
            index = next(i for i, lay in enumerate(layouts) if lay.name == required)
            absent = fields_needed - {
                f["name"] for f in self.data("encoding")["layouts"][index]["fields"]
            }
            if absent:
                self.error(
                    "encoding",
                    ("layouts", index, "fields"),
                    f"layout '{required}' lacks fields {sorted(absent)}",
                )
        if self.problems:
            raise SpecError(self.problems)
        return tuple(layouts)

    # -- api -------------------------------------------------------------------------------

    def resolve_api(
        self,
    ) -> tuple[
        tuple[Errno, ...],
        tuple[VcpuFeature, ...],
        tuple[Capability, ...],
        tuple[StateVariable, ...],
    ]:
        api = self.data("api")
        for key in ("errnos", "vcpu-features", "capabilities", "state"):
            self.unique("api", (key,), api[key], "name", key.rstrip("s"))
        self.unique("api", ("errnos",), api["errnos"], "value", "errno value")
        errnos = tuple(Errno(r["name"], r["value"], r["doc"]) for r in api["errnos"])
        caps = tuple(
            Capability(
                r["name"],
                r["doc"],
                r["c-name"],
                r["value"],
                self.lifetime("api", ("capabilities", i), r),
            )
            for i, r in enumerate(api["capabilities"])
        )
        features = tuple(
            self.vcpu_feature(i, r, {c.name: c for c in caps})
            for i, r in enumerate(api["vcpu-features"])
        )
        state = tuple(StateVariable(r["name"], r["doc"], r["type"]) for r in api["state"])
        return errnos, features, caps, state

    def vcpu_feature(self, index: int, raw: Raw, caps: Mapping[str, Capability]) -> VcpuFeature:
        """A feature whose capability is one the spec defines, and which does not exist
        before the capability that offers it."""
        path = ("vcpu-features", index)
        lifetime = self.lifetime("api", path, raw)
        capability = caps.get(raw["capability"]) if "capability" in raw else None
        if "capability" in raw and capability is None:
            self.error("api", (*path, "capability"), f"unknown capability '{raw['capability']}'")
        if capability is not None and lifetime.since < capability.lifetime.since:
            self.error(
                "api",
                (*path, "since"),
                f"the feature exists from {lifetime.since}, before its capability "
                f"'{capability.name}' ({capability.lifetime.since})",
            )
        bits = dict(raw["bit"])
        return VcpuFeature(
            raw["name"], raw["doc"], raw["c-name"], bits, lifetime, capability,
            bool(raw.get("finalize", False)),
        )  # fmt: skip

    def resolve_kvm_interface(
        self,
    ) -> tuple[
        tuple[Ioctl, ...],
        tuple[Offset, ...],
        tuple[Constant, ...],
        tuple[Constant, ...],
        tuple[CoreRegisters, ...],
    ]:
        """The ioctls, kvm_run offsets, exit reasons and core registers the harness uses."""
        api = self.data("api")
        directions = {"none": 0, "write": 1, "read": 2, "read-write": 3}  # asm-generic/ioctl.h
        ioctls = tuple(
            Ioctl(
                r["name"],
                r["c-name"],
                directions[r["direction"]] << 30
                | r["size"] << 16
                | api["ioctl-type"] << 8
                | r["nr"],
                r["doc"],
            )
            for r in api["ioctls"]
        )
        self.unique("api", ("ioctls",), api["ioctls"], "name", "ioctl")
        self.unique("api", ("ioctls",), api["ioctls"], "nr", "ioctl number")
        offsets = tuple(
            Offset(f["name"], f["offset"], f["size"], f["doc"]) for f in api["kvm-run"]["fields"]
        )
        self.unique("api", ("kvm-run", "fields"), api["kvm-run"]["fields"], "name", "kvm_run field")

        def constants(key: str) -> tuple[Constant, ...]:
            self.unique("api", (key,), api[key], "value", key.rstrip("s"))
            return tuple(Constant(c["name"], c["c-name"], c["value"], c["doc"]) for c in api[key])

        core = tuple(
            CoreRegisters(f["name"], f["first-word"], f["count"], f["doc"])
            for f in api["core-registers"]["fields"]
        )
        return ioctls, offsets, constants("exit-reasons"), constants("system-events"), core

    # -- registers -------------------------------------------------------------------------

    def resolve_registers(
        self,
        reg_id: Layout,
        architectures: tuple[Architecture, ...],
        services: Mapping[str, Service],
    ) -> tuple[Register, ...]:
        raws = self.data("registers")["registers"]
        class_field = reg_id.field("class")
        size_u64 = reg_id.field("size").value_named("u64").value
        registers = []
        ids_seen: dict[int, str] = {}
        for i, raw in enumerate(raws):
            path = ("registers", i)
            reg_class = next((v for v in class_field.values if v.name == raw["class"]), None)
            if reg_class is None or not reg_class.firmware:
                self.error(
                    "registers",
                    (*path, "class"),
                    f"'{raw['class']}' is not a firmware register class",
                )
                continue
            lifetime = self.lifetime("registers", path, raw)
            if lifetime.since < reg_class.lifetime.since:
                self.error(
                    "registers",
                    (*path, "since"),
                    f"since {lifetime.since} is before class '{reg_class.name}' exists ({reg_class.lifetime.since})",
                )
            arches = []
            for j, arch_name in enumerate(raw["architectures"]):
                arch = next(a for a in architectures if a.name == arch_name)
                if arch_name not in reg_class.architectures:
                    self.error(
                        "registers",
                        (*path, "architectures", j),
                        f"class '{reg_class.name}' does not exist on {arch_name}",
                    )
                arches.append(arch)
            ids: dict[str, int] = {
                a.name: reg_id.compose(
                    arch=a.reg_arch.value,
                    size=size_u64,
                    **{"class": reg_class.value},
                    index=raw["index"],
                )
                for a in arches
            }
            for arch_name, reg_id_value in ids.items():
                other = ids_seen.get(reg_id_value)
                if other:
                    self.error(
                        "registers",
                        (*path, "index"),
                        f"id {reg_id_value:#018x} on {arch_name} collides with register '{other}'",
                    )
                ids_seen[reg_id_value] = raw["name"]
            layout = self.register_layout(path, raw)
            values = self.register_values(path, raw, layout, lifetime)
            bits = self.register_bits(path, raw, services, lifetime)
            registers.append(
                Register(
                    raw["name"],
                    raw["c-name"],
                    raw["doc"],
                    reg_class,
                    raw["index"],
                    raw["kind"],
                    tuple(arches),
                    lifetime,
                    raw["storage"],
                    layout,
                    values,
                    bits,
                    ids,
                    cast(Source, self.source(raw["source"])),
                    kernel_docs=tuple(self.kernel_docs(k) for k in raw.get("kernel-docs", [])),
                    arch_features_since=self.release(
                        "registers", (*path, "arch-features-since"), raw["arch-features-since"]
                    )
                    if "arch-features-since" in raw
                    else None,
                )
            )
        self.unique("registers", ("registers",), raws, "name", "register name")
        self.unique("registers", ("registers",), raws, "c-name", "register c-name")
        return tuple(registers)

    def register_layout(self, path: JsonPath, raw: Raw) -> tuple[Field, ...]:
        if raw["kind"] == "bitmap":
            if "layout" in raw:
                self.error(
                    "registers", (*path, "layout"), "a bitmap's layout is its bits; do not give one"
                )
            return ()
        if "layout" not in raw:
            self.error(
                "registers", path, f"a {raw['kind']} register needs a layout covering all 64 bits"
            )
            return ()
        return self.resolve_fields("registers", (*path, "layout"), raw["layout"], 64)

    def register_values(
        self, path: JsonPath, raw: Raw, layout: tuple[Field, ...], lifetime: Lifetime
    ) -> tuple[NamedValue, ...]:
        raws = raw.get("values", [])
        if raw["kind"] != "level" and raws:
            self.error(
                "registers", (*path, "values"), f"a {raw['kind']} register has no named values"
            )
        level = next((f for f in layout if f.name == "level"), None)
        if raw["kind"] == "level" and level is None:
            self.error("registers", (*path, "layout"), "a level register needs a 'level' field")
        values = []
        for j, v in enumerate(raws):
            vpath = (*path, "values", j)
            if level is not None and v["value"] > level.mask >> level.low:
                self.error(
                    "registers",
                    (*vpath, "value"),
                    f"value {v['value']} does not fit the {level.width}-bit level field",
                )
            values.append(
                NamedValue(
                    v["name"],
                    v["c-name"],
                    v["value"],
                    v["doc"],
                    self.lifetime("registers", vpath, v, lifetime),
                    v.get("arch-features"),
                )
            )
        self.unique("registers", (*path, "values"), raws, "name", "value name")
        self.unique("registers", (*path, "values"), raws, "value", "value")
        return tuple(values)

    def register_bits(
        self, path: JsonPath, raw: Raw, services: Mapping[str, Service], lifetime: Lifetime
    ) -> tuple[RegisterBit, ...]:
        bits = []
        for j, b in enumerate(raw.get("bits", [])):
            bpath = (*path, "bits", j)
            service = None
            if "service" in b:
                service = services.get(b["service"])
                if service is None:
                    self.error(
                        "registers", (*bpath, "service"), f"unknown service '{b['service']}'"
                    )
            elif raw["kind"] == "bitmap":
                self.error("registers", bpath, "a bitmap bit must name the service it exposes")
            bits.append(
                RegisterBit(
                    b["name"],
                    b["c-name"],
                    b["bit"],
                    b["doc"],
                    self.lifetime("registers", bpath, b, lifetime),
                    service,
                )
            )
        self.unique("registers", (*path, "bits"), raw.get("bits", []), "name", "bit name")
        self.unique("registers", (*path, "bits"), raw.get("bits", []), "bit", "bit")
        return tuple(bits)

    def resolve_host_profiles(self, registers: tuple[Register, ...]) -> tuple[HostProfile, ...]:
        level_registers = {r.name: r for r in registers if r.kind == "level"}
        profiles = []
        raws = self.data("registers")["host-profiles"]
        for i, raw in enumerate(raws):
            path = ("host-profiles", i)
            levels = {}
            for reg_name, value_name in raw["levels"].items():
                register = level_registers.get(reg_name)
                if register is None:
                    self.error(
                        "registers",
                        (*path, "levels", reg_name),
                        f"'{reg_name}' is not a level register",
                    )
                    continue
                value = next((v for v in register.values if v.name == value_name), None)
                if value is None:
                    self.error(
                        "registers",
                        (*path, "levels", reg_name),
                        f"'{reg_name}' has no value '{value_name}'",
                    )
                    continue
                levels[reg_name] = value
            for missing in sorted(set(level_registers) - set(raw["levels"])):
                self.error("registers", (*path, "levels"), f"no level given for '{missing}'")
            profiles.append(HostProfile(raw["name"], raw["doc"], levels))
        self.unique("registers", ("host-profiles",), raws, "name", "host profile")
        return tuple(profiles)

    # -- psci ------------------------------------------------------------------------------

    def resolve_psci_versions(self) -> tuple[PsciVersion, ...]:
        raws = self.data("psci")["versions"]
        versions = []
        for i, raw in enumerate(raws):
            path = ("versions", i)
            if raw["name"] != f"{raw['major']}.{raw['minor']}":
                self.error(
                    "psci",
                    (*path, "name"),
                    f"name '{raw['name']}' does not match major {raw['major']} and minor {raw['minor']}",
                )
            versions.append(
                PsciVersion(
                    raw["name"],
                    raw["major"],
                    raw["minor"],
                    raw["doc"],
                    self.lifetime("psci", path, raw),
                    raw.get("c-name"),
                    raw["major"] << 16 | raw["minor"],
                )
            )
        self.unique("psci", ("versions",), raws, "name", "PSCI version")
        return tuple(versions)

    def psci_version(
        self, path: JsonPath, name: str, versions: tuple[PsciVersion, ...]
    ) -> PsciVersion | None:
        found = next((v for v in versions if v.name == name), None)
        if found is None:
            self.error("psci", path, f"unknown PSCI version '{name}'")
        return found

    def resolve_psci_latest(self, versions: tuple[PsciVersion, ...]) -> tuple[LatestPsci, ...]:
        raws = self.data("psci")["latest"]
        result = []
        for i, raw in enumerate(raws):
            path = ("latest", i)
            version = self.psci_version((*path, "version"), raw["version"], versions)
            since = self.release("psci", (*path, "since"), raw["since"])
            until = Release.parse(raws[i + 1]["since"]) if i + 1 < len(raws) else None
            if until is not None and until <= since:
                self.error("psci", (*path, "since"), "latest entries must be in release order")
            if version is not None:
                if not version.lifetime.covers(since):
                    self.error(
                        "psci",
                        (*path, "version"),
                        f"PSCI {version.name} is not implemented in {since}",
                    )
                result.append(LatestPsci(Lifetime(since, until), version))
        if raws and Release.parse(raws[0]["since"]) != self.releases[0]:
            self.error(
                "psci", ("latest", 0, "since"), f"the first entry must start at {self.releases[0]}"
            )
        return tuple(result)

    def kvm_handling(
        self,
        path: JsonPath,
        raw: Raw | None,
        versions: tuple[PsciVersion, ...],
        caps: tuple[Capability, ...],
    ) -> KvmPsciHandling | None:
        if raw is None:
            return None
        from_version = self.psci_version((*path, "from"), raw["from"], versions)
        capability = None
        if "needs-capability" in raw:
            capability = next((c for c in caps if c.name == raw["needs-capability"]), None)
            if capability is None:
                self.error(
                    "psci",
                    (*path, "needs-capability"),
                    f"unknown capability '{raw['needs-capability']}'",
                )
        lifetime = self.lifetime("psci", path, raw)
        if from_version is None:
            return None
        if lifetime.since < from_version.lifetime.since:
            self.error(
                "psci",
                (*path, "since"),
                f"PSCI {from_version.name} only exists from {from_version.lifetime.since}",
            )
        return KvmPsciHandling(from_version, lifetime, raw["features"], capability)

    def resolve_psci_functions(
        self, smccc: Layout, versions: tuple[PsciVersion, ...], caps: tuple[Capability, ...]
    ) -> tuple[PsciFunction, ...]:
        raws = self.data("psci")["functions"]
        conventions = {v.name: v.value for v in smccc.field("convention").values}
        owner = smccc.field("owner").value_named("standard").value
        fast = smccc.field("call-type").value_named("fast").value

        def function_ids(number: int, c_names: Raw) -> dict[str, int]:
            return {
                conv: smccc.compose(
                    call_type=fast, convention=conventions[conv], owner=owner, function=number
                )
                for conv in c_names
            }

        result = []
        for i, raw in enumerate(raws):
            path = ("functions", i)
            version = self.psci_version((*path, "psci"), raw["psci"], versions)

            ids = function_ids(raw["number"], raw["c-names"])
            errata = tuple(
                HeaderErratum(
                    e["number"],
                    e["doc"],
                    self.lifetime("psci", (*path, "header-errata", j, "fixed"), e["fixed"]),
                    function_ids(e["number"], raw["c-names"]),
                    self.source(e["source"]),
                )
                for j, e in enumerate(raw.get("header-errata", []))
            )
            header_since = (
                self.release("psci", (*path, "header-since"), raw["header-since"])
                if "header-since" in raw
                else None
            )
            for j, erratum in enumerate(errata):
                if header_since is None or erratum.fixed.since <= header_since:
                    self.error(
                        "psci",
                        (*path, "header-errata", j, "fixed", "since"),
                        "a header erratum must be fixed after the function's header-since",
                    )
            kvm = self.kvm_handling((*path, "kvm"), raw.get("kvm"), versions, caps)
            if version is not None:
                result.append(
                    PsciFunction(
                        raw["name"],
                        raw["number"],
                        version,
                        raw["doc"],
                        ids,
                        dict(raw["c-names"]),
                        header_since,
                        kvm,
                        errata,
                        self.source(raw.get("source")),
                    )
                )
        self.unique("psci", ("functions",), raws, "name", "PSCI function")
        self.unique("psci", ("functions",), raws, "number", "PSCI function number")
        return tuple(result)

    def resolve_kvm_psci_01(self) -> tuple[int, str, tuple[KvmPsci01Function, ...]]:
        raw = self.data("psci")["kvm-psci-0.1"]
        functions = tuple(
            KvmPsci01Function(
                f["name"],
                f["offset"],
                f["c-name"],
                f["handled"],
                f["doc"],
                raw["base"] + f["offset"],
            )
            for f in raw["functions"]
        )
        self.unique("psci", ("kvm-psci-0.1", "functions"), raw["functions"], "offset", "offset")
        self.unique("psci", ("kvm-psci-0.1", "functions"), raw["functions"], "name", "function")
        return raw["base"], raw["c-base"], functions

    def resolve_constants(self) -> tuple[tuple[Constant, ...], tuple[ConstantGroup, ...]]:
        psci = self.data("psci")
        codes = tuple(
            Constant(c["name"], c["c-name"], c["value"], c["doc"]) for c in psci["return-codes"]
        )
        self.unique("psci", ("return-codes",), psci["return-codes"], "value", "return code")
        groups = tuple(
            ConstantGroup(
                g["name"],
                g["doc"],
                tuple(
                    Constant(c["name"], c["c-name"], c["value"], c["doc"]) for c in g["constants"]
                ),
                self.release("psci", ("constant-groups", i, "header-since"), g["header-since"])
                if "header-since" in g
                else None,
            )
            for i, g in enumerate(psci["constant-groups"])
        )
        return codes, groups

    # -- smccc -----------------------------------------------------------------------------

    def resolve_services(self) -> dict[str, Service]:
        raws = self.data("smccc")["services"]
        self.unique("smccc", ("services",), raws, "name", "service")
        return {r["name"]: Service(r["name"], r["doc"]) for r in raws}

    def resolve_smccc_functions(
        self,
        smccc: Layout,
        services: Mapping[str, Service],
        psci_functions: tuple[PsciFunction, ...],
    ) -> tuple[SmcccFunction, ...]:
        raws = self.data("smccc")["functions"]
        owners = {v.name: v.value for v in smccc.field("owner").values}
        conventions = {v.name: v.value for v in smccc.field("convention").values}
        fast = smccc.field("call-type").value_named("fast").value
        taken = {fid: f"PSCI {f.name}" for f in psci_functions for fid in f.ids.values()}
        result = []
        for i, raw in enumerate(raws):
            path = ("functions", i)
            if raw["owner"] not in owners:
                self.error("smccc", (*path, "owner"), f"unknown owner '{raw['owner']}'")
                continue
            service = services.get(raw["service"])
            if service is None:
                self.error("smccc", (*path, "service"), f"unknown service '{raw['service']}'")
                continue
            fid = smccc.compose(
                call_type=fast,
                convention=conventions[raw["convention"]],
                owner=owners[raw["owner"]],
                function=raw["number"],
            )
            if fid in taken:
                self.error(
                    "smccc",
                    (*path, "number"),
                    f"function id {fid:#010x} collides with {taken[fid]}",
                )
            taken[fid] = raw["name"]
            result.append(
                SmcccFunction(
                    raw["name"],
                    raw["c-name"],
                    raw["owner"],
                    raw["convention"],
                    raw["number"],
                    service,
                    raw["doc"],
                    self.lifetime("smccc", path, raw),
                    fid,
                    raw.get("psci-features"),
                    raw.get("returns"),
                )
            )
        self.unique("smccc", ("functions",), raws, "name", "SMCCC function")
        return tuple(result)

    # -- rules -----------------------------------------------------------------------------

    def resolve_resets(self, ctx: _RuleContext) -> tuple[Register, ...]:
        """Attach each stored register's reset expression, typed in the register's GET scope."""
        result = []
        for i, (raw, register) in enumerate(
            zip(self.data("registers")["registers"], ctx.registers, strict=True)
        ):
            path = ("registers", i)
            if (register.storage == "vm") != ("reset" in raw):
                self.error(
                    "registers",
                    path,
                    "a register has a 'reset' value exactly when its storage is vm",
                )
            text = raw.get("reset")
            reset = None
            if text is not None:
                try:
                    reset = rl.check(text, ctx.scope(register, "get"), rl.Type.INT)
                except rl.ExpressionError as exc:
                    self.error("registers", (*path, "reset"), str(exc))
            result.append(dataclasses.replace(register, reset=reset, reset_text=text))
        return tuple(result)

    def resolve_rules(self, spec_parts: _RuleContext) -> tuple[Rule, ...]:
        raws = self.data("rules")["rules"]
        spec_parts.rule_index = {raw["id"]: i for i, raw in enumerate(raws)}
        rules = []
        for i, raw in enumerate(raws):
            rule = self.resolve_rule(("rules", i), raw, spec_parts)
            if rule is not None:
                rules.append(rule)
        self.unique("rules", ("rules",), raws, "id", "rule id")
        if not self.problems:
            self.check_complete(rules, spec_parts)
        return tuple(rules)

    def resolve_vmm_rules(self, rules: tuple[Rule, ...]) -> tuple[VmmRule, ...]:
        """The VMM rules, each resting on KVM rules that exist."""
        raws = self.data("vmm")["rules"]
        self.unique("vmm", ("rules",), raws, "id", "VMM rule id")
        by_id = {rule.id: rule for rule in rules}
        declared = {rule["id"] for rule in self.data("rules")["rules"]}  # even those in error
        resolved = []
        for i, raw in enumerate(raws):
            for j, rule_id in enumerate(raw["kvm-rules"]):
                if rule_id not in declared:
                    self.error("vmm", ("rules", i, "kvm-rules", j), f"unknown KVM rule '{rule_id}'")
            known = tuple(
                KnownVmm(k["vmm"], k.get("versions", "all"), k["does"],
                         VmmSource(k["source"]["repository"], k["source"]["file"],
                                   k["source"].get("note", "")))
                for k in raw["known-vmms"]
            )  # fmt: skip
            resolved.append(
                VmmRule(raw["id"], raw["doc"], raw["evidence"], raw["kernel-asks"]["file"],
                        raw["kernel-asks"]["says"],
                        tuple(by_id[r] for r in raw["kvm-rules"] if r in by_id), known)
            )  # fmt: skip
        return tuple(resolved)

    def resolve_rule(self, path: JsonPath, raw: Raw, ctx: _RuleContext) -> Rule | None:
        target_name = raw.get("register") or raw.get("class")
        register = next((r for r in ctx.registers if r.name == raw.get("register")), None)
        reg_class = next((c for c in ctx.classes if c.name == raw.get("class")), None)
        if "register" in raw and register is None:
            self.error("rules", (*path, "register"), f"unknown register '{raw['register']}'")
            return None
        if "class" in raw and reg_class is None:
            self.error(
                "rules", (*path, "class"), f"unknown firmware register class '{raw['class']}'"
            )
            return None
        prefix = f"{target_name}/{raw['op']}/"
        if not raw["id"].startswith(prefix):
            self.error("rules", (*path, "id"), f"rule id must start with '{prefix}'")
        lifetime = self.lifetime("rules", path, raw, register.lifetime if register else None)
        if register is not None and lifetime.since < register.lifetime.since:
            self.error(
                "rules",
                (*path, "since"),
                f"rule starts in {lifetime.since}, before register '{register.name}' exists "
                f"({register.lifetime.since})",
            )
        arches = tuple(
            raw.get(
                "architectures",
                [a.name for a in register.architectures] if register else ["arm64", "arm"],
            )
        )
        if register is not None:
            for j, arch in enumerate(arches):
                if arch not in {a.name for a in register.architectures}:
                    self.error(
                        "rules",
                        (*path, "architectures", j),
                        f"register '{register.name}' does not exist on {arch}",
                    )
        scope = ctx.scope(register, raw["op"])
        when = self.expression(path, "when", raw.get("when"), scope, rl.Type.BOOL)
        result = raw.get("result", {})
        errno = None
        if "errno" in result:
            errno = next((e for e in ctx.errnos if e.name == result["errno"]), None)
            if errno is None:
                self.error(
                    "rules", (*path, "result", "errno"), f"unknown errno '{result['errno']}'"
                )
        value = self.expression((*path, "result"), "value", result.get("value"), scope, rl.Type.INT)
        store = self.expression((*path, "result"), "store", result.get("store"), scope, rl.Type.INT)
        self.check_result(path, raw["op"], result, register)
        return Rule(
            raw["id"],
            raw["doc"],
            raw["op"],
            register,
            reg_class,
            when,
            raw.get("when"),
            errno,
            value,
            result.get("value"),
            store,
            result.get("store"),
            result.get("listed"),
            result.get("undefined"),
            lifetime,
            arches,
            cast(Source, self.source(raw["source"])),
            raw.get("deprecated"),
            self.kernel_docs(raw["kernel-docs"]) if "kernel-docs" in raw else None,
        )

    def expression(
        self, path: JsonPath, key: str, text: str | None, scope: rl.Scope, wanted: rl.Type
    ) -> rl.Expr | None:
        if text is None:
            return None
        try:
            return rl.check(text, scope, wanted)
        except rl.ExpressionError as exc:
            self.error("rules", (*path, key), str(exc))
            return None

    def check_result(self, path: JsonPath, op: str, result: Raw, register: Register | None) -> None:
        allowed = {
            "get": ({"value"}, {"errno"}, {"undefined"}),
            "set": ({"errno"}, {"store"}, {"ok"}, {"undefined"}),
            "list": ({"listed"},),
        }[op]
        if set(result) not in [set(a) for a in allowed]:
            shapes = " or ".join("{" + ", ".join(sorted(a)) + "}" for a in allowed)
            self.error("rules", (*path, "result"), f"a {op} rule's result must be {shapes}")
        if "store" in result and register is not None and register.storage != "vm":
            self.error(
                "rules",
                (*path, "result", "store"),
                f"register '{register.name}' stores nothing (storage: none)",
            )

    def check_complete(self, rules: list[Rule], ctx: _RuleContext) -> None:
        """Each register's decision table must end, in every release and arch, in a default."""
        for register in ctx.registers:
            for op in ("get", "set", "list"):
                for arch in register.architectures:
                    for release in self.releases:
                        if not register.exists_on(arch.name, release):
                            continue
                        table = [
                            r
                            for r in rules
                            if r.op == op
                            and arch.name in r.architectures
                            and r.lifetime.covers(release)
                            and (
                                r.register is register
                                or r.register_class is register.register_class
                            )
                        ]
                        if not table or table[-1].when is not None:
                            where = ("rules", ctx.rule_index[table[-1].id]) if table else ("rules",)
                            self.error(
                                "rules",
                                where,
                                f"{register.name}/{op} on {arch.name} {release}: "
                                "the last applicable rule must have no 'when' (a default)",
                            )
                            return


class _RuleContext:
    """What rules may refer to, and the typed names each register's rules can use."""

    def __init__(
        self,
        spec_state: tuple[StateVariable, ...],
        registers: tuple[Register, ...],
        classes: tuple[FieldValue, ...],
        errnos: tuple[Errno, ...],
        reg_id: Layout,
        psci_versions: tuple[PsciVersion, ...],
    ) -> None:
        self.registers = registers
        self.classes = classes
        self.errnos = errnos
        self.rule_index: dict[str, int] = {}
        types = {"bool": rl.Type.BOOL, "int": rl.Type.INT}
        self.common: dict[str, rl.Type] = {s.name: types[s.type] for s in spec_state}
        self.common.update(
            {
                "kernel.psci-latest": rl.Type.INT,
                "kernel.psci-versions": rl.Type.SET,
                "reg.known": rl.Type.BOOL,
                "reg.size": rl.Type.INT,
            }
        )
        self.common.update({f"size.{v.name}": rl.Type.INT for v in reg_id.field("size").values})
        known = {v.name for v in psci_versions}

        def check_psci(args: tuple[rl.Expr, ...]) -> str | None:
            if not all(isinstance(a, rl.Number) for a in args):
                return "psci() takes two number literals"
            major, minor = (cast(rl.Number, a).value for a in args)
            if f"{major}.{minor}" not in known:
                return f"psci({major}, {minor}) is not a PSCI version the spec defines"
            return None

        self.functions = {"psci": rl.Function((rl.Type.INT, rl.Type.INT), rl.Type.INT, check_psci)}

    def scope(self, register: Register | None, op: str) -> rl.Scope:
        names = dict(self.common)
        if op == "set":
            names["value"] = rl.Type.INT
        if register is not None:
            if op == "set":
                names.update({f"value.{f.name}": rl.Type.INT for f in register.layout})
            if register.storage == "vm":
                names["stored"] = rl.Type.INT
            if register.kind == "level":
                names["host.level"] = rl.Type.INT
            if register.kind == "bitmap":
                names["known-bits"] = rl.Type.INT
            names.update({v.name: rl.Type.INT for v in register.values})
            names.update({f"bit.{b.name}": rl.Type.INT for b in register.bits})
        return rl.Scope(names, self.functions)


KvmInterface = tuple[
    tuple[Ioctl, ...],
    tuple[Offset, ...],
    tuple[Constant, ...],
    tuple[Constant, ...],
    tuple[CoreRegisters, ...],
]


def _ioc(direction: int, kind: int, nr: int, size: int) -> int:
    """The kernel's _IOC(): direction in bits 31-30, size 29-16, type 15-8, number 7-0."""
    return direction << 30 | size << 16 | kind << 8 | nr


def _ranges(bits: list[int]) -> str:
    """Compact bit list: [4, 5, 6, 9] -> '4-6, 9'."""
    runs: list[list[int]] = []
    for bit in sorted(bits):
        if runs and bit == runs[-1][-1] + 1:
            runs[-1].append(bit)
        else:
            runs.append([bit])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def resolve(documents: Mapping[str, SourceDocument], files: tuple[SpecFile, ...]) -> Spec:
    """Build the model from schema-valid documents; raise SpecError with every problem."""
    r = _Resolver(documents)
    releases = r.resolve_releases()
    layouts = r.resolve_layouts()
    reg_id = next(lay for lay in layouts if lay.name == "reg-id")
    smccc = next(lay for lay in layouts if lay.name == "smccc-function-id")
    architectures = r.resolve_architectures(reg_id)
    errnos, features, caps, state = r.resolve_api()
    ioctls, kvm_run, exit_reasons, system_events, core_registers = r.resolve_kvm_interface()
    services = r.resolve_services()
    if r.problems:
        raise SpecError(r.problems)
    registers = r.resolve_registers(reg_id, architectures, services)
    host_profiles = r.resolve_host_profiles(registers)
    versions = r.resolve_psci_versions()
    latest = r.resolve_psci_latest(versions)
    psci_functions = r.resolve_psci_functions(smccc, versions, caps)
    base, c_base, kvm01 = r.resolve_kvm_psci_01()
    codes, groups = r.resolve_constants()
    smccc_functions = r.resolve_smccc_functions(smccc, services, psci_functions)
    classes = tuple(v for v in reg_id.field("class").values if v.firmware)
    if r.problems:
        raise SpecError(r.problems)
    context = _RuleContext(state, registers, classes, errnos, reg_id, versions)
    registers = r.resolve_resets(context)
    context.registers = registers
    rules = r.resolve_rules(context)
    vmm_rules = r.resolve_vmm_rules(rules)
    if r.problems:
        raise SpecError(r.problems)
    return Spec(
        files,
        releases,
        architectures,
        layouts,
        errnos,
        features,
        caps,
        state,
        registers,
        host_profiles,
        versions,
        latest,
        psci_functions,
        base,
        c_base,
        kvm01,
        codes,
        groups,
        tuple(services.values()),
        smccc_functions,
        rules,
        ioctls,
        kvm_run,
        exit_reasons,
        system_events,
        core_registers,
        vmm_rules,
    )
