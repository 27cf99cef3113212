"""Error types and bodies: OpenAI ``{"error": {...}}`` and Anthropic ``{"type": "error", "error": {...}}``.

The HTTP status is kept by the caller; both SDKs pick the exception class from it,
so the ``type`` written here is informational and follows each provider's usage.
"""

from __future__ import annotations

from typing import Any, Optional

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
# Error types named in OpenAI stream error chunks (which have no status) -> Anthropic's.
_ANTHROPIC_TYPE_OF_OPENAI_TYPE = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "rate_limit_exceeded": "rate_limit_error",
    "requests": "rate_limit_error",
    "tokens": "rate_limit_error",
    "insufficient_quota": "billing_error",
    "server_error": "api_error",
}
_OPENAI_TYPE_OF_ANTHROPIC_TYPE = {
    "invalid_request_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "billing_error": "insufficient_quota",
}


def anthropic_error_type(status: int) -> str:
    """The Anthropic error type for an HTTP status."""
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def openai_error_type(status: int) -> str:
    """The OpenAI error type for an HTTP status."""
    return _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def anthropic_error_object(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def openai_error_object(
    error_type: str, message: str, code: Optional[str] = None, param: Optional[str] = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def anthropic_type_of_openai_error(error: dict[str, Any]) -> str:
    """The Anthropic type for an OpenAI stream error object (no status known)."""
    for key in ("type", "code"):
        value = error.get(key)
        if isinstance(value, str) and value in _ANTHROPIC_TYPE_OF_OPENAI_TYPE:
            return _ANTHROPIC_TYPE_OF_OPENAI_TYPE[value]
    return "api_error"


def openai_type_of_anthropic_error(error_type: Any) -> str:
    """The OpenAI type for an Anthropic stream error type (no status known)."""
    if not isinstance(error_type, str):
        return "server_error"
    return _OPENAI_TYPE_OF_ANTHROPIC_TYPE.get(error_type, "server_error")
