"""Providers and the models routed to them, with their prices."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Optional

from tollway._core import Pricing

ProviderKind = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class KindDefaults:
    """What the configuration knows of a provider kind (data; the format itself is in providers/)."""

    base_url: str  # of the provider configured from the environment (<KIND>_BASE_URL overrides it)
    env_prefix: str  # <prefix>_API_KEY, <prefix>_BASE_URL
    org_and_project: bool  # takes organization / project (env OPENAI_ORG_ID / OPENAI_PROJECT_ID)
    responses_hosts: tuple[str, ...]  # base URLs known to serve the OpenAI Responses API


KINDS: dict[str, KindDefaults] = {
    "openai": KindDefaults("https://api.openai.com/v1", "OPENAI", True, ("https://api.openai.com/",)),
    "anthropic": KindDefaults("https://api.anthropic.com", "ANTHROPIC", False, ()),
}
PROVIDER_KINDS: tuple[str, ...] = tuple(KINDS)
RESPONSES_WIRE = "openai_responses"  # the wire format of the OpenAI Responses API (providers.openai_responses)
# What a model is called for: "chat" (the model-call routes, threads) or "embedding"
# (POST /v1/embeddings only).
MODEL_MODES: tuple[str, ...] = ("chat", "embedding")

# USD per million tokens -> atto-dollars (1e-18 USD) per token.
_ATTO_PER_USD_PER_MTOK = Decimal(10) ** 12


def usd_per_mtok_to_atto(value: Decimal) -> int:
    atto = value * _ATTO_PER_USD_PER_MTOK
    if atto != atto.to_integral_value():
        raise ValueError(f"price {value} USD/Mtok has more than 12 decimal places")
    return int(atto)


def percent_to_ppm(value: Decimal) -> int:
    ppm = value * 10_000
    if ppm != ppm.to_integral_value():
        raise ValueError(f"markup_percent {value} has more than 4 decimal places")
    return int(ppm)


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    kind: ProviderKind
    base_url: str  # OpenAI: includes /v1; Anthropic: without /v1 (each SDK's convention)
    api_key: Optional[str]
    # OpenAI: the organization and project the provider's key bills (sent as
    # OpenAI-Organization / OpenAI-Project); a client's own are never forwarded.
    organization: Optional[str] = None
    project: Optional[str] = None
    # OpenAI: the provider also serves the Responses API ({base_url}/responses), so
    # POST /v1/responses is passed through to it natively. Default: true for the
    # OpenAI provider of the environment and for base URLs on api.openai.com.
    responses: bool = False


@dataclass(frozen=True, slots=True)
class ModelPrice:
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    cache_read_usd_per_mtok: Decimal
    cache_write_usd_per_mtok: Decimal

    def pricing(self, markup_percent: Decimal) -> Pricing:
        return Pricing(
            usd_per_mtok_to_atto(self.input_usd_per_mtok),
            usd_per_mtok_to_atto(self.output_usd_per_mtok),
            usd_per_mtok_to_atto(self.cache_read_usd_per_mtok),
            usd_per_mtok_to_atto(self.cache_write_usd_per_mtok),
            percent_to_ppm(markup_percent),
        )


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A model name clients may use, where it goes and what it costs."""

    name: str
    provider: Provider
    upstream_model: str
    price: Optional[ModelPrice]  # None: routable but unpriced (requests get 400)
    pricing: Optional[Pricing]  # price with the markup, in exact integer units
    max_output_tokens: int
    context_window: Optional[int]
    mode: str = "chat"  # one of MODEL_MODES

    @property
    def embedding(self) -> bool:
        return self.mode == "embedding"

    responses: bool = False  # called natively in the Responses format (the provider's, unless the model overrides)
    # The wire format the provider is called in for this model: its kind's, or (for a
    # model that exists only on the Responses API, ``responses_only``) the Responses API's,
    # whichever route the client used.
    wire: str = ""

    def __post_init__(self) -> None:
        if not self.wire:
            object.__setattr__(self, "wire", self.provider.kind)
