"""The Gradio layout of the web demo: components, events, and the mapping from ``View`` fields to them.

Kept apart from ``web.py`` so the handlers there stay plain Python; this module only runs with Gradio
installed (``build_app`` imports it after switching Gradio's analytics off).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from .errors import ChatHaruhiError, InputError
from .models.selection import describe
from .web import SCENE_HEADERS, STORAGE_KEY, Tab, View, WebDemo

TITLE = "ChatHaruhi"
CONCURRENCY = 8  # replies streamed at once; local backends serialise generation themselves
CSS = """
#scene-texts blockquote { white-space: pre-wrap; margin: 0.2em 0 0.8em; }
#card h3 { margin-top: 0; }
"""


def layout(gr, demo: WebDemo, secret: str) -> Any:
    """Build the Blocks for ``demo``; every visitor's state is per tab (``gr.State``) or per browser."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        tab = gr.State(Tab())
        owned = gr.BrowserState([], storage_key=STORAGE_KEY, secret=secret)  # this browser's session ids
        gr.Markdown(f"## {TITLE} — chat with a character, grounded in its own scenes")
        gr.Markdown(f"Model: {describe(demo.backend)}", elem_id="model-in-use")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                character = gr.Dropdown(demo.choices(), label="Character", value=None, elem_id="character")
                avatar = gr.Image(show_label=False, type="pil", interactive=False, height=180, visible=False,
                                  elem_id="avatar")
                card = gr.Markdown(elem_id="card")
                user_role = gr.Textbox(label="Your name in the story", max_lines=1, elem_id="user-role")
                new_chat = gr.Button("New chat", elem_id="new-chat")
                sessions = gr.Dropdown([], label="Your earlier chats (pick one to resume)", value=None,
                                       elem_id="sessions")
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Chat", height=460, elem_id="chat", feedback_options=None,
                                  buttons=["copy", "copy_all"])  # no "share": it uploads
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    message = gr.Textbox(show_label=False, placeholder="Say something… (Enter sends)", scale=6,
                                         max_lines=4, elem_id="message")
                    send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="send")
                    regenerate = gr.Button("Regenerate", scale=1, min_width=80, elem_id="regenerate")
                with gr.Accordion("Why this reply: retrieved scenes and token trace", open=False, elem_id="trace"):
                    summary = gr.Markdown(elem_id="trace-summary")
                    scenes = gr.Dataframe(headers=SCENE_HEADERS, interactive=False, wrap=True, elem_id="scenes")
                    scene_texts = gr.Markdown(elem_id="scene-texts")
                    trace = gr.JSON(label="Trace (tokens per part, every candidate scene and turn)",
                                    elem_id="trace-json")

        fields = {"tab": tab, "owned": owned, "character": character, "avatar": avatar, "card": card,
                  "user_role": user_role, "sessions": sessions, "chat": chat, "status": status,
                  "message": message, "summary": summary, "scenes": scenes, "scene_texts": scene_texts,
                  "trace": trace}
        outputs = list(fields.values())

        def to_gradio(view: View) -> dict | tuple:
            if not view:
                return tuple(gr.skip() for _ in outputs)  # Gradio reads an empty dict as one value
            out = {}
            for name, value in view.items():
                if name == "sessions":
                    choices, selected = value
                    value = gr.Dropdown(choices=choices, value=selected)
                elif name == "avatar":
                    value = gr.Image(value=value, visible=value is not None)
                elif name == "scenes":
                    value = gr.Dataframe(value=value or None, headers=SCENE_HEADERS)
                out[fields[name]] = value
            return out

        def handler(fn: Callable[..., View]) -> Callable[..., dict]:
            def run(*args):
                try:
                    return to_gradio(fn(*args))
                except InputError as exc:
                    gr.Warning(str(exc))
                    return to_gradio({})
                except ChatHaruhiError as exc:
                    raise gr.Error(str(exc)) from None
            return run

        def streaming(fn: Callable[..., Iterator[View]]) -> Callable[..., Iterator[dict]]:
            def run(*args):
                tab_value = next((a for a in args if isinstance(a, Tab)), None)
                try:
                    for view in fn(*args):
                        tab_value = view.get("tab", tab_value)
                        yield to_gradio(view)
                except InputError as exc:
                    gr.Warning(str(exc))
                except Exception as exc:  # a failed reply is not kept: show the chat as stored
                    restore = {"chat": demo._messages(tab_value), "status": ""} if tab_value else {}
                    yield to_gradio(restore)
                    raise gr.Error(f"the reply failed and was not kept: {exc}") from None
            return run

        app.load(handler(demo.start), inputs=[owned], outputs=outputs)
        character.input(handler(demo.pick), inputs=[character, user_role, tab], outputs=outputs)
        new_chat.click(handler(demo.new_chat), inputs=[user_role, tab], outputs=outputs)
        chat.clear(handler(demo.new_chat), inputs=[user_role, tab], outputs=outputs)  # the bin icon = new chat
        sessions.input(handler(demo.resume), inputs=[sessions, owned], outputs=outputs)
        for event in (send.click, message.submit):
            event(streaming(demo.send), inputs=[message, user_role, tab, owned], outputs=outputs,
                  concurrency_limit=CONCURRENCY, concurrency_id="reply", show_progress="hidden")
        regenerate.click(streaming(demo.regenerate), inputs=[tab], outputs=outputs,
                         concurrency_limit=CONCURRENCY, concurrency_id="reply", show_progress="hidden")
    return app
