"""`hyperwall agent --host H --policy-dir D`: run the host agent (in the host's namespace)."""

from __future__ import annotations

from pathlib import Path

import typer

from hyperwall.agent.main import AgentConfig, run_agent
from hyperwall.cli.common import EXIT_INPUT, fail

MODES = ("routed", "bridge")


def agent(
    host: str = typer.Option(..., "--host", help="This hypervisor host's name"),
    policy_dir: Path = typer.Option(..., "--policy-dir", help="Folder of policy documents"),
    state_dir: Path = typer.Option(
        Path("/run/hyperwall/agent"), "--state-dir", help="Where status.json is written"
    ),
    vm_prefix: str = typer.Option("hwt", "--vm-prefix", help="Host-side VM interface prefix"),
    resync: float = typer.Option(30.0, "--resync", help="Seconds between drift repairs"),
    mode: str = typer.Option(
        "routed",
        "--mode",
        help="VM attachment: 'routed' (host-routed VM links) or 'bridge' (a Linux bridge with"
        " br_netfilter)",
    ),
) -> None:
    """Enforce the policy for this host's VMs in the kernel and keep it converged."""
    if mode not in MODES:
        fail(f"bad --mode {mode!r}: expected one of {', '.join(MODES)}", EXIT_INPUT)
    config = AgentConfig(host, policy_dir, state_dir, vm_prefix, resync_seconds=resync, mode=mode)
    run_agent(config)
