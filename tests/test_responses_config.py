"""The ``responses`` option of providers and models, and the Responses adapter (no server)."""

from __future__ import annotations

import orjson
import pytest

from tollway._core import Ledger
from tollway.config import ConfigError, load_settings
from tollway.http.core import HTTPError
from tollway.policy.caps import decide_hold
from tollway.providers import ADAPTERS
from tollway.providers.openai_responses import ADAPTER, MIN_OUTPUT_TOKENS

PROVIDERS = """
[[providers]]
name = "real"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key = "sk-1"

[[providers]]
name = "compat"
kind = "openai"
base_url = "http://127.0.0.1:9001/v1"
api_key = "sk-2"

[[providers]]
name = "compat-responses"
kind = "openai"
base_url = "http://127.0.0.1:9002/v1"
api_key = "sk-3"
responses = true

[[models]]
name = "on-real"
provider = "real"
input_usd_per_mtok = 1
output_usd_per_mtok = 10

[[models]]
name = "on-compat"
provider = "compat"
input_usd_per_mtok = 1
output_usd_per_mtok = 10

[[models]]
name = "chat-only-on-real"
provider = "real"
responses = false
input_usd_per_mtok = 1
output_usd_per_mtok = 10

[[models]]
name = "on-compat-responses"
provider = "compat-responses"
input_usd_per_mtok = 1
output_usd_per_mtok = 10
"""


def settings_with(tmp_path, toml: str):
    path = tmp_path / "tollway.toml"
    path.write_text(toml)
    return load_settings({"TOLLWAY_CONFIG": str(path), "TOLLWAY_DATA_DIR": str(tmp_path)})


def test_defaults_and_overrides(tmp_path) -> None:
    s = settings_with(tmp_path, PROVIDERS)
    assert s.providers["openai"].responses is True  # the environment's OpenAI provider
    assert s.providers["anthropic"].responses is False
    assert s.providers["real"].responses is True and s.providers["compat"].responses is False
    assert s.models["on-real"].responses is True and s.models["on-compat"].responses is False
    assert s.models["chat-only-on-real"].responses is False
    assert s.models["on-compat-responses"].responses is True
    assert s.models["gpt-5-mini"].responses is True and s.models["claude-sonnet-4-5"].responses is False
    assert ADAPTER.endpoint(s.providers["compat-responses"]) == "http://127.0.0.1:9002/v1/responses"
    assert ADAPTERS["openai_responses"] is ADAPTER


@pytest.mark.parametrize(
    "toml, where",
    [
        ('[[providers]]\nname = "a"\nkind = "anthropic"\nbase_url = "http://x"\nresponses = true\n', "responses"),
        ('[[providers]]\nname = "o"\nkind = "openai"\nbase_url = "http://x/v1"\nresponses = "yes"\n', "responses"),
        ('[[models]]\nname = "m"\nprovider = "anthropic"\nresponses = true\n', "m.responses"),
    ],
)
def test_bad_values_are_config_errors(tmp_path, toml: str, where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        settings_with(tmp_path, toml)


def test_prepare_keeps_the_clients_bytes_unless_it_must_change_them() -> None:
    raw = b'{"model": "m",  "input": "hi", "max_output_tokens": 64}'
    payload = orjson.loads(raw)
    assert ADAPTER.prepare(dict(payload), raw, "m", None, True).body is raw
    renamed = orjson.loads(ADAPTER.prepare(dict(payload), raw, "upstream-m", None, False).body)
    assert renamed == {**payload, "model": "upstream-m"}
    clamped = ADAPTER.prepare(dict(payload), raw, "m", 20, True)
    assert orjson.loads(clamped.body)["max_output_tokens"] == 20 and clamped.strip_usage_chunk is False
    assert ADAPTER.requested_max_tokens(payload) == 64


def test_input_estimate_counts_images_once(tmp_path) -> None:
    image = "data:image/png;base64," + "A" * 100_000
    payload = {
        "model": "m",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is this"},
                    {"type": "input_image", "image_url": image},
                ],
            }
        ],
    }
    body_len = len(orjson.dumps(payload))
    estimate = ADAPTER.estimate_input_tokens(payload, body_len, 400_000)
    assert 1600 < estimate < 2000  # one image, not 100 KB of base64 at 3 bytes a token
    assert ADAPTER.estimate_input_tokens({"input": "x" * 300}, 312, None) == 104 + 8


@pytest.mark.parametrize(
    "stored", [{"previous_response_id": "resp_1"}, {"conversation": "conv_1"}, {"prompt": {"id": "pmpt_1"}}]
)
def test_stored_context_is_estimated_at_the_context_window(stored) -> None:
    payload = {"model": "m", "input": "and then?", **stored}
    assert ADAPTER.estimate_input_tokens(payload, 80, 400_000) == 400_000
    assert ADAPTER.estimate_input_tokens(payload, 80, None) < 100  # unknown window: the body only


def test_a_key_that_cannot_pay_the_minimum_output_gets_402(tmp_path) -> None:
    s = settings_with(tmp_path, PROVIDERS)
    route = s.models["on-real"]  # 10 micros per output token
    ledger = Ledger()
    ledger.load("k", 0, 1 + 10 * (MIN_OUTPUT_TOKENS - 1))  # the input estimate (1 token) and 15 output tokens
    with pytest.raises(HTTPError) as exc:
        decide_hold(ledger, "k", route, 1, None, ADAPTER.min_output_tokens)
    assert exc.value.status == 402 and exc.value.code == "spend_cap_reached"
    assert ledger.snapshot("k") == (0, 0, 151)  # nothing left held
    ledger.load("k2", 0, 1 + 10 * MIN_OUTPUT_TOKENS)
    decision = decide_hold(ledger, "k2", route, 1, None, ADAPTER.min_output_tokens)
    assert decision.clamp_to == MIN_OUTPUT_TOKENS
