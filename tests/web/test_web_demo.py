"""The web demo's handlers, called directly (no browser): picking, streaming, regenerate, swipes, stop, edit,
delete, chats, settings, new characters, ownership, and serving off loopback."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("gradio", reason="the web demo needs the [web] extra: pip install 'chatharuhi[web]'")

from chatharuhi.backends.scripted import ScriptedBackend  # noqa: E402
from chatharuhi.errors import BackendUnavailable, InputError  # noqa: E402
from chatharuhi.sessions import SessionStore  # noqa: E402
from chatharuhi.sessions.owners import NotYourChat, owner_key  # noqa: E402
from chatharuhi.web.app import Tab, WebDemo
from chatharuhi.web.demo import build_app  # noqa: E402
from chatharuhi.web.edit import Stale  # noqa: E402
from chatharuhi.web.render import bubble, literal  # noqa: E402
from chatharuhi.web.state import Settings  # noqa: E402
from conftest import ROOT  # noqa: E402

HARUHI = "凉宫春日"


class Recording(ScriptedBackend):
    """A scripted backend that also records the options of every call (temperature, seed)."""

    seed = 1234  # like the local backends: a fixed default seed

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.options: list[dict] = []

    def stream(self, messages, **options):
        self.options.append(options)
        yield from super().stream(messages, **options)


@pytest.fixture
def backend():
    # each reply says which call it is, so a regenerated reply differs from the first
    b = Recording([lambda m: f"第{len(b.calls)}次回答：外星人今天放假了（叹气）。"], chunk_size=2)
    return b


def answer(n: int) -> str:
    return f"第{n}次回答：外星人今天放假了（叹气）。"


@pytest.fixture
def store(tmp_path):
    with SessionStore(tmp_path / "s.sqlite3") as s:
        yield s


@pytest.fixture
def demo(backend, store):
    return WebDemo(backend=backend, sessions=store, embedder="hash")


def send(demo, text, tab, token, role="阿虚"):
    views = list(demo.send(text, role, tab, token))
    return views, views[-1]


def opened(demo):
    view = demo.start("")
    return view["tab"], view["browser"]


def texts(view):
    """The chat's bubbles as (speaker, text) with the Markdown name line split off."""
    out = []
    for m in view["chat"]:
        name, _, text = m["content"].partition("\n")
        out.append((name.strip("*"), text))
    return out


def test_start_shows_the_default_character_with_its_greeting_and_hands_out_a_token(demo):
    view = demo.start("")
    assert view["character"] == "haruhi" and view["tab"] == Tab("haruhi", None, "阿虚", owner=view["tab"].owner)
    assert view["tab"].owner == owner_key(view["browser"])  # whose own characters this tab may see
    assert texts(view)[0][0] == HARUHI and "SOS团" in texts(view)[0][1]
    assert view["card"].startswith(f"### {HARUHI}") and "SOS团团长" in view["card"]
    assert view["user_role"] == "阿虚" and view["sessions"] == ([], None)
    assert view["trace"] is None and view["avatar"] is not None and view["avatar"].suffix == ".png"
    assert len(view["browser"]) >= 32 and demo.start(view["browser"])["browser"] == view["browser"]
    assert demo.start("")["browser"] != view["browser"]  # every browser gets its own
    labels = dict((v, k) for k, v in demo.choices())
    assert labels["haruhi"] == "凉宫春日 (haruhi)" and labels["wukong"] == "孙悟空 (wukong)"


def test_bubbles_carry_names_and_format_stage_directions():
    assert bubble("春日", "好啊（笑）走吧") == "**春日**\n好啊<em>（笑）</em>走吧"
    assert bubble("Holmes", "Quite. (lights his pipe)") == "**Holmes**\nQuite. <em>(lights his pipe)</em>"


