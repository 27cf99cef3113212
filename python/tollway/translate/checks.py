"""Type checks on decoded JSON that raise TranslationError naming the field."""

from __future__ import annotations

from typing import Any, Optional

from tollway.translate.errors import TranslationError


def as_dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TranslationError("must be an object", param)
    return value


def as_list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise TranslationError("must be an array", param)
    return value


def as_str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise TranslationError("must be a string", param)
    return value


def opt_str(value: Any, param: str) -> Optional[str]:
    return None if value is None else as_str(value, param)


def as_int(value: Any, param: str, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TranslationError("must be an integer", param)
    if minimum is not None and value < minimum:
        raise TranslationError(f"must be at least {minimum}", param)
    return value


def as_number(value: Any, param: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TranslationError("must be a number", param)
    return value


def as_bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise TranslationError("must be a boolean", param)
    return value
