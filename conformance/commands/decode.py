"""kvm-fwspec decode: any KVM arm/arm64 register id, field by field."""

from __future__ import annotations

import argparse
import json
import sys

from kvm_fwspec.spec.decode import ID_RULE, describe_id, id_to_json, parse_id, split_ids
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec

HELP = "decode KVM arm/arm64 register ids"

STDIN = "-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ids",
        nargs="*",
        metavar="ID",
        help=f"register ids, or - (or none, with input not a terminal) to read them from standard "
        f"input, separated by whitespace; {ID_RULE}",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list, ids as hex strings")


def _texts(args: argparse.Namespace) -> list[str]:
    """The ids as given: the arguments, with `-` (or no argument at all when standard input is
    a pipe or a file) standing for standard input's lines; an argument or a line may hold
    several ids separated by whitespace (split_ids)."""
    given: list[str] = args.ids
    if not given:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("decode: give register ids, or - to read them from standard input")
        given = [STDIN]
    texts = []
    for number, text in enumerate(given, 1):
        if text == STDIN:
            texts += [found for line in _stdin_lines() for found in split_ids(line)]
        elif not text.strip():
            what = "empty" if not text else "only whitespace"
            raise UsageError(
                f"decode: argument {number} of {len(given)} is {what}; give a register id "
                "such as 0x6030000000140000"
            )
        else:
            texts += split_ids(text)
    if not texts:
        raise UsageError("decode: standard input held no register ids")
    return texts


def _stdin_lines() -> list[str]:
    """Standard input's lines; bytes that are not text are one line saying so, not a
    UnicodeDecodeError from the first read."""
    try:
        return list(sys.stdin)
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"decode: standard input is not text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start} is not {exc.encoding})"
        ) from None


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec_dir)
    ids = [parse_id(text) for text in _texts(args)]  # every id checked before any is printed
    if args.json:
        print(json.dumps([id_to_json(spec, reg_id) for reg_id in ids], indent=1))
    else:
        print("\n\n".join("\n".join(describe_id(spec, reg_id)) for reg_id in ids))
    return 0
