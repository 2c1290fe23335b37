"""`kvm-fwspec fleet plan`: which hosts can take which VMs, and what a VMM must set so that
more of them can. Decided from what the hosts reported (their fingerprints), explained by the
spec's rules.

- Pools: hosts whose firmware behaves identically (the same registers, defaults and accepted
  values, and the same guest answers at the defaults) are one pool; a plan grows with pools,
  not hosts.
- Matrix: a VM created on the source pool (with its defaults, or with the baseline) saved as a
  VMM saves it (every firmware register KVM lists) and restored on the target: safe, restores
  with a guest-visible change, or fails on a register. Whether a register restores is what the
  target's fingerprint says it takes; the errno and rule are the spec's for the target's kernel
  when the spec agrees, and the disagreement is said when it does not.
- Baseline: one VM configuration (vcpus with KVM_ARM_VCPU_PSCI_0_2, a PSCI version pin, each
  bitmap's value) under which a VM moves between every pool of a set with its guest's view
  unchanged, for the largest such set; every other pool with the register that keeps it out.

The guest's view is migrate-check's (PSCI version, PSCI_FEATURES, the services it can call),
with each workaround level added: KVM reads those from the host on every GET, so a level is
not something a VMM can set for the guest, only something a target must match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kvm_fwspec.conformance.analyses.fleet_hosts import Host, Offer, Refused, profile_of
from kvm_fwspec.conformance.analyses.migration import guest_view, show_value, view_changes
from kvm_fwspec.conformance.oracle import Access, Oracle
from kvm_fwspec.conformance.profile import LEVELS_PREFIX, Profile, level_registers, levels_profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.model import Spec

FORMAT = "kvm-fwspec-fleet-plan/1"
Verdict = Literal["safe", "changes", "fails"]
FEATURES = ("psci-0.2",)  # VMMs create arm64 vcpus with PSCI 0.2; the baseline says so too


@dataclass(frozen=True)
class Pool:
    """Hosts of identical firmware behaviour, named by its members."""

    id: str
    hosts: tuple[Host, ...]
    profile: Profile

    @property
    def offers(self) -> tuple[Offer, ...]:
        return self.hosts[0].offers

    def offer(self, reg_id: int) -> Offer | None:
        return self.hosts[0].offer(reg_id)

    @property
    def name(self) -> str:
        names = [h.name for h in self.hosts]
        return (
            ", ".join(names)
            if len(names) <= 3
            else f"{', '.join(names[:2])} and {len(names) - 2} more"
        )

    @property
    def kernels(self) -> list[str]:
        """The kernels its hosts were judged as, oldest first (6.1 before 6.12)."""
        return sorted({h.judged_as for h in self.hosts}, key=kernel_order)

    @property
    def cpus(self) -> list[str]:
        """The MIDR_EL1 values of its hosts: CPUs do not split a pool, but an operator asks."""
        return sorted({h.cpu for h in self.hosts if h.cpu is not None})

    @property
    def inferred(self) -> bool:
        return any(o.inferred for o in self.offers)

    @property
    def defaults(self) -> dict[int, int]:
        return {o.reg_id: o.default for o in self.offers}


@dataclass(frozen=True)
class Failure:
    """A register that does not restore (`register` empty: the VM cannot go there at all,
    `why` says why)."""

    register: str
    value: int
    errno: str | None
    rule: str
    why: str


@dataclass(frozen=True)
class Cell:
    """One ordered pair of pools: a VM saved on `source` and restored on `target`."""

    source: str
    target: str
    verdict: Verdict
    failures: tuple[Failure, ...]
    changes: tuple[str, ...]


@dataclass(frozen=True)
class Exclusion:
    """One reason a pool is out of the baseline's set, for people (`why`) and for checks
    (`kind`: arch, lacks, lists, level, pin, view or tie; `subject`: the register or the
    guest answer it is about)."""

    kind: str
    subject: str
    why: str


@dataclass(frozen=True)
class Baseline:
    """What a VMM applies at creation so a VM moves between `pools` unchanged."""

    pools: tuple[str, ...]
    psci_version: int | None
    bitmaps: tuple[tuple[str, int], ...]
    excluded: tuple[tuple[str, tuple[Exclusion, ...]], ...]  # each pool left out, and why

    def values(self, pool: Pool) -> dict[int, int]:
        """The registers of a VM created on `pool` with this configuration."""
        values = pool.defaults
        by_name = {o.name: o.reg_id for o in pool.offers}
        if self.psci_version is not None:
            values[by_name["psci-version"]] = self.psci_version
        for name, value in self.bitmaps:
            values[by_name[name]] = value
        return values


@dataclass
class Plan:
    spec: Spec
    pools: list[Pool]
    refused: list[Refused]
    chosen: tuple[str, ...]
    matrix: dict[tuple[str, str], Cell] = field(default_factory=dict)
    baseline_matrix: dict[tuple[str, str], Cell] = field(default_factory=dict)
    baseline: Baseline | None = None

    @property
    def hosts(self) -> int:
        return host_count(self.pools)

    @property
    def baseline_hosts(self) -> int:
        return host_count(self.pool(p) for p in self.baseline.pools) if self.baseline else 0

    def pool(self, pool_id: str) -> Pool:
        return next(p for p in self.pools if p.id == pool_id)


class Judge:
    """Restores between pools, decided by fingerprints and explained by the spec; each guest
    view and each oracle is computed once per pool and set of values."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._views: dict[tuple[str, tuple[tuple[int, int], ...]], dict[str, Any]] = {}
        self._oracles: dict[str, Oracle] = {}
        self._failures: dict[tuple[str, str, int, int], Failure] = {}

    def view(self, pool: Pool, values: Mapping[int, int]) -> dict[str, Any]:
        """What a guest on `pool` sees of its firmware when its VM holds `values`."""
        key = (pool.id, tuple(sorted(values.items())))
        if key not in self._views:
            self._views[key] = firmware_view(self.spec, pool.profile, pool.offers, values)
        return self._views[key]

    def restore(
        self,
        source: Pool,
        values: Mapping[int, int],
        target: Pool,
        created: Mapping[int, int] | None = None,
    ) -> Cell:
        """Restore a VM holding `values` into a fresh VM of `target`, created holding
        `created` (its defaults, unless the VMM applied a configuration at creation)."""
        if source.profile.arch != target.profile.arch:
            why = f"an {source.profile.arch} VM, an {target.profile.arch} host: no register is compared"
            return Cell(source.id, target.id, "fails", (Failure("", 0, None, "", why),), ())
        failures = []
        for reg_id, value in sorted(values.items()):
            offer = target.offer(reg_id)
            if offer is None or not offer.takes(value):
                failures.append(self.explain(source, target, reg_id, value))
        if failures:
            return Cell(source.id, target.id, "fails", tuple(failures), ())
        after = {**(created if created is not None else target.defaults), **values}
        before_view = self.view(source, values)
        after_view = self.view(target, after)
        changes = tuple(view_changes(before_view, after_view))
        return Cell(source.id, target.id, "changes" if changes else "safe", (), changes)

    def explain(self, source: Pool, target: Pool, reg_id: int, value: int) -> Failure:
        """The spec's errno and rule for this SET on the target's kernel, if the spec also
        refuses it; otherwise the fingerprint's refusal stands and the disagreement is said.
        The same refusal recurs in a whole row of the matrix: each is worked out once."""
        source_offer = source.offer(reg_id)
        name = source_offer.name if source_offer else f"{reg_id:#018x}"
        key = (target.id, name, reg_id, value)
        if key not in self._failures:
            self._failures[key] = self._refusal(name, target, reg_id, value)
        return self._failures[key]

    def _refusal(self, name: str, target: Pool, reg_id: int, value: int) -> Failure:
        oracle = self._oracle(target)
        decision = oracle.decide(
            Access.before_first_run(
                "set",
                reg_id,
                True,
                oracle.reset_values(),
                value,
            )
        )
        offer = target.offer(reg_id)
        seen = "the target lists no such register" if offer is None else _accepted(offer)
        if decision is not None and (decision.errno is not None or decision.undefined is not None):
            why = " ".join(decision.rule.doc.split())
            return Failure(name, value, decision.errno, decision.rule.id, f"{seen}: {why}")
        expected = f"accepted ({decision.rule.id})" if decision else "without a rule"
        return Failure(
            name,
            value,
            None,
            "",
            f"{seen}; the spec for {target.profile.kernel} has it {expected}: the host's report stands",
        )

    def _oracle(self, pool: Pool) -> Oracle:
        if pool.id not in self._oracles:
            self._oracles[pool.id] = Oracle(self.spec, _with_levels(self.spec, pool))
        return self._oracles[pool.id]


