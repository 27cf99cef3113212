"""The batched usage writer: nothing lost, flush means committed, a dead database spills to a file."""

from __future__ import annotations

import threading

import orjson
from sqlalchemy import func, select

from tollway.ledger.writer import UsageWriter, usage_row
from tollway.store import Database, usage_events


def row(i: int) -> dict:
    return usage_row(
        request_id=f"r{i}",
        account_id="a",
        key_id="k",
        model="m",
        provider="p",
        http_status=200,
        outcome="ok",
        stream=False,
        cost_micros=i,
    )


def count(db: Database) -> tuple[int, int]:
    with db.engine.connect() as conn:
        return conn.execute(select(func.count(), func.coalesce(func.sum(usage_events.c.cost_micros), 0))).one()


def test_flush_sees_every_row_from_many_threads(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    db.migrate()
    writer = UsageWriter(db, tmp_path)
    writer.start()
    threads = [
        threading.Thread(target=lambda k=k: [writer.submit(row(k * 1000 + i)) for i in range(500)]) for k in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.flush()
    expected = sum(k * 1000 + i for k in range(8) for i in range(500))
    assert count(db) == (4000, expected)
    writer.submit(row(1))
    writer.close()
    assert count(db) == (4001, expected + 1)
    assert list(tmp_path.glob("unwritten-usage-*")) == []
    db.dispose()


def test_rows_the_database_refuses_are_spilled_not_lost(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")  # never migrated: inserts fail
    writer = UsageWriter(db, tmp_path)
    writer.start()
    for i in range(3):
        writer.submit(row(i))
    assert writer.flush(timeout=0.5) is False
    writer.close(timeout=0.5)
    spilled = [
        orjson.loads(line) for f in tmp_path.glob("unwritten-usage-*.jsonl") for line in f.read_bytes().splitlines()
    ]
    assert sorted(r["request_id"] for r in spilled) == ["r0", "r1", "r2"]
    db.dispose()
