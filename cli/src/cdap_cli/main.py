"""`cdap`: one command for operators and demos; each service contributes its own sub-commands."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import typer

from cdap_audit.cli import app as audit_app
from cdap_cli.demo_cli import demo
from cdap_dossiers.cli import app as dossiers_app
from cdap_identity.cli import app as identity_app

app = typer.Typer(help="CDAP — the CAF partner portal.", no_args_is_help=True)
stack_app = typer.Typer(help="The local stack: Kafka, PostgreSQL, SMTP sink.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(identity_app, name="identity")
app.add_typer(dossiers_app, name="dossiers")
app.add_typer(audit_app, name="audit")
app.command("demo")(demo)

ROOT = Path(__file__).resolve().parents[3]


def _stack(command: str, env: dict[str, str] | None = None) -> None:
    script = ROOT / "deploy" / "local" / "stack.sh"
    if not script.exists():
        typer.secho(f"{script} not found: run cdap from a CDAP checkout", fg="red")
        raise typer.Exit(2)
    run = subprocess.run(["bash", str(script), command], check=False, env={**os.environ, **(env or {})})  # noqa: S603,S607
    raise typer.Exit(run.returncode)


@stack_app.command()
def up(
    brokers: int | None = typer.Option(
        None,
        "--brokers",
        min=1,
        max=9,
        help="Kafka nodes (3: replication 3, min.insync.replicas 2); default: as running, else 1.",
    ),
) -> None:
    """Install what is missing and start Kafka, PostgreSQL and the SMTP sink."""
    _stack("up", {"CDAP_KAFKA_BROKERS": str(brokers)} if brokers else None)


@stack_app.command()
def down() -> None:
    """Stop what `up` started."""
    _stack("down")


@stack_app.command()
def status() -> None:
    """Say what answers."""
    _stack("status")
