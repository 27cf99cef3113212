"""Load the gateway's settings from the environment, TOLLWAY_CONFIG and the price catalog."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional

from tollway.batches.config import BatchSettings, batches_settings
from tollway.config.routes import (
    KINDS,
    MODEL_MODES,
    PROVIDER_KINDS,
    RESPONSES_WIRE,
    ModelPrice,
    ModelRoute,
    Provider,
)
from tollway.events.config import EventsSettings, events_settings
from tollway.jobs.config import JobSettings, jobs_settings
from tollway.outbound import OutboundSettings, outbound_settings
from tollway.search.config import SearchSettings, search_settings
from tollway.wallet.config import WalletSettings, wallet_settings

# The base URL of each kind's provider configured from the environment.
DEFAULT_BASE_URLS = {kind: defaults.base_url for kind, defaults in KINDS.items()}
DEFAULT_MAX_OUTPUT_TOKENS = 4096
_PRICE_FIELDS = (
    "input_usd_per_mtok",
    "output_usd_per_mtok",
    "cache_read_usd_per_mtok",
    "cache_write_usd_per_mtok",
)


class ConfigError(ValueError):
    """The configuration is invalid; the message says where."""


@dataclass(slots=True)
class Settings:
    data_dir: Path
    database_url: str
    max_body_bytes: int
    markup_percent: Decimal
    providers: dict[str, Provider]
    models: dict[str, ModelRoute]  # by client-facing name and alias
    model_names: list[str]  # canonical names, in listing order
    admin_key: Optional[str] = None
    connect_timeout: float = 10.0
    first_byte_timeout: float = 600.0
    read_timeout: float = 300.0
    max_retries: int = 2
    max_retry_wait: float = 20.0
    drain_timeout: float = 30.0
    thread_busy_wait: float = 10.0
    spin_wait_us: int = 2000
    # Slow and silent clients (README, "Limits and timeouts")
    stream_window_bytes: int = 256 * 1024
    client_stall_timeout: float = 60.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 0  # 0: derived from the fd limit (see max_connections_for)
    search: SearchSettings = field(default_factory=SearchSettings)
    wallet: WalletSettings = field(default_factory=WalletSettings)
    events: EventsSettings = field(default_factory=EventsSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    batches: BatchSettings = field(default_factory=BatchSettings)
    extra: dict[str, Any] = field(default_factory=dict)


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise ConfigError(f"{where}: not a number: {value!r}") from exc
    if not result.is_finite() or result < 0:
        raise ConfigError(f"{where}: must be a finite number >= 0, got {value!r}")
    return result


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _load_catalog() -> list[dict[str, Any]]:
    text = resources.files("tollway").joinpath("data/catalog.toml").read_text("utf-8")
    return tomllib.loads(text)["models"]


def _env_providers(env: Mapping[str, str]) -> dict[str, Provider]:
    """The default provider of each kind, from OPENAI_* / ANTHROPIC_* variables."""
    providers = {}
    for kind, defaults in KINDS.items():
        prefix = defaults.env_prefix
        providers[kind] = Provider(
            name=kind,
            kind=kind,  # type: ignore[arg-type]
            base_url=env.get(f"{prefix}_BASE_URL") or DEFAULT_BASE_URLS[kind],
            api_key=env.get(f"{prefix}_API_KEY") or None,
            organization=(env.get(f"{prefix}_ORG_ID") or None) if defaults.org_and_project else None,
            project=(env.get(f"{prefix}_PROJECT_ID") or None) if defaults.org_and_project else None,
            responses=bool(defaults.responses_hosts),
        )
    return providers


def _file_providers(entries: list[Any], env: Mapping[str, str]) -> dict[str, Provider]:
    providers = {}
    for i, entry in enumerate(entries):
        where = f"providers[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table")
        name, kind, base_url = entry.get("name"), entry.get("kind"), entry.get("base_url")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: 'name' is required")
        if kind not in PROVIDER_KINDS:
            raise ConfigError(f"{where} ({name}): 'kind' must be one of {', '.join(PROVIDER_KINDS)}")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where} ({name}): 'base_url' must be an http(s) URL")
        api_key = entry.get("api_key")
        if "api_key_env" in entry:
            api_key = env.get(str(entry["api_key_env"])) or None
        extras = {}
        for option in ("organization", "project"):
            value = entry.get(option)
            if value is not None and (not isinstance(value, str) or not value or not KINDS[kind].org_and_project):
                raise ConfigError(f"{where} ({name}): '{option}' must be a non-empty string, on an openai provider")
            extras[option] = value
        extras["responses"] = _responses_option(entry, kind, base_url, where, name)
        providers[name] = Provider(name=name, kind=kind, base_url=base_url, api_key=api_key, **extras)
    return providers


def _responses_option(entry: Mapping[str, Any], kind: str, base_url: str, where: str, name: str) -> bool:
    """A provider's ``responses``: whether it serves the OpenAI Responses API."""
    value = entry.get("responses")
    if value is None:
        return base_url.startswith(KINDS[kind].responses_hosts) if KINDS[kind].responses_hosts else False
    if not isinstance(value, bool) or (value and not KINDS[kind].responses_hosts):
        raise ConfigError(f"{where} ({name}): 'responses' must be true or false, and true only on an openai provider")
    return value


