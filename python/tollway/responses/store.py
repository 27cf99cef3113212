"""Stored responses (``store``, ``previous_response_id``), kept in the thread tables.

A stored response is a thread whose id is the response id, created by the
calling key (and stamped with its end user), so it is scoped exactly like a
thread. Its messages are the whole conversation up to and including this
response: the history of ``previous_response_id`` (copied), this request's input
items (one message each, the item kept in the message's metadata) and the
output (one assistant message whose metadata holds the response object). Each
response is so complete by itself: deleting one erases its copy of the
conversation and leaves the others working. ``instructions`` are the thread's
system prompt and, as in OpenAI, are not carried into the next response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from tollway.keys import ApiKey
from tollway.providers.openai_responses.convert import item_to_message, new_id, output_to_blocks
from tollway.threads.store import NewMessage, StoredMessage, Thread, ThreadStore, visible

_ITEM_PREFIX = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_"}


@dataclass(slots=True)
class Stored:
    thread: Thread
    messages: list[StoredMessage]

    @property
    def response(self) -> dict[str, Any]:
        for message in reversed(self.messages):
            if message.metadata and "response" in message.metadata:
                return message.metadata["response"]
        raise LookupError("no response in this thread")

    def history(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """The conversation as (role, blocks) for the next request; ``system`` for
        system and developer input messages."""
        out = []
        for message in self.messages:
            meta = message.metadata or {}
            role = "system" if meta.get("system") else message.role
            out.append((role, message.content))
        return out

    def input_items(self) -> list[dict[str, Any]]:
        """Every item before the last output: input items, and earlier responses' output items."""
        items: list[dict[str, Any]] = []
        last = max((i for i, m in enumerate(self.messages) if m.metadata and "response" in m.metadata), default=-1)
        for message in self.messages[:last]:
            meta = message.metadata or {}
            if "item" in meta:
                items.append(meta["item"])
            elif "response" in meta:
                items.extend(meta["response"].get("output") or [])
        return items


class ResponseStore:
    def __init__(self, threads: ThreadStore) -> None:
        self.threads = threads

    def get(self, key: ApiKey, response_id: str) -> Optional[Stored]:
        if not response_id.startswith("resp_"):
            return None
        thread = visible(key, self.threads.get_thread(key.account_id, response_id))
        if thread is None:
            return None
        return Stored(thread, self.threads.all_messages(thread.id))

    def delete(self, key: ApiKey, response_id: str) -> bool:
        if self.get(key, response_id) is None:
            return False
        return self.threads.delete_thread(key.account_id, response_id)

    def save(
        self,
        key: ApiKey,
        response: dict[str, Any],
        items: list[dict[str, Any]],
        previous: Optional[Stored],
    ) -> None:
        """Store ``response`` (a completed or incomplete response object) with its input ``items``."""
        # The previous response's conversation, copied (marked: search indexes each message once).
        messages = [
            NewMessage(m.role, m.content, m.model, m.usage, m.stop_reason, {**(m.metadata or {}), "copied": True})
            for m in (previous.messages if previous else [])
        ]
        for i, item in enumerate(items):
            found = item_to_message(item, f"input[{i}]")
            if found is None or not found[1]:
                continue
            role, blocks = found
            item = {"id": new_id(_ITEM_PREFIX.get(item.get("type", "message"), "item_")), **item}
            if item.get("type", "message") == "message":
                item = {"type": "message", "status": "completed", **item}
            meta: dict[str, Any] = {"item": item}
            if role == "system":
                meta["system"] = True
            messages.append(NewMessage("user" if role == "system" else role, blocks, metadata=meta))
        usage = response.get("usage")
        reason = (response.get("incomplete_details") or {}).get("reason")
        messages.append(
            NewMessage(
                "assistant",
                output_to_blocks(response["output"]),
                response.get("model"),
                usage,
                reason or response["status"],
                {"response": response},
            )
        )
        self.threads.create_thread(
            key.account_id, key.id, key.end_user_id, None, response.get("instructions"), response["id"], messages
        )  # the thread and its messages in one transaction
