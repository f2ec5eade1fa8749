"""NFLOG: the kernel's logged packets over netlink (`messages`, `packet`: pure; `reader`:
I/O)."""
