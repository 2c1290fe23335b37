"""The agent protocol's versions and how each carries 64-bit numbers.

`kvm-fwspec-agent/1` sends register ids, values, masks, function ids, arguments and x0 as JSON
integers; `kvm-fwspec-agent/2` sends them as hex strings ("0x6030000000140000", x0 as "-0x1"),
because JavaScript's numbers and jq hold integers exactly only up to 2**53 and firmware
register ids start at 0x6030000000000000 (a call's x1-x3, when its step asks for them, travel
as the unsigned numbers do). Both sides translate at the edge, so the executor, the suite and
its results keep Python integers whatever the wire carried. Stdlib only: the agent runs inside
a minimal guest. docs/agent-protocol.md is the reference for every field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

PROTOCOL_V1 = "kvm-fwspec-agent/1"
PROTOCOL_V2 = "kvm-fwspec-agent/2"
PROTOCOLS = (PROTOCOL_V2, PROTOCOL_V1)  # newest first: what a client offers, what agents serve

U64 = 1 << 64
HEX = re.compile(r"(-?)0x([0-9a-fA-F]{1,16})")

# The numeric fields of a program's steps and of their outcomes, by how each is read.
STEP_NUMBERS = (
    "reg",
    "value",
    "mask",
    "match",
    "function",
    "answer",
    "base",
    "nr-functions",
    "action",
    "pad",
    "group",
    "attr",
    "cap",
)
STEP_NUMBER_LISTS = ("args",)
# x1-x3: the rest of a call's answer when its step asks for `results` above 1, read unsigned
# (a UUID's words, not an error code). A step's `results` itself stays a JSON integer.
OUTCOME_NUMBERS = ("value", "hypercall", "hypercall-flags", "x1", "x2", "x3", "flags")
OUTCOME_NUMBER_LISTS = ("ids",)
OUTCOME_SIGNED = ("x0",)


class WireError(ValueError):
    """A number that is not written the way the connection's protocol version says."""


def to_hex(number: int) -> str:
    """`0x` and lowercase hex digits without leading zeros; negative numbers as `-0x1`."""
    return f"-{-number:#x}" if number < 0 else f"{number:#x}"


def from_hex(text: Any, *, signed: bool = False) -> int:
    """An unsigned 64-bit number written as `0x` and 1 to 16 hex digits (either case). With
    `signed` (x0), also `-0x...` down to -2**63, and the register's raw unsigned form read as
    two's complement, so `"0xffffffffffffffff"` and `"-0x1"` are both -1."""
    match = HEX.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise WireError(f'{text!r} is not a hex string such as "0x1f"')
    number = int(match[2], 16)
    if match[1]:
        if not signed or number > 1 << 63:
            raise WireError(f"{text!r} is negative; only x0 is signed, down to -0x8000000000000000")
        return -number
    if signed and number >> 63:
        return number - U64
    return number


def from_integer(number: Any, *, signed: bool = False) -> int:
    """A version-1 number: a JSON integer of the field's range."""
    low, high = (-(1 << 63), 1 << 63) if signed else (0, U64)
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number < high:
        raise WireError(f"{number!r} is not an integer from {low} to {high - 1}")
    return number


def _convert(
    record: Mapping[str, Any],
    convert: Callable[..., Any],
    numbers: tuple[str, ...],
    lists: tuple[str, ...],
    signed: tuple[str, ...] = (),
) -> dict[str, Any]:
    converted = dict(record)
    for key in numbers + signed:
        if key in converted:
            try:
                converted[key] = convert(converted[key], signed=key in signed)
            except WireError as exc:
                raise WireError(f"{key}: {exc}") from None
    for key in lists:
        if key in converted:
            items = converted[key]
            if not isinstance(items, list):
                raise WireError(f"{key}: {items!r} is not a list")
            try:
                converted[key] = [convert(item) for item in items]
            except WireError as exc:
                raise WireError(f"{key}: {exc}") from None
    return converted


def _hex(number: Any, signed: bool = False) -> Any:
    """Hex for an integer; anything else (a malformed program) is left for the agent to refuse."""
    return to_hex(number) if isinstance(number, int) and not isinstance(number, bool) else number


def encode_program(program: Mapping[str, Any], protocol: str) -> dict[str, Any]:
    """A program as the client sends it over `protocol`."""
    if protocol == PROTOCOL_V1:
        return dict(program)
    steps = [_convert(s, _hex, STEP_NUMBERS, STEP_NUMBER_LISTS) for s in program["steps"]]
    return {**program, "steps": steps}


def decode_program(program: Any, protocol: str) -> Any:
    """A program as the agent received it over `protocol`, with integers for every number;
    a program that is not an object with a list of step objects is passed on for the
    executor to refuse in its outcomes."""
    if protocol == PROTOCOL_V1 or not isinstance(program, dict):
        return program
    steps = program.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        return program
    decoded = []
    for index, step in enumerate(steps):
        try:
            decoded.append(_convert(step, from_hex, STEP_NUMBERS, STEP_NUMBER_LISTS))
        except WireError as exc:
            raise WireError(f"step {index}: {exc}") from None
    return {**program, "steps": decoded}


def encode_outcome(outcome: Mapping[str, Any], protocol: str) -> dict[str, Any]:
    """An outcome as the agent sends it over `protocol`."""
    if protocol == PROTOCOL_V1:
        return dict(outcome)
    return _convert(outcome, _hex, OUTCOME_NUMBERS, OUTCOME_NUMBER_LISTS, OUTCOME_SIGNED)


def decode_outcome(outcome: Mapping[str, Any], protocol: str) -> dict[str, Any]:
    """An outcome as the client received it over `protocol`, with integers for every number,
    or a WireError naming the field that breaks the version's encoding."""
    read = from_integer if protocol == PROTOCOL_V1 else from_hex
    return _convert(outcome, read, OUTCOME_NUMBERS, OUTCOME_NUMBER_LISTS, OUTCOME_SIGNED)
