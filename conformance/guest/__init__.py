"""What runs inside a guest host's initramfs: the agent protocol's server, its guard, the
real-KVM implementation over ioctls and the VMM agent. Standard library only (plus the
generated constants), so Debian's bare python3.11 can run it; tests/test_layers.py enforces it
and the initramfs is built from exactly these files."""