def test_picking_a_character_opens_its_greeting_and_keeps_a_typed_name(demo):
    tab, _ = opened(demo)
    view = demo.pick("wukong", "阿虚", tab)  # the old character's default name gives way to the new one's
    assert view["tab"] == Tab("wukong", None, "唐僧", owner=view["tab"].owner) and view["user_role"] == "唐僧"
    assert "俺老孙" in view["chat"][0]["content"] and "孙悟空" in view["card"]
    view = demo.pick("haruhi", "小明", view["tab"])  # a name the user typed is kept
    assert view["user_role"] == "小明"
    with pytest.raises(InputError, match="unknown character 'nobody'.*haruhi"):
        demo.pick("nobody", "", tab)


def test_avatar_from_the_character_folder_and_a_huge_one_is_refused_plainly(tmp_path, backend, store):
    from PIL import Image

    folder = tmp_path / "chars" / "yuki"
    shutil.copytree(ROOT / "characters" / "haruhi", folder)
    (folder / "avatar.png").unlink(missing_ok=True)
    (folder / "character.toml").write_text('name = "yuki"\ndisplay_name = "长门有希"\nspeaker = "春日"\n'
                                           'greeting = "……"\ndescription = "文艺部唯一的部员。"\n', encoding="utf-8")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / "avatar.png")
    demo = WebDemo(backend=backend, sessions=store, embedder="hash", characters_dir=tmp_path / "chars")
    view = demo.pick("yuki", "", Tab())
    with Image.open(view["avatar"]) as img:
        assert img.size == (8, 8) and img.convert("RGB").getpixel((0, 0)) == (200, 30, 30)
    assert texts(view) == [("长门有希", "……")] and "文艺部" in view["card"]
    (folder / "avatar.png").write_bytes(b"\x89PNG" + b"\0" * (20 * 2**20))  # a 20 MB "avatar"
    view = demo.pick("yuki", "", Tab())
    assert view["avatar"] is None and "is 20.0 MB; the limit is 5 MB" in view["card"]


def test_send_streams_then_commits_the_turn_and_claims_the_chat(demo, store):
    tab, token = opened(demo)
    views, last = send(demo, "  我们去找外星人吧  ", tab, token)
    partial = [v["chat"][-1]["content"] for v in views if "chat" in v]
    assert partial[0] == f"**{HARUHI}**\n" and len(set(partial)) > 3  # empty bubble, then growing text
    shown = "第1次回答：外星人今天放假了<em>（叹气）</em>。"
    assert texts(last)[-2:] == [("阿虚", "我们去找外星人吧"), (HARUHI, shown)]
    assert views[0]["message"] == ""  # the box is cleared as soon as the message is sent
    sid = last["tab"].session_id
    assert demo.owners.owns(sid, token) and demo.owners.sessions(token) == [sid]
    session = store.get(sid)
    assert (session.character, session.user_role, session.title) == ("haruhi", "阿虚", "我们去找外星人吧")
    assert [(t.user_role, t.text, t.reply) for t in store.turns(sid)] == [("阿虚", "我们去找外星人吧", answer(1))]
    assert last["sessions"][1] == sid and last["sessions"][0][0][1] == sid and last["swipes"] == "1/1"
    _, last2 = send(demo, "那明天呢？", last["tab"], token, role="小明")
    assert last2["tab"].session_id == sid and len(store.turns(sid)) == 2 and store.turns(sid)[1].user_role == "小明"


def test_an_empty_message_or_no_token_is_refused_and_creates_nothing(demo, store):
    with pytest.raises(InputError, match="empty message"):
        list(demo.send("   ", "阿虚", Tab("haruhi", None, "阿虚"), "x" * 40))
    with pytest.raises(InputError, match="reload the page"):
        list(demo.send("你好", "阿虚", Tab("haruhi", None, "阿虚"), ""))
    assert store.list() == []


def test_a_failed_stream_keeps_nothing(demo, backend, store):
    tab, token = opened(demo)
    _, last = send(demo, "第一句", tab, token)
    backend.fail_after = 2
    with pytest.raises(ConnectionError):
        list(demo.send("第二句", "阿虚", last["tab"], token))
    assert [t.text for t in store.turns(last["tab"].session_id)] == ["第一句"]


