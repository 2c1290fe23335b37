"""The rule language's vocabulary: every name a rule may use, its type, and what it means.

A rule's `when`, `value` and `store`, and a register's `reset`, are expressions over names.
The loader types each in the scope this module gives its register and op; the conformance
oracle and the reference implementation evaluate them, so for an access each must fill exactly
the names of that scope, with values of those types. tests/test_rule_names.py holds both to
this declaration: the reference, standard library only, cannot import it.

A name is one of three kinds:

- the vcpu and VM state that api.yaml declares under `state:` (`vcpu.initialized`,
  `vcpu.psci-0.2`, `vm.has-run`), named, typed and documented there, so not repeated here;
- a fixed name (`reg.known`, `stored`, ...), in scope for the accesses its `Given` says;
- a family: one name per member of something the spec defines, `size.SIZE` per value of the
  reg-id size field and, per register, `value.FIELD` per field of its layout, `bit.BIT` per
  bit and each of its named values by its own name (`not-avail`, `avail`, ...).

The one function is `psci(major, minor)`, a PSCI version encoded as major << 16 | minor; both
arguments are number literals naming a version psci.yaml defines.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import cast

from kvm_fwspec.spec.model import Layout, PsciVersion, Register, Spec, StateVariable
from kvm_fwspec.spec.rule_language import Expr, Function, Number, Scope, Type

# What is in scope depends on the op, GET, SET or REG_LIST, as rules.yaml spells it.
OPS = ("get", "set", "list")


class Given(enum.Enum):
    """The accesses a name is in scope for."""

    EVERY_ACCESS = "every access, also of an id no register of this release has"
    SET = "every SET, also of an id no register of this release has"
    SET_OF_REGISTER = "a SET of a register"
    REGISTER = "every access of a register"
    STORED_REGISTER = "an access of a register the VM stores (storage: vm)"
    LEVEL_REGISTER = "an access of a level register (a workaround's mitigation level)"
    BITMAP_REGISTER = "an access of a bitmap register (the services a guest may call)"

    def holds(self, register: Register | None, op: str) -> bool:
        if self is Given.EVERY_ACCESS:
            return True
        if self is Given.SET:
            return op == "set"
        if register is None:
            return False
        return {
            Given.SET_OF_REGISTER: op == "set",
            Given.REGISTER: True,
            Given.STORED_REGISTER: register.storage == "vm",
            Given.LEVEL_REGISTER: register.kind == "level",
            Given.BITMAP_REGISTER: register.kind == "bitmap",
        }[self]


class Family(enum.Enum):
    """What a family has one name for; the value is the member's placeholder in its spelling."""

    SIZE = "SIZE"  # each value of the reg-id layout's size field
    FIELD = "FIELD"  # each field of the register's layout
    VALUE_NAME = "VALUE-NAME"  # each of the register's named values
    BIT = "BIT"  # each of the register's bits

    def members(self, register: Register | None, reg_id: Layout) -> tuple[str, ...]:
        if self is Family.SIZE:
            return tuple(v.name for v in reg_id.field("size").values)
        if register is None:
            return ()
        return {
            Family.FIELD: tuple(f.name for f in register.layout),
            Family.VALUE_NAME: tuple(v.name for v in register.values),
            Family.BIT: tuple(b.name for b in register.bits),
        }[self]


@dataclass(frozen=True, kw_only=True)
class RuleName:
    """A name a rule may use or, with a `family`, the names made by putting each member of
    that family in place of the placeholder that ends the spelling (`bit.BIT`: `bit.enabled`)."""

    spelling: str
    type: Type
    given: Given
    doc: str
    family: Family | None = None

    def names(self, register: Register | None, reg_id: Layout) -> Iterator[str]:
        if self.family is None:
            yield self.spelling
            return
        prefix = self.spelling.removesuffix(self.family.value)
        for member in self.family.members(register, reg_id):
            yield prefix + member


