"""Usage rollups: the sums of ``usage_events`` per account, UTC hour, day and month, key and model.

A day row is the account's calendar day in its time zone (``accounts.timezone``; keyed as
``tollway.ledger.local_days.day_bucket`` says), so reports grouped by day read day rows in any
zone; a month row is the sum of its days' rows (the reports of a month read a row per key and
model). ``set_zone`` changes an account's zone and recomputes its day rows in one transaction;
the writer reads the zone in its own transaction, after its insert (SQLite: holding the write
lock) under FOR SHARE (PostgreSQL: a zone change waits for it, or it for the change), so no
event is counted in a day of the zone it no longer has.

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

import datetime as dt
from typing import Any, Optional, Sequence

from sqlalchemy import Connection, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from tollway.ledger.local_days import day_bucket, month_bucket, runs, zone_of
from tollway.store import Database, accounts, usage_events
from tollway.store.schema import usage_rollups

HOUR = 3_600_000
DAY = 86_400_000
MONTH = 2_592_000_000  # a calendar month's rows (the span is nominal: 30 days)
# An hour's and a day's rows summed over the key's models (model ''): for reports without models.
HOUR_BY_KEY = 3_600_001
DAY_BY_KEY = 86_400_001
BY_KEY = (HOUR_BY_KEY, DAY_BY_KEY)
SPANS = (HOUR, DAY, MONTH, HOUR_BY_KEY, DAY_BY_KEY)
LOCAL_SPANS = (DAY, MONTH, DAY_BY_KEY)  # in the account's zone
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


def zones(conn: Connection, db: Database, account_ids: Sequence[str]) -> dict[str, Optional[dt.tzinfo]]:
    """The zones of the accounts, read in the caller's transaction (PostgreSQL: FOR SHARE, so a
    zone change waits for it to commit, or it for the change, and reads the new zone)."""
    wanted = sorted(set(account_ids))
    found: dict[str, Optional[dt.tzinfo]] = dict.fromkeys(wanted)
    for i in range(0, len(wanted), _CHUNK):
        query = select(accounts.c.id, accounts.c.timezone).where(accounts.c.id.in_(wanted[i : i + _CHUNK]))
        if not db.is_sqlite:
            query = query.order_by(accounts.c.id).with_for_update(read=True)
        found.update({a: zone_of(name) for a, name in conn.execute(query)})
    return found


def aggregate(
    rows: Sequence[dict[str, Any]], zones: Optional[dict[str, Optional[dt.tzinfo]]] = None
) -> list[dict[str, Any]]:
    """The rollup increments of ``rows`` (day rows in each account's zone, UTC when not in
    ``zones``): one per (account, span, bucket, key, model), in key order (every transaction
    takes the rows' locks in the same order: no deadlock between writers)."""
    zones = zones or {}
    sums: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        created = int(row["created_at"])
        values = (1, *(int(row[c]) for c in _EVENT_SUMS))
        tz = zones.get(row["account_id"])
        day, hour = day_bucket(created, tz), created - created % HOUR
        for span, bucket in (
            (HOUR, hour),
            (DAY, day),
            (MONTH, month_bucket(day)),
            (HOUR_BY_KEY, hour),
            (DAY_BY_KEY, day),
        ):
            ident = (row["account_id"], span, bucket, row["key_id"], "" if span in BY_KEY else row["model"])
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
    increments = aggregate(rows, zones(conn, db, [r["account_id"] for r in rows]))
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


def _day_sql(tz: Optional[dt.tzinfo], lo: int, hi: int) -> str:
    """The SQL of ``local_days.day_bucket(created_at, tz)`` for events in [lo, hi): the quarter
    hour plus its UTC offset (a CASE over the offset's changes), cut to its day."""
    if tz is None:
        return f"created_at - created_at % {DAY}"
    changes = runs(lo - lo % 900_000, hi, tz) or [(lo, hi, 0)]
    offset = str(changes[-1][2])
    if len(changes) > 1:
        whens = " ".join(f"WHEN created_at < {end} THEN {off}" for _, end, off in changes[:-1])
        offset = f"CASE {whens} ELSE {offset} END"
    local = f"(created_at - created_at % 900000 + {offset})"
    return f"{local} - {local} % {DAY}"


def _sums_sql(bucket: str, span: int, where: str) -> str:
    """The SELECT of rollup rows (KEY_COLUMNS, then SUM_COLUMNS) from the events."""
    model, by_model = ("''", "") if span in BY_KEY else ("model", ", model")
    return (
        f"SELECT account_id, {span}, {bucket}, key_id, {model}, COUNT(*), SUM(cost_micros), "
        "SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(latency_ms) "
        f"FROM usage_events {where} GROUP BY account_id, {bucket}, key_id{by_model}"
    )


def _selects(conn: Connection, account_id: Optional[str], local_only: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The SELECTs of the rollup rows from the events (of one account, or all), read in ``conn``:
    the hour rows (unless ``local_only``), the day and month rows of the UTC accounts, those of
    each zoned account."""
    where = "WHERE account_id = :account" if account_id is not None else ""
    params: dict[str, Any] = {"account": account_id} if account_id is not None else {}
    query = select(accounts.c.id, accounts.c.timezone).where(accounts.c.timezone.is_not(None))
    if account_id is not None:
        query = query.where(accounts.c.id == account_id)
    zoned = {a: tz for a, name in conn.execute(query) if (tz := zone_of(name)) is not None}
    hour = f"created_at - created_at % {HOUR}"
    out = [] if local_only else [(_sums_sql(hour, span, where), params) for span in (HOUR, HOUR_BY_KEY)]
    utc_where, utc_params = where, dict(params)
    if zoned:
        marks = ", ".join(f":z{i}" for i in range(len(zoned)))
        utc_where = f"{where} {'AND' if where else 'WHERE'} account_id NOT IN ({marks})"
        utc_params.update({f"z{i}": a for i, a in enumerate(zoned)})
    month = _month_sql_sqlite if conn.dialect.name == "sqlite" else _month_sql_postgresql
    day = _day_sql(None, 0, 0)
    out += [
        (_sums_sql(b, span, utc_where), utc_params) for b, span in ((day, DAY), (month(day), MONTH), (day, DAY_BY_KEY))
    ]
    for account, tz in sorted(zoned.items()):
        lo, hi = conn.execute(
            text(
                "SELECT (SELECT MIN(created_at) FROM usage_events WHERE account_id = :a), "
                "(SELECT MAX(created_at) FROM usage_events WHERE account_id = :a)"
            ),
            {"a": account},
        ).one()
        if lo is not None:
            day = _day_sql(tz, int(lo), int(hi) + 1)
            for bucket, span in ((day, DAY), (month(day), MONTH), (day, DAY_BY_KEY)):
                out.append((_sums_sql(bucket, span, "WHERE account_id = :a"), {"a": account}))
    return out


def _month_sql_sqlite(day: str) -> str:
    """``local_days.month_bucket`` of the day bucket ``day`` (SQL)."""
    return f"CAST(strftime('%s', ({day}) / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000"


def _month_sql_postgresql(day: str) -> str:
    return f"CAST(EXTRACT(EPOCH FROM date_trunc('month', to_timestamp(({day}) / 1000) AT TIME ZONE 'UTC')) AS BIGINT) * 1000"


def refill(conn: Connection, account_id: Optional[str] = None, local_only: bool = False) -> int:
    """Insert the rollup rows (of one account, or all; ``local_only``: its day and month rows)
    computed from the events; the rows must not be there (the caller deleted them)."""
    columns = ", ".join((*KEY_COLUMNS, *SUM_COLUMNS))
    written = 0
    for sql, params in _selects(conn, account_id, local_only):
        written += conn.execute(text(f"INSERT INTO usage_rollups ({columns}) {sql}"), params).rowcount
    return written


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
        return refill(conn, account_id)


def set_zone(conn: Connection, account_id: str, name: Optional[str]) -> None:
    """Give the account the zone ``name`` (None: UTC) and recompute its day and month rows, in
    ``conn``'s transaction (its UPDATE waits for the writers that read the old zone: FOR SHARE)."""
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(timezone=name))
    conn.execute(
        usage_rollups.delete().where(usage_rollups.c.account_id == account_id, usage_rollups.c.span_ms.in_(LOCAL_SPANS))
    )
    refill(conn, account_id, local_only=True)


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
        for sql, sql_params in _selects(conn, account_id):
            for r in conn.execute(text(sql), sql_params):
                expected[tuple(r[:5])] = tuple(int(v) for v in r[5:])
    return [
        (*ident, stored.get(ident), expected.get(ident))
        for ident in sorted(set(stored) | set(expected), key=str)
        if stored.get(ident) != expected.get(ident)
    ]
