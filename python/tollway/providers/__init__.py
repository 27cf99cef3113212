"""One module per upstream wire format: how to prepare a request and authenticate to it,
and (``*_tools``) how tools, tool calls and their results look in it."""

from tollway.providers import anthropic, anthropic_tools, openai, openai_responses, openai_tools
from tollway.providers.base import PreparedRequest, ProviderAdapter
from tollway.providers.tool_format import ToolFormat

# By wire format. A provider's own format is its ``kind``; "openai_responses" is the
# Responses API of an openai provider that serves it (Provider.responses).
ADAPTERS: dict[str, ProviderAdapter] = {
    "openai": openai.ADAPTER,
    "anthropic": anthropic.ADAPTER,
    openai_responses.KIND: openai_responses.ADAPTER,
}
TOOL_FORMATS: dict[str, ToolFormat] = {"openai": openai_tools.FORMAT, "anthropic": anthropic_tools.FORMAT}
# Threads store the steps of a tool loop as this format's content blocks.
CANONICAL_TOOLS = anthropic_tools.FORMAT

__all__ = ["ADAPTERS", "CANONICAL_TOOLS", "TOOL_FORMATS", "PreparedRequest", "ProviderAdapter", "ToolFormat"]