def test_regenerate_samples_anew_and_swipes_browse_the_alternatives(demo, backend, store):
    tab, token = opened(demo)
    _, last = send(demo, "今天做什么？", tab, token)
    assert "seed" not in backend.options[-1]
    views = list(demo.regenerate(last["tab"], token))
    assert texts(views[0])[-1] == (HARUHI, "")  # the old reply is replaced while streaming
    assert texts(views[-1])[-1][1].startswith("第2次回答") and views[-1]["swipes"] == "2/2"
    assert backend.options[-1]["seed"] != 1234 and backend.options[-1]["temperature"] >= 0.7  # sampled anew
    sid = last["tab"].session_id
    assert store.alternatives(sid, 0) == [answer(1), answer(2)]
    tab = views[-1]["tab"]
    back = list(demo.edits.swipe(-1, tab, token))[-1]  # ◀: the first reply is shown and is what history keeps
    assert back["swipes"] == "1/2" and store.turns(sid)[0].reply == answer(1)
    assert list(demo.edits.swipe(-1, back["tab"], token))[-1]["status"] == "this is the first reply"
    fwd = list(demo.edits.swipe(+1, back["tab"], token))[-1]
    assert fwd["swipes"] == "2/2" and store.turns(sid)[0].reply == answer(2)
    new = list(demo.edits.swipe(+1, fwd["tab"], token))[-1]  # ▶ past the newest: a third reply is generated
    assert new["swipes"] == "3/3" and store.turns(sid)[0].reply == answer(3)
    _, cont = send(demo, "好", new["tab"], token)
    assert answer(3) in backend.calls[-1][-1].content or any(answer(3) in m.content for m in backend.calls[-1])
    with pytest.raises(InputError, match="nothing to regenerate"):
        list(demo.regenerate(Tab("haruhi", None, "阿虚"), token))


def test_the_settings_panel_temperature_and_budgets_reach_the_model(demo, backend, store):
    tab, token = opened(demo)
    view = demo.settings.save_settings("我是新来的转学生。", 0.3, 400, 300, tab)
    assert view["tab"].settings == Settings("我是新来的转学生。", 0.3, 400, 300)
    _, last = send(demo, "你好", view["tab"], token)
    assert backend.options[-1]["temperature"] == 0.3
    bot = demo.bot(last["tab"].session_id)
    assert (bot.budget.story_tokens, bot.budget.history_tokens) == (400, 300)
    assert "我是新来的转学生。" in backend.calls[-1][0].content  # the persona reached the system prompt
    assert last["trace"]["story_budget"] == 400
    with pytest.raises(InputError, match="temperature must be between 0.0 and 2.0"):
        demo.settings.save_settings("", 5, None, None, tab)
    assert "backend **scripted**" in demo.settings.backend_info()


def test_the_settings_panel_shows_the_values_in_use_and_saving_them_unchanged_keeps_the_defaults(demo, backend):
    """The fields used to show 0 for "default": a user who saved only a persona got a history budget of 0
    and a character that forgot the conversation. 设置面板显示实际使用的值。"""
    tab, token = opened(demo)
    shown = demo.settings.settings_view(tab)
    default = demo.settings.setting_defaults()
    assert shown["story_tokens"] == default["story_tokens"] > 0
    assert shown["history_tokens"] == default["history_tokens"] > 0
    view = demo.settings.save_settings("我是新来的转学生。", shown["temperature"], shown["story_tokens"],
                              shown["history_tokens"], tab)
    assert view["tab"].settings == Settings("我是新来的转学生。", None, None, None)
    _, last = send(demo, "你好", view["tab"], token)
    bot = demo.bot(last["tab"].session_id)
    assert bot.budget.history_tokens == default["history_tokens"] and last["trace"]["history_budget"] > 0
    chosen = demo.settings.save_settings("", None, 0, 250, last["tab"])["tab"]  # 0 is a real choice: no scenes
    assert (chosen.settings.story_tokens, chosen.settings.history_tokens) == (0, 250)
    assert demo.settings.settings_view(chosen)["story_tokens"] == 0


