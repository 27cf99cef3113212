"""Wallet and Stripe settings (README, "Billing"): the ``[wallet]`` and ``[stripe]`` tables of
TOLLWAY_CONFIG, or the environment (TOLLWAY_WALLET, TOLLWAY_STRIPE_*)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional


@dataclass(frozen=True, slots=True)
class WalletSettings:
    enabled: bool = False
    stripe_secret_key: Optional[str] = None
    stripe_webhook_secret: Optional[str] = None
    stripe_api_base: Optional[str] = None  # another Stripe API address (a test double)
    currency: str = "usd"
    meter_event_name: str = "tollway_usage"  # the Stripe meter's event_name; value = cost in micro-USD
    meter_export_interval: float = 0.0  # seconds between continuous meter-event exports (0: on demand only)


def _flag(value: Any, where: str) -> bool:
    from tollway.config.settings import ConfigError  # (settings imports this module)

    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("on", "1", "true", "off", "0", "false", ""):
        return value.lower() in ("on", "1", "true")
    raise ConfigError(f"{where}: expected true or false (on / off), got {value!r}")


def _text(value: Any, where: str) -> Optional[str]:
    from tollway.config.settings import ConfigError

    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 1000 or "\x00" in value:
        raise ConfigError(f"{where}: expected a string")
    return value


def wallet_settings(wallet: Any, stripe: Any, env: Mapping[str, str]) -> WalletSettings:
    from tollway.config.settings import ConfigError

    wallet = {} if wallet is None else wallet
    stripe = {} if stripe is None else stripe
    if not isinstance(wallet, dict) or not isinstance(stripe, dict):
        raise ConfigError("[wallet] and [stripe] must be tables")
    for table, known, name in (
        (wallet, {"enabled"}, "wallet"),
        (
            stripe,
            {"secret_key", "webhook_secret", "api_base", "currency", "meter_event_name", "meter_export_interval"},
            "stripe",
        ),
    ):
        unknown = set(table) - known
        if unknown:
            raise ConfigError(f"[{name}]: unknown setting(s) {', '.join(sorted(unknown))}")
    enabled = _flag(env.get("TOLLWAY_WALLET", wallet.get("enabled", False)), "wallet.enabled / TOLLWAY_WALLET")
    currency = (_text(stripe.get("currency"), "stripe.currency") or "usd").lower()
    if currency != "usd":
        raise ConfigError("stripe.currency: balances are kept in US dollars; only 'usd' is supported")
    return WalletSettings(
        enabled=enabled,
        stripe_secret_key=_text(env.get("TOLLWAY_STRIPE_SECRET_KEY") or stripe.get("secret_key"), "stripe.secret_key"),
        stripe_webhook_secret=_text(
            env.get("TOLLWAY_STRIPE_WEBHOOK_SECRET") or stripe.get("webhook_secret"), "stripe.webhook_secret"
        ),
        stripe_api_base=_text(env.get("TOLLWAY_STRIPE_API_BASE") or stripe.get("api_base"), "stripe.api_base"),
        currency=currency,
        meter_event_name=_text(
            env.get("TOLLWAY_STRIPE_METER_EVENT") or stripe.get("meter_event_name"), "stripe.meter_event_name"
        )
        or "tollway_usage",
        meter_export_interval=_seconds(
            env.get("TOLLWAY_STRIPE_METER_EXPORT_INTERVAL", stripe.get("meter_export_interval", 0)),
            "stripe.meter_export_interval",
        ),
    )


def _seconds(value: Any, where: str) -> float:
    from tollway.config.settings import ConfigError

    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not (seconds == 0 or 1 <= seconds <= 86_400):
        raise ConfigError(f"{where}: expected 0 (off) or seconds from 1 to 86400, got {value!r}")
    return seconds
