"""kernels.yaml: the releases the spec covers, and the architectures KVM runs on.

The releases come first because every other file's `since`, `until` and `backports` must name
one of them; an architecture's reg-id arch value comes from encoding.yaml, so architectures
are resolved once the layouts are.
"""

from __future__ import annotations

from kvm_fwspec.spec.model import Architecture, Layout, Release
from kvm_fwspec.spec.resolve.context import Context


def resolve_releases(ctx: Context) -> tuple[Release, ...]:
    """The releases, which must be in order; they become the context's known releases."""
    raw = ctx.data("kernels")["releases"]
    releases = tuple(Release.parse(r) for r in raw)
    for i in range(1, len(releases)):
        if releases[i] <= releases[i - 1]:
            ctx.error(
                "kernels",
                ("releases", i),
                f"release {releases[i]} is not after {releases[i - 1]}",
            )
    ctx.releases = releases
    return releases


def resolve_architectures(ctx: Context, reg_id: Layout) -> tuple[Architecture, ...]:
    """Each architecture with the value of the reg-id arch field its register ids carry."""
    raws = ctx.data("kernels")["architectures"]
    arch_field = reg_id.field("arch")
    result = []
    for i, raw in enumerate(raws):
        path = ("architectures", i)
        value = next((v for v in arch_field.values if v.name == raw["reg-arch"]), None)
        if value is None:
            ctx.error(
                "kernels",
                (*path, "reg-arch"),
                f"no arch value named '{raw['reg-arch']}' in reg-id",
            )
            continue
        result.append(
            Architecture(
                name=raw["name"],
                doc=raw["doc"],
                reg_arch=value,
                lifetime=ctx.lifetime("kernels", path, raw),
            )
        )
    ctx.unique("kernels", ("architectures",), raws, "name", "architecture")
    return tuple(result)
