"""The `hyperwall` command: the CLI's composition root, one module per command."""

from __future__ import annotations

import typer

from hyperwall.cli import remote
from hyperwall.cli.agent import agent
from hyperwall.cli.compile import compile_command
from hyperwall.cli.demo import demo
from hyperwall.cli.lab import lab_app
from hyperwall.cli.manager import manager
from hyperwall.cli.trace import trace_command
from hyperwall.cli.validate import validate

app = typer.Typer(
    name="hyperwall",
    help="Distributed virtual firewall for KVM/libvirt hosts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("validate")(validate)
app.command("trace")(trace_command)
app.command("compile")(compile_command)
app.command("demo")(demo)
app.command("agent")(agent)
app.add_typer(lab_app, name="lab")
app.command("manager")(manager)
for _name in ("apply", "get", "delete", "diff", "history", "rollback", "status"):
    app.command(_name)(getattr(remote, _name))
app.add_typer(remote.token_app, name="token")


def main() -> None:
    app()
