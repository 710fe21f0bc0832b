"""The outbox relay in a process of its own, started and watched by the service process.

A service whose event loop should serve HTTP alone (dossiers: the relay's batches took about a tenth of
the lookup process's CPU, and a batch of 500 rows holds the loop for milliseconds) sets
`CDAP_OUTBOX_RELAY_PROCESS`: `ServiceRuntime` then runs `RelayProcess`, which starts
`python -m cdap_shared.relay_process` with the service's own settings and restarts it when it dies.
Whatever starts the service (`make run`, the image, the test harness) therefore starts its relay too.

- the child publishes exactly as the in-process relay does (`OutboxRelay`, the same advisory lock:
  with several replicas one relay publishes, the others stand by);
- a relay that exits is logged as an error, turns `/ready` to 503 until it runs again, and is started
  again after `RESTART_DELAY` seconds;
- the child stops when the service asks (SIGTERM) and when the service is gone, even SIGKILLed: its
  standard input is a pipe from the service, and end of file stops it;
- it reports what it published on a pipe, once a second, so the service's `/metrics` keeps
  `cdap_outbox_published_total`;
- the rows the service commits with `outbox.add_pg` or `outbox.GroupAppend` (the lookups') wake it
  through another pipe (`WakeLine`), so it claims them at once rather than at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mmap
import os
import signal
import sys

import structlog
from pydantic import SecretStr

from cdap_shared.db import asyncpg_dsn
from cdap_shared.http import NotReady
from cdap_shared.outbox import waking
from cdap_shared.relay import PUBLISHED, OutboxRelay
from cdap_shared.settings import ServiceSettings
from cdap_shared.telemetry import configure_logging, configure_tracing

log = structlog.get_logger(__name__)

RESTART_DELAY = 1.0
REPORT_EVERY = 1.0


class RelayNotRunning(NotReady):
    """The relay process is not running (`/ready` shows this text)."""


class RelayProcess:
    """Runs the service's relay as a child process; `run()` until `stop()`."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.process: asyncio.subprocess.Process | None = None
        self.exits = 0  # how many times the child died without being asked to stop
        self.restart_delay = RESTART_DELAY
        self._stopping = asyncio.Event()

    def _environment(self) -> dict[str, str]:
        """The child's settings: every field of `ServiceSettings` (the class the child reads), as this
        process resolved them (a test may build them in code rather than from the environment)."""
        env = dict(os.environ)
        prefix = ServiceSettings.model_config.get("env_prefix", "")
        for name in ServiceSettings.model_fields:
            key, value = f"{prefix}{name}".upper(), getattr(self.settings, name)
            if value is None:
                env.pop(key, None)
            elif isinstance(value, SecretStr):
                env[key] = value.get_secret_value()
            elif isinstance(value, list):  # `trusted_proxies`: comma-separated, as the settings read it
                env[key] = ",".join(map(str, value))
            else:
                env[key] = str(value)
        return env

    async def run(self) -> None:
        """Start the child, and start it again whenever it dies, until `stop()`."""
        while not self._stopping.is_set():
            read_end, write_end = os.pipe()
            line = WakeLine()
            try:
                try:
                    self.process = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "cdap_shared.relay_process",
                        str(write_end),
                        str(line.read_end),
                        str(line.pending_fd),
                        stdin=asyncio.subprocess.PIPE,
                        env=self._environment(),
                        pass_fds=(write_end, line.read_end, line.pending_fd),
                    )
                finally:
                    os.close(write_end)
                    line.close_child_ends()
                reports = asyncio.create_task(_count_reports(read_end))
                with waking(line):
                    code = await self.process.wait()
            finally:
                line.close()
            await reports
            if self._stopping.is_set():
                return
            self.exits += 1
            log.error(
                "outbox relay process exited, restarting it", exit_code=code, restart_in=self.restart_delay
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.restart_delay)

    def stop(self) -> None:
        """Ask the child to finish its batch and exit (`run()` then returns)."""
        self._stopping.set()
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    async def check(self) -> None:
        """A ready check: raises while the child is not running."""
        if self.process is None or self.process.returncode is not None:
            raise RelayNotRunning("the outbox relay process is not running")


