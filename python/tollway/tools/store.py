"""Webhook tools in the database (synchronous; call from a worker thread).

A tool belongs to one account; every query is scoped by account, so another
account's tool is simply not found. Names are unique per account (a UNIQUE
constraint, so two concurrent creates cannot both win): a clash raises
``DuplicateToolName``.

The signing secret is stored in clear because the gateway signs every webhook
request with it (it is an HMAC key the receiving app holds, not a credential for
Tollway). It is returned by ``create`` and by ``update(rotate_secret=True)`` only,
is absent from ``Tool.public()`` and ``repr(Tool)``, and is never logged.
"""

from __future__ import annotations

import base64
import secrets as _secrets
from dataclasses import dataclass, field
from typing import Any, Optional

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from tollway.keys.secrets import new_id
from tollway.providers.anthropic import tools as anthropic_tools
from tollway.providers.openai_chat import tools as openai_tools
from tollway.store import Database, now_ms, tools

SECRET_PREFIX = "whsec_"
DEFAULT_TIMEOUT_MS = 10_000
MIN_TIMEOUT_MS = 100
MAX_TIMEOUT_MS = 120_000


def generate_signing_secret() -> str:
    """``whsec_`` + 32 random bytes in base64 without padding (43 characters): the form
    Standard Webhooks libraries decode into their HMAC key (tollway.webhooks.secret_key)."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(32)).decode("ascii").rstrip("=")


class DuplicateToolName(ValueError):
    """The account already has a tool with this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a tool named {name!r} already exists in this account")
        self.name = name


