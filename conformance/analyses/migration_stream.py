"""The registers a QEMU migration stream carries for an arm64 KVM vcpu: its cpreg list.

QEMU saves each KVM register it syncs through its cpreg list (everything KVM_GET_REG_LIST
lists but the core and SVE registers) in the "cpu" section as three fields in a row:
cpreg_vmstate_array_len (a 32-bit count), cpreg_vmstate_indexes (that many 64-bit register
ids, ascending) and cpreg_vmstate_values (that many 64-bit values), big-endian on the wire.
Rather than walk every section of the stream (whose layout changes with each QEMU release),
this finds the one place where a count is followed by that many ascending arm64 register
ids, which nothing else in the stream looks like.

It lives among the analyses, not the lab, because reading a stream needs no QEMU: the lab
reads the streams it saves with it, and `fingerprint --from-qemu-stream` reads streams a
fleet already has.
"""

from __future__ import annotations

import itertools
import re
import struct

ARM64_REG = 0x60  # KVM_REG_ARM64 in an id's top byte
MIN_REGISTERS = 8  # fewer ascending ids could occur by chance; any real vcpu has hundreds
_CANDIDATE = re.compile(rb"(?=\x00\x00[\x00-\x0f].\x60)", re.DOTALL)


class StreamError(ValueError):
    """The bytes are not a QEMU arm64 stream with exactly one vcpu's register list."""


def cpregs(stream: bytes) -> dict[int, int]:
    """Register id -> value for the (single) vcpu the stream saved."""
    if not stream.startswith(b"QEVM"):
        raise StreamError("not a QEMU migration stream (no QEVM magic)")
    found = [at for m in _CANDIDATE.finditer(stream) if _is_list(stream, at := m.start())]
    if len(found) != 1:
        raise StreamError(f"expected one vcpu register list in the stream, found {len(found)}")
    at = found[0]
    (count,) = struct.unpack_from(">I", stream, at)
    ids = struct.unpack_from(f">{count}Q", stream, at + 4)
    values = struct.unpack_from(f">{count}Q", stream, at + 4 + 8 * count)
    return dict(zip(ids, values, strict=True))


def _is_list(stream: bytes, at: int) -> bool:
    (count,) = struct.unpack_from(">I", stream, at)
    if count < MIN_REGISTERS or at + 4 + 16 * count > len(stream):
        return False
    ids = struct.unpack_from(f">{count}Q", stream, at + 4)
    return all(i >> 56 == ARM64_REG for i in ids) and all(a < b for a, b in itertools.pairwise(ids))
