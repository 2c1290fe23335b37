"""kvm-fwspec qemu: certify real KVM of Debian's arm64 kernels, each booted under QEMU."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvm_fwspec.conformance.campaigns.built_kernel import BuiltRun, run_built_kernel
from kvm_fwspec.conformance.campaigns.real_kvm import run_qemu
from kvm_fwspec.conformance.commands._arguments import add_cache_option
from kvm_fwspec.spec.errors import UsageError

DEFAULT_REPORT = Path("reports/real-kvm")

HELP = "certify real KVM: boot Debian arm64 kernels, or one you built, under QEMU and run the suite"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernel",
        default="pinned",
        help="a release line (5.10, 6.1, ...), 'pinned' (all) or 'latest'",
    )
    parser.add_argument(
        "--kernel-package", default=None, help="an exact Debian package for the line"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="lines certified at once, one guest each (default: one per core)",
    )
    built = parser.add_argument_group(
        "a kernel you built",
        "Boot your own arm64 kernel instead, read for its release and checked to serve as a KVM "
        "host first. Exit status, as git bisect run expects: 0 conforms, 1 does not, 125 this "
        "build cannot be tested (no KVM or virtio console, no boot, a release the spec does "
        "not know); 2 a mistake in the command line.",
    )
    built.add_argument(
        "--kernel-image", type=Path, metavar="PATH", help="arch/arm64/boot/Image or a vmlinuz"
    )
    built.add_argument(
        "--modules",
        type=Path,
        metavar="DIR",
        help="its lib/modules/RELEASE folder (make modules_install), where virtio is a module",
    )
    built.add_argument(
        "--release", help="judge it as this kernel (6.12, 6.12.y) rather than its banner's"
    )
    built.add_argument(
        "--only",
        nargs="+",
        metavar="RULE-ID",
        help="judge the build by these rules' cases alone (a bisection's regression)",
    )
    add_cache_option(parser)
    parser.add_argument(
        "--report",
        type=Path,
        default=DEFAULT_REPORT,
        help="report directory (default: reports/real-kvm, or reports/built-kernel with "
        "--kernel-image)",
    )


def run(args: argparse.Namespace) -> int:
    if args.kernel_image is None:
        given = [f"--{n}" for n in ("modules", "release", "only") if getattr(args, n) is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --kernel-image")
        return run_qemu(args.kernel, args.kernel_package, args.cache, args.report, args.jobs)
    if args.kernel != "pinned" or args.kernel_package is not None:
        raise UsageError("--kernel-image boots your kernel: give no --kernel or --kernel-package")
    report = args.report if args.report != DEFAULT_REPORT else Path("reports/built-kernel")
    run = BuiltRun(
        args.kernel_image, args.modules, args.release, tuple(args.only or ()), args.cache, report
    )
    return run_built_kernel(run)
