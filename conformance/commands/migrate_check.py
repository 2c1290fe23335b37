"""kvm-fwspec migrate-check: will a VM's firmware registers restore on another KVM?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kvm_fwspec.conformance.analyses import migration
from kvm_fwspec.conformance.analyses.migration_filter import parse_filter
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.loader import load_spec
from kvm_fwspec.spec.model import Capability, Spec

HELP = "will a VM's firmware registers restore on another KVM?"

# One exit code per verdict; 2 stays a usage error, as for every command.
EXIT_CODES: dict[migration.Verdict, int] = {"safe": 0, "fails": 1, "changes": 3}

SIDES = (
    f"A side is a dump file or {migration.SIDE_SYNTAX}: KERNEL a release (6.12, 6.12.y); HOST a "
    "host profile or levels:A/B/C (default mitigated); FEATURES psci-0.2 or none (default "
    "psci-0.2); PSCI, on --from only, a PSCI version pinned before the guest boots, as the "
    "register holds it (0x10001 for 1.1). Empty fields take the default: 6.13:::0x10001."
)
EPILOG = (
    f"{SIDES} Exit status: {EXIT_CODES['safe']} safe (every register restores, the guest sees "
    f"no change); {EXIT_CODES['changes']} restores, but the guest sees its firmware change "
    f"(PSCI version, PSCI_FEATURES answers, services, or an SMCCC call's answer such as "
    f"ARCH_FEATURES of a workaround); {EXIT_CODES['fails']} the target cannot take the VM: a "
    "register does not restore, or the VMM cannot set its SMCCC filter, a capability or "
    "stolen time up again there; 2 a usage error."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="SIDE",
        help="the source: a dump file, or e.g. 6.13:mitigated:psci-0.2 or 6.1:levels:A/B/C",
    )
    parser.add_argument(
        "--to", dest="target", required=True, metavar="SIDE", help="the target, the same way"
    )
    parser.add_argument(
        "--filter",
        metavar="RANGES",
        action="append",
        help="the SMCCC filter the VMM sets on both sides (6.4+), "
        "FIRST[-LAST]=ACTION,... such as 0x84000000-0x8400001f=fwd-to-user: the VMM answers PSCI; "
        "given again, its ranges follow the earlier ones",
    )
    parser.add_argument(
        "--stolen-time",
        action="store_true",
        help="the VMM gives each vcpu a stolen-time structure and sets its address again on "
        "the target (QEMU's kvm-steal-time, on by default for KVM guests): the guest then "
        "sees PV time's PV_TIME_ST where KVM offers it",
    )
    parser.add_argument(
        "--enable-cap",
        metavar="NAME",
        action="append",
        help="a capability the VMM enables on the VM with KVM_ENABLE_CAP, on both sides, such "
        "as arm-system-suspend (PSCI SYSTEM_SUSPEND); may be given again",
    )
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")


def _side(spec: Spec, text: str, option: str, arch: str = "arm64") -> migration.Side:
    """A dump file if one is there, else a profile (of `arch`: a VM migrates between hosts of
    one architecture, so a target given by name is of the source's). Every problem names the
    side it is in: a dump file's lines start with the file, a profile's with the option."""
    if not text.strip():
        raise UsageError(
            f"{option} is empty: give a dump file or a side such as 6.13:mitigated "
            f"({migration.SIDE_SYNTAX})"
        )
    path = Path(text)
    try:
        if path.is_file():
            return migration.side_from_dump(spec, path)
        if path.exists():
            raise UsageError(f"{option} {text} is not a dump file")
        under = next((parent for parent in path.parents if parent.is_file()), None)
    except OSError as exc:  # a name longer than the system allows, a folder we may not enter
        raise UsageError(f"{option} {text}: {exc.strerror}") from None
    if under is not None:
        raise UsageError(f"{option} {text}: {under} is a file, so no dump file is under it")
    if text.endswith(".json") or text.startswith(("/", "./", "../", "~")):
        raise UsageError(f"{option} {text}: no such dump file")
    try:
        pinned = migration.parse_side(text).psci
    except UsageError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if option == "--to" and pinned:
        raise UsageError(
            f"--to {text}: a PSCI pin belongs to the source; the target's version is the one "
            "the source's registers restore"
        )
    try:
        return migration.side_from_profile(spec, text, arch)
    except UsageError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _capability(spec: Spec, name: str) -> Capability:
    """A capability a VM can enable, by the spec's name (or its KVM_CAP_* name)."""
    enabled = [c for c in spec.capabilities if c.vm_enable]
    found = next((c for c in enabled if name in (c.name, c.c_name)), None)
    if found is None:
        raise UsageError(
            f"--enable-cap {name}: not a capability a VM can enable; the spec knows "
            f"{', '.join(c.name for c in enabled)}"
        )
    return found


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec_dir)
    source = _side(spec, args.source, "--from")
    target = _side(spec, args.target, "--to", source.profile.arch)
    if target.profile.arch != source.profile.arch:
        raise UsageError(
            f"the source is {source.profile.arch} and the target {target.profile.arch}: a VM "
            "migrates only between hosts of one architecture"
        )
    vmm_filter = tuple(r for text in args.filter or () for r in parse_filter(spec, text))
    # given twice, a capability is enabled once
    capabilities = tuple(dict.fromkeys(_capability(spec, n) for n in args.enable_cap or ()))
    report = migration.check(
        spec, source, target.profile, target.features, vmm_filter, args.stolen_time, capabilities
    )
    print(json.dumps(report.to_json(), indent=1) if args.json else migration.render(report))
    return EXIT_CODES[report.verdict]
