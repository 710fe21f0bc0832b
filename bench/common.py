"""What every benchmark shares: throw-away databases and topics, percentiles, result files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

import cdap_testing as testing
from cdap_cli.topics import ensure_topics
from cdap_shared.envelope import new_event_id
from cdap_shared.kafka_access import TEST, export_login

# Benchmarks make their own topics and groups, as tests do: they log in as the test principal.
export_login(TEST)

RESULTS = Path(__file__).with_name("results")
KAFKA = os.environ.get("CDAP_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
ADMIN_DSN = os.environ.get("CDAP_BENCH_ADMIN_DSN", "postgresql://cdap:cdap@127.0.0.1:5432/postgres")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def database_url(name: str, driver: str = "postgresql+asyncpg") -> str:
    """The URL of database `name` on the benchmarks' server, for `driver` (SQLAlchemy's by default)."""
    return ADMIN_DSN.replace("postgresql://", f"{driver}://").rsplit("/", 1)[0] + f"/{name}"


async def fresh_database(prefix: str) -> str:
    """A new empty database; returns its SQLAlchemy asyncpg URL."""
    name = f"bench_{prefix}_{new_event_id().replace('-', '')[-10:]}"
    await testing.create_database(ADMIN_DSN, name)
    return database_url(name)


def start_floor(port: int, dsn: str) -> subprocess.Popen[bytes]:
    """The floor (bench/floor_app.py: one SELECT and one INSERT with asyncpg) on `port`, on the database at
    `dsn` (a libpq URL)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.floor_app:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env={**os.environ, "BENCH_FLOOR_DSN": dsn},
        cwd=Path(__file__).resolve().parents[1],
    )


async def wait_until_answering(url: str, attempts: int) -> None:
    """Poll `url` every 0.2 s until it answers 200, at most `attempts` times (a slow start is not fatal:
    the run that follows says what went wrong)."""
    async with httpx.AsyncClient() as client:
        for _ in range(attempts):
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await testing.drop_database(conn, name)
    finally:
        await conn.close()


async def fresh_topic(base: str, partitions: int = 6) -> str:
    name = f"bench.{base}.{new_event_id().replace('-', '')[-10:]}"
    await ensure_topics(KAFKA, [name, f"{name}.dlq"], partitions=partitions)
    return name


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_1min": round(os.getloadavg()[0], 2),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **result}, indent=2) + "\n")
    return path


def run_wrk(url: str, lua: str, seconds: int, connections: int) -> dict[str, float]:
    """Run wrk (2 threads) with a Lua `request` script; requests/s, p50/p99 in ms, totals."""
    import re
    import tempfile

    script = Path(tempfile.mkdtemp()) / "bench.lua"
    script.write_text(lua)
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(p: str) -> float:
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert rps and total, out
    return {
        "requests_per_s": float(rps.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": int(total.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


class KeepAliveClient:
    """HTTP/1.1 GETs over a fixed set of keep-alive connections, without httpx's per-request machinery:
    at 500 lookups/s httpx alone took the benchmark process's whole core and capped the offered rate."""

    def __init__(self, url: str, connections: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.connections = connections
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def __aenter__(self) -> KeepAliveClient:
        for _ in range(self.connections):
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        while not self.idle.empty():
            self.idle.get_nowait()[1].close()

    async def get(self, target: str, headers: dict[str, str]) -> int:
        """GET `target` (path and query) and read the whole answer; its status code."""
        reader, writer = await self.idle.get()
        try:
            lines = [
                f"GET {target} HTTP/1.1",
                f"Host: {self.host}",
                *(f"{k}: {v}" for k, v in headers.items()),
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            writer.close()  # a broken connection is replaced, then the failure reported
            reader, writer = await asyncio.open_connection(self.host, self.port)
            raise
        finally:
            self.idle.put_nowait((reader, writer))
        return status
