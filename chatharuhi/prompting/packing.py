"""Pack a prompt under a token budget: system prompt, memory, lorebook entries, retrieved scenes, history, query.

``pack`` is a pure function. It counts everything that is sent, with the chat format's overhead,
and returns the messages and a ``Trace`` of where every token went. Scenes that do not fit are
skipped (a smaller one further down may still fit); history keeps the newest whole turns and never
exceeds its share. A mandatory part that cannot fit raises ``BudgetError``.

Exactness without re-encoding the whole prompt on every turn: the system message is a
concatenation of units that each end in a newline and start with a non-space character, so
tiktoken splits at every unit boundary and the count of the whole is the sum of the units.
Lorebook entries (``lore``) that fired are units too, placed after the system prompt and before the
story block, with their own share (``Budget.lore_tokens``, claimed only when some entry fired).
Memory (``memory``: pinned facts, a summary, earlier turns recalled from the conversation) is a block of
units too, with its own share (``Budget.memory_tokens``, claimed only when there is some): in the system
message before the lore, or with the query in the cached-prefix layouts. A recalled turn still in the
history window is left out (it is there already).
Counters that are not additive that way (``counter.additive`` false) get one exact count of the
packed messages, and the lowest-ranked parts are dropped until it fits.

The parts and the result (``Budget``, ``SceneUnit``, ``LoreUnit``, ``MemoryUnit``, ``HistoryTurn``, ``Packed``) live
in ``parts.py`` and are importable from here too.
"""

from __future__ import annotations

import weakref
from typing import Sequence

from ..config import HISTORY_REBASE_SHARE, STORY_FRESH_SHARE
from ..errors import BudgetError, InputError
from ..options import strict
from ..types import Message, PartTrace, Trace
from .parts import Budget, HistoryTurn, LoreUnit, MemoryUnit, Packed, SceneUnit
from .tokens import TokenCounter

__all__ = ["LAYOUTS", "Budget", "HistoryTurn", "LoreUnit", "MemoryUnit", "Packed", "SceneUnit", "pack"]

SYSTEM_SEPARATOR = "\n\n"  # between the system prompt and the story block
# Where retrieved scenes and lore go. "system": in the system message (the default, as ChatHaruhi does).
# "stable_prefix": in the last user message, before the query, so that the system prompt and the committed
# history form a prefix that is the same on every turn and a local model's KV cache keeps it.
# "stable_story": the story in the system message and lore with the query; with a story kept across turns
# (reuse.py) the system prompt, the story and the history form that prefix, so the story is not re-read.
LAYOUTS = ("system", "stable_prefix", "stable_story")


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


