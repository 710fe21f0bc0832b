"""The periodic-job helper: runs again after a failure, counts it, drains a backlog, stops cleanly."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from cdap_shared.periodic import Periodic, running


async def test_a_failed_run_is_counted_and_the_next_run_still_happens() -> None:
    runs: list[int] = []
    done = asyncio.Event()

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise ConnectionError("database away")
        done.set()

    periodic = Periodic("test-flaky", job, every=0.01)
    async with running(periodic):
        await asyncio.wait_for(done.wait(), 10)
    assert periodic.failures == 1
    assert periodic.last_success is not None
    assert REGISTRY.get_sample_value("cdap_periodic_failures_total", {"job": "test-flaky"}) == 1


async def test_stop_lets_the_run_in_progress_finish_and_ends_the_loop() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def job() -> None:
        started.set()
        await release.wait()
        finished.append(True)

    periodic = Periodic("test-slow", job, every=3600)
    periodic.start()
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(periodic.stop())
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(stopping, 10)
    assert finished == [True]


async def test_drain_runs_again_at_once_while_there_is_work() -> None:
    backlog = [3, 2, 1, 0]  # what each run finds; the period is far longer than the test

    async def job() -> int:
        return backlog.pop(0) if backlog else 0

    periodic = Periodic("test-drain", job, every=3600, drain=True)
    async with running(periodic):
        for _ in range(100):
            if not backlog:
                break
            await asyncio.sleep(0.01)
    assert backlog == []


async def test_a_job_without_grace_is_cut_short_at_stop() -> None:
    started, never = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def sample() -> None:
        started.set()
        await never.wait()  # a read that hangs (a broker gone away)
        finished.append(True)

    periodic = Periodic("test-sample", sample, every=3600, grace=0)
    periodic.start()
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(periodic.stop(), 10)
    assert finished == []
