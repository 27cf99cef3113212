"""ThreadStore: CRUD, account and end-user isolation, cursor pagination, leases, erasure, migration.

Every test runs on SQLite and (with TOLLWAY_TEST_DATABASE_URL) on PostgreSQL, each on
a throwaway database of its own.
"""

from __future__ import annotations

import os
import random
import secrets
import string
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from tests.conftest import DATABASES, throwaway_database
from tollway.config.settings import normalize_database_url
from tollway.keys.store import KeyStore
from tollway.store import Database
from tollway.threads import UNSET, NewMessage, ThreadStore


@dataclass
class Env:
    kind: str
    url: str
    db: Database
    store: ThreadStore
    keys: KeyStore

    def account(self, name: str = "acme") -> str:
        return self.keys.create_account(name)


@pytest.fixture(params=DATABASES)
def env(request) -> Iterator[Env]:
    with throwaway_database(request.param) as url:
        db = Database(normalize_database_url(url))
        db.migrate()
        try:
            yield Env(request.param, url, db, ThreadStore(db), KeyStore(db))
        finally:
            db.dispose()


def msg(role: str, body: str, **kw) -> NewMessage:
    return NewMessage(role=role, content=[{"type": "text", "text": body}], **kw)


def texts(messages) -> list[str]:
    return [m.content[0]["text"] for m in messages]


# ------------------------------------------------------------------ CRUD
def test_thread_crud_and_messages(env: Env) -> None:
    s = env.store
    acct = env.account()
    t = s.create_thread(acct, "key_1", "u1", {"topic": "tax"}, "You are terse.")
    assert t.id.startswith("thread_") and t.created_at == t.updated_at
    assert t.public() == {
        "id": t.id,
        "object": "thread",
        "end_user_id": "u1",
        "metadata": {"topic": "tax"},
        "system": "You are terse.",
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }
    got = s.get_thread(acct, t.id)
    assert got is not None and (got.id, got.key_id, got.account_id, got.system) == (
        t.id,
        "key_1",
        acct,
        "You are terse.",
    )

    # Defaults: no metadata -> {}, no system.
    bare = s.create_thread(acct, "key_1", None, None, None)
    assert s.get_thread(acct, bare.id).public()["metadata"] == {} and s.get_thread(acct, bare.id).system is None

    # Update: metadata only keeps system; UNSET keeps, None clears.
    time.sleep(0.002)
    u = s.update_thread(acct, t.id, metadata={"topic": "vat"})
    assert u.metadata == {"topic": "vat"} and u.system == "You are terse." and u.updated_at > t.updated_at
    u = s.update_thread(acct, t.id, system="Be kind.")
    assert (u.metadata, u.system) == ({"topic": "vat"}, "Be kind.")
    u = s.update_thread(acct, t.id, system=UNSET)
    assert u.system == "Be kind."
    u = s.update_thread(acct, t.id, system=None)
    assert u.system is None and u.metadata == {"topic": "vat"}
    assert s.update_thread(acct, "thread_nope", metadata={"a": 1}) is None

    # Messages: ids, order, every field round-trips, updated_at bumped.
    before = s.get_thread(acct, t.id).updated_at
    time.sleep(0.002)
    blocks = [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
    ]
    stored = s.append_messages(
        t.id,
        [
            NewMessage("user", blocks, metadata={"client": "web"}),
            NewMessage(
                "assistant",
                [{"type": "tool_use", "id": "tu_1", "name": "look", "input": {"q": 1}}],
                model="test-claude",
                usage={"input_tokens": 10, "output_tokens": 3},
                stop_reason="tool_use",
            ),
            NewMessage("user", [{"type": "tool_result", "tool_use_id": "tu_1", "content": "a cat"}]),
        ],
    )
    assert [m.id[:4] for m in stored] == ["msg_"] * 3 and len({m.id for m in stored}) == 3
    assert stored[0].seq < stored[1].seq < stored[2].seq
    assert s.get_thread(acct, t.id).updated_at > before
    everything = s.all_messages(t.id)
    assert [m.public() for m in everything] == [m.public() for m in stored]
    pub = everything[1].public()
    assert pub == {
        "id": stored[1].id,
        "object": "thread.message",
        "thread_id": t.id,
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "tu_1", "name": "look", "input": {"q": 1}}],
        "model": "test-claude",
        "usage": {"input_tokens": 10, "output_tokens": 3},
        "stop_reason": "tool_use",
        "metadata": None,
        "created_at": stored[1].created_at,
    }
    assert everything[0].content == blocks and everything[0].metadata == {"client": "web"}
    assert s.count_messages(t.id) == 3 and s.count_messages(bare.id) == 0
    # The newest first, as the history loader pages them.
    assert [m.id for m in s.list_messages(t.id, order="desc", limit=2)[0]] == [stored[2].id, stored[1].id]
    assert [m.id for m in s.list_messages(t.id, order="desc", limit=10)[0]] == [m.id for m in stored][::-1]

    with pytest.raises(LookupError):
        s.append_messages("thread_missing", [msg("user", "hi")])
    with pytest.raises(ValueError):
        s.append_messages(t.id, [msg("system", "no such role")])
    assert s.count_messages(t.id) == 3  # the failed appends stored nothing

    # Delete: gone with its messages; a second delete finds nothing; the other thread stays.
    assert s.delete_thread(acct, t.id) is True
    assert s.get_thread(acct, t.id) is None
    assert s.all_messages(t.id) == [] and s.count_messages(t.id) == 0
    assert s.delete_thread(acct, t.id) is False
    assert s.get_thread(acct, bare.id) is not None
    with env.db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM thread_messages")).scalar() == 0


