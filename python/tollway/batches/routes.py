"""The batches capability: the native batch APIs on the jobs engine (README, "Batches").

Anthropic Message Batches under ``/v1/messages/batches`` (anthropic.py) and OpenAI Files and
Batch under ``/v1/files`` and ``/v1/batches`` (openai.py), any key (a standard key sees its
own batches and files, an admin key its account's). Provides ``batches`` (``Batches``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tollway.background import cancel_task
from tollway.batches import anthropic, openai
from tollway.batches.service import Batches
from tollway.batches.store import BatchStore
from tollway.capabilities import Capability, Routes
from tollway.keys.auth import Authenticator
from tollway.store import Database

if TYPE_CHECKING:
    from tollway.config import Settings
    from tollway.jobs.engine import JobEngine


def capability(*, settings: "Settings", db: Database, auth: Authenticator, jobs: "JobEngine") -> Capability:
    routes = Routes()
    batches = Batches(settings.batches, BatchStore(db), jobs)
    anthropic.add_routes(routes, auth, batches)
    openai.add_routes(routes, auth, batches)
    tasks: list[asyncio.Task] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(batches.sweep()))

    async def stop() -> None:
        await asyncio.gather(*(cancel_task(task) for task in tasks))

    return Capability(routes, provides={"batches": batches}, on_startup=[start], on_shutdown=[stop])
