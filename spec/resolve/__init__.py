"""Turn schema-valid spec documents into the typed model, checking what a schema cannot.

The schema checks shapes; this pass checks meaning: names refer to things that exist, ids
composed from fields do not collide, layouts account for every bit, releases are known and
ordered, rules type-check and every decision table ends in a default. All problems are
collected and raised together.

One module resolves each spec file (kernels, encoding, api, registers, psci, smccc,
smccc-filter, rules, vmm; smccc.yaml's stolen time and psci.yaml's power sections
have modules of their own); context.py holds what they share. `resolve` runs them in three stages, each ending where
the next would only trip over problems already found: what registers refer to, then the
registers and the PSCI and SMCCC functions, then what is typed in the rule language.
"""

from __future__ import annotations

from collections.abc import Mapping

from kvm_fwspec.spec.model import Spec, SpecFile
from kvm_fwspec.spec.resolve.api import (
    resolve_capabilities,
    resolve_core_registers,
    resolve_errnos,
    resolve_exit_reasons,
    resolve_ioctls,
    resolve_kvm_run,
    resolve_mp_states,
    resolve_state,
    resolve_system_event_flags,
    resolve_system_events,
    resolve_vcpu_features,
)
from kvm_fwspec.spec.resolve.context import Context
from kvm_fwspec.spec.resolve.encoding import resolve_layouts
from kvm_fwspec.spec.resolve.kernels import resolve_architectures, resolve_releases
from kvm_fwspec.spec.resolve.psci import (
    SystemEvents,
    resolve_constant_groups,
    resolve_kvm_psci_01,
    resolve_psci_functions,
    resolve_psci_latest,
    resolve_psci_versions,
    resolve_return_codes,
)
from kvm_fwspec.spec.resolve.psci_power import resolve_vcpu_power
from kvm_fwspec.spec.resolve.registers import (
    resolve_host_profiles,
    resolve_registers,
    resolve_resets,
)
from kvm_fwspec.spec.resolve.rules import resolve_rules
from kvm_fwspec.spec.resolve.smccc import (
    resolve_not_supported,
    resolve_services,
    resolve_smccc_functions,
)
from kvm_fwspec.spec.resolve.smccc_filter import resolve_smccc_filter
from kvm_fwspec.spec.resolve.stolen_time import resolve_stolen_time
from kvm_fwspec.spec.resolve.vmm import resolve_vmm_rules
from kvm_fwspec.spec.rule_names import Vocabulary
from kvm_fwspec.spec.yaml_source import SourceDocument

__all__ = ["resolve"]


def resolve(documents: Mapping[str, SourceDocument], files: tuple[SpecFile, ...]) -> Spec:
    """Build the model from schema-valid documents; raise SpecError with every problem."""
    ctx = Context(documents)
    releases = resolve_releases(ctx)
    layouts = resolve_layouts(ctx)  # stops on any problem so far: every id is composed with them
    reg_id = next(lay for lay in layouts if lay.name == "reg-id")
    smccc_id = next(lay for lay in layouts if lay.name == "smccc-function-id")
    architectures = resolve_architectures(ctx, reg_id)
    errnos = resolve_errnos(ctx)
    capabilities = resolve_capabilities(ctx)
    vcpu_features = resolve_vcpu_features(ctx, capabilities)
    state = resolve_state(ctx)
    ioctls = resolve_ioctls(ctx)
    kvm_run = resolve_kvm_run(ctx)
    exit_reasons = resolve_exit_reasons(ctx)
    system_events = resolve_system_events(ctx)
    system_event_flags = resolve_system_event_flags(ctx)
    mp_states = resolve_mp_states(ctx)
    core_registers = resolve_core_registers(ctx)
    services = resolve_services(ctx)
    ctx.stop_on_problems()

    registers = resolve_registers(ctx, reg_id, architectures, services)
    host_profiles = resolve_host_profiles(ctx, registers)
    psci_versions = resolve_psci_versions(ctx)
    psci_latest = resolve_psci_latest(ctx, psci_versions)
    events = SystemEvents(system_events, system_event_flags)
    psci_functions = resolve_psci_functions(ctx, smccc_id, psci_versions, capabilities, events)
    kvm_psci_01_base, kvm_psci_01_c_base, kvm_psci_01_functions = resolve_kvm_psci_01(ctx)
    psci_return_codes = resolve_return_codes(ctx)
    psci_constant_groups = resolve_constant_groups(ctx)
    smccc_functions = resolve_smccc_functions(ctx, smccc_id, services, psci_functions, registers)
    smccc_filter = resolve_smccc_filter(ctx, smccc_id, errnos, exit_reasons, releases)
    vcpu_power = resolve_vcpu_power(ctx, mp_states, system_events, vcpu_features, releases)
    stolen_time = resolve_stolen_time(ctx, services, errnos, releases)
    ctx.stop_on_problems()
    # their only None comes with a problem, and stopped above
    assert smccc_filter is not None and stolen_time is not None

    vocabulary = Vocabulary(state=state, reg_id=reg_id, psci_versions=psci_versions)
    registers = resolve_resets(ctx, registers, vocabulary)
    rules = resolve_rules(
        ctx,
        registers=registers,
        classes=tuple(v for v in reg_id.field("class").values if v.firmware),
        errnos=errnos,
        vocabulary=vocabulary,
    )
    vmm_rules = resolve_vmm_rules(ctx, rules)
    ctx.stop_on_problems()

    return Spec(
        files=files,
        releases=releases,
        architectures=architectures,
        layouts=layouts,
        errnos=errnos,
        vcpu_features=vcpu_features,
        capabilities=capabilities,
        state=state,
        registers=registers,
        host_profiles=host_profiles,
        psci_versions=psci_versions,
        psci_latest=psci_latest,
        psci_functions=psci_functions,
        kvm_psci_01_base=kvm_psci_01_base,
        kvm_psci_01_c_base=kvm_psci_01_c_base,
        kvm_psci_01_functions=kvm_psci_01_functions,
        psci_return_codes=psci_return_codes,
        psci_constant_groups=psci_constant_groups,
        services=tuple(services.values()),
        smccc_functions=smccc_functions,
        smccc_not_supported=resolve_not_supported(ctx),
        rules=rules,
        ioctls=ioctls,
        kvm_run=kvm_run,
        exit_reasons=exit_reasons,
        system_events=system_events,
        system_event_flags=system_event_flags,
        mp_states=mp_states,
        core_registers=core_registers,
        vmm_rules=vmm_rules,
        smccc_filter=smccc_filter,
        vcpu_power=vcpu_power,
        stolen_time=stolen_time,
    )
