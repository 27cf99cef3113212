"""Request bodies from one wire format to the other."""

from tollway.translate.request_to_anthropic import openai_request_to_anthropic
from tollway.translate.request_to_openai import anthropic_request_to_openai

__all__ = ["anthropic_request_to_openai", "openai_request_to_anthropic"]
