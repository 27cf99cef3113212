"""The points where a capability plugs into the call path, and the lists that hold them.

Three moments, each a list of plain callables that the gateway assembles from its
capabilities (see ``tollway.capabilities``):

- ``message_stored(conn, thread_id, messages)``: messages were appended to a thread.
  Runs inside the append's transaction, on ``conn``: what a hook writes (a search
  index's queue) commits or rolls back with the messages themselves.
- ``thread_deleted(conn, thread_id)``: a thread (and its messages) is being erased, in
  the delete's transaction on ``conn``: what a hook derived from its messages (search
  entries) must go with it, at once.
- ``before_call(call)``: a model call is about to hold money and go upstream (every
  kind: native, translated, tool-loop step, thread turn). ``call`` is a
  ``CallIntent``; a hook refuses the call by raising ``HTTPError`` (policy: allowed
  models, limits). Runs on the event loop's thread, synchronously: keep it cheap.
- ``call_settled(conn, rows)``: usage events (one per model call, settled or failed)
  are being written, in the writer's transaction on ``conn``. A hook's writes (an
  outbox, a debit) commit with them. ``rows`` are exactly the events this transaction
  inserts (tollway.ledger.rollups.insert_events: a batch written again after a lost
  commit acknowledgement, or rows the crash journal's replay finds already there, are
  left out), so each event reaches the hooks in one committed transaction only; key
  what you write on each row's ``event_id`` all the same (a unique column).

Account events (tollway.events) are not a hook: a capability calls
``tollway.events.emit(conn, account_id, type, data)`` in the transaction of the change
that causes the event (in a ``call_settled`` hook, that is the writer's ``conn``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from tollway.config import ModelRoute
    from tollway.keys import ApiKey
    from tollway.threads.store import StoredMessage


@dataclass(frozen=True, slots=True)
class CallIntent:
    """What a ``before_call`` hook is told about a model call."""

    key: "ApiKey"
    route: "ModelRoute"
    payload: dict[str, Any]  # the body in the provider's format (read it, do not change it)
    stream: bool
    requested_max_tokens: int | None


MessageStored = Callable[["Connection", str, Sequence["StoredMessage"]], None]
ThreadDeleted = Callable[["Connection", str], None]
BeforeCall = Callable[[CallIntent], None]
CallSettled = Callable[["Connection", Sequence[dict[str, Any]]], None]


@dataclass(slots=True)
class Hooks:
    message_stored: list[MessageStored] = field(default_factory=list)
    thread_deleted: list[ThreadDeleted] = field(default_factory=list)
    before_call: list[BeforeCall] = field(default_factory=list)
    call_settled: list[CallSettled] = field(default_factory=list)

    def extend(self, other: "Hooks") -> None:
        self.message_stored += other.message_stored
        self.thread_deleted += other.thread_deleted
        self.before_call += other.before_call
        self.call_settled += other.call_settled

    def stored(self, conn: "Connection", thread_id: str, messages: Sequence["StoredMessage"]) -> None:
        for hook in self.message_stored:
            hook(conn, thread_id, messages)

    def deleted(self, conn: "Connection", thread_id: str) -> None:
        for hook in self.thread_deleted:
            hook(conn, thread_id)

    def before(self, intent: CallIntent) -> None:
        for hook in self.before_call:
            hook(intent)

    def settled(self, conn: "Connection", rows: Sequence[dict[str, Any]]) -> None:
        for hook in self.call_settled:
            hook(conn, rows)
