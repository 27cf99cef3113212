"""The key-policy fields of POST / PATCH /v1/keys, validated at the edge.

Each is checked for type and range here (400 in the route's shape otherwise), so what
is stored can always be read back and acted on.

- ``limits``: ``[{"max_spend_usd", "period"}]``, period one of day, week, month, total,
  each at most once; ``total`` is the same as ``max_spend_usd``.
- ``max_spend_usd`` + ``budget_period`` (the quickstart's shorthand): one window.
- ``rate_limits``: ``{"rpm", "tpm", "max_parallel"}``; ``model_limits``: ``{model or glob: the same}``.
- ``allowed_models``: names or globs (``claude-*``); null = every model.
- ``tags``: strings; ``expires_at``: Unix ms or null; ``disabled``: boolean.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Optional

from tollway.http.core import HTTPError
from tollway.policy.windows import PERIODS

MAX_CAP_USD = Decimal(10) ** 9
RATE_RANGES = {"rpm": 1_000_000, "tpm": 10**12, "max_parallel": 100_000}
MAX_MODELS = 100
MAX_TAGS = 50
MAX_EXPIRES_AT = 1 << 53
POLICY_FIELDS = {
    "limits", "budget_period", "rate_limits", "model_limits", "allowed_models", "tags", "expires_at", "disabled",
}  # fmt: skip


def usd_to_micros(value: Any, field: str = "max_spend_usd") -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise HTTPError(400, f"'{field}' must be a number of US dollars or null", param=field)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise HTTPError(400, f"'{field}' must be a number of US dollars or null", param=field) from None
    if not amount.is_finite() or amount < 0 or amount > MAX_CAP_USD:
        raise HTTPError(400, f"'{field}' must be between 0 and {MAX_CAP_USD}", param=field)
    return int((amount * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _windows(value: Any) -> dict[str, int]:
    if not isinstance(value, list) or len(value) > len(PERIODS):
        raise HTTPError(400, '\'limits\' must be a list of {"max_spend_usd", "period"} objects', param="limits")
    out: dict[str, int] = {}
    for item in value:
        if not isinstance(item, dict) or set(item) - {"max_spend_usd", "period"} or "max_spend_usd" not in item:
            raise HTTPError(400, 'each of \'limits\' is {"max_spend_usd": <USD>, "period": <period>}', param="limits")
        period = item.get("period", "total")
        if period not in PERIODS:
            raise HTTPError(400, f"a limit's 'period' must be one of {', '.join(PERIODS)}", param="limits")
        if period in out:
            raise HTTPError(400, f"'limits' names the period {period!r} twice", param="limits")
        micros = usd_to_micros(item["max_spend_usd"], "limits")
        if micros is None:
            raise HTTPError(400, "a limit's 'max_spend_usd' must be a number", param="limits")
        out[period] = micros
    return out


def _rates(value: Any, field: str) -> Optional[dict[str, int]]:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(RATE_RANGES):
        raise HTTPError(400, f"'{field}' must be an object with any of {', '.join(RATE_RANGES)}", param=field)
    out = {}
    for name, top in RATE_RANGES.items():
        v = value.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
            raise HTTPError(400, f"'{field}.{name}' must be an integer from 1 to {top} (or null)", param=field)
        out[name] = v
    return out or None


def _strings(value: Any, field: str, most: int, longest: int) -> list[str]:
    if not isinstance(value, list) or len(value) > most:
        raise HTTPError(400, f"'{field}' must be a list of at most {most} strings", param=field)
    for item in value:
        if not isinstance(item, str) or not item.strip() or len(item) > longest or "\x00" in item:
            raise HTTPError(
                400, f"each of '{field}' must be a non-empty string of at most {longest} characters", param=field
            )
    return list(dict.fromkeys(value))


def parse_policy(body: dict[str, Any], cap_given: bool) -> tuple[dict[str, Any], Optional[tuple[bool, Optional[int]]]]:
    """(ApiKey attributes to set, the total cap to set or None). ``cap_given``: the body
    has ``max_spend_usd`` (the route parses it; here it is only checked against ``limits``)."""
    values: dict[str, Any] = {}
    total: Optional[tuple[bool, Optional[int]]] = None
    if "budget_period" in body:
        period = body["budget_period"]
        if period not in PERIODS:
            raise HTTPError(400, f"'budget_period' must be one of {', '.join(PERIODS)}", param="budget_period")
        if not cap_given or "limits" in body:
            raise HTTPError(
                400, "'budget_period' goes with 'max_spend_usd' (and not with 'limits')", param="budget_period"
            )
        micros = usd_to_micros(body["max_spend_usd"])
        if period == "total":
            total = (True, micros)
        else:
            values["limits"] = {period: micros} if micros is not None else {}
            total = (True, None)
    if "limits" in body:
        windows = _windows(body["limits"]) if body["limits"] is not None else {}
        if "total" in windows:
            if cap_given:
                raise HTTPError(400, "give the total cap as 'max_spend_usd' or in 'limits', not both", param="limits")
            total = (True, windows.pop("total"))
        elif not cap_given:
            total = (True, None)  # the list is the whole set of limits
        values["limits"] = windows
    for field in ("rate_limits",):
        if field in body:
            values[field] = _rates(body[field], field)
    if "model_limits" in body:
        raw = body["model_limits"] if body["model_limits"] is not None else {}
        if not isinstance(raw, dict) or len(raw) > MAX_MODELS:
            raise HTTPError(
                400, f"'model_limits' must be an object of at most {MAX_MODELS} models", param="model_limits"
            )
        _strings(list(raw), "model_limits", MAX_MODELS, 200)
        parsed = {name: _rates(limits, "model_limits") for name, limits in raw.items()}
        values["model_limits"] = {name: v for name, v in parsed.items() if v}
    if "allowed_models" in body:
        raw = body["allowed_models"]
        values["allowed_models"] = None if raw is None else _strings(raw, "allowed_models", MAX_MODELS, 200)
    if "tags" in body:
        values["tags"] = [] if body["tags"] is None else _strings(body["tags"], "tags", MAX_TAGS, 64)
    if "expires_at" in body:
        raw = body["expires_at"]
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_EXPIRES_AT):
            raise HTTPError(400, "'expires_at' must be a Unix time in milliseconds (or null)", param="expires_at")
        values["expires_at"] = raw
    if "disabled" in body:
        if not isinstance(body["disabled"], bool):
            raise HTTPError(400, "'disabled' must be true or false", param="disabled")
        values["disabled"] = body["disabled"]
    return values, total