@dataclass(slots=True)
class Tool:
    id: str
    account_id: str
    name: str
    description: str
    input_schema: dict[str, Any]
    webhook_url: str
    timeout_ms: int
    signing_secret: str = field(repr=False)
    created_at: int
    updated_at: int

    def public(self) -> dict[str, Any]:
        """The API representation, without the signing secret."""
        return {
            "id": self.id,
            "object": "tool",
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "webhook_url": self.webhook_url,
            "timeout_ms": self.timeout_ms,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def openai_definition(self) -> dict[str, Any]:
        """The tool as an OpenAI Chat Completions ``tools`` entry."""
        return openai_tools.FORMAT.definition(self)

    def anthropic_definition(self) -> dict[str, Any]:
        """The tool as an Anthropic Messages ``tools`` entry."""
        return anthropic_tools.FORMAT.definition(self)


def _row_to_tool(row: Any) -> Tool:
    return Tool(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        description=row.description,
        input_schema=row.input_schema,
        webhook_url=row.webhook_url,
        timeout_ms=row.timeout_ms,
        signing_secret=row.signing_secret,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _is_name_clash(exc: IntegrityError) -> bool:
    text = str(exc.orig).lower()
    return "uq_tools_account_name" in text or "tools.account_id, tools.name" in text


class ToolStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        account_id: str,
        name: str,
        description: str,
        input_schema: dict[str, Any],
        webhook_url: str,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> tuple[Tool, str]:
        """Store a new tool; returns it and its signing secret. ``DuplicateToolName`` when
        the account has a tool of that name. (Validation is the caller's: see routes.py.)"""
        now = now_ms()
        secret = generate_signing_secret()
        tool = Tool(
            id=new_id("tool_"),
            account_id=account_id,
            name=name,
            description=description,
            input_schema=input_schema,
            webhook_url=webhook_url,
            timeout_ms=int(timeout_ms),
            signing_secret=secret,
            created_at=now,
            updated_at=now,
        )
        try:
            with self.db.engine.begin() as conn:
                conn.execute(
                    insert(tools).values(
                        id=tool.id,
                        account_id=account_id,
                        name=name,
                        description=description,
                        input_schema=input_schema,
                        webhook_url=webhook_url,
                        timeout_ms=tool.timeout_ms,
                        signing_secret=secret,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError as exc:
            if _is_name_clash(exc):
                raise DuplicateToolName(name) from None
            raise
        return tool, secret

    def get(self, account_id: str, tool_id: str) -> Optional[Tool]:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(tools).where(tools.c.id == tool_id, tools.c.account_id == account_id)).first()
        return _row_to_tool(row) if row else None

    def by_name(self, account_id: str, name: str) -> Optional[Tool]:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(tools).where(tools.c.account_id == account_id, tools.c.name == name)).first()
        return _row_to_tool(row) if row else None

    def by_ids(self, account_id: str, ids: list[str]) -> list[Tool]:
        """The account's tools with these ids, in the given order (one query).
        ``LookupError`` naming the first id the account has no tool for."""
        if not ids:
            return []
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(tools).where(tools.c.account_id == account_id, tools.c.id.in_(set(ids)))).all()
        found = {row.id: _row_to_tool(row) for row in rows}
        for tool_id in ids:
            if tool_id not in found:
                raise LookupError(f"no tool {tool_id!r}")
        return [found[tool_id] for tool_id in ids]

    def list(self, account_id: str, limit: int, after: Optional[str]) -> tuple[list[Tool], bool]:
        """Oldest first. ``after``: a tool id from a previous page; one that is not the
        account's raises ValueError."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        with self.db.engine.connect() as conn:
            query = select(tools).where(tools.c.account_id == account_id)
            if after is not None:
                cursor = conn.execute(
                    select(tools.c.seq).where(tools.c.id == after, tools.c.account_id == account_id)
                ).scalar()
                if cursor is None:
                    raise ValueError(f"unknown cursor: no tool {after!r} in this listing")
                query = query.where(tools.c.seq > cursor)
            rows = conn.execute(query.order_by(tools.c.seq).limit(limit + 1)).all()
        return [_row_to_tool(r) for r in rows[:limit]], len(rows) > limit

    def update(
        self,
        account_id: str,
        tool_id: str,
        *,
        name: Optional[str] = None,
        description: Optional[str] = None,
        input_schema: Optional[dict[str, Any]] = None,
        webhook_url: Optional[str] = None,
        timeout_ms: Optional[int] = None,
        rotate_secret: bool = False,
    ) -> Optional[tuple[Tool, Optional[str]]]:
        """Change the given fields (``None``: keep) and, with ``rotate_secret``, replace the
        signing secret at once. Returns (tool, the new secret or None), or None when the
        account has no such tool. ``DuplicateToolName`` on a rename onto an existing name."""
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = name
        if description is not None:
            values["description"] = description
        if input_schema is not None:
            values["input_schema"] = input_schema
        if webhook_url is not None:
            values["webhook_url"] = webhook_url
        if timeout_ms is not None:
            values["timeout_ms"] = int(timeout_ms)
        secret = generate_signing_secret() if rotate_secret else None
        if secret is not None:
            values["signing_secret"] = secret
        if values:
            values["updated_at"] = now_ms()
            try:
                with self.db.engine.begin() as conn:
                    changed = conn.execute(
                        update(tools).where(tools.c.id == tool_id, tools.c.account_id == account_id).values(**values)
                    ).rowcount
            except IntegrityError as exc:
                if name is not None and _is_name_clash(exc):
                    raise DuplicateToolName(name) from None
                raise
            if not changed:
                return None
        tool = self.get(account_id, tool_id)
        return None if tool is None else (tool, secret)

    def delete(self, account_id: str, tool_id: str) -> bool:
        """False when the account has no such tool."""
        with self.db.engine.begin() as conn:
            gone = conn.execute(delete(tools).where(tools.c.id == tool_id, tools.c.account_id == account_id)).rowcount
        return gone == 1


__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "DuplicateToolName",
    "MAX_TIMEOUT_MS",
    "MIN_TIMEOUT_MS",
    "SECRET_PREFIX",
    "Tool",
    "ToolStore",
    "generate_signing_secret",
]
