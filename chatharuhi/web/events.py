"""How a handler's ``View`` reaches the page: its named fields mapped onto Gradio components (a few fields, such
as the chat list's choices or a button's visibility, become component updates), and the wrappers that make a
handler a Gradio event: a library error is a toast, a stale tab catches up, a failed reply is not kept.

Runs only with Gradio installed (``gr`` is handed in by the layout)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

from ..errors import ChatHaruhiError, InputError
from .render import toast
from .state import SCENE_HEADERS, Tab, View
from .transcript import Stale

FORM = ("new_name", "new_display", "new_prompt", "new_scenes", "new_files", "new_avatar", "new_language",
        "new_greeting")
PANEL = ("char_display", "char_greeting", "char_language", "char_prompt")
# the components every event of the one-to-one page may update, in Gradio's order of outputs
OUTPUTS = ("tab", "browser", "character", "avatar", "card", "user_role", "sessions", "chat", "status", "message",
           "summary", "scenes", "scene_texts", "trace", "swipes", "keep", "edit_box", "edit_index", "edit_text",
           "title", "export_file", "persona", "temperature", "story_tokens", "history_tokens", "backend_info",
           "import_file", "import_name", *FORM, "model_line", "better", "pull_progress", "search", "max_reply_tokens",
           "clash_box", "clash_name", "open_existing", "import_copy", *PANEL, "char_where", "save_character",
           "delete_character", "confirm_delete", "card_file", "edit_label")
# view fields that are not components of their own
SPECIAL = {"sessions", "choices", "avatar", "partial", "edit_box", "warning", "form_clear", "export_file", "clash",
           "better_visible", "confirm_delete", "char_editable", "card_file"}


class PageEvents:
    """The one-to-one page's events over its components ``c``; ``messages`` shows a chat as stored (after a failed
    reply); ``concurrency``: replies streamed at once."""

    def __init__(self, gr: Any, c: dict, messages: Callable[[Tab], list[dict]], concurrency: int):
        self.gr, self.c, self.messages = gr, c, messages
        self.outputs = [c[k] for k in OUTPUTS]
        # no progress or error overlay on the ~30 outputs: the status line and toasts say what happens
        self.quiet = {"outputs": self.outputs, "show_progress": "hidden"}
        self.reply = {**self.quiet, "concurrency_limit": concurrency, "concurrency_id": "reply"}

    def to_gradio(self, view: View) -> dict | tuple:
        """A view as Gradio's updates of the page's components."""
        gr, c = self.gr, self.c
        if view.get("warning"):
            gr.Warning(toast(view["warning"]))
        out: dict = {}
        for name, value in view.items():
            if name == "chat" and "avatar" in view:
                continue  # the avatar's update carries the chat
            if name in PANEL and "char_editable" in view:
                out[c[name]] = gr.update(value=value, interactive=bool(view["char_editable"]))
            elif name in FIELDS:
                out.update(FIELDS[name](gr, c, value, view))
            elif name in c and name not in SPECIAL:
                out[c[name]] = value
        if not out:
            return tuple(gr.skip() for _ in self.outputs)  # Gradio reads an empty dict as one value
        return out

    def handler(self, fn: Callable[..., View]) -> Callable[..., Any]:
        """``fn`` as an event: its view shown; a stale tab catches up; a library error is a toast."""
        gr = self.gr

        @functools.wraps(fn)  # gradio_client sees the handler's own parameter names
        def run(*args):
            try:
                return self.to_gradio(fn(*args))
            except Stale as exc:  # nothing failed: the page catches up, and the user's text stays
                gr.Warning(toast(exc))
                return self.to_gradio(exc.view)
            except ChatHaruhiError as exc:  # bad input too: an error a script driving the API sees, shown
                raise gr.Error(toast(exc)) from None  # in the page; the components keep what was typed
        return run

    def streaming(self, fn: Callable[..., Iterator[View]]) -> Callable[..., Iterator[Any]]:
        """``fn``'s views streamed to the page; a reply that fails is not kept, and the stored chat is shown."""
        gr = self.gr

        @functools.wraps(fn)
        def run(*args):
            tab_value = next((a for a in args if isinstance(a, Tab)), None)
            try:
                for view in fn(*args):
                    tab_value = view.get("tab", tab_value)
                    yield self.to_gradio(view)
            except Stale as exc:
                gr.Warning(toast(exc))
                yield self.to_gradio(exc.view)
            except InputError as exc:  # refused before anything was stored (no session is ever NotYourChat'd here)
                raise gr.Error(toast(exc)) from None
            except Exception as exc:  # a failed reply is not kept: show the chat as stored
                restore = {"chat": self.messages(tab_value), "status": ""} if tab_value else {}
                yield self.to_gradio(restore)
                raise gr.Error(toast(f"the reply failed and was not kept: {exc}")) from None
        return run


