"""Lorebooks: matching rules, budget order, recursion, and the packer's lore share and trace."""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatharuhi import ChatHaruhi
from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.prompting.lorebook import Lorebook, LoreEntry
from chatharuhi.prompting.packing import Budget, LoreUnit, pack
from chatharuhi.prompting.tokens import TokenCounter


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
    # SillyTavern's budget order: higher insertion order first (constant or keyed alike), then priority
    assert [a.entry.id for a in fired] == ["new", "deep", "always"]
    assert [a.key for a in fired] == ["moon", "castle", "constant"]


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
    lore = [LoreUnit("x", "X" * 10, order=9, key="x"), LoreUnit("y", "Y" * 10, order=2, key="y"),
            LoreUnit("big", "B" * 50, order=1, key="b"), LoreUnit("small", "S", order=0, key="s")]
    p = pack("SYS", "H", [], [], "q", Chars(), Budget(10_000, 0, 0, 0, lore_tokens=30), lore=lore,
             lore_header="LORE")
    system = p.messages[0].content
    assert system == "SYS\n\nLORE\n" + "Y" * 10 + "\n" + "X" * 10 + "\n"  # insertion order, not budget order
    assert [(t.id, t.included, t.key) for t in p.trace.lore] == [("x", True, "x"), ("y", True, "y"),
                                                                 ("big", False, "b"), ("small", False, "s")]
    assert p.trace.lore[2].reason == "larger than the lore budget"
    assert p.trace.lore[3].reason == "after the lore budget was full"  # SillyTavern stops at the first overflow
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


def test_card_token_budget_is_honoured_and_filled_as_sillytavern_does(tmp_path):
    """A book's token_budget is its share (not capped at the default 500), and a low-order constant entry
    gives way to a high-order keyed one (SillyTavern fills by insertion order, not constants first)."""
    from chatharuhi.prompting.tokens import CharCounter

    big = {"keys": ["外星人"], "content": "甲" * 1650, "enabled": True, "insertion_order": 50}
    keyed = {"keys": ["外星人"], "content": "乙" * 200, "enabled": True, "insertion_order": 300}
    const = {"keys": [], "content": "丙" * 200, "enabled": True, "constant": True, "insertion_order": 1}
    path = tmp_path / "book.json"
    path.write_text(json.dumps({"token_budget": 2000, "entries": [const, big, keyed]}), encoding="utf-8")
    bot = ChatHaruhi("haruhi", llm=ScriptedBackend(["春日:「好」"], counter=CharCounter(), context_window=16_000),
                     embedder="hash", lorebook=path)
    plan = bot.prepare("外星人在哪里？")
    assert plan.trace.lore_budget == 2000
    assert [(t.id, t.included) for t in plan.trace.lore] == [("2", True), ("1", True), ("0", False)]
    system = plan.messages[0].content
    assert system.index("甲" * 1650) < system.index("乙" * 200) and "丙" not in system  # prompt: insertion order
    assert ChatHaruhi("haruhi", llm=ScriptedBackend(counter=CharCounter(), context_window=16_000),
                      embedder="hash", lorebook=path, lore_tokens=300).budget.lore_tokens == 300  # arguments win


def test_lore_entry_starting_with_a_slash_is_counted_exactly_under_o200k():
    """The reported case: gpt-4o-mini (o200k), an entry starting "/start" after a line ending in '：'.
    The trace said 1858 where tiktoken counts 1860; now the trace is the exact count."""
    from chatharuhi.prompting.tokens import TiktokenCounter

    counter = TiktokenCounter(model="gpt-4o-mini")
    book = Lorebook([LoreEntry("1", "/start 是SOS团的暗号。", keys=["SOS"]),
                     LoreEntry("2", "/help 打开帮助。", keys=["SOS"], insertion_order=200)])
    bot = ChatHaruhi("haruhi", llm=ScriptedBackend(counter=counter), embedder="hash", lorebook=book)
    plan = bot.prepare("SOS团今天去哪里？")
    assert "：\n/start" in plan.messages[0].content
    assert plan.trace.total_tokens == counter.count_messages(plan.messages)
    assert sum(plan.trace.parts.values()) == plan.trace.total_tokens


