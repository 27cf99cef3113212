"""/v1/tools: register, list, read, change and delete webhook tools.

Tools belong to an account. Admin keys manage them; standard keys may list and
read them (an app needs the ids to use them) but get 403 on POST/PATCH/DELETE.
Another account's tool answers 404, as if it did not exist. The signing secret is
in the response to POST and to PATCH with ``"rotate_secret": true`` only.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import urlsplit

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from tollway.capabilities import Capability, Routes
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.params import check_fields, json_object, page, page_limit
from tollway.keys import ApiKey
from tollway.keys.auth import Authenticator
from tollway.tools.store import DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS, MIN_TIMEOUT_MS, DuplicateToolName, Tool, ToolStore

_CREATE_FIELDS = {"name", "description", "input_schema", "webhook_url", "timeout_ms"}
_PATCH_FIELDS = {"name", "description", "input_schema", "webhook_url", "timeout_ms", "rotate_secret"}
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_DESCRIPTION = 10_000
MAX_URL = 2048
MAX_SCHEMA_BYTES = 64 * 1024
MAX_LIMIT = 100


def _required(body: dict[str, Any], field: str) -> Any:
    if body.get(field) is None:
        raise HTTPError(400, f"'{field}' is required", param=field)
    return body[field]


def validate_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise HTTPError(400, "'name' must be 1 to 64 characters from a-z, A-Z, 0-9, '_' and '-'", param="name")
    return value


def validate_description(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_DESCRIPTION:
        raise HTTPError(
            400,
            f"'description' must be a non-empty string of at most {MAX_DESCRIPTION} characters",
            param="description",
        )
    return value


def validate_input_schema(value: Any) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) for an object: what both providers accept as tool input."""
    if not isinstance(value, dict):
        raise HTTPError(400, "'input_schema' must be a JSON Schema object", param="input_schema")
    if value.get("type") != "object":
        raise HTTPError(
            400, '\'input_schema\' must have "type": "object" (tool input is a JSON object)', param="input_schema"
        )
    size = len(orjson.dumps(value))
    if size > MAX_SCHEMA_BYTES:
        raise HTTPError(
            400,
            f"'input_schema' is {size} bytes as JSON; at most {MAX_SCHEMA_BYTES} are accepted",
            param="input_schema",
        )
    try:
        Draft202012Validator.check_schema(value)
    except RecursionError:  # the body's depth limit keeps schemas well inside it; never a 500 all the same
        raise HTTPError(400, "'input_schema' nests too deeply to be checked", param="input_schema") from None
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        detail = f"{exc.message} (at {where})" if where else exc.message
        raise HTTPError(400, f"'input_schema' is not a valid JSON Schema: {detail}", param="input_schema") from None
    return value


def validate_webhook_url(value: Any) -> str:
    message = "'webhook_url' must be an absolute http:// or https:// URL"
    if not isinstance(value, str) or len(value) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in value):
        raise HTTPError(400, f"{message} of at most {MAX_URL} characters", param="webhook_url")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise HTTPError(400, message, param="webhook_url") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise HTTPError(400, message, param="webhook_url")
    if parts.fragment:
        raise HTTPError(400, "'webhook_url' must not have a #fragment", param="webhook_url")
    return value


def validate_timeout_ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_TIMEOUT_MS <= value <= MAX_TIMEOUT_MS:
        raise HTTPError(
            400, f"'timeout_ms' must be an integer from {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS}", param="timeout_ms"
        )
    return value


def _duplicate(exc: DuplicateToolName) -> HTTPError:
    return HTTPError(409, str(exc), code="tool_name_taken", param="name")


def capability(*, auth: Authenticator, tools: ToolStore) -> Capability:
    routes = Routes()
    store = tools

    async def admin(request: Request) -> ApiKey:
        return await auth.admin(request.headers, "managing tools needs an admin key")

    async def find(key: ApiKey, tool_id: str) -> Tool:
        tool = await asyncio.to_thread(store.get, key.account_id, tool_id)
        if tool is None:
            raise HTTPError(404, f"no tool {tool_id!r}", code="tool_not_found")
        return tool

    @routes.route("POST", "/v1/tools")
    async def create_tool(request: Request) -> Response:
        key = await admin(request)
        body = json_object(request)
        check_fields(body, _CREATE_FIELDS)
        name = validate_name(_required(body, "name"))
        description = validate_description(_required(body, "description"))
        input_schema = validate_input_schema(_required(body, "input_schema"))
        webhook_url = validate_webhook_url(_required(body, "webhook_url"))
        timeout_ms = body.get("timeout_ms")
        timeout_ms = DEFAULT_TIMEOUT_MS if timeout_ms is None else validate_timeout_ms(timeout_ms)
        try:
            tool, secret = await asyncio.to_thread(
                store.create, key.account_id, name, description, input_schema, webhook_url, timeout_ms
            )
        except DuplicateToolName as exc:
            raise _duplicate(exc) from None
        return json_response(201, {**tool.public(), "signing_secret": secret})

    @routes.route("GET", "/v1/tools")
    async def list_tools(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        query = request.query()
        limit = page_limit(query, 20, MAX_LIMIT)
        try:
            items, has_more = await asyncio.to_thread(store.list, key.account_id, limit, query.get("after") or None)
        except ValueError as exc:
            raise HTTPError(400, str(exc), param="after") from None
        return json_response(200, page(items, has_more))

    @routes.route("GET", "/v1/tools/{tool_id}")
    async def get_tool(request: Request, tool_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        return json_response(200, (await find(key, tool_id)).public())

    @routes.route("PATCH", "/v1/tools/{tool_id}")
    async def update_tool(request: Request, tool_id: str) -> Response:
        key = await admin(request)
        body = json_object(request)
        check_fields(body, _PATCH_FIELDS)
        changes: dict[str, Any] = {}
        if "name" in body:
            changes["name"] = validate_name(body["name"])
        if "description" in body:
            changes["description"] = validate_description(body["description"])
        if "input_schema" in body:
            changes["input_schema"] = validate_input_schema(body["input_schema"])
        if "webhook_url" in body:
            changes["webhook_url"] = validate_webhook_url(body["webhook_url"])
        if "timeout_ms" in body:
            changes["timeout_ms"] = validate_timeout_ms(body["timeout_ms"])
        rotate = body.get("rotate_secret", False)
        if not isinstance(rotate, bool):
            raise HTTPError(400, "'rotate_secret' must be true or false", param="rotate_secret")
        await find(key, tool_id)
        try:
            found = await asyncio.to_thread(
                lambda: store.update(key.account_id, tool_id, rotate_secret=rotate, **changes)
            )
        except DuplicateToolName as exc:
            raise _duplicate(exc) from None
        if found is None:
            raise HTTPError(404, f"no tool {tool_id!r}", code="tool_not_found")
        tool, secret = found
        out: dict[str, Any] = tool.public()
        if secret is not None:
            out["signing_secret"] = secret
        return json_response(200, out)

    @routes.route("DELETE", "/v1/tools/{tool_id}")
    async def delete_tool(request: Request, tool_id: str) -> Response:
        key = await admin(request)
        if not await asyncio.to_thread(store.delete, key.account_id, tool_id):
            raise HTTPError(404, f"no tool {tool_id!r}", code="tool_not_found")
        return json_response(200, {"id": tool_id, "object": "tool.deleted", "deleted": True})

    return Capability(routes)


__all__ = [
    "capability",
    "validate_description",
    "validate_input_schema",
    "validate_name",
    "validate_timeout_ms",
    "validate_webhook_url",
]