def test_stop_shows_the_partial_reply_and_keeps_it_only_on_request(demo, backend, store):
    tab, token = opened(demo)
    stream = demo.send("讲个故事", "阿虚", tab, token)
    first = next(stream)
    next(stream), next(stream), next(stream)  # a few chunks arrive, then the user presses Stop
    stream.close()  # Gradio cancels the generator: the reply is never completed
    sid = first["tab"].session_id
    assert store.turns(sid) == []
    view = demo.edits.stop(first["tab"])
    assert view["partial"] is True and "not kept unless" in view["status"]
    shown = texts(view)[-1][1]
    assert shown.endswith(" …") and answer(1).startswith(shown[:-2].replace("<em>", ""))
    assert store.turns(sid) == []  # stopping stores nothing
    kept = demo.edits.keep_partial(first["tab"], token)
    assert kept["partial"] is False and len(store.turns(sid)) == 1
    assert answer(1).startswith(store.turns(sid)[0].reply) and store.turns(sid)[0].reply != answer(1)
    assert demo.edits.keep_partial(first["tab"], token)["status"] == "there is no stopped reply to keep"
    # stopped before anything came: the typed text goes back into the box
    stream = demo.send("再来一个", "阿虚", kept["tab"], token)
    next(stream)
    stream.close()
    again = demo.edits.stop(kept["tab"])
    assert again["message"] == "再来一个" and again["partial"] is False and len(store.turns(sid)) == 1


class CutShort(ScriptedBackend):
    """Every reply ends at the length limit, as the upstream reports it."""

    def stream(self, messages, *, info=None, **options):
        yield from super().stream(messages, **options)
        if info is not None:
            info.finish_reason = "length"


def test_an_edited_or_deleted_cut_reply_loses_its_cut_note(store):
    demo = WebDemo(backend=CutShort(["外星人今天放假了，因为"]), sessions=store, embedder="hash")
    tab, token = opened(demo)
    _, cut = send(demo, "第一句", tab, token)
    assert "cut at the maximum reply length" in cut["chat"][-1]["content"]
    view = demo.edits.edit_message(2, "春日自己说完了。", cut["tab"], token)
    assert "cut at the maximum reply length" not in view["chat"][-1]["content"]
    assert "cut at the maximum reply length" not in demo.transcript.messages(view["tab"])[-1]["content"]
    _, again = send(demo, "第二句", view["tab"], token)
    assert "cut at the maximum reply length" in again["chat"][-1]["content"]
    view = demo.edits.delete_message(4, again["tab"], token)
    _, third = send(demo, "第三句", view["tab"], token)
    assert "cut at the maximum reply length" in third["chat"][-1]["content"]  # each new cut says so again


def test_edit_and_delete_any_message_and_a_stale_tab_is_refused(demo, store):
    tab, token = opened(demo)
    _, a = send(demo, "第一句", tab, token)
    _, b = send(demo, "第二句", a["tab"], token)
    _, c = send(demo, "第三句", b["tab"], token)
    tab, sid = c["tab"], c["tab"].session_id
    # bubbles: 0 greeting, 1 user, 2 reply, 3 user, 4 reply, ...
    assert demo.edits.select_message(3, tab)["edit_text"] == "第二句"
    assert demo.edits.select_message(4, tab)["edit_text"] == answer(2)
    view = demo.edits.edit_message(3, "第二句（改）", tab, token)
    assert [t.text for t in store.turns(sid)] == ["第一句", "第二句（改）", "第三句"]  # later turns stay
    view = demo.edits.edit_message(2, "春日改过的回答", view["tab"], token)
    assert store.turns(sid)[0].reply == "春日改过的回答" and store.alternatives(sid, 0)[0] == answer(1)
    view = demo.edits.delete_message(4, view["tab"], token)
    assert [t.text for t in store.turns(sid)] == ["第一句", "第三句"] and "deleted exchange 2" in view["status"]
    with pytest.raises(InputError, match="greeting"):
        demo.edits.edit_message(0, "x", view["tab"], token)
    with pytest.raises(InputError, match="no message 9"):
        demo.edits.delete_message(8, view["tab"], token)
    with pytest.raises(InputError, match="empty"):
        demo.edits.edit_message(1, "  ", view["tab"], token)
    # two tabs on one chat: the second one edits after the first changed it -> refused, reloaded, nothing lost
    other = demo.resume(sid, token)["tab"]
    after = demo.edits.edit_message(1, "第一句，甲改", view["tab"], token)
    with pytest.raises(Stale) as info:
        demo.edits.edit_message(1, "第一句，乙改", other, token)
    assert [t.text for t in store.turns(sid)] == ["第一句，甲改", "第三句"]
    assert ("阿虚", "第一句，甲改") in texts(info.value.view) and "another tab" in str(info.value)
    demo.edits.edit_message(1, "第一句，乙改", info.value.view["tab"], token)  # after the reload it applies
    with pytest.raises(Stale):  # regenerating from a stale view would replace a reply this tab never saw
        list(demo.regenerate(other, token))
    assert store.turns(sid)[0].text == "第一句，乙改" and after["status"].startswith("message 2 edited")


