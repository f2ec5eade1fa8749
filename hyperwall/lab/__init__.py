"""`hyperwall lab`: real hosts and VMs as network namespaces, built from the same documents.

`Lab` (in `hyperwall.lab.lab`) is imported lazily so that the responder, which runs as
`python -m hyperwall.lab.responder` in every VM namespace, starts without loading the
policy stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hyperwall.lab.lab import Lab, LabStatus, ProbeReport

__all__ = ["Lab", "LabStatus", "ProbeReport"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hyperwall.lab import lab

        return getattr(lab, name)
    raise AttributeError(f"module 'hyperwall.lab' has no attribute {name!r}")
