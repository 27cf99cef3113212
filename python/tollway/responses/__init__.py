"""The OpenAI Responses API (/v1/responses): translated to any provider, stored in the thread tables."""
