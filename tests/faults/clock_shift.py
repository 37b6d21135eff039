"""Run uvicorn with the process's wall clock shifted, and step it while it runs (a clock jump).

``python -m tests.faults.clock_shift <uvicorn arguments>`` is ``python -m uvicorn <arguments>``,
except that ``time.time()`` returns the real time plus an offset read from the file named by
``FAULTS_CLOCK_FILE`` (seconds, may be negative; no file or no variable: 0). The file is read at
start and again on ``SIGUSR1``, so a harness steps the clock of a *running* service by writing a
new offset and sending the signal, the way an NTP step or an operator's ``date -s`` moves a
server's clock. After each read the applied offset is written to ``<file>.ack``.

This is the process-level equivalent of libfaketime: nothing in the services changes. It works for
them because their only wall clock is :class:`services.clock.SystemClock`, which calls
``time.time()`` at every read. Monotonic time (asyncio, timeouts, httpx) does not move; neither
does it on a real machine when the wall clock is stepped.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

__all__ = ["CLOCK_FILE_ENV", "ack_path", "install", "main"]

CLOCK_FILE_ENV = "FAULTS_CLOCK_FILE"


def ack_path(clock_file: Path) -> Path:
    return clock_file.with_name(clock_file.name + ".ack")


def _read_offset(clock_file: Path) -> float:
    try:
        text = clock_file.read_text(encoding="ascii").strip()
    except OSError:
        return 0.0
    return float(text) if text else 0.0


def install(clock_file: Path) -> None:
    """Shift ``time.time`` by the file's offset now and on every SIGUSR1."""
    real = time.time
    offset = [_read_offset(clock_file)]

    def shifted() -> float:
        return real() + offset[0]

    def reread(_signum: int | None = None, _frame: FrameType | None = None) -> None:
        offset[0] = _read_offset(clock_file)
        tmp = ack_path(clock_file).with_suffix(".tmp")
        tmp.write_text(repr(offset[0]), encoding="ascii")
        tmp.replace(ack_path(clock_file))

    time.time = shifted
    signal.signal(signal.SIGUSR1, reread)
    reread()


def main() -> None:
    name = os.environ.get(CLOCK_FILE_ENV, "")
    if name:
        install(Path(name))
    from uvicorn.main import main as uvicorn_main  # noqa: PLC0415 — after the clock is in place

    uvicorn_main(args=sys.argv[1:], prog_name="uvicorn")


if __name__ == "__main__":
    main()