def test_append_is_one_transaction(env: Env) -> None:
    s = env.store
    acct = env.account()
    t = s.create_thread(acct, "k", None, None, None)
    s.append_messages(t.id, [msg("user", "first")])
    with pytest.raises(ValueError):  # the bad one is last: nothing of the batch is stored
        s.append_messages(t.id, [msg("assistant", "ok"), msg("tool", "bad")])
    assert texts(s.all_messages(t.id)) == ["first"]


# ------------------------------------------------------------------ isolation
def test_accounts_and_end_users_are_isolated(env: Env) -> None:
    s = env.store
    a, b = env.account("a"), env.account("b")
    ta = s.create_thread(a, "ka", "alice", {"x": 1}, "A's prompt")
    ta2 = s.create_thread(a, "ka", "bob", None, None)
    tb = s.create_thread(b, "kb", "alice", None, None)
    s.append_messages(ta.id, [msg("user", "secret of a")])

    # Another account sees nothing of a's, whatever it tries.
    assert s.get_thread(b, ta.id) is None
    assert [t.id for t in s.list_threads(b)[0]] == [tb.id]
    assert s.update_thread(b, ta.id, metadata={"hacked": True}, system="pwned") is None
    assert s.delete_thread(b, ta.id) is False
    kept = s.get_thread(a, ta.id)
    assert kept.metadata == {"x": 1} and kept.system == "A's prompt"
    assert texts(s.all_messages(ta.id)) == ["secret of a"]
    with pytest.raises(ValueError):  # a's thread is no cursor in b's listing
        s.list_threads(b, after=ta.id)

    # End users within one account.
    assert s.get_thread(a, ta.id, end_user_id="alice").id == ta.id
    assert s.get_thread(a, ta.id, end_user_id="bob") is None
    assert s.get_thread(a, ta2.id, end_user_id="bob").id == ta2.id
    assert [t.id for t in s.list_threads(a, end_user_id="alice")[0]] == [ta.id]
    assert [t.id for t in s.list_threads(a, end_user_id="bob")[0]] == [ta2.id]
    assert s.list_threads(a, end_user_id="carol") == ([], False)
    assert [t.id for t in s.list_threads(a)[0]] == [ta2.id, ta.id]
    with pytest.raises(ValueError):  # bob's thread is no cursor in alice's listing
        s.list_threads(a, end_user_id="alice", after=ta2.id)


# ------------------------------------------------------------------ pagination
def test_list_threads_pages_newest_first(env: Env) -> None:
    s = env.store
    acct = env.account()
    other = env.account("other")
    made = []
    for i in range(23):
        made.append(s.create_thread(acct, "k", "u" if i % 2 else "v", {"i": i}, None).id)
        s.create_thread(other, "k", "u", None, None)
    newest_first = made[::-1]

    seen, after, pages = [], None, 0
    while True:
        page, more = s.list_threads(acct, limit=5, after=after)
        pages += 1
        seen += [t.id for t in page]
        if not more:
            break
        assert len(page) == 5
        after = page[-1].id
    assert seen == newest_first and pages == 5
    # Exactly at the edge: a full last page says no more.
    assert s.list_threads(acct, limit=23) == (s.list_threads(acct, limit=23)[0], False)
    assert len(s.list_threads(acct, limit=22)[0]) == 22 and s.list_threads(acct, limit=22)[1] is True
    assert s.list_threads(acct, after=made[0]) == ([], False)
    u_only, more = s.list_threads(acct, end_user_id="u", limit=100)
    assert [t.id for t in u_only] == [m for i, m in enumerate(made) if i % 2][::-1] and more is False
    with pytest.raises(ValueError):
        s.list_threads(acct, after="thread_unknown")


