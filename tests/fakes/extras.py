"""The fake upstream's other routes: OpenAI GET /v1/models/{id} and POST /v1/embeddings,
Anthropic GET /v1/models/{id} and POST /v1/messages/count_tokens (README.md next to this file).

Embeddings are deterministic unit vectors (a function of the model and the input item),
float32 values whether sent as JSON floats or as base64 (little-endian float32), so the
two encodings decode to the same numbers.
"""

import base64
import hashlib
import random
import struct

import orjson

from . import upstream as up

# Native dimensions, and whether `dimensions` may shorten them (text-embedding-3 only).
EMBEDDING_MODELS = {
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
}
MAX_INPUTS = 2048
_INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


async def dispatch(method: str, path: str, headers: dict, body: bytes, send) -> bool:
    """Answer the request if it is one of these routes; False otherwise."""
    anthropic = b"anthropic-version" in headers
    if method == "GET" and path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
        model_id = path[len("/v1/models/") :]
        await (_anthropic_model if anthropic else _openai_model)(headers, model_id, send)
    elif method == "POST" and path == "/v1/embeddings":
        await _embeddings(headers, body, send)
    elif method == "POST" and path == "/v1/messages/count_tokens":
        await _count_tokens(headers, body, send)
    else:
        return False
    return True


async def _refused(provider, headers: dict, send) -> bool:
    refused = provider.refuse(headers)
    if refused:
        await up._respond(send, provider, refused[0], provider.error(*refused))
    return bool(refused)


# --- models --------------------------------------------------------------------


async def _openai_model(headers: dict, model_id: str, send) -> None:
    if await _refused(up.OpenAI, headers, send):
        return
    listed = {m["id"]: m for m in orjson.loads(up.OpenAI.models)["data"]}
    listed.update(
        {
            name: {"id": name, "object": "model", "created": 1705953180, "owned_by": "system"}
            for name in EMBEDDING_MODELS
        }
    )
    if model_id not in listed:
        message = f"The model '{model_id}' does not exist"
        body = orjson.dumps(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            }
        )
        return await up._respond(send, up.OpenAI, 404, body)
    await up._respond(send, up.OpenAI, 200, orjson.dumps(listed[model_id]))


async def _anthropic_model(headers: dict, model_id: str, send) -> None:
    if await _refused(up.Anthropic, headers, send):
        return
    listed = {m["id"]: m for m in orjson.loads(up.Anthropic.models)["data"]}
    if model_id not in listed:
        return await up._respond(send, up.Anthropic, 404, up.Anthropic.error(404, f"model: {model_id}"))
    await up._respond(send, up.Anthropic, 200, orjson.dumps(listed[model_id]))


# --- Anthropic token counting ----------------------------------------------------


async def _count_tokens(headers: dict, body: bytes, send) -> None:
    """The input tokens a POST /v1/messages of the same body would report (the same rules)."""
    provider = up.Anthropic
    if await _refused(provider, headers, send):
        return
    try:
        req = orjson.loads(body)
        up._expect(isinstance(req, dict), "Invalid request body: expected a JSON object.")
        turn = provider.parse({**req, "max_tokens": 1})  # count_tokens takes no max_tokens
    except up.BadRequest as exc:
        return await up._respond(send, provider, 400, provider.error(400, str(exc)))
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return await up._respond(send, provider, 400, provider.error(400, "Invalid request body."))
    status = up._failure_status(turn.directives)
    if status:
        return await up._respond(send, provider, status, provider.error(status))
    await up._respond(send, provider, 200, orjson.dumps({"input_tokens": turn.input_tokens}))


# --- OpenAI embeddings --------------------------------------------------------------


def _bad(message: str, param: str | None = None, status: int = 400) -> tuple:
    return status, orjson.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    )


def _is_token(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _inputs(raw) -> list | None:
    """The request's input as a list of strings or of token-id lists; None when invalid."""
    if isinstance(raw, str):
        items = [raw]
    elif isinstance(raw, list) and raw and all(_is_token(t) for t in raw):
        items = [raw]
    elif (
        isinstance(raw, list)
        and raw
        and (
            all(isinstance(s, str) for s in raw)
            or all(isinstance(t, list) and t and all(_is_token(i) for i in t) for t in raw)
        )
    ):
        items = raw
    else:
        return None
    if len(items) > MAX_INPUTS or any(item == "" for item in items):
        return None
    return items


def vector(model: str, item, dimensions: int) -> list:
    """A deterministic unit vector for one input item, as float32 values."""
    seed = hashlib.sha256(model.encode() + b"\0" + orjson.dumps(item)).digest()
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = sum(x * x for x in raw) ** 0.5
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(x / norm for x in raw))))


def embedding_response(req: dict) -> tuple[int, bytes]:
    """(status, body) of POST /v1/embeddings for a parsed request body."""
    model = req.get("model") if isinstance(req, dict) else None
    if not isinstance(model, str):
        return _bad("you must provide a model parameter")
    items = _inputs(req.get("input"))
    if items is None:
        return _bad(_INVALID_INPUT, "input")
    if model not in EMBEDDING_MODELS:
        return _bad(f"The model `{model}` does not exist or you do not have access to it.", "model", 404)
    native, shortens = EMBEDDING_MODELS[model]
    dimensions = req.get("dimensions")
    if dimensions is not None:
        if not shortens:
            return _bad("This model does not support specifying dimensions.", "dimensions")
        if not _is_token(dimensions) or not 1 <= dimensions <= native:
            return _bad(f"Invalid 'dimensions': must be an integer from 1 to {native}.", "dimensions")
    encoding = req.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return _bad("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    data, tokens = [], 0
    for index, item in enumerate(items):
        values = vector(model, item, dimensions or native)
        if encoding == "base64":
            values = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": values})
        tokens += up.text_tokens(item) if isinstance(item, str) else len(item)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return 200, orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})


async def _embeddings(headers: dict, body: bytes, send) -> None:
    provider = up.OpenAI
    if await _refused(provider, headers, send):
        return
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError:
        return await up._respond(
            send, provider, 400, provider.error(400, "We could not parse the JSON body of your request.")
        )
    first = _inputs(req.get("input")) if isinstance(req, dict) else None
    try:
        directives = up.parse_directives(first[0]) if first and isinstance(first[0], str) else {}
    except up.BadRequest as exc:
        return await up._respond(send, provider, 400, provider.error(400, str(exc)))
    status = up._failure_status(directives)
    if status:
        return await up._respond(send, provider, status, provider.error(status))
    await up._respond(send, provider, *embedding_response(req))
