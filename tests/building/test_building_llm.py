"""The LLM pass of build-character against a real local OpenAI-compatible server: batches, answers outside the
cast refused, failures that change nothing, the cache that makes a rerun free, and the cap."""

from __future__ import annotations

import json
import re

import pytest

from chatharuhi.backends.openai_compat import OpenAIBackend
from chatharuhi.building.analysis import analyse
from chatharuhi.building.cast import parse_cast
from chatharuhi.building.llm import llm_pass
from helpers.openai_stub import StubOpenAIServer

# Quotations with no tag at all: the sieve leaves most of them unknown.
NOVEL = "\n\n".join(["It was late.", '"Who is there?" said Holmes.'] + [
    f'Somebody came in. "{w}"' for w in ("The rain is heavy.", "I saw a hound.", "It was gigantic.",
                                         "It ran to the moor.", "Nobody followed it.", "I am afraid.")]) + "\n"
CAST = "Sherlock Holmes|Holmes\nJohn Watson|Watson\nMrs. Hudson"


def _answer(body: dict) -> str:
    """Watson for the first, a name outside the cast for the second, Holmes for the rest."""
    text = body["messages"][-1]["content"]
    numbers = re.findall(r"^(\d+)\. Candidates", text, re.M)
    out = []
    for n in numbers:
        name = {"1": "John Watson", "2": "Moriarty"}.get(n, "Holmes")
        out.append(f"{n}: {name}")
    return "\n".join(out)


@pytest.fixture
def novel(tmp_path):
    path = tmp_path / "hound.txt"
    path.write_text(NOVEL, encoding="utf-8")
    return path


def _unsure(analysis):
    return [r for r in analysis.report_rows() if r["speaker"] is None]


def test_answers_from_the_cast_are_kept_others_refused_and_a_rerun_costs_nothing(novel):
    with StubOpenAIServer(reply=_answer) as stub:
        backend = OpenAIBackend(base_url=stub.base_url, api_key="x", max_retries=0)
        analysis = analyse([novel], cast=parse_cast(CAST))
        before = _unsure(analysis)
        assert len(before) >= 5
        note = llm_pass(analysis, backend, batch_size=4)
        sent = stub.request_count
        assert sent == -(-len(before) // 4)
        rows = list(analysis.report_rows())
        first, second = (next(r for r in rows if r["text"] == b["text"]) for b in before[:2])
        assert (first["speaker"], first["rule"]) == ("John Watson", "llm")
        assert second["speaker"] is None and second["rule"] != "llm"  # "Moriarty" is not in the cast
        assert "2 answers outside the cast refused" in note  # "2: Moriarty" in each of the two batches
        # the prompt named the candidates and marked the quotation
        prompt = stub.requests[0].body["messages"][-1]["content"]
        assert "Candidates: " in prompt and "【" in prompt
        again = analyse([novel], cast=parse_cast(CAST))
        note = llm_pass(again, backend, batch_size=4)
        assert stub.request_count == sent and "0 requests sent" in note
        assert [r["speaker"] for r in again.report_rows()] == [r["speaker"] for r in rows]


def test_a_failing_or_slow_model_changes_nothing_and_the_cap_holds(novel):
    with StubOpenAIServer(reply=_answer) as stub:
        analysis = analyse([novel], cast=parse_cast(CAST))
        rows = list(analysis.report_rows())
        stub.mode, stub.status = "error", 500
        note = llm_pass(analysis, OpenAIBackend(base_url=stub.base_url, api_key="x", max_retries=0), batch_size=2)
        assert "failed" in note and list(analysis.report_rows()) == rows
        stub.mode, stub.delay = "slow", 3.0
        slow = OpenAIBackend(base_url=stub.base_url, api_key="x", max_retries=0, timeout=0.3)
        llm_pass(analysis, slow, batch_size=2)
        assert list(analysis.report_rows()) == rows
        stub.mode = "ok"
        count = stub.request_count
        note = llm_pass(analysis, OpenAIBackend(base_url=stub.base_url, api_key="x", max_retries=0), batch_size=2,
                        max_calls=1)
        assert stub.request_count == count + 1 and "requests not sent (cap)" in note
        json.dumps(list(analysis.report_rows()))  # the report is still plain JSON
