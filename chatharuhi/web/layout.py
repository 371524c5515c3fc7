"""The Gradio layout of the web demo: components, events (each with a name, so ``gradio_client`` can drive
it), and the mapping from ``View`` fields onto components.

Kept apart from the handlers so they stay plain Python; this module only runs with Gradio installed
(``build_app`` imports it after switching Gradio's analytics off).
"""

from __future__ import annotations

import hmac
from typing import Any, Callable

from .app import WebDemo
from .characters import AUTO_LANGUAGE, LANGUAGES, SCENE_SEPARATOR
from .chats import EXPORT_FORMATS
from .events import FORM, PANEL, PageEvents
from .state import SCENE_HEADERS, STORAGE_KEY, Tab

TITLE = "ChatHaruhi"
CONCURRENCY = 8  # replies streamed at once; a local model decodes n_parallel of them together, the rest queue there
CSS = """
#scene-texts blockquote { white-space: pre-wrap; margin: 0.2em 0 0.8em; }
#card h3 { margin-top: 0; }
#chat em { color: var(--body-text-color-subdued); }
#swipe-row { align-items: center; gap: 6px; }
#swipe-row > *, #swipe-row #swipes { flex: 0 0 auto !important; width: auto !important; min-width: 0 !important; }
#swipes { text-align: center; padding: 0 6px; }
#regenerate { margin-left: auto; }
#pull-progress progress { width: 60%; vertical-align: middle; }
#group-chat-log .message img { width: 28px !important; height: 28px !important; max-width: 28px !important;
  display: inline-block !important; border-radius: 50%; vertical-align: middle; margin: 0 6px 0 0 !important; }
"""


def login_check(password: str) -> Callable[[str, str], bool]:
    """Gradio's auth callback: any user name, this password (compared in constant time)."""
    expected = password.encode("utf-8")

    def check(username: str, given: str) -> bool:
        return hmac.compare_digest((given or "").encode("utf-8"), expected)

    return check


def layout(gr, demo: WebDemo, secret: str) -> Any:
    """Build the Blocks for ``demo``; every visitor's state is per tab (``gr.State``) or per browser."""
    from ..config import cache_home
    from .avatars import THUMB_DIR

    gr.set_static_paths([str(cache_home() / THUMB_DIR)])  # the avatars shown in chat bubbles
    c: dict[str, Any] = {}
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        c["tab"] = gr.State(Tab())
        c["browser"] = gr.BrowserState("", storage_key=STORAGE_KEY, secret=secret)  # this browser's random token
        gr.Markdown(f"## {TITLE} — chat with a character, grounded in its own scenes")
        with gr.Row(equal_height=True):
            c["model_line"] = gr.Markdown(demo.better.line(), elem_id="model-in-use")
            c["better"] = gr.Button("Get a better model", variant="primary", scale=0, min_width=180,
                                    visible=demo.better.offered(), elem_id="better-model")
        c["pull_progress"] = gr.HTML("", elem_id="pull-progress")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                _left_column(gr, demo, c)
            with gr.Column(scale=3):
                _chat_column(gr, c)
        from .group import group_section

        group_section(gr, demo, c, app)  # several characters at once (chat/group.py)
        _wire(gr, app, demo, c)
    return app


def _left_column(gr, demo: WebDemo, c: dict) -> None:
    """The character and this browser's chats with it, then the panels: memory, persona, this character, settings,
    adding a character (imported, created, or built from a book)."""
    from .build import build_section
    from .memory import memory_section

    _picker(gr, demo, c)
    _your_chats(gr, c)
    memory_section(gr, demo, c)  # pinned facts (chat/memory.py)
    with gr.Accordion("Your persona", open=False, elem_id="persona-panel"):
        c["persona"] = gr.Textbox(label="Who you are (the character is told)", lines=2, elem_id="persona")
    _character_panel(gr, c)
    _settings_panel(gr, demo, c)
    _add_character(gr, c)
    build_section(gr, demo, c)  # novels, subtitles and scripts in (chatharuhi.building)


