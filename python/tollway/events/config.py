"""Event settings (README, "Events (webhooks)"): the ``[events]`` table of TOLLWAY_CONFIG,
or the environment (TOLLWAY_EVENTS_*).

- ``retry_scale`` (TOLLWAY_EVENTS_RETRY_SCALE, default 1): multiplies the retry schedule
  and the auto-disable period (tests run days of retries in seconds).
- ``poll_interval`` (TOLLWAY_EVENTS_POLL_INTERVAL, seconds, default 1): how often the
  sender looks for due deliveries.
- ``disable_after_days`` (TOLLWAY_EVENTS_DISABLE_AFTER_DAYS, default 5): an endpoint whose
  every attempt failed for this long is disabled.
- ``cap_warning_percent`` (TOLLWAY_EVENTS_CAP_WARNING_PERCENT, default [80]): the
  thresholds of ``key.cap_warning``, percent of a cap or window limit.
- ``key_expiring_hours`` (TOLLWAY_EVENTS_KEY_EXPIRING_HOURS, default 72): how long before
  ``expires_at`` ``key.expiring`` is sent; ``check_interval`` (TOLLWAY_EVENTS_CHECK_INTERVAL,
  seconds, default 60) how often keys are looked at for it.
- ``low_balance_usd`` (TOLLWAY_EVENTS_LOW_BALANCE_USD): the balance under which
  ``wallet.low_balance`` is sent (default: the auto-recharge threshold, when set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from tollway.outbound import bounded_number

_KNOWN = {
    "retry_scale",
    "poll_interval",
    "disable_after_days",
    "cap_warning_percent",
    "key_expiring_hours",
    "check_interval",
    "low_balance_usd",
}


@dataclass(frozen=True, slots=True)
class EventsSettings:
    retry_scale: float = 1.0
    poll_interval: float = 1.0
    disable_after_days: float = 5.0
    cap_warning_percent: tuple[int, ...] = (80,)
    key_expiring_hours: float = 72.0
    check_interval: float = 60.0
    low_balance_micros: Optional[int] = None


def events_settings(table: Any, env: Mapping[str, str]) -> EventsSettings:
    from tollway.config.settings import ConfigError

    table = {} if table is None else table
    if not isinstance(table, dict):
        raise ConfigError("[events] must be a table")
    unknown = set(table) - _KNOWN
    if unknown:
        raise ConfigError(f"[events]: unknown setting(s) {', '.join(sorted(unknown))}")

    def get(name: str, default: Any) -> Any:
        return env.get(f"TOLLWAY_EVENTS_{name.upper()}", table.get(name, default))

    raw = get("cap_warning_percent", [80])
    if isinstance(raw, str):
        raw = [part for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list):
        raise ConfigError("events.cap_warning_percent: expected a list of percentages")
    percents = tuple(sorted({int(bounded_number(p, "events.cap_warning_percent", 1, 99)) for p in raw}))
    low = get("low_balance_usd", None)
    return EventsSettings(
        retry_scale=bounded_number(get("retry_scale", 1), "events.retry_scale", 0.0001, 100),
        poll_interval=bounded_number(get("poll_interval", 1), "events.poll_interval", 0.01, 60),
        disable_after_days=bounded_number(get("disable_after_days", 5), "events.disable_after_days", 0.0001, 365),
        cap_warning_percent=percents,
        key_expiring_hours=bounded_number(get("key_expiring_hours", 72), "events.key_expiring_hours", 0, 24 * 365),
        check_interval=bounded_number(get("check_interval", 60), "events.check_interval", 0.05, 86_400),
        low_balance_micros=(
            None if low in (None, "") else int(bounded_number(low, "events.low_balance_usd", 0, 1e9) * 1_000_000)
        ),
    )