def _shares(budget: Budget, available: int, lore: bool = False, memory: bool = False) -> tuple[int, int, int, int]:
    """Story, history, lore and memory caps, scaled down together when the window is too small for all."""
    story, history = max(0, budget.story_tokens), max(0, budget.history_tokens)
    lore_want = max(0, budget.lore_tokens) if lore else 0
    memory_want = max(0, budget.memory_tokens) if memory else 0
    total = story + history + lore_want + memory_want
    if total <= available:
        return story, history, lore_want, memory_want
    if total == 0:
        return 0, 0, 0, 0
    story_cap = available * story // total
    lore_cap = available * lore_want // total
    memory_cap = available * memory_want // total
    return story_cap, available - story_cap - lore_cap - memory_cap, lore_cap, memory_cap


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
    history_from: str | None = None,
    fresh_scenes: Sequence[SceneUnit] = (),
    memory: Sequence[MemoryUnit] = (),
    memory_header: str = "",
) -> Packed:
    """Fill the budget: mandatory parts first, then the newest whole turns, memory, lore entries, the best scenes.

    ``layout`` (one of ``LAYOUTS``) says where the scenes, lore and memory go; layouts other than "system" are
    always recounted exactly. ``history_from`` (the id of a turn) keeps the history starting at that turn while
    it fits, so that the prompt's prefix stays the same across turns; when it no longer fits, the newest
    turns are kept up to ``HISTORY_REBASE_SHARE`` of the history budget, leaving room to grow again."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown prompt layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if fresh_scenes and layout != "stable_story":
        raise InputError(f"fresh_scenes go with the query in the 'stable_story' layout, not in {layout!r}")
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
    trace = Trace(budget=limit)
    # Memory claims its share only when something in it is not in the history window already.
    for claim in (True, False) if memory else (False,):
        shares = _shares(budget, limit - mandatory, bool(lore), claim)
        trace.turns.clear()
        history_used, kept = _history(history, shares[1], costs, trace, history_from)
        recallable = _not_in_window(memory, kept)
        if recallable or not claim:
            break
    story_cap, history_cap, lore_cap, memory_cap = shares
    trace.story_budget, trace.history_budget, trace.lore_budget, trace.memory_budget = shares
    window = {t.id for t in kept}
    trace.memory.extend(PartTrace(u.id, 0, False, "still in the history window", u.score, u.kind)
                        for u in memory if window.intersection(u.turns))

    # Memory, then lore: blocks of units; the first block kept brings the separator after the system prompt.
    head = system_plain + SYSTEM_SEPARATOR
    separator = counter.count(head) - sys_tokens
    memory_head = _unit(memory_header) if memory_header.strip() else ""
    memory_used, memory_kept = _fill(recallable, memory_cap,
                                     separator + (counter.count(memory_head) if memory_head else 0), counter,
                                     trace.memory, "memory", lambda m: {"score": m.score, "key": m.kind})
    lore_head = _unit(lore_header) if lore_header.strip() else ""
    lore_opening = (0 if memory_kept else separator) + (counter.count(lore_head) if lore_head else 0)
    lore_used, lore_kept = _fill(lore, lore_cap, lore_opening, counter, trace.lore, "lore",
                                 lambda e: {"key": e.key}, stop_when_full=True)
    lore_kept.sort(key=lambda pair: pair[0].order)  # prompt order is insertion order, not budget order

    # Story: the system unit gains a separator (unless a block before it paid) and a header with the first scene.
    header = _unit(story_header) if story_header.strip() else ""  # a bare "\n" would merge with the separator
    opening = (0 if (memory_kept or lore_kept) and layout == "system" else separator) + counter.count(header)
    stable_cap = story_cap - int(story_cap * STORY_FRESH_SHARE) if fresh_scenes else story_cap
    story_used, included = _fill(scenes, stable_cap, opening, counter, trace.scenes, "story",
                                 lambda s: {"score": s.score})
    fresh = [s for s in fresh_scenes if not any(s.overlaps(k) for k, _ in included)]
    fresh_used, fresh_kept = _fill(fresh, story_cap - story_used, counter.count(header), counter, trace.scenes,
                                   "story", lambda s: {"score": s.score})
    story_used += fresh_used
    fresh_ids = {s.id for s, _ in fresh_kept}
    included += fresh_kept

    def assemble() -> list[Message]:
        in_order = sorted(memory_kept, key=lambda pair: pair[0].order)  # memory_kept stays in budget order
        blocks = _block(memory_head, in_order) + _block(lore_head, lore_kept)
        return _assemble(system_plain, head, header, included, kept, query, blocks, layout, fresh_ids)

    messages = assemble()
    total = mandatory + memory_used + lore_used + story_used + history_used
    if not getattr(counter, "additive", False) or layout != "system" or any(not t.assistant for t in kept):
        droppable = [(included, trace.scenes, lambda items: items.pop()[0]),
                     (lore_kept, trace.lore, lambda items: _pop_worst(items, trace.lore)),
                     (memory_kept, trace.memory, lambda items: items.pop()[0]),
                     (kept, trace.turns, lambda items: items.pop(0))]
        messages, total = _fit_exactly(counter, limit, assemble, droppable)
        story_used = sum(t.tokens for t in trace.scenes if t.included)
        history_used = sum(t.tokens for t in trace.turns if t.included)
        lore_used = sum(t.tokens for t in trace.lore if t.included)
        memory_used = sum(t.tokens for t in trace.memory if t.included)
    trace.total_tokens = total
    trace.parts = {
        "system_prompt": sys_tokens,
        "story": story_used,
        "history": history_used,
        "query": query_tokens,
        "overhead": total - sys_tokens - story_used - history_used - query_tokens - lore_used - memory_used,
    }
    if lore:
        trace.parts["lore"] = lore_used
    if memory:
        trace.parts["memory"] = memory_used
    return Packed(messages, trace, [s.id for s, _ in included], [s.id for s, _ in included if s.id in fresh_ids])


def _not_in_window(memory: Sequence[MemoryUnit], kept: Sequence[HistoryTurn]) -> list[MemoryUnit]:
    """The memory units to fill: a recalled turn still in the history window is left out."""
    window = {t.id for t in kept}
    return [unit for unit in memory if not window.intersection(unit.turns)]


def _block(head: str, kept: Sequence[tuple[object, str]]) -> str:
    """A header and its kept units, or nothing when none was kept."""
    return (head + "".join(u for _, u in kept)) if kept else ""


def _pop_worst(lore_kept: list, traces: list[PartTrace]) -> LoreUnit:
    """Remove and return the kept lore entry that came last in budget order."""
    order = [t.id for t in traces]
    worst = max(range(len(lore_kept)), key=lambda i: order.index(lore_kept[i][0].id))
    return lore_kept.pop(worst)[0]


def _history(history: Sequence[HistoryTurn], cap: int, costs: _Costs, trace: Trace,
             start: str | None) -> tuple[int, list[HistoryTurn]]:
    """The turns kept: from turn ``start`` to the newest when they fit, else the newest whole turns up to
    ``cap`` (or, when ``start`` no longer fits, up to ``HISTORY_REBASE_SHARE`` of it), oldest first."""
    cost = [costs.message("user", t.user) + (costs.message("assistant", t.assistant) if t.assistant else 0)
            for t in history]
    ids = [t.id for t in history]
    first = ids.index(start) if start in ids else None
    if first is not None and sum(cost[first:]) <= cap:
        reason = "before the turn the kept history starts at"
    else:
        limit = int(cap * HISTORY_REBASE_SHARE) if first is not None else cap
        first, used = len(history), 0
        while first > 0 and used + cost[first - 1] <= limit:
            first -= 1
            used += cost[first]
        reason = "over the history budget" if limit == cap else "over the history budget (the kept history restarted)"
    for i, turn in enumerate(history):
        trace.turns.append(PartTrace(turn.id, cost[i], i >= first, "" if i >= first else reason))
    return sum(cost[first:]), list(history[first:])


def _assemble(system_plain, head, header, included, kept, query, blocks="", layout="system",
              fresh_ids=frozenset()) -> list[Message]:
    """The messages: ``blocks`` (memory and lore) and the story where ``layout`` puts them; a history turn with
    no reply joins the next user message."""
    def block(units: list[str]) -> str:
        return header + "".join(units) if units else ""

    story = block([unit for s, unit in included if s.id not in fresh_ids])
    fresh = block([unit for s, unit in included if s.id in fresh_ids])
    in_system = {"system": blocks + story, "stable_prefix": "", "stable_story": story}[layout]
    with_query = {"system": "", "stable_prefix": blocks + story, "stable_story": blocks + fresh}[layout]
    messages = [Message("system", head + in_system if in_system else system_plain)]
    waiting: list[str] = []  # lines no reply followed yet
    for turn in kept:
        waiting.append(turn.user)
        if turn.assistant:
            messages += [Message("user", "\n".join(waiting)), Message("assistant", turn.assistant)]
            waiting = []
    last = with_query + "\n" + query if with_query else query
    messages.append(Message("user", "\n".join([*waiting, last])))
    return messages


def _fit_exactly(counter, limit, assemble, droppable) -> tuple[list[Message], int]:
    """Recount exactly; drop the lowest-ranked scene, then lore, then memory, then the oldest turn (the order of
    ``droppable``: (kept items, their traces, how to take one out)) until the prompt fits."""
    messages = assemble()
    total = counter.count_messages(messages)
    while total > limit:
        for items, traces, take in droppable:
            if items:
                dropped = take(items)
                part = next(t for t in reversed(traces) if t.id == dropped.id and t.included)
                part.included, part.reason = False, "dropped after the exact count"
                break
        else:
            break
        messages = assemble()
        total = counter.count_messages(messages)
    if total > limit:
        raise BudgetError(f"the mandatory parts are {total} tokens by the exact count, over the budget of {limit}",
                          part="query", tokens=total, budget=limit)
    return messages, total
