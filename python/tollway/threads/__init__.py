"""Threads: one end user's conversation held server-side (persistence in ``store``)."""

from tollway.threads.store import UNSET, NewMessage, StoredMessage, Thread, ThreadStore

__all__ = ["NewMessage", "StoredMessage", "Thread", "ThreadStore", "UNSET"]
