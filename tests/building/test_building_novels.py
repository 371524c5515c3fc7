"""build-character on a real annotated novel (../shared/fixtures/novels): Poirot from The Mysterious Affair at
Styles, checked against the corpus's annotations and chatted with through the normal pipeline."""

from __future__ import annotations

import ast
import bisect
import csv

import pytest

from conftest import SHARED

STYLES = SHARED / "fixtures" / "novels" / "pdnc" / "TheMysteriousAffairAtStyles"
STRICT = 0.92  # explicit tags and the first-person narrator only (benchmarks/attribution.py: 0.98 precision)


@pytest.fixture(scope="module")
def styles():
    if not STYLES.is_dir():
        pytest.skip(f"fixture novels missing: {STYLES} (the shared/ folder must sit beside the checkout)")
    return STYLES


@pytest.fixture(scope="module")
def poirot(styles, tmp_path_factory):
    from chatharuhi.building.build import build_character

    out = tmp_path_factory.mktemp("built") / "poirot"
    result = build_character([styles / "novel_text.txt"], "Poirot", out=out, threshold=STRICT,
                             report=out.parent / "report.jsonl", work="The Mysterious Affair at Styles")
    return result


def _gold(styles):
    spans = []
    with (styles / "quotation_info.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for a, b in ast.literal_eval(row["quoteByteSpans"]):
                spans.append((a, b, row["speaker"]))
    spans.sort()
    return spans


def test_no_scene_gives_poirot_a_line_annotated_as_someone_elses(styles, poirot):
    from chatharuhi.character import load_character

    gold = _gold(styles)
    starts = [g[0] for g in gold]
    analysis = poirot.analysis
    text = analysis.sources[0].text
    theirs = [line for line in analysis.lines if analysis.speaker(line) == poirot.name]
    assert len(theirs) >= 150
    wrong = []
    for line in theirs:
        i = bisect.bisect_right(starts, line.end) - 1
        while i >= 0 and not (gold[i][0] < line.end and gold[i][1] > line.start):
            i -= 1
        if i >= 0 and gold[i][1] > line.start and gold[i][2] != "Hercule Poirot":
            wrong.append((gold[i][2], text[line.start:line.end]))
    assert wrong == []
    # and what the scene files say is what the report says: every Poirot line in them is one of his
    said = {" ".join(text[line.start:line.end].split()).strip(" ,;") for line in theirs}
    character = load_character(poirot.path)
    spoken = [line.text for s in character.scenes for line in s.lines if line.speaker == poirot.name]
    assert spoken and set(spoken) <= said


def test_chat_with_the_built_character_retrieves_its_scenes(poirot):
    from chatharuhi import ChatHaruhi
    from chatharuhi.backends.scripted import ScriptedBackend

    backend = ScriptedBackend(replies=["Poirot:「Order and method, mon ami.」"])
    bot = ChatHaruhi(role=poirot.path.name, characters_dir=[str(poirot.path.parent)], llm=backend, embedder="hash")
    reply = bot.chat(text="Who poisoned Mrs. Inglethorp? Was it the coffee-cup?", role="Hastings")
    assert "Order and method" in reply
    trace = bot.last_trace
    assert trace.scenes, "no scene retrieved"
    ids = {sc.id for sc in bot.character.scenes}
    included = [p for p in trace.scenes if p.included]
    assert included and all(p.id.split("#")[0] in ids for p in included)
    prompt = "\n".join(m.content for m in backend.calls[-1])
    assert "Poirot:「" in prompt  # a built scene is in what the model read
