"""A struct the ABI passes by address (kvm_smccc_filter, pvclock_vcpu_stolen_time): its
fields, checked to tile it exactly, and to include every field the spec's rules read."""

from __future__ import annotations

from kvm_fwspec.spec.model import FilterField
from kvm_fwspec.spec.resolve.context import Context, Raw
from kvm_fwspec.spec.yaml_source import JsonPath


def resolve_struct(
    ctx: Context, stem: str, path: JsonPath, raw: Raw, required: frozenset[str]
) -> tuple[FilterField, ...]:
    """The fields of the struct at `path`; each must start where the previous ends, the last
    end at the struct's size, and none of `required` be missing."""
    fields = tuple(
        FilterField(name=f["name"], offset=f["offset"], size=f["size"], doc=f["doc"])
        for f in raw["fields"]
    )
    offset = 0
    for i, f in enumerate(fields):
        if f.offset != offset:
            ctx.error(
                stem,
                (*path, "fields", i, "offset"),
                f"field '{f.name}' starts at {f.offset}, not at {offset} where the previous field ends",
            )
        offset = f.offset + f.size
    if offset != raw["size"]:
        ctx.error(
            stem,
            (*path, "size"),
            f"the fields end at byte {offset}, not at the struct's size {raw['size']}",
        )
    missing = required - {f.name for f in fields}
    if missing:
        ctx.error(stem, (*path, "fields"), f"no field {', '.join(sorted(missing))}")
    return fields
