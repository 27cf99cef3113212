"""Helpers of the search tests: requests, waiting for the index, raw-file reads, and the corpus gateways."""

from __future__ import annotations

import shutil
import sqlite3
import struct
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from _pytest.mark.structures import ParameterSet
from sqlalchemy import create_engine, text

from tests.conftest import DATABASES, Gateway, gateway_env, start_gateway, stop_gateway, throwaway_database
from tests.search_corpus import CLAUDE_THREADS, CORPUS, LATE
from tests.test_keys import _new_account
from tollway.config.settings import normalize_database_url

Owner = tuple[str, Optional[str]]  # (account, end user or None for the key without one)

Owner = tuple[str, Optional[str]]  # (account, end user or None for the key without one)
INDEX_TIMEOUT = 120.0


def _combos() -> list[Any]:
    out = []
    for db in DATABASES:
        kind, marks = (db.values[0], db.marks) if isinstance(db, ParameterSet) else (db, ())
        for backend in ("sqlite-vec", "qdrant"):
            out.append(pytest.param((kind, backend), id=f"{kind}-{backend}", marks=marks))
    return out


def _dbs() -> list[Any]:
    return [pytest.param(d.values[0], marks=d.marks) if isinstance(d, ParameterSet) else d for d in DATABASES]


# ---------------------------------------------------------------- helpers
def search(gw: Gateway, key: str, **params: Any) -> dict[str, Any]:
    r = gw.request("GET", "/v1/search", key, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and isinstance(body["data"], list)
    return body


def status(gw: Gateway, admin: str) -> dict[str, Any]:
    r = gw.request("GET", "/v1/search/status", admin)
    assert r.status_code == 200, r.text
    return r.json()


def wait_indexed(gw: Gateway, admins: list[str], timeout: float = INDEX_TIMEOUT) -> None:
    """Until every account's backlog is 0 (status counts only the caller's account)."""
    deadline = time.monotonic() + timeout
    while True:
        states = [status(gw, a) for a in admins]
        if all(s["backlog"] == 0 and s["active"] is not None for s in states):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"indexing did not finish in {timeout} s: {states}\n{gw.log()[-3000:]}")
        time.sleep(0.2)


def new_thread(gw: Gateway, key: str) -> str:
    r = gw.request("POST", "/v1/threads", key, json={})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def say(gw: Gateway, key: str, thread_id: str, content: str, model: str = "test-gpt") -> None:
    body = {"model": model, "content": content, "max_tokens": 5}
    r = gw.request("POST", f"/v1/threads/{thread_id}/messages", key, json=body)
    assert r.status_code == 200, r.text


def sqlite_path(database_url: str) -> Optional[Path]:
    return Path(database_url.split("sqlite:///", 1)[1]) if database_url.startswith("sqlite") else None


def store_rows(database_url: str, sql: str, **params: Any) -> list[Any]:
    """Rows of a query against the gateway's store (a separate connection, closed at once)."""
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def vec_connection(path: Path) -> Any:
    """A pysqlite3 connection with sqlite-vec, to read a vec0 table (the stdlib sqlite3 cannot load it)."""
    import sqlite_vec
    from pysqlite3 import dbapi2

    conn = dbapi2.connect(str(path))
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    return conn


def vector_file(c: "Corpus") -> Optional[Path]:
    """Where sqlite-vec keeps this gateway's vectors (None with Qdrant)."""
    if c.backend != "sqlite-vec":
        return None
    return sqlite_path(c.gw.database_url) or c.gw.data_dir / "search-vectors.db"


def files_holding(paths: list[Path], needle: bytes) -> list[str]:
    found = []
    for base in paths:
        for path in [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()):
            if "models" in path.parts:
                continue
            try:
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                pass
    return found


def pieces_in_files(paths: list[Path], vector: bytes, size: int = 32) -> int:
    """How many of ``vector``'s pieces of ``size`` bytes (48 of a float[384], 12 of an int8[384]) some file holds."""
    files = [p for base in paths for p in ([base] if base.is_file() else sorted(base.rglob("*")))]
    blobs = [p.read_bytes() for p in files if p.is_file() and "models" not in p.parts]
    pieces = [vector[i : i + size] for i in range(0, len(vector), size)]
    return sum(any(piece in blob for blob in blobs) for piece in pieces)


