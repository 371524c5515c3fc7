"""The optional LLM pass: the quotations the sieve was not sure of go to a model in batches, with their
context and the candidate cast; only an answer naming someone of that cast is kept.

The answers (accepted or not) are cached per source, cast and model under the home folder, one JSON line per
batch as it arrives, so a rerun costs nothing and an interrupted pass resumes where it stopped. The number of
requests and tokens is said before the first one, and ``max_calls`` caps them. A request that fails or times
out leaves its quotations as they were: the report stays what the sieve found.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any, Callable

from ..config import BUILD_CACHE_DIR, BUILD_LLM_BATCH, BUILD_LLM_CONTEXT_CHARS, BUILD_MAX_LLM_CALLS, cache_dir
from ..errors import ChatHaruhiError
from ..types import Message
from .analysis import Analysis, Line, source_key

LLM_CONFIDENCE = 0.86  # an accepted answer: above the default threshold, below an explicit tag
MAX_CANDIDATES = 12
_ANSWER = re.compile(r"^\s*(?:Q|#)?(\d+)\s*[\].:：)\-]\s*(.+?)\s*$")

SYSTEM = {
    "en": "You identify who speaks each quotation in a novel. Answer with one line per quotation, "
          "'N: NAME', where NAME is exactly one of the candidates given, or 'N: unknown'. Nothing else.",
    "zh": "你要判断小说中每句引语是谁说的。每句一行，格式为“N: 名字”，名字必须是给出的候选人之一，"
          "不确定就写“N: unknown”。不要写别的。",
}


def _backend(llm: Any):
    from ..backends.base import Backend
    from ..backends.registry import resolve_backend

    return llm if isinstance(llm, Backend) else resolve_backend(llm)


def _model_id(backend: Any) -> str:
    from ..models.selection import describe

    return describe(backend)


def _cast_key(analysis: Analysis) -> str:
    names = "|".join(sorted(n for m in analysis.cast.members for n in m.names))
    return hashlib.sha256(names.encode("utf-8")).hexdigest()[:16]


def _context(analysis: Analysis, line: Line) -> str:
    text = analysis.sources[line.source].text
    a = max(0, line.start - BUILD_LLM_CONTEXT_CHARS)
    b = min(len(text), line.end + BUILD_LLM_CONTEXT_CHARS)
    return " ".join((text[a:line.start] + "【" + text[line.start:line.end] + "】" + text[line.end:b]).split())


def _candidates(analysis: Analysis, line: Line, top: list[int]) -> list[int]:
    """The cast members named near the quotation, then the book's main speakers, then the rest of the cast."""
    text = analysis.sources[line.source].text
    a = max(0, line.start - 3 * BUILD_LLM_CONTEXT_CHARS)
    b = min(len(text), line.end + BUILD_LLM_CONTEXT_CHARS)
    near = [w for m in analysis.cast.mentions(text, a, b) for w in m.who]
    if line.speaker is not None:
        near.insert(0, line.speaker)
    return list(dict.fromkeys(near + top + list(range(len(analysis.cast.members)))))[:MAX_CANDIDATES]


def _prompt(analysis: Analysis, batch: list[int], top: list[int]) -> tuple[list[Message], dict[int, list[int]]]:
    language = "zh" if analysis.cast.language == "zh" else "en"
    parts, allowed = [], {}
    for n, li in enumerate(batch, start=1):
        line = analysis.lines[li]
        cands = _candidates(analysis, line, top)
        allowed[n] = cands
        names = ", ".join(analysis.cast.members[c].name for c in cands)
        parts.append(f"{n}. Candidates: {names}\nContext (the quotation is in 【】): {_context(analysis, line)}")
    return [Message("system", SYSTEM[language]), Message("user", "\n\n".join(parts))], allowed


def parse_answers(reply: str, allowed: dict[int, list[int]], analysis: Analysis) -> dict[int, int | None]:
    """``N: NAME`` lines -> {N: cast index}; a name outside that quotation's candidates is refused (None)."""
    out: dict[int, int | None] = {}
    for raw in reply.splitlines():
        m = _ANSWER.match(raw)
        if not m:
            continue
        n, name = int(m.group(1)), m.group(2).strip().strip("\"'“”「」*")
        if n not in allowed or n in out:
            continue
        who = next((c for c in allowed[n] if name.casefold() in (x.casefold() for x in analysis.cast.members[c].names)),
                   None)
        out[n] = who
    return out


