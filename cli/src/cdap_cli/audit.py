"""`cdap audit ...` commands: save and verify checkpoints, export and follow the log, retention, keys.

They speak to the audit service's HTTP API (`cdap_audit.client`), as an outside auditor would; only
`purge` works on the database directly (an operator's retention job, `cdap_audit.partitions.purge`).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from cdap_audit.client import DEFAULT_URL, AuditClient, AuditClientError
from cdap_audit.schemas import EntryItem
from cdap_audit.verify import SavedCheckpoint, fetch_checkpoint, parse_witness_key, verify_log
from cdap_shared.tlog.checkpoint import Cosigner, CosignerVerifier, NoteSigner
from cdap_shared.tlog.verify import VerificationFailed, parse_key

app = typer.Typer(help="The audit log: checkpoints, verification, export.", no_args_is_help=True)
console = Console(highlight=False)

URL = typer.Option(DEFAULT_URL, "--url", envvar="CDAP_AUDIT_URL", help="The audit service.")
TOKEN = typer.Option(None, "--token", envvar="CDAP_TOKEN", help="An auditor's access token.")
WITNESS_KEYS = typer.Option(
    [], "--witness-key", help="Require this witness's cosignature (<name>+<id>+<key>; repeatable)."
)
WITNESS_WAIT = typer.Option(
    10.0, "--witness-wait", min=0, help="Seconds to wait for the witnesses to cosign the latest tree."
)
# The CSV's columns are the API's entry fields, names included (one list: `EntryItem`).
CSV_FIELDS = list(EntryItem.model_fields)


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]FAILED[/]: {message}")
    return typer.Exit(1)


def _filters(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@contextmanager
def _witnessed_log(
    url: str, token: str | None, witness_keys: list[str]
) -> Iterator[tuple[AuditClient, list[CosignerVerifier]]]:
    """The audit service's client and the keys of the witnesses whose cosignatures the command requires;
    a failed call or check inside ends the command with FAILED."""
    try:
        witnesses = [parse_witness_key(k) for k in witness_keys]
        with AuditClient(url, token) as client:
            yield client, witnesses
    except (AuditClientError, VerificationFailed) as exc:
        raise _fail(str(exc)) from exc


@app.command()
def checkpoint(
    save: Path | None = typer.Option(None, "--save", help="Write the checkpoint (and its key) here."),
    witness_keys: list[str] = WITNESS_KEYS,
    witness_wait: float = WITNESS_WAIT,
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Fetch the latest signed checkpoint, check its signature, and save it for a later `verify`."""
    with _witnessed_log(url, token, witness_keys) as (client, witnesses):
        saved = fetch_checkpoint(client, witnesses, witness_wait)
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
    witness_keys: list[str] = WITNESS_KEYS,
    witness_wait: float = WITNESS_WAIT,
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Check the live log against a checkpoint saved earlier: signatures, consistency, entries."""
    with (
        _witnessed_log(url, token, witness_keys) as (client, witnesses),
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
            disable=not all_entries,
        ) as bar,
    ):
        saved = SavedCheckpoint.load(saved_path)
        task = bar.add_task("hashing entries", total=None)
        done = verify_log(
            client,
            saved,
            key,
            entry=entry,
            all_entries=all_entries,
            progress=lambda n, total: bar.update(task, completed=n, total=total),
            witnesses=witnesses,
            witness_wait=witness_wait,
        )
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
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after this many entries."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Follow new entries as they are appended, from the live stream (Ctrl-C stops)."""
    filters = _filters(actor=actor, type=event_type)
    try:
        with AuditClient(url, token) as client:
            if from_index is None:
                last = client.last_index()
                from_index = last + 1 if last is not None else 0
            console.print(f"[dim]following entries from index {from_index} (Ctrl-C stops)[/]")
            for shown, item in enumerate(client.follow(from_index, **filters), start=1):
                console.print(_line(item))
                if shown == count:
                    break
    except AuditClientError as exc:
        raise _fail(str(exc)) from exc
    except KeyboardInterrupt:
        pass


def _line(item: dict[str, Any]) -> str:
    """One entry as a person reads it: names from audit's directory, the id when it knows none."""
    outcome = escape(" ".join(str(item[k]) for k in ("decision", "reason", "motif") if item.get(k)))
    who = escape(str(item.get("actor_name") or item.get("actor") or "-"))
    organisation = item.get("organisation_name") or item.get("organisation_id")
    if organisation:
        who += f" ({escape(str(organisation))})"
    what = escape(str(item["subject"]))
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
def keygen(
    name: str = typer.Option("cdap.audit", "--name", help="Key name: the origin, or the witness's name."),
    witness: bool = typer.Option(False, "--witness", help="A witness's cosigning key (type 0x04)."),
) -> None:
    """Make a key: the private key (first line, keep it secret) and its verifier key (second, publish it).

    Without --witness, a checkpoint signing key: set it as CDAP_AUDIT_SIGNING_KEY or in the file of
    CDAP_AUDIT_SIGNING_KEY_FILE. With --witness, a cosigning key for `cdap audit witness`; its verifier
    key goes into the audit service's CDAP_AUDIT_WITNESS_KEYS and to auditors' `verify --witness-key`.
    """
    try:
        signer = Cosigner.generate(name) if witness else NoteSigner.generate(name)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(signer.signer_key)
    typer.echo(signer.verifier.key)


@app.command("witness")
def witness_command(
    log_key: str = typer.Option(
        ..., "--log-key", help="The log's checkpoint verifier key, obtained out of band."
    ),
    state: Path = typer.Option(
        Path("witness-state.json"), "--state", help="Where the witness keeps its state."
    ),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="File holding the witness key (default: CDAP_WITNESS_KEY)."
    ),
    interval: float = typer.Option(5.0, "--interval", min=0.1, help="Seconds between rounds."),
    once: bool = typer.Option(False, "--once", help="One round; exit 1 if it did not cosign."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Witness the log: cosign each checkpoint that extends the last one cosigned, refuse any other."""
    from cdap_audit.witness import Witness
    from cdap_shared.telemetry import configure_logging

    configure_logging("audit-witness")
    try:
        secret = (
            key_file.read_text(encoding="utf-8").strip() if key_file else os.environ.get("CDAP_WITNESS_KEY")
        )
        if not secret:
            raise ValueError("no witness key: pass --key-file or set CDAP_WITNESS_KEY")
        cosigner = Cosigner.from_key(secret)
        log_verifier = parse_key(log_key)
    except (OSError, ValueError, VerificationFailed) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"witness {cosigner.verifier.key} following {url}")
    try:
        with AuditClient(url, token) as client:
            cosigned = Witness(client, cosigner, log_verifier, state).run(interval, once)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    except KeyboardInterrupt:
        return
    if not cosigned:
        raise typer.Exit(1)
