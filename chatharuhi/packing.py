"""Pack a prompt under a token budget: system prompt, lorebook entries, retrieved scenes, history, query.

``pack`` is a pure function. It counts everything that is sent, with the chat format's overhead,
and returns the messages and a ``Trace`` of where every token went. Scenes that do not fit are
skipped (a smaller one further down may still fit); history keeps the newest whole turns and never
exceeds its share. A mandatory part that cannot fit raises ``BudgetError``.

Exactness without re-encoding the whole prompt on every turn: the system message is a
concatenation of units that each end in a newline and start with a non-space character, so
tiktoken splits at every unit boundary and the count of the whole is the sum of the units.
Lorebook entries (``lore``) that fired are units too, placed after the system prompt and before the
story block, with their own share (``Budget.lore_tokens``, claimed only when some entry fired).
Counters that are not additive that way (``counter.additive`` false) get one exact count of the
packed messages, and the lowest-ranked parts are dropped until it fits.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Sequence

from .config import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_HISTORY_TOKENS,
    DEFAULT_LORE_TOKENS,
    DEFAULT_REPLY_RESERVE,
    DEFAULT_STORY_TOKENS,
)
from .errors import BudgetError, InputError
from .options import strict
from .tokens import TokenCounter
from .types import Message, PartTrace, Trace

SYSTEM_SEPARATOR = "\n\n"  # between the system prompt and the story block
# Where retrieved scenes and lore go. "system": in the system message (the default, as ChatHaruhi does).
# "stable_prefix": in the last user message, before the query, so that the system prompt and the committed
# history form a prefix that is the same on every turn and a local model's KV cache keeps it.
LAYOUTS = ("system", "stable_prefix")


@strict
@dataclass(frozen=True)
class Budget:
    """The model's window and how to share it."""

    context_window: int = DEFAULT_CONTEXT_WINDOW
    reply_reserve: int = DEFAULT_REPLY_RESERVE
    story_tokens: int = DEFAULT_STORY_TOKENS
    history_tokens: int = DEFAULT_HISTORY_TOKENS
    lore_tokens: int = DEFAULT_LORE_TOKENS

    @property
    def prompt_tokens(self) -> int:
        """Tokens the prompt may use: the window minus the reply reserve."""
        return self.context_window - self.reply_reserve


@dataclass(frozen=True)
class SceneUnit:
    """A ranked scene, already rendered as it will appear in the story block."""

    id: str
    text: str
    score: float | None = None


@dataclass(frozen=True)
class LoreUnit:
    """A lorebook entry that fired, in budget order; ``order`` sets its place in the prompt."""

    id: str
    text: str
    order: int = 0
    key: str = ""


@dataclass(frozen=True)
class HistoryTurn:
    """An earlier exchange, rendered: the user's message and the character's reply."""

    id: str
    user: str
    assistant: str


@dataclass
class Packed:
    """The messages to send and the trace of how they were chosen."""

    messages: list[Message]
    trace: Trace
    scene_ids: list[str] = field(default_factory=list)


class _Costs:
    """Per-counter constants of the chat format, derived from the counter itself (once per counter)."""

    _cache: "weakref.WeakKeyDictionary[TokenCounter, _Costs]" = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, counter: TokenCounter) -> "_Costs":
        try:
            return cls._cache[counter]
        except (KeyError, TypeError):
            costs = cls(counter)
            try:
                cls._cache[counter] = costs
            except TypeError:  # a counter that cannot be weakly referenced is measured every time
                pass
            return costs

    def __init__(self, counter: TokenCounter):
        self.counter = counter
        # Measured next to a system message: some chat templates (SmolLM2's) insert a default system
        # prompt when there is none, which would inflate every per-message estimate.
        system = Message("system", "")
        base = counter.count_messages([system])
        self.priming = counter.count_messages([])
        self.per_role = {"system": base - self.priming}
        for role in ("user", "assistant"):
            self.per_role[role] = counter.count_messages([system, Message(role, "")]) - base

    def message(self, role: str, content: str) -> int:
        return self.per_role[role] + self.counter.count(content)


def _unit(text: str) -> str:
    """A story unit: no leading whitespace, exactly one trailing newline."""
    return text.strip() + "\n"