def _route(
    entry: Mapping[str, Any],
    provider: Provider,
    markup: Decimal,
    where: str,
) -> ModelRoute:
    mode = entry.get("mode", "chat")
    if mode not in MODEL_MODES:
        raise ConfigError(f"{where}.mode: must be one of {', '.join(MODEL_MODES)}, got {mode!r}")
    prices = {f: entry.get(f) for f in _PRICE_FIELDS}
    if mode == "embedding" and prices["output_usd_per_mtok"] is None:
        prices["output_usd_per_mtok"] = 0  # an embedding has no output tokens
    price: Optional[ModelPrice] = None
    if prices["input_usd_per_mtok"] is not None and prices["output_usd_per_mtok"] is not None:
        price = ModelPrice(
            *(_decimal(prices[f] if prices[f] is not None else 0, f"{where}.{f}") for f in _PRICE_FIELDS)
        )
    try:
        pricing = price.pricing(markup) if price else None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    upstream_model = entry.get("upstream_model") or entry["name"]
    responses = entry.get("responses", provider.responses)
    if not isinstance(responses, bool) or (responses and not provider.responses):
        raise ConfigError(
            f"{where}.responses: must be true or false, and true only when its provider has responses = true"
        )
    responses_only = entry.get("responses_only", False)
    if (
        not isinstance(responses_only, bool)
        or (responses_only and not responses)
        or (responses_only and mode != "chat")
    ):
        raise ConfigError(
            f"{where}.responses_only: must be true or false, and true only on a chat model served with responses = true"
        )
    return ModelRoute(
        name=entry["name"],
        provider=provider,
        upstream_model=str(upstream_model),
        price=price,
        pricing=pricing,
        max_output_tokens=_positive_int(
            entry.get("max_output_tokens", DEFAULT_MAX_OUTPUT_TOKENS), f"{where}.max_output_tokens"
        ),
        context_window=(
            _positive_int(entry["context_window"], f"{where}.context_window")
            if entry.get("context_window") is not None
            else None
        ),
        mode=mode,
        responses=responses,
        wire=RESPONSES_WIRE if responses_only else provider.kind,
    )


