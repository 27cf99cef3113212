"""Batch settings (README, "Batches"): the ``[batches]`` table of TOLLWAY_CONFIG, or the
environment (TOLLWAY_BATCHES_MAX_FILE_MB, TOLLWAY_BATCHES_MAX_REQUESTS); the environment wins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class BatchSettings:
    max_file_bytes: int = 20 * 1024 * 1024  # an uploaded file's size cap (also under TOLLWAY_MAX_BODY_MB)
    max_requests: int = 10_000  # lines (requests) of one batch


def batches_settings(table: Any, env: Mapping[str, str]) -> BatchSettings:
    from tollway.config.settings import ConfigError  # (settings imports this module)

    table = {} if table is None else table
    if not isinstance(table, dict):
        raise ConfigError("[batches] must be a table")
    unknown = set(table) - {"max_file_mb", "max_requests"}
    if unknown:
        raise ConfigError(f"[batches]: unknown setting(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, var, low, high in (
        ("max_file_mb", "TOLLWAY_BATCHES_MAX_FILE_MB", 0.001, 1024),
        ("max_requests", "TOLLWAY_BATCHES_MAX_REQUESTS", 1, 1_000_000),
    ):
        raw = env.get(var)
        raw = table.get(name) if raw in (None, "") else raw
        if raw is None:
            continue
        try:
            number = float(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            number = None
        integer = name == "max_requests"
        if number is None or not low <= number <= high or (integer and number != int(number)):
            raise ConfigError(f"batches.{name} / {var}: expected a number from {low} to {high}, got {raw!r}")
        if integer:
            values["max_requests"] = int(number)
        else:
            values["max_file_bytes"] = int(number * 1024 * 1024)
    return BatchSettings(**values)