def _shares(budget: Budget, available: int, lore: bool = False) -> tuple[int, int, int]:
    """Story, history and lore caps, scaled down together when the window is too small for all."""
    story, history = max(0, budget.story_tokens), max(0, budget.history_tokens)
    lore_want = max(0, budget.lore_tokens) if lore else 0
    total = story + history + lore_want
    if total <= available:
        return story, history, lore_want
    if total == 0:
        return 0, 0, 0
    story_cap = available * story // total
    lore_cap = available * lore_want // total
    return story_cap, available - story_cap - lore_cap, lore_cap


def _fill(items, cap: int, opening: int, counter: TokenCounter, traces: list[PartTrace], part: str,
          extra, stop_when_full: bool = False) -> tuple[int, list]:
    """Greedy fill in rank order: an item that does not fit is skipped, not a stop (a smaller one may fit),
    unless ``stop_when_full`` (lore, as SillyTavern fills it: nothing after the first entry that overflows).

    The first item kept also pays ``opening`` (its block's separator and header). Returns the tokens
    used and the kept ``(item, unit)`` pairs; appends one ``PartTrace`` per item to ``traces``."""
    used, kept, full = 0, [], False
    for item in items:
        unit = _unit(item.text)
        cost = counter.count(unit) + (0 if kept else opening)
        if full:
            traces.append(PartTrace(item.id, cost, False, f"after the {part} budget was full", **extra(item)))
        elif used + cost <= cap:
            used += cost
            kept.append((item, unit))
            traces.append(PartTrace(item.id, cost, True, **extra(item)))
        else:
            reason = f"larger than the {part} budget" if cost > cap else f"over the {part} budget"
            traces.append(PartTrace(item.id, cost, False, reason, **extra(item)))
            full = stop_when_full
    return used, kept


