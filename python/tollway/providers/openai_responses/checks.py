"""The members of a Responses request the gateway relies on, checked before anything is held."""

from __future__ import annotations

from typing import Any

from tollway.http.core import HTTPError

_ROLES = ("user", "assistant", "system", "developer")


def check_request(payload: dict[str, Any]) -> None:
    """400 (OpenAI shape) for a request the Responses API would refuse at its first glance:
    ``input`` neither a string nor a list of item objects, a message item without a role
    or content, ``instructions`` not a string. Deeper checks are the provider's."""
    items = payload.get("input")
    if items is None and payload.get("previous_response_id") is None and payload.get("prompt") is None:
        raise HTTPError(400, "Missing required parameter: 'input'.", param="input")
    if items is not None and not isinstance(items, (str, list)):
        raise HTTPError(400, "Invalid type for 'input': expected a string or an array of input items.", param="input")
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if not isinstance(item, dict):
            raise HTTPError(400, f"Invalid type for 'input[{i}]': expected an object.", param=f"input[{i}]")
        if item.get("type", "message") == "message":
            if item.get("role") not in _ROLES:
                raise HTTPError(
                    400,
                    f"Invalid value for 'input[{i}].role': expected one of {', '.join(_ROLES)}.",
                    param=f"input[{i}].role",
                )
            if not isinstance(item.get("content"), (str, list)):
                raise HTTPError(
                    400,
                    f"Invalid type for 'input[{i}].content': expected a string or an array.",
                    param=f"input[{i}].content",
                )
    instructions = payload.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise HTTPError(400, "Invalid type for 'instructions': expected a string.", param="instructions")
