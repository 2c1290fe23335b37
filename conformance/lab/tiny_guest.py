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

from kvm_fwspec.spec.errors import UsageError

LOAD_ADDRESS = 0x40200000
UART = 0x09000000  # the virt machine's PL011
SYSTEM_OFF = 0x84000008

ROUND = -16  # written before each round of answers: 0xfffffffffffffff0

SOURCE = """
    .text
    .global _start
_start:
    movz x21, #{uart_high}, lsl #16     // x21: the PL011
    movz w1, #0x301                     // UARTCR: UARTEN | TXE | RXE
    str  w1, [x21, #0x30]
    mov  x22, #{rounds}                 // rounds left (0: forever)
round:
    mov  x0, #{round_marker}
    bl   put
    adr  x20, calls
next:
    ldp  x0, x1, [x20], #16             // function id, argument
    cbz  x0, done
    hvc  #0
    bl   put
    b    next
done:
    subs x22, x22, #1
    b.eq off                            // the last of a counted run
    movz x3, #{pause_high}, lsl #16     // a pause, so a VMM can stop and save between rounds
pause:
    subs x3, x3, #1
    b.ne pause
    b    round
off:
    ldr  x0, ={system_off:#x}
    hvc  #0
    b    .
put:                                    // x0 to the UART, least significant byte first
    mov  x2, #8
byte:
    strb w0, [x21]
    lsr  x0, x0, #8
    subs x2, x2, #1
    b.ne byte
    ret
    .balign 16
calls:
{table}
    .quad 0, 0
"""


def assemble(calls: Sequence[tuple[int, int]], rounds: int = 1) -> bytes:
    """The raw image for `calls`, (function id, x1) pairs made in order, `rounds` times (0:
    until the VMM stops it), each round after the ROUND marker; then SYSTEM_OFF."""
    for tool in ("clang", "llvm-objcopy"):
        if shutil.which(tool) is None:
            raise UsageError(f"building the tiny guest needs {tool} (Debian packages clang, llvm)")
    table = "\n".join(f"    .quad {fid:#x}, {arg:#x}" for fid, arg in calls)
    text = SOURCE.format(uart_high=UART >> 16, system_off=SYSTEM_OFF, table=table, rounds=rounds,
                         round_marker=ROUND, pause_high=0x100)  # fmt: skip
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


def observed(uart: bytes, calls: int) -> list[list[int]]:
    """The x0 of each call, signed, round by round, from the guest's UART output. Rounds are
    found by their marker at any byte: a guest stopped in the middle of writing a word resumes
    elsewhere mid-word. A round cut short is left out."""
    marker = struct.pack("<q", ROUND)
    rounds = []
    start = uart.find(marker)
    while start >= 0:
        body = uart[start + 8 : start + 8 + 8 * calls]
        answers = [struct.unpack_from("<q", body, 8 * i)[0] for i in range(len(body) // 8)]
        if len(answers) == calls and ROUND not in answers:
            rounds.append(answers)
        start = uart.find(marker, start + 8)
    return rounds
