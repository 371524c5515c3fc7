"""BM25 over CJK unigrams/bigrams and latin words."""

from __future__ import annotations

import numpy as np

from chatharuhi.retrieval.lexical import BM25, tokenize


def test_tokenize_cjk_unigrams_bigrams_and_lowercased_words():
    assert tokenize("春日说: Hello World_x 42岁") == [
        "春", "日", "说", "春日", "日说", "hello", "world", "x", "42", "岁"]
    assert tokenize("「」！?  ") == []


def test_bigrams_do_not_cross_punctuation():
    assert "日阿" not in tokenize("春日，阿虚")


def test_chinese_term_ranks_its_document_first():
    docs = ["阿虚坐在教室里发呆", "春日决定去棒球场特训", "长门在看书", "朝比奈学姐泡茶"]
    s = BM25(docs).scores("我们去棒球场吧")
    assert s.shape == (4,)
    assert int(np.argmax(s)) == 1
    assert s[1] > 0 and s[2] == 0


def test_english_term_ranks_its_document_first():
    docs = ["Sheldon explains string theory", "Penny works at the Cheesecake Factory",
            "Leonard and Sheldon play Halo", "Howard builds a space toilet"]
    bm = BM25(docs)
    s = bm.scores("CHEESECAKE please")
    assert int(np.argmax(s)) == 1
    assert np.count_nonzero(s) == 1
    both = bm.scores("sheldon halo")
    assert int(np.argmax(both)) == 2  # matches both terms
    assert both[0] > 0


def test_rare_term_beats_common_term_and_length_normalisation():
    docs = ["猫 猫 猫 狗", "猫", "猫 狗 鸟 鱼 马 牛 羊 鹦鹉"]
    bm = BM25(docs)
    assert bm.idf("鹦鹉") > bm.idf("猫")
    assert bm.idf("不存在") == 0.0
    s = bm.scores("猫")
    assert s[1] > s[2]  # same tf: the shorter document wins
    assert s[0] > s[1]  # more occurrences win


def test_unknown_query_and_empty_corpus():
    bm = BM25(["春日", "阿虚"])
    assert np.array_equal(bm.scores("Sheldon"), np.zeros(2, np.float32))
    assert np.array_equal(bm.normalized_scores("Sheldon"), np.zeros(2, np.float32))
    empty = BM25([])
    assert empty.scores("春日").shape == (0,)
    assert BM25(["", "!!"]).scores("a").tolist() == [0.0, 0.0]


def test_normalized_scores_top_is_one():
    n = BM25(["春日 春日 特训", "特训", "长门"]).normalized_scores("春日特训")
    assert n.max() == 1.0 and n.min() >= 0.0 and n[2] == 0.0


def test_scores_match_a_naive_bm25():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    docs = [" ".join(rng.choice(words, size=rng.integers(1, 25))) for _ in range(60)]
    bm = BM25(docs)
    query = "w1 w2 w3 w29 w1"
    toks = [d.split() for d in docs]
    avgdl = np.mean([len(t) for t in toks])
    expect = np.zeros(len(docs))
    for term in set(query.split()):
        df = sum(term in t for t in toks)
        idf = np.log1p((len(docs) - df + 0.5) / (df + 0.5))
        for d, t in enumerate(toks):
            tf = t.count(term)
            expect[d] += idf * tf * 2.5 / (tf + 1.5 * (0.25 + 0.75 * len(t) / avgdl))
    np.testing.assert_allclose(bm.scores(query), expect, rtol=1e-5)


def test_real_fixture_name_lookup(fixtures_dir):
    texts = sorted((fixtures_dir / "Sheldon" / "texts").glob("*.txt"))
    docs = [p.read_text(encoding="utf-8") for p in texts]
    bm = BM25(docs)
    best = int(np.argmax(bm.scores("Wolowitz")))
    assert "wolowitz" in docs[best].lower()