def _with_levels(spec: Spec, pool: Pool) -> Profile:
    """The pool's profile with its host's workaround levels as the pool reported them."""
    names = []
    for register in level_registers(spec):
        offer = next((o for o in pool.offers if o.name == register.name), None)
        level = next((v for v in register.values if offer and v.value == offer.default), None)
        names.append((level or register.values[0]).name)
    host = levels_profile(spec, LEVELS_PREFIX + "/".join(names))
    return Profile(pool.profile.arch, pool.profile.release, host, pool.profile.stable)


def _accepted(offer: Offer) -> str:
    if offer.kind == "bitmap":
        return f"it offers the bits {offer.mask:#x}"
    taken = ", ".join(f"{v:#x}" for v in sorted(offer.accepts)) or "nothing"
    return f"it takes {taken}" + (" (inferred)" if offer.inferred else "")


def firmware_view(
    spec: Spec, profile: Profile, offers: Iterable[Offer], values: Mapping[int, int]
) -> dict[str, Any]:
    """migrate-check's guest view for a VM holding `values`, with each workaround level the
    host reports (KVM answers a guest's ARCH_FEATURES from the host, whatever was set)."""
    by_id = {o.reg_id: o for o in offers}
    stored = {by_id[i].name: v for i, v in values.items() if i in by_id}
    levels = {o.name: o.default for o in by_id.values() if o.kind == "level"}
    view = guest_view(spec, profile, FEATURES, stored, levels)
    for offer in by_id.values():
        if offer.kind in ("level", "unknown"):
            view[offer.name] = offer.default
    return view


