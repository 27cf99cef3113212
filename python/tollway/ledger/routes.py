"""/v1/usage (JSON) and /v1/usage.csv: spend over a time window, for the caller's account."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any, AsyncIterator, Optional

from tollway.capabilities import Capability, Routes
from tollway.http.core import HTTPError, Request, Response, StreamResponse, json_response
from tollway.http.params import time_ms
from tollway.keys.auth import Authenticator
from tollway.ledger.report import GROUPS, month_start_ms
from tollway.ledger.usage_report import usage_groups, usage_report
from tollway.ledger.writer import UsageWriter
from tollway.store import Database, now_ms

CSV_ROWS_PER_CHUNK = 500
CSV_SUMS = ("request_count", "input_tokens", "output_tokens", "cost_micros", "cost_usd")
_CSV_FIELD = {"key": "key_id", "end_user": "end_user_id", "model": "model", "tag": "tag", "day": "day"}


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


def usd(micros: int) -> str:
    """Micro-dollars as USD with 6 decimals, exactly (no float)."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def csv_lines(groups: list[dict[str, Any]], group_by: list[str]) -> list[list[Any]]:
    """The CSV's header and one row per group (None as an empty field)."""
    header = [_CSV_FIELD[g] for g in group_by] + list(CSV_SUMS)
    rows = [header]
    for g in groups:
        rows.append(
            [g[_CSV_FIELD[f]] if g[_CSV_FIELD[f]] is not None else "" for f in group_by]
            + [g["request_count"], g["input_tokens"], g["output_tokens"], g["cost_micros"], usd(g["cost_micros"])]
        )
    return rows


async def _csv_chunks(lines: list[list[Any]]) -> AsyncIterator[bytes]:
    for i in range(0, len(lines), CSV_ROWS_PER_CHUNK):
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows(lines[i : i + CSV_ROWS_PER_CHUNK])
        yield out.getvalue().encode()
        await asyncio.sleep(0)


def capability(*, auth: Authenticator, writer: UsageWriter, db: Database) -> Capability:
    routes = Routes()

    async def window(request: Request) -> tuple[str, int, int, list[str]]:
        caller = await auth.admin(request.headers)
        query = request.query()
        now = now_ms()
        to_ms = time_ms(query["to_ms"], "to_ms") if "to_ms" in query else now + 1
        from_ms = time_ms(query["from_ms"], "from_ms") if "from_ms" in query else month_start_ms(now)
        if from_ms > to_ms:
            raise HTTPError(400, "'from_ms' must not be after 'to_ms'", param="from_ms")
        group_by = _group_by(query.get("group_by"))
        await asyncio.to_thread(writer.flush)
        return caller.account_id, from_ms, to_ms, group_by

    @routes.route("GET", "/v1/usage")
    async def usage(request: Request) -> Response:
        account_id, from_ms, to_ms, group_by = await window(request)
        return json_response(200, await asyncio.to_thread(usage_report, db, account_id, from_ms, to_ms, group_by))

    @routes.route("GET", "/v1/usage.csv")
    async def usage_csv(request: Request) -> StreamResponse:
        """One row per group (group_by, default key,model), after a header row: the group's
        columns in group_by order, then request_count, input_tokens, output_tokens, cost_micros, cost_usd."""
        account_id, from_ms, to_ms, group_by = await window(request)
        group_by = group_by or ["key", "model"]
        groups = await asyncio.to_thread(usage_groups, db, account_id, from_ms, to_ms, group_by)
        headers = [
            ("content-type", "text/csv; charset=utf-8"),
            ("content-disposition", f'attachment; filename="usage-{from_ms}-{to_ms}.csv"'),
        ]
        return StreamResponse(200, headers, _csv_chunks(csv_lines(groups, group_by)), lambda: None)

    return Capability(routes)
