"""Boot real arm64 KVM hosts under QEMU from Debian's packages and serve their /dev/kvm."""
