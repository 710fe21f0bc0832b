"""`make bench` / `python -m bench [names...] [--quick] [--reseed]`: run benchmarks, write
bench/results/<name>.json and the plots, and rewrite docs/benchmarks.md from every result file present.

`BENCH_QUICK=1 make bench` (or `--quick`) runs everything small and short, to check the benchmarks
themselves: results go to <name>-quick.json (not tracked) and the docs are left alone.
`BENCH_RESEED=1` (or `--reseed`) reloads the 10,000,000-entry audit log (about 15 minutes)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from bench import plots
from bench.common import RESULTS, write_result

BENCHMARKS = ("outbox", "lookup", "identity", "audit", "audit_scale", "access")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
console = Console()


async def _run(name: str, quick: bool, **options: Any) -> dict[str, Any]:
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

        result: dict[str, Any] = await module.run(report, quick=quick, **options)
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
        "Conditions: a 2-core virtual machine shared with other people's test runs while these numbers were",
        "taken; PostgreSQL, Kafka, the load generator (wrk or a Python client) and the service under test",
        "all run on those two cores. Read the ratios; absolute figures are a lower bound of what the code",
        "does on a quiet machine. Each section says when it finished, at which commit (the working tree",
        "was shared with other engineers, so HEAD moved between sections), and the 1-minute load average.",
        "",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        if path.stem.endswith("-quick"):
            continue
        data = json.loads(path.read_text())
        if not {"benchmark", "machine", "cdap", "baseline"} <= data.keys():
            continue  # another tool's file in bench/results
        m = data["machine"]
        cdap_label, base_label = data.get("columns", ["CDAP", "baseline"])
        load = f", load average {m['load_1min']} when it finished" if "load_1min" in m else ""
        took = f", took {data['duration_s']:.0f} s" if "duration_s" in data else ""
        lines += [
            f"## {data['benchmark']}",
            "",
            data.get("description", ""),
            "",
            f"Measured {m['date']} on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
            f"Python {m['python']}, commit {m['commit']}{load}{took}.",
            "",
            f"| metric | {cdap_label} | {base_label} | ratio ({cdap_label} / {base_label}) | target |",
            "| --- | --- | --- | --- | --- |",
        ]
        cdap, base, ratios, targets = (
            data["cdap"],
            data["baseline"],
            data.get("ratios", {}),
            data.get("targets", {}),
        )
        used: set[str] = set()
        for key, value in cdap.items():
            # A ratio named like its metric goes on that row; one named by a prefix ("throughput") goes on
            # the first row it prefixes only.
            match = (
                key
                if key in ratios
                else next((k for k in ratios if k not in used and key.startswith(k)), None)
            )
            used.add(match or "")
            ratio = ratios.get(match, "") if match else ""
            target = next((str(v) for k, v in targets.items() if key.startswith(k.split("_at_")[0])), "")
            lines.append(f"| {key} | {value} | {base.get(key, '')} | {ratio} | {target} |")
        notes = data.get("notes")
        if notes:
            lines += ["", notes]
        for png in data.get("plots", []):
            lines += ["", f"![{png}](../bench/results/{png})"]
        lines.append("")
    analysis = Path(__file__).with_name("ANALYSIS.md")
    if analysis.exists():
        lines += [analysis.read_text()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"some of {', '.join(BENCHMARKS)} (default: all, in that order)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help="small sizes and short runs, to check the benchmarks themselves (also BENCH_QUICK=1); "
        "results go to <name>-quick.json and are not rendered",
    )
    parser.add_argument(
        "--reseed",
        action="store_true",
        default=os.environ.get("BENCH_RESEED", "") not in ("", "0"),
        help="reload the 10,000,000-entry audit log even if it is there (also BENCH_RESEED=1)",
    )
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}"
        )
    started = time.perf_counter()
    for name in args.names or BENCHMARKS:
        console.print(f"[bold]bench/{name}[/bold]")
        options = {"reseed": args.reseed} if name == "audit_scale" else {}
        t0 = time.perf_counter()
        result = asyncio.run(_run(name, args.quick, **options))
        result["duration_s"] = round(time.perf_counter() - t0, 1)
        path = write_result(name if not args.quick else f"{name}-quick", result)
        console.print(f"  -> {path} ({result['duration_s']:.0f} s)")
        console.print_json(json.dumps({k: result[k] for k in ("cdap", "baseline", "ratios") if k in result}))
    if not args.quick:
        for png in plots.render_all():
            console.print(f"plot: {png}")
        DOCS.write_text(render_summary())
        console.print(f"summary: {DOCS}")
    console.print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
