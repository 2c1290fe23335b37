"""The `kvm-fwspec` command: find the subcommand, import only its module, run it.

Each subcommand is a module of this package named after it (`migrate-check` is
`migrate_check.py`) with HELP, add_arguments(parser) and run(args). Importing only the one
asked for keeps `kvm-fwspec generate --check` free of pytest and the conformance suite, and
lets a subcommand live beside nothing but what it uses. Every error a user can cause is one
line and a non-zero exit; Ctrl-C at any moment, imports included, is one line and 130.
"""

from __future__ import annotations

import signal
import sys

INTERRUPTED = "kvm-fwspec: interrupted; nothing half-written was left behind"


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Until main() takes over, an interrupt ends the process at once: nothing has been
    written yet, and Python's own handler would print a traceback from inside an import."""
    print(INTERRUPTED, file=sys.stderr)
    sys.exit(130)


_handler_before = signal.signal(signal.SIGINT, _interrupted_while_starting)

import argparse  # noqa: E402  (after the handler: these imports can be interrupted too)
import pkgutil  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

import kvm_fwspec.conformance.commands as commands_package  # noqa: E402
from kvm_fwspec.spec.errors import SpecError, UsageError  # noqa: E402

# Imported by another program (pytest, Sphinx's executed pages), give it its handler back;
# as the program itself (the kvm-fwspec script, python -m), keep this one until main() runs.
if __name__ != "__main__" and Path(sys.argv[0]).name != "kvm-fwspec":
    signal.signal(signal.SIGINT, _handler_before)

DESCRIPTION = (
    "A machine-checked spec of KVM's arm64 firmware pseudo-registers: validate it, generate "
    "from it, certify implementations against it, and check migrations and header copies."
)


def subcommands() -> list[str]:
    """Every subcommand, by its module in this package (sorted, so help and docs are stable)."""
    return sorted(
        info.name.replace("_", "-")
        for info in pkgutil.iter_modules(commands_package.__path__)
        if not info.name.startswith("_") and info.name != "cli"
    )


def _module(name: str) -> ModuleType:
    qualified = f"{commands_package.__name__}.{name.replace('-', '_')}"
    # __import__ rather than importlib.import_module: only the former is timed by
    # `python -X importtime`, which is how a reader checks what a subcommand loads.
    __import__(qualified)
    return sys.modules[qualified]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser for `only`'s subcommand, or (for help and mistakes) for all of them."""
    parser = argparse.ArgumentParser(prog="kvm-fwspec", description=DESCRIPTION)
    parser.add_argument(
        "--spec-dir", type=Path, default=None, help="spec directory (default: the project's spec/)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in [only] if only else subcommands():
        module = _module(name)
        command = sub.add_parser(name, help=module.HELP)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def _requested(argv: list[str]) -> str | None:
    """The subcommand argv names, if it names one that exists."""
    first = argparse.ArgumentParser(prog="kvm-fwspec", add_help=False)
    first.add_argument("--spec-dir")
    first.add_argument("command", nargs="?")
    try:
        known, _ = first.parse_known_args(argv)
    except SystemExit:  # a malformed line: the full parser says what is wrong with it
        return None
    return known.command if known.command in subcommands() else None


def run(argv: list[str] | None = None) -> int:
    """Parse and dispatch, letting every error through: for callers that run commands
    in-process (the docs' executed examples) and must not have an interrupt swallowed."""
    arguments = sys.argv[1:] if argv is None else argv
    args = build_parser(_requested(arguments)).parse_args(arguments)
    return int(args.handler(args))


def main(argv: list[str] | None = None) -> int:
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return run(argv)
    except SpecError as exc:
        for problem in exc.problems:
            print(f"kvm-fwspec: {problem}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"kvm-fwspec: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
