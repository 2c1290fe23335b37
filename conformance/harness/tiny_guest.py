"""The tiny guest a VMM under test boots: a few aarch64 instructions, no firmware, no kernel.

It makes each call of its table with HVC #0 (x0 = function id, x1 = argument), writes each x0
it gets back to the PL011 UART as 8 little-endian bytes, then asks PSCI for SYSTEM_OFF. So the
UART output is what the guest saw, call by call. Assembled by clang from the source below
(the table is data); position-independent, loaded by QEMU's generic loader at LOAD_ADDRESS,
above the device tree QEMU places at the start of RAM when it has no -kernel.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from codegen.errors import UsageError

LOAD_ADDRESS = 0x40200000
UART = 0x09000000  # the virt machine's PL011
SYSTEM_OFF = 0x84000008

SOURCE = """
    .text
    .global _start
_start:
    movz x21, #{uart_high}, lsl #16     // x21: the PL011
    movz w1, #0x301                     // UARTCR: UARTEN | TXE | RXE
    str  w1, [x21, #0x30]
    adr  x20, calls
next:
    ldp  x0, x1, [x20], #16             // function id, argument
    cbz  x0, off
    hvc  #0
    mov  x2, #8
byte:
    strb w0, [x21]                      // x0, least significant byte first
    lsr  x0, x0, #8
    subs x2, x2, #1
    b.ne byte
    b    next
off:
    ldr  x0, ={system_off:#x}
    hvc  #0
    b    .
    .balign 16
calls:
{table}
    .quad 0, 0
"""


def assemble(calls: Sequence[tuple[int, int]]) -> bytes:
    """The raw image for `calls`, (function id, x1) pairs made in order."""
    for tool in ("clang", "llvm-objcopy"):
        if shutil.which(tool) is None:
            raise UsageError(f"building the tiny guest needs {tool} (Debian packages clang, llvm)")
    table = "\n".join(f"    .quad {fid:#x}, {arg:#x}" for fid, arg in calls)
    text = SOURCE.format(uart_high=UART >> 16, system_off=SYSTEM_OFF, table=table)
    with tempfile.TemporaryDirectory() as work:
        source, obj, image = (Path(work) / n for n in ("guest.S", "guest.o", "guest.bin"))
        source.write_text(text, encoding="utf-8")
        # Everything is PC-relative within .text, so the object's .text is the image: no linker.
        subprocess.run(
            ["clang", "--target=aarch64-linux-gnu", "-c", "-o", str(obj), str(source)],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            ["llvm-objcopy", "-O", "binary", "--only-section=.text", str(obj), str(image)],
            check=True,
        )
        return image.read_bytes()


def observed(uart: bytes, calls: int) -> list[int]:
    """The x0 of each call, signed, from the guest's UART output."""
    if len(uart) < calls * 8:
        raise ValueError(f"the guest wrote {len(uart)} bytes for {calls} calls")
    return [struct.unpack_from("<q", uart, 8 * i)[0] for i in range(calls)]
