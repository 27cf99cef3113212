"""Shared by the events tests: a gateway per database with a quick sender, a receiver of its
own, and helpers (endpoints, verification with the standardwebhooks package, the deliveries log)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import DATABASES, Gateway, gateway_env, start_gateway, stop_gateway, throwaway_database
from tests.fakes.receiver import Receiver
from tollway.webhooks import unwrap

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
