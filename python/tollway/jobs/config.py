"""Job settings (README, "Jobs"): the ``[jobs]`` table of TOLLWAY_CONFIG, or the environment
(TOLLWAY_JOBS_WORKERS, TOLLWAY_JOBS_PER_KEY_CONCURRENCY, TOLLWAY_JOBS_EXPIRES_AFTER,
TOLLWAY_JOBS_RETENTION, TOLLWAY_JOBS_LEASE, TOLLWAY_JOBS_POLL_INTERVAL,
TOLLWAY_JOBS_WEBHOOK_BACKOFF); the environment wins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class JobSettings:
    workers: int = 4  # jobs run at once by this gateway (0: none run; submissions still queue)
    per_key_concurrency: int = 2  # jobs of one key run at once
    expires_after: float = DAY  # seconds from submission after which a job not yet run is expired
    retention: float = 7 * DAY  # seconds a finished job (and its result) is kept
    lease: float = 30.0  # seconds a claim lasts without a heartbeat (renewed every third of it)
    poll_interval: float = 1.0  # seconds an idle worker waits (unless a job is submitted) before looking again
    webhook_backoff: float = 10.0  # seconds from a job's first webhook attempt to its second (x6 each next)


_FIELDS = {
    # name: (env, low, high, integer)
    "workers": ("TOLLWAY_JOBS_WORKERS", 0, 256, True),
    "per_key_concurrency": ("TOLLWAY_JOBS_PER_KEY_CONCURRENCY", 1, 10_000, True),
    "expires_after": ("TOLLWAY_JOBS_EXPIRES_AFTER", 1, 30 * DAY, False),
    "retention": ("TOLLWAY_JOBS_RETENTION", 1, 365 * DAY, False),
    "lease": ("TOLLWAY_JOBS_LEASE", 0.5, 3600, False),
    "poll_interval": ("TOLLWAY_JOBS_POLL_INTERVAL", 0.01, 60, False),
    "webhook_backoff": ("TOLLWAY_JOBS_WEBHOOK_BACKOFF", 0.01, 3600, False),
}


def jobs_settings(table: Any, env: Mapping[str, str]) -> JobSettings:
    from tollway.config.settings import ConfigError  # (settings imports this module)

    table = {} if table is None else table
    if not isinstance(table, dict):
        raise ConfigError("[jobs] must be a table")
    unknown = set(table) - set(_FIELDS)
    if unknown:
        raise ConfigError(f"[jobs]: unknown setting(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, (var, low, high, integer) in _FIELDS.items():
        raw = env.get(var)
        raw = table.get(name) if raw in (None, "") else raw
        if raw is None:
            continue
        where = f"jobs.{name} / {var}"
        try:
            number = float(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not low <= number <= high or (integer and number != int(number)):
            kind = "an integer" if integer else "seconds"
            raise ConfigError(f"{where}: expected {kind} from {low} to {high}, got {raw!r}")
        values[name] = int(number) if integer else number
    return JobSettings(**values)
