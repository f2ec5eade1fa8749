"""`hyperwall agent --host H (--policy-dir D | --server URL --token-file F) [--libvirt URI]`:
run the host agent (in the host's namespace). The desired state comes from a documents folder
or from the manager (long-poll watch, cached in `--cache-dir`); `HYPERWALL_SERVER` and
`HYPERWALL_TOKEN` (the token itself) may replace `--server` and `--token-file`. With
`--libvirt`, the host's own VMs come from its libvirt domains (`hypervisor`)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from hyperwall.agent.main import AgentConfig, ManagerConfig, run_agent
from hyperwall.attachment import ATTACHMENTS, parse_attachment
from hyperwall.cli.common import EXIT_INPUT, fail


def agent(
    host: str = typer.Option(..., "--host", help="This hypervisor host's name"),
    policy_dir: Path | None = typer.Option(
        None, "--policy-dir", help="Folder of policy documents (instead of --server)"
    ),
    server: str | None = typer.Option(
        None,
        "--server",
        envvar="HYPERWALL_SERVER",
        help="The manager's URL, e.g. https://manager:8443 (instead of --policy-dir)",
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="File holding this agent's token for the manager"
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="HYPERWALL_TOKEN",
        hidden=True,
        help="The agent's token itself (prefer --token-file; mainly for HYPERWALL_TOKEN)",
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Where the last valid documents from the manager are kept, to enforce them after"
        " a restart while the manager is unreachable (default: STATE_DIR/cache; put it on"
        " persistent storage, e.g. /var/lib/hyperwall/agent, to survive a reboot)",
    ),
    watch_wait: float = typer.Option(
        30.0, "--watch-wait", help="Seconds each long-poll of the manager may wait for news"
    ),
    insecure: bool = typer.Option(
        False, "--insecure-skip-tls-verify", help="Do not verify the manager's TLS certificate"
    ),
    state_dir: Path = typer.Option(
        Path("/run/hyperwall/agent"), "--state-dir", help="Where status.json is written"
    ),
    vm_prefix: str | None = typer.Option(
        None,
        "--vm-prefix",
        help="Host-side VM interface prefix: an interface with it and no managed VM behind it"
        " passes nothing (default: hwt; with --libvirt: vnet, libvirt's own tap names)",
    ),
    handover_listen: str | None = typer.Option(
        None,
        "--handover-listen",
        help="IP:PORT on the underlay where this agent accepts the connection state of VMs"
        " migrating here (authenticated by a one-time key per migration); off by default",
    ),
    libvirt: str | None = typer.Option(
        None,
        "--libvirt",
        help="libvirt URI (e.g. qemu:///system): this host's VMs, their identity and embedded"
        " rules come from its domains (events, and a relist every --resync)",
    ),
    resync: float = typer.Option(30.0, "--resync", help="Seconds between drift repairs"),
    hits_seconds: float = typer.Option(
        10.0,
        "--hits-seconds",
        help="Seconds between readings of the per-rule hit counters (STATE_DIR/hits.json,"
        " reported to the manager; `hyperwall stats`); 0: never",
    ),
    flow_log: Path | None = typer.Option(
        None,
        "--flow-log",
        help="The flow log (JSON lines, rotated by size), e.g. /var/log/hyperwall/flows.jsonl:"
        " logged decisions and a record per managed connection that ends; shipped to the"
        " manager with --server. Off without it",
    ),
    flow_summary_seconds: float = typer.Option(
        10.0,
        "--flow-summary-seconds",
        help="Seconds between the flow log's summaries of records the log rate limit"
        " suppressed (per rule; also in STATE_DIR/flowlog.json)",
    ),
    metrics_listen: str | None = typer.Option(
        None,
        "--metrics-listen",
        help="HOST:PORT where the agent serves Prometheus metrics at /metrics (in the host's"
        " namespace; e.g. 127.0.0.1:9471); off by default",
    ),
    mode: str = typer.Option(
        "routed",
        "--mode",
        help="VM attachment: 'routed' (host-routed VM links) or 'bridge' (a Linux bridge with"
        " br_netfilter)",
    ),
) -> None:
    """Enforce the policy for this host's VMs in the kernel and keep it converged."""
    attachment = parse_attachment(mode)
    if attachment is None:
        fail(f"bad --mode {mode!r}: expected one of {', '.join(ATTACHMENTS)}", EXIT_INPUT)
    if (policy_dir is None) == (server is None):
        fail("give exactly one of --policy-dir and --server (or HYPERWALL_SERVER)", EXIT_INPUT)
    manager = None
    if server is not None:
        if token_file is not None:
            try:
                token = token_file.read_text().strip()
            except OSError as exc:
                fail(f"cannot read --token-file: {exc}", EXIT_INPUT)
        if not token:
            fail("--server needs --token-file (or HYPERWALL_TOKEN)", EXIT_INPUT)
        if not server.startswith(("http://", "https://")):
            fail(f"bad --server {server!r}: expected http(s)://HOST[:PORT]", EXIT_INPUT)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        if watch_wait <= 0:
            fail("--watch-wait must be positive", EXIT_INPUT)
        manager = ManagerConfig(
            server,
            token,
            cache_dir or state_dir / "cache",
            verify_tls=not insecure,
            wait_seconds=watch_wait,
        )
    config = AgentConfig(
        host,
        policy_dir,
        state_dir,
        vm_prefix or ("vnet" if libvirt else "hwt"),
        resync_seconds=resync,
        mode=attachment,
        manager=manager,
        libvirt=libvirt,
        handover_listen=handover_listen,
        hits_seconds=hits_seconds,
        metrics_listen=metrics_listen,
        flow_log=flow_log,
        flow_summary_seconds=flow_summary_seconds,
    )
    if metrics_listen is not None:
        host_part, _, port = metrics_listen.rpartition(":")
        if not host_part or not port.isdigit() or not 0 < int(port) < 65536:
            fail(f"bad --metrics-listen {metrics_listen!r}: expected HOST:PORT", EXIT_INPUT)
    if hits_seconds < 0:
        fail("--hits-seconds must be 0 (never) or positive", EXIT_INPUT)
    if flow_summary_seconds <= 0:
        fail("--flow-summary-seconds must be positive", EXIT_INPUT)
    if libvirt is not None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_agent(config)
