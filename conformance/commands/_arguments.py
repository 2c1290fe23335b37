"""Arguments several subcommands share, declared once so they read the same everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path


def nonempty_path(text: str) -> Path:
    """An argparse type for every path option: '' is refused (`Path('')` is `.`, so an empty
    `--output ''` would otherwise be read as the current folder, and a `$UNSET` variable in a
    script would name it without anyone meaning to). argparse says it as
    `argument --output: an empty path`, naming the option."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def add_profile_arguments(parser: argparse.ArgumentParser, auto: bool = False) -> None:
    """--kernel, --host and --arch: the KVM profile an implementation is held to; with `auto`,
    a command that records an implementation may take both from its hello."""
    kernel_auto = ", or auto: the kernel the adapter's hello reports" if auto else ""
    host_auto = ", or auto: the levels the adapter's hello reports" if auto else ""
    parser.add_argument(
        "--kernel",
        default="latest",
        help=f"kernel release profile, e.g. 6.12 (default: newest){kernel_auto}",
    )
    parser.add_argument(
        "--host", default="mitigated", help=f"host profile (default: mitigated){host_auto}"
    )
    parser.add_argument("--arch", default="arm64", help="architecture (default: arm64)")


def add_cache_option(parser: argparse.ArgumentParser) -> None:
    """--cache, for the commands that download Debian's kernels and packages."""
    parser.add_argument(
        "--cache",
        type=nonempty_path,
        default=None,
        help="downloads and images (default ~/.cache/kvm-fwspec)",
    )


def add_adapter_options(parser: argparse.ArgumentParser) -> None:
    """--option KEY=VALUE, repeated: what the adapter is told (a command, a token, ...)."""
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option"
    )
