"""Webhook tools: registered per account (``store``, HTTP API in ``routes``), called by the
gateway through signed webhooks (``dispatch``; signatures in ``tollway.webhooks``)."""

from tollway.tools.dispatch import Dispatcher, ToolResult
from tollway.tools.store import DuplicateToolName, Tool, ToolStore

__all__ = ["Dispatcher", "DuplicateToolName", "Tool", "ToolResult", "ToolStore"]
