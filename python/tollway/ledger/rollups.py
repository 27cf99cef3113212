"""Usage rollups: the sums of ``usage_events`` per account, UTC hour and UTC day, key and model.

They change only in the transaction that inserts the events they sum (``insert_events``,
used by the writer and the crash-journal replay), and only by the rows that transaction
really inserted: an event already in the database (a retried commit, a replayed journal)
is skipped by the insert and adds nothing. So at every commit, for each hour and day,
``usage_rollups`` equals the sums of ``usage_events`` (and a day row the sum of its hours: the
reports may read a day as its row less some hours); ``rebuild`` recomputes them from the
events (``tollway usage rebuild``), and ``differences`` compares the two (``tollway usage verify``).

A key's end user and tags are not in the rollups: the reports take them from the key when
they are read, as they always did for the events (a tag added to a key later regroups its
past usage under the new tag).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from sqlalchemy import Connection, select, text
from sqlalchemy.dialects import postgresql, sqlite

from tollway.store import Database, usage_events
from tollway.store.schema import usage_rollups

HOUR = 3_600_000
DAY = 86_400_000
SPANS = (HOUR, DAY)
KEY_COLUMNS = ("account_id", "span_ms", "bucket_ms", "key_id", "model")
SUM_COLUMNS = (
    "request_count", "cost_micros", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "latency_ms",
)  # fmt: skip
_EVENT_SUMS = ("cost_micros", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "latency_ms")
_CHUNK = 500


class DuplicateEvents(Exception):
    """The insert skipped rows already in the database: redo the batch with ``check_first``."""


USAGE_COLUMNS = (
    "event_id", "request_id", "account_id", "key_id", "model", "provider", "http_status", "outcome", "stream",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "estimated",
    "cost_micros", "latency_ms", "created_at", "started_at",
)  # fmt: skip
Compiled = tuple[str, Optional[tuple[str, ...]]]


def _compiled(stmt: Any, dialect: Any, columns: Sequence[str]) -> Compiled:
    """``stmt`` compiled for ``dialect``, and the parameter order if positional."""
    compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
    return compiled.string, tuple(compiled.positiontup) if compiled.positional else None


def insert_statement(db: Database) -> Compiled:
    """The INSERT of usage rows compiled for ``db``. An event already written is skipped, never
    an error (``insert_events`` sees it in the row count): a commit whose acknowledgement was
    lost is retried, and the journal's replay may meet rows the writer committed before a crash."""
    make = sqlite.insert if db.is_sqlite else postgresql.insert
    return _compiled(make(usage_events).on_conflict_do_nothing(index_elements=["event_id"]), db.engine.dialect,
                     USAGE_COLUMNS)  # fmt: skip


def _upsert_statement(db: Database) -> Compiled:
    make = sqlite.insert if db.is_sqlite else postgresql.insert
    stmt = make(usage_rollups)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(KEY_COLUMNS),
        set_={c: usage_rollups.c[c] + stmt.excluded[c] for c in SUM_COLUMNS},
    )
    return _compiled(stmt, db.engine.dialect, (*KEY_COLUMNS, *SUM_COLUMNS))


_STATEMENTS: dict[tuple[str, str, str], tuple[Compiled, Compiled]] = {}