def test_rename_delete_and_export_a_chat(demo, store, tmp_path):
    import json

    tab, token = opened(demo)
    _, last = send(demo, "你好", tab, token)
    tab, sid = last["tab"], last["tab"].session_id
    view = demo.chats.rename_chat("  周末的  计划 ", tab, token)
    assert store.get(sid).title == "周末的 计划" and view["sessions"][0][0][0].split(" · ")[1] == "周末的 计划"
    md = demo.chats.export_chat("markdown", view["tab"], token)["export_file"]
    text = open(md, encoding="utf-8").read()
    assert text.startswith(f"# {HARUHI} — 周末的 计划") and "**阿虚**: 你好" in text
    assert f"**{HARUHI}**: {answer(1)}" in text
    jl = demo.chats.export_chat("jsonl", view["tab"], token)["export_file"]
    lines = [json.loads(x) for x in open(jl, encoding="utf-8")]
    assert lines[0]["session"]["id"] == sid and lines[1]["reply"] == answer(1) and lines[1]["trace"]
    with pytest.raises(InputError, match="unknown export format 'pdf'"):
        demo.chats.export_chat("pdf", view["tab"], token)
    gone = demo.chats.delete_chat(view["tab"], token)
    assert gone["tab"].session_id is None and gone["sessions"] == ([], None) and store.list() == []
    assert demo.owners.sessions(token) == []


def test_another_browser_can_neither_open_nor_change_a_chat_by_its_id(demo, store):
    """Issue 15 §5: a session id alone (as seen in /config or guessed) gives nothing."""
    tab, alice = opened(demo)
    _, last = send(demo, "我的秘密", tab, alice)
    sid = last["tab"].session_id
    _, mallory = opened(demo)
    assert demo.chats.session_choices(mallory) == []
    for attempt in (lambda: demo.resume(sid, mallory), lambda: demo.resume(sid, ""),
                    lambda: demo.resume(sid, [sid]),  # the old client-side list of ids is no credential
                    lambda: list(demo.send("我也来", "m", Tab("haruhi", sid, "m"), mallory)),
                    lambda: list(demo.regenerate(Tab("haruhi", sid, "m"), mallory)),
                    lambda: demo.edits.edit_message(1, "改掉", Tab("haruhi", sid, "m"), mallory),
                    lambda: demo.edits.delete_message(1, Tab("haruhi", sid, "m"), mallory),
                    lambda: demo.chats.rename_chat("x", Tab("haruhi", sid, "m"), mallory),
                    lambda: demo.chats.delete_chat(Tab("haruhi", sid, "m"), mallory),
                    lambda: demo.chats.export_chat("jsonl", Tab("haruhi", sid, "m"), mallory)):
        with pytest.raises(NotYourChat, match="not one of this browser's chats"):
            attempt()
    assert [(t.text, t.reply) for t in store.turns(sid)] == [("我的秘密", answer(1))] and store.get(sid).title
    assert demo.resume(sid, alice)["chat"][-1]["content"].endswith("。")


