"""The crash journal and its replay: settled rows all written once, open holds billed, nothing lost in rotation."""

from __future__ import annotations

import gc
import shutil
import signal
import subprocess
import sys
import time

import orjson
import pytest
from sqlalchemy import select

from tests.conftest import DATABASES, REPO
from tollway._core import Ledger
from tollway.ledger.journal import Journal, new_event_id, segment_paths
from tollway.ledger.replay import replay
from tollway.ledger.writer import UsageWriter, usage_row
from tollway.store import Database, usage_events


def _base(event_id: str, request_id: str = "req_1") -> dict:
    return {"event_id": event_id, "request_id": request_id, "account_id": "acc", "key_id": "k1",
            "model": "m", "provider": "p"}  # fmt: skip


def _row(base: dict, cost: int) -> dict:
    return usage_row(**base, http_status=200, outcome="ok", stream=False, input_tokens=3, output_tokens=4,
                     cost_micros=cost)  # fmt: skip


def _events(db: Database) -> dict[str, tuple[str, int, bool]]:
    with db.engine.connect() as conn:
        rows = conn.execute(select(usage_events.c.event_id, usage_events.c.outcome, usage_events.c.cost_micros,
                                   usage_events.c.estimated))  # fmt: skip
        return {r.event_id: (r.outcome, r.cost_micros, bool(r.estimated)) for r in rows}


@pytest.fixture
def db(fresh_database):
    database = Database(fresh_database)
    database.migrate()
    yield database
    database.dispose()


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_replay_writes_missing_rows_bills_open_holds_and_is_idempotent(db, tmp_path) -> None:
    jdir = tmp_path / "journal"
    ledger = Ledger()
    journal = Journal(jdir)
    journal.open()
    writer = UsageWriter(db, tmp_path, journal=journal)  # never started: nothing reaches the database by itself
    holds, ids = [], [new_event_id() for _ in range(5)]
    for event_id in ids:
        hold = ledger.reserve("k1", 1, 1000)
        holds.append(hold)
        journal.hold(event_id, hold, _base(event_id), False, 3)
    # 0: settled, already committed; 1: settled, not committed; 2: released; 3, 4: in flight.
    committed = _row(_base(ids[0]), 111)
    writer.submit(committed)
    with db.engine.begin() as conn:
        conn.execute(usage_events.insert(), [committed])
    writer.submit(_row(_base(ids[1]), 222))
    holds[2].release()
    journal.release(ids[2])
    kept = tmp_path / "kept"
    shutil.copytree(jdir, kept)

    result = replay(db, jdir, tmp_path)
    events = _events(db)
    assert events == {
        ids[0]: ("ok", 111, False),
        ids[1]: ("ok", 222, False),
        ids[3]: ("interrupted", 1000, True),
        ids[4]: ("interrupted", 1000, True),
    }
    assert (result.rows_inserted, result.interrupted, result.interrupted_micros) == (1, 2, 2000)
    assert segment_paths(jdir) == []

    # A crash during the replay repeats it: nothing is written twice.
    again = replay(db, kept, tmp_path)
    assert again.inserted_ids == [] and _events(db) == events
    assert segment_paths(kept) == []


def test_old_spill_files_are_replayed_once(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    db.migrate()
    spill = tmp_path / "unwritten-usage-1700000000000000000.jsonl"
    old = [{k: v for k, v in _row(_base("x"), c).items() if k != "event_id"} for c in (5, 7)]  # before event ids
    spill.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in old))
    copy = spill.read_bytes()
    replay(db, tmp_path / "journal", tmp_path)
    assert not spill.exists()
    spill.write_bytes(copy)  # as if the process had died before removing it
    replay(db, tmp_path / "journal", tmp_path)
    assert sorted(v[1] for v in _events(db).values()) == [5, 7]
    db.dispose()


def test_a_hold_dropped_without_a_row_is_closed_at_the_next_rotation(tmp_path) -> None:
    ledger = Ledger()
    journal = Journal(tmp_path, rotate_s=0.0)
    journal.open()
    dropped, alive = new_event_id(), new_event_id()
    hold = ledger.reserve("k1", 1, 500)
    journal.hold(dropped, hold, _base(dropped), True, 1)
    keep = ledger.reserve("k1", 1, 300)
    journal.hold(alive, keep, _base(alive), True, 1)
    del hold
    gc.collect()
    assert ledger.snapshot("k1")[1] == 300  # the dropped Hold released itself: the journal keeps no reference
    settled = ledger.reserve("k1", 1, 200)
    journal.hold(new_event_id(), settled, _base("s"), False, 1)
    settled.settle(150)  # its row is on its way: kept until it comes
    segment = journal.next_segment()
    with journal.lock:
        rotation = journal.rotate_locked(segment)
    assert journal.carry(rotation)
    Journal.remove(rotation.old)
    assert journal.open_holds == 2
    db = Database(f"sqlite:///{tmp_path / 'j.db'}")
    db.migrate()
    journal.close(committed=True)  # a hold still open: the segment stays
    replay(db, tmp_path, tmp_path)
    events = _events(db)
    assert events.pop(alive) == ("interrupted", 300, True)
    assert list(events.values()) == [("interrupted", 200, True)]
    db.dispose()


