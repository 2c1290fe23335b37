"""kvm-fwspec kvm_fwspec.codegen: load the firmware-register spec and generate every artefact from it."""

__version__ = "0.1.0"
