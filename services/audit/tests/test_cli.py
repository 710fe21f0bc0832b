"""`cdap audit ...` run as a user would (a subprocess) against the service served over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from cdap_testing import eventually

from .conftest import Audit, consulted, serve, suspended

pytestmark = pytest.mark.stack

CDAP = str(Path(sys.executable).with_name("cdap"))


async def cdap(*args: str, token: str | None = None) -> tuple[int, str]:
    env = dict(os.environ, COLUMNS="200") | ({"CDAP_TOKEN": token} if token else {})
    proc = await asyncio.create_subprocess_exec(
        CDAP, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def grow_to(audit: Audit, n: int, start: int = 0) -> None:
    """Publish events until the log has `n` entries and a checkpoint covers them."""
    await audit.publish(*[consulted(f"u{i % 4}", f"{3000000 + i}") for i in range(start, n)])
    await eventually(lambda: _signed(audit, n), within=30)


async def _signed(audit: Audit, n: int) -> bool:
    response = await audit.client.get(
        "/v1/checkpoints/latest", headers=audit.headers() | {"Accept": "application/json"}
    )
    return response.status_code == 200 and response.json()["tree_size"] == n


def token(audit: Audit) -> str:
    return audit.minter.mint("auditor-1", roles=["auditor"])


async def verify(url: str, saved: Path, tok: str, *extra: str) -> tuple[int, str]:
    return await cdap("audit", "verify", "--checkpoint", str(saved), "--url", url, "--token", tok, *extra)


def rewritten_leaf(raw: bytes, **changes: Any) -> bytes:
    document = json.loads(raw) | changes
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


async def test_verify_passes_on_an_honest_log_and_catches_a_changed_entry(
    audit: Audit, tmp_path: Path
) -> None:
    saved = tmp_path / "saved.json"
    await grow_to(audit, 20)
    async with serve(audit.app) as url:
        code, out = await cdap("audit", "checkpoint", "--save", str(saved), "--url", url, token=token(audit))
        assert code == 0, out
        assert json.loads(saved.read_text())["tree_size"] == 20
        await grow_to(audit, 27, start=20)

        code, out = await verify(url, saved, token(audit), "--entry", "3", "--all-entries")
        assert code == 0, out
        assert "verified" in out and "consistency proof" in out and "all 27 entries" in out

        # An intruder changes a column, leaving the hashed bytes alone.
        [honest] = await audit.sql("SELECT actor FROM entry WHERE leaf_index = 3")
        await audit.sql("UPDATE entry SET actor = 'mallory' WHERE leaf_index = 3")
        code, out = await verify(url, saved, token(audit), "--entry", "3")
        assert code == 1 and "entry 3 was altered" in out and "mallory" in out, out
        code, out = await verify(url, saved, token(audit), "--all-entries")
        assert code == 1 and "entry 3 was altered" in out, out

        # A more careful one rewrites the bytes and the columns together.
        [row] = await audit.sql("SELECT leaf FROM entry WHERE leaf_index = 5")
        forged = rewritten_leaf(bytes(row["leaf"]), actor="mallory")
        await audit.sql("UPDATE entry SET leaf = $1, actor = 'mallory' WHERE leaf_index = 5", forged)
        item = await audit.get("/v1/entries/5")
        assert base64.b64decode(item["leaf"]) == forged and item["actor"] == "mallory"
        code, out = await verify(url, saved, token(audit), "--entry", "5")
        assert code == 1 and "entry 5 was altered: its bytes are not in the signed tree" in out, out
        await audit.sql(
            "UPDATE entry SET actor = $1 WHERE leaf_index = 3", honest["actor"]
        )  # only 5 is wrong
        code, out = await verify(url, saved, token(audit), "--all-entries")
        assert code == 1 and "differs from the signed root" in out, out


async def test_verify_detects_a_truncated_log(audit: Audit, tmp_path: Path) -> None:
    saved = tmp_path / "saved.json"
    await grow_to(audit, 30)
    async with serve(audit.app) as url:
        code, out = await cdap("audit", "checkpoint", "--save", str(saved), "--url", url, token=token(audit))
        assert code == 0, out

        # Entries deleted, tree left alone: the entry checks see the hole.
        await audit.sql("DELETE FROM entry WHERE leaf_index >= 28")
        code, out = await verify(url, saved, token(audit), "--all-entries")
        assert code == 1 and "entries are missing: 28 served for a signed tree of 30" in out, out

        # The whole log rolled back to 20 entries (rows, nodes, size, later checkpoints).
        await audit.roll_back(20)
        await eventually(lambda: _signed(audit, 20))  # the service signs what it now holds
        code, out = await verify(url, saved, token(audit))
        assert code == 1 and "the log was truncated: 20 entries now, 30 when saved" in out, out

        # ... and grown again past the saved size: history differs, the consistency proof fails.
        await grow_to(audit, 35, start=20)
        code, out = await verify(url, saved, token(audit))
        assert code == 1 and "the log was rewritten" in out, out


async def test_verify_refuses_another_key_and_says_why(audit: Audit, tmp_path: Path) -> None:
    saved = tmp_path / "saved.json"
    await grow_to(audit, 3)
    async with serve(audit.app) as url:
        code, out = await cdap("audit", "checkpoint", "--save", str(saved), "--url", url, token=token(audit))
        assert code == 0, out
        code, out = await cdap("audit", "keygen", "--name", "someone.else")
        other_key = out.splitlines()[1]
        code, out = await verify(url, saved, token(audit), "--key", other_key)
        assert code == 1 and "not signed by key" in out, out
        code, out = await cdap("audit", "verify", "--checkpoint", str(saved), "--url", url)
        assert code == 1 and "auditor's token" in out, out
        code, out = await verify("http://127.0.0.1:1", saved, token(audit))
        assert code == 1 and "cannot reach the audit service" in out, out


async def test_export_and_tail(audit: Audit, tmp_path: Path) -> None:
    await grow_to(audit, 12)
    out_file = tmp_path / "log.csv"
    async with serve(audit.app) as url:
        code, out = await cdap("audit", "export", "--out", str(out_file), "--url", url, token=token(audit))
        assert code == 0 and "exported 12 entries" in out, out
        rows = list(csv.DictReader(out_file.open()))
        assert [int(r["index"]) for r in rows] == list(range(12))
        assert rows[0]["leaf"] and rows[0]["type"] == "dossier.consulted"
        assert {"actor_name", "organisation_name"} <= rows[0].keys()

        # Names from audit's directory where it knows them (the consultations' actors and org-1).
        for n in range(4):
            await audit.sql(f"INSERT INTO person (user_id, display_name) VALUES ('u{n}', 'Agent {n}')")
        await audit.sql(
            "INSERT INTO known_organisation (organisation_id, name, department) "
            "VALUES ('org-1', 'CCAS de Rouen', '76')"
        )
        code, out = await cdap(
            "audit", "tail", "--from-index", "10", "--count", "2", "--url", url, token=token(audit)
        )
        assert code == 0 and out.count("dossier.consulted") == 2 and "      10 " in out, out
        assert out.count(" (CCAS de Rouen) -> 30000") == 2 and out.count("dossier.consulted Agent ") == 2, out

        # Following from the end: publish once the command says where it starts.
        proc = await asyncio.create_subprocess_exec(
            CDAP,
            "audit",
            "tail",
            "--count",
            "2",
            "--url",
            url,
            "--token",
            token(audit),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        first_line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert "following entries from index 12" in first_line, first_line
        await audit.publish(suspended("newcomer"), suspended("another"))
        rest = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert await proc.wait() == 0
        assert rest.count("identity.user.suspended") == 2 and "dossier.consulted" not in rest, rest
        assert rest.count("admin-1 ->") == 2, rest  # an actor the directory does not know: its id
