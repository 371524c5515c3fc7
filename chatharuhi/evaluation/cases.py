"""Test cases from a character folder: another speaker's line ``q`` answered by a long character line ``a``.

One case per scene at most (so excluding the source scene removes everything the case came from),
chosen with a seeded generator: the same character, ``n`` and seed always give the same cases. The
lines of the scene before ``q`` become the case's history: each run of other speakers' lines followed
by the character's lines is one ``Turn`` (the last speaker of the run speaks; narration and earlier
speakers of a run cannot be expressed as turns and are only kept in ``transcript``).
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

from ..character.folder import Character
from ..errors import InputError
from ..types import Line, Turn

MIN_ANSWER_CJK_CHARS = 8  # a Chinese answer line needs at least this many CJK characters
MIN_ANSWER_WORDS = 5  # an English answer line needs at least this many words
MIN_USABLE_CASES = 3  # fewer usable cases than this and a character cannot be evaluated meaningfully

_CJK_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # "it's" is one word


def text_units(text: str, language: str) -> int:
    """Length in the language's units: CJK characters for Chinese, words otherwise."""
    if language.startswith("zh"):
        return len(_CJK_RE.findall(text))
    return len(_WORD_RE.findall(text))


def is_meaningful(text: str, language: str) -> bool:
    """Whether an answer line is long enough to be worth generating."""
    minimum = MIN_ANSWER_CJK_CHARS if language.startswith("zh") else MIN_ANSWER_WORDS
    return text_units(text, language) >= minimum


@dataclass(frozen=True)
class EvalCase:
    """One test: answer ``query`` (said by ``query_role``) as the character; ``answer`` is the original line."""

    id: str  # "<scene id>#<line number of the answer>"
    character: str
    scene_id: str
    query_role: str
    query: str
    answer: str
    language: str
    history: tuple[Turn, ...] = ()
    transcript: str = ""  # the scene's lines before the query, as written
    dropped_lines: int = 0  # lines before the query that could not be expressed as turns

    def as_dict(self) -> dict:
        """A JSON-ready copy."""
        data = asdict(self)
        data["history"] = [asdict(t) for t in self.history]
        return data


@dataclass
class CaseSet:
    """The cases drawn for one character, with how many scenes could have given one."""

    character: str
    cases: list[EvalCase] = field(default_factory=list)
    usable_scenes: int = 0
    candidates: int = 0  # (q, a) pairs over all scenes


def _is_speech(line: Line) -> bool:
    return line.kind == "speech" and bool(line.speaker) and bool(line.text.strip())


def _candidates(lines: tuple[Line, ...], speaker: str, language: str) -> list[int]:
    """Positions ``i`` where ``lines[i]`` is a meaningful character line answering another speaker's ``lines[i-1]``."""
    out = []
    for i in range(1, len(lines)):
        a, q = lines[i], lines[i - 1]
        if (_is_speech(a) and a.speaker == speaker and is_meaningful(a.text, language)
                and _is_speech(q) and q.speaker != speaker):
            out.append(i)
    return out


def _render(line: Line) -> str:
    if line.kind == "speech":
        return f"{line.speaker}:「{line.text}」{line.action}"
    return f"{line.speaker}:{line.text}" if line.speaker else line.text


def _history(lines: tuple[Line, ...], speaker: str, language: str) -> tuple[list[Turn], int]:
    """The lines before the query as turns, and how many lines did not fit a turn."""
    joiner = "" if language.startswith("zh") else " "
    turns: list[Turn] = []
    pending: list[Line] = []  # other speakers' lines since the character last spoke
    dropped = 0
    for line in lines:
        if not _is_speech(line):
            dropped += 1
        elif line.speaker != speaker:
            pending.append(line)
        elif pending:
            last = pending[-1].speaker
            tail = []
            for p in reversed(pending):  # the trailing lines of the last speaker make the user's message
                if p.speaker != last:
                    break
                tail.insert(0, p.text)
            dropped += len(pending) - len(tail)
            turns.append(Turn(last, joiner.join(tail), line.text))
            pending = []
        elif turns:  # the character speaks twice in a row: one reply
            t = turns[-1]
            turns[-1] = Turn(t.user_role, t.text, t.reply + joiner + line.text)
        else:
            dropped += 1
    return turns, dropped + len(pending)


def build_cases(character: Character, n: int | None = None, seed: int = 0) -> CaseSet:
    """At most one case per usable scene, ``n`` scenes drawn with ``seed`` (all of them when ``n`` is None)."""
    speaker, language = character.speaker, character.language
    rng = random.Random(f"chatharuhi-eval:{seed}:{character.name}")
    usable: list[tuple[int, list[int]]] = []
    for k, scene in enumerate(character.scenes):
        found = _candidates(scene.lines, speaker, language)
        if found:
            usable.append((k, found))
    chosen = [(k, rng.choice(found)) for k, found in usable]  # one draw per scene: stable when n changes
    if n is not None and n < len(chosen):
        chosen = sorted(rng.sample(chosen, n))
    cases = [_case(character, character.scenes[k], i) for k, i in chosen]
    return CaseSet(character.name, cases, len(usable), sum(len(f) for _, f in usable))


def every_case(character: Character) -> list[EvalCase]:
    """Every (q, a) pair of every scene, in scene and line order (training data wants them all)."""
    speaker, language = character.speaker, character.language
    return [_case(character, scene, i) for scene in character.scenes
            for i in _candidates(scene.lines, speaker, language)]


def _case(character: Character, scene, i: int) -> EvalCase:
    """The case whose answer is ``scene.lines[i]``, with the scene's earlier lines as history."""
    q, a = scene.lines[i - 1], scene.lines[i]
    before = scene.lines[: i - 1]
    turns, dropped = _history(before, character.speaker, character.language)
    transcript = "\n".join(_render(line) for line in before)
    return EvalCase(f"{scene.id}#{a.lineno}", character.name, scene.id, q.speaker, q.text.strip(),
                    a.text.strip(), character.language, tuple(turns), transcript, dropped)


def require_cases(case_set: CaseSet, character: Character, minimum: int = MIN_USABLE_CASES) -> None:
    """Raise ``InputError`` with what a usable case is when a character has fewer than ``minimum``."""
    if case_set.usable_scenes >= minimum:  # asking for fewer cases (n) than that is the caller's choice
        return
    unit = (f"{MIN_ANSWER_CJK_CHARS} CJK characters" if character.language.startswith("zh")
            else f"{MIN_ANSWER_WORDS} words")
    raise InputError(
        f"{character.name}: only {case_set.usable_scenes} usable test case(s) in {len(character.scenes)} scene(s); "
        f"need at least {minimum}. A usable case is a line by another speaker answered by "
        f"{character.speaker!r} with at least {unit}, in the form 名字:「台词」 (set speaker= in "
        f"character.toml if the character's name in the scenes is not {character.speaker!r})")
