"""Jinja2 filters shared by the templates: number formats and identifier spellings."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any


def hex_u64(value: int) -> str:
    """A 64-bit id as the kernel's headers write them: 0x6030000000140000."""
    return f"0x{value:016x}"


def hex_u32(value: int) -> str:
    return f"0x{value:08x}"


def rust_hex(value: int, digits: int = 16) -> str:
    """A Rust literal with underscores every four digits, as rustfmt and clippy like them."""
    text = f"{value:0{digits}x}"
    groups = [text[max(0, i - 4) : i] for i in range(len(text), 0, -4)][::-1]
    return "0x" + "_".join(groups)


def upper_ident(name: str) -> str:
    """A spec name as an UPPER_SNAKE identifier: 'psci-0.2' -> 'PSCI_0_2'."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()


def camel_ident(name: str) -> str:
    """A spec name as a CamelCase identifier: 'smccc-arch-workaround-1' -> 'SmcccArchWorkaround1'."""
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def shift_left(value: int, bits: int) -> int:
    """Jinja has no << operator; field values are placed at their bit position with this."""
    return value << bits


def split_lines(text: str) -> list[str]:
    return text.splitlines()


FILTERS: dict[str, Callable[..., Any]] = {
    "split_lines": split_lines,
    "shl": shift_left,
    "hex_u64": hex_u64,
    "hex_u32": hex_u32,
    "rust_hex": rust_hex,
    "upper_ident": upper_ident,
    "camel_ident": camel_ident,
}
