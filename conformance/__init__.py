"""Certification: the conformance suite and its adapters, and above it the analyses, the
real-KVM lab, its campaigns and the commands. `guest` is the stdlib-only payload that runs
inside a guest host."""
