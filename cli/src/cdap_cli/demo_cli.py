"""The `cdap demo` command (see `cdap_cli.demo`)."""

from __future__ import annotations

import asyncio
import os
import subprocess

import httpx
import pyotp
import typer
from rich.console import Console
from rich.table import Table

from cdap_cli.demo import DEMO_PASSWORD, ROOT, STATE, Demo, DemoError, Urls, load_state

console = Console()


async def _bootstrap_admin(email: str) -> str:
    from cdap_cli.identity import bootstrap_admin
    from cdap_identity.config import Settings

    _, token = await bootstrap_admin(Settings(), email, "Administrateur", "CAF", "76")
    return token


async def _seeded(demo: Demo) -> bool:
    """The saved demo accounts still log in (a `make reset` forgets them)."""
    if not load_state(demo):
        return False
    try:
        await demo.headers("auditeur@caf76.demo")
        return True
    except (DemoError, KeyError):
        STATE.unlink(missing_ok=True)
        demo.accounts.clear()
        return False


async def _run(scenario: bool, count: int) -> None:
    urls = Urls()
    async with httpx.AsyncClient(timeout=30) as client:
        demo = Demo(urls, client, say=lambda text: console.print(f"[cyan]•[/cyan] {text}"))
        if not await _seeded(demo):
            await demo.seed(_bootstrap_admin, count)
            demo.save()
        if scenario:
            await demo.scenario()
            console.print("[bold green]scenario passed[/bold green]")
        else:
            _print_logins(demo, urls)


def _print_logins(demo: Demo, urls: Urls) -> None:
    table = Table(title=f"Demo logins (password: {DEMO_PASSWORD})")
    for column in ("e-mail", "role", "TOTP"):
        table.add_column(column)
    for account in demo.accounts.values():
        table.add_row(
            account.email, account.role, "cdap demo --totp " + account.email if account.totp else "-"
        )
    console.print(table)
    console.print(
        f"portal {urls.portal}  identity {urls.identity}/docs  access {urls.access}/docs  "
        f"dossiers {urls.dossiers}/docs  audit {urls.audit}/docs"
    )


def _services_up() -> bool:
    try:
        return httpx.get(f"{Urls().identity}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def demo(
    scenario: bool = typer.Option(
        False, "--scenario", help="Play the story end to end; exit 1 if a step fails."
    ),
    count: int = typer.Option(10_000, "--count", help="Synthetic dossiers to publish when seeding."),
    totp: str = typer.Option(None, "--totp", help="Print the current TOTP code of a demo account."),
) -> None:
    """Demo data for the CAF of Seine-Maritime, the demo logins, and the scripted story."""
    if totp:
        saved = Demo(Urls(), httpx.AsyncClient())
        load_state(saved)
        secret = saved.accounts[totp].totp if totp in saved.accounts else None
        if not secret:
            raise typer.BadParameter(f"{totp} is not a demo account with TOTP (see {STATE})")
        typer.echo(pyotp.TOTP(secret).now())
        return
    if not _services_up():
        if scenario:
            console.print(
                "[red]the services are not running: start them with `make run` in another terminal[/red]"
            )
            raise typer.Exit(1)
        console.print("the services are not running: starting everything with `make run` (Ctrl-C stops it)")
        raise typer.Exit(subprocess.call(["make", "run"], cwd=ROOT, env=os.environ.copy()))  # noqa: S607
    try:
        asyncio.run(_run(scenario, count))
    except DemoError as exc:
        console.print(f"[bold red]demo failed:[/bold red] {exc}")
        raise typer.Exit(1) from exc
