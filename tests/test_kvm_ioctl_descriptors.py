"""The kvm adapter touches nothing but the file descriptors it created: every ioctl, mmap and
close in conformance/kvm_ioctl.py acts on an `fd` attribute, and every `fd` attribute is
assigned only from opening the KVM device or from a KVM ioctl that creates a descriptor."""

from __future__ import annotations

import ast

from tests.checkout import ROOT

SOURCE = ROOT / "conformance" / "guest" / "kvm_ioctl.py"
TREE = ast.parse(SOURCE.read_text(encoding="utf-8"))
USES = {("fcntl", "ioctl"), ("mmap", "mmap"), ("os", "close"), ("os", "read"), ("os", "write")}
CREATORS = {"KVM_CREATE_VM", "KVM_CREATE_VCPU"}


def dotted(node: ast.expr) -> str:
    return ast.unparse(node)


def calls() -> list[ast.Call]:
    return [
        n for n in ast.walk(TREE) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    ]


def test_every_descriptor_use_is_an_fd_attribute() -> None:
    uses = [
        c
        for c in calls()
        if isinstance(c.func.value, ast.Name) and (c.func.value.id, c.func.attr) in USES
    ]  # type: ignore[attr-defined]
    assert len(uses) >= 8
    foreign = [f"line {c.lineno}: {dotted(c)}" for c in uses
               if not (isinstance(c.args[0], ast.Attribute) and c.args[0].attr == "fd")]  # fmt: skip
    assert foreign == []


def test_every_fd_attribute_comes_from_opening_kvm_or_a_creating_ioctl() -> None:
    assignments = [
        n for n in ast.walk(TREE)
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "fd" for t in n.targets)
    ]  # fmt: skip
    assert len(assignments) == 3
    for assignment in assignments:
        value = assignment.value
        assert isinstance(value, ast.Call), dotted(value)
        source = dotted(value.func)
        if source == "os.open":
            assert dotted(value.args[0]) == "device"  # the KVM device the agent was given
        else:
            assert source == "fcntl.ioctl", dotted(value)
            assert isinstance(value.args[1], ast.Attribute) and value.args[1].attr in CREATORS
            assert isinstance(value.args[0], ast.Attribute) and value.args[0].attr == "fd"