def _statements(db: Database) -> tuple[Compiled, Compiled]:
    """The events' INSERT and the rollups' upsert, compiled once per dialect and driver."""
    dialect = db.engine.dialect
    ident = (dialect.name, dialect.driver, dialect.paramstyle)
    found = _STATEMENTS.get(ident)
    if found is None:
        found = _STATEMENTS[ident] = (insert_statement(db), _upsert_statement(db))
    return found


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rollup increments of ``rows``: one per (account, span, bucket, key, model), in key order
    (every transaction takes the rows' locks in the same order: no deadlock between writers)."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        created = int(row["created_at"])
        values = (1, *(int(row[c]) for c in _EVENT_SUMS))
        for span in SPANS:
            ident = (row["account_id"], span, created - created % span, row["key_id"], row["model"])
            acc = sums.get(ident)
            if acc is None:
                sums[ident] = list(values)
            else:
                for i, v in enumerate(values):
                    acc[i] += v
    return [
        {**dict(zip(KEY_COLUMNS, ident, strict=True)), **dict(zip(SUM_COLUMNS, sums[ident], strict=True))}
        for ident in sorted(sums, key=lambda k: (k[0], k[1], k[2], k[3], k[4]))
    ]


def add_to_rollups(conn: Connection, db: Database, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    _, (sql, order) = _statements(db)
    increments = aggregate(rows)
    conn.exec_driver_sql(sql, [tuple(r[k] for k in order) for r in increments] if order else increments)


def present_ids(conn: Connection, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        query = select(usage_events.c.event_id).where(usage_events.c.event_id.in_(ids[i : i + _CHUNK]))
        found.update(conn.execute(query).scalars())
    return found


def insert_events(
    conn: Connection, db: Database, rows: Sequence[dict[str, Any]], *, check_first: bool = False
) -> list[dict[str, Any]]:
    """Insert the usage rows not in the database yet and add them (only them) to the rollups.

    Returns the rows inserted. Without ``check_first`` every row is expected to be new (the
    writer's case): when the insert skipped some, ``DuplicateEvents`` is raised and the
    caller rolls the transaction back and calls again with ``check_first``, which drops the
    rows already present first (and still raises if a concurrent writer inserted one since).
    """
    if check_first:
        present = present_ids(conn, [r["event_id"] for r in rows])
        rows = [r for r in rows if r["event_id"] not in present]
    if not rows:
        return []
    (sql, order), _ = _statements(db)
    result = conn.exec_driver_sql(sql, [tuple(r[k] for k in order) for r in rows] if order else list(rows))
    if result.rowcount != len(rows):
        raise DuplicateEvents(f"{len(rows) - result.rowcount} of {len(rows)} usage events were already written")
    add_to_rollups(conn, db, rows)
    return list(rows)


def _sums_sql(span: int, where: str) -> str:
    """The SELECT of the rollup rows of ``span`` from the events (KEY_COLUMNS, then SUM_COLUMNS)."""
    return (
        f"SELECT account_id, {span}, created_at - created_at % {span}, key_id, model, COUNT(*), SUM(cost_micros), "
        "SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(latency_ms) "
        f"FROM usage_events {where} GROUP BY account_id, created_at - created_at % {span}, key_id, model"
    )


def _fill_sql(where: str = "") -> list[str]:
    columns = ", ".join((*KEY_COLUMNS, *SUM_COLUMNS))
    return [f"INSERT INTO usage_rollups ({columns}) {_sums_sql(span, where)}" for span in SPANS]


def rebuild(db: Database, account_id: Optional[str] = None) -> int:
    """Recompute the rollups (of one account, or all) from the events, in one transaction.

    Safe while a gateway runs: its writer waits for the rebuild to commit (PostgreSQL: an
    EXCLUSIVE lock on usage_rollups, taken first; SQLite: the database's write lock, taken
    by the DELETE), so an event is counted by the rebuild or by its writer, never both.
    Returns the number of rollup rows written.
    """
    where = "WHERE account_id = :account" if account_id is not None else ""
    params = {"account": account_id} if account_id is not None else {}
    with db.engine.begin() as conn:
        if not db.is_sqlite:
            conn.execute(text("LOCK TABLE usage_rollups IN EXCLUSIVE MODE"))
        conn.execute(text(f"DELETE FROM usage_rollups {where}"), params)
        written = 0
        for sql in _fill_sql(where):
            written += conn.execute(text(sql), params).rowcount
    return written


def differences(db: Database, account_id: Optional[str] = None) -> list[tuple[Any, ...]]:
    """The rollup rows that do not match the events (empty when they agree), each as
    (account, span, bucket, key, model, sums in the rollups or None, sums of the events or None)."""
    where = "WHERE account_id = :account" if account_id is not None else ""
    params = {"account": account_id} if account_id is not None else {}
    cols = ", ".join((*KEY_COLUMNS, *SUM_COLUMNS))
    with db.engine.connect() as conn:
        stored = {
            tuple(r[:5]): tuple(int(v) for v in r[5:])
            for r in conn.execute(text(f"SELECT {cols} FROM usage_rollups {where}"), params)
        }
        expected: dict[tuple[Any, ...], tuple[int, ...]] = {}
        for span in SPANS:
            for r in conn.execute(text(_sums_sql(span, where)), params):
                expected[tuple(r[:5])] = tuple(int(v) for v in r[5:])
    return [
        (*ident, stored.get(ident), expected.get(ident))
        for ident in sorted(set(stored) | set(expected), key=str)
        if stored.get(ident) != expected.get(ident)
    ]