# In the order a scope is built; a later name would shadow an earlier one of the same spelling.
RULE_NAMES: tuple[RuleName, ...] = (
    RuleName(
        spelling="kernel.psci-latest",
        type=Type.INT,
        given=Given.EVERY_ACCESS,
        doc="The newest PSCI version KVM of this release implements (psci.yaml's `latest`), "
        "encoded: what a PSCI 0.2 vcpu gets until the VMM selects another.",
    ),
    RuleName(
        spelling="kernel.psci-versions",
        type=Type.SET,
        given=Given.EVERY_ACCESS,
        doc="Every PSCI version KVM of this release implements, encoded.",
    ),
    RuleName(
        spelling="reg.known",
        type=Type.BOOL,
        given=Given.EVERY_ACCESS,
        doc="The id is a register's that exists in this release on this architecture.",
    ),
    RuleName(
        spelling="reg.size",
        type=Type.INT,
        given=Given.EVERY_ACCESS,
        doc="The id's size field, to compare with the size.SIZE names.",
    ),
    RuleName(
        spelling="size.SIZE",
        family=Family.SIZE,
        type=Type.INT,
        given=Given.EVERY_ACCESS,
        doc="Each named value of the reg-id layout's size field (`size.u64`).",
    ),
    RuleName(
        spelling="value",
        type=Type.INT,
        given=Given.SET,
        doc="The value KVM_SET_ONE_REG is asked to write.",
    ),
    RuleName(
        spelling="value.FIELD",
        family=Family.FIELD,
        type=Type.INT,
        given=Given.SET_OF_REGISTER,
        doc="Each field of that value by the register's layout, shifted down (`value.level`).",
    ),
    RuleName(
        spelling="stored",
        type=Type.INT,
        given=Given.STORED_REGISTER,
        doc="The register's VM-wide value as KVM holds it now; in a new VM, its reset value.",
    ),
    RuleName(
        spelling="host.level",
        type=Type.INT,
        given=Given.LEVEL_REGISTER,
        doc="The mitigation level the host reports for the workaround: its host profile's.",
    ),
    RuleName(
        spelling="known-bits",
        type=Type.INT,
        given=Given.BITMAP_REGISTER,
        doc="The mask of the register's bits that KVM of this release knows.",
    ),
    RuleName(
        spelling="VALUE-NAME",
        family=Family.VALUE_NAME,
        type=Type.INT,
        given=Given.REGISTER,
        doc="Each of the register's named values, by its own name (a level: `not-avail`).",
    ),
    RuleName(
        spelling="bit.BIT",
        family=Family.BIT,
        type=Type.INT,
        given=Given.REGISTER,
        doc="The mask of each of the register's bits (`bit.enabled`).",
    ),
)

_STATE_TYPES = {"bool": Type.BOOL, "int": Type.INT}


class Vocabulary:
    """The names and the function of one spec's rules, ready to give each access its scope."""

    def __init__(
        self,
        *,
        state: Iterable[StateVariable],
        reg_id: Layout,
        psci_versions: Iterable[PsciVersion],
    ) -> None:
        self.state = {s.name: _STATE_TYPES[s.type] for s in state}
        self.reg_id = reg_id
        known = frozenset(v.name for v in psci_versions)
        self.functions = {
            "psci": Function((Type.INT, Type.INT), Type.INT, partial(_check_psci, known))
        }

    @classmethod
    def of(cls, spec: Spec) -> Vocabulary:
        return cls(state=spec.state, reg_id=spec.layout("reg-id"), psci_versions=spec.psci_versions)

    def names(self, register: Register | None, op: str) -> dict[str, Type]:
        """Each name a rule about `op` of `register` (None: an id no register has) may use,
        with its type: what an implementation fills, with a value, for such an access."""
        names = dict(self.state)
        for rule_name in RULE_NAMES:
            if rule_name.given.holds(register, op):
                names.update(dict.fromkeys(rule_name.names(register, self.reg_id), rule_name.type))
        return names

    def scope(self, register: Register | None, op: str) -> Scope:
        return Scope(self.names(register, op), self.functions)


def _check_psci(known: frozenset[str], args: tuple[Expr, ...]) -> str | None:
    """psci(major, minor) takes literals, so that a rule can only name a version that exists."""
    if not all(isinstance(a, Number) for a in args):
        return "psci() takes two number literals"
    major, minor = (cast(Number, a).value for a in args)
    if f"{major}.{minor}" not in known:
        return f"psci({major}, {minor}) is not a PSCI version the spec defines"
    return None
