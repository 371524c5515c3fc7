"""``chatharuhi chat NAME``: a terminal conversation with one character, its slash commands, and the offer of a
better model on the tiny embedded one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ...errors import ChatHaruhiError, InputError
from .commands import CHAT_HINT, MEMORY_COMMANDS, memory_command, unknown_command
from .kept import LOAD_LIST_SIZE, claim, keep_first, listing, resume_id, terminal_chats

if TYPE_CHECKING:
    from ...sessions import SessionStore
    from ..chatbot import Chatbot

COMMANDS_HELP = """commands:
  /help          this list
  /load          list your earlier chats with this character; /load N opens number N, /load FILE a /save file
  /save FILE     write this chat to a JSON file (it is also kept in the chat list automatically)
  /reset         start a new chat (the old one stays in the list)
  /trace         why the last reply looked that way (scenes and tokens, as JSON)
  /remember TEXT pin a fact: it is in every prompt of this chat (/memory lists them)
  /memory        the pinned facts (numbered), the summary and how many turns are remembered
  /fact N TEXT   change pinned fact N; /forget N unpins it
  /better        on the tiny embedded model: download the recommended model and go on with it
  /quit          leave (so does Ctrl-D); Ctrl-C stops a reply without keeping it"""
OFFERED_FILE = "better-model-offered"  # in the data folder: the first-run question is asked once


class TerminalChat:
    """One terminal conversation: reads lines, runs slash commands, streams replies, keeps the chat."""

    def __init__(self, make_bot: Callable[..., "Chatbot"], store: "SessionStore",
                 out: Callable[[str], None] = print, ask: Callable[[str], str] = input):
        self.make_bot, self.store, self.out, self.ask = make_bot, store, out, ask
        self.bot = make_bot()

    def run(self, resume: str | None = None) -> int:
        """The read-reply loop until /quit or end of input."""
        if resume is not None:
            self._open(resume)
        c = self.bot.character
        self.out(f"[{c.display_name}] — {CHAT_HINT}; this chat is kept in {self.store_where()}")
        self._offer_better()
        if c.manifest.greeting and not self.bot.history:
            self.out(f"{c.speaker}: {c.manifest.greeting}")
        while True:
            try:
                line = self.ask(f"{self.bot.user_role}> ").strip()
            except (EOFError, KeyboardInterrupt):
                self.out("")
                return 0
            if not line:
                continue
            if line.startswith("/"):
                if self.command(line) == "quit":
                    return 0
                continue
            self.reply(line)

    def store_where(self) -> str:
        path = getattr(self.store, "path", None)
        return str(path) if path else "the session store"

    def command(self, line: str) -> str | None:
        """Run one slash command; an unknown one is named with the list, never sent to the character."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit"):
            return "quit"
        if name in ("/help", "/?"):
            self.out(COMMANDS_HELP)
        elif name == "/reset":
            self.bot.reset()  # the next turn starts a new stored chat
            self.out("(new chat; the old one stays in /load's list)")
        elif name == "/trace":
            trace = self.bot.last_trace.as_dict() if self.bot.last_trace else None
            self.out(json.dumps(trace, ensure_ascii=False, indent=1))
        elif name == "/save":
            if not arg:
                self.out("usage: /save FILE")
            else:
                path = Path(arg).expanduser().resolve()
                self.bot.save(path)
                self.out(f"(saved to {path}; /load {arg} opens it again)")
        elif name == "/load":
            self._load(arg)
        elif name == "/better":
            self.better()
        elif name in MEMORY_COMMANDS:
            memory_command(self.bot.memory, name, arg, self.out)
        else:
            self.out(unknown_command(name, ["/help", "/load", "/save", "/reset", "/trace", "/better", "/quit",
                                            *MEMORY_COMMANDS]))
        return None

    def _on_embedded(self) -> bool:
        from ...models.catalog import BUILTIN

        entry = self.bot.backend.model_entry
        return entry is not None and entry.name == BUILTIN.name

    def _offer_better(self) -> None:
        """The first run on the embedded model, in a terminal: offer the recommended model once."""
        from ...config import better_model, home_dir
        from ...models.catalog import find_model
        from ...models.store import format_size

        if not self._on_embedded():
            return
        e = find_model(better_model())
        pitch = (f"you are on the tiny embedded model (English only, short replies); {e.title} ({format_size(e.size)}, "
                 f"licence {e.licence}) speaks Chinese and English and stays in character")
        marker = home_dir() / OFFERED_FILE
        if not sys.stdin.isatty() or marker.exists():
            self.out(f"({pitch}: /better downloads it)")
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(e.name, encoding="utf-8")
        try:
            answer = self.ask(f"{pitch}. Download it now? [y/N] ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            answer = ""
        if answer in ("y", "yes"):
            self.better()
        else:
            self.out("(not now: /better downloads it whenever you like)")

    def better(self) -> None:
        """Pull the recommended model (resumable, with a progress bar) and go on with it in this chat."""
        from ...backends.registry import resolve_backend
        from ...config import better_model
        from ...models.download import pull_model

        name = better_model()
        if not self._on_embedded():
            self.out("(this chat already uses a model other than the embedded one)")
            return
        try:
            pull_model(name, progress=True)
        except KeyboardInterrupt:
            self.out("\n(download stopped; /better resumes it where it stopped)")
            return
        except ChatHaruhiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return
        session = self.bot.session
        self.bot = self.make_bot(llm=resolve_backend("llama_cpp", model=name), embedder=self.bot.embedder,
                                 **({"session": session, "user_role": session.user_role} if session else {}))
        self.out(f"(now chatting with {name}; it is the default from now on)")

    def _load(self, arg: str) -> None:
        chats = terminal_chats(self.store, self.bot.character.name)
        if not arg:
            if not chats:
                self.out("(no earlier chats with this character yet)")
            for line in listing(self.store, chats, "turns"):
                self.out(line)
            if chats:
                self.out("/load N opens one")
            return
        if arg.isdigit():
            n = int(arg)
            if not 1 <= n <= min(len(chats), LOAD_LIST_SIZE):
                self.out(f"there is no chat {n}: /load lists them")
                return
            self._open(chats[n - 1].id)
        else:
            path = Path(arg).expanduser()
            if not path.is_file():
                self.out(f"{path}: no such file (and not a number from /load's list)")
                return
            self._open(self._import_saved(path))
        self._show()

    def _import_saved(self, path: Path) -> str:
        """A ``/save`` file becomes a stored chat (so it is in the lists from now on); returns its id."""
        from ..chatbot import Chatbot

        saved = Chatbot.load(path, llm=self.bot.backend, embedder=self.bot.embedder)
        if saved.character.name != self.bot.character.name:
            raise InputError(f"{path} is a chat with {saved.character.name}, not {self.bot.character.name}: "
                             f"`chatharuhi chat {saved.character.name}` and /load it there")
        session = self.store.create(saved.character.name, saved.user_role, title=f"from {path.name}")
        for turn in saved.history:
            self.store.append_turn(session.id, turn)
        claim(self.store, session.id)
        return session.id

    def _open(self, session_id: str) -> None:
        try:
            session = self.store.get(session_id)
        except (ChatHaruhiError, LookupError):
            raise InputError(f"no chat {session_id!r} in {self.store_where()}: `/load` in a chat lists them") from None
        self.bot = self.make_bot(session=session, user_role=session.user_role, llm=self.bot.backend,
                                 embedder=self.bot.embedder)

    def _show(self) -> None:
        c = self.bot.character
        turns = self.bot.history
        self.out(f"(opened a chat of {len(turns)} turns; the last ones:)")
        for t in turns[-3:]:
            self.out(f"{t.user_role}: {t.text}")
            self.out(f"{c.speaker}: {t.reply}")

    def reply(self, text: str) -> None:
        """Stream the character's reply; a stopped reply is not kept."""
        c = self.bot.character
        self.out_raw(f"{c.speaker}: ")
        try:
            reply = self.bot.stream(text)
            for chunk in reply:
                self.out_raw(chunk)
            if reply.finish_reason == "length":  # never a silent stop mid-word
                self.out_raw(f" … (cut at the maximum reply length, {reply.options.get('max_tokens')} tokens)")
            self.out("")
        except KeyboardInterrupt:
            self.out("\n(reply stopped; not kept in the conversation)")
            return
        except ChatHaruhiError as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            return
        self._keep()

    def out_raw(self, text: str) -> None:
        print(text, end="", flush=True)

    def _keep(self) -> None:
        """After the first turn: give the chat a title and mark it as a terminal chat (for the lists)."""
        session = self.bot.session
        if session is None or len(self.bot.history) != 1:
            return
        keep_first(self.store, session.id, self.bot.history[0].text.strip().splitlines()[0])


def run_chat(make_bot: Callable[..., "Chatbot"], store: "SessionStore", resume: Any = None) -> int:
    """``chatharuhi chat``: ``resume`` is None, True (the newest chat) or a session id."""
    chat = TerminalChat(make_bot, store)
    return chat.run(resume_id(store, resume, chat.bot.character.name))
