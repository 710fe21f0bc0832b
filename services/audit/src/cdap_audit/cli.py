"""`cdap audit ...` commands: save and verify checkpoints, export and follow the log, retention, keys."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from cdap_audit.checkpoint import NoteSigner
from cdap_audit.client import DEFAULT_URL, AuditClient, AuditClientError
from cdap_audit.verify import SavedCheckpoint, VerificationFailed, fetch_checkpoint, verify_log

app = typer.Typer(help="The audit log: checkpoints, verification, export.", no_args_is_help=True)
console = Console(highlight=False)

URL = typer.Option(DEFAULT_URL, "--url", envvar="CDAP_AUDIT_URL", help="The audit service.")
TOKEN = typer.Option(None, "--token", envvar="CDAP_TOKEN", help="An auditor's access token.")
CSV_FIELDS = [
    "index",
    "event_id",
    "type",
    "time",
    "actor",
    "organisation_id",
    "profile",
    "subject",
    "decision",
    "reason",
    "motif",
    "sections",
    "client_ip",
    "trace_id",
    "leaf",
]


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]FAILED[/]: {message}")
    return typer.Exit(1)


def _filters(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@app.command()
def checkpoint(
    save: Path | None = typer.Option(None, "--save", help="Write the checkpoint (and its key) here."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Fetch the latest signed checkpoint, check its signature, and save it for a later `verify`."""
    try:
        with AuditClient(url, token) as client:
            saved = fetch_checkpoint(client)
    except (AuditClientError, VerificationFailed) as exc:
        raise _fail(str(exc)) from exc
    if save is None:
        typer.echo(json.dumps(asdict(saved), indent=2))
        return
    saved.save(save)
    console.print(f"saved checkpoint of {saved.tree_size} entries ({saved.origin}) to {save}")
    console.print(f"signed with {saved.verifier_key}: compare this key with the one published out of band")


@app.command()
def verify(
    saved_path: Path = typer.Option(..., "--checkpoint", help="A checkpoint saved by `checkpoint --save`."),
    entry: int | None = typer.Option(None, "--entry", min=0, help="Also prove this entry is in the log."),
    all_entries: bool = typer.Option(False, "--all-entries", help="Recompute the root from every entry."),
    key: str | None = typer.Option(None, "--key", help="Verifier key (default: the one saved)."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Check the live log against a checkpoint saved earlier: signatures, consistency, entries."""
    try:
        saved = SavedCheckpoint.load(saved_path)
        with (
            AuditClient(url, token) as client,
            Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
                transient=True,
                disable=not all_entries,
            ) as bar,
        ):
            task = bar.add_task("hashing entries", total=None)
            done = verify_log(
                client,
                saved,
                key,
                entry=entry,
                all_entries=all_entries,
                progress=lambda n, total: bar.update(task, completed=n, total=total),
            )
    except (AuditClientError, VerificationFailed) as exc:
        raise _fail(str(exc)) from exc
    for line in done:
        console.print(f"  [green]ok[/] {line}")
    console.print("[bold green]verified[/]: the log is consistent with the saved checkpoint")


@app.command()
def export(
    out: Path = typer.Option(..., "--out", help="CSV file to write."),
    actor: str | None = typer.Option(None, "--actor"),
    dossier: str | None = typer.Option(None, "--dossier"),
    event_type: str | None = typer.Option(None, "--type"),
    since: str | None = typer.Option(None, "--from", help="Event time, ISO 8601, inclusive."),
    until: str | None = typer.Option(None, "--to", help="Event time, ISO 8601, exclusive."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Export entries (all, or those matching the filters) to CSV, leaf bytes included (base64)."""
    filters = _filters(actor=actor, dossier=dossier, type=event_type, **{"from": since, "to": until})
    written = 0
    try:
        with AuditClient(url, token) as client, out.open("w", newline="", encoding="utf-8") as handle:
            last = client.last_index(**filters)
            total = last + 1 if last is not None and not filters else None
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as bar:
                task = bar.add_task("exporting entries", total=total)
                for item in client.iter_entries(**filters):
                    if last is not None and item["index"] > last:
                        break  # appended after the export started
                    writer.writerow(item | {"sections": ";".join(item.get("sections") or [])})
                    written += 1
                    bar.update(task, completed=written)
    except (AuditClientError, OSError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"exported {written} entries to {out}")


@app.command()
def tail(
    from_index: int | None = typer.Option(None, "--from-index", min=0, help="Start here (default: now)."),
    actor: str | None = typer.Option(None, "--actor"),
    event_type: str | None = typer.Option(None, "--type"),
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="Seconds between polls."),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after this many entries."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Follow new entries as they are appended (Ctrl-C stops)."""
    filters = _filters(actor=actor, type=event_type)
    shown = 0
    try:
        with AuditClient(url, token) as client:
            if from_index is not None:
                cursor = str(from_index - 1) if from_index > 0 else None
            else:
                last = client.last_index()
                cursor = str(last) if last is not None else None
            start = int(cursor) + 1 if cursor is not None else 0
            console.print(f"[dim]following entries from index {start} (Ctrl-C stops)[/]")
            while count is None or shown < count:
                page = client.page(cursor, **filters)
                for item in page["items"][: None if count is None else count - shown]:
                    console.print(_line(item))
                    shown += 1
                if page["items"]:
                    cursor = str(page["items"][-1]["index"])
                else:
                    time.sleep(interval)
    except AuditClientError as exc:
        raise _fail(str(exc)) from exc
    except KeyboardInterrupt:
        pass


def _line(item: dict[str, Any]) -> str:
    outcome = escape(" ".join(str(item[k]) for k in ("decision", "reason", "motif") if item.get(k)))
    who, what = escape(str(item.get("actor") or "-")), escape(str(item["subject"]))
    return f"[cyan]{item['index']:>8}[/] {item['time']} [bold]{item['type']}[/] {who} -> {what} {outcome}"


@app.command()
def purge(
    older_than_days: int | None = typer.Option(
        None, "--older-than-days", min=1, help="Default: CDAP_RETENTION_DAYS (3 years)."
    ),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Retention: delete entries older than the period (nodes and checkpoints stay: proofs still work)."""
    from cdap_audit.config import Settings
    from cdap_audit.partitions import purge as run_purge
    from cdap_shared.db import create_engine

    settings = Settings()
    days = older_than_days or settings.retention_days
    cutoff = datetime.now(UTC) - timedelta(days=days)
    if not yes:
        typer.confirm(f"Delete audit entries recorded before {cutoff:%Y-%m-%d %H:%M} UTC?", abort=True)

    async def run() -> Any:
        engine = create_engine(settings.database_url, 1)
        try:
            return await run_purge(engine, cutoff)
        finally:
            await engine.dispose()

    try:
        result = asyncio.run(run())
    except Exception as exc:
        raise _fail(f"purge failed: {type(exc).__name__}: {exc}") from exc
    console.print(
        f"purged {result.deleted_rows} entries and {len(result.dropped_partitions)} monthly partitions "
        f"recorded before {cutoff:%Y-%m-%d}"
    )


@app.command()
def keygen(name: str = typer.Option("cdap.audit", "--name", help="Key name, usually the origin.")) -> None:
    """Make a checkpoint signing key: set the first line as CDAP_AUDIT_SIGNING_KEY, publish the second."""
    try:
        signer = NoteSigner.generate(name)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(signer.signer_key)
    typer.echo(signer.verifier_key)
