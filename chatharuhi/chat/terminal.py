"""``chatharuhi chat``: the terminal conversation, its slash commands and the chats it keeps.

Every turn is stored in the same session store as the web demo's chats (the data folder's
``sessions.sqlite3`` unless ``CHATHARUHI_STORE`` says otherwise) and marked as a terminal chat, so
the demo served on this machine lists it and ``--resume`` or ``/load`` opens it again later.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ChatHaruhiError, InputError

if TYPE_CHECKING:
    from ..sessions import SessionStore
    from .chatbot import Chatbot

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
MEMORY_COMMANDS = ("/remember", "/memory", "/fact", "/forget")
CHAT_HINT = "type /help for commands"
LOAD_LIST_SIZE = 10
TITLE_CHARS = 30


def terminal_owners(store: "SessionStore"):
    """The demo's table of chat owners beside ``store`` (terminal chats are marked there)."""
    from ..web.owners import Owners, owners_path_for

    return Owners(owners_path_for(store))


def terminal_chats(store: "SessionStore", character: str) -> list:
    """This character's terminal chats, newest first."""
    owners = terminal_owners(store)
    try:
        ids = set(owners.terminal_sessions())
    finally:
        owners.close()
    found = [s for s in store.list(character=character, limit=1000) if s.id in ids]
    return sorted(found, key=lambda s: s.updated, reverse=True)


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
            import difflib

            known = ["/help", "/load", "/save", "/reset", "/trace", "/better", "/quit", *MEMORY_COMMANDS]
            close = difflib.get_close_matches(name, known, n=1)
            self.out(f"unknown command {name}" + (f"; did you mean {close[0]}?" if close else "") +
                     f" ({CHAT_HINT}; to say something starting with /, put a space before it)")
        return None

    def _on_embedded(self) -> bool:
        from ..models.catalog import BUILTIN

        entry = getattr(self.bot.backend, "model_entry", None)
        return entry is not None and entry.name == BUILTIN.name

    def _offer_better(self) -> None:
        """The first run on the embedded model, in a terminal: offer the recommended model once."""
        from ..config import better_model, home_dir
        from ..models.catalog import find_model
        from ..models.store import format_size

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
        from ..backends.registry import resolve_backend
        from ..config import better_model
        from ..models.download import pull_model

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
            for i, s in enumerate(chats[:LOAD_LIST_SIZE], 1):
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated))
                self.out(f"  {i}. {s.title or '(untitled)'} · {len(self.store.turns(s.id))} turns · {when}")
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
        from .chatbot import Chatbot

        saved = Chatbot.load(path, llm=self.bot.backend, embedder=self.bot.embedder)
        if saved.character.name != self.bot.character.name:
            raise InputError(f"{path} is a chat with {saved.character.name}, not {self.bot.character.name}: "
                             f"`chatharuhi chat {saved.character.name}` and /load it there")
        session = self.store.create(saved.character.name, saved.user_role, title=f"from {path.name}")
        for turn in saved.history:
            self.store.append_turn(session.id, turn)
        _claim(self.store, session.id)
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
        first = self.bot.history[0].text.strip().splitlines()[0]
        title = first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…"
        self.store.rename(session.id, title)
        _claim(self.store, session.id)


def memory_command(memory: Any, name: str, arg: str, out: Callable[[str], None], group: bool = False) -> None:
    """``/remember``, ``/memory``, ``/fact`` and ``/forget`` on a chat's memory (a chatbot's, or a group's:
    ``/remember @NAME TEXT`` pins for one member)."""
    if memory is None:
        out("(this chat was started with memory off)")
        return
    try:
        if name == "/remember":
            if not arg:
                out("usage: /remember TEXT   (in a group, /remember @NAME TEXT pins it for one character)")
                return
            who, _, rest = arg.partition(" ")
            one = group and who.startswith("@") and rest.strip()
            fact = memory.pin(rest, character=who[1:]) if one else memory.pin(arg)
            out(f"(pinned as fact {fact.id}: it is in every prompt of this chat; /memory lists the facts)")
        elif name == "/memory":
            _show_memory(memory, out)
        else:
            number, _, text = arg.partition(" ")
            if not number:
                out(f"usage: {name} N{' TEXT' if name == '/fact' else ''}   (/memory lists the facts' numbers)")
            elif name == "/fact":
                out(f"(fact {memory.edit(number, text).id} changed)")
            else:
                out(f"(fact {memory.forget(number).id} unpinned)")
    except ChatHaruhiError as exc:
        out(f"error: {exc}")


