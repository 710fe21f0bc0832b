"""A service under pyinstrument: `python -m bench.profile_server <module> <port> <out-stem>` (bench only).

Runs `uvicorn --factory <module>.app:build` in this process. SIGUSR1 starts pyinstrument's statistical
profiler on the main thread (the event loop: every request, consumer and relay task), sampling every
millisecond; SIGUSR2 stops it and writes <out-stem>.txt (call tree) and <out-stem>.html (interactive).
bench/lookup sends them around a wrk run, so start-up and shutdown are not in the profile.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from pyinstrument import Profiler

LAYERS = (
    ("opentelemetry", "OpenTelemetry (ASGI middleware, asyncpg spans)"),
    ("asyncpg", "asyncpg (protocol, pool, transactions)"),
    ("cdap_dossiers", "CDAP dossiers code (lookup, policy, routes)"),
    ("cdap_shared", "CDAP shared code (auth, outbox, relay, consumer)"),
    ("fastapi", "FastAPI / Starlette / uvicorn (HTTP)"),
    ("starlette", "FastAPI / Starlette / uvicorn (HTTP)"),
    ("uvicorn", "FastAPI / Starlette / uvicorn (HTTP)"),
    ("h11", "FastAPI / Starlette / uvicorn (HTTP)"),
    ("httptools", "FastAPI / Starlette / uvicorn (HTTP)"),
    ("pydantic", "pydantic (validation, serialisation)"),
    ("aiokafka", "aiokafka (relay producer, consumers)"),
    ("faststream", "aiokafka (relay producer, consumers)"),
    ("jwt", "PyJWT / cryptography (token check)"),
    ("cryptography", "PyJWT / cryptography (token check)"),
    ("httpx", "httpx / httpcore (JWKS refresh)"),
    ("httpcore", "httpx / httpcore (JWKS refresh)"),
    ("structlog", "structlog / logging"),
    ("logging", "structlog / logging"),
    ("prometheus_client", "prometheus_client (metrics)"),
    ("asyncio", "asyncio event loop"),
    ("json", "json (stdlib)"),
)


def layer_of(path: str | None) -> str:
    parts = (path or "").replace("\\", "/").split("/")
    for key, name in LAYERS:
        if key in parts:
            return name
    return "other (stdlib and the rest)"


def breakdown(root: Any) -> dict[str, float]:
    """Own (self) time of every frame of the tree, summed by layer.

    pyinstrument keeps a frame's own time in synthetic `[self]` children without a file, and C
    functions (`<built-in>`) have none of their own: both count for the code that called them.
    """
    out: dict[str, float] = {}
    stack = [(root, "other (stdlib and the rest)")] if root is not None else []
    while stack:
        frame, parent = stack.pop()
        path = frame.file_path or ""
        name = parent if not path or path.startswith("<") else layer_of(path)
        children = list(frame.children)
        own = frame.time - sum(c.time for c in children)
        out[name] = out.get(name, 0.0) + max(own, 0.0)
        stack.extend((c, name) for c in children)
    return out


def main() -> None:
    module, port, stem = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    profiler = Profiler(interval=0.001, async_mode="disabled")

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        session = profiler.stop()
        layers = breakdown(session.root_frame())
        total = sum(layers.values()) or 1.0
        table = "\n".join(
            f"{name:<46} {seconds:8.3f} s {100 * seconds / total:5.1f} %"
            for name, seconds in sorted(layers.items(), key=lambda kv: -kv[1])
        )
        header = (
            "Where the samples were (own time of each frame, by the layer its code belongs to; time in C\n"
            "functions counts for the Python frame that called them):\n\n" + table + "\n\nCall tree:\n"
        )
        text = profiler.output_text(unicode=True, color=False, show_all=False)
        stem.with_suffix(".txt").write_text(header + text)
        stem.with_name(stem.name + "-layers.json").write_text(
            json.dumps({k: round(v / total, 4) for k, v in layers.items()}, indent=2)
        )
        stem.with_suffix(".html").write_text(profiler.output_html())

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    uvicorn.run(
        f"{module}.app:build",
        factory=True,
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
