"""``chatharuhi chat NAME NAME...``: a terminal conversation with several characters: each round's speakers
stream in turn; ``/speak``, ``/mute``, ``/order`` and the rest steer who speaks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ...errors import ChatHaruhiError, InputError
from .commands import CHAT_HINT, MEMORY_COMMANDS, memory_command, unknown_command
from .kept import LOAD_LIST_SIZE, keep_first, listing, resume_id, terminal_chats

if TYPE_CHECKING:
    from ...sessions import SessionStore

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
            self.out(unknown_command(name, GROUP_COMMANDS))
        return None

    def _load(self, arg: str) -> None:
        chats = terminal_chats(self.store, self.key)
        if not arg:
            if not chats:
                self.out("(no earlier chats with this group yet)")
            for line in listing(self.store, chats, "rounds"):
                self.out(line)
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
        keep_first(self.store, session.id, (history[0].text or history[0].replies[0].text).strip().splitlines()[0])


def run_group_chat(make_group: Callable[..., Any], store: "SessionStore", resume: Any = None) -> int:
    """``chatharuhi chat NAME NAME...``: ``resume`` is None, True (the newest chat of this group) or a session id."""
    chat = GroupTerminalChat(make_group, store)
    return chat.run(resume_id(store, resume, chat.key))
