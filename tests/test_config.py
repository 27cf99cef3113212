"""Settings, the price catalog, the input estimate and the cap decision (no server)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tollway._core import Ledger
from tollway.config import ConfigError, load_settings
from tollway.http.core import HTTPError
from tollway.policy.caps import decide_hold
from tollway.providers import ADAPTERS
from tollway.providers.base import estimate_input_tokens


def settings_with(tmp_path, toml: str, **env):
    path = tmp_path / "tollway.toml"
    path.write_text(toml)
    return load_settings({"TOLLWAY_CONFIG": str(path), "TOLLWAY_DATA_DIR": str(tmp_path), **env})


def test_catalog_routes_to_env_providers() -> None:
    s = load_settings({"OPENAI_API_KEY": "sk-1", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "ANTHROPIC_API_KEY": "a"})
    gpt = s.models["gpt-4o-mini"]
    assert (
        gpt.provider.kind == "openai"
        and ADAPTERS[gpt.provider.kind].endpoint(gpt.provider) == "http://127.0.0.1:9/v1/chat/completions"
    )
    assert gpt.price.input_usd_per_mtok == Decimal("0.15")
    assert s.models["gpt-4o-mini-2024-07-18"] is gpt  # aliases
    sonnet = s.models["claude-sonnet-4-5"]
    assert ADAPTERS[sonnet.provider.kind].endpoint(sonnet.provider) == "https://api.anthropic.com/v1/messages"
    assert sonnet.pricing.cost_micros(1_000_000, 0) == 3_000_000
    assert s.max_body_bytes == 20 * 1024 * 1024


def test_config_file_adds_and_overrides(tmp_path) -> None:
    s = settings_with(
        tmp_path,
        """
markup_percent = 10
[[providers]]
name = "local-openai"
kind = "openai"
base_url = "http://127.0.0.1:9001/v1"
api_key_env = "X_KEY"
[[models]]
name = "my-model"
provider = "local-openai"
upstream_model = "gpt-5.4"
input_usd_per_mtok = 3.0
output_usd_per_mtok = 15.0
cache_read_usd_per_mtok = 0.3
cache_write_usd_per_mtok = 3.75
max_output_tokens = 64000
context_window = 200000
[[models]]
name = "gpt-4o"
output_usd_per_mtok = 11
""",
        X_KEY="secret-x",
    )
    m = s.models["my-model"]
    assert m.provider.api_key == "secret-x" and m.upstream_model == "gpt-5.4" and m.max_output_tokens == 64000
    assert m.pricing.cost_micros(1_000_000, 0) == 3_300_000  # 3 USD + 10 %
    assert s.models["gpt-4o"].price.output_usd_per_mtok == Decimal(11)
    assert s.models["gpt-4o"].price.input_usd_per_mtok == Decimal("2.5")


@pytest.mark.parametrize(
    "toml, message",
    [
        ('[[providers]]\nname="p"\nkind="gemini"\nbase_url="http://x"', "kind"),
        ('[[providers]]\nname="p"\nkind="openai"\nbase_url="ftp://x"', "base_url"),
        ('[[models]]\nname="m"\nprovider="nope"', "unknown provider"),
        ('[[models]]\nname="m"', "provider"),
        ('[[models]]\nname="gpt-4o"\ninput_usd_per_mtok=-1', "input_usd_per_mtok"),
        ('[[models]]\nname="gpt-4o"\nmax_output_tokens=0', "max_output_tokens"),
        ("markup_percent = 'x'", "markup_percent"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_config_errors_say_where(tmp_path, toml, message) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_with(tmp_path, toml)


def fake_tokens(text: str) -> int:
    return -(-len(text.encode()) // 4) + 3


@pytest.mark.parametrize("text", ["hi", "a b c d e f g", "héllo wörld 世界 🙂" * 50, "x" * 10_000])
def test_input_estimate_is_conservative(text) -> None:
    import orjson

    payload = {"model": "m", "messages": [{"role": "user", "content": text}]}
    estimate = estimate_input_tokens(payload, len(orjson.dumps(payload)))
    assert estimate >= fake_tokens(text)
    assert estimate <= 3 * fake_tokens(text) + 40  # but not absurdly so


def test_input_estimate_counts_images_not_their_base64() -> None:
    import orjson

    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 1_000_000}}
    payload = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "what"}, image]}]}
    estimate = estimate_input_tokens(payload, len(orjson.dumps(payload)))
    assert 1600 <= estimate < 1700


def test_decide_hold_clamps_then_refuses(tmp_path) -> None:
    s = settings_with(
        tmp_path,
        """
[[models]]
name = "m"
provider = "openai"
input_usd_per_mtok = 1
output_usd_per_mtok = 10
max_output_tokens = 100
""",
    )
    route = s.models["m"]
    ledger = Ledger()
    ledger.load("k", 0, 1_000)  # 1,000 micros
    first = decide_hold(ledger, "k", route, 50, None)  # 50 + 100 x 10 = 1,050 wanted
    assert first.clamp_to == 95 and first.hold.micros == 1_000
    first.hold.settle(50 + 95 * 10)
    assert ledger.snapshot("k") == (1_000, 0, 1_000)
    with pytest.raises(HTTPError) as exc:
        decide_hold(ledger, "k", route, 1, 5)
    assert exc.value.status == 402 and exc.value.message.startswith("this API key has reached its spending cap")


def test_decide_hold_without_clamp_keeps_client_max_tokens(tmp_path) -> None:
    s = settings_with(tmp_path, '[[models]]\nname="m"\nprovider="openai"\ninput_usd_per_mtok=1\noutput_usd_per_mtok=10')
    ledger = Ledger()
    ledger.load("k", 0, None)
    decision = decide_hold(ledger, "k", s.models["m"], 10, 20)
    assert decision.clamp_to is None and decision.hold.micros == 10 + 200
    decision.hold.release()
    assert ledger.snapshot("k") == (0, 0, None)
