"""/v1/usage: spend by key and model over a time window, for the caller's account."""

from __future__ import annotations

import asyncio
from typing import Optional

from tollway.capabilities import Capability, Routes
from tollway.http.core import HTTPError, Request, Response, json_response
from tollway.http.params import time_ms
from tollway.keys.auth import Authenticator
from tollway.ledger.report import GROUPS, month_start_ms, usage_groups, usage_summary
from tollway.ledger.writer import UsageWriter
from tollway.store import Database, now_ms


def _group_by(raw: Optional[str]) -> list[str]:
    """``group_by=key,model`` (any of GROUPS, comma-separated, each once)."""
    if raw is None:
        return []
    names = [n.strip() for n in raw.split(",")]
    if not all(n in GROUPS for n in names) or len(set(names)) != len(names):
        raise HTTPError(
            400, f"'group_by' must be a comma-separated list of {', '.join(GROUPS)} (each once)", param="group_by"
        )
    return names


def capability(*, auth: Authenticator, writer: UsageWriter, db: Database) -> Capability:
    routes = Routes()

    @routes.route("GET", "/v1/usage")
    async def usage(request: Request) -> Response:
        caller = await auth.admin(request.headers)
        query = request.query()
        now = now_ms()
        to_ms = time_ms(query["to_ms"], "to_ms") if "to_ms" in query else now + 1
        from_ms = time_ms(query["from_ms"], "from_ms") if "from_ms" in query else month_start_ms(now)
        if from_ms > to_ms:
            raise HTTPError(400, "'from_ms' must not be after 'to_ms'", param="from_ms")
        group_by = _group_by(query.get("group_by"))
        await asyncio.to_thread(writer.flush)
        summary = await asyncio.to_thread(usage_summary, db, caller.account_id, from_ms, to_ms)
        if group_by:
            tz = auth.budgets.zone_of(caller.account_id)
            summary["group_by"] = group_by
            summary["groups"] = await asyncio.to_thread(
                usage_groups, db, caller.account_id, from_ms, to_ms, group_by, tz
            )
        return json_response(200, summary)

    return Capability(routes)
