"""OpenAI Responses (``POST {base_url}/responses``): the wire format's own knowledge.

``ADAPTER`` prepares and authenticates a call (as the other provider modules);
``check_request`` refuses what the gateway cannot bill or forward; the Rust core
reads its usage (``extract_usage("openai_responses", body)``, the stream scanner).
"""

from tollway.providers.openai_responses.adapter import ADAPTER, KIND, MIN_OUTPUT_TOKENS, OpenAIResponsesAdapter
from tollway.providers.openai_responses.checks import check_request

__all__ = ["ADAPTER", "KIND", "MIN_OUTPUT_TOKENS", "OpenAIResponsesAdapter", "check_request"]
