"""The `kvm-fwspec` command: validate, generate, show and decode."""

from __future__ import annotations

import argparse
import os
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
        f"function ids, {len(spec.rules)} rules, {len(spec.vmm_rules)} VMM rules, "
        f"releases {spec.releases[0]}-{spec.releases[-1]}"
    )


def _validate(args: argparse.Namespace) -> int:
    print(_summary(load_spec(args.spec_path or args.spec_dir)))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from codegen.generate import ROOT

    if not (ROOT / "pyproject.toml").is_file():
        raise UsageError(
            "generate writes into a kvm-fwspec source checkout, and this installation is not one"
        )
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


def _certify(args: argparse.Namespace) -> int:
    from conformance.adapters import parse_options
    from conformance.certify import certify

    report = (
        args.report or Path("reports") / f"{args.adapter}-{args.arch}-{args.kernel}-{args.host}"
    )
    return certify(
        args.adapter,
        args.kernel,
        args.host,
        args.arch,
        parse_options(args.option),
        args.workers,
        report,
    )


def _verify(args: argparse.Namespace) -> int:
    from conformance.verify import verify

    problems = verify(args.results)
    for problem in problems:
        print(f"kvm-fwspec: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.results}: complete, untampered, for this spec")
    return 1 if problems else 0


def _agent(args: argparse.Namespace) -> int:
    from conformance.agent import IMPLEMENTATIONS, run_agent

    if args.impl not in IMPLEMENTATIONS:
        raise UsageError(
            f"no agent implementation '{args.impl}'; have: {', '.join(sorted(IMPLEMENTATIONS))}"
        )
    spec = load_spec(args.spec_dir)
    from conformance.agent_guard import TOKEN_VARIABLE, Guard, GuardError, server_tls
    from conformance.profile import resolve_profile

    profile = resolve_profile(spec, args.kernel, args.host, args.arch)
    options = {"kernel": str(profile.release), "host": profile.host.name, "arch": profile.arch}
    token = (
        args.token_file.read_text(encoding="utf-8").strip()
        if args.token_file
        else os.environ.get(TOKEN_VARIABLE)
    )
    guard = Guard(args.max_message, args.max_rate, token or None)
    tls = server_tls(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    try:
        run_agent(args.impl, options, args.listen, guard=guard, tls=tls)
    except GuardError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _qemu(args: argparse.Namespace) -> int:
    from conformance.harness.realkvm import run_qemu

    return run_qemu(args.kernel, args.kernel_package, args.cache, args.report, args.jobs)


def _migrate_check(args: argparse.Namespace) -> int:
    import json as json_module

    from conformance import migration

    spec = load_spec(args.spec_dir)

    def side(text: str) -> migration.Side:
        path = Path(text)
        return (
            migration.side_from_dump(spec, path)
            if path.is_file()
            else migration.side_from_profile(spec, text)
        )

    source, target = side(args.source), side(args.target)
    report = migration.check(spec, source, target.profile, target.features)
    print(json_module.dumps(report.to_json(), indent=1) if args.json else migration.render(report))
    return 0 if report.safe else 1


def _dump(args: argparse.Namespace) -> int:
    from conformance.adapters import parse_options
    from conformance.dump import dump

    psci = int(args.psci_version, 0) if args.psci_version else None
    document = dump(
        args.adapter,
        args.kernel,
        args.host,
        args.features,
        psci,
        parse_options(args.option),
        args.output,
    )
    print(
        f"{args.output}: {len(document['registers'])} firmware registers of {document['implementation']}"
    )
    return 0


def _migrate_proof(args: argparse.Namespace) -> int:
    from conformance.harness.migration_proof import run_proof

    return run_proof(args.report, args.save_fixtures)


def _vmm_certify(args: argparse.Namespace) -> int:
    from conformance.harness.vmm_matrix import run_certification

    kernels = args.kernels.split(",") if args.kernels else None
    builds = args.builds.split(",") if args.builds else None
    return run_certification(kernels, builds, args.cache, args.report, args.jobs)


def _sync_proof(args: argparse.Namespace) -> int:
    from conformance.harness.sync_proof import run_sync_proof

    return run_sync_proof(args.report)


def _sync_check(args: argparse.Namespace) -> int:
    from codegen.kernel_names import parse_kernel_name
    from codegen.sync_check import check, claimed_by, fix_patch

    spec = load_spec(args.spec_dir)
    kernel = parse_kernel_name(spec, args.kernel or claimed_by(args.files))
    findings = check(spec, args.files, kernel, args.arch)
    wrong = [f for f in findings if f.wrong]
    agrees = sum(f.status == "agrees" for f in findings)
    claim = "" if args.kernel else " (the release the files claim)"
    files = ", ".join(map(str, args.files))
    print(
        f"{files}: {agrees} constants agree with the spec for {kernel}{claim}, {len(wrong)} do not"
    )
    for finding in findings:
        if finding.status != "agrees":
            print(f"  {finding}")
    if wrong and args.fix:
        patch = args.files[0].with_name(args.files[0].name + ".kvm-fwspec.patch")
        patch.write_text(fix_patch(spec, args.files[0], findings, args.arch), encoding="utf-8")
        print(f"  patch written to {patch}")
    return 1 if wrong else 0


def _add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernel", default="latest", help="kernel release profile, e.g. 6.12 (default: newest)"
    )
    parser.add_argument("--host", default="mitigated", help="host profile (default: mitigated)")
    parser.add_argument("--arch", default="arm64", help="architecture (default: arm64)")


