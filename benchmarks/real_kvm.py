"""End-to-end time of the four-kernel real-KVM certification, next to the bare boot time of
the same images (QEMU start to the agent's first answer). Prints numbers; asserts nothing.

    python benchmarks/real_kvm.py            # uses the cache that `kvm-fwspec qemu` fills
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from conformance.adapters.qemu import QemuAdapter, default_cache, prepare
from conformance.harness.kernels import kernel_lines
from conformance.harness.qemu import Guest
from conformance.harness.realkvm import run_qemu


def bare_boot(release: str) -> tuple[float, float]:
    """Seconds to prepare (cached) and to boot until the agent says hello."""
    start = time.perf_counter()
    kernel, initramfs = prepare(release, default_cache())
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    adapter = QemuAdapter(kernel, Guest(kernel, initramfs), 256)
    adapter.capabilities()
    booted = time.perf_counter() - start
    adapter.close()
    return prepared, booted


def main() -> None:
    total_boot = 0.0
    for line in kernel_lines():
        prepared, booted = bare_boot(line.release)
        total_boot += booted
        print(
            f"{line.release:<5} prepare (cached) {prepared:6.2f} s   boot to agent hello {booted:6.2f} s"
        )
    with tempfile.TemporaryDirectory() as report:
        start = time.perf_counter()
        run_qemu("pinned", None, None, Path(report))
        total = time.perf_counter() - start
    print(
        f"four kernels: bare boots {total_boot:.1f} s; full certification end to end {total:.1f} s"
    )


if __name__ == "__main__":
    main()
