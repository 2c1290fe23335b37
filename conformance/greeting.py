"""Open an adapter and have it say what it is, before any case runs against it.

A wrong option, a program that does not start, an agent that dies before its hello or one that
claims another kernel is one line for the user, not hundreds of identical case errors after
the suite ran.
"""

from __future__ import annotations

from collections.abc import Mapping

from kvm_fwspec.conformance.adapters import Adapter, describe_failure, load_adapter
from kvm_fwspec.conformance.profile import Profile, claims_profile, resolve_profile
from kvm_fwspec.spec.errors import UsageError
from kvm_fwspec.spec.kernel_names import parse_kernel_name
from kvm_fwspec.spec.model import Spec


def greeted_adapter(
    name: str,
    spec: Spec,
    profile: Profile,
    options: Mapping[str, str],
    kernel_from_hello: bool = False,
    recorded: bool = False,
) -> Adapter:
    """The adapter, opened with the user's options and asked what it is, or one line saying
    why not: no case runs against an implementation that cannot say hello. With
    `kernel_from_hello` (`--kernel auto`) the kernel it claims is the caller's to take, not
    one to hold against `profile`. `recorded`: the profile is a results file's (replay), which
    no option of the command changes."""
    try:
        adapter = load_adapter(name, profile, options)
    except OSError as exc:  # the program or address the options name
        raise UsageError(f"adapter '{name}' cannot start: {exc}") from None
    try:
        capabilities = adapter.capabilities()
        if capabilities.implementation == "unavailable":
            raise UsageError(f"adapter '{name}' reports no implementation")
    except UsageError:
        adapter.close()
        raise
    except Exception as exc:
        adapter.close()
        raise UsageError(
            f"adapter '{name}' did not complete its hello: {describe_failure(exc)}"
        ) from None
    except BaseException:  # Ctrl-C while a guest boots: stop it first
        adapter.close()
        raise
    claimed = capabilities.kernel
    if kernel_from_hello:
        if claimed is None:
            adapter.close()
            raise UsageError(
                f"--kernel auto: {capabilities.implementation} does not say which kernel it "
                "is; name it with --kernel"
            )
        return adapter
    if claimed is not None and not claims_profile(spec, claimed, profile):
        adapter.close()
        wanted = (
            f"the results were recorded for {profile.kernel}: replay them on an "
            "implementation of that kernel"
            if recorded
            else f"--kernel asks for {profile.kernel}{_kernel_hint(spec, claimed)}"
        )
        raise UsageError(f"{capabilities.implementation} says it is KVM {claimed}; {wanted}")
    return adapter


def greeted_for_its_kernel(
    name: str, spec: Spec, host: str, arch: str, options: Mapping[str, str]
) -> tuple[Adapter, str]:
    """`--kernel auto`: the adapter, greeted, and the kernel its hello names (`uname -r` on
    real KVM), which the command then judges it as. The adapter is opened with the newest
    release's profile, which its claim then replaces; the in-process reference has no kernel
    of its own to claim."""
    if name == "reference":
        raise UsageError(
            "--kernel auto: the in-process reference is whichever kernel --kernel names; name one"
        )
    placeholder = resolve_profile(spec, "latest", host, arch)
    adapter = greeted_adapter(name, spec, placeholder, options, kernel_from_hello=True)
    claimed = adapter.capabilities().kernel
    assert claimed is not None  # greeted_adapter refuses a hello without one
    return adapter, claimed


def _kernel_hint(spec: Spec, claimed: str) -> str:
    """What --kernel would match the implementation, when the spec can judge its claim."""
    try:
        judged = parse_kernel_name(spec, claimed)
    except UsageError:
        return ""
    return f" (give --kernel {judged}, or --kernel auto where the command takes it)"