def _show_memory(memory: Any, out: Callable[[str], None]) -> None:
    facts = memory.facts
    if not facts:
        out("(no pinned facts: /remember TEXT pins one)")
    for fact in facts:
        out(f"  {fact.id}. {fact.text}" + (f"   (only {fact.character})" if fact.character else ""))
    if memory.summary:
        out(f"summary: {memory.summary}")
    out(f"({len(memory.entries)} earlier turns can be recalled when they match what you say)")


def _claim(store: "SessionStore", session_id: str) -> None:
    owners = terminal_owners(store)
    try:
        owners.claim_terminal(session_id)
    finally:
        owners.close()


def latest_chat(store: "SessionStore", character: str) -> str:
    """The id of the newest terminal chat with ``character`` (``--resume`` without an id)."""
    chats = terminal_chats(store, character)
    if not chats:
        raise InputError(f"no earlier terminal chat with {character} to resume: start one with "
                         f"`chatharuhi chat {character}`")
    return chats[0].id


def run_chat(make_bot: Callable[..., "Chatbot"], store: "SessionStore", resume: Any = None) -> int:
    """``chatharuhi chat``: ``resume`` is None, True (the newest chat) or a session id."""
    chat = TerminalChat(make_bot, store)
    if resume is True:
        resume = latest_chat(store, chat.bot.character.name)
    return chat.run(resume)


GROUP_HELP = """commands:
  /help             this list
  /speak NAME       let NAME speak now (muted or not); /speak NAME TEXT says TEXT and has NAME answer it
  /mute NAME        NAME speaks only when you ask (/speak); /unmute NAME lets it join in again
  /who              who is here, who is muted, and the turn order
  /order ORDER      natural (whom you address first, then talkativeness), list (everyone in turn) or manual
                    (only whom you address or /speak)
  /remember [@NAME] TEXT   pin a fact for everyone (or for one character); /memory, /fact N TEXT, /forget N
  /undo             take back the last round
  /load, /save FILE, /reset, /trace, /quit   as in a one-to-one chat"""
GROUP_COMMANDS = ("/help", "/speak", "/mute", "/unmute", "/who", "/order", "/undo", "/load", "/save", "/reset",
                  "/trace", "/quit", *MEMORY_COMMANDS)


