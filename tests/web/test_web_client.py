"""The web demo driven by ``gradio_client`` through its named endpoints, as a script would: send, stop,
swipe, edit, delete, import, create — and another client refused someone else's chat (issue 15 §5)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("gradio_client", reason="the web demo needs the [web] extra: pip install 'chatharuhi[web]'")

from test_web_browser import QUESTION, answer, free_port  # noqa: E402

CARD = ('{"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Mikuru", "description": "A time '
        'traveller.", "first_mes": "Ah, um, hello! I made tea.", "mes_example": "<START>\\n{{user}}: Who are '
        'you?\\n{{char}}: I am Mikuru. That is classified!"}}')


@pytest.fixture
def served(tmp_path):
    """The demo on 127.0.0.1 with a slow scripted backend, and where each endpoint's outputs are."""
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web.demo import build_app

    class Slow(ScriptedBackend):
        def stream(self, messages, **options):
            for chunk in super().stream(messages, **options):
                time.sleep(0.05)
                yield chunk

    backend = Slow([lambda m: f"悟空:「{answer(len(backend.calls))}」"], chunk_size=2)
    store = SessionStore(tmp_path / "sessions.sqlite3")
    app = build_app(backend=backend, sessions=store, embedder="hash")
    send = next(f for f in app.fns.values() if f.api_name == "send")
    shown = [o for o in send.outputs if not getattr(o, "skip_api", False)]
    where = {(o.elem_id or type(o).__name__): i for i, o in enumerate(shown)}
    port = free_port()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True)
    yield f"http://127.0.0.1:{port}/", store, where
    app.close()
    store.close()


def chat(result, where) -> list[str]:
    """The bubbles' Markdown texts."""
    value = result[where["chat"]]
    value = value["value"] if isinstance(value, dict) else value  # with a new avatar, the chat comes as an update
    return ["".join(part.get("text", "") for part in m["content"]) if isinstance(m["content"], list)
            else m["content"] for m in value]


def value(result, where, name):
    v = result[where[name]]
    return v.get("value") if isinstance(v, dict) else v


def last_bubble(result, where) -> str:
    return chat(result, where)[-1].split("\n", 1)[-1]