def walk(
    s: ThreadStore, tid: str, *, order: str, cursor: str, limit: int, start: str | None = None
) -> tuple[list[str], int]:
    """Every page from `start` (or the first page of `order`), following `cursor` ('before'/'after')."""
    ids, cur, pages = [], start, 0
    while True:
        page, more = s.list_messages(tid, order=order, limit=limit, **({cursor: cur} if cur else {}))
        pages += 1
        ids += [m.id for m in page]
        if not more:
            return ids, pages
        assert len(page) == limit
        # The next cursor is the page's item furthest in the direction of travel.
        oldest, newest = (page[0], page[-1]) if order == "asc" else (page[-1], page[0])
        cur = oldest.id if cursor == "before" else newest.id


def test_message_cursor_pagination_500(env: Env) -> None:
    s = env.store
    acct = env.account()
    t = s.create_thread(acct, "k", None, None, None)
    other = s.create_thread(acct, "k", None, None, None)
    stored = []
    for batch in range(10):
        stored += s.append_messages(
            t.id, [msg("user" if i % 2 == 0 else "assistant", f"m{batch * 50 + i}") for i in range(50)]
        )
        s.append_messages(other.id, [msg("user", f"other{batch}")])
    ids = [m.id for m in stored]
    assert texts(s.all_messages(t.id)) == [f"m{i}" for i in range(500)] and s.count_messages(t.id) == 500

    # Whole walks: forward in asc, back in desc (chat scroll-up), and the two mixed walks.
    assert walk(s, t.id, order="asc", cursor="after", limit=30) == (ids, 17)
    assert walk(s, t.id, order="desc", cursor="before", limit=30) == (ids[::-1], 17)
    # Forward in time with pages shown newest first, from the oldest message on.
    fwd_desc, pages = walk(s, t.id, order="desc", cursor="after", limit=50, start=ids[0])
    assert pages == 10 and fwd_desc == [i for k in range(1, 500, 50) for i in ids[k : k + 50][::-1]]
    # Back in time with pages shown oldest first (a UI prepending pages), from the newest on.
    back_asc, pages = walk(s, t.id, order="asc", cursor="before", limit=50, start=ids[-1])
    assert pages == 10 and back_asc == [i for k in range(499, 0, -50) for i in ids[max(k - 50, 0) : k]]
    assert sorted(back_asc, key=ids.index) == ids[:-1] and len(set(back_asc)) == 499

    # The first page with no cursor: oldest (asc) / newest (desc).
    page, more = s.list_messages(t.id, limit=30)
    assert [m.id for m in page] == ids[:30] and more
    page, more = s.list_messages(t.id, order="desc", limit=30)
    assert [m.id for m in page] == ids[::-1][:30] and more

    # Closest to the cursor, whatever the order.
    page, more = s.list_messages(t.id, order="desc", before=ids[100], limit=10)
    assert [m.id for m in page] == ids[90:100][::-1] and more
    page, more = s.list_messages(t.id, order="asc", before=ids[100], limit=10)
    assert [m.id for m in page] == ids[90:100] and more
    page, more = s.list_messages(t.id, order="asc", after=ids[100], limit=10)
    assert [m.id for m in page] == ids[101:111] and more
    page, more = s.list_messages(t.id, order="desc", after=ids[100], limit=10)
    assert [m.id for m in page] == ids[101:111][::-1] and more

    # Edges: has_more is False exactly when the page reaches the end.
    assert s.list_messages(t.id, order="desc", before=ids[10], limit=10) == (
        s.list_messages(t.id, order="desc", before=ids[10], limit=10)[0],
        False,
    )
    assert [m.id for m in s.list_messages(t.id, order="desc", before=ids[10], limit=10)[0]] == ids[:10][::-1]
    assert s.list_messages(t.id, order="desc", before=ids[11], limit=10)[1] is True
    assert s.list_messages(t.id, after=ids[489], limit=10)[1] is False
    assert s.list_messages(t.id, after=ids[488], limit=10)[1] is True
    assert s.list_messages(t.id, before=ids[0]) == ([], False)
    assert s.list_messages(t.id, order="desc", after=ids[-1]) == ([], False)
    page, more = s.list_messages(t.id, limit=500)
    assert len(page) == 500 and more is False

    # Both cursors: the window between them, from the end the order starts at.
    page, more = s.list_messages(t.id, order="asc", after=ids[200], before=ids[210], limit=5)
    assert [m.id for m in page] == ids[201:206] and more
    page, more = s.list_messages(t.id, order="desc", after=ids[200], before=ids[210], limit=5)
    assert [m.id for m in page] == ids[205:210][::-1] and more
    page, more = s.list_messages(t.id, after=ids[200], before=ids[210], limit=9)
    assert [m.id for m in page] == ids[201:210] and more is False

    assert [m.id for m in s.list_messages(t.id, order="desc", limit=25)[0]] == ids[-25:][::-1]

    # Unknown cursors, and a message of another thread, are errors.
    other_msg = s.all_messages(other.id)[0].id
    for bad in ("msg_unknown", other_msg):
        with pytest.raises(ValueError):
            s.list_messages(t.id, before=bad)
        with pytest.raises(ValueError):
            s.list_messages(t.id, after=bad)
    with pytest.raises(ValueError):
        s.list_messages(t.id, order="sideways")

    if env.kind == "sqlite":  # the cursor queries are index range scans, no full scan or sort
        with env.db.engine.connect() as conn:
            seq = conn.execute(text("SELECT seq FROM thread_messages WHERE id = :i"), {"i": ids[100]}).scalar()
            plan = " ".join(
                str(r[-1])
                for r in conn.execute(
                    text(
                        "EXPLAIN QUERY PLAN SELECT * FROM thread_messages WHERE thread_id = :t AND seq < :s ORDER BY seq DESC LIMIT 31"
                    ),
                    {"t": t.id, "s": seq},
                )
            )
        assert "ix_thread_messages_thread_seq" in plan and "TEMP B-TREE" not in plan, plan