@strict
def pack(
    system_prompt: str,
    story_header: str,
    scenes: Sequence[SceneUnit],
    history: Sequence[HistoryTurn],
    query: str,
    counter: TokenCounter,
    budget: Budget = Budget(),
    lore: Sequence[LoreUnit] = (),
    lore_header: str = "",
    layout: str = "system",
) -> Packed:
    """Fill the budget: mandatory parts first, then lore entries, the best scenes, the newest whole turns.

    ``layout`` (one of ``LAYOUTS``) says where the scenes and lore go; "stable_prefix" is always recounted
    exactly."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown prompt layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if budget.prompt_tokens <= 0:
        raise BudgetError(
            f"reply_reserve ({budget.reply_reserve}) leaves no room in context_window ({budget.context_window}); "
            "lower reply_reserve or raise context_window",
            part="reply_reserve",
        )
    costs = _Costs.of(counter)
    limit = budget.prompt_tokens
    system_plain = system_prompt.strip()
    sys_tokens = counter.count(system_plain)
    query_tokens = counter.count(query)
    mandatory = costs.priming + costs.per_role["system"] + sys_tokens + costs.per_role["user"] + query_tokens
    if costs.priming + costs.per_role["system"] + sys_tokens > limit:
        raise BudgetError(
            f"the system prompt alone is {sys_tokens} tokens but the prompt budget is {limit} "
            f"(context_window {budget.context_window} - reply_reserve {budget.reply_reserve}); "
            "shorten system_prompt.txt or raise context_window",
            part="system_prompt", tokens=sys_tokens, budget=limit,
        )
    if mandatory > limit:
        room = limit - (mandatory - query_tokens)
        raise BudgetError(
            f"the message is {query_tokens} tokens but only {room} fit after the system prompt "
            f"(context_window {budget.context_window} - reply_reserve {budget.reply_reserve}); "
            "shorten the message or raise context_window",
            part="query", tokens=query_tokens, budget=room,
        )
    story_cap, history_cap, lore_cap = _shares(budget, limit - mandatory, bool(lore))
    trace = Trace(budget=limit, story_budget=story_cap, history_budget=history_cap, lore_budget=lore_cap)

    # Lore: entries in budget order; the first one kept brings the separator and the lore header.
    head = system_plain + SYSTEM_SEPARATOR
    separator = counter.count(head) - sys_tokens
    lore_head = _unit(lore_header) if lore_header.strip() else ""
    lore_opening = separator + (counter.count(lore_head) if lore_head else 0)
    lore_used, lore_kept = _fill(lore, lore_cap, lore_opening, counter, trace.lore, "lore",
                                 lambda e: {"key": e.key}, stop_when_full=True)
    lore_kept.sort(key=lambda pair: pair[0].order)  # prompt order is insertion order, not budget order
    lore_block = (lore_head + "".join(u for _, u in lore_kept)) if lore_kept else ""

    # Story: the system unit gains a separator (unless the lore paid it) and a header with the first scene.
    header = _unit(story_header) if story_header.strip() else ""  # a bare "\n" would merge with the separator
    opening = (0 if lore_kept else separator) + counter.count(header)
    story_used, included = _fill(scenes, story_cap, opening, counter, trace.scenes, "story",
                                 lambda s: {"score": s.score})

    # History: newest whole turns, stopping at the first that does not fit.
    history_used, kept = 0, []
    full = False
    for turn in reversed(history):
        cost = costs.message("user", turn.user) + costs.message("assistant", turn.assistant)
        if not full and history_used + cost <= history_cap:
            history_used += cost
            kept.append(turn)
            trace.turns.append(PartTrace(turn.id, cost, True))
        else:
            full = True
            trace.turns.append(PartTrace(turn.id, cost, False, "over the history budget"))
    kept.reverse()
    trace.turns.reverse()

    messages = _assemble(system_plain, head, header, included, kept, query, lore_block, layout)
    total = mandatory + lore_used + story_used + history_used
    if not getattr(counter, "additive", False) or layout != "system":
        total = _fit_exactly(messages, counter, limit, system_plain, head, header, included, kept, query, trace,
                             lore_kept, lore_head, layout)
        story_used = sum(t.tokens for t in trace.scenes if t.included)
        history_used = sum(t.tokens for t in trace.turns if t.included)
        lore_used = sum(t.tokens for t in trace.lore if t.included)
    trace.total_tokens = total
    trace.parts = {
        "system_prompt": sys_tokens,
        "story": story_used,
        "history": history_used,
        "query": query_tokens,
        "overhead": total - sys_tokens - story_used - history_used - query_tokens - lore_used,
    }
    if lore:
        trace.parts["lore"] = lore_used
    return Packed(messages, trace, [s.id for s, _ in included])


def _assemble(system_plain, head, header, included, kept, query, lore_block="", layout="system") -> list[Message]:
    block = lore_block + (header + "".join(unit for _, unit in included) if included else "")
    stable = layout == "stable_prefix"
    messages = [Message("system", head + block if block and not stable else system_plain)]
    for turn in kept:
        messages += [Message("user", turn.user), Message("assistant", turn.assistant)]
    messages.append(Message("user", block + "\n" + query if block and stable else query))
    return messages


def _fit_exactly(messages, counter, limit, system_plain, head, header, included, kept, query, trace,
                 lore_kept=(), lore_head="", layout="system") -> int:
    """Recount exactly; drop the lowest-ranked scene, then lore, then the oldest turn, until the prompt fits."""
    lore_kept = list(lore_kept)

    def block() -> str:
        return (lore_head + "".join(u for _, u in lore_kept)) if lore_kept else ""

    total = counter.count_messages(messages)
    while total > limit and (included or kept or lore_kept):
        if included:
            dropped, _ = included.pop()
            part = next(t for t in reversed(trace.scenes) if t.id == dropped.id and t.included)
        elif lore_kept:
            worst = max(range(len(lore_kept)), key=lambda i: [t.id for t in trace.lore].index(lore_kept[i][0].id))
            dropped, _ = lore_kept.pop(worst)
            part = next(t for t in trace.lore if t.id == dropped.id and t.included)
        else:
            dropped = kept.pop(0)
            part = next(t for t in trace.turns if t.id == dropped.id and t.included)
        part.included, part.reason = False, "dropped after the exact count"
        messages[:] = _assemble(system_plain, head, header, included, kept, query, block(), layout)
        total = counter.count_messages(messages)
    if total > limit:
        raise BudgetError(f"the mandatory parts are {total} tokens by the exact count, over the budget of {limit}",
                          part="query", tokens=total, budget=limit)
    return total
