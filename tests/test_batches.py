"""The native batch APIs through the official SDKs, against a gateway (granian) and the fake
upstream, on both databases: Anthropic ``client.messages.batches.*`` and OpenAI
``client.files.*`` / ``client.batches.*``; a batch mixing successes and upstream errors, its
counts and results in line order; 402 at creation with nothing queued; cancel releasing the
holds of the queued lines; bad inputs as 400s (413 for a file too large) in each route's shape;
a standard key sees only its own batches and files, an admin key the account's."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import DATABASES, Gateway, gateway_env, start_gateway, stop_gateway, throwaway_database

MAX_REQUESTS = 20
MAX_FILE_MB = "0.02"  # 20,971 bytes
LINE_COST = 100  # out-claude / out-gpt: no input price, $10/Mtok output: max_tokens 10 holds 100 micro-USD


@pytest.fixture(scope="module", params=DATABASES)
def gw(request, fake) -> Iterator[Gateway]:
    data_dir = Path(tempfile.mkdtemp(prefix="tollway-batches-"))
    with throwaway_database(request.param) as url:
        env = gateway_env(
            fake, data_dir, url, TOLLWAY_BATCHES_MAX_REQUESTS=str(MAX_REQUESTS), TOLLWAY_BATCHES_MAX_FILE_MB=MAX_FILE_MB
        )
        gateway = start_gateway(env, server="granian")
        try:
            yield gateway
        finally:
            stop_gateway(gateway)
            shutil.rmtree(data_dir, ignore_errors=True)


def _claude(gw: Gateway, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)


def _openai(gw: Gateway, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)


def _params(text: str, model: str = "out-claude") -> dict[str, Any]:
    return {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": text}]}


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def _chat_line(custom_id: str, text: str, url: str = "/v1/chat/completions") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": _params(text, "out-gpt")}


def _until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _jobs(gw: Gateway, secret: str) -> list[dict[str, Any]]:
    r = gw.request("GET", "/v1/jobs?limit=100", secret)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_anthropic_message_batch_through_the_sdk(gw: Gateway) -> None:
    key_id, secret = gw.mint(max_spend_usd=1)
    client = _claude(gw, secret)
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "first", "params": _params("hello #words=3")},
            {"custom_id": "broken", "params": _params("fail #status=400")},
            {"custom_id": "third", "params": _params("again #words=5")},
        ]
    )
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert batch.request_counts.processing == 3 and batch.request_counts.succeeded == 0
    assert (batch.expires_at - batch.created_at).total_seconds() == 86_400
    ended = _until(lambda: (b := client.messages.batches.retrieve(batch.id)).processing_status == "ended" and b)
    assert ended, gw.log()[-3000:]
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (0, 2, 1, 0, 0)
    assert ended.ended_at is not None and ended.ended_at >= ended.created_at
    assert ended.results_url == f"{gw.url}/v1/messages/batches/{batch.id}/results"
    results = list(client.messages.batches.results(batch.id))
    assert [r.custom_id for r in results] == ["first", "broken", "third"]  # request order
    assert [r.result.type for r in results] == ["succeeded", "errored", "succeeded"]
    assert results[0].result.message.type == "message" and len(results[0].result.message.content[0].text.split()) == 3
    assert results[1].result.error.type == "error" and results[1].result.error.error.type == "invalid_request_error"
    # Each request ran as a job of the batch, billed as the call it was.
    jobs = [j for j in _jobs(gw, secret) if j["batch_id"] == batch.id]
    assert sorted(j["custom_id"] for j in jobs) == ["broken", "first", "third"]
    key = gw.wait_settled(key_id)
    assert key["reserved_micros"] == 0
    output = sum(r.result.message.usage.output_tokens for r in results if r.result.type == "succeeded")
    assert key["spent_micros"] == 10 * output
    page = client.messages.batches.list(limit=10)
    assert [b.id for b in page.data] == [batch.id] and page.first_id == page.last_id == batch.id
    assert page.has_more is False
    deleted = client.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)
    assert [j for j in _jobs(gw, secret) if j["batch_id"] == batch.id] == []  # its results went with it


def test_anthropic_list_pages_before_and_after(gw: Gateway) -> None:
    _, secret = gw.mint(max_spend_usd=1)
    client = _claude(gw, secret)
    made = [client.messages.batches.create(requests=[{"custom_id": "a", "params": _params("x")}]).id for _ in range(3)]
    first = client.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2] and first.has_more is True
    assert [b.id for b in client.messages.batches.list(limit=2, after_id=first.last_id).data] == [made[0]]
    assert [b.id for b in client.messages.batches.list(limit=5, before_id=made[0]).data] == made[:0:-1]
    assert [b.id for b in client.messages.batches.list(limit=2)] == made[::-1]  # the SDK's auto-paging


def test_openai_batch_through_the_sdk(gw: Gateway) -> None:
    key_id, secret = gw.mint(max_spend_usd=1)
    client = _openai(gw, secret)
    lines = [_chat_line("a", "one #words=2"), _chat_line("b", "bad #status=400"), _chat_line("c", "three #words=4")]
    uploaded = client.files.create(file=("input.jsonl", _jsonl(lines)), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.purpose == "batch" and uploaded.filename == "input.jsonl"
    assert uploaded.bytes == len(_jsonl(lines)) and uploaded.status == "processed"
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert client.files.content(uploaded.id).content == _jsonl(lines)
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "t1"}
    )
    assert batch.id.startswith("batch_") and batch.object == "batch" and batch.status == "in_progress"
    assert batch.request_counts.total == 3 and batch.metadata == {"run": "t1"}
    assert batch.expires_at - batch.created_at == 86_400
    done = _until(lambda: (b := client.batches.retrieve(batch.id)).status == "completed" and b)
    assert done, gw.log()[-3000:]
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
    assert done.completed_at is not None and done.output_file_id and done.error_file_id
    output = [orjson.loads(x) for x in client.files.content(done.output_file_id).content.splitlines()]
    assert [o["custom_id"] for o in output] == ["a", "c"]
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in output)
    assert [len(o["response"]["body"]["choices"][0]["message"]["content"].split()) for o in output] == [2, 4]
    assert output[0]["id"].startswith("batch_req_") and output[0]["response"]["request_id"]
    errors = [orjson.loads(x) for x in client.files.content(done.error_file_id).content.splitlines()]
    assert [e["custom_id"] for e in errors] == ["b"]
    assert errors[0]["response"]["status_code"] == 400 and "error" in errors[0]["response"]["body"]
    out_file = client.files.retrieve(done.output_file_id)
    assert out_file.purpose == "batch_output" and out_file.bytes == len(client.files.content(out_file.id).content)
    assert [b.id for b in client.batches.list(limit=5).data] == [batch.id]
    listed = {f.id for f in client.files.list()}
    assert {uploaded.id, done.output_file_id, done.error_file_id} <= listed
    assert [f.id for f in client.files.list(purpose="batch")] == [uploaded.id]
    key = gw.wait_settled(key_id)
    assert key["reserved_micros"] == 0
    assert key["spent_micros"] == 10 * sum(o["response"]["body"]["usage"]["completion_tokens"] for o in output)
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted is True and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    assert client.batches.retrieve(batch.id).status == "completed"  # its jobs keep the lines


def test_a_batch_the_key_cannot_afford_is_refused_whole(gw: Gateway) -> None:
    key_id, secret = gw.mint(max_spend_usd=0.00025)  # 250 micro-USD: two lines of 100, not three
    claude = _claude(gw, secret)
    with pytest.raises(anthropic.APIStatusError) as refused:
        claude.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": _params("x")} for i in range(3)])
    assert refused.value.status_code == 402
    assert refused.value.body["type"] == "error" and "nothing was queued" in refused.value.body["error"]["message"]
    client = _openai(gw, secret)
    file = client.files.create(file=("in.jsonl", _jsonl([_chat_line(f"l{i}", "x") for i in range(3)])), purpose="batch")
    with pytest.raises(openai.APIStatusError) as refused_openai:
        client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert refused_openai.value.status_code == 402 and refused_openai.value.body["code"] == "spend_cap_reached"
    assert _jobs(gw, secret) == [] and client.batches.list().data == [] and claude.messages.batches.list().data == []
    assert gw.key(key_id)["reserved_micros"] == 0
    two = claude.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": _params("x")} for i in range(2)])
    assert two.request_counts.processing == 2  # what fits is accepted


def test_cancel_cancels_the_queued_lines_and_releases_their_holds(gw: Gateway) -> None:
    key_id, secret = gw.mint(max_spend_usd=1)
    client = _claude(gw, secret)
    slow = [{"custom_id": f"s{i}", "params": _params("slow #delay_ms=1500 #words=2")} for i in range(6)]
    batch = client.messages.batches.create(requests=slow)
    assert gw.key(key_id)["reserved_micros"] == 6 * LINE_COST
    assert _until(lambda: sum(j["status"] == "running" for j in _jobs(gw, secret)) == 2, 10)  # 2 per key
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(batch.id)  # still processing
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    assert gw.key(key_id)["reserved_micros"] <= 2 * LINE_COST  # the queued lines' holds are released
    ended = _until(lambda: (b := client.messages.batches.retrieve(batch.id)).processing_status == "ended" and b)
    assert ended and ended.request_counts.canceled == 4 and ended.request_counts.succeeded == 2
    results = list(client.messages.batches.results(batch.id))
    assert [r.custom_id for r in results] == [f"s{i}" for i in range(6)]
    assert sorted(r.result.type for r in results) == ["canceled"] * 4 + ["succeeded"] * 2
    key = gw.wait_settled(key_id)
    assert key["reserved_micros"] == 0 and key["spent_micros"] == 2 * 10 * 2
    again = client.messages.batches.cancel(batch.id)  # an ended batch is answered as it is
    assert again.processing_status == "ended" and again.request_counts.canceled == 4


def test_openai_cancel(gw: Gateway) -> None:
    key_id, secret = gw.mint(max_spend_usd=1)
    client = _openai(gw, secret)
    lines = [_chat_line(f"c{i}", "slow #delay_ms=1500") for i in range(5)]
    file = client.files.create(file=("in.jsonl", _jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert _until(lambda: sum(j["status"] == "running" for j in _jobs(gw, secret)) == 2, 10)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    done = _until(lambda: (b := client.batches.retrieve(batch.id)).status == "cancelled" and b)
    assert done and done.cancelled_at is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 2, 3)
    errors = [orjson.loads(x) for x in client.files.content(done.error_file_id).content.splitlines()]
    assert [e["error"]["code"] for e in errors] == ["batch_cancelled"] * 3 and errors[0]["response"] is None
    assert gw.wait_settled(key_id)["reserved_micros"] == 0


def test_bad_anthropic_batches_are_400s_in_anthropic_shape(gw: Gateway) -> None:
    _, secret = gw.mint(max_spend_usd=1)
    client = _claude(gw, secret)
    bad = [
        [],
        [{"custom_id": "a", "params": _params("x")}, {"custom_id": "a", "params": _params("y")}],
        [{"custom_id": "not ok!", "params": _params("x")}],
        [{"custom_id": "a", "params": {**_params("x"), "stream": True}}],
        [{"custom_id": "a", "params": _params("x", model="no-such-model")}],
        [{"custom_id": f"r{i}", "params": _params("x")} for i in range(MAX_REQUESTS + 1)],
    ]
    for requests in bad:
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.batches.create(requests=requests)
        assert refused.value.body["type"] == "error", requests
        assert refused.value.body["error"]["type"] == "invalid_request_error"
    r = gw.request("POST", "/v1/messages/batches", secret, content=b"{not json")
    assert r.status_code == 400 and r.json()["type"] == "error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_nope")
    assert client.messages.batches.list().data == []


def test_bad_files_and_batches_are_400s_in_openai_shape(gw: Gateway) -> None:
    _, secret = gw.mint(max_spend_usd=1)
    client = _openai(gw, secret)
    good = _chat_line("a", "x")
    bad_files = [
        b"{not json}\n",
        _jsonl([good, {**good, "custom_id": "b", "url": "/v1/images/generations"}]),
        _jsonl([good, good]),  # the same custom_id twice
        _jsonl([{**good, "method": "GET"}]),
        _jsonl([{k: v for k, v in good.items() if k != "body"}]),
        _jsonl([{**good, "custom_id": f"l{i}"} for i in range(MAX_REQUESTS + 1)]),
        b"",
    ]
    for content in bad_files:
        with pytest.raises(openai.BadRequestError) as refused:
            client.files.create(file=("in.jsonl", content), purpose="batch")
        assert refused.value.body["type"] == "invalid_request_error", content[:80]
    big = _jsonl([{**good, "custom_id": f"l{i}", "body": {**good["body"], "pad": "x" * 2000}} for i in range(11)])
    with pytest.raises(openai.APIStatusError) as too_large:
        client.files.create(file=("in.jsonl", big), purpose="batch")
    assert too_large.value.status_code == 413 and too_large.value.body["code"] == "file_too_large"
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("in.jsonl", _jsonl([good])), purpose="fine-tune")
    raw = (
        b'--xx\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a\x00b.jsonl"\r\n\r\n'
        + _jsonl([good])
        + b"\r\n--xx--\r\n"
    )
    r = gw.request(
        "POST", "/v1/files", secret, content=raw, headers={"content-type": "multipart/form-data; boundary=xx"}
    )
    assert r.status_code == 400 and "NUL" in r.json()["error"]["message"], r.text
    r = gw.request("POST", "/v1/files", secret, json={"purpose": "batch"})  # not multipart
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    file = client.files.create(file=("in.jsonl", _jsonl([good])), purpose="batch")
    responses_file = client.files.create(
        file=("r.jsonl", _jsonl([{**good, "url": "/v1/responses", "body": {"model": "out-gpt", "input": "x"}}])),
        purpose="batch",
    )
    for kwargs in (
        {"input_file_id": file.id, "endpoint": "/v1/embeddings", "completion_window": "24h"},
        {"input_file_id": file.id, "endpoint": "/v1/chat/completions", "completion_window": "1h"},
        {"input_file_id": responses_file.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        {"input_file_id": file.id, "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": 3},
    ):
        with pytest.raises(openai.BadRequestError):
            client.batches.create(**kwargs)
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    unknown_model = client.files.create(
        file=("m.jsonl", _jsonl([{**good, "body": {**good["body"], "model": "no-such-model"}}])), purpose="batch"
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(input_file_id=unknown_model.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert "line 1" in refused.value.body["message"]
    assert client.batches.list().data == [] and _jobs(gw, secret) == []
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_keys_see_their_own_batches_and_admin_keys_the_accounts(gw: Gateway) -> None:
    _, owner = gw.mint(max_spend_usd=1)
    _, other = gw.mint(max_spend_usd=1)
    batch = _claude(gw, owner).messages.batches.create(requests=[{"custom_id": "a", "params": _params("x")}])
    file = _openai(gw, owner).files.create(file=("in.jsonl", _jsonl([_chat_line("a", "x")])), purpose="batch")
    with pytest.raises(anthropic.NotFoundError):
        _claude(gw, other).messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.NotFoundError):
        _claude(gw, other).messages.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        _openai(gw, other).files.retrieve(file.id)
    with pytest.raises(openai.NotFoundError):
        _openai(gw, other).batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")  # fmt: skip
    assert batch.id not in {b.id for b in _claude(gw, other).messages.batches.list()}
    assert file.id not in {f.id for f in _openai(gw, other).files.list()}
    admin = _claude(gw, gw.admin)
    assert admin.messages.batches.retrieve(batch.id).id == batch.id
    assert batch.id in {b.id for b in admin.messages.batches.list(limit=100)}
    assert _openai(gw, gw.admin).files.retrieve(file.id).id == file.id
    # The OpenAI routes do not show Anthropic batches, and the other way round.
    with pytest.raises(openai.NotFoundError):
        _openai(gw, owner).batches.retrieve(batch.id)
    r = httpx.get(f"{gw.url}/v1/messages/batches/{batch.id}", headers={"x-api-key": "tw_wrong"})
    assert r.status_code == 401 and r.json()["type"] == "error"


@pytest.mark.parametrize("kind", DATABASES)
def test_the_migration_makes_the_files_and_batches_tables_of_the_schema(kind: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tests.conftest import migrated_database
    from tollway.store import metadata

    with migrated_database(kind) as db, db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(context, metadata) if "'files'" in repr(d) or "batches" in repr(d)]
        tables = set(db.engine.dialect.get_table_names(conn))
    assert diffs == [] and {"files", "batches"} <= tables
