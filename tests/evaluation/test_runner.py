"""The evaluation harness end to end: scripted backend, hash embedder, real fixture characters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.cli import main
from chatharuhi.errors import InputError
from chatharuhi.evaluation import CONFIGS, run_eval
from chatharuhi.evaluation.runner import EvalIndex, ExclusionLeak
from chatharuhi.retrieval.index import SearchResult
from chatharuhi.types import Scene, ScoredScene

METRIC_NAMES = {"answer_support", "key_term_recall", "cosine", "rouge_l", "identity", "voice", "rule_pass_rate"}


def _chars(fixtures_dir):
    return [fixtures_dir / "haruhi", fixtures_dir / "wangduoyu"]


def _run(fixtures_dir, out, backend, **kw):
    kw.setdefault("cases", 3)
    return run_eval(_chars(fixtures_dir), out, backend=backend, embedder="hash", progress=False, log=lambda m: None,
                    **kw)


def test_end_to_end_with_the_scripted_backend(fixtures_dir, tmp_path):
    backend = ScriptedBackend(["春日:「我们去找外星人吧！今天就去！」"])
    summary = _run(fixtures_dir, tmp_path, backend)
    for cfg in CONFIGS:
        assert METRIC_NAMES <= set(summary[cfg]), cfg
        assert summary[cfg]["cases"] == 6 and summary[cfg]["failures"] == 0
    assert summary["none"]["answer_support"] == 0.0 and summary["system_only"]["answer_support"] == 0.0
    assert summary["full"]["answer_support"] > 0 and summary["random"]["answer_support"] > 0
    assert len(backend.calls) == 6 * len(CONFIGS)
    assert set(summary["by_character"]) == {"haruhi", "wangduoyu"}
    for name in ("results.json", "summary.json", "summary.md", "checkpoint.jsonl"):
        assert (tmp_path / name).is_file()
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["full"] == summary["full"]
    assert "| full |" in (tmp_path / "summary.md").read_text(encoding="utf-8")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        assert (tmp_path / "scores.png").stat().st_size > 1000
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    records = results["records"]
    assert len(records) == 6 * len(CONFIGS)
    excluded = {(name, c["id"]): c["excluded"] for name, ch in results["characters"].items() for c in ch["cases"]}
    for rec in records:  # the source scene (and verbatim copies of the answer) never reach retrieval or the prompt
        ex = excluded[(rec["character"], rec["case_id"])]
        assert rec["scene_id"] in ex
        assert not set(ex) & set(rec["retrieved"]) and not set(ex) & set(rec["scenes"])
        if rec["config"] in ("full", "random"):
            assert rec["retrieved"]
        else:
            assert rec["retrieved"] == [] and rec["scenes"] == []
    # system_only sends no history; the other configurations send the scene's earlier lines
    first = records[0]["case_id"]
    sizes = {rec["config"]: len(call) for rec, call in zip(records, backend.calls) if rec["case_id"] == first}
    assert sizes["system_only"] == 2 and sizes["none"] >= 2


def test_the_source_scene_is_excluded_on_every_case(fixtures_dir, tmp_path):
    summary = run_eval([fixtures_dir / "wangduoyu"], tmp_path, embedder="hash", cases=0, retrieval_only=True,
                       configs=("full", "random"), progress=False, log=lambda m: None)
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert summary["full"]["cases"] == 43 and "cosine" not in summary["full"]  # retrieval only: no generation
    for rec in results["records"]:
        assert rec["scene_id"] not in rec["retrieved"]


def test_exclusion_leak_stops_the_run():
    class Leaky:
        scenes = [Scene("a", "x"), Scene("b", "y")]

        def search(self, query, top_k, exclude=(), **kw):
            return SearchResult([ScoredScene(self.scenes[0], 1.0)])

    proxy = EvalIndex(Leaky())
    proxy.exclude = {"a"}
    with pytest.raises(ExclusionLeak):
        proxy.search("q", 1)
    randomly = EvalIndex(Leaky(), "random")
    randomly.exclude = {"a"}
    assert [h.scene.id for h in randomly.search("q", 2)] == ["b"]


def test_failing_backend_is_recorded_per_case_and_counted(fixtures_dir, tmp_path):
    def reply(messages):
        if "我" in messages[-1].content:  # some queries make the "model" fail
            raise ConnectionError("model went away")
        return "春日:「我们今天就要去找外星人！」"

    backend = ScriptedBackend([reply])
    summary = _run(fixtures_dir, tmp_path, backend, cases=4)
    records = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["records"]
    failed = [r for r in records if r["error"]]
    assert failed and len(failed) < len(records)
    assert all(r["error"].startswith("ConnectionError: model went away") for r in failed)
    assert sum(summary[c]["failures"] for c in CONFIGS) == len(failed)
    assert all(summary[c]["cases"] == 8 for c in CONFIGS)


def test_interrupted_run_resumes_where_it_stopped(fixtures_dir, tmp_path):
    class Interrupted(ScriptedBackend):
        def stream(self, messages, **options):
            if len(self.calls) == 5:
                raise KeyboardInterrupt
            return super().stream(messages, **options)

    with pytest.raises(KeyboardInterrupt):
        _run(fixtures_dir, tmp_path, Interrupted(["春日:「我们今天就要去找外星人！」"]))
    assert len((tmp_path / "checkpoint.jsonl").read_text(encoding="utf-8").splitlines()) == 5
    second = ScriptedBackend(["春日:「我们今天就要去找外星人！」"])
    summary = _run(fixtures_dir, tmp_path, second)
    assert len(second.calls) == 6 * len(CONFIGS) - 5  # only what was not finished
    assert all(summary[c]["cases"] == 6 and summary[c]["failures"] == 0 for c in CONFIGS)
    with pytest.raises(InputError, match="other settings.*seed"):
        _run(fixtures_dir, tmp_path, second, seed=7)


def _tiny_character(root: Path) -> Path:
    folder = root / "tiny"
    (folder / "texts").mkdir(parents=True)
    (folder / "system_prompt.txt").write_text("你是春日", encoding="utf-8")
    (folder / "texts" / "a.txt").write_text("阿虚:「你好」\n春日:「我们今天就要去找外星人！」\n", encoding="utf-8")
    return folder


def test_too_few_cases_is_a_clear_message_not_a_zero_division(fixtures_dir, tmp_path):
    tiny = _tiny_character(tmp_path)
    with pytest.raises(InputError, match=r"(?s)no character has enough usable test cases.*tiny: only 1 usable"):
        run_eval([tiny], tmp_path / "out", backend=ScriptedBackend(), embedder="hash", progress=False,
                 log=lambda m: None)
    summary = run_eval([tiny, fixtures_dir / "wangduoyu"], tmp_path / "out2", embedder="hash", cases=2,
                       retrieval_only=True, progress=False, log=lambda m: None)
    assert list(summary["by_character"]) == ["wangduoyu"]
    assert "tiny: only 1 usable" in summary["skipped"][0]


def test_cli_eval_retrieval_only(fixtures_dir, tmp_path, capsys):
    rc = main(["eval", "wangduoyu", "haruhi", "--characters-dir", str(fixtures_dir), "--embedder", "hash",
               "--retrieval-only", "--cases", "3", "--seed", "1", "--out", str(tmp_path), "--no-plot"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| full |" in out and "answer_support" in out
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert set(CONFIGS) <= set(summary) and summary["settings"]["seed"] == 1
    assert summary["full"]["cases"] == 6 and "rouge_l" not in summary["full"]
    assert main(["eval", "wangduoyu", "--characters-dir", str(fixtures_dir), "--embedder", "hash",
                 "--retrieval-only", "--configs", "full,bogus", "--out", str(tmp_path / "x")]) == 2
