"""The identity and voice judges never see the scene a case comes from (leave-one-scene-out)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.character.folder import load_character
from chatharuhi.evaluation import metrics, run_eval
from chatharuhi.evaluation.judges import Judges, judge_lines
from chatharuhi.evaluation.voice import ngrams
from chatharuhi.retrieval.embeddings import get_embedder

SCENES = 16


def _gibberish(rng: random.Random, words: int = 6) -> str:
    """A line of made-up words: no two scenes share its n-grams beyond single letters and short pairs."""
    return " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)) for _ in range(words))


def _character(root: Path, name: str, seed: int, shared: str | None = None) -> tuple[Path, dict[str, str]]:
    """A character whose every scene is a question and a made-up answer; returns the folder and query -> answer."""
    rng = random.Random(seed)
    folder = root / name
    (folder / "texts").mkdir(parents=True)
    (folder / "system_prompt.txt").write_text(f"You are {name}.", encoding="utf-8")
    (folder / "character.toml").write_text('language = "en"\n', encoding="utf-8")
    answers = {}
    for i in range(SCENES):
        query, answer = f"Question {name} {i}, what do you say?", _gibberish(rng)
        answers[query] = answer
        extra = f"{name}:「{shared}」\n" if shared and i < 2 else ""  # one line spoken in two scenes
        (folder / "texts" / f"{i:02}.txt").write_text(f"Bob:「{query}」\n{name}:「{answer}」\n{extra}",
                                                      encoding="utf-8")
    return folder, answers


def test_a_fit_leaves_the_excluded_scenes_lines_out(tmp_path):
    shared = "this very same line is spoken twice here"
    alpha = load_character(_character(tmp_path, "alpha", 1, shared)[0])
    beta = load_character(_character(tmp_path, "beta", 2)[0])
    emb = get_embedder("hash")
    judges = Judges([alpha, beta], emb.embed_documents, max_lines=None)
    everything = judges.fit()
    left_out = judges.fit({"alpha": ["00.txt"]})

    answer = next(t for s, t in judge_lines(alpha) if s == "00.txt" and t != shared)
    kept = [t for s, t in judge_lines(alpha, ["00.txt"])]
    assert answer not in kept and shared in kept  # the shared line is still spoken in scene 01
    assert len(judges.lines("alpha", ["00.txt"])) == len(set(kept)) == len(judges.lines("alpha")) - 1
    unique = next(g for g in ngrams(answer) if len(g) == 3 and all(g not in ngrams(t) for t in kept))
    assert everything.voice.counts["alpha"][unique] > 0 and unique not in left_out.voice.counts["alpha"]
    assert left_out.voice.counts["beta"] == everything.voice.counts["beta"]
    expected = metrics.centroid(np.asarray(emb.embed_documents(sorted(set(kept)))))
    assert np.allclose(left_out.centroids["alpha"], expected, atol=1e-6)
    assert np.allclose(left_out.centroids["beta"], everything.centroids["beta"])
    # the judge scores the left-out answer on what it has not seen: less sure than the judge that saw it
    assert left_out.voice.log_odds(answer, "alpha") < everything.voice.log_odds(answer, "alpha")


def test_eval_does_not_judge_a_case_by_its_own_scene(tmp_path):
    """A backend that replies with each case's true line, verbatim. Judges fitted on that line's own scene
    attribute every reply to the character; judges fitted without it see made-up words they never met."""
    folder, answers = _character(tmp_path, "alpha", 1)
    other, _ = _character(tmp_path, "beta", 2)

    def true_line(messages):
        last = next(m.content for m in reversed(messages) if m.role == "user")
        return next(a for q, a in answers.items() if q in last)

    out = tmp_path / "out"
    summary = run_eval([folder], out, backend=ScriptedBackend([true_line]), embedder="hash", compare=[other],
                       cases=None, configs=("none",), progress=False, plot=False, log=lambda m: None)
    records = json.loads((out / "results.json").read_text(encoding="utf-8"))["records"]
    assert len(records) == SCENES and all(r["reply"] in answers.values() for r in records)
    voice = np.mean([r["voice"] for r in records])
    identity = np.mean([r["identity"] for r in records])
    assert voice < 0.85 and identity < 0.85, (voice, identity)  # judged with the own scene: 1.0 and 0.94
    reference = summary["reference"]["alpha"]  # the original lines: the same lines, so the same scores
    assert reference["voice"] == voice and reference["identity"] == identity


def test_a_run_scored_by_judges_that_saw_the_scene_is_not_resumed(tmp_path):
    import pytest

    from chatharuhi.errors import InputError

    folder, _ = _character(tmp_path, "alpha", 1)
    other, _ = _character(tmp_path, "beta", 2)
    out = tmp_path / "out"
    kw = dict(backend=ScriptedBackend(["a reply of some five words"]), embedder="hash", compare=[other], cases=3,
              configs=("none",), progress=False, plot=False, log=lambda m: None)
    run_eval([folder], out, **kw)
    settings = json.loads((out / "run.json").read_text(encoding="utf-8"))
    del settings["judges"]  # as a run before the judges left the case's scenes out wrote it
    (out / "run.json").write_text(json.dumps(settings), encoding="utf-8")
    with pytest.raises(InputError, match=r"other settings \(judges\)"):
        run_eval([folder], out, **kw)
