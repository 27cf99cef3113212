"""/v1/usage: spend by key and model over a time window, for the caller's account."""

from __future__ import annotations

import asyncio

from tollway.capabilities import Capability, Routes
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.params import time_ms
from tollway.keys.auth import Authenticator
from tollway.ledger.report import month_start_ms, usage_summary
from tollway.ledger.writer import UsageWriter
from tollway.store import Database, now_ms


def capability(*, auth: Authenticator, writer: UsageWriter, db: Database) -> Capability:
    routes = Routes()

    @routes.route("GET", "/v1/usage")
    async def usage(request: Request) -> Response:
        caller = await auth.authenticate(request.headers)
        if not caller.is_admin:
            raise HTTPError(403, "this endpoint needs an admin key", code="admin_key_required")
        query = request.query()
        now = now_ms()
        to_ms = time_ms(query["to_ms"], "to_ms") if "to_ms" in query else now + 1
        from_ms = time_ms(query["from_ms"], "from_ms") if "from_ms" in query else month_start_ms(now)
        if from_ms > to_ms:
            raise HTTPError(400, "'from_ms' must not be after 'to_ms'", param="from_ms")
        await asyncio.to_thread(writer.flush)
        summary = await asyncio.to_thread(usage_summary, db, caller.account_id, from_ms, to_ms)
        return json_response(200, summary)

    return Capability(routes)
