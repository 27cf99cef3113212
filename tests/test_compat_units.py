"""Embedding models in the catalog and config, {name:path} routes, the counting estimates (no server)."""

from __future__ import annotations

import pytest

from tollway.config import ConfigError, load_settings
from tollway.http.core import App, HTTPError
from tollway.http.robyn import _robyn_path
from tollway.providers import ADAPTERS
from tollway.providers.base import count_message_tokens, estimate_embedding_tokens


def settings_with(tmp_path, toml: str):
    path = tmp_path / "tollway.toml"
    path.write_text(toml)
    return load_settings({"TOLLWAY_CONFIG": str(path), "TOLLWAY_DATA_DIR": str(tmp_path)})


def test_catalog_embedding_models_at_list_prices() -> None:
    s = load_settings({"OPENAI_API_KEY": "sk-1"})
    for name, micros_per_mtok in [("text-embedding-3-small", 20_000), ("text-embedding-3-large", 130_000),
                                  ("text-embedding-ada-002", 100_000)]:  # fmt: skip
        route = s.models[name]
        assert route.embedding and route.provider.kind == "openai"
        assert route.pricing.cost_micros(1_000_000, 0) == micros_per_mtok
        assert route.pricing.cost_micros(0, 1_000_000) == 0
    assert not s.models["gpt-4o-mini"].embedding and s.models["gpt-4o-mini"].mode == "chat"
    provider = s.providers["openai"]
    assert ADAPTERS["openai"].embeddings_url(provider) == "https://api.openai.com/v1/embeddings"
    assert ADAPTERS["anthropic"].embeddings_url(s.providers["anthropic"]) is None
    assert (
        ADAPTERS["anthropic"].count_tokens_url(s.providers["anthropic"])
        == "https://api.anthropic.com/v1/messages/count_tokens"
    )
    assert ADAPTERS["openai"].count_tokens_url(provider) is None


def test_embedding_mode_in_config(tmp_path) -> None:
    s = settings_with(
        tmp_path,
        """
[[models]]
name = "my-embedder"
provider = "openai"
mode = "embedding"
input_usd_per_mtok = 0.5
""",
    )
    route = s.models["my-embedder"]
    assert route.embedding and route.pricing is not None  # the output price defaults to 0 for embeddings
    assert route.pricing.cost_micros(2_000_000, 5) == 1_000_000
    with pytest.raises(ConfigError, match="mode"):
        settings_with(tmp_path, '[[models]]\nname = "x"\nprovider = "openai"\nmode = "image"\n')
    chat = settings_with(tmp_path, '[[models]]\nname = "x"\nprovider = "openai"\ninput_usd_per_mtok = 1\n')
    assert chat.models["x"].pricing is None  # a chat model still needs both prices


def test_path_params_take_slashes() -> None:
    app = App(1024)

    async def handler(request, **params):
        return params

    app.route("GET", "/v1/models/{model_id:path}")(handler)
    app.route("GET", "/v1/keys/{key_id}")(handler)
    router = app.router
    assert router.templates == [("GET", "/v1/models/{model_id}"), ("GET", "/v1/keys/{key_id}")]
    assert router.path_params == {"model_id"}
    assert router.match("GET", "/v1/models/org/model:tag")[1] == {"model_id": "org/model:tag"}
    assert router.match("GET", "/v1/models/plain")[1] == {"model_id": "plain"}
    with pytest.raises(HTTPError) as caught:
        router.match("GET", "/v1/keys/a/b")
    assert caught.value.status == 404
    with pytest.raises(HTTPError):
        router.match("GET", "/v1/models/" + "x" * 300)  # longer than any id: 404, as for other ids
    assert _robyn_path("/v1/models/{model_id}", router.path_params) == "/v1/models/*model_id"
    assert _robyn_path("/v1/keys/{key_id}/usage", router.path_params) == "/v1/keys/:key_id/usage"


def test_count_message_tokens() -> None:
    text = "x" * 400
    plain = count_message_tokens({"messages": [{"role": "user", "content": text}]})
    assert 100 <= plain <= 110
    system = count_message_tokens(
        {"system": [{"type": "text", "text": text}], "messages": [{"role": "user", "content": text}]}
    )
    assert system - plain == 100
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 100_000}}
    with_image = count_message_tokens(
        {"messages": [{"role": "user", "content": [image, {"type": "text", "text": text}]}]}
    )
    assert with_image == plain + 1600  # per image, not per byte of base64
    tool_round = count_message_tokens({"messages": [
        {"role": "user", "content": text},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": text}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": text}]}]},
    ]})  # fmt: skip
    assert tool_round > 3 * plain - 10
    assert count_message_tokens({"messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "t" * 400}]}) > 100


def test_embedding_estimate_is_from_above() -> None:
    assert estimate_embedding_tokens(["abc", "abcd"]) == 1 + 2
    assert estimate_embedding_tokens([[1, 2, 3], [4]]) == 4
    assert estimate_embedding_tokens(["é" * 3]) == 2  # bytes, not characters
