"""A service under pyinstrument: `python -m bench.profile_server <module> <port> <out-stem>` (bench only).

Runs `uvicorn --factory <module>.app:build` in this process. SIGUSR1 starts pyinstrument's statistical
profiler on the main thread (the event loop: every request, consumer and relay task), sampling every
millisecond; SIGUSR2 stops it and writes <out-stem>.txt (call tree) and <out-stem>.html (interactive).
bench/lookup sends them around a wrk run, so start-up and shutdown are not in the profile.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import uvicorn
from pyinstrument import Profiler


def main() -> None:
    module, port, stem = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    profiler = Profiler(interval=0.001, async_mode="disabled")

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.stop()
        stem.with_suffix(".txt").write_text(profiler.output_text(unicode=True, color=False, show_all=False))
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