def _picker(gr, demo: WebDemo, c: dict) -> None:
    """The character, its card and avatar, the user's name in the story, and New chat."""
    c["character"] = gr.Dropdown(demo.choices(), label="Character", value=None, elem_id="character")
    c["avatar"] = gr.Image(show_label=False, type="filepath", interactive=False, height=180, visible=False,
                           elem_id="avatar", buttons=[])
    c["card"] = gr.Markdown(elem_id="card")
    c["user_role"] = gr.Textbox(label="Your name in the story", max_lines=1, elem_id="user-role")
    c["new_chat"] = gr.Button("New chat", elem_id="new-chat")


def _your_chats(gr, c: dict) -> None:
    """This browser's chats: search, pick one to resume, rename, export, delete."""
    with gr.Accordion("Your chats", open=True, elem_id="chats"):
        c["search"] = gr.Textbox(show_label=False, placeholder="Search your chats (all characters)", max_lines=1,
                                 elem_id="chat-search")
        c["sessions"] = gr.Dropdown([], label="Chats with this character, newest first (pick one to resume)",
                                    value=None, elem_id="sessions")
        with gr.Row():
            c["title"] = gr.Textbox(show_label=False, placeholder="New title", max_lines=1, scale=3, elem_id="title")
            c["rename"] = gr.Button("Rename", scale=1, min_width=70, elem_id="rename")
        with gr.Row():
            c["export_format"] = gr.Radio(list(EXPORT_FORMATS), value="markdown", show_label=False,
                                          elem_id="export-format")
            c["export"] = gr.Button("Export", min_width=70, elem_id="export")
        c["export_file"] = gr.File(label="Download", visible=False, interactive=False, elem_id="export-file")
        c["delete_chat"] = gr.Button("Delete this chat", variant="stop", size="sm", elem_id="delete-chat")


def _character_panel(gr, c: dict) -> None:
    """The "This character" panel: where it lives, its settings to change (one's own), export as a card, delete."""
    with gr.Accordion("This character", open=False, elem_id="character-panel"):
        c["char_where"] = gr.Markdown(elem_id="char-where")
        c["char_display"] = gr.Textbox(label="Display name", max_lines=1, elem_id="char-display")
        c["char_greeting"] = gr.Textbox(label="Greeting (the first message of a chat)", lines=2,
                                        elem_id="char-greeting")
        c["char_language"] = gr.Dropdown(list(LANGUAGES), value=AUTO_LANGUAGE, elem_id="char-language",
                                         label="Language (auto: detected from the scenes)")
        c["char_prompt"] = gr.Textbox(label="System prompt", lines=4, elem_id="char-prompt")
        with gr.Row():
            c["save_character"] = gr.Button("Save changes", size="sm", variant="primary", elem_id="save-character")
            c["export_card"] = gr.Button("Export as a card", size="sm", elem_id="export-card")
            c["delete_character"] = gr.Button("Delete", size="sm", variant="stop", elem_id="delete-character")
        c["confirm_delete"] = gr.Button("Delete for good", size="sm", variant="stop", visible=False,
                                        elem_id="confirm-delete")
        c["card_file"] = gr.File(label="Card", visible=False, interactive=False, elem_id="card-file")


def _settings_panel(gr, demo: WebDemo, c: dict) -> None:
    """The backend in one line, the sampling and budget settings (the values in use), and the save button."""
    defaults = demo.settings.setting_defaults()
    with gr.Accordion("Settings", open=False, elem_id="settings-panel"):
        c["backend_info"] = gr.Markdown(demo.settings.backend_info(), elem_id="backend-info")
        c["temperature"] = gr.Number(label="Temperature (the value in use; clear it for the backend's default)",
                                     minimum=0, maximum=2, step=0.1, elem_id="temperature",
                                     value=defaults["temperature"])
        c["story_tokens"] = gr.Number(label="Story budget, tokens (the value in use; clear it for the default)",
                                      precision=0, minimum=0, elem_id="story-tokens",
                                      value=defaults["story_tokens"])
        c["history_tokens"] = gr.Number(label="History budget, tokens (the value in use; clear it for the default)",
                                        precision=0, minimum=0, elem_id="history-tokens",
                                        value=defaults["history_tokens"])
        c["max_reply_tokens"] = gr.Number(label="Maximum reply length, tokens (a longer reply stops at a word and "
                                                "offers Continue)", precision=0, minimum=16, maximum=4096,
                                          elem_id="max-reply-tokens",
                                          value=defaults["max_reply_tokens"])
        gr.Markdown("Changes apply when you press **Save persona and settings** below; they stay with this "
                    "browser tab: this chat and the chats you open next in it.", elem_id="settings-hint")
    c["save_settings"] = gr.Button("Save persona and settings", size="sm", elem_id="save-settings")


