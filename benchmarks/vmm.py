"""How long the VMM certification takes, and what keeping the guest hosts up and driving them
side by side buys.

    python benchmarks/vmm.py                      # the whole matrix, --jobs 1 and one per core
    python benchmarks/vmm.py --kernels 6.12,7.2   # a smaller matrix

For each --jobs value: the time to boot the guest hosts, to save every guest, to load every
stream, and in all; migrations per minute; and what booting a fresh source and target host for
each migration (as the lab's predecessor did) would cost at the boot time of one host,
measured first. Uses the cache `kvm-fwspec vmm-certify` fills. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from unittest import mock

from kvm_fwspec.conformance.campaigns import vmm_certification
from kvm_fwspec.conformance.lab.kernels import kernel_lines
from kvm_fwspec.conformance.lab.qemu_adapter import default_cache
from kvm_fwspec.conformance.lab.vmm import SOURCES
from kvm_fwspec.conformance.lab.vmm_lab import Lab
from kvm_fwspec.spec.loader import load_spec


def measure(kernels: list[str], jobs: int) -> dict[str, float]:
    """Phase times of one whole matrix, read off the lab's own calls."""
    marks: dict[str, float] = {}
    real_init, real_save, real_load = Lab.__init__, Lab.save, Lab.load

    def init(self: Lab, *args: object, **kwargs: object) -> None:
        started = time.monotonic()
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        marks["boot"] = time.monotonic() - started

    def first(name: str, real: object) -> object:
        def wrapped(self: Lab, *args: object) -> object:
            marks.setdefault(f"{name}-start", time.monotonic())
            result = real(self, *args)  # type: ignore[operator]
            marks[f"{name}-end"] = time.monotonic()
            return result

        return wrapped

    started = time.monotonic()
    with (mock.patch.object(Lab, "__init__", init), mock.patch.object(Lab, "save", first("save", real_save)),
          mock.patch.object(Lab, "load", first("load", real_load))):  # fmt: skip
        matrix = vmm_certification.run_matrix(
            load_spec(), kernels, list(SOURCES), default_cache(), jobs
        )
    total = time.monotonic() - started
    return {
        "migrations": len(matrix.judgements),
        "boot": marks["boot"],
        "save": marks["save-end"] - marks["save-start"],
        "load": marks["load-end"] - marks["load-start"],
        "total": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernels", default=",".join(line.release for line in kernel_lines()))
    parser.add_argument("--jobs", default=f"1,{os.cpu_count() or 1}")
    args = parser.parse_args()
    kernels = args.kernels.split(",")
    started = time.monotonic()
    Lab([kernels[-1]], list(SOURCES), [(0x84000000, 0)], default_cache()).close()
    one_boot = time.monotonic() - started
    print(f"one guest host boots (with both QEMU builds) in {one_boot:.1f} s")
    print(f"{'jobs':>4} {'migrations':>10} {'boot s':>7} {'saves s':>8} {'loads s':>8} "
          f"{'total s':>8} {'per min':>8} {'two boots each s':>18}")  # fmt: skip
    for jobs in sorted({int(j) for j in args.jobs.split(",")}):
        m = measure(kernels, jobs)
        floor = m["migrations"] * 2 * one_boot
        print(f"{jobs:>4} {m['migrations']:>10.0f} {m['boot']:>7.1f} {m['save']:>8.1f} "
              f"{m['load']:>8.1f} {m['total']:>8.1f} {60 * m['migrations'] / m['total']:>8.1f} "
              f"{floor:>18.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
