"""Stripe's request encoding: form bodies in bracket notation, and a strict parameter reader.

``metadata[k]=v``, ``line_items[0][price_data][unit_amount]=500``, ``expand[]=customer``
decode into nested dicts and lists; a dict whose keys are all indices becomes a list
(except a ``metadata`` hash, whose keys are the caller's). :class:`Params` reads them with
Stripe's checks and messages (missing, unknown, invalid integer/boolean/enum, lengths).
"""

from __future__ import annotations

import re
from typing import Any, Optional
from urllib.parse import parse_qsl

from .errors import StripeError, invalid, missing, unknown

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_INT = 2**63 - 1


def decode_form(raw: str) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True, strict_parsing=False):
        m = _KEY.match(key)
        if not m:
            raise invalid(f"Invalid parameter name: {key}", key)
        parts = [m.group(1)] + _PART.findall(m.group(2))
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # a[] appends
                if not isinstance(node, list):
                    raise invalid(f"Invalid array: {key}", key)
                if last:
                    node.append(value)
                    break
                node.append({})
                node = node[-1]
                continue
            if not isinstance(node, dict):
                raise invalid(f"Invalid hash: {key}", key)
            if last:
                node[part] = value
            else:
                nxt = parts[i + 1]
                default: Any = [] if nxt == "" else {}
                node = node.setdefault(part, default)
    return _listify(root, None)


def _listify(node: Any, name: Optional[str]) -> Any:
    if isinstance(node, list):
        return [_listify(v, None) for v in node]
    if not isinstance(node, dict):
        return node
    if name != "metadata" and node and all(k.isdigit() for k in node):
        return [_listify(node[k], None) for k in sorted(node, key=int)]
    return {k: _listify(v, k) for k, v in node.items()}


def sub(prefix: str, name: str | int) -> str:
    return f"{prefix}[{name}]" if prefix else str(name)


class Params:
    """Strict reader over one decoded hash; call :meth:`done` to reject unknown keys."""

    def __init__(self, data: Any, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise invalid(f"Invalid object: {prefix or 'params'} must be a hash", prefix or None)
        self.data = data
        self.prefix = prefix
        self.used: set[str] = {"expand"} if not prefix else set()

    def _name(self, key: str) -> str:
        return sub(self.prefix, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def str(self, key: str, required: bool = False, max_len: int = 5000, choices=None) -> Optional[str]:
        value = self.raw(key)
        if value is None or value == "":
            if required:
                raise missing(self._name(key))
            return None
        if not isinstance(value, str):
            raise invalid(f"Invalid string: {value!r}", self._name(key), "parameter_invalid_string")
        if len(value) > max_len:
            raise invalid(
                f"Invalid string: {value[:20]}...; must be at most {max_len} characters",
                self._name(key),
                "parameter_invalid_string",
            )
        if choices is not None and value not in choices:
            allowed = ", ".join(f"`{c}`" for c in choices)
            raise invalid(
                f"Invalid {self._name(key)}: must be one of {allowed}", self._name(key), "parameter_invalid_string"
            )
        return value

    def int(self, key: str, required: bool = False, min: Optional[int] = None, max: int = MAX_INT) -> Optional[int]:
        value = self.raw(key)
        if value is None or value == "":
            if required:
                raise missing(self._name(key))
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not re.fullmatch(r"-?\d{1,19}", str(value)):
            raise invalid(f"Invalid integer: {value}", self._name(key), "parameter_invalid_integer")
        n = int(value)
        if min is not None and n < min:
            raise invalid(
                f"This value must be greater than or equal to {min}.", self._name(key), "parameter_invalid_integer"
            )
        if n > max:
            raise invalid(
                f"This value must be less than or equal to {max}.", self._name(key), "parameter_invalid_integer"
            )
        return n

    def bool(self, key: str) -> Optional[bool]:
        value = self.raw(key)
        if value is None or value == "":
            return None
        if value in (True, "true"):
            return True
        if value in (False, "false"):
            return False
        raise invalid(f"Invalid boolean: {value}", self._name(key), "parameter_invalid_boolean")

    def hash(self, key: str, required: bool = False) -> Optional["Params"]:
        value = self.raw(key)
        if value is None or value == "":
            if required:
                raise missing(self._name(key))
            return None
        return Params(value, self._name(key))

    def array(self, key: str, required: bool = False, max_items: int = 100) -> list[Any]:
        value = self.raw(key)
        if value is None or value == "":
            if required:
                raise missing(self._name(key))
            return []
        if not isinstance(value, list):
            raise invalid(f"Invalid array: {self._name(key)}", self._name(key), "parameter_invalid_array")
        if len(value) > max_items:
            raise invalid(f"Invalid array: at most {max_items} items", self._name(key), "parameter_invalid_array")
        return value

    def metadata(self, key: str = "metadata") -> Optional[dict[str, str]]:
        """Stripe's limits: 50 keys, key up to 40 characters, value up to 500; "" unsets a key."""
        value = self.raw(key)
        if value is None:
            return None
        if value == "":
            return {}
        if not isinstance(value, dict):
            raise invalid("Invalid hash", self._name(key), "parameter_invalid_hash")
        if len(value) > 50:
            raise invalid("Metadata can have at most 50 keys.", self._name(key), "parameter_invalid_hash")
        for k, v in value.items():
            if len(k) > 40:
                raise invalid(f"Metadata keys can be at most 40 characters: {k}", sub(self._name(key), k))
            if not isinstance(v, str) or len(v) > 500:
                raise invalid("Metadata values must be strings of at most 500 characters.", sub(self._name(key), k))
        return dict(value)

    def done(self) -> None:
        for key in self.data:
            if key not in self.used:
                raise unknown(self._name(key))


def merge_metadata(current: dict[str, str], update: Optional[dict[str, str]]) -> dict[str, str]:
    if update is None:
        return current
    if update == {}:
        return {}
    out = dict(current)
    for k, v in update.items():
        if v == "":
            out.pop(k, None)
        else:
            out[k] = v
    return out


__all__ = ["Params", "StripeError", "decode_form", "merge_metadata", "sub"]
