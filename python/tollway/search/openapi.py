"""The OpenAPI schemas of the search routes (merged into tollway.http.openapi_schemas.SCHEMAS)."""

from __future__ import annotations

from typing import Any

from tollway.http.openapi_schemas import nullable, obj, ref

Schema = dict[str, Any]

_GENERATION = obj(
    {
        "generation": {"type": "string"},
        "embedder": {"type": "string"},
        "dimensions": {"type": "integer"},
        "index": {"type": "string"},
    },
    ("generation", "embedder", "dimensions", "index"),
)

_RESULT_PROPS: dict[str, Schema] = {
    "object": {"const": "search.result"},
    "thread_id": {"type": "string"},
    "message_id": {"type": "string"},
    "role": {"enum": ["user", "assistant", "tool"]},
    "snippet": {"type": "string", "description": "the matching chunk's best window"},
    "highlights": {
        "type": "array",
        "description": "where the query's terms are in the snippet (character offsets)",
        "items": obj({"start": {"type": "integer"}, "end": {"type": "integer"}}, ("start", "end")),
    },
    "score": {"type": "number", "description": "reciprocal rank fusion of the vector and lexical rankings"},
    "created_at": {"type": "integer"},
    "model": {"type": ["string", "null"]},
}

SEARCH_SCHEMAS: dict[str, Schema] = {
    "SearchResult": obj(_RESULT_PROPS, tuple(_RESULT_PROPS)),
    "SearchResults": obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ref("SearchResult")},
            "has_more": {"type": "boolean"},
            "next": {"type": ["string", "null"], "description": "pass as 'after' for the next page"},
        },
        ("object", "data", "has_more", "next"),
    ),
    "SearchStatus": obj(
        {
            "object": {"const": "search.status"},
            "backlog": {"type": "integer", "description": "messages stored but not indexed yet"},
            "indexed_messages": {"type": "integer"},
            "indexed_chunks": {"type": "integer"},
            "embedder": {"type": "string"},
            "index": {"type": "string"},
            "active": nullable(_GENERATION),
            "rebuild": nullable(obj({}, extra=True)),
            "indexer": obj({}, extra=True),
        },
        (
            "object",
            "backlog",
            "indexed_messages",
            "indexed_chunks",
            "embedder",
            "index",
            "active",
            "rebuild",
            "indexer",
        ),
    ),
}