def pools_of(spec: Spec, hosts: Iterable[Host], prefix: str = "P") -> list[Pool]:
    """Hosts grouped by identical firmware behaviour; the largest pool first, ties by kernel,
    oldest first; ids are `prefix` and a number."""
    groups: dict[Any, list[Host]] = {}
    keys: dict[tuple[Any, ...], Any] = {}
    for host in sorted(hosts, key=lambda h: h.name):
        offers = tuple((o.reg_id, o.kind, o.default, tuple(sorted(o.accepts))) for o in host.offers)
        seen = (host.arch, host.judged_as, offers)
        if seen not in keys:
            view = firmware_view(
                spec,
                profile_of(spec, host.judged_as, host.arch),
                host.offers,
                {o.reg_id: o.default for o in host.offers},
            )
            keys[seen] = (host.arch, offers, tuple(sorted(view.items())))
        groups.setdefault(keys[seen], []).append(host)
    ordered = sorted(
        groups.values(),
        key=lambda members: (-len(members), kernel_order(members[0].judged_as), members[0].name),
    )
    return [
        Pool(
            f"{prefix}{n}", tuple(members), profile_of(spec, members[0].judged_as, members[0].arch)
        )
        for n, members in enumerate(ordered, start=1)
    ]


def make_plan(
    spec: Spec, hosts: Iterable[Host], refused: list[Refused], chosen: Iterable[str] = ()
) -> Plan:
    """Pools, the matrix at defaults, the baseline for the largest mutually migratable part
    of the chosen pools (default: all), and the matrix of VMs created with that baseline."""
    judge = Judge(spec)
    pools = pools_of(spec, hosts)
    ids = [p.id for p in pools]
    wanted = tuple(chosen) or tuple(ids)
    unknown = [p for p in wanted if p not in ids]
    if unknown:
        raise UsageError(
            f"--pools: {', '.join(unknown)} not in this plan's pools ({', '.join(ids)})"
        )
    plan = Plan(spec, pools, refused, wanted)
    plan.matrix = matrix_of(judge, pools)
    plan.baseline = choose_baseline(judge, [p for p in pools if p.id in wanted])
    plan.baseline_matrix = baseline_matrix_of(judge, pools, plan.baseline)
    return plan


