"""The resolved model as language-neutral JSON, for implementations outside Python."""

from __future__ import annotations

from typing import Any

from kvm_fwspec.spec import rule_language as rl
from kvm_fwspec.spec.model import (
    AnyBits,
    Constant,
    Field,
    FilterRule,
    Lifetime,
    PowerRule,
    Source,
    Spec,
    StolenTimeRule,
)


def _lifetime(lifetime: Lifetime) -> dict[str, Any]:
    result: dict[str, Any] = {"since": str(lifetime.since)}
    if lifetime.until:
        result["until"] = str(lifetime.until)
    if lifetime.backports:
        result["backports"] = [str(b) for b in lifetime.backports]
    return result


def _source(source: Source | None) -> dict[str, Any] | None:
    if source is None:
        return None
    return {"file": source.file, "note": source.note, "confirmed-on": list(source.confirmed_on)}


def _field(f: Field) -> dict[str, Any]:
    return {
        "name": f.name,
        "doc": f.doc,
        "bits": [f.high, f.low],
        "mask": f.mask,
        "reserved": f.reserved,
        "values": [
            {
                "name": v.name,
                "value": v.value,
                "c-name": v.c_name,
                **_lifetime(v.lifetime),
                "architectures": list(v.architectures),
                "index-fields": [_field(i) for i in v.index_fields],
            }
            for v in f.values
        ],
    }


def _expr(text: str | None, expr: rl.Expr | None) -> dict[str, Any] | None:
    return None if expr is None else {"text": text, "tree": rl.to_json(expr)}


def _constant(c: Constant) -> dict[str, Any]:
    return {"name": c.name, "c-name": c.c_name, "value": c.value}


def _table_rule(
    rule: FilterRule | PowerRule | StolenTimeRule, result: dict[str, Any]
) -> dict[str, Any]:
    """A row of a decision table of its own, with its table's `result`."""
    return {
        "id": rule.id,
        "doc": rule.doc,
        "op": rule.op,
        **_lifetime(rule.lifetime),
        "when": _expr(rule.when_text, rule.when),
        "result": result,
        "source": _source(rule.source),
    }


def _smccc_filter(spec: Spec) -> dict[str, Any]:
    f = spec.smccc_filter
    return {
        **_lifetime(f.lifetime),
        "group": _constant(f.group),
        "attr": _constant(f.attr),
        "struct": {
            "c-name": f.struct_c_name,
            "size": f.struct_size,
            "fields": [{"name": x.name, "offset": x.offset, "size": x.size} for x in f.fields],
        },
        "actions": [_constant(a) for a in f.actions],
        "reserved": [{"name": r.name, "first": r.first, "last": r.last} for r in f.reserved],
        "exit": {"reason": _constant(f.exit_reason), "flags": [_constant(x) for x in f.exit_flags]},
        "rules": [
            _table_rule(
                r,
                {
                    "errno": r.errno.name if r.errno else None,
                    "ok": r.ok,
                    "x0": r.x0,
                    "exit": r.exit.name if r.exit else None,
                    "kvm": r.kvm,
                },
            )
            for r in f.rules
        ],
    }


def _stolen_time(spec: Spec) -> dict[str, Any]:
    t = spec.stolen_time
    return {
        "service": t.service.name,
        "group": _constant(t.group),
        "attr": _constant(t.attr),
        "unset": t.unset,
        "struct": {
            "c-name": t.struct_c_name,
            "size": t.struct_size,
            "fields": [{"name": x.name, "offset": x.offset, "size": x.size} for x in t.fields],
        },
        "rules": [
            _table_rule(
                r,
                {
                    "errno": r.errno.name if r.errno else None,
                    "ok": r.ok,
                    "x0": r.x0,
                    "address": r.address,
                },
            )
            for r in t.rules
        ],
    }


