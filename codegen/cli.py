"""The `kvm-fwspec` command: validate, generate, show and decode."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codegen.decode import describe_id, parse_id
from codegen.errors import SpecError, UsageError
from codegen.generate import check, generate
from codegen.loader import load_spec
from codegen.model import Spec
from codegen.show import show


def _summary(spec: Spec) -> str:
    values = sum(len(r.values) + len(r.bits) for r in spec.registers)
    return (
        f"spec OK: {len(spec.registers)} registers, {values} values and bits, "
        f"{len(spec.psci_versions)} PSCI versions, "
        f"{len(spec.psci_functions) + len(spec.smccc_functions) + len(spec.kvm_psci_01_functions)} "
        f"function ids, {len(spec.rules)} rules, releases {spec.releases[0]}-{spec.releases[-1]}"
    )


def _validate(args: argparse.Namespace) -> int:
    print(_summary(load_spec(args.spec_path or args.spec_dir)))
    return 0


def _generate(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec_dir)
    if args.check:
        problems = check(spec)
        for problem in problems:
            print(f"kvm-fwspec: {problem}", file=sys.stderr)
        if problems:
            return 1
        print("generated files are up to date")
        return 0
    changed = generate(spec)
    print(f"wrote {len(changed)} file(s)" + "".join(f"\n  {path}" for path in changed))
    return 0


def _show(args: argparse.Namespace) -> int:
    print("\n".join(show(load_spec(args.spec_dir), args.name)))
    return 0


def _decode(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec_dir)
    for text in args.ids:
        print("\n".join(describe_id(spec, parse_id(text))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvm-fwspec", description=__doc__)
    parser.add_argument(
        "--spec-dir", type=Path, default=None, help="spec directory (default: the project's spec/)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check the spec and print a summary")
    validate.add_argument("spec_path", nargs="?", type=Path, default=None, metavar="SPEC_DIR")
    validate.set_defaults(handler=_validate)
    gen = sub.add_parser("generate", help="write every generated file (or --check them)")
    gen.add_argument("--check", action="store_true", help="fail, naming each stale file and why")
    gen.set_defaults(handler=_generate)
    show_cmd = sub.add_parser("show", help="describe a register, value, rule or function")
    show_cmd.add_argument("name")
    show_cmd.set_defaults(handler=_show)
    decode = sub.add_parser("decode", help="decode KVM arm/arm64 register ids")
    decode.add_argument("ids", nargs="+", metavar="ID")
    decode.set_defaults(handler=_decode)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except SpecError as exc:
        for problem in exc.problems:
            print(f"kvm-fwspec: {problem}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"kvm-fwspec: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
