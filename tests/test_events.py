"""Account events as Standard Webhooks: endpoints (routes, validation), delivery verified by the
``standardwebhooks`` package, retries while a receiver is down (in order once it is back),
410 disabling, redelivery, secret rotation with two signatures, redirects not followed,
Retry-After, a restart with deliveries outstanding; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as StandardVerificationError

from tests.conftest import DATABASES, Gateway, gateway_env, start_gateway, stop_gateway, throwaway_database
from tests.fakes.receiver import Receiver
from tollway.events.outbox import EVENT_TYPES
from tollway.webhooks import WebhookVerificationError, unwrap

# Retries in hundredths of the real schedule (5 s -> 50 ms, 5 min -> 3 s), a quick sender.
EVENTS_ENV = {
    "TOLLWAY_EVENTS_RETRY_SCALE": "0.01",
    "TOLLWAY_EVENTS_POLL_INTERVAL": "0.05",
    "TOLLWAY_EVENTS_CHECK_INTERVAL": "0.2",
    "TOLLWAY_OUTBOUND_TIMEOUT": "3",
}


@pytest.fixture(scope="module")
def receiver(db_kind: str) -> Iterator[Receiver]:
    """One per gateway (per database), recording what its endpoints get."""
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module", params=DATABASES)
def db_kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def gw(fake, db_kind: str) -> Iterator[Gateway]:
    data_dir = Path(tempfile.mkdtemp(prefix="tollway-events-"))
    with throwaway_database(db_kind) as url:
        gateway = start_gateway(gateway_env(fake, data_dir, url, **EVENTS_ENV))
        try:
            yield gateway
        finally:
            stop_gateway(gateway)
            shutil.rmtree(data_dir, ignore_errors=True)


def endpoint(gw: Gateway, url: str, events: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    r = gw.request("POST", "/v1/webhook-endpoints", gw.admin, json={"url": url, "events": events or ["*"], **extra})
    assert r.status_code == 201, r.text
    return r.json()


def verified(secret: str, got: Any) -> dict[str, Any]:
    """The body, verified by the standardwebhooks package and by tollway.webhooks.unwrap."""
    payload = Webhook(secret).verify(got.body, got.headers)
    assert unwrap(secret, got.headers, got.body) == payload
    assert set(payload) == {"type", "timestamp", "data"}
    return payload


def deliveries(gw: Gateway, endpoint_id: str) -> list[dict[str, Any]]:
    r = gw.request("GET", f"/v1/webhook-endpoints/{endpoint_id}/deliveries?limit=100", gw.admin)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def wait(predicate, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def send_test(gw: Gateway, endpoint_id: str) -> dict[str, Any]:
    r = gw.request("POST", f"/v1/webhook-endpoints/{endpoint_id}/test", gw.admin)
    assert r.status_code == 202, r.text
    return r.json()


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


def test_receiver_down_then_up_in_order(gw: Gateway) -> None:
    down = Receiver()  # not started: connections are refused
    made = endpoint(gw, down.url + "/later")
    sent = [send_test(gw, made["id"])["event_id"]]
    wait(lambda: any(a["error"] for d in deliveries(gw, made["id"]) for a in d["attempts"]))
    # Newer events while it is unreachable are not tried: they wait behind the first one's retry.
    sent += [send_test(gw, made["id"])["event_id"] for _ in range(2)]
    time.sleep(0.4)
    log = {d["event_id"]: d for d in deliveries(gw, made["id"])}
    assert [log[e]["attempt_count"] for e in sent[1:]] == [0, 0]
    assert all(log[e]["next_attempt_at"] > log[sent[0]]["next_attempt_at"] for e in sent[1:])
    down.start()
    try:
        got = down.wait_for("/later", 3, timeout=20)
        assert [g.headers["webhook-id"] for g in got] == sent  # in order of creation
        for g in got:
            verified(made["secret"], g)
        log = wait(lambda: all((d := deliveries(gw, made["id"]))[i]["state"] == "succeeded" for i in range(3)) and d)
        first = next(d for d in log if d["event_id"] == sent[0])
        assert first["attempt_count"] >= 2  # the retries, in the log
        assert all(a["status"] is None and "could not connect" in a["error"] for a in first["attempts"][:-1])
        assert first["attempts"][0]["next_attempt_at"] is not None and first["attempts"][-1]["status"] == 200
        assert [d["attempt_count"] for d in log if d["event_id"] != sent[0]] == [1, 1]
    finally:
        down.stop()


def test_410_disables_the_endpoint(gw: Gateway, receiver: Receiver) -> None:
    receiver.answer("/gone", 410)
    made = endpoint(gw, receiver.url + "/gone")
    send_test(gw, made["id"])
    receiver.wait_for("/gone", 1)
    info = wait(
        lambda: (e := gw.request("GET", f"/v1/webhook-endpoints/{made['id']}", gw.admin).json())["disabled"] and e
    )
    assert "410" in info["disabled_reason"]
    [delivery] = deliveries(gw, made["id"])
    assert delivery["state"] == "failed" and delivery["attempts"][0]["status"] == 410
    r = gw.request("POST", f"/v1/webhook-endpoints/{made['id']}/test", gw.admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "webhook_endpoint_disabled"
    time.sleep(0.3)
    assert len(receiver.at("/gone")) == 1


def test_redeliver_keeps_the_webhook_id(gw: Gateway, receiver: Receiver) -> None:
    made = endpoint(gw, receiver.url + "/again")
    sent = send_test(gw, made["id"])
    receiver.wait_for("/again", 1)
    wait(lambda: deliveries(gw, made["id"])[0]["state"] == "succeeded")
    r = gw.request("POST", f"/v1/webhook-endpoints/{made['id']}/deliveries/{sent['delivery_id']}/redeliver", gw.admin)
    assert r.status_code == 202 and r.json()["previous_state"] == "succeeded"
    first, second = receiver.wait_for("/again", 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == sent["event_id"]
    assert verified(made["secret"], first) == verified(made["secret"], second)
    log = wait(lambda: (d := deliveries(gw, made["id"])[0])["attempt_count"] == 2 and d["state"] == "succeeded" and d)
    assert [a["attempt"] for a in log["attempts"]] == [1, 2]


def test_rotation_signs_with_both_secrets(gw: Gateway, receiver: Receiver) -> None:
    made = endpoint(gw, receiver.url + "/rotate")
    r = gw.request(
        "PATCH",
        f"/v1/webhook-endpoints/{made['id']}",
        gw.admin,
        json={"rotate_secret": True, "rotation_grace_seconds": 3600},
    )
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new != made["secret"] and r.json()["previous_secret_expires_at"] > time.time() * 1000
    send_test(gw, made["id"])
    [got] = receiver.wait_for("/rotate", 1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert verified(new, got) == verified(made["secret"], got)
    # Without a grace period the old secret stops signing at once.
    r = gw.request(
        "PATCH",
        f"/v1/webhook-endpoints/{made['id']}",
        gw.admin,
        json={"rotate_secret": True, "rotation_grace_seconds": 0},
    )
    newest = r.json()["secret"]
    send_test(gw, made["id"])
    got = receiver.wait_for("/rotate", 2)[1]
    assert len(got.headers["webhook-signature"].split(" ")) == 1
    verified(newest, got)
    with pytest.raises(StandardVerificationError):
        Webhook(new).verify(got.body, got.headers)


def test_redirects_are_not_followed(gw: Gateway, receiver: Receiver) -> None:
    receiver.answer("/moved", 302, {"location": receiver.url + "/target"})
    made = endpoint(gw, receiver.url + "/moved")
    send_test(gw, made["id"])
    receiver.wait_for("/moved", 1)
    log = wait(lambda: (d := deliveries(gw, made["id"])[0])["attempts"] and d)
    attempt = log["attempts"][0]
    assert attempt["status"] == 302 and "redirects are not followed" in attempt["error"]
    assert log["state"] == "pending" and attempt["next_attempt_at"] is not None
    assert receiver.at("/target") == []


def test_retry_after_is_honoured(gw: Gateway, receiver: Receiver) -> None:
    receiver.answer("/busy", 503, {"retry-after": "2"})
    made = endpoint(gw, receiver.url + "/busy")
    send_test(gw, made["id"])
    receiver.wait_for("/busy", 1)
    log = wait(lambda: (d := deliveries(gw, made["id"])[0])["attempts"] and d)
    attempt = log["attempts"][0]
    assert attempt["status"] == 503 and attempt["next_attempt_at"] - attempt["attempted_at"] >= 1900
    receiver.answer("/busy", 200)
    second = receiver.wait_for("/busy", 2, timeout=10)[1]
    assert second.at - receiver.at("/busy")[0].at >= 1.9


def test_a_large_answer_is_read_only_up_to_the_cap(gw: Gateway, receiver: Receiver) -> None:
    receiver.answer("/big", 200, body=b"x" * (1024 * 1024))  # 1 MiB; the gateway reads 64 KiB of it
    made = endpoint(gw, receiver.url + "/big")
    send_test(gw, made["id"])
    receiver.wait_for("/big", 1)
    log = wait(lambda: (d := deliveries(gw, made["id"])[0])["state"] == "succeeded" and d)
    assert log["attempts"][0]["response_excerpt"] == "x" * 1000 and log["attempts"][0]["status"] == 200


def test_a_slow_receiver_times_out_and_is_retried(gw: Gateway, receiver: Receiver) -> None:
    receiver.answer("/slow", 200, delay_s=4)  # the gateway's outbound timeout is 3 s
    made = endpoint(gw, receiver.url + "/slow")
    send_test(gw, made["id"])
    log = wait(lambda: (d := deliveries(gw, made["id"])[0])["attempts"] and d, timeout=10)
    attempt = log["attempts"][0]
    assert attempt["status"] is None and attempt["error"] == "timed out after 3 s"
    assert 2900 <= attempt["latency_ms"] < 4000 and log["state"] == "pending"
    receiver.answer("/slow", 200)
    assert wait(lambda: deliveries(gw, made["id"])[0]["state"] == "succeeded", timeout=10)


def test_every_known_type_is_subscribable(gw: Gateway, receiver: Receiver) -> None:
    made = endpoint(gw, receiver.url + "/types", list(EVENT_TYPES))
    assert made["events"] == list(EVENT_TYPES)


# ---------------------------------------------------------------- restart
def test_restart_loses_nothing(fake, db_kind: str) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="tollway-events-restart-"))
    down = Receiver()
    with throwaway_database(db_kind) as url:
        env = gateway_env(fake, data_dir, url, **{**EVENTS_ENV, "TOLLWAY_EVENTS_RETRY_SCALE": "1"})
        gateway = start_gateway(env)
        try:
            made = endpoint(gateway, down.url + "/restart")
            sent = [send_test(gateway, made["id"])["event_id"] for _ in range(2)]
            # The first tried and failed; the second waits behind it (tollway.events.deliveries.due).
            assert wait(lambda: any(d["attempts"] for d in deliveries(gateway, made["id"])))
            time.sleep(0.3)
        finally:
            stop_gateway(gateway)
        down.start()
        # Retries 5 s away on the real schedule: after the restart they come, and in order.
        gateway = start_gateway(env)
        try:
            got = down.wait_for("/restart", 2, timeout=20)
            assert [g.headers["webhook-id"] for g in got] == sent
            for g in got:
                assert json.loads(g.body) == verified(made["secret"], g)
        finally:
            stop_gateway(gateway)
            down.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


def test_private_addresses_are_refused_by_default(fake, tmp_path: Path) -> None:
    env = gateway_env(fake, tmp_path, f"sqlite:///{tmp_path / 'tollway.db'}", TOLLWAY_OUTBOUND_ALLOW_PRIVATE="off")
    gateway = start_gateway(env)
    try:
        for url in ("http://127.0.0.1:9/x", "http://10.1.2.3/x", "http://169.254.169.254/latest", "http://[::1]/x",
                    "http://localhost:9/x"):  # fmt: skip
            r = gateway.request("POST", "/v1/webhook-endpoints", gateway.admin, json={"url": url, "events": ["*"]})
            assert r.status_code == 400, (url, r.text)
            assert r.json()["error"]["code"] == "destination_not_allowed"
    finally:
        stop_gateway(gateway)
