"""``tollway serve --server robyn``: Robyn runs in a child process, started again when it dies.

Robyn 0.88 panics on some malformed requests (a chunked body with a bad chunk
size) and the panic aborts the whole process (SIGABRT), so one bad request would
stop the gateway. The supervisor keeps it up: a child killed by a signal (a panic's
abort, SIGKILL, the OOM killer) is started again, after a pause that grows while it
keeps dying young; its successor replays the crash journal at start, so nothing
settled is forgotten. A child that exits by itself (0 after a drain, or an error
such as another gateway on the same data) ends the supervisor with its code.
granian has its own supervisor (``respawn_failed_workers``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence

FIRST_PAUSE_S = 0.2
MAX_PAUSE_S = 5.0
HEALTHY_AFTER_S = 10.0  # a child that lived this long starts the pauses over


def supervise(argv: Sequence[str], env: dict[str, str]) -> int:
    """Run ``argv`` until it exits by itself; start it again whenever a signal kills it."""
    child: Optional[subprocess.Popen] = None
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # the child drains what it has in flight, then exits

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pause = FIRST_PAUSE_S
    while True:
        started = time.monotonic()
        child = subprocess.Popen(list(argv), env=env)
        code = child.wait()
        if stopping or code >= 0:
            return 0 if stopping and code < 0 else code
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if time.monotonic() - started >= HEALTHY_AFTER_S:
            pause = FIRST_PAUSE_S
        print(
            f"tollway: the server process {child.pid} was killed by {name}; starting it again in {pause:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        deadline = time.monotonic() + pause
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.05)
        if stopping:
            return 0
        pause = min(pause * 2, MAX_PAUSE_S)


def child_env(supervisor_env: str) -> dict[str, str]:
    """The child's environment: it learns our pid, to die with us (see ledger.owner.die_with_supervisor)."""
    return {**os.environ, supervisor_env: str(os.getpid())}
