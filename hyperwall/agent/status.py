"""The agent's realization status, written atomically to `STATE_DIR/status.json`."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class AgentStatus:
    host: str
    pid: int
    converged: bool
    program_hash: str | None
    policy_hash: str | None
    error: str | None
    mode: str | None
    commands: int
    seconds: float
    updated: float
    endpoints: int = 0


def write_status(path: Path, status: AgentStatus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(status), indent=2))
    os.replace(tmp, path)


def read_status(path: Path) -> AgentStatus | None:
    try:
        return AgentStatus(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def now() -> float:
    return time.time()
