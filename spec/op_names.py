"""The vocabulary of a decision table that has one of its own: the names its rules may use,
per operation, with their types.

The SMCCC filter's tables (spec/filter_names.py) and the vcpu power tables
(spec/power_names.py) each declare their names with OpName; the registers' richer vocabulary
is spec/rule_names.py. A spelling that ends in an upper-case segment (`action.ACTION`) is a
family: one name per member the spec defines (`action.deny`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kvm_fwspec.spec.rule_language import Scope, Type


@dataclass(frozen=True, kw_only=True)
class OpName:
    """A name in scope for the rules of `ops`."""

    spelling: str
    type: Type
    ops: tuple[str, ...]
    doc: str

    @property
    def family(self) -> str | None:
        """The placeholder a family's spelling ends in (ACTION), or None for one name."""
        last = self.spelling.rsplit(".", 1)[-1]
        return last if last.isupper() else None


def names_for(
    names: tuple[OpName, ...], op: str, members: Mapping[str, tuple[str, ...]]
) -> dict[str, Type]:
    """Each name a rule about `op` may use, with its type; `members` gives each family's
    placeholder the names of what the spec defines for it."""
    found: dict[str, Type] = {}
    for name in names:
        if op not in name.ops:
            continue
        if name.family is None:
            found[name.spelling] = name.type
        else:
            prefix = name.spelling.removesuffix(name.family)
            found.update({prefix + member: name.type for member in members[name.family]})
    return found


def scope_for(names: tuple[OpName, ...], op: str, members: Mapping[str, tuple[str, ...]]) -> Scope:
    return Scope(names_for(names, op, members), {})