class WakeLine:
    """How the service wakes its relay child without PostgreSQL: a pipe the child waits on, and a byte of
    memory both share, set while a wake is in flight. A commit costs the service a memory read while the
    child has not taken the last wake yet, a one-byte write otherwise; the child clears the byte before
    it claims, so a row committed after that claim began sends a new wake. The shared byte is a memfd:
    no file system needed (the images run with a read-only root)."""

    def __init__(self) -> None:
        self.pending_fd = os.memfd_create("cdap-relay-wake")
        os.ftruncate(self.pending_fd, 1)
        self.pending = mmap.mmap(self.pending_fd, 1)
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.write_end, False)

    def __call__(self) -> None:
        """Wake the child (after a commit, on the lookup's path: never raises)."""
        if self.pending[0]:
            return
        self.pending[0] = 1
        with contextlib.suppress(OSError):  # the child is gone: its successor claims as it starts
            os.write(self.write_end, b"\1")

    def close_child_ends(self) -> None:
        """Once the child has them: this process keeps only the pipe's write end and its own mapping."""
        os.close(self.read_end)
        os.close(self.pending_fd)

    def close(self) -> None:
        os.close(self.write_end)
        self.pending.close()


def _take_wakes(read_end: int, pending_fd: int, relay: OutboxRelay) -> None:
    """In the child: wake `relay` whenever the service writes to `read_end` (`WakeLine`)."""
    loop = asyncio.get_running_loop()
    pending = mmap.mmap(pending_fd, 1)
    os.set_blocking(read_end, False)

    def taken() -> None:
        with contextlib.suppress(BlockingIOError):
            if not os.read(read_end, 64):  # the service is gone (standard input says so too)
                loop.remove_reader(read_end)
                return
        pending[0] = 0  # before the claim: a row committed from now on wakes the relay again
        relay.wake()

    loop.add_reader(read_end, taken)


async def _count_reports(read_end: int) -> None:
    """Add the child's published counts (running totals per topic, one JSON line a second) to this
    process's `cdap_outbox_published_total`, until the child closes the pipe."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb")
    )
    seen: dict[str, float] = {}
    try:
        while line := await reader.readline():
            with contextlib.suppress(ValueError):
                for topic, total in json.loads(line).items():
                    PUBLISHED.labels(topic).inc(total - seen.get(topic, 0.0))
                    seen[topic] = total
    finally:
        transport.close()


def _published() -> dict[str, float]:
    return {
        sample.labels["topic"]: sample.value
        for metric in PUBLISHED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


async def _report(out: int, relay_done: asyncio.Task[None]) -> None:
    while not relay_done.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(relay_done), REPORT_EVERY)
        os.write(out, json.dumps(_published()).encode() + b"\n")


async def _serve(out: int, wakes: int, pending: int) -> None:
    settings = ServiceSettings()
    configure_logging(f"{settings.service_name}-relay", settings.log_level)
    configure_tracing(settings.service_name, settings.otlp_endpoint)
    relay = OutboxRelay(
        asyncpg_dsn(settings.database_url),
        settings.kafka_bootstrap,
        batch_size=settings.outbox_batch_size,
        poll_interval=settings.outbox_poll_interval_seconds,
        login=settings.kafka_login,
    )
    _take_wakes(wakes, pending, relay)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, relay.stop)
    loop.add_signal_handler(signal.SIGINT, relay.stop)
    # End of file on standard input: the service is gone (even SIGKILLed), so is its relay.
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    gone = asyncio.create_task(stdin.read())
    gone.add_done_callback(lambda _: relay.stop())
    running = asyncio.create_task(relay.run())
    await _report(out, running)
    gone.cancel()
    await running


def main() -> None:
    """`python -m cdap_shared.relay_process OUT WAKES PENDING`: run the relay of the service whose
    settings are in the environment, reporting its counts on file descriptor OUT, woken by the service
    through WAKES and PENDING (`WakeLine`)."""
    out, wakes, pending = (int(fd) for fd in sys.argv[1:4])
    asyncio.run(_serve(out, wakes, pending))


if __name__ == "__main__":
    main()
