"""`make bench` / `python -m bench [names...] [--quick]`: run benchmarks, write bench/results/<name>.json,
and rewrite the summary in docs/benchmarks.md from every result file present."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from bench.common import RESULTS, write_result

BENCHMARKS = ("outbox", "lookup", "identity", "audit", "access")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
console = Console()


async def _run(name: str, quick: bool) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{name}")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def report(phase: str, fraction: float) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=1.0)
            progress.update(tasks[phase], completed=min(fraction, 1.0))

        result: dict[str, Any] = await module.run(report, quick=quick)
        for task in tasks.values():
            progress.update(task, completed=1.0)
    return result


def render_summary() -> str:
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`python -m bench`); raw numbers in `bench/results/*.json`. Each benchmark",
        "measures CDAP and a baseline in the same run on the same machine, and reports their ratio: these",
        "machines are noisy, so absolute numbers vary from run to run more than ratios do.",
        "",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        m = data["machine"]
        lines += [
            f"## {data['benchmark']}",
            "",
            data.get("description", ""),
            "",
            f"Measured {m['date']} on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
            f"Python {m['python']}, commit {m['commit']}.",
            "",
            "| metric | CDAP | baseline | ratio (CDAP / baseline) | target |",
            "| --- | --- | --- | --- | --- |",
        ]
        cdap, base, ratios, targets = (
            data["cdap"],
            data["baseline"],
            data.get("ratios", {}),
            data.get("targets", {}),
        )
        for key, value in cdap.items():
            ratio = next((str(v) for k, v in ratios.items() if key.startswith(k) or k in key), "")
            target = next((str(v) for k, v in targets.items() if key.startswith(k.split("_at_")[0])), "")
            lines.append(f"| {key} | {value} | {base.get(key, '')} | {ratio} | {target} |")
        notes = data.get("notes")
        if notes:
            lines += ["", notes]
        lines.append("")
    analysis = Path(__file__).with_name("ANALYSIS.md")
    if analysis.exists():
        lines += [analysis.read_text()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []][0 : len(BENCHMARKS)] or None)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the benchmark itself")
    args = parser.parse_args()
    for name in args.names or BENCHMARKS:
        console.print(f"[bold]bench/{name}[/bold]")
        result = asyncio.run(_run(name, args.quick))
        path = write_result(name if not args.quick else f"{name}-quick", result)
        console.print(f"  -> {path}")
        console.print_json(json.dumps({k: result[k] for k in ("cdap", "baseline", "ratios") if k in result}))
    DOCS.write_text(render_summary())
    console.print(f"summary: {DOCS}")


if __name__ == "__main__":
    main()
