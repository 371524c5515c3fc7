"""ChatHaruhi drop-in: the snippets from ChatHaruhi 2.0's README and notebooks, written out unchanged.

They run against the stub OpenAI-compatible upstream (tests/helpers/openai_stub.py) and a local HTTP mirror of
the Hugging Face dataset ``silk-road/ChatHaruhi-RolePlaying`` (role JSONL files built here from the
real ChatHaruhi fixture data). Each must give a reply and put the right story into the prompt. The
environment does what a ChatHaruhi user's would (an API key, an endpoint); ``CHATHARUHI_EMBEDDER=hash``
keeps the index builds fast and deterministic.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from chatharuhi import ChatHaruhi
from chatharuhi.compat import BUILTIN_ROLES, ROLE_NAMES
from chatharuhi.errors import (
    BackendUnavailable,
    CharacterImportError,
    CharacterNotFound,
    EmbedderError,
    InputError,
    InvalidCharacter,
    ModelError,
    UnknownBackend,
    UnknownOption,
)
from chatharuhi.interop.haruhi_formats import float_array_to_base64
from conftest import FIXTURES, PACKAGED, ROOT, require_shared
from helpers.openai_stub import StubOpenAIServer

HARUHI = FIXTURES / "haruhi"
REPLY = "春日:「棒球？当然要参加，SOS团要拿冠军！」"
ROLE_REPO = Path("datasets") / "silk-road" / "ChatHaruhi-RolePlaying" / "resolve" / "main"


def role_rows(system_prompt: str, scenes: list[str], seed: int = 0) -> list[dict]:
    """A packaged role as ChatHaruhi ships it: a system-prompt row, a config row, scenes with vectors."""
    rng = np.random.default_rng(seed)
    rows = [{"text": system_prompt, "luotuo_openai": "system_prompt", "bge_zh_s15": "system_prompt"},
            {"text": "", "luotuo_openai": "config", "bge_zh_s15": "config"}]
    for text in scenes:
        rows.append({"text": text, "luotuo_openai": float_array_to_base64(rng.standard_normal(1536)),
                     "bge_zh_s15": float_array_to_base64(rng.standard_normal(512))})
    return rows


def write_jsonl(path: Path, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    for n, bad in enumerate(extra_lines):
        lines.insert(3 + 2 * n, bad)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def haruhi_scenes() -> list[str]:
    require_shared()
    return [p.read_text(encoding="utf-8") for p in sorted((HARUHI / "texts").glob("*.txt"))]


def marker_role(file: str) -> list[dict]:
    """A small role for every other built-in name: its prompt and scene carry the file name."""
    return role_rows(f"你正在扮演{file}。", [f"{file}:「我是{file}，这是我的台词。」\n旁白:{file}笑了"])


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local Hugging Face mirror: the 32 built-in role files and the dataset ``silk-road/linghuchong``."""
    require_shared()  # it serves the real haruhi role
    root = tmp_path / "hub"
    folder = root / ROLE_REPO
    for file in BUILTIN_ROLES:
        rows = role_rows((HARUHI / "system_prompt.txt").read_text(encoding="utf-8"), haruhi_scenes()) \
            if file == "haruhi" else marker_role(file)
        write_jsonl(folder / f"{file}.jsonl", rows)
    ling = root / "datasets" / "silk-road" / "linghuchong" / "resolve" / "main"
    write_jsonl(ling / "linghuchong.jsonl", role_rows(
        "你正在扮演令狐冲，华山派大弟子，洒脱不羁，爱喝酒。",
        ["小师妹:「冲哥。」\n令狐冲:「小师妹，你怎么来了？」", "令狐冲:「喝酒！今日不醉不归。」"]))
    (ling / "README.md").write_text("# 令狐冲", encoding="utf-8")
    api = root / "api" / "datasets" / "silk-road"
    api.mkdir(parents=True)
    (api / "linghuchong").write_text(json.dumps(
        {"id": "silk-road/linghuchong", "siblings": [{"rfilename": "README.md"}, {"rfilename": "linghuchong.jsonl"}]}),
        encoding="utf-8")
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("CHATHARUHI_HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("CHATHARUHI_EMBEDDER", "hash")
    yield hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def upstream(monkeypatch):
    """The stub OpenAI-compatible server, configured the way a ChatHaruhi user configures OpenAI."""
    with StubOpenAIServer(reply=REPLY) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("CHATHARUHI_EMBEDDER", "hash")
        yield stub


def sent(stub: StubOpenAIServer) -> str:
    """Every message of the last chat request, joined."""
    chats = [r for r in stub.requests if r.path.endswith("/chat/completions")]
    return "\n".join(m["content"] for m in chats[-1].body["messages"])


def included_texts(bot: ChatHaruhi) -> list[str]:
    return [bot.character.scene(i).text for i in bot.last_trace.included_scenes]


# -- the README's snippets, unchanged ----------------------------------------------------------------
@pytest.mark.shared
def test_snippet_role_name_openai(mirror, upstream):
    from chatharuhi import ChatHaruhi

    chatbot = ChatHaruhi( role_name = 'haruhi', llm = 'openai')

    response = chatbot.chat(role='阿虚', text = '我看新一年的棒球比赛要开始了！我们要去参加吗？')
    print(response)

    assert response == "棒球？当然要参加，SOS团要拿冠军！"
    prompt = sent(upstream)
    # a local character of that name comes first (the built-in haruhi): nothing is downloaded
    assert prompt.startswith((ROOT / "characters/haruhi/system_prompt.txt").read_text(encoding="utf-8")[:40])
    stories = included_texts(chatbot)
    assert stories and all(s in prompt for s in stories)
    assert "阿虚:「我看新一年的棒球比赛要开始了！我们要去参加吗？」" in prompt
    assert not [h for h in mirror if h.endswith(".jsonl")]
    # a role with no local character is ChatHaruhi's packaged one, downloaded once, then cached (aliases too)
    assert "你正在扮演Snape。" in ChatHaruhi(role_name='Snape', llm='openai').character.system_prompt
    downloads = [h for h in mirror if h.endswith("Snape.jsonl")]
    assert len(downloads) == 1
    ChatHaruhi(role_name='Snape', llm='openai')
    assert [h for h in mirror if h.endswith("Snape.jsonl")] == downloads


@pytest.mark.shared
def test_snippet_system_prompt_and_story_db(tmp_path, upstream):
    with zipfile.ZipFile(PACKAGED / "haruhi.zip") as z:  # wget + unzip of ChatHaruhi's real haruhi.zip
        z.extractall(tmp_path / "new_output")
    from chatharuhi import ChatHaruhi

    db_folder = str(tmp_path / 'new_output/content/haruhi')
    system_prompt = str(tmp_path / 'new_output/content/system_prompt.txt')

    chatbot = ChatHaruhi( system_prompt = system_prompt,\
                          llm = 'openai' ,\
                          story_db = db_folder)

    response = chatbot.chat(role='阿虚', text = 'Haruhi, 你好啊')
    print(response)

    assert response
    assert len(chatbot.index.scenes) == 172  # every document of the Chroma collection
    prompt = sent(upstream)
    assert (tmp_path / "new_output/content/system_prompt.txt").read_text(encoding="utf-8").strip()[:30] in prompt
    stories = included_texts(chatbot)
    assert stories and all(s in prompt for s in stories)


@pytest.mark.shared
def test_snippet_story_text_folder_debug_and_save_story_db(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATHARUHI_EMBEDDER", "hash")
    from chatharuhi import ChatHaruhi

    text_folder = str(HARUHI / 'texts')

    system_prompt = str(HARUHI / 'system_prompt.txt')

    chatbot = ChatHaruhi( system_prompt = system_prompt,\
                          llm = 'debug' ,\
                          story_text_folder = text_folder)

    reply = chatbot.chat(role='阿虚', text = 'Haruhi, 你好啊')

    chatbot.save_story_db(str(tmp_path / 'haruhi'))

    # debug echoes the prompt: system prompt, the retrieved scenes and the query, labelled by role
    assert reply.startswith("System: \n" + (HARUHI / "system_prompt.txt").read_text(encoding="utf-8").strip()[:20])
    assert "User: \n阿虚:「Haruhi, 你好啊」" in reply
    stories = included_texts(chatbot)
    assert stories and all(s in reply for s in stories)
    # the saved folder is a Chroma database that loads back with story_db=, vectors and all
    again = ChatHaruhi(system_prompt=system_prompt, llm='debug', story_db=str(tmp_path / 'haruhi'))
    assert len(again.index.scenes) == len(chatbot.index.scenes) == 172
    assert np.allclose(again.index.vectors, chatbot.index.vectors, atol=1e-5)


def test_snippet_role_from_hf_dataset(mirror, upstream):
    upstream.reply = "令狐冲:「小师妹，来喝一杯！」"
    from chatharuhi import ChatHaruhi

    chatbot = ChatHaruhi( role_from_hf = 'silk-road/linghuchong', \
                          llm = 'openai')

    response = chatbot.chat(role='小师妹', text = '冲哥。')
    print(response)

    assert response == "小师妹，来喝一杯！"
    prompt = sent(upstream)
    assert "你正在扮演令狐冲" in prompt and "小师妹:「冲哥。」\n令狐冲:「小师妹，你怎么来了？」" in prompt
    assert "/api/datasets/silk-road/linghuchong" in mirror  # the train split: the dataset's JSONL files


def test_snippet_role_from_hf_one_file(mirror, upstream):
    chatbot = ChatHaruhi(role_from_hf='silk-road/ChatHaruhi-RolePlaying/zhongli', llm='openai')
    assert chatbot.chat(role='旅行者', text='你好') and "我是zhongli，这是我的台词。" in sent(upstream)


def test_snippet_assign_dialogue_history(mirror, upstream):
    from chatharuhi import ChatHaruhi

    chatbot = ChatHaruhi( role_name = 'haruhi',\
                          llm = 'openai' )

    chatbot.dialogue_history = [('鲁鲁:「Haruhi，我是新同学鲁鲁」','春日:「你好呀鲁鲁」')]

    response = chatbot.chat(role='阿虚', text = '这个新同学是什么来头')
    print(response)

    prompt = sent(upstream)
    assert "鲁鲁:「Haruhi，我是新同学鲁鲁」" in prompt and "春日:「你好呀鲁鲁」" in prompt
    assert [t.user_role for t in chatbot.history] == ["鲁鲁", "阿虚"]
    assert chatbot.dialogue_history == [("鲁鲁:「Haruhi，我是新同学鲁鲁」", "春日:「你好呀鲁鲁」"),
                                        ("阿虚:「这个新同学是什么来头」", f"春日:「{response}」")]
    chatbot.dialogue_history = []  # assigning replaces the conversation
    assert chatbot.history == [] and chatbot.dialogue_history == []


def test_snippet_generate_prompt_then_append_response(mirror, monkeypatch):
    # ChatHaruhi's local-model notebooks: build the prompt, ask your own model, hand the answer back
    chatbot = ChatHaruhi(role_name='haruhi', llm='debug')
    prompt = chatbot.generate_prompt(role='阿虚', text='我看新一年的棒球比赛要开始了！我们要去参加吗？')
    response = '春日:「当然！」'  # what the user's own model answered
    chatbot.append_response(response)

    assert prompt.endswith("阿虚:「我看新一年的棒球比赛要开始了！我们要去参加吗？」\n")
    assert any("棒球" in s and s in prompt for s in included_texts(chatbot))
    assert chatbot.dialogue_history == [("阿虚:「我看新一年的棒球比赛要开始了！我们要去参加吗？」", "春日:「当然！」")]
    messages = chatbot.generate_messages(role='阿虚', text='那我们去哪训练？')
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2].content == "春日:「当然！」"
    with pytest.raises(InputError, match="generate_messages"):
        ChatHaruhi(role_name='haruhi', llm='debug').append_response('春日:「？」')


@pytest.mark.shared
def test_snippet_role_from_jsonl(tmp_path, upstream):
    path = write_jsonl(tmp_path / "haruhi.jsonl", role_rows((HARUHI / "system_prompt.txt").read_text(encoding="utf-8"),
                                                             haruhi_scenes()))
    chatbot = ChatHaruhi(role_from_jsonl=str(path), llm='openai')
    response = chatbot.chat(role='阿虚', text='我看新一年的棒球比赛要开始了！我们要去参加吗？')
    assert response and any("棒球" in s and s in sent(upstream) for s in included_texts(chatbot))


# -- every built-in role name ---------------------------------------------------------------------------
def test_the_table_holds_chatharuhis_32_roles():
    assert len(BUILTIN_ROLES) == 32
    assert ROLE_NAMES["凉宫春日"] == ROLE_NAMES["Haruhi"] == "haruhi"
    assert ROLE_NAMES["Professor McGonagall"] == "McGonagall" and ROLE_NAMES["雷电将军"] == "raidenShogun"
    assert len(ROLE_NAMES) == 76  # every key of ChatHaruhi 1.0.9's role_name_Haruhiu (checked against it)


def test_every_role_name_and_alias_loads_its_role(mirror):
    local = {"haruhi"}  # built-in characters answer their role names and aliases without a download
    for name, file in sorted(ROLE_NAMES.items()):
        bot = ChatHaruhi(role_name=name, llm="debug")
        expected = "凉宫春日" if file == "haruhi" else f"你正在扮演{file}。"
        assert expected in bot.character.system_prompt, name
        assert (bot.character.path.parent == ROOT / "characters") == (file in local), name
    files = {h.rsplit("/", 1)[-1] for h in mirror if h.endswith(".jsonl")}
    assert files == {f"{f}.jsonl" for f in BUILTIN_ROLES if f not in local}  # each downloaded once, then cached
    assert len([h for h in mirror if h.endswith(".jsonl")]) == 32 - len(local)


# -- budgets, search, format, environment ------------------------------------------------------------------
def test_max_len_story_history_and_k_search(mirror):
    bot = ChatHaruhi(role_name="haruhi", llm="debug", max_len_story=300, max_len_history=50, k_search=4)
    assert (bot.budget.story_tokens, bot.budget.history_tokens, bot.k_search, bot.top_k) == (300, 50, 4, 4)
    bot.chat("我们去找外星人吧", role="阿虚")
    trace = bot.last_trace
    assert trace.story_budget == 300 and trace.parts.get("story", 0) <= 300
    assert 1 <= len(trace.included_scenes) <= 4
    bot.k_search = 1  # the attribute is live, as in ChatHaruhi
    bot.chat("棒球比赛呢？", role="阿虚")
    assert len(bot.last_trace.included_scenes) == 1
    with pytest.raises(InputError, match="k_search"):
        bot.k_search = -1
    with pytest.raises(InputError, match="story_tokens=100 and max_len_story=200"):
        ChatHaruhi(role="haruhi", llm="debug", embedder="hash", story_tokens=100, max_len_story=200)


def test_old_attributes_read_and_assign_or_refuse(mirror):
    bot = ChatHaruhi(role_name="haruhi", llm="debug")
    bot.max_len_story, bot.max_len_history = 200, 30  # ChatHaruhi users set these after construction
    assert (bot.budget.story_tokens, bot.budget.history_tokens) == (200, 30)
    bot.chat("棒球", role="阿虚")
    assert bot.last_trace.story_budget == 200 and bot.last_trace.parts.get("story", 0) <= 200
    bot.system_prompt = "你是凉宫春日。只说一句话。"
    assert bot.chat("你好", role="阿虚").startswith("System: \n你是凉宫春日。只说一句话。")
    assert bot.llm is bot.backend and bot.db is bot.index and bot.embedding is bot.embedder
    assert bot.tokenizer("凉宫春日") == bot.counter.count("凉宫春日") > 0
    for name in ("llm", "db", "embedding", "tokenizer", "story_prefix_prompt", "narrator", "dialogue_divide_token"):
        with pytest.raises(InputError, match=f"bot.{name} = "):
            setattr(bot, name, "x")  # would be a silent no-op otherwise
    with pytest.raises(InputError, match="story_tokens"):
        bot.max_len_story = -5


def test_reply_format_plain_by_default_or_chatharuhis(mirror, upstream):
    plain = ChatHaruhi(role_name="haruhi", llm="openai")
    old = ChatHaruhi(role_name="haruhi", llm="openai", reply_format="chatharuhi")
    assert plain.chat("要去吗？", role="阿虚") == "棒球？当然要参加，SOS团要拿冠军！"
    assert old.chat("要去吗？", role="阿虚") == "春日:「棒球？当然要参加，SOS团要拿冠军！」"
    assert old.history[-1].reply == plain.history[-1].reply  # history keeps the words either way
    with pytest.raises(UnknownOption, match="did you mean 'chatharuhi'"):
        ChatHaruhi(role="haruhi", llm="debug", embedder="hash", reply_format="chatharhui")


def test_openai_api_base_is_honoured_when_openai_base_url_is_unset(monkeypatch, mirror):
    with StubOpenAIServer(reply=REPLY) as old, StubOpenAIServer(reply="春日:「新的」") as new:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_API_BASE", old.base_url)
        reply = ChatHaruhi(role_name="haruhi", llm="openai").chat("你好", role="阿虚")
        assert reply == "棒球？当然要参加，SOS团要拿冠军！"
        monkeypatch.setenv("OPENAI_BASE_URL", new.base_url)  # the current name wins when both are set
        assert ChatHaruhi(role_name="haruhi", llm="openai").chat("你好", role="阿虚") == "新的"
        assert len([r for r in old.requests if r.method == "POST"]) == 1


def test_verbose_reports_loading_and_each_turn(mirror, capsys):
    bot = ChatHaruhi(role_name="haruhi", llm="debug", verbose=True)
    bot.chat("你好", role="阿虚")
    err = capsys.readouterr().err
    assert f"haruhi: {len(bot.index.scenes)} scenes" in err and "scene(s) in the prompt" in err
    quiet = ChatHaruhi(role_name="haruhi", llm="debug")
    quiet.chat("你好", role="阿虚")
    assert capsys.readouterr().err == ""


def test_db_type_chroma_keeps_the_scenes_in_chroma(mirror):
    from chatharuhi.retrieval.chroma import ChromaIndex

    bot = ChatHaruhi(role_name="haruhi", llm="debug", db_type="chroma")
    assert isinstance(bot.index, ChromaIndex) and len(bot.index.scenes) >= len(bot.character.scenes)
    assert bot.chat("棒球", role="阿虚")
    with pytest.raises(UnknownOption, match="did you mean 'chroma'"):
        ChatHaruhi(role="haruhi", llm="debug", embedder="hash", db_type="chorma")


def test_vectors_shipped_in_a_role_file_are_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # api.openai.com: never reached, the vectors are on file
    rows = role_rows("你正在扮演凉宫春日。", haruhi_scenes()[:20], seed=7)
    path = write_jsonl(tmp_path / "haruhi.jsonl", rows)
    bot = ChatHaruhi(role_from_jsonl=str(path), llm="debug", embedding="luotuo_openai")
    assert bot.embedder.id == "openai:text-embedding-ada-002"
    shipped = np.stack([np.frombuffer(__import__("base64").b64decode(r["luotuo_openai"]), ">f4") for r in rows[2:]])
    shipped /= np.linalg.norm(shipped, axis=1, keepdims=True)
    by_text = {r["text"].strip(): v for r, v in zip(rows[2:], shipped)}
    assert np.allclose(bot.index.vectors, [by_text[s.text] for s in bot.index.scenes], atol=1e-6)


# -- llm= names ----------------------------------------------------------------------------------------------
def test_llm_debug_echoes_the_prompt(mirror):
    bot = ChatHaruhi(role_name="haruhi", llm="debug")
    reply = bot.chat("阿虚:「你好」 is not parsed here", role="阿虚")
    assert reply.startswith("System: \n") and reply.count("User: \n") == 1


@pytest.mark.parametrize("name,setting", [("GLMPro", "open.bigmodel.cn"), ("ernie3.5", "qianfan"),
                                          ("ernie4.0", "qianfan"), ("ernie", "qianfan"), ("spark", "xf-yun"),
                                          ("BaiChuanAPIGPT", "baichuan-ai")])
def test_hosted_apis_name_the_equivalent_setting(mirror, name, setting):
    with pytest.raises(BackendUnavailable, match=f"llm='openai', base_url='https://[^']*{setting}"):
        ChatHaruhi(role_name="haruhi", llm=name)


@pytest.mark.parametrize("name,model", [("BaiChuan2GPT", "baichuan-inc/Baichuan2-13B-Chat"),
                                        ("ChatGLM2GPT", "THUDM/chatglm2-6b"),
                                        ("Qwen118k2GPT", "Qwen/Qwen-1_8B-Chat"),
                                        ("ChatHaruhi_RolePlaying_qwen_7b", "silk-road/ChatHaruhi_RolePlaying_qwen_7b")])
def test_local_models_map_to_the_transformers_backend(mirror, monkeypatch, name, model):
    from chatharuhi.backends import registry

    seen = {}

    def fake(**options):
        seen.update(options)
        raise ModelError(f"cannot load the model {options['model']!r}: offline")

    registry._load_entry_points()
    monkeypatch.setitem(registry._registry, "transformers", fake)
    monkeypatch.setitem(registry._declared, "transformers", registry.backend_options("debug") | {
        "model", "trust_remote_code", "adapters", "adapter"})
    with pytest.raises(ModelError, match=model):
        ChatHaruhi(role_name="haruhi", llm=name)
    assert seen["model"] == model and seen["trust_remote_code"] is True


def test_an_unknown_llm_name_suggests_the_closest(mirror):
    with pytest.raises(UnknownBackend, match="did you mean 'GLMPro'"):
        ChatHaruhi(role_name="haruhi", llm="GLMpro")


# -- bad input ---------------------------------------------------------------------------------------------
def test_an_unknown_role_name_is_an_error_with_close_matches_never_haruhi(mirror):
    with pytest.raises(CharacterNotFound) as info:
        ChatHaruhi(role_name="harhui", llm="debug")
    assert "did you mean 'haruhi'" in str(info.value)
    with pytest.raises(CharacterNotFound, match="Zhongli|zhongli"):
        ChatHaruhi(role_name="Zhongly", llm="debug")
    assert not [h for h in mirror if h.endswith(".jsonl")]  # nothing was downloaded in its place


def test_a_jsonl_with_bad_lines_is_read_with_a_counted_warning_or_refused(tmp_path, upstream):
    rows = role_rows("你正在扮演凉宫春日。", haruhi_scenes()[:5])
    path = write_jsonl(tmp_path / "broken.jsonl", rows, extra_lines=("{not json", "[1, 2]"))
    with pytest.warns(RuntimeWarning, match=r"skipped 2 line\(s\).*lines 4, 6.*strict_jsonl=True"):
        bot = ChatHaruhi(role_from_jsonl=str(path), llm="openai")
    assert len(bot.character.scenes) == 5 and bot.chat("你好", role="阿虚")
    with pytest.raises(CharacterImportError, match="line 4: invalid JSON"):
        ChatHaruhi(role_from_jsonl=str(path), llm="openai", strict_jsonl=True)


def test_story_db_that_is_not_a_chroma_folder(tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("春日:「你好」", encoding="utf-8")
    with pytest.raises(InvalidCharacter, match="not a Chroma folder.*story_text_folder="):
        ChatHaruhi(system_prompt="你是春日", story_db=str(tmp_path / "texts"), llm="debug", embedder="hash")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "chroma.sqlite3").write_bytes(b"not a database at all")
    with pytest.raises(CharacterImportError, match="cannot be read as a Chroma database"):
        ChatHaruhi(system_prompt="你是春日", story_db=str(tmp_path / "fake"), llm="debug", embedder="hash")


def test_embedding_whose_package_is_missing(monkeypatch, mirror):
    import sys

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if not installed
    with pytest.raises(EmbedderError, match=r"pip install 'chatharuhi\[st\]'"):
        ChatHaruhi(role_name="haruhi", llm="debug", embedding="bge_zh")


def test_embedding_model_not_downloaded_says_how_to_get_it(mirror):
    with pytest.raises(EmbedderError, match="huggingface-cli download BAAI/bge-small-en-v1.5"):
        ChatHaruhi(role_name="haruhi", llm="debug", embedding="bge_en")  # HF_HUB_OFFLINE=1 in tests


def test_luotuo_openai_without_a_key_says_what_to_set(mirror):
    with pytest.raises(EmbedderError, match="luotuo_openai.*OPENAI_API_KEY"):
        ChatHaruhi(role_name="haruhi", llm="debug", embedding="luotuo_openai")


@pytest.mark.shared
def test_conflicting_or_incomplete_sources_are_refused(tmp_path, mirror):
    with pytest.raises(InputError, match="story_text_folder= needs system_prompt="):
        ChatHaruhi(story_text_folder=str(HARUHI / "texts"), llm="debug")
    with pytest.raises(InputError, match="system_prompt= needs story_text_folder="):
        ChatHaruhi(system_prompt="你是春日", llm="debug")
    with pytest.raises(InputError, match="role_name and role_from_hf"):
        ChatHaruhi(role_name="haruhi", role_from_hf="silk-road/linghuchong", llm="debug")
    with pytest.raises(InputError, match="embedding=.*embedder="):
        ChatHaruhi(role_name="haruhi", llm="debug", embedding="bge_zh", embedder="hash")
    with pytest.raises(UnknownOption, match="did you mean 'bge_zh'"):
        ChatHaruhi(role_name="haruhi", llm="debug", embedding="bge-zh")
    with pytest.raises(InvalidCharacter, match="does not exist"):
        ChatHaruhi(system_prompt=str(tmp_path / "nope.txt"), story_text_folder=str(HARUHI / "texts"), llm="debug")
    with pytest.raises(InputError, match=r"dialogue_history\[0\]"):
        ChatHaruhi(role_name="haruhi", llm="debug").dialogue_history = [("鲁鲁:「嗨」", None)]