# ------------------------------------------------------------------ leases
def test_leases(env: Env) -> None:
    s = env.store
    acct = env.account()
    t = s.create_thread(acct, "k", None, None, None)
    t2 = s.create_thread(acct, "k", None, None, None)

    assert s.acquire_lease(t.id, "tok-a", 60_000) is True
    assert s.acquire_lease(t.id, "tok-b", 60_000) is False
    assert s.acquire_lease(t.id, "tok-a", 60_000) is False  # held, even by the same holder
    assert s.acquire_lease(t2.id, "tok-b", 60_000) is True  # leases are per thread
    s.release_lease(t.id, "tok-wrong")
    assert s.acquire_lease(t.id, "tok-b", 60_000) is False  # a wrong token released nothing
    s.release_lease(t.id, "tok-a")
    assert s.acquire_lease(t.id, "tok-b", 60_000) is True
    s.release_lease(t.id, "tok-b")

    # Expiry.
    assert s.acquire_lease(t.id, "short", 100) is True
    assert s.acquire_lease(t.id, "next", 60_000) is False
    time.sleep(0.25)
    assert s.acquire_lease(t.id, "next", 60_000) is True
    s.release_lease(t.id, "short")  # the expired holder's late release must not free the new lease
    assert s.acquire_lease(t.id, "third", 60_000) is False
    assert s.acquire_lease("thread_missing", "x", 1000) is False

    # A race between separate engines (as separate processes would have): one winner.
    t3 = s.create_thread(acct, "k", None, None, None)
    dbs = [Database(env.db.url) for _ in range(4)]
    stores = [ThreadStore(d) for d in dbs]
    barrier = threading.Barrier(16)
    wins: list[str] = []

    def contend(i: int) -> None:
        barrier.wait()
        if stores[i % 4].acquire_lease(t3.id, f"w{i}", 60_000):
            wins.append(f"w{i}")

    workers = [threading.Thread(target=contend, args=(i,)) for i in range(16)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for d in dbs:
        d.dispose()
    assert len(wins) == 1
    with env.db.engine.connect() as conn:
        assert conn.execute(text("SELECT lease_token FROM threads WHERE id = :i"), {"i": t3.id}).scalar() == wins[0]


# ------------------------------------------------------------------ erasure
def random_text(n: int) -> str:
    return "".join(random.choices(string.ascii_letters + " ", k=n))


def fill_thread(s: ThreadStore, tid: str, marker: str, n: int) -> None:
    """Short and long (> 10 KB, incompressible) texts carrying `marker`, in every kind of block."""
    for i in range(n):
        if i % 5 == 0:
            body = random_text(6_000) + marker + random_text(6_000) + marker
        else:
            body = f"{marker} short {i}"
        s.append_messages(
            tid,
            [
                NewMessage("user", [{"type": "text", "text": body}], metadata={"note": marker}),
                NewMessage(
                    "assistant",
                    [
                        {"type": "tool_use", "id": f"tu_{i}", "name": "search", "input": {"q": marker}},
                        {"type": "text", "text": f"answer {marker}"},
                    ],
                    model="m",
                    usage={"input_tokens": 1, "output_tokens": 1},
                    stop_reason="end_turn",
                ),
            ],
        )


def make_threads(env: Env) -> tuple[str, dict[str, str], dict[str, str]]:
    """Three threads filled in turn (their rows share pages); returns (account, id->marker, ...)."""
    s = env.store
    acct = env.account()
    markers = {name: f"ERASEME{name}{secrets.token_hex(8)}" for name in ("A", "B", "C")}
    ids = {
        name: s.create_thread(acct, "k", "u", {"tag": marker}, f"system prompt {marker}").id
        for name, marker in markers.items()
    }
    for _round in range(4):
        for name in ("A", "B", "C"):
            fill_thread(s, ids[name], markers[name], 10)
    return acct, ids, markers


def assert_kept_readable(env: Env, acct: str, ids: dict[str, str], markers: dict[str, str]) -> None:
    for name in ("B", "C"):
        thread = env.store.get_thread(acct, ids[name])
        assert thread is not None and markers[name] in thread.system and thread.metadata == {"tag": markers[name]}
        msgs = env.store.all_messages(ids[name])
        assert len(msgs) == 80
        assert all(markers[name] in str(m.content) for m in msgs)
        assert sum(len(m.content[0].get("text", "")) > 10_000 for m in msgs) == 8


def sqlite_files(env: Env) -> dict[str, bytes]:
    path = env.db.url.split("sqlite:///", 1)[1]
    return {
        suffix: (Path(path + suffix).read_bytes() if Path(path + suffix).exists() else b"")
        for suffix in ("", "-wal", "-shm")
    }


@pytest.mark.parametrize("env", ["sqlite"], indirect=True)
def test_sqlite_delete_erases_text_from_database_wal_and_shm(env: Env) -> None:
    s = env.store
    acct, ids, markers = make_threads(env)
    files = sqlite_files(env)
    everything = files[""] + files["-wal"]
    for marker in markers.values():  # the check can see text: every marker is in the files now
        assert marker.encode() in everything

    # A reader holding a read transaction while the delete runs: the checkpoint must wait it out.
    reading, done = threading.Event(), threading.Event()

    def reader() -> None:
        raw = env.db.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("BEGIN")
            cur.execute("SELECT count(*) FROM thread_messages").fetchone()
            reading.set()
            time.sleep(0.5)
            cur.execute("COMMIT")
        finally:
            raw.close()
            done.set()

    threading.Thread(target=reader).start()
    assert reading.wait(5)
    assert s.delete_thread(acct, ids["A"]) is True
    assert done.is_set()  # delete_thread returned only after the reader let go

    files = sqlite_files(env)
    assert files["-wal"] == b""  # truncated
    for suffix, data in files.items():
        assert markers["A"].encode() not in data, f"erased text still in tollway.db{suffix}"
    assert markers["B"].encode() in files[""] and markers["C"].encode() in files[""]
    assert s.get_thread(acct, ids["A"]) is None and s.all_messages(ids["A"]) == []
    assert_kept_readable(env, acct, ids, markers)

    # Later writes (and another erasure) keep it so.
    fill_thread(s, s.create_thread(acct, "k", None, None, None).id, "LATER", 3)
    assert s.delete_thread(acct, ids["B"]) is True
    files = sqlite_files(env)
    for data in files.values():
        assert markers["A"].encode() not in data and markers["B"].encode() not in data
    assert markers["C"].encode() in files[""]
    with env.db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"

    # compact() gives the freed pages back and keeps everything else.
    size = Path(env.db.url.split("sqlite:///", 1)[1]).stat().st_size
    s.compact()
    files = sqlite_files(env)
    assert len(files[""]) < size and files["-wal"] == b""
    assert markers["A"].encode() not in files[""] and markers["C"].encode() in files[""]
    thread_c = s.get_thread(acct, ids["C"])
    assert thread_c is not None and len(s.all_messages(ids["C"])) == 80


def pg_data_dir(conn) -> Path | None:
    """The cluster's files when this process can read them (a local server, run as root/postgres)."""
    try:
        data_dir = Path(conn.execute(text("SHOW data_directory")).scalar())
        oid = conn.execute(text("SELECT oid FROM pg_database WHERE datname = current_database()")).scalar()
        base = data_dir / "base" / str(oid)
        os.listdir(base)
        return base
    except Exception:
        return None


def files_containing(base: Path, needle: bytes) -> list[str]:
    hits = []
    for root, _dirs, names in os.walk(base):
        for name in names:
            try:
                if needle in (Path(root) / name).read_bytes():
                    hits.append(name)
            except OSError:
                pass
    return hits


@pytest.mark.parametrize("env", DATABASES[1:], indirect=True)
def test_postgresql_delete_then_compact_leaves_no_copy_in_table_files(env: Env) -> None:
    s = env.store
    acct, ids, markers = make_threads(env)
    admin = env.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        base = pg_data_dir(admin)
        if base is not None:
            admin.execute(text("CHECKPOINT"))
            assert files_containing(base, markers["A"].encode())  # the check can see text

        assert s.delete_thread(acct, ids["A"]) is True
        # Logically gone at once: no SQL reader finds the text anywhere in either table.
        for table in ("threads", "thread_messages"):
            found = admin.execute(
                text(f"SELECT count(*) FROM {table} t WHERE t::text LIKE :m"), {"m": f"%{markers['A']}%"}
            ).scalar()
            assert found == 0
        assert_kept_readable(env, acct, ids, markers)

        s.compact()
        assert_kept_readable(env, acct, ids, markers)
        if base is None:
            pytest.skip("the cluster's files are not readable here: only the logical erasure was checked")
        admin.execute(text("CHECKPOINT"))
        assert files_containing(base, markers["A"].encode()) == []
        assert files_containing(base, markers["B"].encode())  # kept text is still on disk
    finally:
        admin.close()


# ------------------------------------------------------------------ migration
def alembic_config(conn) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("tollway.store").joinpath("migrations")))
    cfg.attributes["connection"] = conn
    return cfg


