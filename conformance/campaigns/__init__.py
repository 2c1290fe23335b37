"""Whole runs on the lab: real KVM certified, migrate-check and sync-check proven against real
kernels and headers, QEMU's save and restore certified."""
