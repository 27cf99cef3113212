"""Start-up and shut-down: first admin key, TOLLWAY_ADMIN_KEY, SIGTERM drain, ledger rebuilt at start."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from tests.conftest import DATABASES, REPO, gateway_env, start_gateway, stop_gateway


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_spend_survives_a_restart_and_sigterm_drains_streams(fake, tmp_data_dir, fresh_database, server) -> None:
    env = gateway_env(fake, tmp_data_dir, fresh_database)
    gw = start_gateway(env, server=server)
    key_id, secret = gw.mint(max_spend_usd="0.0003")  # out-gpt: 3 requests of 10 tokens
    body = {"model": "out-gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "x #words=10"}]}
    assert gw.request("POST", "/v1/chat/completions", secret, json=body).status_code == 200

    # A slow stream in flight when SIGTERM arrives is served to its end.
    streamed: dict[str, object] = {}

    def slow_stream() -> None:
        slow = {**body, "stream": True, "messages": [{"role": "user", "content": "x #words=10 #chunk_delay_ms=150"}]}
        with httpx.stream(
            "POST",
            gw.url + "/v1/chat/completions",
            json=slow,
            headers={"authorization": f"Bearer {secret}"},
            timeout=30,
        ) as r:
            streamed["status"] = r.status_code
            received = b""
            try:
                for chunk in r.iter_raw():
                    received += chunk
                    started.set()
            except httpx.HTTPError as exc:  # cut short: keep what came, for the assertion's message
                streamed["error"] = repr(exc)
            streamed["body"] = received

    started = threading.Event()
    thread = threading.Thread(target=slow_stream)
    thread.start()
    assert started.wait(15), (streamed, gw.log())  # the stream is under way: its first bytes came
    code = stop_gateway(gw, signal.SIGTERM)
    thread.join(10)
    assert code == 0, gw.log()
    assert streamed.get("status") == 200, (streamed, gw.log())
    got = streamed["body"]
    assert got.rstrip().endswith(b"data: [DONE]"), (streamed.get("error"), len(got), got[-300:], gw.log()[-3000:])

    # Restarted: the counters come back from the usage events, and the cap still holds.
    gw = start_gateway(env, server=server)
    try:
        info = gw.key(key_id)
        assert info["spent_micros"] == 200 and info["reserved_micros"] == 0
        assert gw.request("POST", "/v1/chat/completions", secret, json=body).status_code == 200
        assert gw.request("POST", "/v1/chat/completions", secret, json=body).status_code == 402
    finally:
        stop_gateway(gw)


def test_first_start_prints_the_admin_secret_once(fake, tmp_data_dir, fresh_database, server) -> None:
    env = gateway_env(fake, tmp_data_dir, fresh_database)
    env.pop("TOLLWAY_ADMIN_KEY")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tollway", *args], env=env, cwd=str(REPO), capture_output=True, text=True, timeout=60
        )

    first = run("init")
    assert first.returncode == 0, first.stderr
    secrets = re.findall(r"tw_live_\S+", first.stdout)
    assert len(secrets) == 1
    again = run("init")
    assert again.returncode == 0 and "tw_live_" not in again.stdout and "already exists" in again.stdout
    # The printed secret is a working admin key.
    env["TOLLWAY_ADMIN_KEY"] = secrets[0]
    gw = start_gateway(env, server=server)
    try:
        assert gw.request("GET", "/v1/keys", secrets[0]).status_code == 200
    finally:
        stop_gateway(gw)


def test_admin_key_from_env_is_idempotent(fake, tmp_data_dir, fresh_database, server) -> None:
    env = gateway_env(fake, tmp_data_dir, fresh_database, TOLLWAY_ADMIN_KEY="tw_live_from_env_" + "y" * 30)
    for _ in range(2):
        gw = start_gateway(env, server=server)
        try:
            assert "tw_live_" not in gw.log()  # nothing secret printed or logged
            keys = gw.request("GET", "/v1/keys", env["TOLLWAY_ADMIN_KEY"]).json()["data"]
            assert [k["scope"] for k in keys] == ["admin"]
        finally:
            stop_gateway(gw)