def _add_cache_option(parser: argparse.ArgumentParser) -> None:
    """--cache, for the commands that download Debian's kernels and packages."""
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="downloads and images (default ~/.cache/kvm-fwspec)",
    )


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
    cert = sub.add_parser(
        "certify", help="certify an implementation through an adapter and write the report"
    )
    cert.add_argument("--adapter", default="reference", help="adapter name (default: reference)")
    _add_profile_arguments(cert)
    cert.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option"
    )
    cert.add_argument(
        "-n",
        dest="workers",
        default=None,
        help="xdist workers, used when the adapter gains from them",
    )
    cert.add_argument(
        "--report", type=Path, default=None, help="report directory (default: reports/...)"
    )
    cert.set_defaults(handler=_certify)
    ver = sub.add_parser("verify", help="check a results file for completeness and tampering")
    ver.add_argument("results", type=Path)
    ver.set_defaults(handler=_verify)
    agent = sub.add_parser(
        "agent", help="serve an implementation over the agent protocol (stdio or TCP)"
    )
    agent.add_argument("--impl", default="reference")
    _add_profile_arguments(agent)
    agent.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="serve TCP instead of stdin/stdout (HOST defaults to 127.0.0.1; any other address "
        "needs a token)",
    )
    agent.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="clients must send this file's token in their hello (default: $KVM_FWSPEC_AGENT_TOKEN)",
    )
    agent.add_argument("--tls-cert", default=None, help="serve TLS with this certificate (PEM)")
    agent.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    agent.add_argument(
        "--tls-client-ca", default=None, help="require client certificates signed by this CA"
    )
    agent.add_argument("--max-message", type=int, default=16 << 20, help="largest request in bytes")
    agent.add_argument(
        "--max-rate", type=float, default=1000.0, help="requests per second per connection"
    )
    agent.set_defaults(handler=_agent)
    qemu = sub.add_parser(
        "qemu", help="certify real KVM: boot Debian arm64 kernels under QEMU and run the suite"
    )
    qemu.add_argument(
        "--kernel",
        default="pinned",
        help="a release line (5.10, 6.1, ...), 'pinned' (all) or 'latest'",
    )
    qemu.add_argument("--kernel-package", default=None, help="an exact Debian package for the line")
    qemu.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="lines certified at once, one guest each (default: one per core)",
    )
    _add_cache_option(qemu)
    qemu.add_argument(
        "--report", type=Path, default=Path("reports/real-kvm"), help="report directory"
    )
    qemu.set_defaults(handler=_qemu)
    migrate = sub.add_parser(
        "migrate-check", help="will a VM's firmware registers restore on another KVM?"
    )
    migrate.add_argument(
        "--from",
        dest="source",
        required=True,
        help="a dump file, or KERNEL[:HOST[:FEATURES]] (e.g. 6.13:mitigated:psci-0.2)",
    )
    migrate.add_argument(
        "--to", dest="target", required=True, help="KERNEL[:HOST[:FEATURES]] or a dump file"
    )
    migrate.add_argument("--json", action="store_true", help="print the verdict as JSON")
    migrate.set_defaults(handler=_migrate_check)
    dump_cmd = sub.add_parser(
        "dump", help="save a VM's firmware registers through an adapter, as a VMM would"
    )
    dump_cmd.add_argument("--adapter", default="reference")
    _add_profile_arguments(dump_cmd)
    dump_cmd.add_argument("--features", default="psci-0.2", help="vcpu features: psci-0.2 or none")
    dump_cmd.add_argument(
        "--psci-version", default=None, help="write this PSCI version first (e.g. 0x10000)"
    )
    dump_cmd.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    dump_cmd.add_argument("--output", type=Path, required=True)
    dump_cmd.set_defaults(handler=_dump)
    proof = sub.add_parser(
        "migrate-proof", help="check migrate-check against real restores between the pinned kernels"
    )
    proof.add_argument("--report", type=Path, default=Path("reports/migration"))
    proof.add_argument(
        "--save-fixtures",
        type=Path,
        default=None,
        help="also keep the real dumps and outcomes here",
    )
    proof.set_defaults(handler=_migrate_proof)
    vmm = sub.add_parser(
        "vmm-certify",
        help="certify QEMU's save and restore of the firmware registers across real kernels",
    )
    vmm.add_argument("--report", type=Path, default=Path("reports/vmm"))
    vmm.add_argument(
        "--kernels", default=None, help="kernel lines, e.g. 5.10,7.2 (default: all pinned)"
    )
    vmm.add_argument(
        "--builds", default=None, help="QEMU builds: bookworm,unstable (default: both)"
    )
    vmm.add_argument(
        "--jobs", type=int, default=None, help="guest hosts driven at once (default: one per core)"
    )
    _add_cache_option(vmm)
    vmm.set_defaults(handler=_vmm_certify)
    sync_proof = sub.add_parser(
        "sync-proof",
        help="check sync-check on Debian's arm64 uapi headers of the pinned kernel lines",
    )
    sync_proof.add_argument("--report", type=Path, default=Path("reports/sync-check"))
    sync_proof.set_defaults(handler=_sync_proof)
    sync = sub.add_parser("sync-check", help="check a copy of the uapi constants against the spec")
    sync.add_argument("files", nargs="+", type=Path, metavar="FILE")
    sync.add_argument(
        "--kernel",
        default=None,
        help="the release the copy should match, e.g. 6.12 or 6.12.y (default: the release the "
        "files claim, from a kernel tree's Makefile or an installed linux/version.h)",
    )
    sync.add_argument("--arch", default="arm64")
    sync.add_argument(
        "--fix", action="store_true", help="write FILE.kvm-fwspec.patch that makes the copy agree"
    )
    sync.set_defaults(handler=_sync_check)
    return parser


def run(argv: list[str] | None = None) -> int:
    """Parse and dispatch, letting every error through: for callers that run commands
    in-process (the docs' executed examples) and must not have an interrupt swallowed."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except SpecError as exc:
        for problem in exc.problems:
            print(f"kvm-fwspec: {problem}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"kvm-fwspec: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kvm-fwspec: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