def test_resume_after_a_restart_with_the_same_browser_token(backend, store):
    demo = WebDemo(backend=backend, sessions=store, embedder="hash")
    token = demo.start("")["browser"]
    tab = demo.pick("wukong", "", Tab())["tab"]
    _, last = send(demo, "悟空，前面有妖怪吗？", tab, token, role="唐僧")
    fresh = WebDemo(backend=backend, sessions=store, embedder="hash")  # a restarted server, same store
    start = fresh.start(token)
    ((label, sid),) = start["sessions"][0]
    assert label.startswith("孙悟空 · 悟空，前面有妖怪吗？ · ")
    view = fresh.resume(sid, token)
    assert view["tab"].session_id == sid and view["tab"].user_role == "唐僧" and view["character"] == "wukong"
    shown = answer(1).replace("（叹气）", "<em>（叹气）</em>")
    assert [t for _, t in texts(view)][1:] == ["悟空，前面有妖怪吗？", shown]
    assert view["trace"]["included_scenes"] and "唐僧" in view["scene_texts"]
    _, cont = send(fresh, "那就走吧", view["tab"], token, role="唐僧")
    assert [t.text for t in store.turns(sid)] == ["悟空，前面有妖怪吗？", "那就走吧"]
    assert any("前面有妖怪吗" in m.content for m in backend.calls[-1])  # the resumed history reached the model
    assert fresh.resume("", token) == {}


def test_trace_panel_shows_scenes_and_says_plainly_when_none_fitted(demo):
    tab, token = opened(demo)
    _, last = send(demo, "外星人和未来人你选哪个？", tab, token)
    trace = last["trace"]
    included = [r for r in last["scenes"] if r[3] == "yes"]
    assert included and [r[0] for r in included] == trace["included_scenes"]
    assert f"**{literal(included[0][0])}** — score {included[0][1]:.4f}" in last["scene_texts"]
    assert f"Prompt: {trace['total_tokens']} of {trace['budget']} tokens" in last["summary"]
    assert "No scene" not in last["summary"] and last["status"] == ""
    small = demo.settings.save_settings("", None, 20, None, last["tab"])["tab"]  # a story budget no scene fits in
    _, tight = send(demo, "再说一次", small, token)
    assert tight["trace"]["included_scenes"] == []
    assert "No scene went into the prompt: all" in tight["summary"] and "larger than the story budget of 20" \
        in tight["summary"] and "Raise the story budget in Settings" in tight["summary"]
    assert tight["status"].startswith("⚠ No scene went into the prompt")


def test_create_a_character_from_the_form_and_bad_forms_are_refused(demo, tmp_path):
    from PIL import Image

    mine, token = opened(demo)

    with pytest.raises(InputError, match="looks like a path"):
        demo.add.create_character("../evil", "", "你是谁", "甲:「好」", tab=mine)
    with pytest.raises(InputError, match="system prompt is empty"):
        demo.add.create_character("nagato", "长门", "  ", "长门:「……」", tab=mine)
    with pytest.raises(InputError, match="no scenes"):
        demo.add.create_character("nagato", "长门", "你是长门有希。", "  ", tab=mine)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (20 * 2**20))
    with pytest.raises(InputError, match="20.0 MB; the limit is 5 MB"):
        demo.add.create_character("nagato", "长门", "你是长门有希。", "长门:「……」", avatar=str(big), tab=mine)
    assert "nagato" not in demo.shelf.entries
    avatar = tmp_path / "a.png"
    Image.new("RGB", (600, 400), (10, 20, 200)).save(avatar)
    scene2 = tmp_path / "s2.txt"
    scene2.write_text("阿虚:「你在看什么书？」\n长门:「……海伯利安。」\n", encoding="utf-8")
    scenes = "阿虚:「早」\n长门:「……早。」\n---\n朝仓:「你好」\n长门:「……」"
    view = demo.add.create_character("nagato", "长门有希", "你是长门有希，话很少。", scenes, [str(scene2)], str(avatar),
                                 tab=mine)
    assert view["character"] == "nagato" and ("长门有希 (nagato)", "nagato") in view["choices"]
    assert view["form_clear"] is True and view["avatar"] is not None
    c = demo.character("nagato")
    assert len(c.scenes) == 3 and c.speaker == "长门" and c.display_name == "长门有希"
    with Image.open(c.path / "avatar.png") as img:
        assert max(img.size) == 256
    _, last = send(demo, "你在看什么书？", view["tab"], token)
    assert last["trace"]["included_scenes"]
    with pytest.raises(InputError, match="already exists"):
        demo.add.create_character("nagato", "", "p", "长门:「……」", tab=mine)