def _add_character(gr, c: dict) -> None:
    """The "Add a character" panel: a dropped card imported (a taken name offers a choice), or a character created."""
    with gr.Accordion("Add a character", open=False, elem_id="add-character"):
        c["import_file"] = gr.File(label="Drop a card (PNG/JSON/CHARX) or a ChatHaruhi zip here",
                                   file_types=[".png", ".json", ".charx", ".zip", ".jsonl"], elem_id="import-file")
        c["import_name"] = gr.Textbox(label="Folder name (optional)", max_lines=1, elem_id="import-name")
        with gr.Group(visible=False, elem_id="import-clash") as c["clash_box"]:
            c["clash_name"] = gr.Textbox(visible=False, elem_id="clash-name")
            with gr.Row():
                c["open_existing"] = gr.Button("Open the existing one", size="sm", elem_id="open-existing")
                c["import_copy"] = gr.Button("Import as a copy", size="sm", variant="primary", elem_id="import-copy")
        gr.Markdown("**…or create one**")
        c["new_name"] = gr.Textbox(label="Folder name (letters, digits, - or _)", max_lines=1, elem_id="new-name")
        c["new_display"] = gr.Textbox(label="Display name", max_lines=1, elem_id="new-display")
        c["new_prompt"] = gr.Textbox(label="System prompt: who they are, how they speak", lines=3,
                                     elem_id="new-prompt")
        c["new_scenes"] = gr.Textbox(lines=5, elem_id="new-scenes",
                                     label="Scenes: lines like 名字:「台词」; "
                                           f"a line of {SCENE_SEPARATOR} between scenes")
        c["new_files"] = gr.File(label="…or scene .txt files", file_count="multiple", file_types=[".txt"],
                                 elem_id="new-files")
        c["new_avatar"] = gr.File(label="Avatar image (optional, at most 5 MB; else one is drawn)",
                                  file_types=["image"], elem_id="new-avatar")
        c["new_language"] = gr.Dropdown(list(LANGUAGES), value=AUTO_LANGUAGE, elem_id="new-language",
                                        label="Language (auto: detected from the scenes)")
        c["new_greeting"] = gr.Textbox(label="Greeting (optional: the first message of a chat)", lines=2,
                                       elem_id="new-greeting")
        c["create"] = gr.Button("Create character", variant="primary", elem_id="create")


def _chat_column(gr, c: dict) -> None:
    c["chat"] = gr.Chatbot(label="Chat", height=500, elem_id="chat", feedback_options=None, editable="all",
                           buttons=["copy", "copy_all"], avatar_images=(None, None), group_consecutive_messages=False)
    c["status"] = gr.Markdown(elem_id="status")
    with gr.Row(elem_id="swipe-row", equal_height=True):
        c["prev"] = gr.Button("◀", size="sm", min_width=40, scale=0, elem_id="swipe-prev")
        c["swipes"] = gr.Markdown("", elem_id="swipes", container=False, min_height=0)
        c["next"] = gr.Button("▶", size="sm", min_width=40, scale=0, elem_id="swipe-next")
        c["regenerate"] = gr.Button("Regenerate", size="sm", scale=0, min_width=100, elem_id="regenerate")
        c["continue"] = gr.Button("Continue", size="sm", scale=0, min_width=90, elem_id="continue")
        c["stop"] = gr.Button("Stop", size="sm", variant="stop", scale=0, min_width=70, elem_id="stop")
        c["keep"] = gr.Button("Keep partial reply", size="sm", scale=0, min_width=140, visible=False, elem_id="keep")
    with gr.Row():
        c["message"] = gr.Textbox(show_label=False, placeholder="Say something… (Enter sends)", scale=6, max_lines=4,
                                  elem_id="message")
        c["send"] = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="send")
    with gr.Group(visible=False, elem_id="edit-box") as c["edit_box"]:
        c["edit_index"] = gr.Number(precision=0, visible=False, elem_id="edit-index")  # the bubble's position
        c["edit_label"] = gr.Markdown(elem_id="edit-label")
        c["edit_text"] = gr.Textbox(show_label=False, lines=2, elem_id="edit-text")
        with gr.Row():
            c["save_edit"] = gr.Button("Save edit", variant="primary", size="sm", elem_id="save-edit")
            c["delete_message"] = gr.Button("Delete message", variant="stop", size="sm", elem_id="delete-message")
            c["cancel_edit"] = gr.Button("Cancel", size="sm", elem_id="cancel-edit")
    with gr.Accordion("Why this reply: retrieved scenes and token trace", open=False, elem_id="trace"):
        c["summary"] = gr.Markdown(elem_id="trace-summary")
        c["scenes"] = gr.Dataframe(headers=SCENE_HEADERS, interactive=False, wrap=True, elem_id="scenes")
        c["scene_texts"] = gr.Markdown(elem_id="scene-texts")
        c["trace"] = gr.JSON(label="Trace (tokens per part, every candidate scene and turn)", elem_id="trace-json")


