"""The pieces of tollway.events without a gateway: Standard Webhooks signing against the
``standardwebhooks`` package, the outbound address guard, the retry schedule, the sender's
lease and the auto-disable after days of failures (both databases), the settings."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as StandardVerificationError

from tests.conftest import DATABASES, migrated_database
from tollway.config.settings import ConfigError
from tollway.events.config import EventsSettings, events_settings
from tollway.events.deliveries import DeliveryStore, Outcome
from tollway.events.outbox import emit
from tollway.events.sender import SCHEDULE_S, Sender, retry_after_s
from tollway.events.store import EndpointStore
from tollway.outbound import DestinationRefused, OutboundSettings, check_destination, is_public, outbound_settings
from tollway.tools.store import generate_signing_secret
from tollway.webhooks import WebhookVerificationError, secret_key, standard_headers, unwrap

BODY = b'{"type":"key.revoked","timestamp":"2026-01-01T00:00:00.000Z","data":{"key_id":"key_1"}}'


def test_our_signature_verifies_with_standardwebhooks_and_theirs_with_unwrap() -> None:
    secret = generate_signing_secret()
    assert len(secret) == len("whsec_") + 43 and "-" not in secret and "_" not in secret[6:]
    headers = standard_headers(secret, "msg_1", BODY)
    assert Webhook(secret).verify(BODY, headers)["data"] == {"key_id": "key_1"}
    # A signature made by the package, read by unwrap.
    theirs = Webhook(secret)
    now = int(time.time())
    import datetime as dt

    signature = theirs.sign("msg_2", dt.datetime.fromtimestamp(now, dt.timezone.utc), BODY)
    mine = {"webhook-id": "msg_2", "webhook-timestamp": str(now), "webhook-signature": signature}
    assert unwrap(secret, mine, BODY)["type"] == "key.revoked"


def test_two_secrets_during_a_rotation_each_verify() -> None:
    old, new = generate_signing_secret(), generate_signing_secret()
    headers = standard_headers([new, old], "msg_3", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(BODY, headers) == Webhook(new).verify(BODY, headers)
    assert unwrap(old, headers, BODY) == unwrap(new, headers, BODY)
    with pytest.raises(StandardVerificationError):
        Webhook(generate_signing_secret()).verify(BODY, headers)


def test_unwrap_refuses_what_it_should() -> None:
    secret = generate_signing_secret()
    headers = standard_headers(secret, "msg_4", BODY)
    for bad_headers, bad_body in [
        ({k: v for k, v in headers.items() if k != "webhook-id"}, BODY),
        ({**headers, "webhook-id": "msg_5"}, BODY),
        (headers, BODY + b"\n"),
        ({**headers, "webhook-timestamp": str(int(time.time()) - 3600)}, BODY),
        ({**headers, "webhook-timestamp": "soon"}, BODY),
        ({**headers, "webhook-signature": "v1,AAAA"}, BODY),
    ]:
        with pytest.raises(WebhookVerificationError):
            unwrap(secret, bad_headers, bad_body)
    old = standard_headers(secret, "msg_6", b"[1]", timestamp=1_000)
    with pytest.raises(WebhookVerificationError, match="not a JSON object"):
        unwrap(secret, old, b"[1]", tolerance_s=None)
    assert unwrap(secret, list(headers.items()), BODY.decode())["data"]["key_id"] == "key_1"  # pairs, str body


def test_secrets_made_before_standard_base64_still_sign_consistently() -> None:
    legacy = "whsec_" + "ab-_" * 10 + "xyz"  # URL-safe base64 (tool secrets made before this change)
    assert secret_key(legacy) == base64.urlsafe_b64decode("ab-_" * 10 + "xyz" + "=")
    headers = standard_headers(legacy, "msg_7", BODY)
    assert unwrap(legacy, headers, BODY)["type"] == "key.revoked"


def test_public_addresses_only_by_default() -> None:
    for address in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "172.16.0.1", "169.254.169.254", "::1", "fc00::1",
                    "fe80::1", "0.0.0.0", "100.64.0.1", "224.0.0.1", "::ffff:127.0.0.1"):  # fmt: skip
        assert not is_public(address), address
    assert is_public("8.8.8.8") and is_public("2606:4700:4700::1111")
    deny = OutboundSettings()
    with pytest.raises(DestinationRefused):
        asyncio.run(check_destination("http://127.0.0.1:8080/x", deny))
    with pytest.raises(DestinationRefused):
        asyncio.run(check_destination("http://localhost/x", deny))
    asyncio.run(check_destination("http://8.8.8.8/x", deny))
    asyncio.run(check_destination("http://127.0.0.1/x", OutboundSettings(allow_private=True)))


def test_settings() -> None:
    assert events_settings(None, {}) == EventsSettings()
    got = events_settings({"cap_warning_percent": [95, 80]}, {"TOLLWAY_EVENTS_RETRY_SCALE": "0.5"})
    assert got.cap_warning_percent == (80, 95) and got.retry_scale == 0.5
    assert events_settings(None, {"TOLLWAY_EVENTS_CAP_WARNING_PERCENT": "50,90"}).cap_warning_percent == (50, 90)
    assert events_settings({"low_balance_usd": 2.5}, {}).low_balance_micros == 2_500_000
    for table, env in [({"nope": 1}, {}), ({"retry_scale": 0}, {}), ({}, {"TOLLWAY_EVENTS_POLL_INTERVAL": "x"}),
                       ({"cap_warning_percent": [100]}, {}), ("x", {})]:  # fmt: skip
        with pytest.raises(ConfigError):
            events_settings(table, env)
    assert outbound_settings(None, {}) == OutboundSettings()
    assert outbound_settings({"max_response_kb": 1}, {"TOLLWAY_OUTBOUND_ALLOW_PRIVATE": "on"}) == OutboundSettings(
        allow_private=True, max_response_bytes=1024
    )
    with pytest.raises(ConfigError):
        outbound_settings({"timeout": 0}, {})


def test_schedule_retry_after_and_jitter() -> None:
    assert sum(SCHEDULE_S) / 86_400 == pytest.approx(3.2, abs=0.2)  # about three days of retries
    sender = Sender.__new__(Sender)
    sender.settings = EventsSettings()
    now = time.time() * 1000
    first = sender._next_at(1, None) - now
    assert 4_000 <= first <= 6_100  # 5 s +-20 %
    assert sender._next_at(1, 600) - now >= 600_000 - 1  # a longer Retry-After wins
    assert sender._next_at(len(SCHEDULE_S) + 1, None) is None  # given up
    assert retry_after_s("120", 0) == 120
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470) == pytest.approx(10)
    assert retry_after_s("soon", 0) is None and retry_after_s(None, 0) is None
    assert retry_after_s("99999999", 0) == 86_400


@pytest.mark.parametrize("kind", DATABASES)
def test_lease_and_auto_disable_after_days(kind: str) -> None:
    with migrated_database(kind) as db:
        endpoints = EndpointStore(db)
        made, _ = endpoints.create("acct_1", "https://example.com/hook", ["*"], "")
        with db.engine.begin() as conn:
            event_id = emit(conn, "acct_1", "key.revoked", {"key_id": "key_1"})
            assert emit(conn, "acct_1", "key.cap_exceeded", {}, dedup_key="d1") is not None
            assert emit(conn, "acct_1", "key.cap_exceeded", {}, dedup_key="d1") is None  # once
        store = DeliveryStore(db)
        now = int(time.time() * 1000)
        assert store.due_endpoints(now) == [made["id"]]
        # Two senders on one database: the lease lets one of them at a time.
        assert store.claim(made["id"], "snd_a", now, now + 60_000) is not None
        assert store.claim(made["id"], "snd_b", now, now + 60_000) is None
        assert store.due_endpoints(now) == []
        assert store.claim(made["id"], "snd_b", now + 60_001, now + 120_000) is not None  # a holder that died
        store.release(made["id"], "snd_b")
        due = store.due(made["id"], now)
        assert [d.event_id for d in due][0] == event_id and len(due) == 2
        day = 86_400_000
        for n, at in enumerate((now, now + day, now + 2 * day), start=1):
            failed = Outcome(n, 500, None, 5, "boom", False, at + 1000)
            assert store.record(made["id"], due[0].id, failed, at, disable_after_ms=3 * day) is None
        failed = Outcome(4, 500, None, 5, "boom", False, now + 4 * day)
        reason = store.record(made["id"], due[0].id, failed, now + 3 * day, disable_after_ms=3 * day)
        assert reason == "every delivery failed for 3 days"
        info = endpoints.get("acct_1", made["id"])
        assert info["disabled"] and info["disabled_reason"] == reason
        assert store.due_endpoints(now + 5 * day) == []
        with db.engine.begin() as conn:  # a disabled endpoint gets nothing further
            emit(conn, "acct_1", "key.revoked", {"key_id": "key_2"})
        log, _ = endpoints.deliveries("acct_1", made["id"], 100, None)
        assert len(log) == 2 and [a["attempt"] for a in log[-1]["attempts"]] == [1, 2, 3, 4]
        # Re-enabled: its pending deliveries are due again, the streak starts over.
        endpoints.update("acct_1", made["id"], {"disabled": False})
        assert store.due_endpoints(now + 5 * day) == [made["id"]]
