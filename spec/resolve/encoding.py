"""encoding.yaml: the layouts of the words KVM's ids are built from, field by field.

Register ids and SMCCC function ids are composed from these fields, never typed in, so a layout
must account for every bit of its word exactly once, as gen-sysreg insists for the arm64
system registers. The same check tiles a register's own 64-bit layout (registers.yaml) and the
index fields of a register class.
"""

from __future__ import annotations

from kvm_fwspec.spec.model import Field, FieldValue, Layout
from kvm_fwspec.spec.resolve.context import Context, Raw, optional_source
from kvm_fwspec.spec.yaml_source import JsonPath

# The layouts the resolver composes ids with, and the fields it composes them from.
REQUIRED_LAYOUTS = (
    ("reg-id", {"arch", "size", "class", "index"}),
    ("smccc-function-id", {"call-type", "convention", "owner", "function"}),
)


def resolve_layouts(ctx: Context) -> tuple[Layout, ...]:
    """Every layout; stop here if any is wrong, since every id is composed with them."""
    raws = ctx.data("encoding")["layouts"]
    layouts = tuple(
        Layout(
            name=raw["name"],
            doc=raw["doc"],
            width=raw["width"],
            fields=resolve_fields(
                ctx, "encoding", ("layouts", i, "fields"), raw["fields"], raw["width"]
            ),
        )
        for i, raw in enumerate(raws)
    )
    ctx.unique("encoding", ("layouts",), raws, "name", "layout")
    names = [layout.name for layout in layouts]
    for required, fields_needed in REQUIRED_LAYOUTS:
        if required not in names:
            ctx.error("encoding", ("layouts",), f"layout '{required}' is required")
            continue
        index = names.index(required)
        absent = fields_needed - {f["name"] for f in raws[index]["fields"]}
        if absent:
            ctx.error(
                "encoding",
                ("layouts", index, "fields"),
                f"layout '{required}' lacks fields {sorted(absent)}",
            )
    ctx.stop_on_problems()
    return layouts


def resolve_fields(
    ctx: Context, stem: str, path: JsonPath, raws: list[Raw], width: int, low: int = 0
) -> tuple[Field, ...]:
    """Fields of a `width`-bit word starting at bit `low`; they must tile it exactly."""
    fields = []
    owner = [""] * width
    misplaced = False
    for i, raw in enumerate(raws):
        fpath = (*path, i)
        high_bit, low_bit = raw["bits"]
        if high_bit < low_bit:
            ctx.error(stem, (*fpath, "bits"), f"bits [{high_bit}, {low_bit}] must be [high, low]")
            misplaced = True
            continue
        if high_bit >= low + width or low_bit < low:
            ctx.error(
                stem,
                (*fpath, "bits"),
                f"bits [{high_bit}, {low_bit}] fall outside the {width}-bit word",
            )
            misplaced = True
            continue
        for bit in range(low_bit, high_bit + 1):
            if owner[bit - low]:
                ctx.error(stem, (*fpath, "bits"), f"bit {bit} overlaps field '{owner[bit - low]}'")
                break
            owner[bit - low] = raw["name"]
        values = _field_values(
            ctx, stem, (*fpath, "values"), raw.get("values", []), high_bit - low_bit + 1
        )
        fields.append(
            Field(
                name=raw["name"],
                doc=raw["doc"],
                high=high_bit,
                low=low_bit,
                reserved=raw.get("reserved", False),
                c_mask=raw.get("c-mask"),
                c_shift=raw.get("c-shift"),
                values=values,
            )
        )
    missing = [low + b for b, name in enumerate(owner) if not name]
    if missing and not misplaced:  # a misplaced field already explains the gap
        ctx.error(stem, path, f"bits {_ranges(missing)} are not accounted for by any field")
    ctx.unique(stem, path, raws, "name", "field name")
    return tuple(fields)


def _field_values(
    ctx: Context, stem: str, path: JsonPath, raws: list[Raw], width: int
) -> tuple[FieldValue, ...]:
    """A field's named values, each of which must fit the field."""
    values = []
    for i, raw in enumerate(raws):
        vpath = (*path, i)
        if raw["value"] >= 1 << width:
            ctx.error(
                stem, (*vpath, "value"), f"value {raw['value']:#x} does not fit in {width} bits"
            )
        index_fields = (
            resolve_fields(ctx, stem, (*vpath, "index-fields"), raw["index-fields"], 16)
            if "index-fields" in raw
            else ()
        )
        values.append(
            FieldValue(
                name=raw["name"],
                doc=raw["doc"],
                value=raw["value"],
                lifetime=ctx.lifetime(stem, vpath, raw),
                c_name=raw.get("c-name"),
                c_reg_macro=raw.get("c-reg-macro"),
                architectures=tuple(raw.get("architectures", ("arm64", "arm"))),
                firmware=raw.get("firmware", False),
                index_fields=index_fields,
                source=optional_source(raw.get("source")),
            )
        )
    ctx.unique(stem, path, raws, "name", "value name")
    ctx.unique(stem, path, raws, "value", "value")
    return tuple(values)


def _ranges(bits: list[int]) -> str:
    """Compact bit list: [4, 5, 6, 9] -> '4-6, 9'."""
    runs: list[list[int]] = []
    for bit in sorted(bits):
        if runs and bit == runs[-1][-1] + 1:
            runs[-1].append(bit)
        else:
            runs.append([bit])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
