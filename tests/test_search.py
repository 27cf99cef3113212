"""GET /v1/search end to end: relevance, isolation, filters, pages, erasure, crash safety and reindexing.

One gateway per (database, vector index) holds the support-chat corpus of
tests/search_corpus.py (two accounts, several end users and a key without one); the
tests of ``TestCorpus`` read it. The crash and reindex tests start their own gateways.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.search_corpus import CORPUS, LATE
from tests.search_helpers import (  # noqa: F401 (corpus: the fixture)
    ALICE,
    BOB,
    BROAD,
    CAROL,
    DAVE,
    ERIN,
    FRANK,
    NOBODY,
    A,
    B,
    Corpus,
    Owner,
    assert_error,
    corpus,
    files_holding,
    new_thread,
    pieces_in_files,
    places_of,
    qdrant_local_vector,
    say,
    search,
    sqlite_path,
    status,
    store_rows,
    vec_connection,
    vector_file,
    wait_indexed,
)


class TestCorpus:
    def test_status_counts_the_corpus(self, corpus: Corpus) -> None:
        s = status(corpus.gw, corpus.admins[A])
        assert s["object"] == "search.status" and s["backlog"] == 0 and s["rebuild"] is None
        assert s["index"] == corpus.backend and s["active"]["index"] == corpus.backend
        assert s["active"]["dimensions"] == 384 and s["indexer"]["running"] is True
        users_a = sum(len(m) for users in [CORPUS[A]] for ts in users.values() for m in ts)
        late_a = sum(len(m) for (acct, _), m in LATE.items() if acct == A)
        assert s["indexed_messages"] == 2 * (users_a + late_a)  # each turn: the user message and the reply
        assert s["indexed_chunks"] == s["indexed_messages"]  # every message is short: one chunk
        users_b = sum(len(m) for ts in CORPUS[B].values() for m in ts)
        assert status(corpus.gw, corpus.admins[B])["indexed_messages"] == 2 * users_b

    def test_status_needs_an_admin_key(self, corpus: Corpus) -> None:
        r = corpus.gw.request("GET", "/v1/search/status", corpus.keys[ALICE])
        assert r.status_code == 403 and "error" in r.json()

    @pytest.mark.parametrize(
        "who, question, needle",
        [
            (ALICE, "how do I get my money back", "refund to my credit card"),
            (ALICE, "I want to stop paying every month", "cancel my monthly coffee subscription"),
            (ALICE, "send my package to a different house", "change the delivery address"),
            (BOB, "someone took money from me two times", "double charge"),
            (BOB, "please remove my profile and information", "personal data deleted"),
            (CAROL, "my earbuds no longer hold a charge", "wireless headphones stopped charging"),
            (ERIN, "where is my parcel", "stuck in transit"),
            (FRANK, "the couch came damaged", "torn cushion"),
            (NOBODY, "we keep hitting the request quota", "API rate limit"),
        ],
    )
    def test_a_paraphrase_finds_the_message(self, corpus: Corpus, who: Owner, question: str, needle: str) -> None:
        top = search(corpus.gw, corpus.keys[who], q=question, limit=3)["data"]
        assert any(needle in hit["snippet"] for hit in top), [h["snippet"] for h in top]
        assert all(corpus.owner.get(h["thread_id"]) == who for h in top)

    def test_an_exact_order_code_is_found(self, corpus: Corpus) -> None:
        # ORD-48213 (alice), ORD-48214 (bob), ORD-51999 (carol): the embedding barely tells them apart.
        for code, who in (("ORD-48213", ALICE), ("ORD-48214", BOB), ("ORD-51999", CAROL)):
            top = search(corpus.gw, corpus.admins[A], q=code, limit=3)["data"]
            assert code in top[0]["snippet"], (code, [h["snippet"] for h in top])
            assert corpus.owner[top[0]["thread_id"]] == who
            hit = top[0]
            marked = [hit["snippet"][m["start"] : m["end"]] for m in hit["highlights"]]
            assert code in marked, (hit["snippet"], hit["highlights"])
        # Another account's code is not in account A's results at all.
        data = search(corpus.gw, corpus.admins[A], q="ORD-77120", limit=50)["data"]
        assert all("ORD-77120" not in h["snippet"] for h in data)
        assert "ORD-77120" in search(corpus.gw, corpus.admins[B], q="ORD-77120", limit=1)["data"][0]["snippet"]

    def test_result_shape(self, corpus: Corpus) -> None:
        body = search(corpus.gw, corpus.keys[ALICE], q="refund", limit=2)
        hit = body["data"][0]
        assert set(hit) == {
            "object", "thread_id", "message_id", "role", "snippet", "highlights", "score", "created_at", "model",
        }  # fmt: skip
        assert hit["object"] == "search.result" and hit["role"] in ("user", "assistant")
        assert isinstance(hit["score"], float) and hit["score"] > 0 and isinstance(hit["created_at"], int)
        scores = [h["score"] for h in body["data"]]
        assert scores == sorted(scores, reverse=True)

    def test_standard_keys_see_only_their_scope(self, corpus: Corpus) -> None:
        gw = corpus.gw
        for who, key in corpus.keys.items():
            mine = corpus.owned(who)
            seen: set[str] = set()
            for q in BROAD:
                for hit in search(gw, key, q=q, limit=100)["data"]:
                    assert hit["thread_id"] in mine, (who, q, hit, corpus.owner.get(hit["thread_id"]))
                    seen.add(hit["thread_id"])
            assert seen, who
            for tid in seen:  # and the gateway agrees that the caller may read those threads
                assert gw.request("GET", f"/v1/threads/{tid}", key).status_code == 200

    def test_a_standard_key_cannot_widen_its_scope(self, corpus: Corpus) -> None:
        for who, other in ((ALICE, "bob"), (NOBODY, "dave"), (ERIN, "alice"), (ERIN, "frank")):
            data = search(corpus.gw, corpus.keys[who], q="password reset", end_user_id=other, limit=100)["data"]
            assert all(corpus.owner[h["thread_id"]] == who for h in data), who
        # Another key without an end user, in the same account: none of the first one's threads.
        _, other = corpus.gw.mint(max_spend_usd=1)
        for q in BROAD:
            assert search(corpus.gw, other, q=q, limit=100)["data"] == []

    def test_admin_sees_its_account_filtered_by_end_user(self, corpus: Corpus) -> None:
        gw = corpus.gw
        for acct in (A, B):
            everything: set[Owner] = set()
            for q in BROAD:
                for hit in search(gw, corpus.admins[acct], q=q, limit=100)["data"]:
                    assert hit["thread_id"] in corpus.account(acct), (acct, hit)
                    everything.add(corpus.owner[hit["thread_id"]])
            assert everything == {o for o in corpus.threads if o[0] == acct}
        for who in (ALICE, DAVE, ERIN):
            data = search(gw, corpus.admins[who[0]], q="password", end_user_id=who[1], limit=100)["data"]
            assert data and all(corpus.owner[h["thread_id"]] == who for h in data)
        # An end user of the other account: nothing.
        assert search(gw, corpus.admins[A], q="password", end_user_id="frank")["data"] == []

    def test_crowding_a_small_scope_keeps_its_hits(self, corpus: Corpus) -> None:
        # dave holds 20 near-identical password messages; carol and frank one each.
        for who, needle in ((CAROL, "reset link you emailed me"), (FRANK, "forgot my password")):
            admin = corpus.admins[who[0]]
            for key, extra in ((corpus.keys[who], {}), (admin, {"end_user_id": who[1]})):
                top = search(corpus.gw, key, q="I need to reset my password", limit=3, **extra)["data"]
                assert any(needle in h["snippet"] for h in top), (who, [h["snippet"] for h in top])
        top = search(corpus.gw, corpus.admins[A], q="I need to reset my password", limit=10)["data"]
        assert sum(corpus.owner[h["thread_id"]] == DAVE for h in top) >= 8  # account-wide, dave dominates

    def test_thread_filter(self, corpus: Corpus) -> None:
        tid = corpus.threads[ALICE][1]
        data = search(corpus.gw, corpus.keys[ALICE], q="order", thread_id=tid, limit=100)["data"]
        assert data and {h["thread_id"] for h in data} == {tid}
        # Another user's thread: nothing, for the user's key, and for the admin when filtered by another user.
        assert search(corpus.gw, corpus.keys[ALICE], q="order", thread_id=corpus.threads[BOB][0])["data"] == []
        admin = corpus.admins[A]
        assert search(corpus.gw, admin, q="order", thread_id=tid, end_user_id="bob")["data"] == []
        assert search(corpus.gw, corpus.admins[B], q="order", thread_id=tid)["data"] == []

    def test_role_filter(self, corpus: Corpus) -> None:
        key = corpus.keys[BOB]
        users = search(corpus.gw, key, q="w1 w2 parcel", role="user", limit=100)["data"]
        replies = search(corpus.gw, key, q="w1 w2 parcel", role="assistant", limit=100)["data"]
        assert users and all(h["role"] == "user" for h in users)
        assert replies and all(h["role"] == "assistant" for h in replies)
        assert all(h["snippet"].startswith("w0") for h in replies)
        assert search(corpus.gw, key, q="w1 w2 parcel", role="tool")["data"] == []

    def test_model_filter(self, corpus: Corpus) -> None:
        admin = corpus.admins[A]
        data = search(corpus.gw, admin, q="w1 w2", model="test-claude", limit=100)["data"]
        claude = {t for t, m in corpus.model_of.items() if m == "test-claude" and corpus.owner[t][0] == A}
        assert {h["thread_id"] for h in data} == claude
        assert all(h["model"] == "test-claude" and h["role"] == "assistant" for h in data)
        gpt = search(corpus.gw, admin, q="w1 w2", model="test-gpt", limit=100)["data"]
        assert gpt and all(h["model"] == "test-gpt" for h in gpt)
        assert search(corpus.gw, admin, q="w1 w2", model="no-such-model")["data"] == []

    def test_time_filters(self, corpus: Corpus) -> None:
        key, mid = corpus.keys[ALICE], corpus.t_mid
        late = search(corpus.gw, key, q="blender arrived broken", from_ms=mid, limit=100)["data"]
        assert late and all(h["created_at"] >= mid for h in late)
        assert any("replacement blender" in h["snippet"] for h in late)
        assert not any("cracked jug" in h["snippet"] for h in late)
        early = search(corpus.gw, key, q="blender arrived broken", to_ms=mid, limit=100)["data"]
        assert early and all(h["created_at"] < mid for h in early)
        assert any("cracked jug" in h["snippet"] for h in early)
        assert not any("replacement blender" in h["snippet"] for h in early)
        # from_ms inclusive, to_ms exclusive: a window of one exact millisecond holds its message.
        hit = next(h for h in late if "replacement blender" in h["snippet"])
        t = hit["created_at"]
        one = search(corpus.gw, key, q="replacement blender", from_ms=t, to_ms=t + 1)["data"]
        assert hit["message_id"] in {h["message_id"] for h in one}
        assert search(corpus.gw, key, q="replacement blender", from_ms=t, to_ms=t)["data"] == []
        assert search(corpus.gw, key, q="blender", from_ms=mid + 10**9)["data"] == []

    def test_pages_walk_the_whole_ranking(self, corpus: Corpus) -> None:
        admin = corpus.admins[A]
        whole = search(corpus.gw, admin, q="order delivery", limit=100)
        assert len(whole["data"]) > 20
        walked, after, pages = [], None, 0
        while True:
            params: dict[str, Any] = {"q": "order delivery", "limit": 7} | ({"after": after} if after else {})
            page = search(corpus.gw, admin, **params)
            walked += page["data"]
            pages += 1
            if not page["has_more"]:
                assert page["next"] is None
                break
            assert len(page["data"]) == 7 and page["next"]
            after = page["next"]
            assert pages < 100
        ids = [(h["message_id"], h["snippet"]) for h in walked]
        assert len(ids) == len(set(ids))  # no duplicates across pages
        # The pages are slices of the one-page answer: nothing skipped or reordered.
        one = [(h["message_id"], h["snippet"]) for h in whole["data"]]
        assert set(ids[: len(one)]) == set(one)
        assert ids[: len(one)] == one
        assert whole["has_more"] or len(ids) == len(one)

    @pytest.mark.parametrize(
        "params, param",
        [
            ({}, "q"),
            ({"q": "   "}, "q"),
            ({"q": "x" * 2001}, "q"),
            ({"q": "refund", "limit": "0"}, "limit"),
            ({"q": "refund", "limit": "101"}, "limit"),
            ({"q": "refund", "limit": "ten"}, "limit"),
            ({"q": "refund", "after": "not-a-cursor"}, "after"),
            ({"q": "refund", "after": "srch_" + base64.urlsafe_b64encode(b"0").decode().rstrip("=")}, "after"),
            ({"q": "refund", "after": "srch_!!!"}, "after"),
            ({"q": "refund", "from_ms": "yesterday"}, "from_ms"),
            ({"q": "refund", "from_ms": "1.5"}, "from_ms"),
            ({"q": "refund", "to_ms": "-1"}, "to_ms"),
            ({"q": "refund", "role": "system"}, "role"),
        ],
    )
    def test_bad_parameters_are_400(self, corpus: Corpus, params: dict[str, Any], param: str) -> None:
        for key in (corpus.keys[ALICE], corpus.admins[A]):
            assert_error(corpus.gw.request("GET", "/v1/search", key, params=params), param)

    def test_no_key_is_401(self, corpus: Corpus) -> None:
        assert corpus.gw.request("GET", "/v1/search", params={"q": "refund"}).status_code == 401

    def test_a_deleted_thread_is_never_returned(self, corpus: Corpus) -> None:
        gw, key = corpus.gw, corpus.keys[ERIN]
        tid = new_thread(gw, key)
        say(gw, key, tid, "The kettle lid snapped off, reference pelican-gazebo-9035.")
        wait_indexed(gw, [corpus.admins[B]])
        assert search(gw, key, q="pelican-gazebo-9035", limit=1)["data"][0]["thread_id"] == tid
        assert gw.request("DELETE", f"/v1/threads/{tid}", key).status_code == 200
        for k, extra in ((key, {}), (corpus.admins[B], {}), (corpus.admins[B], {"end_user_id": "erin"})):
            for q in ("pelican-gazebo-9035", "the kettle lid snapped off", "w1 w2"):
                data = search(gw, k, q=q, limit=100, **extra)["data"]
                assert tid not in {h["thread_id"] for h in data}
        assert status(gw, corpus.admins[B])["indexed_messages"] == 2 * sum(
            len(m) for ts in CORPUS[B].values() for m in ts
        )

    def test_deletion_erases_text_and_vectors_from_the_files(self, corpus: Corpus) -> None:
        gw, key = corpus.gw, corpus.keys[CAROL]
        phrase = "zebra-quokka-4471"
        tid = new_thread(gw, key)
        say(gw, key, tid, f"Note for the courier: the side gate code is {phrase}, please ring twice.")
        wait_indexed(gw, [corpus.admins[A]])
        assert search(gw, key, q=phrase, limit=1)["data"][0]["thread_id"] == tid
        assert len(store_rows(gw.database_url, "SELECT id FROM search_chunks WHERE thread_id = :t", t=tid)) == 2
        # The user message's vector (the reply, "w0 ... w4", has the same vector as every other reply).
        sql = "SELECT id FROM search_chunks WHERE thread_id = :t AND role = 'user'"
        ids = [r[0] for r in store_rows(gw.database_url, sql, t=tid)]
        assert len(ids) == 1
        vectors: list[bytes] = []
        vfile = vector_file(corpus)
        if vfile is not None:
            conn = vec_connection(vfile)
            try:
                marks = ",".join("?" * len(ids))
                vectors = [
                    r[0] for r in conn.execute(f"SELECT emb FROM search_vec_g1 WHERE chunk_id IN ({marks})", ids)
                ]
                # ... and its int8 copy (the first pass of account-wide queries)
                vectors += [
                    r[0] for r in conn.execute(f"SELECT emb FROM search_vecq_g1 WHERE chunk_id IN ({marks})", ids)
                ]
            finally:
                conn.close()
            assert [len(v) for v in vectors] == [4 * 384, 384]
            # A vector lies in a vec0 chunk blob spread over overflow pages: look for its 32-byte pieces.
            assert pieces_in_files(places_of(gw), vectors[0]) > 40  # before the delete the check sees it
            assert pieces_in_files(places_of(gw), vectors[1]) >= 10  # (of 12)
        qdrant_vector = qdrant_local_vector(gw.data_dir / "qdrant", ids[0]) if corpus.backend == "qdrant" else None
        store, places = sqlite_path(gw.database_url), places_of(gw)
        assert gw.request("DELETE", f"/v1/threads/{tid}", key).status_code == 200
        assert tid not in {h["thread_id"] for h in search(gw, key, q=phrase, limit=100)["data"]}
        assert store_rows(gw.database_url, "SELECT id FROM search_chunks WHERE thread_id = :t", t=tid) == []
        if store is not None:  # PostgreSQL keeps dead tuples until VACUUM FULL (ThreadStore.delete_thread)
            assert files_holding(places, phrase.encode()) == []
        for v in vectors:
            found = [p.name for base in places for p in base.rglob("*") if p.is_file() and pieces_in_files([p], v)]
            assert pieces_in_files(places, v) == 0, ("a deleted message's vector is still in a file", found)
        if qdrant_vector is not None:
            # qdrant-client's local mode deletes with a plain SQLite DELETE: this holds where Python's
            # sqlite3 is built with SQLITE_SECURE_DELETE (3.40.1 here is), not on every build.
            left = pieces_in_files([gw.data_dir / "qdrant"], qdrant_vector, size=36)
            assert left == 0, f"{left} of 48 pieces of the deleted vector remain in the Qdrant local-mode storage"


# ---------------------------------------------------------------- crash safety
