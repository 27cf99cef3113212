"""Anthropic Message Batches (``client.messages.batches.*``), errors in Anthropic's shape:

- ``POST /v1/messages/batches`` ``{"requests": [{"custom_id", "params"}]}``: each request a job
  of ``/v1/messages``; 402 when the key cannot afford every request's worst case.
- ``GET /v1/messages/batches?before_id=&after_id=&limit=``, ``GET /v1/messages/batches/{id}``.
- ``POST /v1/messages/batches/{id}/cancel``: queued requests canceled, running ones finish.
- ``DELETE /v1/messages/batches/{id}``: an ended batch and its results (400 while processing).
- ``GET /v1/messages/batches/{id}/results``: JSONL, one line per request in request order,
  once processing ended.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Optional

import orjson

from tollway.batches.service import Batches
from tollway.batches.store import Batch, Line
from tollway.capabilities import Routes
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.params import check_fields, json_object, page_limit
from tollway.keys.auth import Authenticator

KIND = "anthropic"
ENDPOINT = "/v1/messages"
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
JSONL_HEADERS = [("content-type", "application/jsonl")]


def rfc3339(ms: Optional[int]) -> Optional[str]:
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms // 1000, timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def base_url(request: Request) -> str:
    scheme = request.headers.get("x-forwarded-proto", "http").split(",")[0].strip() or "http"
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or "127.0.0.1"
    return f"{scheme}://{host.split(',')[0].strip()}"


def view(batch: Batch, counts: dict[str, int], base: str) -> dict[str, Any]:
    ended = batch.ended_at is not None
    if ended:
        tally = {
            "processing": 0,
            "succeeded": counts.get("succeeded", 0),
            "errored": counts.get("failed", 0),
            "canceled": counts.get("cancelled", 0),
            "expired": counts.get("expired", 0),
        }
    else:  # as Anthropic: every request counts as processing until the whole batch ended
        tally = {"processing": batch.total, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    status = "ended" if ended else "canceling" if batch.cancel_initiated_at is not None else "in_progress"
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": tally,
        "ended_at": rfc3339(batch.ended_at),
        "created_at": rfc3339(batch.created_at),
        "expires_at": rfc3339(batch.expires_at),
        "archived_at": None,
        "cancel_initiated_at": rfc3339(batch.cancel_initiated_at),
        "results_url": f"{base}/v1/messages/batches/{batch.id}/results" if ended else None,
    }


def result_line(line: Line) -> bytes:
    if line.status == "succeeded":
        result: dict[str, Any] = {"type": "succeeded", "message": line.result}
    elif line.status == "failed":
        error = line.error if isinstance(line.error, dict) and line.error.get("type") == "error" else None
        if error is None:
            error = {"type": "error", "error": {"type": "api_error", "message": orjson.dumps(line.error).decode()}}
        result = {"type": "errored", "error": error}
    elif line.status == "expired":
        result = {"type": "expired"}
    else:
        result = {"type": "canceled"}
    return orjson.dumps({"custom_id": line.custom_id, "result": result})


def parse_requests(body: dict[str, Any], max_requests: int) -> list[tuple[str, dict[str, Any]]]:
    check_fields(body, {"requests"})
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise HTTPError(400, "'requests' must be a non-empty array of {custom_id, params}", param="requests")
    if len(requests) > max_requests:
        raise HTTPError(
            400, f"a batch has at most {max_requests} requests; this one has {len(requests)}", param="requests"
        )
    lines: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for i, item in enumerate(requests):
        where = f"requests[{i}]"
        if not isinstance(item, dict):
            raise HTTPError(400, f"{where}: must be an object {{custom_id, params}}", param=where)
        unknown = sorted(set(item) - {"custom_id", "params"})
        if unknown:
            raise HTTPError(400, f"{where}: unknown field(s) {', '.join(unknown)}", param=f"{where}.{unknown[0]}")
        custom_id, params = item.get("custom_id"), item.get("params")
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise HTTPError(
                400, f"{where}.custom_id: must be 1 to 64 characters of a-z, A-Z, 0-9, - and _", param=where
            )
        if custom_id in seen:
            raise HTTPError(400, f"{where}.custom_id: {custom_id!r} is used twice in the batch", param=where)
        seen.add(custom_id)
        if not isinstance(params, dict):
            raise HTTPError(400, f"{where}.params: must be the object of a Messages request", param=where)
        lines.append((custom_id, params))
    return lines


def add_routes(routes: Routes, auth: Authenticator, batches: Batches) -> None:
    async def answer(request: Request, batch: Batch) -> Response:
        return json_response(200, view(batch, await batches.counts(batch), base_url(request)))

    @routes.route("POST", "/v1/messages/batches")
    async def create(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        lines = parse_requests(json_object(request), batches.settings.max_requests)
        batch = await batches.create(key, KIND, "msgbatch_", ENDPOINT, lines, lambda i: f"requests[{i}].params")
        return await answer(request, batch)

    @routes.route("GET", "/v1/messages/batches")
    async def listing(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        query = request.query()
        limit = page_limit(query, 20, 1000)
        after, before = query.get("after_id"), query.get("before_id")
        for name, value in (("after_id", after), ("before_id", before)):
            if value is not None and not 0 < len(value) <= 40:
                raise HTTPError(400, f"'{name}' must be a message batch id", param=name)
        if after is not None and before is not None:
            raise HTTPError(400, "give 'after_id' or 'before_id', not both", param="before_id")
        found, more = await batches.page(key, KIND, limit, after, before)
        base = base_url(request)
        data = [view(b, await batches.counts(b), base) for b in found]
        return json_response(
            200,
            {
                "data": data,
                "has_more": more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    @routes.route("GET", "/v1/messages/batches/{message_batch_id}")
    async def retrieve(request: Request, message_batch_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        return await answer(request, await batches.get(key, KIND, message_batch_id))

    @routes.route("DELETE", "/v1/messages/batches/{message_batch_id}")
    async def delete(request: Request, message_batch_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        batch = await batches.delete(key, KIND, message_batch_id)
        return json_response(200, {"id": batch.id, "type": "message_batch_deleted"})

    @routes.route("POST", "/v1/messages/batches/{message_batch_id}/cancel")
    async def cancel(request: Request, message_batch_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        return await answer(request, await batches.cancel(key, KIND, message_batch_id))

    @routes.route("GET", "/v1/messages/batches/{message_batch_id}/results")
    async def results(request: Request, message_batch_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        batch = await batches.get(key, KIND, message_batch_id)
        if batch.ended_at is None:
            raise HTTPError(400, f"batch {batch.id!r} is still processing: its results are ready once it has ended")
        lines = await batches.lines(batch)
        return Response(200, b"".join(result_line(line) + b"\n" for line in lines), list(JSONL_HEADERS))
