"""At start, before the spend counters are rebuilt: write to the database what the
crash journal (and any old unwritten-usage spill file) holds.

- A usage row not in the database yet (matched on ``event_id``) is inserted.
- A hold still open when the process died (no row, not released) is billed
  **its hold**, the most the request was allowed to spend (input estimate plus
  worst-case output, already lowered to what the key could afford), as an event
  with outcome ``interrupted`` and ``estimated`` true: its upstream may have
  generated output that nobody settled, a provider bills that output, and the hold
  keeps the key's spend within its cap.

Idempotent: an event already in the database is never inserted twice, so a crash
during the replay itself only repeats it. The files are removed once committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson

from tollway.hooks import Hooks
from tollway.ledger.journal import segment_paths
from tollway.ledger.rollups import insert_events, present_ids
from tollway.store import Database

log = logging.getLogger("tollway.journal")

SPILL_GLOB = "unwritten-usage-*.jsonl"
INTERRUPTED = "interrupted"


@dataclass
class Replayed:
    files: int = 0
    rows_found: int = 0
    rows_inserted: int = 0
    interrupted: int = 0
    interrupted_micros: int = 0
    inserted_ids: list[str] = field(default_factory=list)


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            # Only the last line can be torn, and only by a machine crash mid-write.
            log.warning("skipping an unreadable line %d of %s", n, path)
            continue
        if isinstance(record, dict):
            yield n, record


def interrupted_row(hold: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": hold["e"],
        "request_id": hold["r"],
        "account_id": hold["a"],
        "key_id": hold["k"],
        "model": hold["m"],
        "provider": hold["p"],
        "http_status": 0,  # unknown: the process died before the outcome
        "outcome": INTERRUPTED,
        "stream": bool(hold["s"]),
        "input_tokens": int(hold["i"]),
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "estimated": True,
        "cost_micros": int(hold["u"]),
        "latency_ms": 0,
        "created_at": int(hold["c"]),
        "started_at": int(hold.get("w", hold["c"])),
    }


def collect(journal_dir: Path, spill_dir: Path) -> tuple[list[Path], list[dict[str, Any]], list[dict[str, Any]]]:
    """(the files read, the settled rows, the rows billing holds open at the crash)."""
    files = segment_paths(journal_dir) if journal_dir.is_dir() else []
    rows: dict[str, dict[str, Any]] = {}
    holds: dict[str, dict[str, Any]] = {}
    released: set[str] = set()
    for path in files:
        for _, record in _lines(path):
            kind = record.get("t")
            if kind == "u":
                row = record["r"]
                row.setdefault("started_at", row.get("created_at"))  # journaled before 0006
                rows.setdefault(row["event_id"], row)
            elif kind == "h":
                holds.setdefault(record["e"], record)
            elif kind == "x":
                released.add(record["e"])
    spills = sorted(spill_dir.glob(SPILL_GLOB)) if spill_dir.is_dir() else []
    for path in spills:
        for n, row in _lines(path):
            # Files from before event ids: an id from the file and line keeps a re-run idempotent.
            row.setdefault("event_id", None)
            row["event_id"] = row["event_id"] or f"spill_{path.stem.rsplit('-', 1)[-1][:24]}_{n}"
            row.setdefault("started_at", row.get("created_at"))
            rows.setdefault(row["event_id"], row)
    open_holds = [interrupted_row(h) for e, h in holds.items() if e not in rows and e not in released]
    return files + spills, list(rows.values()), open_holds


def replay(db: Database, journal_dir: Path, spill_dir: Path, hooks: Optional[Hooks] = None) -> Replayed:
    files, settled, open_holds = collect(journal_dir, spill_dir)
    result = Replayed(files=len(files), rows_found=len(settled), interrupted=len(open_holds))
    if not files:
        return result
    with db.engine.begin() as conn:
        present = present_ids(conn, [r["event_id"] for r in settled + open_holds])
        new_settled = [r for r in settled if r["event_id"] not in present]
        new_interrupted = [r for r in open_holds if r["event_id"] not in present]
        missing = new_settled + new_interrupted
        if missing:
            # Raises DuplicateEvents (nothing committed; the next start replays again) if
            # another writer inserted one of them since the check: the rollups stay exact.
            insert_events(conn, db, missing)
            if hooks is not None:
                hooks.settled(conn, missing)
    result.rows_inserted = len(new_settled)
    result.interrupted_micros = sum(r["cost_micros"] for r in new_interrupted)
    result.inserted_ids = [r["event_id"] for r in missing]
    for path in files:
        path.unlink(missing_ok=True)
    if missing:
        log.warning(
            "crash journal replayed: %d settled usage events written to the database (%d were there already); "
            "%d requests in flight at the crash billed their hold, %d micro-USD in all (outcome 'interrupted')",
            len(new_settled),
            len(settled) - len(new_settled),
            len(new_interrupted),
            result.interrupted_micros,
        )
    return result