def _wire(gr, app, demo: WebDemo, c: dict) -> None:
    """Every event of the one-to-one page, in the order Gradio numbers them."""
    on = PageEvents(gr, c, demo.transcript.messages, CONCURRENCY)
    _wire_opening(app, demo, c, on)
    _wire_character(demo, c, on)
    _wire_chats(demo, c, on)
    _wire_replies(demo, c, on)
    _wire_edits(demo, c, on)
    _wire_chat_panels(demo, c, on)


def _wire_opening(app, demo: WebDemo, c: dict, on: PageEvents) -> None:
    """The page opening, a character picked, the chat list searched."""
    tab, browser, quiet = c["tab"], c["browser"], on.quiet
    app.load(on.handler(demo.start), inputs=[browser], **quiet, api_name="start")
    c["character"].input(on.handler(demo.pick), inputs=[c["character"], c["user_role"], tab, browser], **quiet,
                         api_name="pick")
    c["search"].input(on.handler(demo.chats.search_chats), inputs=[c["search"], tab, browser], **quiet,
                      api_name="search_chats", trigger_mode="always_last")


def _wire_character(demo: WebDemo, c: dict, on: PageEvents) -> None:
    """A better model, the "This character" panel, and the choice after an import's name clashed."""
    tab, quiet = c["tab"], on.quiet
    c["better"].click(on.streaming(demo.better.pull), **on.reply, api_name="get_better_model")
    c["save_character"].click(on.handler(demo.panel.save), inputs=[*(c[k] for k in PANEL), tab], **quiet,
                              api_name="save_character")
    c["export_card"].click(on.handler(demo.panel.export), inputs=[tab], **quiet, api_name="export_card")
    c["delete_character"].click(on.handler(demo.panel.ask_delete), inputs=[tab], **quiet, api_name=False)
    c["confirm_delete"].click(on.handler(demo.panel.delete), inputs=[tab], **quiet, api_name="delete_character")
    c["open_existing"].click(on.handler(demo.panel.open_existing), inputs=[c["clash_name"], tab], **quiet,
                             api_name="open_existing")
    c["import_copy"].click(on.handler(demo.panel.import_copy), inputs=[c["import_file"], c["import_name"], tab],
                           **quiet, api_name="import_copy")


def _wire_chats(demo: WebDemo, c: dict, on: PageEvents) -> None:
    """A new chat (the button, or the chat's own clear), and one of this browser's chats resumed."""
    tab, browser, quiet = c["tab"], c["browser"], on.quiet
    c["new_chat"].click(on.handler(demo.new_chat), inputs=[c["user_role"], tab], **quiet, api_name="new_chat")
    c["chat"].clear(on.handler(demo.new_chat), inputs=[c["user_role"], tab], **quiet, api_name=False)
    c["sessions"].input(on.handler(demo.resume), inputs=[c["sessions"], browser, tab], **quiet,
                        api_name="resume")


