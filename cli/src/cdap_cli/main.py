"""`cdap`: one command for operators and demos; a sub-command per service, over its public functions
or its HTTP API, so that no service installs a command-line library."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cdap_cli.audit import app as audit_app
from cdap_cli.demo_cli import demo
from cdap_cli.dossiers import app as dossiers_app
from cdap_cli.identity import app as identity_app
from cdap_cli.kafka_grant import app as kafka_app
from cdap_shared.kafka_access import ADMIN, log_in_as
from cdap_shared.watch import group_lags

app = typer.Typer(help="CDAP — the CAF partner portal.", no_args_is_help=True)
stack_app = typer.Typer(help="The local stack: Kafka, PostgreSQL, SMTP sink.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(identity_app, name="identity")
app.add_typer(dossiers_app, name="dossiers")
app.add_typer(audit_app, name="audit")
app.add_typer(kafka_app, name="kafka")
docs_app = typer.Typer(help="The repository's docs.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")
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
    """Say what answers (and `cdap lag` for how far behind each consumer group is)."""
    _stack("status")


@app.command()
def lag(
    bootstrap: Annotated[str, typer.Option(envvar="CDAP_KAFKA_BOOTSTRAP")] = "127.0.0.1:9092",
    group: Annotated[str, typer.Option(help="only groups whose name starts with this")] = "",
) -> None:
    """Every consumer group's lag: records behind the log end, per topic (partitions summed)."""
    try:
        # An operator's view of every group: as the admin, unless CDAP_KAFKA_USERNAME says otherwise.
        lags = asyncio.run(group_lags(bootstrap, group, log_in_as(ADMIN)))
    except Exception as exc:
        typer.secho(
            f"Kafka at {bootstrap} did not answer ({type(exc).__name__}): is the stack up? `make up`",
            fg="red",
        )
        raise typer.Exit(1) from exc
    table = Table("consumer group", "topic", "partitions", "behind")
    for name, partitions in lags.items():
        # A group whose topics are gone (a finished test's) has no partition left to show.
        by_topic: dict[str, list[int]] = {}
        for p in partitions:
            by_topic.setdefault(p.topic, []).append(p.lag)
        for topic, behind in sorted(by_topic.items()):
            table.add_row(
                name, topic, str(len(behind)), f"[{'red' if sum(behind) else 'green'}]{sum(behind)}"
            )
    Console().print(table if lags else "no consumer group yet")


@docs_app.command("settings")
def docs_settings(
    check: Annotated[
        bool, typer.Option("--check", help="change nothing; exit 1 if a table is stale")
    ] = False,
) -> None:
    """Write the settings tables (docs/<service>.md, docs/configuration.md) from the settings classes."""
    from cdap_cli import settings_docs

    if check:
        stale = settings_docs.stale()
        for page in stale:
            typer.secho(f"{page}: settings table out of date; run `cdap docs settings`", fg="red")
        raise typer.Exit(1 if stale else 0)
    for page in settings_docs.write():
        typer.echo(f"rewrote {page}")
