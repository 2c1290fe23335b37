"""A Python model of KVM's side of the firmware-register ABI, driven by the spec's tables."""