def _wire_replies(demo: WebDemo, c: dict, on: PageEvents) -> None:
    """Send, regenerate, continue and the swipes stream a reply; Stop cancels them; Keep keeps what had streamed."""
    tab, browser, reply = c["tab"], c["browser"], on.reply
    send_inputs = [c["message"], c["user_role"], tab, browser]
    running = [c["send"].click(on.streaming(demo.send), inputs=send_inputs, api_name="send", **reply),
               c["message"].submit(on.streaming(demo.send), inputs=send_inputs, api_name=False, **reply),
               c["regenerate"].click(on.streaming(demo.regenerate), inputs=[tab, browser], api_name="regenerate",
                                     **reply),
               c["continue"].click(on.streaming(demo.continue_reply), inputs=[tab, browser],
                                   api_name="continue_reply", **reply)]

    def swipe_prev(tab, token):
        """Show the previous alternative of the last reply."""
        yield from demo.edits.swipe(-1, tab, token)

    def swipe_next(tab, token):
        """Show the next alternative of the last reply; past the newest, generate one."""
        yield from demo.edits.swipe(+1, tab, token)

    c["prev"].click(on.streaming(swipe_prev), inputs=[tab, browser], api_name="swipe_prev", **reply)
    running.append(c["next"].click(on.streaming(swipe_next), inputs=[tab, browser], api_name="swipe_next", **reply))
    # cancel first, then show what had streamed (run in one event, the cancelled stream's last frame could win)
    c["stop"].click(None, cancels=running, api_name=False).then(on.handler(demo.edits.stop), inputs=[tab],
                                                                **on.quiet, api_name="stop")
    c["keep"].click(on.handler(demo.edits.keep_partial), inputs=[tab, browser], **on.quiet, api_name="keep_partial")


def _wire_edits(demo: WebDemo, c: dict, on: PageEvents) -> None:
    """A bubble clicked or edited in place, the edit box's save, delete and cancel."""
    gr, tab, browser, quiet = on.gr, c["tab"], c["browser"], on.quiet

    def select(t, evt):
        return on.handler(demo.edits.select_message)(evt.index, t)

    select.__annotations__ = {"evt": gr.SelectData}  # Gradio finds the event data by this annotation

    c["chat"].select(select, inputs=[tab], **quiet, api_name=False)

    def edited(t, token, evt):
        return on.handler(demo.edits.edit_in_place)(evt.index, evt.value, t, token)

    edited.__annotations__ = {"evt": gr.EditData}
    c["chat"].edit(edited, inputs=[tab, browser], **quiet, api_name=False)
    c["save_edit"].click(on.handler(demo.edits.edit_message), inputs=[c["edit_index"], c["edit_text"], tab, browser],
                         **quiet, api_name="edit_message")
    c["delete_message"].click(on.handler(demo.edits.delete_message), inputs=[c["edit_index"], tab, browser], **quiet,
                              api_name="delete_message")
    c["cancel_edit"].click(lambda: on.to_gradio({"edit_box": False, "edit_text": ""}), **quiet, api_name=False)


def _wire_chat_panels(demo: WebDemo, c: dict, on: PageEvents) -> None:
    """The chat's rename, delete and export, the persona and settings panels, and adding a character."""
    tab, browser, quiet = c["tab"], c["browser"], on.quiet
    c["rename"].click(on.handler(demo.chats.rename_chat), inputs=[c["title"], tab, browser], **quiet,
                      api_name="rename_chat")
    c["delete_chat"].click(on.handler(demo.chats.delete_chat), inputs=[tab, browser], **quiet, api_name="delete_chat")
    c["export"].click(on.handler(demo.chats.export_chat), inputs=[c["export_format"], tab, browser], **quiet,
                      api_name="export_chat")
    settings = [c["persona"], c["temperature"], c["story_tokens"], c["history_tokens"], tab, c["max_reply_tokens"]]
    c["save_settings"].click(on.handler(demo.settings.save_settings), inputs=settings, **quiet,
                             api_name="save_settings")
    c["import_file"].upload(on.handler(demo.add.import_character), inputs=[c["import_file"], c["import_name"], tab],
                            **quiet, api_name="import_character")
    c["create"].click(on.handler(demo.add.create_character), inputs=[*(c[k] for k in FORM), tab], **quiet,
                      api_name="create_character")