def test_v3_use_regex_keys_are_patterns():
    e = Lorebook.from_dict({"entries": [{"keys": ["drag(on|ons)\\b"], "content": "lore", "use_regex": True,
                                         "enabled": True, "insertion_order": 1}]}).entries[0]
    assert e.use_regex and e.match("two DRAGONS") is not None and e.match("dragonfly") is None
    assert entry(keys=["drag(on|ons)\\b"]).match("two dragons") is None  # without use_regex: a substring
    assert entry(keys=["[unclosed"], use_regex=True).match("[unclosed") is None  # invalid: not a match
    assert entry(keys=["Dragon"], use_regex=True, case_sensitive=True).match("dragon") is None
    assert e.to_character_book()["use_regex"] is True


# -- hostile keys (issue 21, item 1) ---------------------------------------------------------------------
HANG_GUARD_S = 120  # a backtracking engine needs hours for these; the scan must come back at all


def run_apart(code: str) -> str:
    """Run ``code`` in a child Python (a backtracking regex holds the GIL: only a process can be given up on)."""
    import subprocess
    import sys

    from conftest import ROOT

    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the lorebook scan did not come back within {HANG_GUARD_S} s")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_nested_quantifier_key_and_a_self_matching_constant_entry_cost_no_time():
    """The reported cards: ``/(a+)+$/`` against a 40-character message (a backtracking engine: hours), and a
    constant entry whose text matches its own pattern with recursion on (every turn, with no user input)."""
    out = run_apart("""
import warnings; warnings.simplefilter("error")
from chatharuhi.prompting.lorebook import Lorebook, LoreEntry
book = Lorebook([LoreEntry("1", "lore", keys=["/(a+)+$/"]), LoreEntry("2", "a" * 40 + "!", constant=True,
                 keys=["/(a|aa)+$/"]), LoreEntry("3", "more", keys=["/^(\\\\w+\\\\s?)*$/"])], recursive=True)
print([a.entry.id for a in book.activate(["a" * 40 + "!", "x" * 5000 + "!"], budget_s=None)])
print([a.entry.id for a in book.activate(["aaaa"], budget_s=None)])
""")
    assert out.splitlines() == ["['2']", "['1', '2', '3']"]  # no match where there is none; matches where there is


def test_patterns_the_engine_refuses_are_skipped_with_a_warning_naming_the_entry():
    book = Lorebook([LoreEntry("7", "lore", keys=["/(a)\\1/"], name="echo"),
                     LoreEntry("8", "lore", keys=["/(?<!x)dragon/"]),
                     LoreEntry("9", "lore", keys=["/" + "a?" * 600 + "/"]),  # over the length limit
                     LoreEntry("10", "dragon lore", keys=["dragon"])])
    with pytest.warns(RuntimeWarning) as caught:
        fired = book.activate(["aa dragon"])
    said = " ".join(str(w.message) for w in caught)
    assert [a.entry.id for a in fired] == ["10"]
    assert "entry 7 ('echo')" in said and "entry 8" in said and "entry 9" in said and "limit is 1,000" in said
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per book, not on every turn
        book.activate(["aa dragon again"])


def test_keys_not_reached_within_the_time_budget_are_skipped_and_named():
    book = Lorebook([LoreEntry("1", "moon lore", keys=["moon"]), LoreEntry("2", "rx lore", keys=["/mo+n/"],
                                                                          name="pattern"),
                     LoreEntry("3", "always", constant=True)])
    fired, report = book.scan(["the moon"], budget_s=0.0)  # spent before any pattern runs
    assert [a.entry.id for a in fired] == ["1", "3"] and report.over_budget
    assert report.skipped == ["entry 2 ('pattern'): the key /mo+n/ was not tried"]
    with pytest.warns(RuntimeWarning, match=r"entry 2 \('pattern'\)"):
        book.activate(["the moon"], budget_s=0.0)
    assert [a.entry.id for a in book.activate(["the moon"])] == ["1", "2", "3"]  # the default budget is ample


