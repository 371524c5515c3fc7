"""A card's example dialogue is introduced as examples of how the character speaks (never as scenes of an
original work), and a long example block is imported as parts that fit a story budget."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("PIL")

from chatharuhi import ChatHaruhi, load_character  # noqa: E402
from chatharuhi.backends.scripted import ScriptedBackend  # noqa: E402
from chatharuhi.character.validate import validate_folder  # noqa: E402
from chatharuhi.config import IMPORT_SCENE_TOKENS  # noqa: E402
from chatharuhi.interop import import_character  # noqa: E402
from chatharuhi.prompting.tokens import TiktokenCounter  # noqa: E402


def long_card(tmp_path):
    exchange = ("{{user}}: Tell me about the library at night, every shelf of it.\n"
                "{{char}}: *lifts the lantern* The east wing keeps the atlases; the west wing keeps the letters "
                "nobody collected. I walk both twice before midnight, counting the candles as I go.\n")
    card = {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": "Mina", "description": "{{char}} is a night librarian.", "personality": "calm",
                     "scenario": "", "first_mes": "Hello, {{user}}.", "mes_example": "<START>\n" + exchange * 40}}
    path = tmp_path / "mina.json"
    path.write_text(json.dumps(card), encoding="utf-8")
    return path


def test_a_long_example_block_becomes_parts_that_validate_never_calls_unretrievable(tmp_path):
    folder = import_character(long_card(tmp_path), tmp_path / "characters")
    counter = TiktokenCounter()
    texts = sorted((folder / "texts").glob("*.txt"))
    sizes = [counter.count(p.read_text(encoding="utf-8")) for p in texts]
    assert len(texts) > 5 and max(sizes) <= IMPORT_SCENE_TOKENS * 1.3, sizes  # tiktoken vs the estimate
    lines = [line for p in texts for line in p.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 80 and all(re.fullmatch(r"(\{\{user\}\}|Mina):「.+」", line) for line in lines)  # whole
    assert not [p for p in validate_folder(folder) if "never be retrieved" in p.message]
    assert load_character(folder).manifest.examples is True


def test_the_prompt_calls_them_examples_of_how_the_character_speaks(tmp_path):
    folder = import_character(long_card(tmp_path), tmp_path / "characters")
    backend = ScriptedBackend(["Mina:「Shh.」"])
    bot = ChatHaruhi(character=load_character(folder), llm=backend, embedder="hash")
    bot.chat("What do you do at night?")
    system = backend.calls[-1][0].content
    assert "Examples of how Mina talks and acts" in system
    assert "original work" not in system and "classic scenes" not in system
    haruhi = ChatHaruhi("haruhi", llm=ScriptedBackend(["春日:「好」"]), embedder="hash")
    assert "原作中的经典桥段" in haruhi.prompt.header  # a character made of scenes keeps its story header
