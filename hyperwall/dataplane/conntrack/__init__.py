"""Connection tracking state of a VM: read it from one kernel, carry it, write it into another.

Pure: `entry` (the value), `attrs` (ctnetlink attributes), `messages` (netlink framing),
`wire` (bytes between hosts), `transfer` (snapshot and delta). I/O: `kernel` (a ctnetlink
socket in a namespace) and `strict` (the per-namespace strict-TCP sysctl).
"""
