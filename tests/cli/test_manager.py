"""`hyperwall manager` options: the flow retention as a duration."""

from __future__ import annotations

import pytest

from hyperwall.cli.manager import retention_seconds


def test_retention_seconds() -> None:
    assert retention_seconds("7d") == 7 * 86400
    assert retention_seconds("90m") == 5400
    for bad in ("soon", "2026-12-03T07:00:00Z", "0m"):
        with pytest.raises(ValueError):
            retention_seconds(bad)
