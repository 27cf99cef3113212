"""Jobs under both server adapters (granian and Robyn): the workers run on the server's own
event loop, started with the gateway, and a job submitted over HTTP ends with its result."""

from __future__ import annotations

import time

from tests.conftest import Gateway

BODY = {"model": "out-gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "hi #words=3"}]}


def test_a_job_runs_under_each_server(gateway: Gateway) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    r = gateway.request("POST", "/v1/jobs", secret, json={"endpoint": "/v1/chat/completions", "body": BODY})
    assert r.status_code == 202, r.text
    job = r.json()
    deadline = time.monotonic() + 15
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = gateway.request("GET", f"/v1/jobs/{job['id']}", secret).json()
    assert job["status"] == "succeeded", (job, gateway.log()[-2000:])
    assert job["result"]["object"] == "chat.completion" and job["status_code"] == 200
    key = gateway.wait_settled(key_id)
    assert key["reserved_micros"] == 0
    # Billed once: the result's output tokens at $10/Mtok (out-gpt has no input price).
    assert key["spent_micros"] == 10 * job["result"]["usage"]["completion_tokens"] > 0
