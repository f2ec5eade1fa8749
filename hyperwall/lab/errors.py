"""The lab's exceptions: bad input (exit 2) and things that went wrong (exit 1)."""

from __future__ import annotations


class LabError(RuntimeError):
    """The lab could not do what was asked (a command failed, agents did not converge...)."""


class LabInputError(ValueError):
    """Bad input: a bad lab name, documents that cannot become a lab, an unknown end."""