def test_a_script_drives_the_demo_through_named_endpoints(served, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, store, where = served
    alice = Client(url, verbose=False)
    token = alice.predict("", api_name="/start")[where["BrowserState"]]
    assert len(token) >= 32
    picked = alice.predict("wukong", "", api_name="/pick")
    assert "俺老孙" in last_bubble(picked, where) and picked[where["user-role"]] == "唐僧"

    # send
    sent = alice.predict(QUESTION, "唐僧", token, api_name="/send")
    assert last_bubble(sent, where) == answer(1) and sent[where["swipes"]] == "1/1"
    (session,) = store.list()
    assert [(t.text, t.reply) for t in store.turns(session.id)] == [(QUESTION, answer(1))]

    # regenerate and swipe
    assert alice.predict(token, api_name="/regenerate")[where["swipes"]] == "2/2"
    back = alice.predict(token, api_name="/swipe_prev")
    assert back[where["swipes"]] == "1/2" and last_bubble(back, where) == answer(1)
    assert store.turns(session.id)[0].reply == answer(1)
    assert alice.predict(token, api_name="/swipe_next")[where["swipes"]] == "2/2"

    # stop half-way: nothing stored until the partial reply is kept
    job = alice.submit("再讲一遍", "唐僧", token, api_name="/send")
    end = time.monotonic() + 30
    while time.monotonic() < end and len(job.outputs()) < 4:
        time.sleep(0.02)
    job.cancel()
    stopped = alice.predict(api_name="/stop")
    partial = last_bubble(stopped, where)
    assert partial.endswith(" …") and answer(3).startswith(partial[:-2]) and partial[:-2] != answer(3)
    assert len(store.turns(session.id)) == 1
    alice.predict(token, api_name="/keep_partial")
    assert len(store.turns(session.id)) == 2 and answer(3).startswith(store.turns(session.id)[1].reply)

    # edit the first message, delete the second exchange (bubbles: 0 greeting, 1 user, 2 reply, 3 user, ...)
    alice.predict(1, "大师兄，那座山有妖怪吗？", token, api_name="/edit_message")
    assert store.turns(session.id)[0].text == "大师兄，那座山有妖怪吗？"
    alice.predict(3, token, api_name="/delete_message")
    assert [t.text for t in store.turns(session.id)] == ["大师兄，那座山有妖怪吗？"]

    # import a card, create a character (a bad name first: refused, nothing written)
    card = tmp_path / "mikuru.json"
    card.write_text(CARD, encoding="utf-8")
    imported = alice.predict(handle_file(str(card)), "", api_name="/import_character")
    assert value(imported, where, "character") == "Mikuru" and "I made tea" in last_bubble(imported, where)
    scenes = "阿虚:「早」\n长门:「……早。」"
    with pytest.raises(AppError, match="looks like a path"):
        alice.predict("../nagato", "长门有希", "你是长门有希。", scenes, None, None, "auto", "",
                      api_name="/create_character")
    with pytest.raises(AppError, match="system prompt is empty"):
        alice.predict("nagato", "长门有希", " ", scenes, None, None, "auto", "", api_name="/create_character")
    created = alice.predict("nagato", "长门有希", "你是长门有希。", scenes, None, None, "auto", "",
                            api_name="/create_character")
    assert value(created, where, "character") == "nagato" and "created 长门有希" in created[where["status"]]
    assert chat(alice.predict("你好", "阿虚", token, api_name="/send"), where)[-1].startswith("**长门有希**")


def test_another_client_cannot_open_or_write_into_a_chat_by_its_id(served):
    """Issue 15 §5's reproduction: ``Client(url).predict(A_SID, [A_SID], api_name=...)`` loaded A's chat."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, store, where = served
    alice = Client(url, verbose=False)
    token = alice.predict("", api_name="/start")[where["BrowserState"]]
    alice.predict("我的秘密计划", "阿虚", token, api_name="/send")
    (session,) = store.list()
    mallory = Client(url, verbose=False)
    own = mallory.predict("", api_name="/start")[where["BrowserState"]]
    assert own != token and mallory.predict("", api_name="/start")[where["sessions"]]["choices"] == []
    for credential in ([session.id], own, "", "x" * 43):  # refused by Gradio (not her list) or by the owners table
        with pytest.raises(AppError, match="not one of this browser's chats|not in the list of choices"):
            mallory.predict(session.id, credential, api_name="/resume")
    # mallory's own tab never holds alice's chat, so every write lands nowhere near it
    with pytest.raises(AppError, match="nothing to delete"):
        mallory.predict(own, api_name="/delete_chat")
    assert [t.text for t in store.turns(session.id)] == ["我的秘密计划"]
    resumed = alice.predict(session.id, token, api_name="/resume")  # the owner still can
    assert "我的秘密计划" in str(chat(resumed, where))


def test_off_loopback_the_demo_asks_for_the_password(tmp_path):
    """Issue 15 §8 for real: ``launch`` with a password puts Gradio's login in front of every endpoint."""
    import httpx
    from gradio_client import Client

    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.errors import InputError
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web.demo import build_app, launch

    with SessionStore(tmp_path / "s.sqlite3") as store:
        app = build_app(backend=ScriptedBackend(), sessions=store, embedder="hash")
        with pytest.raises(InputError, match="without a password"):
            launch(app, "0.0.0.0", free_port(), block=False, warm=False)
        port = free_port()
        launch(app, "127.0.0.1", port, block=False, warm=False, password="s3cret")
        try:
            url = f"http://127.0.0.1:{port}/"
            assert httpx.get(url + "config").status_code == 401  # nothing (not even the layout) without logging in
            assert httpx.post(url + "login", data={"username": "fan", "password": "nope"}).status_code == 400
            with pytest.raises(Exception):  # noqa: B017 - gradio_client raises a plain ValueError here
                Client(url, verbose=False)
            fan = Client(url, auth=("any name", "s3cret"), verbose=False)
            assert len(fan.predict("", api_name="/start")[0]) >= 32
        finally:
            app.close()
