"""The benchmarks call the services' own functions (audit's ledger and signing, the outbox, the relay):
nothing else runs that code before `make bench`, so a renamed function broke `bench audit_scale` unseen
(`signing.load_signer`, 2 December). mypy checks bench/ against the services as they are now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmarks_type_check_against_the_services() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "bench"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
