"""Evaluation metrics on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from chatharuhi.evaluation import metrics
from chatharuhi.evaluation.cases import is_meaningful, text_units
from chatharuhi.evaluation.report import config_scores, markdown, summarize
from chatharuhi.retrieval.embeddings import HashEmbedder


@pytest.mark.parametrize("text, language", [("今天天气很好，我们去找外星人吧！", "zh"),
                                            ("The photon goes through both slits.", "en")])
def test_rouge_l_identical_is_one(text, language):
    assert metrics.rouge_l(text, text, language) == 1.0


@pytest.mark.parametrize("a, b, language", [("今天天气很好", "外星人来了吗", "zh"),
                                            ("red green blue", "cat dog bird", "en")])
def test_rouge_l_disjoint_is_zero(a, b, language):
    assert metrics.rouge_l(a, b, language) == 0.0


def test_rouge_l_known_values_and_units():
    assert metrics.rouge_l("今天天气很好", "今天天气不好", "zh") == pytest.approx(5 / 6)  # LCS 今天天气好
    assert metrics.rouge_l("The cat sat", "the cat ran", "en") == pytest.approx(2 / 3)  # word level, lowercased
    assert metrics.rouge_l("你好，世界！", "你好世界", "zh") == 1.0  # punctuation is not a unit
    assert metrics.rouge_l("", "你好", "zh") == 0.0 and metrics.rouge_l("！！", "你好", "zh") == 0.0
    assert metrics.rouge_tokens("去SOS团", "zh") == ["去", "sos", "团"]
    assert metrics.rouge_l("cat", "cats", "en") == 0.0  # English is compared by words, not characters


def test_cosine_and_answer_support():
    e = np.eye(3, dtype=np.float32)
    assert metrics.cosine(e[0], e[0]) == pytest.approx(1.0)
    assert metrics.cosine(e[0], e[1]) == 0.0
    assert metrics.cosine(e[0], np.zeros(3)) == 0.0
    assert metrics.answer_support(e[0], None) == 0.0  # no scenes: nothing supports the answer
    assert metrics.answer_support(e[0], e[1:]) == 0.0
    assert metrics.answer_support(e[0], e) == pytest.approx(1.0)


def test_identity_with_real_embeddings_of_text():
    emb = HashEmbedder(128)
    own = metrics.centroid(emb.embed_documents(["外星人 未来人 超能力者", "外星人 在哪里", "未来人 超能力者 来吧"]))
    other = metrics.centroid(emb.embed_documents(["physics photon slit", "photon physics paper", "slit physics"]))
    zh = emb.embed_query("外星人 未来人")
    en = emb.embed_query("photon physics")
    assert metrics.identity(zh, own, {"Sheldon": other})[0] == 1.0
    assert metrics.identity(en, own, {"Sheldon": other})[0] == 0.0
    assert metrics.identity(zh, own, {}) == (None, None)  # nobody to compare with


def test_key_terms_and_recall():
    scenes = [("s1", "春日:「我们去找外星人吧」"), ("s2", "春日:「外星人在哪里」"), ("s3", "阿虚:「外星人不存在」"),
              ("s4", "春日:「今天开会」")] + [(f"x{i}", f"古泉:「其他话题{i}」") for i in range(30)]
    kt = metrics.KeyTerms(scenes)
    terms = kt.key_terms("外星人来了", exclude=["s1"])
    assert "外星" in terms and "星人" in terms
    relevant = kt.relevant(terms, exclude=["s1"])
    assert relevant == {"s2", "s3"}
    assert metrics.key_term_recall(["s2", "s3", "s4"], relevant) == 1.0
    assert metrics.key_term_recall(["s2", "s4"], relevant) == 0.5
    assert metrics.key_term_recall(["x1"], relevant) == 0.0
    assert metrics.key_term_recall([], relevant) == 0.0
    assert metrics.key_term_recall(["s2"], set()) is None  # no key term: no recall
    assert kt.key_terms("其他话题", exclude=[]) == []  # in every x scene: too common to be key


def test_rule_checks():
    own, others = ["春日"], ["阿虚", "古泉"]
    assert metrics.rule_checks("我们马上去找外星人！", "zh", own, others)["rule_pass"]
    assert metrics.rule_checks("春日:「走吧！」", "zh", own, others)["rule_pass"]  # own tag is fine
    bad = metrics.rule_checks("走吧！\n阿虚:「好吧」", "zh", own, others)
    assert not bad["own_voice"] and not bad["rule_pass"]
    empty = metrics.rule_checks("  ", "zh", own, others)
    assert not empty["non_empty"] and not empty["rule_pass"]
    assert not metrics.rule_checks("Let's go find aliens!", "zh", own, others)["language"]
    assert metrics.rule_checks("Let's go find aliens!", "en", ["Sheldon"], ["Leonard"])["rule_pass"]
    assert not metrics.rule_checks("外" * (metrics.MAX_REPLY_CJK_CHARS + 1), "zh", own, others)["length"]
    assert not metrics.rule_checks("……", "zh", own, others)["length"]


def test_meaningful_length_thresholds():
    assert text_units("那么也就是说以后", "zh") == 8 and is_meaningful("那么也就是说以后", "zh")
    assert not is_meaningful("那么也就是说", "zh")
    assert is_meaningful("There's no point, I just think", "en") and not is_meaningful("No point at all.", "en")


def test_line_vectors_cache_round_trip():
    emb = HashEmbedder(32)
    lv = metrics.LineVectors(emb)
    first = lv.embed(["外星人", "photon"])
    lv.save()
    assert lv.path.exists()
    again = metrics.LineVectors(emb)
    assert again._vectors and np.allclose(again.embed(["photon", "外星人"]), first[::-1])
    assert lv.embed([]).shape == (0, 32)


def test_summary_of_nothing_is_not_a_zero_division():
    scores = config_scores([])
    assert scores["cases"] == 0 and scores["failures"] == 0 and scores["answer_support"] is None
    failed = config_scores([{"error": "boom", "config": "full"}])
    assert failed["failures"] == 1 and failed["answer_support"] is None
    summary = summarize([], {"configs": ["full"]})
    assert summary["full"]["cases"] == 0
    assert "| full |" in markdown(summary)
