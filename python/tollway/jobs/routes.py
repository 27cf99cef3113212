"""Job routes (any key; a standard key sees its own jobs, an admin key the account's):

- ``POST /v1/jobs`` ``{"endpoint", "body", "metadata"?, "webhook_url"?}`` (``Idempotency-Key``
  honoured): 202 with the queued job (and, with a webhook, its signing secret, this once);
  402 when the key cannot afford the call's worst case.
- ``GET /v1/jobs/{job_id}``: its status, and ``result`` or ``error`` once it ended.
- ``GET /v1/jobs?status=&limit=&after=``: newest first, in cursor pages.
- ``POST /v1/jobs/{job_id}/cancel``: cancel a queued or running job (its hold released).

The capability provides ``jobs`` (the ``JobEngine``: the same functions from Python).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from tollway.capabilities import Capability, Routes
from tollway.hooks import Hooks
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.params import check_fields, idempotency_key, json_object, metadata_object, page, page_limit
from tollway.jobs.engine import JobEngine
from tollway.jobs.store import STATUSES, JobStore
from tollway.jobs.worker import CURRENT_TURN, Workers
from tollway.keys.auth import Authenticator
from tollway.ledger import Ledger
from tollway.store import Database
from tollway.tools.routes import validate_webhook_url

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from tollway.calls import Calls
    from tollway.config import Settings
    from tollway.policy.service import Policy
    from tollway.proxy.handler import Proxy
    from tollway.threads.store import StoredMessage
    from tollway.threads.turns import ThreadTurns

_FIELDS = {"endpoint", "body", "metadata", "webhook_url"}


def capability(
    *,
    settings: "Settings",
    db: Database,
    auth: Authenticator,
    policy: "Policy",
    ledger: Ledger,
    proxy: "Proxy",
    turns: "ThreadTurns",
    calls: "Calls",
) -> Capability:
    routes = Routes()
    hooks = Hooks()
    store = JobStore(db)
    engine = JobEngine(settings.jobs, store, auth, policy, ledger, proxy, turns)
    workers = Workers(engine, calls, settings.outbound)

    def turn_stored(conn: "Connection", thread_id: str, messages: Sequence["StoredMessage"]) -> None:
        # A thread job's turn is stored once: its append marks the job in the same transaction,
        # and an append by another attempt of the same job rolls back.
        current = CURRENT_TURN.get()
        if current is None or current[2] != thread_id:
            return
        job_id, attempt, _ = current
        replies = [m.id for m in messages if m.role == "assistant"]
        if not store.mark_turn(conn, job_id, attempt, replies):
            raise RuntimeError(f"the turn of job {job_id} was stored by an earlier attempt")

    hooks.message_stored.append(turn_stored)

    @routes.route("POST", "/v1/jobs")
    async def submit(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        idem = idempotency_key(request)
        body = json_object(request)
        check_fields(body, _FIELDS)
        if "endpoint" not in body or "body" not in body:
            raise HTTPError(
                400, "'endpoint' and 'body' are required", param="endpoint" if "endpoint" not in body else "body"
            )
        metadata = metadata_object(body) if body.get("metadata") is not None else None
        webhook_url = validate_webhook_url(body["webhook_url"]) if body.get("webhook_url") is not None else None
        job, created = await engine.submit(
            key, body["endpoint"], body["body"], metadata=metadata, webhook_url=webhook_url, idempotency_key=idem
        )
        view = job.public()
        if created and job.webhook_secret is not None:
            view["webhook_secret"] = job.webhook_secret  # shown in this response only
        return json_response(202, view)

    @routes.route("GET", "/v1/jobs")
    async def listing(request: Request) -> Response:
        key = await auth.authenticate(request.headers)
        query = request.query()
        status: Optional[str] = query.get("status")
        if status is not None and status not in STATUSES:
            raise HTTPError(400, f"'status' must be one of {', '.join(STATUSES)}", param="status")
        after = query.get("after")
        if after is not None and (not after or len(after) > 40):
            raise HTTPError(400, "'after' must be a job id", param="after")
        found, has_more = await engine.page(key, status, page_limit(query, 20, 100), after)
        return json_response(200, page(found, has_more))

    @routes.route("GET", "/v1/jobs/{job_id}")
    async def retrieve(request: Request, job_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        return json_response(200, (await engine.get(key, job_id)).public())

    @routes.route("POST", "/v1/jobs/{job_id}/cancel")
    async def cancel(request: Request, job_id: str) -> Response:
        key = await auth.authenticate(request.headers)
        return json_response(200, (await engine.cancel(key, job_id)).public())

    async def start() -> None:
        await engine.load()  # the holds first: nothing claims before they are back
        workers.start()

    async def stop() -> None:
        await workers.stop(settings.drain_timeout)

    return Capability(routes, hooks, provides={"jobs": engine}, on_startup=[start], on_shutdown=[stop])
