"""Account events as Standard Webhooks: the /v1/webhook-endpoints routes (validation, admin
only), and each event type the gateway emits, delivered to a local receiver and verified by
the ``standardwebhooks`` package; on SQLite and PostgreSQL (tests/test_events_delivery.py:
retries, ordering, disabling, rotation, restarts)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests import events_support as support
from tests.conftest import Gateway
from tests.events_support import deliveries, endpoint, send_test, verified, wait
from tests.fakes.receiver import Receiver
from tollway.webhooks import WebhookVerificationError, unwrap

# The module's gateway per database and its receiver (tests/events_support.py).
db_kind, gw, receiver = support.db_kind, support.gw, support.receiver


# ---------------------------------------------------------------- routes
def test_endpoint_lifecycle(gw: Gateway, receiver: Receiver) -> None:
    made = endpoint(gw, receiver.url + "/crud", ["key.revoked"], description="ops")
    assert made["secret"].startswith("whsec_") and made["events"] == ["key.revoked"]
    assert made["disabled"] is False and made["description"] == "ops"
    got = gw.request("GET", f"/v1/webhook-endpoints/{made['id']}", gw.admin).json()
    assert "secret" not in got and got["url"] == receiver.url + "/crud"
    listed = gw.request("GET", "/v1/webhook-endpoints?limit=100", gw.admin).json()
    assert made["id"] in [e["id"] for e in listed["data"]]
    patched = gw.request(
        "PATCH", f"/v1/webhook-endpoints/{made['id']}", gw.admin, json={"events": ["key.rotated"], "disabled": True}
    ).json()
    assert patched["events"] == ["key.rotated"] and patched["disabled"] is True and "secret" not in patched
    assert patched["disabled_reason"] == "disabled by an admin"
    again = gw.request("PATCH", f"/v1/webhook-endpoints/{made['id']}", gw.admin, json={"disabled": False}).json()
    assert again["disabled"] is False and again["disabled_reason"] is None
    r = gw.request("DELETE", f"/v1/webhook-endpoints/{made['id']}", gw.admin)
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert gw.request("GET", f"/v1/webhook-endpoints/{made['id']}", gw.admin).status_code == 404


@pytest.mark.parametrize(
    "body, param",
    [
        ({"events": ["*"]}, "url"),
        ({"url": "ftp://example.com/x", "events": ["*"]}, "url"),
        ({"url": "http://", "events": ["*"]}, "url"),
        ({"url": "https://example.com/#frag", "events": ["*"]}, "url"),
        ({"url": "https://example.com/x"}, "events"),
        ({"url": "https://example.com/x", "events": []}, "events"),
        ({"url": "https://example.com/x", "events": ["key.exploded"]}, "events"),
        ({"url": "https://example.com/x", "events": "key.revoked"}, "events"),
        ({"url": "https://example.com/x", "events": ["*"], "description": 5}, "description"),
        ({"url": "https://example.com/x", "events": ["*"], "secret": "whsec_mine"}, "secret"),
    ],
)
def test_bad_input_is_400(gw: Gateway, body: dict[str, Any], param: str) -> None:
    r = gw.request("POST", "/v1/webhook-endpoints", gw.admin, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_bad_patches_and_unknown_ids(gw: Gateway, receiver: Receiver) -> None:
    made = endpoint(gw, receiver.url + "/bad")
    path = f"/v1/webhook-endpoints/{made['id']}"
    for body, param in [
        ({"disabled": "yes"}, "disabled"),
        ({"rotate_secret": 1}, "rotate_secret"),
        ({"rotation_grace_seconds": 10}, "rotation_grace_seconds"),
        ({"rotate_secret": True, "rotation_grace_seconds": -1}, "rotation_grace_seconds"),
        ({"events": ["nope"]}, "events"),
    ]:
        r = gw.request("PATCH", path, gw.admin, json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert gw.request("GET", path + "/deliveries?after=evd_nope", gw.admin).status_code == 400
    assert gw.request("GET", path + "/deliveries?limit=0", gw.admin).status_code == 400
    assert gw.request("POST", path + "/deliveries/evd_nope/redeliver", gw.admin).status_code == 404
    assert gw.request("POST", "/v1/webhook-endpoints/ep_nope/test", gw.admin).status_code == 404
    assert gw.request("PATCH", "/v1/webhook-endpoints/ep_nope", gw.admin, json={}).status_code == 404
    assert gw.request("DELETE", "/v1/webhook-endpoints/ep_nope", gw.admin).status_code == 404


def test_standard_keys_get_403(gw: Gateway, receiver: Receiver) -> None:
    _, secret = gw.mint(max_spend_usd=1)
    made = endpoint(gw, receiver.url + "/forbidden")
    for method, path in [
        ("POST", "/v1/webhook-endpoints"),
        ("GET", "/v1/webhook-endpoints"),
        ("GET", f"/v1/webhook-endpoints/{made['id']}"),
        ("GET", f"/v1/webhook-endpoints/{made['id']}/deliveries"),
        ("POST", f"/v1/webhook-endpoints/{made['id']}/test"),
    ]:
        r = gw.request(method, path, secret, json={"url": receiver.url, "events": ["*"]})
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "admin_key_required"
    assert gw.request("GET", "/v1/webhook-endpoints").status_code == 401


# ---------------------------------------------------------------- delivery
def test_test_event_is_a_verified_standard_webhook(gw: Gateway, receiver: Receiver) -> None:
    made = endpoint(gw, receiver.url + "/test-event")
    sent = send_test(gw, made["id"])
    [got] = receiver.wait_for("/test-event", 1)
    payload = verified(made["secret"], got)
    assert payload["type"] == "webhook.test" and payload["data"]["endpoint_id"] == made["id"]
    assert got.headers["webhook-id"] == sent["event_id"] and got.headers["webhook-id"].startswith("msg_")
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    assert payload["timestamp"].endswith("Z")
    with pytest.raises(WebhookVerificationError):
        unwrap("whsec_" + "A" * 43, got.headers, got.body)
    with pytest.raises(WebhookVerificationError):
        unwrap(made["secret"], got.headers, got.body + b" ")
    log = wait(lambda: [d for d in deliveries(gw, made["id"]) if d["state"] == "succeeded"])
    assert log[0]["id"] == sent["delivery_id"] and log[0]["event_type"] == "webhook.test"
    [attempt] = log[0]["attempts"]
    assert attempt["status"] == 200 and attempt["latency_ms"] >= 0 and attempt["response_excerpt"] == '{"ok":true}'


def test_key_events(gw: Gateway, receiver: Receiver) -> None:
    made = endpoint(gw, receiver.url + "/keys", ["key.revoked", "key.rotated"])
    key_id, _ = gw.mint(max_spend_usd=1, name="events-key", end_user_id="u-ev")
    r = gw.request("POST", f"/v1/keys/{key_id}/rotate", gw.admin, json={"grace_seconds": 60})
    assert r.status_code == 200, r.text
    assert gw.request("DELETE", f"/v1/keys/{key_id}", gw.admin).status_code == 200
    assert gw.request("DELETE", f"/v1/keys/{key_id}", gw.admin).status_code in (200, 404)  # no second event
    got = receiver.wait_for("/keys", 2)
    payloads = [verified(made["secret"], g) for g in got]
    assert [p["type"] for p in payloads] == ["key.rotated", "key.revoked"]
    rotated, revoked = (p["data"] for p in payloads)
    assert rotated["key_id"] == key_id and rotated["name"] == "events-key" and rotated["end_user_id"] == "u-ev"
    assert rotated["previous_secret_expires_at"] > time.time() * 1000
    assert revoked["key_id"] == key_id and revoked["revoked_at"] > 0
    time.sleep(0.5)
    assert len(receiver.at("/keys")) == 2


def test_cap_warning_and_cap_exceeded_once_per_window(gw: Gateway, receiver: Receiver) -> None:
    made = endpoint(gw, receiver.url + "/caps", ["key.cap_warning", "key.cap_exceeded"])
    key_id, secret = gw.mint(max_spend_usd=0.001)  # 1,000 micros: 100 output tokens of out-gpt
    body = {"model": "out-gpt", "messages": [{"role": "user", "content": "spend #words=100"}]}
    assert gw.request("POST", "/v1/chat/completions", secret, json=body).status_code == 200
    gw.wait_settled(key_id)
    for _ in range(3):
        assert gw.request("POST", "/v1/chat/completions", secret, json=body).status_code == 402
    got = receiver.wait_for("/caps", 2)
    time.sleep(0.5)
    payloads = [verified(made["secret"], g) for g in receiver.at("/caps")]
    assert sorted(p["type"] for p in payloads) == ["key.cap_exceeded", "key.cap_warning"], payloads
    by_type = {p["type"]: p["data"] for p in payloads}
    assert by_type["key.cap_warning"]["threshold_percent"] == 80
    assert by_type["key.cap_warning"]["key_id"] == key_id and by_type["key.cap_warning"]["max_spend_micros"] == 1000
    assert by_type["key.cap_exceeded"]["key_id"] == key_id and by_type["key.cap_exceeded"]["period"] == "total"
    assert len(got) == 2


def test_key_expiring(gw: Gateway, receiver: Receiver) -> None:
    made = endpoint(gw, receiver.url + "/expiring", ["key.expiring"])
    soon = int(time.time() * 1000) + 3600_000
    key_id, _ = gw.mint(max_spend_usd=1, expires_at=soon)
    [got] = receiver.wait_for("/expiring", 1)
    payload = verified(made["secret"], got)
    assert payload["type"] == "key.expiring" and payload["data"] == {
        "key_id": key_id, "name": payload["data"]["name"], "end_user_id": None, "expires_at": soon,
    }  # fmt: skip
    time.sleep(0.6)  # three more checks: once per key
    assert len(receiver.at("/expiring")) == 1


def test_job_events(gw: Gateway, receiver: Receiver) -> None:
    """job.succeeded and job.failed, written in the transaction that ends the job (once each)."""
    made = endpoint(gw, receiver.url + "/jobs", ["job.succeeded", "job.failed"])
    _, secret = gw.mint(max_spend_usd=1)
    chat = {"model": "test-gpt", "messages": [{"role": "user", "content": "hello #words=3"}]}
    failing = {**chat, "messages": [{"role": "user", "content": "x #status=400"}]}
    ids = []
    for body in (chat, failing):
        r = gw.request("POST", "/v1/jobs", secret, json={"endpoint": "/v1/chat/completions", "body": body})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    got = receiver.wait_for("/jobs", 2)
    payloads = {p["data"]["id"]: p for p in (verified(made["secret"], g) for g in got)}
    assert (
        payloads[ids[0]]["type"] == "job.succeeded"
        and payloads[ids[0]]["data"]["result"]["object"] == "chat.completion"
    )
    assert payloads[ids[1]]["type"] == "job.failed" and payloads[ids[1]]["data"]["status_code"] == 400
    assert all("webhook_secret" not in p["data"] for p in payloads.values())
    time.sleep(0.5)
    assert len(receiver.at("/jobs")) == 2


def test_batch_completed(gw: Gateway, receiver: Receiver) -> None:
    """batch.completed, once, in the transaction that records the batch's end."""
    made = endpoint(gw, receiver.url + "/batches", ["batch.completed"])
    _, secret = gw.mint(max_spend_usd=1)
    params = {"model": "test-claude", "max_tokens": 20, "messages": [{"role": "user", "content": "hi #words=2"}]}
    requests = [{"custom_id": f"r{i}", "params": params} for i in range(3)]
    r = httpx.post(
        gw.url + "/v1/messages/batches",
        json={"requests": requests},
        headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    batch_id = r.json()["id"]
    got = receiver.wait_for("/batches", 1)
    payload = verified(made["secret"], got[0])
    assert payload["type"] == "batch.completed" and payload["data"]["id"] == batch_id
    assert payload["data"]["request_counts"]["succeeded"] == 3 and payload["data"]["kind"] == "anthropic"
    for _ in range(3):  # reads after the end record nothing more
        assert gw.request("GET", f"/v1/messages/batches/{batch_id}", secret).status_code == 200
    time.sleep(0.5)
    assert len(receiver.at("/batches")) == 1