# -- the fields that update a component rather than set its value ------------------------------------------------
def _sessions(gr: Any, c: dict, value: Any, view: View) -> dict:
    choices, selected = value
    return {c["sessions"]: gr.Dropdown(choices=choices, value=selected)}


def _choices(gr: Any, c: dict, value: Any, view: View) -> dict:
    return {c["character"]: gr.Dropdown(choices=value, value=view.get("character"))}


def _avatar(gr: Any, c: dict, value: Any, view: View) -> dict:
    images = (None, str(value) if value else None)
    chat = gr.Chatbot(value=view["chat"], avatar_images=images) if "chat" in view else gr.Chatbot(avatar_images=images)
    return {c["avatar"]: gr.Image(value=str(value) if value else None, visible=value is not None), c["chat"]: chat}


def _shown(component: str, kind: str) -> Callable[..., dict]:
    """A field that shows or hides ``component`` (a Gradio ``kind``)."""
    def update(gr: Any, c: dict, value: Any, view: View) -> dict:
        return {c[component]: getattr(gr, kind)(visible=bool(value))}
    return update


def _file(component: str) -> Callable[..., dict]:
    """A field that offers a file to download in ``component``."""
    def update(gr: Any, c: dict, value: Any, view: View) -> dict:
        return {c[component]: gr.File(value=value, visible=True)}
    return update


def _form_clear(gr: Any, c: dict, value: Any, view: View) -> dict:
    return {c[k]: None for k in FORM}


def _clash(gr: Any, c: dict, value: Any, view: View) -> dict:
    existing, free = value or ("", "")
    return {c["clash_box"]: gr.Group(visible=value is not None), c["clash_name"]: existing,
            c["open_existing"]: gr.Button(f"Open the existing “{existing}”" if value else "Open"),
            c["import_copy"]: gr.Button(f"Import as a copy: “{free}”" if value else "Import as a copy")}


def _char_editable(gr: Any, c: dict, value: Any, view: View) -> dict:
    out = {c[k]: gr.update(interactive=bool(value)) for k in PANEL if k not in view}
    out[c["save_character"]] = gr.Button(visible=bool(value))
    out[c["delete_character"]] = gr.Button(visible=bool(value))
    if not value:
        out[c["confirm_delete"]] = gr.Button(visible=False)
    return out


def _scenes(gr: Any, c: dict, value: Any, view: View) -> dict:
    return {c["scenes"]: gr.Dataframe(value=value or None, headers=SCENE_HEADERS)}


FIELDS: dict[str, Callable[[Any, dict, Any, View], dict]] = {
    "sessions": _sessions, "choices": _choices, "avatar": _avatar, "partial": _shown("keep", "Button"),
    "edit_box": _shown("edit_box", "Group"), "form_clear": _form_clear, "export_file": _file("export_file"),
    "card_file": _file("card_file"), "clash": _clash, "better_visible": _shown("better", "Button"),
    "confirm_delete": _shown("confirm_delete", "Button"), "char_editable": _char_editable, "scenes": _scenes,
}


# -- a panel's events (the group chat, the memory panels) -------------------------------------------------------
def panel_event(gr: Any, fn: Any, outputs: dict[str, Any], streaming: bool = False) -> Any:
    """``fn`` as a Gradio event: its view mapped onto ``outputs``; a library error is a toast, nothing changes."""
    def to_gradio(view: View) -> dict:
        out = {}
        for name, value in view.items():
            if name not in outputs:
                continue
            out[outputs[name]] = gr.update(**value) if isinstance(value, dict) else value
        return out or {outputs["g_status"]: gr.skip()}

    if streaming:
        @functools.wraps(fn)
        def run_stream(*args):
            try:
                for view in fn(*args):
                    yield to_gradio(view)
            except ChatHaruhiError as exc:
                raise gr.Error(toast(exc)) from None
        return run_stream

    @functools.wraps(fn)
    def run(*args):
        try:
            return to_gradio(fn(*args))
        except ChatHaruhiError as exc:
            raise gr.Error(toast(exc)) from None
    return run
