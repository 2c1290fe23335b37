"""Files generated from the spec by `kvm-fwspec generate`; edit the spec, never these."""
