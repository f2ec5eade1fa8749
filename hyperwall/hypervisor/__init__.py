"""The hypervisor as the source of truth: libvirt domains -> workloads (and their rules)."""