def qdrant_local_vector(path: Path, chunk_id: int) -> bytes:
    """A point's vector as qdrant-client's local mode pickles it (doubles, 9 bytes each), read from its
    storage.sqlite files, and checked to be found in them (the erasure check looks for its pieces)."""
    import pickle

    for storage in path.rglob("storage.sqlite"):
        conn = sqlite3.connect(f"file:{storage}?mode=ro", uri=True)
        try:
            for (blob,) in conn.execute("SELECT point FROM points"):
                point = pickle.loads(blob)
                if int(point.id) == chunk_id:
                    raw = b"".join(b"G" + struct.pack(">d", x) for x in point.vector)
                    assert pieces_in_files([path], raw, size=36) == 96
                    return raw[: 48 * 36]
        finally:
            conn.close()
    raise AssertionError(f"no point {chunk_id} in {path}")


def places_of(gw: Gateway) -> list[Path]:
    """The data dir, and the SQLite store's directory (tollway.db, -wal, -shm)."""
    store = sqlite_path(gw.database_url)
    return [gw.data_dir] + ([store.parent] if store else [])


def assert_error(r: Any, param: Optional[str] = None) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and "type" in err
    if param is not None:
        assert err.get("param") == param, err


# ---------------------------------------------------------------- the corpus
@dataclass
class Corpus:
    gw: Gateway
    db: str
    backend: str
    admins: dict[str, str]  # account -> admin secret
    keys: dict[Owner, str] = field(default_factory=dict)  # standard keys
    threads: dict[Owner, list[str]] = field(default_factory=dict)
    owner: dict[str, Owner] = field(default_factory=dict)  # thread id -> owner
    model_of: dict[str, str] = field(default_factory=dict)  # thread id -> model of its turns
    t_mid: int = 0

    def owned(self, *owners: Owner) -> set[str]:
        return {t for o in owners for t in self.threads.get(o, [])}

    def account(self, acct: str) -> set[str]:
        return {t for o, ts in self.threads.items() if o[0] == acct for t in ts}


def _build(gw: Gateway, db: str, backend: str) -> Corpus:
    c = Corpus(gw, db, backend, {"A": gw.admin, "B": _new_account(gw, "search-b")})
    jobs: list[tuple[str, str, list[str], str]] = []
    for acct, users in CORPUS.items():
        for user, threads in users.items():
            fields: dict[str, Any] = {"max_spend_usd": 100} | ({"end_user_id": user} if user else {})
            _, key = gw.mint(admin=c.admins[acct], **fields)
            c.keys[(acct, user)] = key
            for i, messages in enumerate(threads):
                tid = new_thread(gw, key)
                model = "test-claude" if (acct, user, i) in CLAUDE_THREADS else "test-gpt"
                c.threads.setdefault((acct, user), []).append(tid)
                c.owner[tid], c.model_of[tid] = (acct, user), model
                jobs.append((key, tid, messages, model))

    def run(job: tuple[str, str, list[str], str]) -> None:
        key, tid, messages, model = job
        for m in messages:
            say(gw, key, tid, m, model)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(run, jobs))
    time.sleep(0.05)
    c.t_mid = int(time.time() * 1000)
    time.sleep(0.05)
    for (acct, user), messages in LATE.items():
        key = c.keys[(acct, user)]
        tid = new_thread(gw, key)
        c.threads[(acct, user)].append(tid)
        c.owner[tid], c.model_of[tid] = (acct, user), "test-gpt"
        run((key, tid, messages, "test-gpt"))
    wait_indexed(gw, list(c.admins.values()))
    return c


@pytest.fixture(scope="module", params=_combos())
def corpus(request, fake) -> Iterator[Corpus]:
    db, backend = request.param
    data_dir = Path(tempfile.mkdtemp(prefix="tollway-search-"))
    extra = {"TOLLWAY_QDRANT_URL": str(data_dir / "qdrant")} if backend == "qdrant" else {}
    with throwaway_database(db) as url:
        gw = start_gateway(gateway_env(fake, data_dir, url, **extra))
        try:
            yield _build(gw, db, backend)
        finally:
            stop_gateway(gw)
            shutil.rmtree(data_dir, ignore_errors=True)


A, B = "A", "B"
ALICE, BOB, CAROL, DAVE, NOBODY = (A, "alice"), (A, "bob"), (A, "carol"), (A, "dave"), (A, None)
ERIN, FRANK = (B, "erin"), (B, "frank")
BROAD = ["refund", "password", "order", "my account", "delivery problem", "invoice", "w1 w2"]