@pytest.mark.parametrize("kind", DATABASES)
def test_migration_0002_up_from_0001_and_down(kind: str) -> None:
    with throwaway_database(kind) as url:
        db = Database(normalize_database_url(url))
        try:
            with db.engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0001_core")
            assert "threads" not in inspect(db.engine).get_table_names()
            acct = KeyStore(db).create_account("before threads")

            with db.engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0002_threads")
            insp = inspect(db.engine)
            assert {"threads", "thread_messages", "accounts"} <= set(insp.get_table_names())
            assert {"ix_threads_account_seq", "ix_threads_account_end_user_seq"} <= {
                i["name"] for i in insp.get_indexes("threads")
            }
            assert "ix_thread_messages_thread_seq" in {i["name"] for i in insp.get_indexes("thread_messages")}
            fks = insp.get_foreign_keys("thread_messages")
            assert fks[0]["referred_table"] == "threads" and fks[0]["options"].get("ondelete") == "CASCADE"
            with db.engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002_threads"

            s = ThreadStore(db)
            t = s.create_thread(acct, "k", None, None, None)
            s.append_messages(t.id, [msg("user", "hello")])
            # The FK cascades too (for rows deleted by hand).
            with db.engine.begin() as conn:
                conn.execute(text("DELETE FROM threads WHERE id = :i"), {"i": t.id})
                assert conn.execute(text("SELECT count(*) FROM thread_messages")).scalar() == 0

            with db.engine.begin() as conn:
                command.downgrade(alembic_config(conn), "0001_core")
            names = set(inspect(db.engine).get_table_names())
            assert "threads" not in names and "thread_messages" not in names
            assert KeyStore(db).first_account() == acct  # 0001's data untouched

            db.migrate()  # and up again
            assert "thread_messages" in set(inspect(db.engine).get_table_names())
        finally:
            db.dispose()
