"""The lab's state folder (`/run/hyperwall/lab/NAME`) and its `state.json`.

The state file is written first (phase `creating`, every namespace the plan will make) and
rewritten as processes start, atomically (temp file + rename), so `lab down` knows what to
remove even after `up` died halfway. `down` does not depend on it: it also scans for the
lab's prefix.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path("/run/hyperwall/lab")
DEFAULT_NAME = "lab"


@dataclass(frozen=True, slots=True)
class LabPaths:
    root: Path
    name: str

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def policy(self) -> Path:
        """What the agents read: a symlink to the current `policy.N` folder."""
        return self.dir / "policy"

    def policy_generation(self, n: int) -> Path:
        return self.dir / f"policy.{n}"

    @property
    def sockets(self) -> Path:
        return self.dir / "sock"

    @property
    def logs(self) -> Path:
        return self.dir / "log"

    def agent_dir(self, host: str) -> Path:
        return self.dir / "agents" / host

    def agent_status(self, host: str) -> Path:
        return self.agent_dir(host) / "status.json"

    def agent_log(self, host: str) -> Path:
        return self.agent_dir(host) / "log"


@dataclass(frozen=True, slots=True)
class Responder:
    ns: str
    socket: str  # file name under LabPaths.sockets
    pid: int | None = None
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Agent:
    ns: str
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class LabState:
    name: str
    phase: str  # "creating", then "ready"
    created: float
    sources: tuple[str, ...]
    generation: int  # the policy.N folder the `policy` symlink points to
    agents_enabled: bool
    namespaces: tuple[str, ...]
    links: tuple[str, ...]  # "namespace/link" for every link the lab made
    vms: dict[str, Responder] = field(default_factory=dict)  # workload key -> responder
    external: Responder | None = None
    agents: dict[str, Agent] = field(default_factory=dict)  # host -> agent

    def pids(self) -> list[int]:
        found = [r.pid for r in self.vms.values()] + [a.pid for a in self.agents.values()]
        if self.external is not None:
            found.append(self.external.pid)
        return [p for p in found if p is not None]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> LabState:
        def responder(d: dict[str, Any]) -> Responder:
            return Responder(d["ns"], d["socket"], d.get("pid"), tuple(d.get("addresses", ())))

        external = data.get("external")
        return LabState(
            name=str(data["name"]),
            phase=str(data["phase"]),
            created=float(data["created"]),
            sources=tuple(data["sources"]),
            generation=int(data["generation"]),
            agents_enabled=bool(data["agents_enabled"]),
            namespaces=tuple(data["namespaces"]),
            links=tuple(data["links"]),
            vms={k: responder(v) for k, v in data.get("vms", {}).items()},
            external=responder(external) if external else None,
            agents={h: Agent(a["ns"], a.get("pid")) for h, a in data.get("agents", {}).items()},
        )


def write_state(paths: LabPaths, state: LabState) -> None:
    paths.dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    os.replace(tmp, paths.state_file)


def read_state(paths: LabPaths) -> LabState | None:
    """The state file, or None if it is missing or unreadable (a crash, a stale folder)."""
    try:
        return LabState.from_json(json.loads(paths.state_file.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
