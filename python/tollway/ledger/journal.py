"""The crash journal: money in motion, on disk the moment it moves.

The usage writer commits in batches, and a hold exists only in this process's
ledger, so a SIGKILL would forget the last batch and every request in flight.
Each hold is therefore journaled when it opens, each usage row when it is handed
to the writer, and each hold released without a row when it is released: one
line per record, one ``os.write`` on an ``O_APPEND`` file, no fsync. The journal
must outlive the process, not the machine: a killed process's writes are in the
page cache already; only a crash of the machine (or its disk) can lose them.

Segments rotate (every ``rotate_s`` seconds with new records, or ``rotate_bytes``
of them): the new segment starts with the holds still open, carried forward, and
the old ones are deleted by the writer only once every row submitted before the
rotation is committed (``UsageWriter._swap``). At start ``tollway.ledger.replay``
writes what the segments hold to the database before the spend counters are
rebuilt. A clean shutdown leaves no open hold and no segment.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson

from tollway._core import Hold

log = logging.getLogger("tollway.journal")

SEGMENT_GLOB = "*.jsonl"


class _EventIds:
    """Unique event ids, cheaply: a random 64-bit prefix per process and a counter.

    Re-seeded in a forked child (granian forks its workers from the supervisor), so
    a respawned worker never reuses its predecessor's ids.
    """

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self._prefix = "ev_" + os.urandom(8).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


new_event_id = _EventIds()


@dataclass(slots=True)
class Rotation:
    old: list[Path]  # the segments before the new one
    holds: dict[str, tuple[bytes, weakref.ref]]  # open at the switch, to carry forward


def _pieces(lines: list[bytes], size: int = 64 << 10) -> Iterator[bytes]:
    """Whole lines joined into writes of about ``size`` bytes."""
    piece: list[bytes] = []
    length = 0
    for line in lines:
        piece.append(line)
        length += len(line)
        if length >= size:
            yield b"".join(piece)
            piece, length = [], 0
    if piece:
        yield b"".join(piece)


def segment_paths(directory: Path) -> list[Path]:
    """The journal's segments, oldest first."""
    return sorted(directory.glob(SEGMENT_GLOB))


