"""OpenAI Batch and Files (``client.files.*``, ``client.batches.*``), errors in OpenAI's shape:

- ``POST /v1/files`` (multipart: ``file``, ``purpose`` "batch"): the JSONL input, checked line
  by line (``{"custom_id", "method": "POST", "url", "body"}``); ``GET /v1/files[/{id}]``,
  ``DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``.
- ``POST /v1/batches`` ``{"input_file_id", "endpoint", "completion_window": "24h", "metadata"?}``:
  each line a job; 402 when the key cannot afford every line's worst case.
- ``GET /v1/batches?after=&limit=``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.

A batch's output file holds its succeeded lines, its error file the others (a provider's
error response, or ``batch_cancelled`` / ``batch_expired``), in line order, built from the
jobs' stored results when read.
"""

from __future__ import annotations

from typing import Any, Optional

import orjson

from tollway.batches.service import Batches, file_not_found
from tollway.batches.store import Batch, Line, StoredFile
from tollway.capabilities import Routes
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.multipart import form_parts
from tollway.http.params import check_fields, json_object, metadata_object, page_limit
from tollway.keys.auth import Authenticator

KIND = "openai"
ENDPOINTS = ("/v1/chat/completions", "/v1/responses")
_CREATE_FIELDS = {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
_UNRUN = {
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
}


def seconds(ms: Optional[int]) -> Optional[int]:
    return None if ms is None else ms // 1000


def parse_input(content: bytes, max_requests: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The lines of a batch input file: (custom_id, url, body); a 400 naming the first bad line."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "the batch input file must be UTF-8 JSONL", param="file") from None
    raw = [line for line in text.splitlines() if line.strip()]
    if not raw:
        raise HTTPError(400, "the batch input file has no requests", param="file")
    if len(raw) > max_requests:
        raise HTTPError(400, f"a batch has at most {max_requests} requests; this file has {len(raw)}", param="file")
    lines: list[tuple[str, str, dict[str, Any]]] = []
    seen: set[str] = set()
    for number, line in enumerate(raw, 1):
        where = f"line {number}"
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise HTTPError(400, f"{where} of the batch input file is not valid JSON", param="file") from None
        if not isinstance(item, dict):
            raise HTTPError(400, f"{where}: must be an object {{custom_id, method, url, body}}", param="file")
        unknown = sorted(set(item) - {"custom_id", "method", "url", "body"})
        if unknown:
            raise HTTPError(400, f"{where}: unknown field(s) {', '.join(unknown)}", param="file")
        custom_id, url, body = item.get("custom_id"), item.get("url"), item.get("body")
        if not isinstance(custom_id, str) or not 0 < len(custom_id) <= 255 or "\x00" in custom_id:
            raise HTTPError(400, f"{where}: 'custom_id' must be a string of 1 to 255 characters", param="file")
        if custom_id in seen:
            raise HTTPError(400, f"{where}: the custom_id {custom_id!r} is used twice in the file", param="file")
        seen.add(custom_id)
        if item.get("method") != "POST":
            raise HTTPError(400, f"{where}: 'method' must be \"POST\"", param="file")
        if url not in ENDPOINTS:
            raise HTTPError(400, f"{where}: 'url' must be one of {', '.join(ENDPOINTS)}", param="file")
        if not isinstance(body, dict):
            raise HTTPError(400, f"{where}: 'body' must be the request's JSON object", param="file")
        lines.append((custom_id, url, body))
    return lines


def batch_view(batch: Batch, counts: dict[str, int]) -> dict[str, Any]:
    ended = batch.ended_at is not None
    cancelled = batch.cancel_initiated_at is not None
    if ended:
        status = "cancelled" if cancelled else "expired" if counts.get("expired") else "completed"
    else:
        status = "cancelling" if cancelled else "in_progress"
    failed = sum(n for s, n in counts.items() if s in ("failed", "cancelled", "expired"))
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": seconds(batch.created_at),
        "in_progress_at": seconds(batch.created_at),
        "expires_at": seconds(batch.expires_at),
        "finalizing_at": seconds(batch.ended_at),
        "completed_at": seconds(batch.ended_at) if status == "completed" else None,
        "failed_at": None,
        "expired_at": seconds(batch.ended_at) if status == "expired" else None,
        "cancelling_at": seconds(batch.cancel_initiated_at),
        "cancelled_at": seconds(batch.ended_at) if status == "cancelled" else None,
        "request_counts": {"total": batch.total, "completed": counts.get("succeeded", 0), "failed": failed},
        "metadata": batch.metadata,
    }


def output_line(line: Line) -> bytes:
    item: dict[str, Any] = {"id": "batch_req_" + line.job_id.removeprefix("job_"), "custom_id": line.custom_id}
    if line.status in _UNRUN:
        code, message = _UNRUN[line.status]
        item.update(response=None, error={"code": code, "message": message})
    else:
        body = line.result if line.status == "succeeded" else line.error
        item.update(response={"status_code": line.status_code, "request_id": line.request_id, "body": body}, error=None)
    return orjson.dumps(item)


def file_view(stored: StoredFile, size: Optional[int] = None) -> dict[str, Any]:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": stored.bytes if size is None else size,
        "created_at": seconds(stored.created_at),
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def _list(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}


def add_routes(routes: Routes, auth: Authenticator, batches: Batches) -> None:
    settings = batches.settings

    async def content_of(stored: StoredFile) -> bytes:
        if stored.batch_id is None:
            return await batches.stored_content(stored)
        found = await batches.store_batch(stored.batch_id)
        if found is None:
            return b""
        lines = await batches.lines(found, ("succeeded",) if stored.kind == "output" else None)
        return b"".join(output_line(x) + b"\n" for x in lines if stored.kind == "output" or x.status != "succeeded")

    async def shown(stored: StoredFile) -> dict[str, Any]:
        return file_view(stored, len(await content_of(stored)) if stored.batch_id is not None else None)

    @routes.route("POST", "/v1/files")
    async def upload(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        parts = form_parts(request)
        purpose = parts.get("purpose")
        if purpose is None or purpose.data.decode("utf-8", "replace") != "batch":
            raise HTTPError(400, "'purpose' must be \"batch\" (the only files this gateway keeps)", param="purpose")
        file = parts.get("file")
        if file is None or file.filename is None:
            raise HTTPError(400, "'file' (a file part with a filename) is required", param="file")
        if "\x00" in file.filename:
            raise HTTPError(400, "the file's name contains a NUL character", param="file")
        if len(file.data) > settings.max_file_bytes:
            raise HTTPError(
                413,
                f"the file is {len(file.data)} bytes; at most {settings.max_file_bytes} are accepted",
                code="file_too_large",
                param="file",
            )
        parse_input(file.data, settings.max_requests)
        name = file.filename[:255] or "input.jsonl"
        return json_response(200, file_view(await batches.upload(key, name, "batch", file.data)))

    @routes.route("GET", "/v1/files")
    async def list_files(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        query = request.query()
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise HTTPError(400, "'order' must be asc or desc", param="order")
        purpose, after = query.get("purpose"), query.get("after")
        if after is not None and not 0 < len(after) <= 40:
            raise HTTPError(400, "'after' must be a file id", param="after")
        own = None if key.is_admin else key.id
        found, more = await batches.files_page(
            key.account_id, own, purpose or None, page_limit(query, 100, 10_000), after, order == "asc"
        )
        return json_response(200, _list([await shown(f) for f in found], more))

    @routes.route("GET", "/v1/files/{file_id}")
    async def retrieve_file(request: Request, file_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        return json_response(200, await shown(await batches.file(key, file_id)))

    @routes.route("DELETE", "/v1/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        stored = await batches.file(key, file_id)
        if not await batches.delete_file(stored.id):
            raise file_not_found(file_id)
        return json_response(200, {"id": stored.id, "object": "file", "deleted": True})

    @routes.route("GET", "/v1/files/{file_id}/content")
    async def file_content(request: Request, file_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        data = await content_of(await batches.file(key, file_id))
        return Response(200, data, [("content-type", "application/jsonl")])

    async def answer(batch: Batch) -> Response:
        return json_response(200, batch_view(batch, await batches.counts(batch)))

    @routes.route("POST", "/v1/batches")
    async def create(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        body = json_object(request)
        check_fields(body, _CREATE_FIELDS)
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise HTTPError(400, f"'endpoint' must be one of {', '.join(ENDPOINTS)}", param="endpoint")
        if body.get("completion_window") != "24h":
            raise HTTPError(400, "'completion_window' must be \"24h\"", param="completion_window")
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise HTTPError(400, "'input_file_id' must be the id of a file uploaded with purpose batch", param="input_file_id")  # fmt: skip
        metadata = metadata_object(body) if body.get("metadata") is not None else None
        try:
            stored = await batches.file(key, file_id)
        except HTTPError:
            raise HTTPError(404, f"no file {file_id!r}", code="not_found", param="input_file_id") from None
        if stored.purpose != "batch":
            raise HTTPError(400, f"file {file_id!r} is not a batch input (purpose batch)", param="input_file_id")
        lines = parse_input(await batches.stored_content(stored), settings.max_requests)
        for number, (custom_id, url, _) in enumerate(lines, 1):
            if url != endpoint:
                raise HTTPError(
                    400,
                    f"line {number} (custom_id {custom_id!r}) of the input file calls {url}, not the batch's {endpoint}",
                    param="input_file_id",
                )
        batch = await batches.create(
            key,
            KIND,
            "batch_",
            endpoint,
            [(custom_id, line_body) for custom_id, _, line_body in lines],
            lambda i: f"line {i + 1} (custom_id {lines[i][0]!r}) of the input file",
            input_file_id=stored.id,
            completion_window="24h",
            metadata=metadata,
        )
        return await answer(batch)

    @routes.route("GET", "/v1/batches")
    async def listing(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        query = request.query()
        after = query.get("after")
        if after is not None and not 0 < len(after) <= 40:
            raise HTTPError(400, "'after' must be a batch id", param="after")
        found, more = await batches.page(key, KIND, page_limit(query, 20, 100), after)
        return json_response(200, _list([batch_view(b, await batches.counts(b)) for b in found], more))

    @routes.route("GET", "/v1/batches/{batch_id}")
    async def retrieve(request: Request, batch_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        return await answer(await batches.get(key, KIND, batch_id))

    @routes.route("POST", "/v1/batches/{batch_id}/cancel")
    async def cancel(request: Request, batch_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        return await answer(await batches.cancel(key, KIND, batch_id))
