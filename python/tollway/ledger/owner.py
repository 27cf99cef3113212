"""One gateway per data: the process that owns the spend counters and the crash journal.

The counters are kept in the gateway process (tollway.ledger.LocalLedger), so two
gateways on the same data would each enforce every cap alone, and two on one data
directory would replay each other's journal. The process that owns the ledger (the
granian worker, the Robyn process) therefore holds, for its whole life:

- an exclusive ``flock`` on ``<data dir>/gateway.lock`` (the journal's directory),
- on SQLite, an exclusive ``flock`` on ``<database file>.gateway-lock``,
- on PostgreSQL, a session advisory lock on a connection of its own.

The kernel drops a flock when its holder dies, and the server drops a session lock
when its connection closes, so a SIGKILLed owner never blocks its successor.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

# pg_try_advisory_lock(int, int): "tollway" and "gateway", as two int4.
PG_LOCK = (0x746F6C6C, 0x67617465)
APP_NAME_PREFIX = "tollway-gateway"


class AnotherGateway(RuntimeError):
    """Another gateway owns this data; the message says which and what to do."""


def _message(what: str, holder: Optional[str]) -> str:
    who = f"another Tollway gateway ({holder})" if holder else "another Tollway gateway"
    return (
        f"{who} is already running on {what}. The spend counters live in the gateway process, so a second "
        "one would enforce every cap on its own; several processes on one database need a shared ledger, "
        "which is not available yet. Stop the other gateway first (or give this one its own data)."
    )


class _FileLock:
    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self.fd = -1

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise AnotherGateway(_message(self.what, holder or None)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = -1


class _PgLock:
    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Optional[Connection] = None
        self.engine = None

    def _what(self) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(self.url)
        return f"the PostgreSQL database {url.database!r} on {url.host or 'localhost'}:{url.port or 5432}"

    def acquire(self) -> None:
        self.engine = create_engine(self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        conn = self.engine.connect()
        name = f"{APP_NAME_PREFIX} pid {os.getpid()} on {socket.gethostname()}"[:63]
        conn.execute(text("SELECT set_config('application_name', :n, false)"), {"n": name})
        got = conn.execute(text(f"SELECT pg_try_advisory_lock({PG_LOCK[0]}, {PG_LOCK[1]})")).scalar()
        if got:
            self.conn = conn
            return
        holder = conn.execute(
            text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                f"AND l.classid = {PG_LOCK[0]} AND l.objid = {PG_LOCK[1]} AND l.objsubid = 2"
            )
        ).scalar()
        conn.close()
        self.engine.dispose()
        holder = holder[len(APP_NAME_PREFIX) :].strip() if holder and holder.startswith(APP_NAME_PREFIX) else holder
        raise AnotherGateway(_message(self._what(), holder or None))

    def release(self) -> None:
        if self.conn is not None:
            self.conn.close()  # the server drops the session lock with the session
            self.conn = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None


class GatewayLock:
    """Held by the process that owns the ledger, from before the journal's replay to its exit."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        data_dir = data_dir.resolve()
        self.locks: list = [_FileLock(data_dir / "gateway.lock", f"the data directory {data_dir}")]
        if database_url.startswith("sqlite"):
            path = database_url.split("sqlite:///", 1)[-1]
            if path and path != ":memory:":
                db_path = Path(path).resolve()
                self.locks.append(
                    _FileLock(db_path.with_name(db_path.name + ".gateway-lock"), f"the SQLite database {db_path}")
                )
        else:
            self.locks.append(_PgLock(database_url))
        self.held = False

    def acquire(self, wait: float = 0.0) -> None:
        """Take every lock or none; retry up to ``wait`` seconds (a predecessor that was
        just killed may take a moment to be gone, its server session especially)."""
        if self.held:
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                for lock in self.locks:
                    lock.acquire()
                self.held = True
                return
            except AnotherGateway:
                self.release()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def release(self) -> None:
        for lock in self.locks:
            lock.release()
        self.held = False


def check_free(data_dir: Path, database_url: str) -> Optional[str]:
    """The supervisor's check before it starts a worker: None, or why this gateway must not start."""
    lock = GatewayLock(data_dir, database_url)
    try:
        lock.acquire()
    except AnotherGateway as exc:
        return str(exc)
    lock.release()
    return None


SUPERVISOR_ENV = "TOLLWAY_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


def die_with_supervisor() -> None:
    """In a worker of ``tollway serve``: get SIGTERM when the supervisor dies.

    Without it a SIGKILLed supervisor leaves its worker serving, holding the port and
    the data, and a new ``tollway serve`` would run beside it. SIGTERM, not SIGKILL:
    the orphan drains what it has in flight (bounded by TOLLWAY_DRAIN_TIMEOUT),
    settles it and exits; the journal covers it if it cannot. Linux only (prctl).
    """
    expected = os.environ.get(SUPERVISOR_ENV)
    if not expected or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(expected):  # the supervisor died before the prctl
        raise SystemExit(f"tollway: the supervisor (pid {expected}) is gone; this worker exits")
