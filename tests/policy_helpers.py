"""An in-process gateway whose policy clock the test moves, spoken to over HTTP (ASGI, no socket)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import httpx

from tests.conftest import ADMIN_SECRET, gateway_env
from tests.fakes.runner import FakeServer
from tollway.config import load_settings
from tollway.gateway import Gateway
from tollway.http.asgi import ASGIAdapter


class Clock:
    """Unix ms: the wall clock plus an offset the test moves (time keeps flowing)."""

    def __init__(self, start_ms: Optional[int] = None) -> None:
        self.offset = 0 if start_ms is None else start_ms - self.wall()
        self.frozen: Optional[int] = None

    @staticmethod
    def wall() -> int:
        return time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.frozen if self.frozen is not None else self.wall() + self.offset

    def set(self, at_ms: int) -> None:
        if self.frozen is not None:
            self.frozen = at_ms
        else:
            self.offset = at_ms - self.wall()

    def advance(self, ms: int) -> None:
        self.set(self() + ms)

    def freeze(self) -> None:
        self.frozen = self()


def utc_ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp() * 1000)


class Local:
    """The gateway and an httpx client on its ASGI app."""

    def __init__(self, gw: Gateway, clock: Clock) -> None:
        self.gw = gw
        self.clock = clock
        self.transport = httpx.ASGITransport(app=ASGIAdapter(gw.app))
        self.http = httpx.AsyncClient(transport=self.transport, base_url="http://tollway.test", timeout=30)
        self.admin = ADMIN_SECRET

    async def request(self, method: str, path: str, key: Optional[str] = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        headers["authorization"] = f"Bearer {key or self.admin}"
        return await self.http.request(method, path, headers=headers, **kw)

    async def mint(self, **fields: Any) -> tuple[str, str]:
        r = await self.request("POST", "/v1/keys", json={"name": "u", **fields})
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["secret"]

    async def key(self, key_id: str) -> dict[str, Any]:
        r = await self.request("GET", f"/v1/keys/{key_id}")
        assert r.status_code == 200, r.text
        return r.json()

    async def chat(self, secret: str, words: int = 10, model: str = "out-gpt", **extra: Any) -> httpx.Response:
        body = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": f"x #words={words}"}]}
        return await self.request("POST", "/v1/chat/completions", secret, json={**body, **extra})

    async def settled(self) -> None:
        await asyncio.to_thread(self.gw.writer.flush)


@asynccontextmanager
async def local_gateway(
    fake: FakeServer, data_dir: Path, database_url: str, clock: Optional[Clock] = None, **env: str
) -> AsyncIterator[Local]:
    """``env``: more settings (e.g. TOLLWAY_WALLET="on")."""
    clock = clock or Clock()
    gw = Gateway(load_settings(gateway_env(fake, data_dir, database_url, **env)), clock=clock)
    await gw.app.startup()
    await asyncio.to_thread(gw.store.ensure_admin, ADMIN_SECRET)  # what `tollway serve` does
    local = Local(gw, clock)
    try:
        yield local
    finally:
        await local.http.aclose()
        await gw.app.shutdown()


def window_of(key: dict[str, Any], period: str) -> dict[str, Any]:
    return next(w for w in key["limits"] if w["period"] == period)