def test_import_a_card_and_a_png_with_no_card_is_a_clear_message(demo, tmp_path):
    from PIL import Image

    mine, _ = opened(demo)

    plain = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (0, 0, 0)).save(plain)
    with pytest.raises(InputError, match="could not import photo.png: .*no character card"):
        demo.add.import_character(str(plain), tab=mine)
    card = tmp_path / "card.json"
    card.write_text('{"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Mikuru", '
                    '"description": "A time traveller.", "first_mes": "Ah, um, hello!", '
                    '"mes_example": "<START>\\n{{user}}: Who are you?\\n{{char}}: I am Mikuru, from the future."}}',
                    encoding="utf-8")
    view = demo.add.import_character(str(card), tab=mine)
    assert view["character"] == "Mikuru" and texts(view)[0][1] == "Ah, um, hello!"
    assert view["status"] == "imported Mikuru" and ("Mikuru", "Mikuru") in view["choices"]


def test_build_app_names_every_endpoint_and_switches_analytics_off(backend, store, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")
    import os

    import gradio as gr

    app = build_app(backend=backend, sessions=store, embedder="hash")
    assert isinstance(app, gr.Blocks) and isinstance(app.demo, WebDemo)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    names = {fn.api_name for fn in app.fns.values() if fn.api_name}
    assert {"start", "pick", "new_chat", "resume", "send", "stop", "keep_partial", "regenerate", "swipe_prev",
            "swipe_next", "edit_message", "delete_message", "rename_chat", "delete_chat", "export_chat",
            "save_settings", "import_character", "create_character"} <= names
    assert not any(n.startswith("run") for n in names)


def test_no_backend_configured_fails_at_start_up_with_the_fix(store, monkeypatch):
    monkeypatch.setattr("chatharuhi.models.embedded.embedded_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="OPENAI_API_KEY"):
        WebDemo(sessions=store, embedder="hash")


def test_cli_demo_binds_to_loopback_and_needs_a_password_or_a_flag_elsewhere(monkeypatch, store, capsys):
    """Issue 15 §8: off loopback, a password (Gradio's login) or an explicit --no-auth with a warning."""
    from chatharuhi import cli

    seen = {}

    def fake_launch(app, host, port, block=True, password=None, open_access=False, banner=None):
        seen.update(host=host, port=port, demo=app.demo, password=password, open_access=open_access)

    monkeypatch.setattr("chatharuhi.web.demo.launch", fake_launch)
    base = ["demo", "--backend", "scripted", "--embedder", "hash"]
    assert cli.main([*base, "--port", "7999"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7999 and seen["password"] is None
    assert seen["demo"].backend.name == "scripted"
    seen.clear()
    assert cli.main([*base, "--host", "0.0.0.0"]) == 2 and not seen
    err = capsys.readouterr().err
    assert "refusing to serve the demo on 0.0.0.0 without a password" in err and "--no-auth" in err
    assert cli.main([*base, "--host", "0.0.0.0", "--password", "s3cret"]) == 0 and seen["password"] == "s3cret"
    monkeypatch.setenv("CHATHARUHI_DEMO_PASSWORD", "from-env")
    assert cli.main([*base, "--host", "0.0.0.0"]) == 0 and seen["password"] == "from-env"
    monkeypatch.delenv("CHATHARUHI_DEMO_PASSWORD")
    assert cli.main([*base, "--host", "0.0.0.0", "--no-auth"]) == 0 and seen["open_access"] is True
    assert "WARNING" in capsys.readouterr().err


def test_login_check_accepts_only_the_password():
    from chatharuhi.web.layout import login_check

    check = login_check("s3cret")
    assert check("anyone", "s3cret") and not check("anyone", "S3cret") and not check("x", "")


def test_warm_builds_every_index_before_the_first_visitor(demo):
    from chatharuhi.retrieval.index import index_for

    demo.warm()
    tab, token = opened(demo)
    views = demo.send("你好", "阿虚", tab, token)
    first = next(views)  # the user's message shows before the chatbot is even built
    assert texts(first)[-2:] == [("阿虚", "你好"), (HARUHI, "")] and first["status"] == "凉宫春日 is replying…"
    last = list(views)[-1]
    assert demo.bot(last["tab"].session_id).index is index_for(demo.character("haruhi"), demo.embedder)


def test_import_a_chatharuhi_zip_under_a_new_name(demo, tmp_path):
    from chatharuhi.interop.haruhi_formats import write_folder_zip

    archive = write_folder_zip(demo.character("wukong"), tmp_path / "wukong.zip")
    mine, _ = opened(demo)
    view = demo.add.import_character(str(archive), "monkey", mine)
    assert view["character"] == "monkey" and "俺老孙" in texts(view)[0][1]
    assert view["import_file"] is None and len(demo.character("monkey").scenes) == len(demo.character("wukong").scenes)
    with pytest.raises(InputError, match="could not import wukong.zip: monkey already exists; give it another") as e:
        demo.add.import_character(str(archive), "monkey", mine)
    assert str(tmp_path) not in str(e.value) and "characters/" not in str(e.value)  # no server paths


def test_launch_prints_one_line_and_never_suggests_share(capsys, tmp_path):
    """Gradio's start-up text says 'To create a public link, set `share=True`': a public tunnel to the user's
    machine. The demo prints its own one line instead."""
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web.demo import build_app, launch

    app = build_app(backend=ScriptedBackend(), sessions=SessionStore(tmp_path / "s.sqlite3"), embedder="hash")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch(app, "127.0.0.1", port, block=False, warm=False, banner="chatharuhi demo on test")
    try:
        out = capsys.readouterr()
        assert "share=True" not in out.out + out.err and "public link" not in out.out + out.err
        assert out.err.strip().splitlines() == ["chatharuhi demo on test"]
    finally:
        app.close()


def test_a_visitors_import_never_shadows_a_built_in_nor_shows_to_other_visitors(backend, store, tmp_path):
    """Issue 21 §4: a card whose folder name is ``haruhi`` replaced the built-in for every visitor."""
    card = tmp_path / "haruhi.json"
    card.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "haruhi", "description": "An impostor.", "first_mes": "I am the new Haruhi now.",
        "mes_example": "<START>\n{{user}}: hi\n{{char}}: Obey me."}}), encoding="utf-8")
    demo = WebDemo(backend, sessions=store, embedder="hash")
    alice, _ = opened(demo)
    clash = demo.add.import_character(str(card), tab=alice)  # the name is taken: a choice, not an error (issue 20 §5)
    assert clash["clash"] == ("haruhi", "haruhi-2") and "character" not in clash
    view = demo.add.import_character(str(card), tab=alice, as_copy=True)
    assert view["character"] == "haruhi-2" and view["status"] == "imported haruhi as haruhi-2 (a copy)"
    assert "haruhi-2" in dict((v, k) for k, v in view["choices"])
    for fresh in (demo, WebDemo(backend, sessions=store, embedder="hash")):  # also after a restart
        bob = fresh.start("")
        assert bob["character"] == "haruhi" and "SOS团" in texts(bob)[0][1]  # the built-in, for everyone else
        assert "haruhi-2" not in dict((v, k) for k, v in bob["choices"])
        with pytest.raises(InputError, match="unknown character 'haruhi-2'"):
            fresh.pick("haruhi-2", "", bob["tab"])
        assert fresh.pick("haruhi-2", "", alice)["character"] == "haruhi-2"  # still Alice's own
    from chatharuhi.character.discovery import list_characters

    assert "haruhi-2" not in {e.name for e in list_characters()}  # nor for `chatharuhi list` or serve
    shared = WebDemo(backend, sessions=store, embedder="hash", shared_imports=True)  # the operator's choice
    carol, _ = opened(shared)
    view = shared.add.import_character(str(card), tab=carol, as_copy=True)
    assert view["character"] == "haruhi-3" and "haruhi-3" in dict((v, k) for k, v in shared.start("")["choices"])
    assert shared.start("")["character"] == "haruhi"
