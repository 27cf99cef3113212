"""/v1/tools through a running gateway (both databases, both servers), and ToolStore directly."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import DATABASES, Gateway, throwaway_database
from tests.test_keys import _new_account
from tollway.config.settings import normalize_database_url
from tollway.keys import KeyStore
from tollway.store import Database
from tollway.tools import DuplicateToolName, ToolStore

SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}


def tool_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "lookup_" + secrets.token_hex(4),
        "description": "Find an account by name or email",
        "input_schema": SCHEMA,
        "webhook_url": "https://app.example.com/hooks/lookup?v=2",
    }
    body.update(overrides)
    return body


def create(gw: Gateway, key: str | None = None, **overrides: Any) -> dict[str, Any]:
    r = gw.request("POST", "/v1/tools", key or gw.admin, json=tool_body(**overrides))
    assert r.status_code == 201, r.text
    return r.json()


def error(r) -> dict[str, Any]:
    return r.json()["error"]


def test_register_returns_the_secret_once(gateway: Gateway) -> None:
    body = tool_body(timeout_ms=2500)
    r = gateway.request("POST", "/v1/tools", gateway.admin, json=body)
    assert r.status_code == 201, r.text
    tool = r.json()
    assert set(tool) == {
        "id",
        "object",
        "name",
        "description",
        "input_schema",
        "webhook_url",
        "timeout_ms",
        "created_at",
        "updated_at",
        "signing_secret",
    }
    assert tool["id"].startswith("tool_") and tool["object"] == "tool"
    assert (tool["name"], tool["description"], tool["input_schema"], tool["webhook_url"], tool["timeout_ms"]) == (
        body["name"],
        body["description"],
        SCHEMA,
        body["webhook_url"],
        2500,
    )
    assert tool["created_at"] == tool["updated_at"] > 0
    secret = tool["signing_secret"]
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 43

    # Default timeout.
    assert create(gateway)["timeout_ms"] == 10_000

    # Never again: not on GET, not in the list.
    got = gateway.request("GET", f"/v1/tools/{tool['id']}", gateway.admin).json()
    assert "signing_secret" not in got and secret not in str(got)
    assert got == {k: v for k, v in tool.items() if k != "signing_secret"}
    listed = gateway.request("GET", "/v1/tools", gateway.admin, params={"limit": 100}).json()
    assert tool["id"] in {t["id"] for t in listed["data"]}
    assert secret not in str(listed) and all("signing_secret" not in t for t in listed["data"])

    # Stored retrievably (the gateway signs with it), and not in the gateway's log.
    engine = create_engine(gateway.database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT signing_secret FROM tools WHERE id = :id"), {"id": tool["id"]}).scalar()
    engine.dispose()
    assert stored == secret
    assert secret not in gateway.log()


def test_list_is_paginated_in_creation_order(gateway: Gateway) -> None:
    other_admin = _new_account(gateway, "tools-paging")
    ids = [create(gateway, other_admin)["id"] for _ in range(5)]
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        r = gateway.request("GET", "/v1/tools", other_admin, params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["object"] == "list" and len(page["data"]) <= 2
        seen += [t["id"] for t in page["data"]]
        if not page["has_more"]:
            break
        assert page["last_id"] == page["data"][-1]["id"]
        after = page["last_id"]
    assert seen == ids
    for params, param in [({"limit": 0}, "limit"), ({"limit": "x"}, "limit"), ({"after": "tool_nope"}, "after")]:
        r = gateway.request("GET", "/v1/tools", other_admin, params=params)
        assert r.status_code == 400 and error(r)["param"] == param, r.text


def test_patch_and_rotate_secret(gateway: Gateway) -> None:
    tool = create(gateway)
    new_schema = {"type": "object", "properties": {"id": {"type": "integer"}}, "additionalProperties": False}
    new_name = "renamed_" + secrets.token_hex(4)
    r = gateway.request(
        "PATCH",
        f"/v1/tools/{tool['id']}",
        gateway.admin,
        json={
            "name": new_name,
            "description": "Changed",
            "input_schema": new_schema,
            "webhook_url": "http://127.0.0.1:9/hook",
            "timeout_ms": 100,
        },
    )
    assert r.status_code == 200, r.text
    patched = r.json()
    assert "signing_secret" not in patched
    assert (
        patched["name"],
        patched["description"],
        patched["input_schema"],
        patched["webhook_url"],
        patched["timeout_ms"],
    ) == (new_name, "Changed", new_schema, "http://127.0.0.1:9/hook", 100)
    assert patched["updated_at"] >= tool["updated_at"] and patched["created_at"] == tool["created_at"]
    assert gateway.request("GET", f"/v1/tools/{tool['id']}", gateway.admin).json() == patched

    # Partial PATCH leaves the rest alone.
    r = gateway.request("PATCH", f"/v1/tools/{tool['id']}", gateway.admin, json={"timeout_ms": 120000})
    assert r.json() == {**patched, "timeout_ms": 120000, "updated_at": r.json()["updated_at"]}

    # Rotation: a new secret, shown once; the old one is gone.
    r = gateway.request("PATCH", f"/v1/tools/{tool['id']}", gateway.admin, json={"rotate_secret": True})
    assert r.status_code == 200, r.text
    rotated = r.json()["signing_secret"]
    assert rotated.startswith("whsec_") and rotated != tool["signing_secret"]
    assert "signing_secret" not in gateway.request("GET", f"/v1/tools/{tool['id']}", gateway.admin).json()
    engine = create_engine(gateway.database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT signing_secret FROM tools WHERE id = :id"), {"id": tool["id"]}).scalar()
    engine.dispose()
    assert stored == rotated
    r = gateway.request("PATCH", f"/v1/tools/{tool['id']}", gateway.admin, json={"rotate_secret": False})
    assert r.status_code == 200 and "signing_secret" not in r.json()


def test_delete_then_404(gateway: Gateway) -> None:
    tool = create(gateway)
    r = gateway.request("DELETE", f"/v1/tools/{tool['id']}", gateway.admin)
    assert r.status_code == 200 and r.json() == {"id": tool["id"], "object": "tool.deleted", "deleted": True}
    for method in ("GET", "PATCH", "DELETE"):
        r = gateway.request(
            method, f"/v1/tools/{tool['id']}", gateway.admin, json={"timeout_ms": 500} if method == "PATCH" else None
        )
        assert r.status_code == 404 and error(r)["code"] == "tool_not_found", (method, r.text)
    listed = gateway.request("GET", "/v1/tools", gateway.admin, params={"limit": 100}).json()
    assert tool["id"] not in {t["id"] for t in listed["data"]}
    # The name is free again.
    assert create(gateway, name=tool["name"])["id"] != tool["id"]


def test_duplicate_name_is_409(gateway: Gateway) -> None:
    first = create(gateway)
    r = gateway.request("POST", "/v1/tools", gateway.admin, json=tool_body(name=first["name"]))
    assert r.status_code == 409 and error(r)["param"] == "name" and first["name"] in error(r)["message"]
    second = create(gateway)
    r = gateway.request("PATCH", f"/v1/tools/{second['id']}", gateway.admin, json={"name": first["name"]})
    assert r.status_code == 409 and error(r)["param"] == "name"
    # Renaming a tool to its own name is no clash; names are case-sensitive.
    assert (
        gateway.request("PATCH", f"/v1/tools/{first['id']}", gateway.admin, json={"name": first["name"]}).status_code
        == 200
    )
    assert create(gateway, name=first["name"].upper())["name"] == first["name"].upper()


@pytest.mark.parametrize(
    "overrides, param, words",
    [
        ({"name": None}, "name", "required"),
        ({"name": ""}, "name", "64"),
        ({"name": "has space"}, "name", "64"),
        ({"name": "dot.ted"}, "name", "64"),
        ({"name": "x" * 65}, "name", "64"),
        ({"name": 12}, "name", "64"),
        ({"description": None}, "description", "required"),
        ({"description": "  "}, "description", "non-empty"),
        ({"description": ["a"]}, "description", "string"),
        ({"input_schema": None}, "input_schema", "required"),
        ({"input_schema": "object"}, "input_schema", "JSON Schema"),
        ({"input_schema": {"type": "string"}}, "input_schema", '"type": "object"'),
        ({"input_schema": {"properties": {}}}, "input_schema", '"type": "object"'),
        (
            {"input_schema": {"type": "object", "properties": {"a": {"type": 12}}}},
            "input_schema",
            "is not valid under any of the given schemas",
        ),
        ({"input_schema": {"type": "object", "required": "a"}}, "input_schema", "not a valid JSON Schema"),
        ({"webhook_url": None}, "webhook_url", "required"),
        ({"webhook_url": "/relative/path"}, "webhook_url", "absolute"),
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url", "http"),
        ({"webhook_url": "https://"}, "webhook_url", "absolute"),
        ({"webhook_url": "https://example.com:99999/x"}, "webhook_url", "absolute"),
        ({"webhook_url": "https://exa mple.com/x"}, "webhook_url", "absolute"),
        ({"webhook_url": 5}, "webhook_url", "absolute"),
        ({"timeout_ms": 99}, "timeout_ms", "100 to 120000"),
        ({"timeout_ms": 120001}, "timeout_ms", "100 to 120000"),
        ({"timeout_ms": 1000.5}, "timeout_ms", "integer"),
        ({"timeout_ms": "1000"}, "timeout_ms", "integer"),
        ({"timeout_ms": True}, "timeout_ms", "integer"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"signing_secret": "whsec_mine"}, "signing_secret", "unknown field"),
    ],
)
def test_bad_fields_are_400_with_param(gateway: Gateway, overrides: dict[str, Any], param: str, words: str) -> None:
    body = {k: v for k, v in tool_body(**overrides).items() if v is not None}
    r = gateway.request("POST", "/v1/tools", gateway.admin, json=body)
    assert r.status_code == 400, r.text
    assert error(r)["param"] == param and words in error(r)["message"], r.text
    # The same checks on PATCH (except required-ness).
    if "required" not in words and param != "signing_secret":
        tool = create(gateway)
        r = gateway.request("PATCH", f"/v1/tools/{tool['id']}", gateway.admin, json={param: overrides[param]})
        assert r.status_code == 400 and error(r)["param"] == param, r.text
        assert gateway.request("GET", f"/v1/tools/{tool['id']}", gateway.admin).json() == {
            k: v for k, v in tool.items() if k != "signing_secret"
        }


def test_bad_bodies_are_400(gateway: Gateway) -> None:
    r = gateway.request(
        "POST", "/v1/tools", gateway.admin, content=b"[1]", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = gateway.request(
        "POST", "/v1/tools", gateway.admin, content=b"{nope", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    tool = create(gateway)
    for body, param in [
        ({"rotate_secret": "yes"}, "rotate_secret"),
        ({"signing_secret": "x"}, "signing_secret"),
        ({"id": "tool_x"}, "id"),
    ]:
        r = gateway.request("PATCH", f"/v1/tools/{tool['id']}", gateway.admin, json=body)
        assert r.status_code == 400 and error(r)["param"] == param, r.text


def test_standard_key_reads_but_cannot_write(gateway: Gateway) -> None:
    tool = create(gateway)
    _key_id, standard = gateway.mint()
    r = gateway.request("GET", "/v1/tools", standard, params={"limit": 100})
    assert r.status_code == 200 and tool["id"] in {t["id"] for t in r.json()["data"]}
    assert tool["signing_secret"] not in r.text
    r = gateway.request("GET", f"/v1/tools/{tool['id']}", standard)
    assert r.status_code == 200 and r.json()["name"] == tool["name"] and "signing_secret" not in r.json()
    for method, path, body in [
        ("POST", "/v1/tools", tool_body()),
        ("PATCH", f"/v1/tools/{tool['id']}", {"description": "hijacked"}),
        ("PATCH", f"/v1/tools/{tool['id']}", {"rotate_secret": True}),
        ("DELETE", f"/v1/tools/{tool['id']}", None),
    ]:
        r = gateway.request(method, path, standard, json=body)
        assert r.status_code == 403 and error(r)["code"] == "admin_key_required", (method, r.text)
        assert "signing_secret" not in r.text
    assert gateway.request("GET", f"/v1/tools/{tool['id']}", gateway.admin).json()["description"] == tool["description"]
    # No key at all.
    assert gateway.request("GET", "/v1/tools").status_code == 401
    assert gateway.request("POST", "/v1/tools", json=tool_body()).status_code == 401


def test_tenant_isolation(gateway: Gateway) -> None:
    other_admin = _new_account(gateway, "tools-other-co")
    _, other_standard = gateway.mint(admin=other_admin)
    mine = create(gateway)
    theirs = create(gateway, other_admin, name=mine["name"])  # names are per account
    assert theirs["name"] == mine["name"] and theirs["id"] != mine["id"]

    my_list = {
        t["id"] for t in gateway.request("GET", "/v1/tools", gateway.admin, params={"limit": 100}).json()["data"]
    }
    their_list = {
        t["id"] for t in gateway.request("GET", "/v1/tools", other_admin, params={"limit": 100}).json()["data"]
    }
    assert mine["id"] in my_list and theirs["id"] not in my_list
    assert their_list == {theirs["id"]}

    for key in (other_admin, other_standard):
        r = gateway.request("GET", f"/v1/tools/{mine['id']}", key)
        assert r.status_code == 404 and mine["name"] not in r.text
    for method, body in (("PATCH", {"description": "x"}), ("PATCH", {"rotate_secret": True}), ("DELETE", None)):
        r = gateway.request(method, f"/v1/tools/{mine['id']}", other_admin, json=body)
        assert r.status_code == 404 and "signing_secret" not in r.text, (method, r.text)
    # A cursor from another account's listing is not accepted.
    r = gateway.request("GET", "/v1/tools", other_admin, params={"after": mine["id"]})
    assert r.status_code == 400 and error(r)["param"] == "after"
    assert gateway.request("GET", f"/v1/tools/{mine['id']}", gateway.admin).json() == {
        k: v for k, v in mine.items() if k != "signing_secret"
    }


# ---------------------------------------------------------------- ToolStore, directly


@pytest.mark.parametrize("kind", DATABASES)
def test_tool_store_api(kind: str) -> None:
    with throwaway_database(kind) as url:
        db = Database(normalize_database_url(url))
        db.migrate()
        try:
            keys = KeyStore(db)
            acct, other = keys.create_account("a"), keys.create_account("b")
            store = ToolStore(db)
            t1, s1 = store.create(acct, "one", "first", SCHEMA, "https://x.test/1", 1000)
            t2, s2 = store.create(acct, "two", "second", SCHEMA, "https://x.test/2", 2000)
            t3, _ = store.create(other, "one", "other account", SCHEMA, "https://x.test/3", 3000)
            assert s1.startswith("whsec_") and s1 == t1.signing_secret and s1 != s2
            assert s1 not in repr(t1) and "signing_secret" not in t1.public()
            with pytest.raises(DuplicateToolName):
                store.create(acct, "one", "again", SCHEMA, "https://x.test/1", 1000)

            assert store.get(acct, t1.id) == t1 and store.get(other, t1.id) is None
            assert [t.id for t in store.by_ids(acct, [t2.id, t1.id])] == [t2.id, t1.id]
            assert store.by_ids(acct, []) == []
            with pytest.raises(LookupError, match=t3.id):  # another account's id is unknown here
                store.by_ids(acct, [t1.id, t3.id, "tool_nope"])
            with pytest.raises(LookupError, match="tool_nope"):
                store.by_ids(acct, ["tool_nope", t3.id])

            page, more = store.list(acct, 1, None)
            assert [t.id for t in page] == [t1.id] and more
            page, more = store.list(acct, 1, t1.id)
            assert [t.id for t in page] == [t2.id] and not more
            with pytest.raises(ValueError):
                store.list(acct, 1, t3.id)

            updated, secret = store.update(acct, t1.id, description="changed", timeout_ms=500)
            assert (updated.description, updated.timeout_ms, updated.signing_secret, secret) == (
                "changed",
                500,
                s1,
                None,
            )
            updated, secret = store.update(acct, t1.id, rotate_secret=True)
            assert secret and secret != s1 and updated.signing_secret == secret
            with pytest.raises(DuplicateToolName):
                store.update(acct, t2.id, name="one")
            assert store.update(other, t1.id, description="x") is None
            assert store.update(acct, "tool_nope") is None

            assert t1.openai_definition() == {
                "type": "function",
                "function": {"name": "one", "description": "first", "parameters": SCHEMA},
            }
            assert t1.anthropic_definition() == {"name": "one", "description": "first", "input_schema": SCHEMA}

            assert not store.delete(other, t1.id)
            assert store.delete(acct, t1.id) and store.get(acct, t1.id) is None
            assert not store.delete(acct, t1.id)
        finally:
            db.dispose()


def _migrate(db: Database, fn: Any, target: str) -> None:
    """Run an Alembic command (upgrade/downgrade) to ``target`` on ``db``."""
    from importlib import resources

    from alembic.config import Config

    with db.engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("tollway.store").joinpath("migrations")))
        cfg.attributes["connection"] = conn
        fn(cfg, target)


@pytest.mark.parametrize("kind", DATABASES)
def test_migration_0003_up_from_0002_and_down(kind: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    upgrade_or_downgrade = _migrate

    with throwaway_database(kind) as url:
        db = Database(normalize_database_url(url))
        try:
            upgrade_or_downgrade(db, command.upgrade, "0002_threads")
            assert "tools" not in inspect(db.engine).get_table_names()
            acct = KeyStore(db).create_account("before tools")

            upgrade_or_downgrade(db, command.upgrade, "0003_tools")
            insp = inspect(db.engine)
            assert "tools" in insp.get_table_names()
            assert "ix_tools_account_seq" in {i["name"] for i in insp.get_indexes("tools")}
            uniques = insp.get_unique_constraints("tools")
            assert any(sorted(u["column_names"]) == ["account_id", "name"] for u in uniques), uniques
            with db.engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003_tools"
            tool, _ = ToolStore(db).create(acct, "t", "d", SCHEMA, "https://x.test/", 1000)
            with pytest.raises(DuplicateToolName):
                ToolStore(db).create(acct, "t", "d", SCHEMA, "https://x.test/", 1000)

            upgrade_or_downgrade(db, command.downgrade, "0002_threads")
            assert "tools" not in inspect(db.engine).get_table_names()
            assert KeyStore(db).first_account() == acct  # earlier data untouched
            db.migrate()
            assert ToolStore(db).get(acct, tool.id) is None
        finally:
            db.dispose()


@pytest.mark.parametrize("kind", DATABASES)
def test_migration_0004_event_ids_up_from_0003_and_down(kind: str) -> None:
    """Usage rows written before 0004 keep a NULL event id; new ones are unique; 0004 goes down cleanly."""
    from alembic import command
    from sqlalchemy import inspect
    from sqlalchemy.exc import IntegrityError

    move = _migrate

    columns = (
        "request_id, account_id, key_id, model, provider, http_status, outcome, stream, input_tokens, "
        "output_tokens, cache_read_tokens, cache_write_tokens, estimated, cost_micros, latency_ms, created_at"
    )
    values = "'req_1', 'acct', 'key', 'm', 'p', 200, 'ok', false, 1, 1, 0, 0, false, 7, 1, 1"
    with throwaway_database(kind) as url:
        db = Database(normalize_database_url(url))
        try:
            move(db, command.upgrade, "0003_tools")
            with db.engine.begin() as conn:
                conn.execute(text(f"INSERT INTO usage_events ({columns}) VALUES ({values})"))
            db.migrate()
            assert "event_id" in {c["name"] for c in inspect(db.engine).get_columns("usage_events")}
            with db.engine.begin() as conn:
                assert conn.execute(text("SELECT event_id, cost_micros FROM usage_events")).all() == [(None, 7)]
                conn.execute(text(f"INSERT INTO usage_events ({columns}, event_id) VALUES ({values}, 'ev_1')"))
            with pytest.raises(IntegrityError), db.engine.begin() as conn:
                conn.execute(text(f"INSERT INTO usage_events ({columns}, event_id) VALUES ({values}, 'ev_1')"))
            move(db, command.downgrade, "0003_tools")
            assert "event_id" not in {c["name"] for c in inspect(db.engine).get_columns("usage_events")}
            with db.engine.connect() as conn:
                assert conn.execute(text("SELECT count(*), sum(cost_micros) FROM usage_events")).one() == (2, 14)
        finally:
            db.dispose()
