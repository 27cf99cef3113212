"""Search settings (README, "Search"): which embedder, which vector index, how indexing runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

BACKENDS = ("sqlite-vec", "qdrant")


@dataclass(frozen=True, slots=True)
class SearchSettings:
    enabled: bool = True
    # "local" (all-MiniLM-L6-v2 in this process) or the name of an embedding model in the
    # catalog / config, called through the gateway's own /v1/embeddings path.
    embedder: str = "local"
    dim: Optional[int] = None  # a provider model's dimension (learned from its first answer when not given)
    backend: str = "sqlite-vec"
    qdrant_url: Optional[str] = None  # http(s)://host:6333, or a directory for qdrant-client's local mode
    batch: int = 32
    threads: int = 1  # the local embedder's inference threads


def search_settings(env: Mapping[str, str]) -> SearchSettings:
    from tollway.config.settings import ConfigError  # (settings imports this module)

    enabled = (env.get("TOLLWAY_SEARCH") or "on").lower()
    if enabled not in ("on", "off", "1", "0", "true", "false"):
        raise ConfigError(f"TOLLWAY_SEARCH: expected on or off, got {env.get('TOLLWAY_SEARCH')!r}")
    qdrant_url = env.get("TOLLWAY_QDRANT_URL") or None
    backend = env.get("TOLLWAY_SEARCH_INDEX") or ("qdrant" if qdrant_url else "sqlite-vec")
    if backend not in BACKENDS:
        raise ConfigError(f"TOLLWAY_SEARCH_INDEX: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "qdrant" and not qdrant_url:
        raise ConfigError("TOLLWAY_SEARCH_INDEX=qdrant needs TOLLWAY_QDRANT_URL (a URL, or a directory for local mode)")
    return SearchSettings(
        enabled=enabled in ("on", "1", "true"),
        embedder=env.get("TOLLWAY_SEARCH_EMBEDDER") or "local",
        dim=_int(env, "TOLLWAY_SEARCH_EMBEDDING_DIM", None, 1, 16384),
        backend=backend,
        qdrant_url=qdrant_url,
        batch=_int(env, "TOLLWAY_SEARCH_BATCH", 32, 1, 1024) or 32,
        threads=_int(env, "TOLLWAY_SEARCH_THREADS", 1, 1, 64) or 1,
    )


def _int(env: Mapping[str, str], name: str, default: Optional[int], low: int, high: int) -> Optional[int]:
    from tollway.config.settings import ConfigError

    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name}: expected an integer from {low} to {high}, got {raw!r}")
    return value