class Journal:
    """One writer process per directory (tollway.ledger.owner makes sure of it)."""

    def __init__(self, directory: Path, rotate_s: float = 1.0, rotate_bytes: int = 4 << 20) -> None:
        self.directory = directory
        self.rotate_s = rotate_s
        self.rotate_bytes = rotate_bytes
        # Taken around every write, and by the usage writer around its buffer
        # swap, so that a segment never holds a row the database will not get
        # before the segment is deleted.
        self.lock = threading.Lock()
        self._fd = -1
        self._seq = 0
        self._segments: list[Path] = []  # every live segment, the current one last
        # event id -> (its hold line, the hold). A weak reference: a Hold dropped
        # without being settled or released must still release itself.
        self._open: dict[str, tuple[bytes, weakref.ref]] = {}
        self._size = 0  # bytes in the current segment
        self._carried = 0  # of which carried forward
        self._opened_at = 0.0
        self._failing = False

    # ------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Start the first segment (after the replay removed the old ones)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = segment_paths(self.directory)
        self._seq = max((_seq_of(p) for p in existing), default=0)
        self._segments = existing
        with self.lock:
            self._start_segment()

    def close(self, committed: bool) -> None:
        """Stop journaling. With everything committed and no hold open, remove the segments;
        otherwise keep them for the next start's replay."""
        with self.lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if committed and not self._open:
                for path in self._segments:
                    path.unlink(missing_ok=True)
                self._segments = []
            elif self._open:
                log.warning(
                    "%d holds still open at shutdown are kept in the journal %s; the next start bills them "
                    "as interrupted",
                    len(self._open),
                    self.directory,
                )

    @property
    def open_holds(self) -> int:
        return len(self._open)

    # ------------------------------------------------------------ records
    def hold(self, event_id: str, hold: Hold, base: dict[str, Any], stream: bool, input_estimate: int) -> None:
        now = time.time_ns() // 1_000_000
        line = orjson.dumps({
            "t": "h", "e": event_id, "r": base["request_id"], "a": base["account_id"], "k": base["key_id"],
            "m": base["model"], "p": base["provider"], "s": stream, "u": hold.micros, "i": input_estimate,
            "c": now, "w": base.get("started_at", now),
        }) + b"\n"  # fmt: skip
        with self.lock:
            self._open[event_id] = (line, weakref.ref(hold))
            self._write(line)

    def row_locked(self, row: dict[str, Any]) -> None:
        """A usage row handed to the writer (the caller holds ``lock``); it closes its hold."""
        self._open.pop(row["event_id"], None)
        self._write(orjson.dumps({"t": "u", "r": row}) + b"\n")

    def release(self, event_id: str) -> None:
        """A hold given back with no usage row: never to be billed at a restart."""
        with self.lock:
            if self._open.pop(event_id, None) is not None:
                self._write(b'{"t":"x","e":"' + event_id.encode() + b'"}\n')

    def _write(self, data: bytes) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, data)  # a record is one line well under a page: one write
        except OSError as exc:
            if not self._failing:
                log.error("cannot write the crash journal %s: %s; a crash now may lose usage", self.directory, exc)
            self._failing = True
            return
        if self._failing:
            log.info("the crash journal %s is writable again", self.directory)
            self._failing = False
        self._size += len(data)

    # ------------------------------------------------------------ rotation
    def rotate_due(self) -> bool:
        fresh = self._size - self._carried
        if fresh <= 0 or self._fd < 0:
            return False
        return fresh >= self.rotate_bytes or time.monotonic() - self._opened_at >= self.rotate_s

    def next_segment(self) -> Optional[tuple[int, Path]]:
        """Create the next segment (before taking the lock: creating a file can take a while)."""
        self._seq += 1
        path = self.directory / f"{self._seq:012d}.jsonl"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600), path
        except OSError as exc:  # keep writing to the current one
            log.error("cannot start a new crash journal segment in %s: %s", self.directory, exc)
            return None

    def rotate_locked(self, segment: tuple[int, Path]) -> Rotation:
        """Switch to ``segment`` (the caller holds ``lock``): quick, the holds to carry
        forward are only copied. The caller then calls ``carry`` without the lock, and
        deletes ``Rotation.old`` once the rows submitted so far are committed."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, path = segment
        old, self._segments = self._segments, [path]
        self._size = self._carried = 0
        self._opened_at = time.monotonic()
        return Rotation(old, self._open.copy())

    def carry(self, rotation: Rotation) -> bool:
        """Write the listed holds into the new segment; True when the old segments may go.

        Outside the lock, in pieces, so that journaling a request never waits for
        thousands of carried lines. Records of these holds written meanwhile may
        precede their carried line: the replay does not depend on the order.

        A hold that no longer exists (no one holds the Hold) with no row is closed: it
        can no longer be settled, and whoever settles one keeps it until the row is
        submitted (Proxy.complete; the Rust stream until its ``on_done`` returned), so
        it was released by being dropped. One merely settled is kept: its row follows.
        """
        carried: list[bytes] = []
        gone: list[str] = []
        for event_id, (line, ref) in rotation.holds.items():
            if ref() is None:
                gone.append(event_id)
                carried.append(b'{"t":"x","e":"' + event_id.encode() + b'"}\n')
            else:
                carried.append(line)
        written = 0
        try:
            for piece in _pieces(carried):
                view = memoryview(piece)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                    written += n
        except OSError as exc:
            log.error(
                "cannot carry the open holds into the crash journal %s: %s; keeping the old segments",
                self.directory,
                exc,
            )
            return False
        finally:
            with self.lock:
                for event_id in gone:
                    self._open.pop(event_id, None)
                self._size += written
                self._carried += written
        return True

    def _start_segment(self) -> None:
        segment = self.next_segment()
        if segment is None:
            raise OSError(f"cannot create a crash journal segment in {self.directory}")
        self._fd, path = segment
        self._segments.append(path)
        self._size = self._carried = 0
        self._opened_at = time.monotonic()

    @staticmethod
    def remove(paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)


def _seq_of(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return 0
