"""The `kvm-fwspec` command: find the subcommand, import only its module, run it.

Each subcommand is a module of this package named after it (`migrate-check` is
`migrate_check.py`) with HELP, add_arguments(parser) and run(args). Importing only the one
asked for keeps `kvm-fwspec generate --check` free of pytest and the conformance suite, and
lets a subcommand live beside nothing but what it uses. Every error a user can cause is one
line and a non-zero exit (argparse's own included: usage text is for --help); Ctrl-C at any
moment, imports included, is one line and 130; a reader that goes away (`| head -1`) ends the
command quietly with 141, as a C tool killed by SIGPIPE would.

`--spec-dir` reaches every command, and every process a command starts (pytest and its
xdist workers), through the environment: KVM_FWSPEC_SPEC_DIR, which the spec loader's
default_spec_dir() reads.
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
import contextlib  # noqa: E402
import difflib  # noqa: E402
import os  # noqa: E402
import pkgutil  # noqa: E402
import re  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import NoReturn  # noqa: E402

import kvm_fwspec.conformance.commands as commands_package  # noqa: E402
from kvm_fwspec.codegen import __version__  # noqa: E402
from kvm_fwspec.conformance.commands._arguments import nonempty_path  # noqa: E402
from kvm_fwspec.spec.errors import SpecError, UsageError  # noqa: E402
from kvm_fwspec.spec.loader import SPEC_DIR_VARIABLE, file_kind  # noqa: E402

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


# What argparse itself would read as a negative number rather than an option.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141: what a shell reports for `cat` killed by SIGPIPE


class OneLineParser(argparse.ArgumentParser):
    """argparse with every mistake said in one line, `kvm-fwspec: SUBCOMMAND: message`, exit 2
    (argparse prints its whole usage first, which buries the message), and a mistyped option
    named as such with the option it is closest to (argparse, finding a required option
    missing, would report that instead of the typo that caused it)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("kvm-fwspec").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"kvm-fwspec: {where}{message} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if args is not None:
            self._refuse_unknown_options(args)
        return super().parse_known_args(args, namespace)

    def parse_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but words left over after a subcommand are that subcommand's
        mistake (`kvm-fwspec verify: unrecognized arguments: b.json`), said with its prefix
        and its --help: argparse hands them back to the top parser, which knows nothing of
        what the subcommand takes."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            owner = self._subcommand_parser(getattr(parsed, "command", None)) or self
            owner.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _subcommand_parser(self, name: str | None) -> argparse.ArgumentParser | None:
        if self._subparsers is None or name is None:
            return None
        for action in self._subparsers._group_actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                parser: argparse.ArgumentParser = action.choices[name]
                return parser
        return None

    def _refuse_unknown_options(self, args: list[str]) -> None:
        """An option this parser does not take is named, with the closest it does. For the
        top parser only the words before the subcommand are its own (`kvm-fwspec --versoin`
        would otherwise be reported as a missing COMMAND): the first word that is not an
        option, or an option's value, is the subcommand, and its parser checks the rest."""
        known = list(self._option_string_actions)
        takes_value = False
        for token in args:
            if takes_value:
                takes_value = False
                continue
            if token == "--":
                return
            if not token.startswith("-") or token == "-" or _NEGATIVE_NUMBER.match(token):
                if self._subparsers:
                    return  # the subcommand: the rest is its parser's to check
                continue
            typed = token.split("=", 1)[0]
            name = typed if token.startswith("--") else token[:2]  # -n4 is -n with 4
            matches = [option for option in known if option.startswith(name)]
            if matches:
                # exact, or an abbreviation argparse resolves (or calls ambiguous)
                action = self._option_string_actions[matches[0]]
                takes_value = action.nargs != 0 and "=" not in token and len(token) == len(name)
                continue
            close = difflib.get_close_matches(typed, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            self.error(f"unrecognized option '{typed}'{hint}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser for `only`'s subcommand, or (for help and mistakes) for all of them."""
    parser = OneLineParser(prog="kvm-fwspec", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"kvm-fwspec {__version__}")
    _add_spec_dir(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in [only] if only else subcommands():
        module = _module(name)
        command = sub.add_parser(name, help=module.HELP)
        module.add_arguments(command)
        # Also after the subcommand (`verify --spec-dir DIR RESULTS`); SUPPRESS leaves the
        # value given before it, if any, in place.
        _add_spec_dir(command, default=argparse.SUPPRESS)
        command.set_defaults(handler=module.run)
    return parser


def _add_spec_dir(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--spec-dir",
        type=nonempty_path,
        default=default,
        help="spec directory, for this command and every process it starts "
        f"(default: ${SPEC_DIR_VARIABLE}, else the spec/ of this project)",
    )


def _requested(argv: list[str]) -> str | None:
    """The subcommand argv names, if it names one that exists; a name that does not is
    refused here, with the closest names, rather than with argparse's list of all of them."""
    first = _FirstLook(prog="kvm-fwspec", add_help=False)
    first.add_argument("--spec-dir")
    first.add_argument("command", nargs="?")
    try:
        known, _ = first.parse_known_args(argv)
    except _Malformed:  # the full parser says what is wrong with the line
        return None
    command: str | None = known.command
    if command is None or command in subcommands():
        return command
    close = difflib.get_close_matches(command, subcommands(), n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise UsageError(f"no command '{command}'{hint} (see kvm-fwspec --help)")


class _Malformed(Exception):
    """The first look at the line found it malformed."""


class _FirstLook(argparse.ArgumentParser):
    """A parser that says nothing: its mistakes are the full parser's to report, once."""

    def error(self, message: str) -> NoReturn:
        raise _Malformed(message)


@contextlib.contextmanager
def _spec_dir(spec_dir: Path | None) -> Iterator[None]:
    """--spec-dir for this command and every process it starts, through the environment the
    spec loader reads (restored afterwards, for callers that run several commands in-process)."""
    if spec_dir is None:
        yield
        return
    try:
        kind = file_kind(spec_dir)
    except OSError as exc:  # a name too long, a folder we may not enter
        raise UsageError(f"--spec-dir {spec_dir}: {exc.strerror}") from None
    if kind != "a folder":
        problem = (
            "does not exist"
            if kind is None
            else "is not a directory"
            if kind == "a file"
            else f"is {kind}, not a directory"
        )
        raise UsageError(f"--spec-dir {spec_dir} {problem}")
    saved = os.environ.get(SPEC_DIR_VARIABLE)
    os.environ[SPEC_DIR_VARIABLE] = str(spec_dir.resolve())
    try:
        yield
    finally:
        if saved is None:
            del os.environ[SPEC_DIR_VARIABLE]
        else:
            os.environ[SPEC_DIR_VARIABLE] = saved


def run(argv: list[str] | None = None) -> int:
    """Parse and dispatch, letting every error through: for callers that run commands
    in-process (the docs' executed examples) and must not have an interrupt swallowed."""
    arguments = sys.argv[1:] if argv is None else argv
    args = build_parser(_requested(arguments)).parse_args(arguments)
    with _spec_dir(args.spec_dir):
        return int(args.handler(args))


def _quiet_broken_pipe() -> int:
    """The reader of our output has gone (`kvm-fwspec decode ... | head -1`): say nothing more.
    Python's recipe: point stdout at /dev/null so the interpreter's final flush of what is
    still buffered cannot fail again and print its own complaint. The exit is 141, as for a C
    tool SIGPIPE killed: never 0 (the output was not all delivered) and never 1 or 3, which
    are verdicts (migrate-check, verify), so a pipeline with pipefail cannot mistake it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        status = run(argv)
        sys.stdout.flush()  # a pipe's reader gone shows here, not at the interpreter's exit
        return status
    except SpecError as exc:
        for problem in exc.problems:
            print(f"kvm-fwspec: {problem}", file=sys.stderr)
        return 1
    except UsageError as exc:
        # One line per problem: a command may find several at once (a dump file's).
        for line in str(exc).splitlines() or [""]:
            print(f"kvm-fwspec: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
