"""The `hyperwall` command: the CLI's composition root, one module per command."""

from __future__ import annotations

import typer

from hyperwall.cli.agent import agent
from hyperwall.cli.apply import apply
from hyperwall.cli.audit import audit
from hyperwall.cli.compile import compile_command
from hyperwall.cli.delete import delete
from hyperwall.cli.demo import demo
from hyperwall.cli.diff import diff
from hyperwall.cli.discover import discover_command
from hyperwall.cli.get import get
from hyperwall.cli.history import history
from hyperwall.cli.lab import lab_app
from hyperwall.cli.lint import lint_command
from hyperwall.cli.logs import logs
from hyperwall.cli.manager import manager
from hyperwall.cli.reach import reach_command
from hyperwall.cli.report import report
from hyperwall.cli.rollback import rollback
from hyperwall.cli.stats import stats
from hyperwall.cli.status import status
from hyperwall.cli.token import token_app
from hyperwall.cli.trace import trace_command
from hyperwall.cli.validate import validate
from hyperwall.cli.verify import verify

app = typer.Typer(
    name="hyperwall",
    help="Distributed virtual firewall for KVM/libvirt hosts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("validate")(validate)
app.command("trace")(trace_command)
app.command("verify")(verify)
app.command("lint")(lint_command)
app.command("reach")(reach_command)
app.command("compile")(compile_command)
app.command("demo")(demo)
app.command("agent")(agent)
app.command("discover")(discover_command)
app.add_typer(lab_app, name="lab")
app.command("manager")(manager)
app.command("apply")(apply)
app.command("get")(get)
app.command("delete")(delete)
app.command("diff")(diff)
app.command("history")(history)
app.command("logs")(logs)
app.command("rollback")(rollback)
app.command("status")(status)
app.command("stats")(stats)
app.add_typer(token_app, name="token")
app.command("audit")(audit)
app.command("report")(report)


def main() -> None:
    app()
