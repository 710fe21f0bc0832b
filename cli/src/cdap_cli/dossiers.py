"""`cdap dossiers ...` commands."""

from __future__ import annotations

import asyncio
import os

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from cdap_cli.caf_feed import publish

app = typer.Typer(help="The dossiers service: synthetic CAF feed.", no_args_is_help=True)


@app.command()
def generate(
    count: int = typer.Option(..., "--count", min=1, help="How many dossiers to publish."),
    department: str = typer.Option("76", "--department", help="Department of the managing CAF."),
    seed: int = typer.Option(1, "--seed", help="Same seed, same dossiers."),
    start: int = typer.Option(1_000_000, "--start", help="First numero allocataire."),
    landlord: list[str] = typer.Option([], "--landlord", help="SIRET of a landlord paid housing aid."),
    rsa_referent: list[str] = typer.Option([], "--rsa-referent", help="SIRET of an RSA referent body."),
    bootstrap: str = typer.Option(os.environ.get("CDAP_KAFKA_BOOTSTRAP", "127.0.0.1:9092"), "--bootstrap"),
    topic: str | None = typer.Option(None, "--topic", help="Default: caf.dossiers, after CDAP_TOPIC_PREFIX."),
) -> None:
    """Publish synthetic dossiers to the CAF feed (CloudEvents caf.dossier.upserted, key = numero)."""
    if start + count > 10_000_000:
        raise typer.BadParameter("numeros have 7 digits: lower --start or --count")
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    ) as progress:
        task = progress.add_task("publishing dossiers", total=count)
        try:
            sent = asyncio.run(
                publish(
                    count,
                    bootstrap=bootstrap,
                    topic=topic,
                    department=department,
                    seed=seed,
                    start=start,
                    landlords=landlord,
                    rsa_referents=rsa_referent,
                    progress=lambda n: progress.update(task, completed=n),
                )
            )
        except Exception as exc:
            progress.stop()
            typer.secho(
                f"could not publish to Kafka at {bootstrap}: {exc}. Is the stack up? Try `make up`.", fg="red"
            )
            raise typer.Exit(1) from exc
    typer.echo(f"published {sent} dossiers to {topic}")
