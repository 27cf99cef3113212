"""One package per upstream wire format, and the registrations that name them.

``openai_chat`` (Chat Completions), ``anthropic`` (Messages) and ``openai_responses``
(Responses) each hold everything their format knows: the adapter (endpoint, auth,
request preparation, the input estimate), the converters to and from the canonical
model (``canonical.py``; the table of them is ``formats.FORMATS``), its streams and
(``tools.py``) how tools, tool calls and their results look in it. Nothing outside
this package branches on a format's name: it looks the format up here.
"""

from tollway.providers import anthropic, openai_chat, openai_responses
from tollway.providers.anthropic import tools as anthropic_tools
from tollway.providers.base import PreparedRequest, ProviderAdapter
from tollway.providers.openai_chat import tools as openai_chat_tools
from tollway.providers.tool_format import ToolFormat

# By wire format. A provider's own format is its ``kind`` ("openai" is Chat Completions);
# "openai_responses" is the Responses API of an openai provider that serves it.
ADAPTERS: dict[str, ProviderAdapter] = {
    "openai": openai_chat.ADAPTER,
    "anthropic": anthropic.ADAPTER,
    openai_responses.KIND: openai_responses.ADAPTER,
}
# By provider kind: the format the tool loop runs in.
TOOL_FORMATS: dict[str, ToolFormat] = {"openai": openai_chat_tools.FORMAT, "anthropic": anthropic_tools.FORMAT}
# Threads store the steps of a tool loop as this format's content blocks.
CANONICAL_TOOLS = anthropic_tools.FORMAT

__all__ = ["ADAPTERS", "CANONICAL_TOOLS", "TOOL_FORMATS", "PreparedRequest", "ProviderAdapter", "ToolFormat"]
