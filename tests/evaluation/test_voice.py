"""The n-gram voice model and the separation figures (accuracy, AUC), on toy data and on real fixture lines."""

from __future__ import annotations

import random

import pytest

from chatharuhi.character.folder import load_character
from chatharuhi.evaluation.cases import is_meaningful
from chatharuhi.evaluation.runner import own_lines
from chatharuhi.evaluation.voice import VoiceModel, auc, ngrams, separation


def test_ngrams_and_auc():
    assert ngrams("Ab  c", (1,)) == {"a": 1, "b": 1, " ": 1, "c": 1}
    assert auc([3, 4], [1, 2]) == 1.0 and auc([1, 2], [3, 4]) == 0.0
    assert auc([1], [1]) == 0.5  # a tie counts half
    assert auc([2, 1], [1, 0]) == pytest.approx(0.875)
    assert auc([], [1]) is None


def test_voice_model_tells_two_styles_apart():
    lines = {"pirate": ["Arr, me hearties, hoist the sails!", "Avast ye, landlubber!", "Arr, the sea be calm."],
             "robot": ["Affirmative. Processing request.", "Error: input not recognised.", "Processing. Complete."]}
    model = VoiceModel(lines)
    assert model.attribute("Arr, hoist the mainsail, ye dogs!") == "pirate"
    assert model.attribute("Request processed. Affirmative.") == "robot"
    assert model.log_odds("Avast, me hearties!", "pirate") > 0 > model.log_odds("Avast, me hearties!", "robot")
    scores = model.scores("anything")
    assert set(scores) == {"pirate", "robot"} and max(scores.values()) <= 0
    result = separation({"pirate": ["Arr, ye scurvy dog!"], "robot": ["Affirmative, processing."]}, model.scores)
    assert result["pirate"] == {"n": 1, "accuracy": 1.0, "auc": 1.0}
    with pytest.raises(ValueError, match="two characters"):
        VoiceModel({"one": ["line"]})


def test_real_held_out_lines_are_attributed_to_their_character(fixtures_dir):
    """Chinese fixture characters only (the hard case: one language), held-out scenes never seen in training."""
    train, test = {}, {}
    for name in ("haruhi", "liyunlong", "zhongli", "wangduoyu"):
        c = load_character(fixtures_dir / name)
        pairs = [(s, t) for s, t in own_lines(c) if is_meaningful(t, c.language)]
        scenes = sorted({s for s, _ in pairs})
        random.Random(name).shuffle(scenes)
        held = set(scenes[: len(scenes) // 5])
        train[name] = [t for s, t in pairs if s not in held]
        test[name] = [t for s, t in pairs if s in held][:60]
    result = separation(test, VoiceModel(train).scores)
    mean_auc = sum(r["auc"] for r in result.values()) / len(result)
    mean_accuracy = sum(r["accuracy"] for r in result.values()) / len(result)
    assert mean_auc > 0.9, result  # chance is 0.5; measured 0.99
    assert mean_accuracy > 0.6, result  # chance is 0.25; measured 0.9
