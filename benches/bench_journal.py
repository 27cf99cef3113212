"""The crash journal's cost on the hot path (pytest-benchmark).

Run: .venv/bin/python -m pytest benches/bench_journal.py --benchmark-enable -p no:cacheprovider

One request's ledger and usage work, as Proxy.prepare and Proxy.complete do it:
reserve a hold, settle it, build its usage row and submit it to the writer;
with the journal, also journal the hold when it opens and the row when it is
submitted (two os.write of one line each). The difference of the two is what
the journal adds per model call. The writer thread is not started: only the
caller's side is measured.
"""

from __future__ import annotations

import pytest

from tollway._core import Ledger
from tollway.ledger.journal import Journal, new_event_id
from tollway.ledger.writer import UsageWriter, usage_row
from tollway.store import Database


@pytest.fixture
def parts(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'b.db'}")
    journal = Journal(tmp_path / "journal")
    journal.open()
    ledger = Ledger()
    ledger.load("key_1", 0, 10**15)
    yield db, journal, ledger
    journal.close(committed=True)
    db.dispose()


def _request(ledger, writer, journal):
    hold = ledger.reserve("key_1", 1_000, 40_000)
    base = {"event_id": new_event_id(), "request_id": "req_0123456789abcdef01234567", "account_id": "acc_0123456789abcdef",
            "key_id": "key_1", "model": "gpt-4o-mini", "provider": "openai"}  # fmt: skip
    if journal is not None:
        journal.hold(base["event_id"], hold, base, False, 812)
    hold.settle(1_234)
    writer.submit(usage_row(**base, http_status=200, outcome="ok", stream=False, input_tokens=812, output_tokens=97,
                            cost_micros=1_234, latency_ms=412))  # fmt: skip
    writer._buffer.clear()  # the writer thread is not running: keep the buffer from growing


def test_request_without_journal(benchmark, parts) -> None:
    db, journal, ledger = parts
    writer = UsageWriter(db, journal.directory)
    benchmark(_request, ledger, writer, None)


def test_request_with_journal(benchmark, parts) -> None:
    db, journal, ledger = parts
    writer = UsageWriter(db, journal.directory, journal=journal)
    benchmark(_request, ledger, writer, journal)


def test_event_id(benchmark) -> None:
    benchmark(new_event_id)


def test_rotation_switch_with_5000_open_holds(benchmark, parts) -> None:
    """What a rotation holds the journal's lock for (requests wait on it) with 5,000 streams open;
    the carried lines are written after, outside the lock (see test_rotation_carry_*)."""
    _, journal, ledger = parts
    holds = _open_holds(journal, ledger, 5_000)

    def switch(segment):
        with journal.lock:
            return journal.rotate_locked(segment)

    benchmark.pedantic(switch, setup=lambda: ((journal.next_segment(),), {}), rounds=200)
    assert len(holds) == journal.open_holds == 5_000


def test_rotation_carry_5000_open_holds(benchmark, parts) -> None:
    _, journal, ledger = parts
    holds = _open_holds(journal, ledger, 5_000)
    segment = journal.next_segment()
    with journal.lock:
        rotation = journal.rotate_locked(segment)
    benchmark(journal.carry, rotation)
    assert len(holds) == journal.open_holds == 5_000


def _open_holds(journal, ledger, n):
    holds = []
    for _ in range(n):
        hold = ledger.reserve("key_1", 1_000, 40_000)
        event_id = new_event_id()
        base = {"request_id": "req_0123456789abcdef01234567", "account_id": "acc_0123456789abcdef",
                "key_id": "key_1", "model": "gpt-4o-mini", "provider": "openai"}  # fmt: skip
        journal.hold(event_id, hold, base, True, 812)
        holds.append(hold)
    return holds
