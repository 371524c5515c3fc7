"""``chatharuhi chat``: the terminal conversation, with one character (one_to_one.py) or several (group.py), the
slash commands they share (commands.py) and the chats it keeps (kept.py).

Every turn is stored in the same session store as the web demo's chats (the data folder's
``sessions.sqlite3`` unless ``CHATHARUHI_STORE`` says otherwise) and marked as a terminal chat, so
the demo served on this machine lists it and ``--resume`` or ``/load`` opens it again later.
"""

from .commands import CHAT_HINT, MEMORY_COMMANDS, memory_command
from .group import GROUP_COMMANDS, GROUP_HELP, GroupTerminalChat, run_group_chat
from .kept import LOAD_LIST_SIZE, TITLE_CHARS, latest_chat, terminal_chats, terminal_owners
from .one_to_one import COMMANDS_HELP, OFFERED_FILE, TerminalChat, run_chat

__all__ = ["CHAT_HINT", "COMMANDS_HELP", "GROUP_COMMANDS", "GROUP_HELP", "LOAD_LIST_SIZE", "MEMORY_COMMANDS",
           "OFFERED_FILE", "TITLE_CHARS", "GroupTerminalChat", "TerminalChat", "latest_chat", "memory_command",
           "run_chat", "run_group_chat", "terminal_chats", "terminal_owners"]