class GroupTerminalChat:
    """A terminal conversation with several characters: each round's speakers stream in turn."""

    def __init__(self, make_group: Callable[..., Any], store: "SessionStore",
                 out: Callable[[str], None] = print, ask: Callable[[str], str] = input):
        self.make_group, self.store, self.out, self.ask = make_group, store, out, ask
        self.group = make_group()

    @property
    def key(self) -> str:
        """The group's name, as its sessions are listed."""
        return self.group.dialogue.key

    def run(self, resume: str | None = None) -> int:
        """The read-reply loop until /quit or end of input."""
        if resume is not None:
            self._open(resume)
        names = "、".join(b.character.display_name for b in self.group.bots.values())
        self.out(f"[{names}] — {CHAT_HINT}; this chat is kept in {getattr(self.store, 'path', 'the store')}")
        while True:
            try:
                line = self.ask(f"{self.group.user_role}> ").strip()
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

    def command(self, line: str) -> str | None:
        """Run one slash command; an unknown one is named with the list, never sent to the characters."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        try:
            return self._command(name, arg)
        except ChatHaruhiError as exc:
            self.out(f"error: {exc}")
            return None

    def _command(self, name: str, arg: str) -> str | None:
        g = self.group
        if name in ("/quit", "/exit"):
            return "quit"
        if name in ("/help", "/?"):
            self.out(GROUP_HELP)
        elif name == "/speak":
            who, _, text = arg.partition(" ")
            if not who:
                self.out("usage: /speak NAME [TEXT]")
            else:
                self.reply(text.strip() or None, speakers=[who])
        elif name in ("/mute", "/unmute"):
            (g.mute if name == "/mute" else g.unmute)(arg)
            self.out(f"(muted: {', '.join(sorted(g.muted)) or 'nobody'})")
        elif name == "/who":
            self.out(f"here: {', '.join(g.characters)}; muted: {', '.join(sorted(g.muted)) or 'nobody'}; "
                     f"order: {g.order.order}, at most {g.order.max_replies} replies a message")
        elif name == "/order":
            g.set_order(arg)
            self.out(f"(turn order: {arg})")
        elif name == "/undo":
            rnd = g.undo()
            self.out(f"(took back the round: {rnd.text or '(a character went on)'})")
        elif name == "/reset":
            g.reset()
            self.out("(new chat; the old one stays in /load's list)")
        elif name == "/trace":
            self.out(json.dumps({k: t.as_dict() for k, t in g.last_traces.items()}, ensure_ascii=False, indent=1))
        elif name == "/save":
            if not arg:
                self.out("usage: /save FILE")
            else:
                path = Path(arg).expanduser().resolve()
                g.save(path)
                self.out(f"(saved to {path}; GroupChat.load opens it in Python)")
        elif name == "/load":
            self._load(arg)
        elif name in MEMORY_COMMANDS:
            memory_command(g.memory, name, arg, self.out, group=True)
        else:
            import difflib

            close = difflib.get_close_matches(name, GROUP_COMMANDS, n=1)
            self.out(f"unknown command {name}" + (f"; did you mean {close[0]}?" if close else "") +
                     f" ({CHAT_HINT}; to say something starting with /, put a space before it)")
        return None

    def _load(self, arg: str) -> None:
        chats = terminal_chats(self.store, self.key)
        if not arg:
            if not chats:
                self.out("(no earlier chats with this group yet)")
            for i, s in enumerate(chats[:LOAD_LIST_SIZE], 1):
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated))
                self.out(f"  {i}. {s.title or '(untitled)'} · {len(self.store.turns(s.id))} rounds · {when}")
            if chats:
                self.out("/load N opens one")
            return
        if not arg.isdigit() or not 1 <= int(arg) <= min(len(chats), LOAD_LIST_SIZE):
            self.out(f"there is no chat {arg}: /load lists them")
            return
        self._open(chats[int(arg) - 1].id)
        self.out(f"(opened a chat of {len(self.group.history)} rounds)")

    def _open(self, session_id: str) -> None:
        try:
            session = self.store.get(session_id)
        except (ChatHaruhiError, LookupError):
            raise InputError(f"no chat {session_id!r} in the store: `/load` in a chat lists them") from None
        self.group = self.make_group(session=session, llm=self.group.backend, embedder=self.group.embedder)

    def reply(self, text: str | None, speakers: list[str] | None = None) -> None:
        """Stream each speaker's reply in turn; a stopped one is not kept (the ones before it are)."""
        try:
            rounds = self.group.stream(text, speakers=speakers)
            try:
                for speaking in rounds:
                    self.out_raw(f"{self.group.bots[speaking.speaker].character.speaker}: ")
                    for chunk in speaking:
                        self.out_raw(chunk)
                    self.out("")
            finally:
                rounds.close()
        except KeyboardInterrupt:
            self.out("\n(reply stopped; the replies before it are kept)")
        except ChatHaruhiError as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            return
        self._keep()

    def out_raw(self, text: str) -> None:
        print(text, end="", flush=True)

    def _keep(self) -> None:
        session = self.group.session
        history = self.group.history
        if session is None or len(history) != 1:
            return
        first = (history[0].text or history[0].replies[0].text).strip().splitlines()[0]
        self.store.rename(session.id, first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…")
        _claim(self.store, session.id)


def run_group_chat(make_group: Callable[..., Any], store: "SessionStore", resume: Any = None) -> int:
    """``chatharuhi chat NAME NAME...``: ``resume`` is None, True (the newest chat of this group) or a session id."""
    chat = GroupTerminalChat(make_group, store)
    if resume is True:
        resume = latest_chat(store, chat.key)
    return chat.run(resume)
