"""Lorebooks: matching rules, budget order, recursion, and the packer's lore share and trace."""

from __future__ import annotations

import json

import pytest

from chatharuhi import ChatHaruhi
from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.lorebook import Lorebook, LoreEntry
from chatharuhi.packing import Budget, LoreUnit, pack
from chatharuhi.tokens import TokenCounter


def entry(**kw):
    kw.setdefault("id", "e")
    kw.setdefault("content", "lore")
    return LoreEntry(**kw)


@pytest.mark.parametrize("logic, text, fires", [
    ("and_any", "dragon fire", True), ("and_any", "dragon", False),
    ("and_all", "dragon fire ice", True), ("and_all", "dragon fire", False),
    ("not_any", "dragon", True), ("not_any", "dragon ice", False),
    ("not_all", "dragon fire", True), ("not_all", "dragon fire ice", False),
])
def test_selective_logic(logic, text, fires):
    e = entry(keys=["dragon"], secondary_keys=["fire", "ice"], selective=True, logic=logic)
    assert (e.match(text) is not None) == fires


def test_case_regex_and_whole_words():
    assert entry(keys=["Dragon"]).match("a dragon") == "Dragon"
    assert entry(keys=["Dragon"], case_sensitive=True).match("a dragon") is None
    assert entry(keys=["/drag(on|ons)\\b/i"]).match("DRAGONS here") is not None
    assert entry(keys=["/[/"]).match("x") is None  # a broken regex never fires (or raises)
    assert entry(keys=["cat"], whole_words=True).match("concatenate") is None
    assert entry(keys=["cat"], whole_words=True).match("a cat!") == "cat"
    assert entry(keys=["长门"]).match("长门有希在看书") == "长门"


def test_scan_depth_constant_disabled_and_order():
    book = Lorebook([
        entry(id="old", keys=["castle"]),
        entry(id="new", keys=["moon"], priority=5),
        entry(id="always", constant=True, insertion_order=1),
        entry(id="off", keys=["moon"], enabled=False),
        entry(id="deep", keys=["castle"], scan_depth=3),
    ], scan_depth=2)
    fired = book.activate(["we saw the castle", "ok", "the moon is up"])
    assert [a.entry.id for a in fired] == ["always", "new", "deep"]
    assert [a.key for a in fired] == ["constant", "moon", "castle"]


def test_recursion():
    book = Lorebook([entry(id="a", keys=["sword"], content="The sword was forged by the smith."),
                     entry(id="b", keys=["smith"], content="The smith lives in town."),
                     entry(id="c", keys=["town"], content="Town.", exclude_recursion=True)])
    assert [a.entry.id for a in book.activate(["a sword"])] == ["a"]
    fired = book.activate(["a sword"], recursive=True)
    assert [a.entry.id for a in fired] == ["a", "b"] and fired[1].recursive


def test_reads_sillytavern_world_info_and_character_book(tmp_path):
    wi = {"entries": {"0": {"uid": 0, "key": ["moon"], "keysecondary": ["night"], "selective": True,
                            "selectiveLogic": 2, "content": "Moon lore", "order": 50, "disable": False,
                            "constant": False, "caseSensitive": None}}}
    path = tmp_path / "wi.json"
    path.write_text(json.dumps(wi))
    e = Lorebook.load(path).entries[0]
    assert (e.keys, e.secondary_keys, e.logic, e.insertion_order, e.enabled) == (["moon"], ["night"], "not_any",
                                                                                 50, True)
    book = Lorebook.from_dict(Lorebook.load(path).to_character_book())
    assert book.entries[0].logic == "not_any" and book.entries[0].keys == ["moon"]


class Chars(TokenCounter):
    name = "chars"
    additive = True

    def count(self, text: str) -> int:
        return len(text)

    def count_messages(self, messages) -> int:
        return sum(len(m.content) + 3 for m in messages) + 3


def test_packer_lore_share_order_and_trace():
    lore = [LoreUnit("big", "B" * 50, order=1, key="b"), LoreUnit("x", "X" * 10, order=9, key="x"),
            LoreUnit("y", "Y" * 10, order=2, key="y")]
    p = pack("SYS", "H", [], [], "q", Chars(), Budget(10_000, 0, 0, 0, lore_tokens=30), lore=lore,
             lore_header="LORE")
    system = p.messages[0].content
    assert system == "SYS\n\nLORE\n" + "Y" * 10 + "\n" + "X" * 10 + "\n"  # insertion order, not budget order
    assert [(t.id, t.included, t.key) for t in p.trace.lore] == [("big", False, "b"), ("x", True, "x"),
                                                                 ("y", True, "y")]
    assert p.trace.lore[0].reason == "larger than the lore budget"
    assert p.trace.parts["lore"] == sum(t.tokens for t in p.trace.lore if t.included) <= 30
    assert p.trace.total_tokens == Chars().count_messages(p.messages)


def test_chatbot_global_lorebook_fires_and_is_traced(tmp_path):
    path = tmp_path / "book.json"
    path.write_text(json.dumps({"entries": [{"keys": ["外星人"], "content": "SOS团的目标是找到外星人。",
                                             "enabled": True, "insertion_order": 1}]}), encoding="utf-8")
    backend = ScriptedBackend(["春日:「好！」"])
    bot = ChatHaruhi("haruhi", llm=backend, embedder="hash", lorebook=path)
    bot.chat("我们去找外星人吧")
    assert "SOS团的目标是找到外星人。" in backend.calls[-1][0].content
    assert bot.last_trace.lore[0].key == "外星人"
    bot.chat("今天天气不错")
    assert bot.last_trace.lore == []  # the key is now older than the scan depth (2 messages)
