"""PNG plots of the load sweeps in bench/results/*.json (matplotlib, Agg backend: no display needed).

- lookup-load.png: lookups/s and p50/p99 latency against wrk connections, CDAP and the floor;
- lookup-replicas.png: lookups/s with one and two replicas of the dossiers service.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import RESULTS


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _saved(fig: Any, data: dict[str, Any], name: str) -> Path:
    """`fig`, stamped with the run's machine and commit, written to bench/results/`name` and closed."""
    _stamp(fig, data)
    fig.tight_layout()
    path = RESULTS / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stamp(fig: Any, data: dict[str, Any]) -> None:
    m = data["machine"]
    fig.text(
        0.99,
        0.01,
        f"{m['date']} · {m['cores']} cores, shared · commit {m['commit']}",
        ha="right",
        va="bottom",
        fontsize=7,
        color="grey",
    )


def lookup_load(data: dict[str, Any]) -> Path | None:
    sweep = data.get("sweep")
    if not sweep:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, color in (("cdap", "#4c72b0"), ("floor", "#dd8452")):
        points = sweep.get(name, [])
        if not points:
            continue
        x = [p["connections"] for p in points]
        label = "CDAP lookup" if name == "cdap" else "floor (SELECT + INSERT)"
        left.plot(x, [p["requests_per_s"] for p in points], "-o", color=color, label=label)
        right.plot(x, [p["p50_ms"] for p in points], "-o", color=color, label=f"{label} p50")
        right.plot(x, [p["p99_ms"] for p in points], "--^", color=color, alpha=0.6, label=f"{label} p99")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("concurrent connections (wrk, closed loop)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("lookups/s")
    left.set_title("GET /v1/dossiers/{numero}: throughput")
    right.set_ylabel("latency (ms)")
    right.set_yscale("log")
    right.set_title("latency")
    return _saved(fig, data, "lookup-load.png")


def lookup_replicas(data: dict[str, Any]) -> Path | None:
    replicas = data.get("replicas")
    if not replicas:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    labels = ["1 replica", "2 replicas"]
    values = [replicas["one"]["requests_per_s"], replicas["two"]["requests_per_s"]]
    bars = ax.bar(labels, values, color=["#4c72b0", "#55a868"])
    ax.bar_label(bars, fmt="%.0f")
    ax.set_ylabel("lookups/s (wrk, 2 x 25 connections)")
    ax.set_title(f"dossiers replicas: x{replicas['ratio']:.2f}")
    ax.grid(True, axis="y", alpha=0.3)
    return _saved(fig, data, "lookup-replicas.png")


def render_all() -> list[Path]:
    out = []
    lookup = _load("lookup")
    if lookup:
        out += [p for p in (lookup_load(lookup), lookup_replicas(lookup)) if p]
    return out


if __name__ == "__main__":
    for png in render_all():
        print(png)
