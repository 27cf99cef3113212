"""Search across restarts: SIGKILL in the middle of indexing, and a rebuild (tollway search reindex)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import REPO, gateway_env, start_gateway, stop_gateway
from tests.search_corpus import CORPUS
from tests.search_helpers import (  # noqa: F401 (corpus: the fixture)
    INDEX_TIMEOUT,
    A,
    _dbs,
    new_thread,
    say,
    search,
    sqlite_path,
    status,
    store_rows,
    vec_connection,
    wait_indexed,
)
from tests.test_crash import spawn

SENTENCES = [m for ts in CORPUS[A]["alice"] + CORPUS[A]["bob"] for m in ts]


def _crash_message(i: int) -> str:
    """~3,000 characters (several chunks), no two chunks alike."""
    return " ".join(f"Crash case {i}, point {j}: {SENTENCES[j % len(SENTENCES)]}" for j in range(28))


@pytest.mark.parametrize("fresh_database", _dbs(), indirect=True)
def test_sigkill_mid_indexing_leaves_every_message_indexed_once(fake, tmp_data_dir, fresh_database) -> None:
    env = gateway_env(fake, tmp_data_dir, fresh_database, TOLLWAY_SEARCH_BATCH="4")
    gw = spawn(env)
    try:
        _, key = gw.mint(max_spend_usd=100, end_user_id="crash")
        tids = [new_thread(gw, key) for _ in range(4)]

        def run(t: int) -> None:
            for i in range(5):
                say(gw, key, tids[t], _crash_message(t * 5 + i))

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(run, range(4)))
        deadline = time.monotonic() + INDEX_TIMEOUT
        while (before := status(gw, gw.admin))["indexed_messages"] == 0:  # kill after some batches committed
            assert time.monotonic() < deadline, before
            time.sleep(0.01)
        assert before["backlog"] > 0, before  # ... and while others are still queued (batches of 4)
        os.killpg(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait(10)
    finally:
        if gw.proc.poll() is None:
            os.killpg(gw.proc.pid, signal.SIGKILL)
        gw._client.close()
    gw = spawn(env)
    try:
        wait_indexed(gw, [gw.admin])
        rows = store_rows(fresh_database, "SELECT id, message_id FROM search_chunks")
        by_message: dict[str, list[int]] = {}
        for cid, mid in rows:
            by_message.setdefault(mid, []).append(cid)
        assert len(by_message) == 40  # 20 user messages and 20 replies
        for ids in by_message.values():  # ids are seq * 1024 + ordinal: each chunk exactly once, none missing
            base = min(ids) - min(ids) % 1024
            assert sorted(ids) == list(range(base, base + len(ids)))
        sizes = sorted(len(v) for v in by_message.values())
        assert sizes[:20] == [1] * 20 and min(sizes[20:]) >= 4  # the replies, and the long user messages
        s = status(gw, gw.admin)
        assert s["indexed_messages"] == 40 and s["indexed_chunks"] == len(rows)
        vfile = sqlite_path(fresh_database) or tmp_data_dir / "search-vectors.db"
        conn = vec_connection(vfile)
        try:
            vec_ids = [r[0] for r in conn.execute("SELECT chunk_id FROM search_vec_g1")]
            int8_ids = [r[0] for r in conn.execute("SELECT chunk_id FROM search_vecq_g1")]
        finally:
            conn.close()
        assert Counter(vec_ids) == Counter(r[0] for r in rows)  # one vector per chunk, none left over
        assert Counter(int8_ids) == Counter(vec_ids)  # and one int8 copy of each
        data = search(gw, key, q="crash case refund blender", limit=100)["data"]
        pairs = [(h["message_id"], h["snippet"]) for h in data]
        assert data and len(pairs) == len(set(pairs))
    finally:
        stop_gateway(gw)


def test_search_off_has_no_routes_and_queues_nothing(fake, tmp_data_dir, fresh_database) -> None:
    gw = start_gateway(gateway_env(fake, tmp_data_dir, fresh_database, TOLLWAY_SEARCH="off"))
    try:
        _, key = gw.mint(max_spend_usd=10)
        say(gw, key, new_thread(gw, key), "Where is my refund?")
        assert gw.request("GET", "/v1/search", key, params={"q": "refund"}).status_code == 404
        assert gw.request("GET", "/v1/search/status", gw.admin).status_code == 404
        assert store_rows(fresh_database, "SELECT count(*) FROM search_queue")[0][0] == 0
    finally:
        stop_gateway(gw)


# ---------------------------------------------------------------- reindex
def _has_reindex_cli() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "tollway", "search", "--help"], cwd=str(REPO), capture_output=True, text=True
    )
    return probe.returncode == 0 and "reindex" in probe.stdout


@pytest.mark.parametrize("fresh_database", _dbs(), indirect=True)
def test_reindex_rebuilds_a_new_generation_with_the_same_answers(fake, tmp_data_dir, fresh_database) -> None:
    if not _has_reindex_cli():
        pytest.skip("`tollway search reindex` does not exist yet")
    env = gateway_env(fake, tmp_data_dir, fresh_database)
    gw = start_gateway(env)
    try:
        _, key = gw.mint(max_spend_usd=100, end_user_id="re")
        tid = new_thread(gw, key)
        for ts in CORPUS[A]["alice"]:
            for m in ts:
                say(gw, key, tid, m)
        wait_indexed(gw, [gw.admin])
        before = status(gw, gw.admin)
        top = search(gw, key, q="how do I get my money back", limit=3)["data"]
    finally:
        stop_gateway(gw)
    done = subprocess.run(
        [sys.executable, "-m", "tollway", "search", "reindex"], env=env, cwd=str(REPO), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    gw = start_gateway(env)
    try:
        deadline = time.monotonic() + INDEX_TIMEOUT
        while True:
            s = status(gw, gw.admin)
            if s["rebuild"] is None and s["active"]["generation"] != before["active"]["generation"]:
                break
            assert time.monotonic() < deadline, s
            time.sleep(0.2)
        assert s["indexed_chunks"] == before["indexed_chunks"]
        again = search(gw, key, q="how do I get my money back", limit=3)["data"]
        assert [h["message_id"] for h in again][:1] == [h["message_id"] for h in top][:1]
        # The new generation built its int8 copy with its vectors; the old one's went with it.
        old_gen, new_gen = before["active"]["generation"], s["active"]["generation"]
        conn = vec_connection(sqlite_path(fresh_database) or tmp_data_dir / "search-vectors.db")
        try:
            counts = [
                conn.execute(f"SELECT count(*) FROM {table}_rowids").fetchone()[0]
                for table in (f"search_vec_{new_gen}", f"search_vecq_{new_gen}")
            ]
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'search_vec%'")}
        finally:
            conn.close()
        assert counts == [s["indexed_chunks"]] * 2
        assert not {f"search_vec_{old_gen}", f"search_vecq_{old_gen}"} & names
    finally:
        stop_gateway(gw)