def load_settings(env: Optional[Mapping[str, str]] = None) -> Settings:
    """Build the settings from ``env`` (default: os.environ)."""
    env = os.environ if env is None else env
    file_conf: dict[str, Any] = {}
    if env.get("TOLLWAY_CONFIG"):
        path = Path(env["TOLLWAY_CONFIG"])
        try:
            file_conf = tomllib.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(f"TOLLWAY_CONFIG: cannot read {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"TOLLWAY_CONFIG: {path} is not valid TOML: {exc}") from exc

    markup = _decimal(file_conf.get("markup_percent", env.get("TOLLWAY_MARKUP_PERCENT", 0)), "markup_percent")
    providers = _env_providers(env)
    providers.update(_file_providers(file_conf.get("providers", []), env))

    # Catalog entries first; config entries override fields of a same-named entry or add models.
    entries: dict[str, dict[str, Any]] = {}
    for item in _load_catalog():
        entries[item["name"]] = {**item, "provider": item["kind"]}
    for i, item in enumerate(file_conf.get("models", [])):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"models[{i}]: expected a table with a 'name'")
        merged = {**entries.get(item["name"], {}), **item}
        if "provider" not in merged:
            raise ConfigError(f"models[{i}] ({item['name']}): 'provider' is required")
        entries[item["name"]] = merged

    models: dict[str, ModelRoute] = {}
    names: list[str] = []
    for name, entry in entries.items():
        provider = providers.get(entry["provider"])
        if provider is None:
            raise ConfigError(f"model {name}: unknown provider {entry['provider']!r}")
        route = _route(entry, provider, markup, f"model {name}")
        names.append(name)
        models[name] = route
        for alias in entry.get("aliases", []):
            models.setdefault(alias, route)

    data_dir = Path(env.get("TOLLWAY_DATA_DIR") or ".tollway")
    database_url = env.get("TOLLWAY_DATABASE_URL") or f"sqlite:///{(data_dir / 'tollway.db').resolve()}"
    max_body_mb = _decimal(env.get("TOLLWAY_MAX_BODY_MB", 20), "TOLLWAY_MAX_BODY_MB")
    return Settings(
        data_dir=data_dir,
        database_url=normalize_database_url(database_url),
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        markup_percent=markup,
        providers=providers,
        models=models,
        model_names=names,
        admin_key=env.get("TOLLWAY_ADMIN_KEY") or None,
        connect_timeout=float(env.get("TOLLWAY_CONNECT_TIMEOUT", 10)),
        first_byte_timeout=float(env.get("TOLLWAY_FIRST_BYTE_TIMEOUT", 600)),
        read_timeout=float(env.get("TOLLWAY_READ_TIMEOUT", 300)),
        drain_timeout=float(env.get("TOLLWAY_DRAIN_TIMEOUT", 30)),
        thread_busy_wait=float(env.get("TOLLWAY_THREAD_BUSY_WAIT", 10)),
        spin_wait_us=_spin_wait_us(env.get("TOLLWAY_SPIN_WAIT_US", "2000")),
        stream_window_bytes=int(_bounded(env, "TOLLWAY_STREAM_WINDOW_KB", 256, 4, 65536) * 1024),
        client_stall_timeout=_bounded(env, "TOLLWAY_CLIENT_STALL_TIMEOUT", 60, 0.1, 86400),
        header_timeout=_bounded(env, "TOLLWAY_HEADER_TIMEOUT", 10, 0.1, 3600),
        body_timeout=_bounded(env, "TOLLWAY_BODY_TIMEOUT", 30, 0.1, 3600),
        max_connections=int(_bounded(env, "TOLLWAY_MAX_CONNECTIONS", 0, 0, 1_000_000)),
        search=search_settings(env),
        wallet=wallet_settings(file_conf.get("wallet"), file_conf.get("stripe"), env),
        events=events_settings(file_conf.get("events"), env),
        outbound=outbound_settings(file_conf.get("outbound"), env),
        jobs=jobs_settings(file_conf.get("jobs"), env),
        batches=batches_settings(file_conf.get("batches"), env),
    )


def _bounded(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """A number from ``env`` within [low, high] (0 also allowed when it is the default)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (low <= value <= high or (value == 0 and default == 0)):
        raise ConfigError(f"{name}: expected a number from {low:g} to {high:g}, got {raw!r}")
    return value


def max_connections_for(settings: Settings, fd_limit: int) -> int:
    """Connections one worker holds at most: the setting, else half of what the fd limit
    leaves after a reserve for the database and files (a proxied stream holds two fds,
    its client's and its upstream's), at most 16,384. Past the fd limit granian's accept
    loop would spin on EMFILE; at this limit it waits."""
    usable = fd_limit - max(256, fd_limit // 8)
    if settings.max_connections:
        return max(8, min(settings.max_connections, usable))  # never past the fd limit
    return max(64, min(16384, usable // 2))


def _spin_wait_us(value: str) -> int:
    try:
        us = int(value)
    except ValueError:
        us = -1
    if not 0 <= us <= 100_000:
        raise ConfigError(f"TOLLWAY_SPIN_WAIT_US: expected microseconds from 0 to 100000, got {value!r}")
    return us


def normalize_database_url(url: str) -> str:
    """Use the psycopg (v3) driver for plain postgresql:// URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