def reference_activate(book, messages, recursive):
    """The scan entry by entry (the loop the index replaced), from ``LoreEntry.match``."""
    from chatharuhi.prompting.lorebook import MAX_RECURSION, Activation

    fired = {}
    live = [(i, e) for i, e in enumerate(book.entries) if e.enabled and e.content.strip()]
    for i, e in live:
        if e.constant:
            fired[i] = Activation(e, "constant")
            continue
        depth = book.scan_depth if e.scan_depth is None else e.scan_depth
        window = "\n".join(messages[-depth:]) if depth > 0 else ""
        key = e.match(window) if window else None
        if key is not None:
            fired[i] = Activation(e, key)
    for _ in range(MAX_RECURSION if recursive else 0):
        text = "\n".join(a.entry.content for a in fired.values() if not a.entry.prevent_recursion)
        new = {i: Activation(e, key, recursive=True) for i, e in live
               if i not in fired and not e.exclude_recursion and (key := e.match(text)) is not None}
        if not new:
            break
        fired.update(new)
    order = sorted(fired.items(), key=lambda p: (p[1].recursive, -p[1].entry.insertion_order, -p[1].entry.priority,
                                                 p[0]))
    return [(i, a.key, a.recursive) for i, a in order]


WORDS = ["dragon", "Dragon", "cat", "concat", "长门", "有希", "moon", "sword", "smith", "town", "a b", "x_y"]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_index_fires_what_matching_entry_by_entry_fires(data):
    keys = st.lists(st.sampled_from(WORDS + ["/drag(on|ons)\\b/i", "/^moon/m", "/长.希/", "/cat$/"]), max_size=3,
                    min_size=data.draw(st.sampled_from([0, 1, 1, 1])))
    content = st.lists(st.sampled_from(WORDS + ["lore"]), max_size=3).map(" ".join)
    entries = [LoreEntry(str(n), content=data.draw(content),
                         keys=data.draw(keys), secondary_keys=data.draw(keys), selective=data.draw(st.booleans()),
                         logic=data.draw(st.sampled_from(["and_any", "and_all", "not_any", "not_all"])),
                         constant=data.draw(st.booleans()) and data.draw(st.booleans()),
                         enabled=data.draw(st.booleans()) or data.draw(st.booleans()),
                         insertion_order=data.draw(st.integers(0, 3)), priority=data.draw(st.integers(0, 2)),
                         case_sensitive=data.draw(st.booleans()), whole_words=data.draw(st.booleans()),
                         scan_depth=data.draw(st.one_of(st.none(), st.integers(0, 4))),
                         prevent_recursion=data.draw(st.booleans()), exclude_recursion=data.draw(st.booleans()),
                         use_regex=data.draw(st.booleans()) and data.draw(st.booleans()))
               for n in range(data.draw(st.integers(0, 12)))]
    book = Lorebook(entries, scan_depth=data.draw(st.sampled_from([0, 1, 2, 2, 3])))
    text = st.lists(st.sampled_from(WORDS + [" ", "\n", ".", "!", "concatenate", "DRAGONS", "长门有希"]), max_size=8)
    messages = [" ".join(data.draw(text)) for _ in range(data.draw(st.sampled_from([0, 1, 2, 3, 3, 4])))]
    recursive = data.draw(st.sampled_from([False, True, True]))
    position = {id(e): i for i, e in enumerate(entries)}
    got = [(position[id(a.entry)], a.key, a.recursive)
           for a in book.activate(messages, recursive=recursive, budget_s=None)]
    assert got == reference_activate(book, messages, recursive)