def test_a_clean_close_leaves_an_empty_journal(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    db.migrate()
    journal = Journal(tmp_path / "journal", rotate_s=0.0)
    journal.open()
    writer = UsageWriter(db, tmp_path, interval_s=0.01, journal=journal)
    writer.start()
    ledger = Ledger()
    for i in range(50):
        event_id = new_event_id()
        hold = ledger.reserve("k1", 1, 10)
        journal.hold(event_id, hold, _base(event_id), False, 1)
        hold.settle(i)
        writer.submit(_row(_base(event_id), i))
        time.sleep(0.001)
    writer.close()
    assert segment_paths(tmp_path / "journal") == []
    assert sum(v[1] for v in _events(db).values()) == sum(range(50))
    db.dispose()


# A child process journals holds and rows from four threads while its writer commits
# and rotates every few milliseconds; it reports each step on stdout once done, and
# is SIGKILLed in the middle. Whatever it reported must be accounted after the replay.
CHILD = r"""
import sys, threading, time
from tollway._core import Ledger
from tollway.ledger.journal import Journal, new_event_id
from tollway.ledger.writer import UsageWriter, usage_row
from tollway.store import Database
from pathlib import Path

db = Database(sys.argv[1]); data = Path(sys.argv[2])
journal = Journal(data / "journal", rotate_s=0.005, rotate_bytes=20_000)
journal.open()
writer = UsageWriter(db, data, interval_s=0.005, journal=journal)
writer.start()
ledger = Ledger()
out = threading.Lock()
inflight = []

def say(line):
    with out:
        sys.stdout.write(line + "\n"); sys.stdout.flush()

def work(t):
    i = 0
    while True:
        i += 1
        e = new_event_id()
        base = dict(event_id=e, request_id=f"r{t}-{i}", account_id="acc", key_id="k1", model="m", provider="p")
        hold = ledger.reserve("k1", 1, 1000)
        journal.hold(e, hold, base, False, 2)
        say(f"h {e}")
        if i % 5 == 0:
            say(f"r {e}")
            hold.release(); journal.release(e); say(f"x {e}")
        elif i % 7 == 0:
            inflight.append(hold)  # still in flight at the kill
        else:
            hold.settle(10)
            writer.submit(usage_row(**base, http_status=200, outcome="ok", stream=False, cost_micros=10))
            say(f"u {e}")

say("ready")
for t in range(4):
    threading.Thread(target=work, args=(t,), daemon=True).start()
time.sleep(60)
"""


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_sigkill_during_rotation_loses_no_record(db, fresh_database, tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, fresh_database, str(tmp_path)], cwd=str(REPO),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    opened, settled, releasing, released = set(), set(), set(), set()
    sets = {"h": opened, "u": settled, "r": releasing, "x": released}
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while len(settled) < 3000 and time.monotonic() < deadline:
            kind, event_id = proc.stdout.readline().split()
            sets[kind].add(event_id)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # What the child reported before it died, after we stopped reading (a hold released
    # then was opened in what we read: its "r" and "x" are in the rest).
    for line in proc.stdout.read().split("\n")[:-1]:  # (the last piece: a line the kill cut, or "")
        kind, event_id = line.split()
        sets[kind].add(event_id)
    assert len(settled) >= 3000
    assert len(list((tmp_path / "journal").glob("*.jsonl"))) >= 1

    replay(db, tmp_path / "journal", tmp_path)
    events = _events(db)
    missing = settled - {e for e, v in events.items() if v[0] == "ok"}
    assert not missing, f"{len(missing)} settled rows lost"
    assert not released & set(events), "a released hold was billed"
    # Every hold opened is accounted exactly once (settled or billed as interrupted), unless
    # released: those being released at the kill may be either.
    unaccounted = opened - released - set(events)
    assert unaccounted <= releasing, f"{len(unaccounted - releasing)} holds forgotten"
    interrupted = [v for v in events.values() if v[0] == "interrupted"]
    assert interrupted and all(v[1] == 1000 and v[2] for v in interrupted)
