"""Key management: mint, list, read, change, revoke; auth headers; tenant isolation."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import REPO, Gateway


def test_mint_returns_secret_once_and_stores_only_its_hash(gateway: Gateway) -> None:
    r = gateway.request(
        "POST",
        "/v1/keys",
        gateway.admin,
        json={
            "name": "user_42",
            "scope": "standard",
            "max_spend_usd": 5,
            "end_user_id": "u42",
            "metadata": {"plan": "pro"},
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    for field in ("id", "secret", "name", "scope", "max_spend_usd", "end_user_id", "created_at"):
        assert field in body
    assert body["secret"].startswith("tw_live_") and len(body["secret"]) >= len("tw_live_") + 43
    assert (body["name"], body["scope"], body["max_spend_usd"], body["end_user_id"]) == (
        "user_42",
        "standard",
        5.0,
        "u42",
    )
    assert body["max_spend_micros"] == 5_000_000 and body["metadata"] == {"plan": "pro"}

    # Never again: not in the list, not on GET.
    listed = gateway.request("GET", "/v1/keys", gateway.admin, params={"limit": 500}).json()
    assert all("secret" not in k for k in listed["data"])
    assert body["secret"] not in str(listed)
    assert "secret" not in gateway.key(body["id"])

    # In the database only the SHA-256 of the secret.
    engine = create_engine(gateway.database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": body["id"]}).mappings().one()
    engine.dispose()
    assert row["secret_hash"] == hashlib.sha256(body["secret"].encode()).hexdigest()
    assert body["secret"] not in str(dict(row))


@pytest.mark.parametrize(
    "header",
    [
        "Authorization: Bearer {}",
        "Authorization: Token {}",
        "x-api-key: {}",
        "api-key: {}",
        "xi-api-key: {}",
        "x-goog-api-key: {}",
    ],
)
def test_key_accepted_in_every_sdk_header(gateway: Gateway, user, header: str) -> None:
    name, value = header.format(user[1]).split(": ", 1)
    r = gateway.request("GET", "/v1/models", headers={name: value})
    assert r.status_code == 200, r.text


def test_missing_and_wrong_keys_are_401(gateway: Gateway) -> None:
    r = gateway.request("GET", "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = gateway.request("GET", "/v1/models", "tw_live_nope")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = gateway.request("POST", "/v1/messages", "tw_live_nope", json={})
    assert r.status_code == 401 and r.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }


def test_standard_key_cannot_manage_keys(gateway: Gateway, user) -> None:
    key_id, secret = user
    for method, path in [
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys"),
        ("GET", f"/v1/keys/{key_id}"),
        ("PATCH", f"/v1/keys/{key_id}"),
        ("DELETE", f"/v1/keys/{key_id}"),
        ("GET", "/v1/usage"),
    ]:
        r = gateway.request(method, path, secret, json={"name": "x"} if method in ("POST", "PATCH") else None)
        assert r.status_code == 403, (method, path, r.text)
    # ...but may read its own usage.
    assert gateway.request("GET", f"/v1/keys/{key_id}/usage", secret).status_code == 200


def test_list_is_paginated_with_spend(gateway: Gateway) -> None:
    ids = {gateway.mint(name=f"page-{i}")[0] for i in range(5)}
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = gateway.request("GET", "/v1/keys", gateway.admin, params=params).json()
        assert len(page["data"]) <= 2
        seen += [k["id"] for k in page["data"]]
        for k in page["data"]:
            assert {"spent_micros", "reserved_micros", "max_spend_usd"} <= set(k)
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert ids <= set(seen)
    assert len(seen) == len(set(seen))


def test_patch_changes_name_cap_metadata(gateway: Gateway) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    r = gateway.request(
        "PATCH", f"/v1/keys/{key_id}", gateway.admin, json={"name": "renamed", "max_spend_usd": 0, "metadata": {"a": 1}}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["max_spend_micros"], r.json()["metadata"]) == ("renamed", 0, {"a": 1})
    # A cap of 0 refuses the next request before the upstream.
    r = gateway.request(
        "POST",
        "/v1/chat/completions",
        secret,
        json={"model": "test-gpt", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 402
    r = gateway.request("PATCH", f"/v1/keys/{key_id}", gateway.admin, json={"max_spend_usd": None})
    assert r.json()["max_spend_usd"] is None
    r = gateway.request(
        "POST",
        "/v1/chat/completions",
        secret,
        json={"model": "test-gpt", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "name"),
        ({"name": "a", "max_spend_usd": -1}, "max_spend_usd"),
        ({"name": "a", "max_spend_usd": "lots"}, "max_spend_usd"),
        ({"name": "a", "max_spend_usd": True}, "max_spend_usd"),
        ({"name": "a", "scope": "root"}, "scope"),
        ({"name": "a", "metadata": [1]}, "metadata"),
        ({"name": "a", "colour": "red"}, "colour"),
    ],
)
def test_mint_validation(gateway: Gateway, body, param) -> None:
    r = gateway.request("POST", "/v1/keys", gateway.admin, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_revoked_key_fails_on_the_very_next_request(gateway: Gateway) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    body = {"model": "test-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    assert gateway.request("POST", "/v1/chat/completions", secret, json=body).status_code == 200
    r = gateway.request("DELETE", f"/v1/keys/{key_id}", gateway.admin)
    assert r.status_code == 200 and r.json()["deleted"] is True
    r = gateway.request("POST", "/v1/chat/completions", secret, json=body)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    assert gateway.key(key_id)["revoked_at"] is not None


def test_unknown_key_id_is_404(gateway: Gateway) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        r = gateway.request(method, "/v1/keys/key_doesnotexist", gateway.admin, json={} if method == "PATCH" else None)
        assert r.status_code == 404, r.text


def _new_account(gateway: Gateway, name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tollway", "init", "--new-account", name],
        env=gateway.env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line.strip() for line in out.splitlines() if line.strip().startswith("tw_live_"))


def test_tenant_isolation_between_accounts(gateway: Gateway) -> None:
    other_admin = _new_account(gateway, "other-co")
    mine_id, mine_secret = gateway.mint(name="mine", max_spend_usd=1)
    theirs_id, theirs_secret = gateway.mint(admin=other_admin, name="theirs", max_spend_usd=1)

    # Listing shows only one's own keys.
    mine = {k["id"] for k in gateway.request("GET", "/v1/keys", gateway.admin, params={"limit": 500}).json()["data"]}
    theirs = {k["id"] for k in gateway.request("GET", "/v1/keys", other_admin, params={"limit": 500}).json()["data"]}
    assert mine_id in mine and theirs_id not in mine
    assert theirs_id in theirs and mine_id not in theirs

    # No reading, changing, revoking or usage of the other account's keys.
    for method in ("GET", "PATCH", "DELETE"):
        r = gateway.request(
            method, f"/v1/keys/{mine_id}", other_admin, json={"name": "x"} if method == "PATCH" else None
        )
        assert r.status_code == 404
    assert gateway.request("GET", f"/v1/keys/{mine_id}/usage", other_admin).status_code == 404

    # Usage roll-ups are per account.
    body = {"model": "test-gpt", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
    assert gateway.request("POST", "/v1/chat/completions", mine_secret, json=body).status_code == 200
    assert gateway.request("POST", "/v1/chat/completions", theirs_secret, json=body).status_code == 200
    usage_mine = gateway.request("GET", "/v1/usage", gateway.admin).json()
    usage_theirs = gateway.request("GET", "/v1/usage", other_admin).json()
    assert mine_id in {k["key_id"] for k in usage_mine["by_key"]}
    assert theirs_id not in {k["key_id"] for k in usage_mine["by_key"]}
    assert {k["key_id"] for k in usage_theirs["by_key"]} == {theirs_id}