def matrix_of(judge: Judge, pools: list[Pool]) -> dict[tuple[str, str], Cell]:
    """Every ordered pair, a pool to itself included (the control: always safe)."""
    return {(a.id, b.id): judge.restore(a, a.defaults, b) for a in pools for b in pools}


def baseline_matrix_of(
    judge: Judge, pools: list[Pool], baseline: Baseline
) -> dict[tuple[str, str], Cell]:
    """VMs created with the baseline on each pool of its set, restored on every pool, whose
    VMM applies the baseline at creation as far as that pool takes it."""
    cells = {}
    for a in (p for p in pools if p.id in baseline.pools):
        values = baseline.values(a)
        for b in pools:
            cells[(a.id, b.id)] = judge.restore(a, values, b, values_for(b, baseline))
    return cells


def _class_key(pool: Pool) -> tuple[Any, ...]:
    """What no VM configuration changes: the registers a host lists, its workaround levels
    and any register the spec does not know."""
    fixed = tuple((o.reg_id, o.default) for o in pool.offers if o.kind in ("level", "unknown"))
    return (pool.profile.arch, tuple(o.reg_id for o in pool.offers), fixed)


def _psci(pool: Pool) -> Offer | None:
    return next((o for o in pool.offers if o.kind == "psci-version"), None)


def _configured(members: list[Pool], pin: int | None, judge: Judge) -> tuple[Baseline, list[Pool]]:
    """The baseline for `members` pinned to `pin`, and the largest part (by hosts) of them
    whose guests then see the same firmware. Bitmaps are every service all of them offer;
    a smaller part may offer more, so the part is configured again until it holds."""
    while True:
        bitmaps = tuple(
            (offer.name, _common_services(members, offer.reg_id))
            for offer in members[0].offers
            if offer.kind == "bitmap"
        )
        baseline = Baseline(tuple(p.id for p in members), pin, bitmaps, ())
        by_view: dict[tuple[Any, ...], list[Pool]] = {}
        for pool in members:
            view = judge.view(pool, baseline.values(pool))
            by_view.setdefault(tuple(sorted(view.items())), []).append(pool)
        part = max(by_view.values(), key=lambda ps: (host_count(ps), -pool_number(ps[0].id)))
        if len(part) == len(members):
            return baseline, members
        members = part


def host_count(pools: Iterable[Pool]) -> int:
    return sum(len(p.hosts) for p in pools)


def kernel_order(judged_as: str) -> tuple[int, ...]:
    """`6.1` < `6.1.y` < `6.12`: a spec release or stable series, by its numbers."""
    stable = judged_as.endswith(".y")
    release = judged_as.removesuffix(".y")
    return (*(int(n) for n in release.split(".") if n.isdigit()), int(stable))