def llm_pass(analysis: Analysis, llm: Any, max_calls: int = BUILD_MAX_LLM_CALLS, batch_size: int = BUILD_LLM_BATCH,
             log: Callable[[str], None] | None = None, progress: bool = False) -> str:
    """Ask the model about every uncertain prose quotation; return a one-line summary of what it did."""
    say = log or (lambda m: None)
    backend = _backend(llm)
    model = _model_id(backend)
    todo = [i for i, line in enumerate(analysis.lines)
            if analysis.sources[line.source].kind == "prose" and analysis.speaker(line) is None]
    cache: dict[tuple[int, int, int], int | None] = {}
    files = {}
    for si, src in enumerate(analysis.sources):
        if src.kind != "prose":
            continue
        path = cache_dir(BUILD_CACHE_DIR) / f"{source_key(src)}-{_cast_key(analysis)}.jsonl"
        files[si] = path
        if path.exists():
            for row in path.read_text(encoding="utf-8").splitlines():
                try:
                    r = json.loads(row)
                except json.JSONDecodeError:
                    continue  # a line cut by an interrupt: asked again
                if r.get("model") == model:
                    who = analysis.cast.index(r["answer"]) if r.get("answer") else None
                    cache[(si, r["start"], r["end"])] = who
    stats = Counter()
    left = []
    for i in todo:
        line = analysis.lines[i]
        key = (line.source, line.start, line.end)
        if key in cache:
            stats["cached"] += 1
            _apply(line, cache[key], stats)
        else:
            left.append(i)
    batches = [left[k:k + batch_size] for k in range(0, len(left), batch_size)]
    tokens = sum(len(_context(analysis, analysis.lines[i])) for i in left) // (2 if analysis.cast.language == "zh"
                                                                            else 4)
    calls = min(len(batches), max(0, max_calls))
    say(f"LLM pass with {model}: {len(todo)} uncertain quotations, {stats['cached']} answered from the cache, "
        f"{len(batches)} requests (about {tokens:,} prompt tokens) to send; sending {calls} (--max-llm-calls "
        f"{max_calls})")
    top = [analysis.cast.index(n) for n, _ in analysis.counts().most_common(8)]
    top = [t for t in top if t is not None]
    bar = None
    if progress and calls:
        from tqdm import tqdm

        bar = tqdm(total=calls, unit="request", desc="LLM")
    for batch in batches[:calls]:
        messages, allowed = _prompt(analysis, batch, top)
        try:
            reply = backend.complete(messages, temperature=0.0) if _takes_temperature(backend) else \
                backend.complete(messages)
        except ChatHaruhiError as exc:
            stats["failed"] += 1
            say(f"LLM request failed, its {len(batch)} quotations stay as they were: {exc}")
            if bar is not None:
                bar.update(1)
            continue
        answers = parse_answers(reply, allowed, analysis)
        rows = []
        for n, li in enumerate(batch, start=1):
            line = analysis.lines[li]
            who = answers.get(n)
            if n in answers and who is None:
                stats["refused"] += 1
            _apply(line, who, stats)
            rows.append({"start": line.start, "end": line.end, "model": model,
                         "answer": analysis.cast.members[who].name if who is not None else None})
        by_source: dict[int, list[dict]] = {}
        for li, row in zip(batch, rows):
            by_source.setdefault(analysis.lines[li].source, []).append(row)
        for si, rs in by_source.items():
            with files[si].open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rs))
        stats["sent"] += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    note = (f"LLM pass: {stats['sent']} requests sent, {stats['failed']} failed, {stats['accepted']} quotations "
            f"attributed, {stats['refused']} answers outside the cast refused, {stats['cached']} from the cache, "
            f"{max(0, len(batches) - calls)} requests not sent (cap)")
    say(note)
    return note


def _takes_temperature(backend: Any) -> bool:
    options = backend.call_options
    return options is not None and "temperature" in options


def _apply(line: Line, who: int | None, stats: Counter) -> None:
    if who is None:
        return
    line.speaker, line.confidence, line.rule = who, LLM_CONFIDENCE, "llm"
    stats["accepted"] += 1


def llm_system_prompt(analysis: Analysis, member: int, work: str, llm: Any, fallback: str,
                      log: Callable[[str], None] | None = None) -> str:
    """A system prompt drafted by the model from the character's lines; the template draft when it fails."""
    from .writer import characteristic_lines

    m = analysis.cast.members[member]
    lines = "\n".join(f"- {x}" for x in characteristic_lines(analysis, member, 12))
    zh = analysis.cast.language == "zh"
    ask = (f"请为角色扮演写一段系统提示词：扮演{work}中的{m.name}。写清性格、说话方式和背景，200字以内。"
           f"以下是{m.name}的原话：\n{lines}" if zh else
           f"Write a role-play system prompt (under 150 words) for playing {m.name} from {work}: personality, way "
           f"of speaking, background. Some of {m.name}'s own lines:\n{lines}")
    try:
        text = _backend(llm).complete([Message("user", ask)]).strip()
    except ChatHaruhiError as exc:
        (log or (lambda x: None))(f"the LLM could not draft the system prompt ({exc}); using the template")
        return fallback
    if len(text) < 40:
        return fallback
    tail = fallback.split("\n\n")[-2:]  # the template's closing: scenes for reference, the reply format
    return text + "\n\n" + "\n\n".join(tail)