def _vcpu_power(spec: Spec) -> dict[str, Any]:
    p = spec.vcpu_power
    return {
        "off-feature": {"name": p.off_feature, "state": p.off_state.name},
        "mpidr": {
            "hwid-mask": p.hwid_mask,
            "c-name": p.hwid_mask_c_name,
            "level-bits": p.level_bits,
            "levels": p.levels,
            "affinity": [
                {"name": f.name, "shift": f.shift, "id-shift": f.id_shift, "id-bits": f.id_bits}
                for f in p.affinity
            ],
        },
        "rules": [
            _table_rule(
                r,
                {
                    "x0": r.x0,
                    "caller": r.caller.name if r.caller else None,
                    "target": r.target.name if r.target else None,
                    "every-vcpu": r.every_vcpu.name if r.every_vcpu else None,
                },
            )
            for r in p.rules
        ],
    }


def model_to_json(spec: Spec) -> dict[str, Any]:
    """Every part of the model a kvm_fwspec.conformance harness or generator in another language needs."""
    return {
        "releases": [str(r) for r in spec.releases],
        "architectures": [
            {"name": a.name, "doc": a.doc, "reg-arch": a.reg_arch.name, **_lifetime(a.lifetime)}
            for a in spec.architectures
        ],
        "layouts": [
            {
                "name": lay.name,
                "doc": lay.doc,
                "width": lay.width,
                "fields": [_field(f) for f in lay.fields],
            }
            for lay in spec.layouts
        ],
        "errnos": [{"name": e.name, "value": e.value, "doc": e.doc} for e in spec.errnos],
        "vcpu-features": [
            {
                "name": f.name,
                "c-name": f.c_name,
                "bit": dict(sorted(f.bits.items())),
                **_lifetime(f.lifetime),
                **({"capability": f.capability.name} if f.capability else {}),
                "finalize": f.finalize,
            }
            for f in spec.vcpu_features
        ],
        "capabilities": [
            {
                "name": c.name,
                "c-name": c.c_name,
                "value": c.value,
                **_lifetime(c.lifetime),
                "vm-enable": c.vm_enable,
            }
            for c in spec.capabilities
        ],
        "state": [{"name": s.name, "doc": s.doc, "type": s.type} for s in spec.state],
        "registers": [
            {
                "name": r.name,
                "c-name": r.c_name,
                "doc": r.doc,
                "class": r.register_class.name,
                "index": r.index,
                "kind": r.kind,
                "storage": r.storage,
                "ids": dict(sorted(r.ids.items())),
                **_lifetime(r.lifetime),
                "reset": _expr(r.reset_text, r.reset),
                "arch-features-since": str(r.arch_features_since)
                if r.arch_features_since
                else None,
                "layout": [_field(f) for f in r.layout],
                "values": [
                    {
                        "name": v.name,
                        "c-name": v.c_name,
                        "value": v.value,
                        **_lifetime(v.lifetime),
                        "arch-features": v.arch_features,
                    }
                    for v in r.values
                ],
                "bits": [
                    {
                        "name": b.name,
                        "c-name": b.c_name,
                        "bit": b.bit,
                        **_lifetime(b.lifetime),
                        "service": b.service.name if b.service else None,
                    }
                    for b in r.bits
                ],
                "source": _source(r.source),
                "kernel-docs": [
                    {
                        "file": k.file,
                        "says": k.says,
                        "code-does": k.code_does,
                        "real-kvm-follows": k.real_kvm_follows,
                    }
                    for k in r.kernel_docs
                ],
            }
            for r in spec.registers
        ],
        "host-profiles": [
            {
                "name": h.name,
                "doc": h.doc,
                "levels": {k: v.name for k, v in sorted(h.levels.items())},
            }
            for h in spec.host_profiles
        ],
        "psci": {
            "versions": [
                {"name": v.name, "encoded": v.encoded, "c-name": v.c_name, **_lifetime(v.lifetime)}
                for v in spec.psci_versions
            ],
            "latest": [
                {"version": p.version.name, **_lifetime(p.lifetime)} for p in spec.psci_latest
            ],
            "functions": [
                {
                    "name": f.name,
                    "number": f.number,
                    "psci": f.psci.name,
                    "ids": dict(sorted(f.ids.items())),
                    "c-names": dict(sorted(f.c_names.items())),
                    "header-since": str(f.header_since) if f.header_since else None,
                    "header-errata": [
                        {
                            "number": e.number,
                            "ids": dict(sorted(e.ids.items())),
                            "fixed": _lifetime(e.fixed),
                            "source": _source(e.source),
                        }
                        for e in f.header_errata
                    ],
                    "source": _source(f.source),
                    "kvm": None
                    if f.kvm is None
                    else {
                        "from": f.kvm.from_version.name,
                        **_lifetime(f.kvm.lifetime),
                        "features": f.kvm.features,
                        "needs-capability": f.kvm.needs_capability.name
                        if f.kvm.needs_capability
                        else None,
                        "calls": [
                            {
                                "args": list(c.args),
                                "x0": c.x0,
                                "exit": c.exit.name if c.exit else None,
                                "flags": c.flags,
                            }
                            for c in f.kvm.calls
                        ],
                    },
                }
                for f in spec.psci_functions
            ],
            "kvm-psci-0.1": [
                {
                    "name": f.name,
                    "function-id": f.function_id,
                    "c-name": f.c_name,
                    "handled": f.handled,
                }
                for f in spec.kvm_psci_01_functions
            ],
            "return-codes": [_constant(c) for c in spec.psci_return_codes],
        },
        "smccc": {
            "services": [{"name": s.name, "doc": s.doc} for s in spec.services],
            "functions": [
                {
                    "name": f.name,
                    "c-name": f.c_name,
                    "function-id": f.function_id,
                    "service": f.service.name,
                    **_lifetime(f.lifetime),
                    "psci-features": f.psci_features,
                    "returns": f.returns,
                    "arch-features": f.arch_features,
                    "returns-register": f.returns_register,
                    "answers": list(f.answers) if f.answers is not None else None,
                    "register-results": [
                        {"register": index, "name": name} for index, name in f.register_results
                    ],
                    "calls": [
                        {
                            "args": list(c.args),
                            "answers": [
                                {"bits": a.bits} if isinstance(a, AnyBits) else a for a in c.answers
                            ],
                            **_lifetime(c.lifetime),
                        }
                        for c in f.calls
                    ],
                }
                for f in spec.smccc_functions
            ],
            "not-supported": list(spec.smccc_not_supported),
        },
        "smccc-filter": _smccc_filter(spec),
        "stolen-time": _stolen_time(spec),
        "vcpu-power": _vcpu_power(spec),
        "kvm-interface": {
            "ioctls": [
                {"name": i.name, "c-name": i.c_name, "number": i.number} for i in spec.ioctls
            ],
            "kvm-run": [{"name": f.name, "offset": f.offset, "size": f.size} for f in spec.kvm_run],
            "exit-reasons": [_constant(c) for c in spec.exit_reasons],
            "system-events": [_constant(c) for c in spec.system_events],
            "system-event-flags": [_constant(c) for c in spec.system_event_flags],
            "mp-states": [_constant(c) for c in spec.mp_states],
            "core-registers": [
                {"name": c.name, "first-word": c.first_word, "count": c.count}
                for c in spec.core_registers
            ],
        },
        "rules": [
            {
                "id": r.id,
                "doc": r.doc,
                "op": r.op,
                "register": r.register.name if r.register else None,
                "class": r.register_class.name if r.register_class else None,
                "architectures": list(r.architectures),
                **_lifetime(r.lifetime),
                "when": _expr(r.when_text, r.when),
                "result": {
                    "errno": r.errno.name if r.errno else None,
                    "value": _expr(r.value_text, r.value),
                    "store": _expr(r.store_text, r.store),
                    "ok": r.errno is None
                    and r.value is None
                    and r.store is None
                    and r.listed is None
                    and r.undefined is None,
                    "listed": r.listed,
                    "undefined": r.undefined,
                },
                "source": _source(r.source),
            }
            for r in spec.rules
        ],
        "vmm-rules": [
            {
                "id": v.id,
                "doc": v.doc,
                "evidence": v.evidence,
                "kernel-asks": {"file": v.kernel_asks_file, "says": v.kernel_asks},
                "kvm-rules": [r.id for r in v.kvm_rules],
                "known-vmms": [
                    {
                        "vmm": k.vmm,
                        "versions": k.versions,
                        "does": k.does,
                        "source": {
                            "repository": k.source.repository,
                            "file": k.source.file,
                            "note": k.source.note,
                        },
                    }
                    for k in v.known_vmms
                ],
            }
            for v in spec.vmm_rules
        ],
    }
