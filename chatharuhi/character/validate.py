"""Check a character folder and report every problem with file and line.

Errors stop the character from loading or from being played as written (missing or empty system
prompt, no scenes, a malformed manifest, a file that is not UTF-8, a language with no prompts, a
manifest ``speaker`` who never speaks in the scenes); warnings do not (an empty scene file, a line
in no known format, a line larger than the story budget: a long scene is retrieved as windows of whole lines).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import DEFAULT_STORY_TOKENS, MANIFEST_FILE, SYSTEM_PROMPT_FILE, TEXTS_DIR
from ..errors import InvalidCharacter
from ..prompting.templates import SUPPORTED_LANGUAGES
from ..prompting.tokens import TiktokenCounter, TokenCounter
from .discovery import is_character_folder
from .folder import inside_folder, load_manifest, parse_scene, read_text, scene_files


@dataclass(frozen=True)
class Problem:
    """One finding: where it is and what to do about it."""

    severity: Literal["error", "warning"]
    path: Path
    line: int | None
    message: str
    kind: str = ""  # what sort of problem, for grouping repeats ("unformatted line", "scene too large", ...)

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.severity}: {self.message}"


def validate_folder(folder: str | Path, story_tokens: int = DEFAULT_STORY_TOKENS,
                    counter: TokenCounter | None = None) -> list[Problem]:
    """Every problem in one character folder."""
    folder = Path(folder).expanduser()
    problems: list[Problem] = []

    def add(severity, path, line, message, kind=""):
        problems.append(Problem(severity, path, line, message, kind))

    if not folder.is_dir():
        return [Problem("error", folder, None, "not a folder")]
    try:
        manifest = load_manifest(folder)
    except InvalidCharacter as exc:
        add("error", exc.path or folder, exc.line, str(exc).split(": ", 1)[-1] if exc.path else str(exc))
        manifest = None
    if manifest is not None and manifest.adapter is not None:
        _check_adapter(folder, manifest, add)
    narrators = frozenset(manifest.narrators) if manifest else frozenset()
    if manifest is not None and "language" in manifest.model_fields_set:
        base = manifest.language.split("-")[0].casefold()
        if base not in SUPPORTED_LANGUAGES:
            add("error", folder / MANIFEST_FILE, _key_line(folder, "language"),
                f"language {manifest.language!r} is not supported: the prompts exist for "
                f"{', '.join(SUPPORTED_LANGUAGES)}; set language to one of them (or add prompts/{base}/)")
    prompt = folder / SYSTEM_PROMPT_FILE
    if prompt.exists() and not inside_folder(folder, prompt):
        add("error", prompt, None, "links to a file outside the character folder; it is never read: copy the file "
            "into the folder instead")
    elif not prompt.is_file():
        add("error", prompt, None, f"missing {SYSTEM_PROMPT_FILE}: write the character's system prompt there")
    else:
        try:
            if not read_text(prompt).strip():
                add("error", prompt, None, "the system prompt is empty")
        except InvalidCharacter as exc:
            add("error", prompt, exc.line, "not valid UTF-8; re-save the file as UTF-8")
    texts = folder / TEXTS_DIR
    files, outside = scene_files(folder) if inside_folder(folder, texts) else ([], [])
    if texts.exists() and not inside_folder(folder, texts):
        add("error", texts, None, "links to a folder outside the character folder; it is never read")
    for path in outside:
        add("warning", path, None, "links to a file outside the character folder; not read (skipped): copy the "
            "file into the folder instead")
    if not files:
        add("error", texts, None, f"no scenes: add one scene per .txt file under {TEXTS_DIR}/")
    counter = counter or TiktokenCounter()
    usable = 0
    spoken: Counter[str] = Counter()
    for path in files:
        try:
            text = read_text(path)
        except InvalidCharacter as exc:
            add("error", path, exc.line, "not valid UTF-8; re-save the file as UTF-8")
            continue
        scene = parse_scene(path.name, text, narrators or frozenset({"旁白", "Narrator", ""}))
        if not scene.lines:
            add("warning", path, None, "empty scene (skipped)", "empty scene")
            continue
        usable += 1
        spoken.update(line.speaker for line in scene.lines if line.kind == "speech" and line.speaker)
        for line in scene.lines:
            if line.kind == "other":
                add("warning", path, line.lineno, f"line in no known format, kept as narration: {line.text[:40]!r} "
                    "(expected 名字:「台词」, 名字:(动作)「台词」 or 旁白:叙述)", "line in no known format")
        tokens = counter.count(scene.text)
        if tokens > story_tokens:  # a long scene is retrieved as windows of whole lines: only a line can be too big
            for line in scene.lines:
                size = counter.count(line.text)
                if size > story_tokens:
                    add("warning", path, line.lineno, f"scene is {tokens} tokens and this one line is {size}, larger "
                        f"than the story budget of {story_tokens}: it can never be retrieved; split the line",
                        "line larger than the story budget")
    if files and not usable:
        add("error", texts, None, "every scene file is empty")
    if manifest is not None and manifest.speaker and usable and manifest.speaker not in spoken:
        common = ", ".join(name for name, _ in spoken.most_common(5)) or "(nobody)"
        add("error", folder / MANIFEST_FILE, _key_line(folder, "speaker"),
            f"speaker {manifest.speaker!r} never speaks in {TEXTS_DIR}/ (the lines there are spoken by {common}); "
            "set speaker to the character's name as the scene lines write it")
    return problems


def _check_adapter(folder: Path, manifest, add) -> None:
    """The [adapter] table as loading the character would resolve it: files present, a named adapter pulled."""
    from ..models.adapters import resolve_adapter

    try:
        _, missing = resolve_adapter(manifest.name or folder.name, manifest.adapter, folder)
    except InvalidCharacter as exc:
        key = "name" if manifest.adapter.name else None
        add("error", folder / MANIFEST_FILE, _key_line(folder, key) if key else None, exc.reason)
        return
    for field_name, path in missing:
        add("error", folder / MANIFEST_FILE, _key_line(folder, field_name.split(".")[1]),
            f"{field_name}: {path} does not exist; train it (chatharuhi train --out ...) or fix the path")


def _key_line(folder: Path, key: str) -> int | None:
    """The line of ``key = ...`` in the folder's manifest, for the report."""
    try:
        lines = (folder / MANIFEST_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return next((i for i, line in enumerate(lines, 1) if line.split("=")[0].strip() == key), None)


def validate_path(path: str | Path, **options) -> dict[Path, list[Problem]]:
    """Validate a character folder, or every character folder inside a folder."""
    path = Path(path).expanduser()
    if is_character_folder(path) or not path.is_dir():
        return {path: validate_folder(path, **options)}
    return {sub: validate_folder(sub, **options) for sub in sorted(path.iterdir()) if is_character_folder(sub)}


GROUP_AFTER = 3  # a kind of problem seen more often than this in one folder is shown this many times, then counted


def grouped(problems: list[Problem], limit: int = GROUP_AFTER) -> list[str]:
    """The report lines for one folder: each kind of problem at most ``limit`` times, then one line with the
    count of the rest (which files, how many), so a folder with 150 unformatted lines stays readable."""
    seen: Counter[str] = Counter()
    rest: dict[str, list[Problem]] = {}
    out = []
    for p in problems:
        key = p.kind or p.message
        seen[key] += 1
        if not p.kind or seen[key] <= limit:
            out.append(str(p))
        else:
            rest.setdefault(key, []).append(p)
    for key, more in rest.items():
        files = len({p.path for p in more})
        out.append(f"  … and {len(more)} more {more[0].severity}s of the same kind ({key}) in {files} "
                   f"file{'s' if files != 1 else ''} (--all lists every one)")
    return out