def pool_number(pool_id: str) -> int:
    return int(pool_id.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def _common_services(pools: list[Pool], reg_id: int) -> int:
    """The services every pool gives a new VM: the AND of their defaults, not of what they
    would take, so an opt-in service (VENDOR_HYP_BMAP_2's, which userspace must answer) stays
    off, as on a VM created with defaults."""
    services = -1
    for pool in pools:
        offer = pool.offer(reg_id)
        services &= offer.default if offer is not None else 0
    return services


def choose_baseline(judge: Judge, candidates: list[Pool]) -> Baseline:
    """The configuration under which the most hosts (then pools, then the newest PSCI
    version) can exchange VMs unchanged, with every other candidate and why it is out."""
    classes: dict[tuple[Any, ...], list[Pool]] = {}
    for pool in candidates:
        classes.setdefault(_class_key(pool), []).append(pool)
    best: tuple[tuple[int, int, int], Baseline, list[Pool]] | None = None
    for members in classes.values():
        offers = [_psci(p) for p in members]
        accepted = sorted({v for o in offers if o for v in o.accepts})
        pins: list[int | None] = [*accepted] if accepted else [None]
        for pin in pins:
            taking = [p for p in members if pin is None or _takes_pin(p, pin)]
            if not taking:
                continue
            baseline, part = _configured(taking, pin, judge)
            score = (host_count(part), len(part), pin or 0)
            if best is None or score > best[0]:
                best = (score, baseline, part)
    assert best is not None  # every candidate pool takes its own default pin
    _, baseline, part = best
    excluded = tuple(
        (pool.id, why_excluded(judge, pool, part, baseline))
        for pool in candidates
        if pool not in part
    )
    return Baseline(baseline.pools, baseline.psci_version, baseline.bitmaps, excluded)


def _takes_pin(pool: Pool, pin: int) -> bool:
    offer = _psci(pool)
    return offer is not None and offer.takes(pin)


def why_excluded(
    judge: Judge, pool: Pool, part: list[Pool], baseline: Baseline
) -> tuple[Exclusion, ...]:
    """Everything that keeps `pool` out of the baseline's set, in the order a restore meets
    it: registers one side lacks, workaround levels, the pin; and only when none of those,
    the guest answers that differ under the baseline."""
    member = part[0]
    theirs = {o.reg_id: o for o in member.offers}
    mine = {o.reg_id: o for o in pool.offers}
    if pool.profile.arch != member.profile.arch:
        why = f"it is {pool.profile.arch}, the set is {member.profile.arch}"
        return (Exclusion("arch", pool.profile.arch, why),)
    found = [
        Exclusion("lacks", theirs[i].name, f"it lacks {theirs[i].name}, which the set's hosts "
                  f"list ({_refusal(judge, member, pool, i, theirs[i].default)} on restore)")
        for i in sorted(set(theirs) - set(mine))
    ] + [
        Exclusion("lists", mine[i].name, f"it lists {mine[i].name}, which the set's hosts lack "
                  f"({_refusal(judge, pool, member, i, mine[i].default)} on restore)")
        for i in sorted(set(mine) - set(theirs))
    ]  # fmt: skip
    for reg_id, offer in sorted(mine.items()):
        other = theirs.get(reg_id)
        if other and offer.kind in ("level", "unknown") and offer.default != other.default:
            relation = "above" if offer.default > other.default else "below"
            found.append(
                Exclusion(
                    "level",
                    offer.name,
                    f"its {offer.name} is {offer.default:#x}, {relation} the set's "
                    f"{other.default:#x} (a host reports its own level: no VM configuration "
                    "changes it)",
                )
            )
    pin = baseline.psci_version
    if pin is not None and not _takes_pin(pool, pin):
        psci = _psci(pool)
        taken = ", ".join(f"{v:#x}" for v in sorted(psci.accepts)) if psci else "nothing"
        found.append(
            Exclusion(
                "pin", "psci-version", f"it does not take the PSCI pin {pin:#x} (it takes {taken})"
            )
        )
    if found:
        return tuple(found)
    mine_view = judge.view(pool, values_for(pool, baseline))
    their_view = judge.view(member, baseline.values(member))
    views = [
        Exclusion(
            "view",
            key,
            f"under the baseline its guest sees {key} = {show_value(mine_view.get(key))}, "
            f"the set's see {show_value(their_view.get(key))}",
        )
        for key in sorted(set(mine_view) | set(their_view))
        if mine_view.get(key) != their_view.get(key)
    ]
    # None of the above: a tie between equal sets, broken towards the set chosen.
    return tuple(views) or (Exclusion("tie", "", "the set is as large without it"),)


def _refusal(judge: Judge, source: Pool, target: Pool, reg_id: int, value: int) -> str:
    """The errno the matrix gives for restoring `reg_id` from `source` on `target`."""
    return judge.explain(source, target, reg_id, value).errno or "refused, errno not recorded"


def values_for(pool: Pool, baseline: Baseline) -> dict[int, int]:
    """The baseline applied to a pool outside its set, as far as the pool takes it."""
    values = pool.defaults
    pin = baseline.psci_version
    bitmaps = dict(baseline.bitmaps)
    for offer in pool.offers:
        if offer.kind == "psci-version" and pin is not None and offer.takes(pin):
            values[offer.reg_id] = pin  # a pool that refuses the pin keeps its default
        if offer.kind == "bitmap" and offer.name in bitmaps:
            values[offer.reg_id] = bitmaps[offer.name] & offer.mask
    return values
