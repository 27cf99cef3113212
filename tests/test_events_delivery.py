"""Delivering account events: a receiver down then up (in order, retries in the log), 410
disabling, redelivery, secret rotation with two signatures, redirects not followed,
Retry-After, the response cap and the timeout, a restart with deliveries outstanding, and
private addresses refused by default; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as StandardVerificationError

from tests import events_support as support
from tests.conftest import Gateway, gateway_env, start_gateway, stop_gateway, throwaway_database
from tests.events_support import EVENTS_ENV, deliveries, endpoint, send_test, verified, wait
from tests.fakes.receiver import Receiver
from tollway.events.outbox import EVENT_TYPES

# The module's gateway per database and its receiver (tests/events_support.py).
db_kind, gw, receiver = support.db_kind, support.gw, support.receiver


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
