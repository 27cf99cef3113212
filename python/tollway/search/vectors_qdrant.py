"""The vector index on Qdrant (a server, or qdrant-client's local mode for tests and small set-ups).

One collection ``tollway_<space>`` per index generation, cosine distance, point id = chunk_id. The filter of a
``VectorQuery`` becomes Qdrant's query filter (must conditions on indexed payload fields), so filtering happens
inside the search. Local mode ignores payload indexes and scans; a server uses them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy
from qdrant_client import QdrantClient, models

from tollway.search.vectors import VectorQuery, VectorRow, as_f32, check_space

__all__ = ["QdrantIndex", "qdrant_from_url"]

_KEYWORDS = ("account_id", "scope", "thread_id", "role", "model")
_UPSERT_BATCH = 256


def qdrant_from_url(url_or_path: str) -> QdrantClient:
    """http(s) URL: a Qdrant server; ":memory:" or a directory: qdrant-client's local mode."""
    if url_or_path.startswith(("http://", "https://")):
        return QdrantClient(url=url_or_path)
    if url_or_path == ":memory:":
        return QdrantClient(location=":memory:")
    return QdrantClient(path=url_or_path)


def query_filter(query: VectorQuery) -> models.Filter:
    must: list[models.Condition] = [
        models.FieldCondition(key="account_id", match=models.MatchValue(value=query.account_id))
    ]
    for key, value in (
        ("scope", query.scope),
        ("thread_id", query.thread_id),
        ("role", query.role),
        ("model", query.model),
    ):
        if value is not None:
            must.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))
    if query.from_ms is not None or query.to_ms is not None:
        must.append(
            models.FieldCondition(
                key="created_at",
                range=models.Range(
                    gte=query.from_ms,
                    lt=query.to_ms,
                ),
            )
        )
    return models.Filter(must=must)


class QdrantIndex:
    name = "qdrant"

    def __init__(self, client: QdrantClient) -> None:
        self.client = client

    @staticmethod
    def collection(space: str) -> str:
        return f"tollway_{check_space(space)}"

    def ensure(self, space: str, dim: int) -> None:
        name = self.collection(space)
        if self.client.collection_exists(name):
            have = self.client.get_collection(name).config.params.vectors
            size = getattr(have, "size", None)
            if size is not None and size != dim:
                raise ValueError(f"vector space {space!r} exists with dim {size}, not {dim}")
            return
        self.client.create_collection(
            name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
        )
        for key in _KEYWORDS:
            self.client.create_payload_index(name, key, field_schema=models.PayloadSchemaType.KEYWORD)
        self.client.create_payload_index(name, "created_at", field_schema=models.PayloadSchemaType.INTEGER)

    def add(self, space: str, rows: Sequence[VectorRow], conn=None) -> None:
        name = self.collection(space)
        points = [
            models.PointStruct(
                id=int(r.chunk_id),
                vector=as_f32(r.vector).tolist(),
                payload={
                    "account_id": r.account_id,
                    "scope": r.scope,
                    "thread_id": r.thread_id,
                    "role": r.role,
                    "model": r.model,
                    "created_at": int(r.created_at),
                },
            )
            for r in rows
        ]
        for start in range(0, len(points), _UPSERT_BATCH):
            self.client.upsert(name, points=points[start : start + _UPSERT_BATCH], wait=True)

    def delete_chunks(self, space: str, chunk_ids: Sequence[int], conn=None) -> None:
        if chunk_ids:
            self.client.delete(
                self.collection(space),
                points_selector=models.PointIdsList(points=[int(i) for i in chunk_ids]),
                wait=True,
            )

    def delete_thread(self, space: str, thread_id: str, conn=None) -> None:
        selector = models.FilterSelector(
            filter=models.Filter(
                must=[models.FieldCondition(key="thread_id", match=models.MatchValue(value=thread_id))]
            )
        )
        self.client.delete(self.collection(space), points_selector=selector, wait=True)

    def search(
        self, space: str, vector: numpy.ndarray, query: VectorQuery, k: int, conn=None
    ) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        found = self.client.query_points(
            self.collection(space),
            query=as_f32(vector).tolist(),
            query_filter=query_filter(query),
            limit=int(k),
            with_payload=False,
        )
        return [(int(p.id), float(p.score)) for p in found.points]

    def count(self, space: str, conn=None) -> int:
        return int(self.client.count(self.collection(space), exact=True).count)

    def drop(self, space: str, conn=None) -> None:
        name = self.collection(space)
        if self.client.collection_exists(name):
            self.client.delete_collection(name)

    def close(self) -> None:
        self.client.close()
