"""Character folders: ``system_prompt.txt``, ``texts/*.txt`` (one scene per file) and an optional
``character.toml`` manifest, parsed into a ``Character``.

Files are read as real ones come (a BOM, CRLF line endings, blank lines); each scene's lines are parsed by
``lines.py`` (``parse_line`` and ``parse_scene`` are importable from here too).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import DEFAULT_NARRATORS, MANIFEST_FILE, SYSTEM_PROMPT_FILE, TEXTS_DIR
from ..errors import InvalidCharacter
from ..models.adapters import AdapterSpec, CharacterAdapter, resolve_adapter
from ..options import strict
from ..types import Scene
from .lines import parse_line, parse_scene  # noqa: F401 - part of this module's interface

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

class Manifest(BaseModel):
    """The optional ``character.toml``: every field is optional and unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = None
    display_name: str | None = None
    aliases: list[str] = Field(default_factory=list)
    language: str = "zh"
    speaker: str | None = None  # the character's name inside the scene files
    user_role: str | None = None  # default in-story name of the user
    narrators: list[str] = Field(default_factory=lambda: list(DEFAULT_NARRATORS))
    greeting: str | None = None
    # texts/ holds examples of how the character speaks (a card's example dialogue), not scenes of a story: the
    # prompt introduces them as such (prompts/<lang>/examples_header.txt), so the model does not talk about "the
    # original scene" or "the first chapter"
    examples: bool = False
    alternate_greetings: list[str] = Field(default_factory=list)
    post_history_instructions: str | None = None  # appended to the user's message (a card's field)
    talkativeness: float | None = Field(default=None, ge=0.0, le=1.0)  # a group chat: the chance to join in unasked
    description: str | None = None
    source: str | None = None
    license: str | None = None
    rights_note: str | None = None
    adapter: AdapterSpec | None = None  # the character's own LoRA (see chatharuhi.models.adapters)


@dataclass(frozen=True)
class ParseStats:
    """Counts of each kind of line in a character's scenes."""

    speech: int = 0
    narration: int = 0
    other: int = 0


def detect_language(text: str) -> str:
    """``zh`` when CJK characters outnumber latin letters, else ``en``."""
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    latin = sum(ch.isascii() and ch.isalpha() for ch in text)
    return "zh" if cjk >= latin else "en"


def inside_folder(folder: Path, path: Path) -> bool:
    """Whether ``path``, with every link followed, stays inside ``folder`` (links within the folder are fine)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def own_file(folder: Path, name: str) -> Path:
    """``folder/name``, refusing a link that leads outside the character folder (it is never read)."""
    path = folder / name
    if path.exists() and not inside_folder(folder, path):
        raise InvalidCharacter("is a link to a file outside the character folder; refusing to read it: copy the "
                               "file into the folder instead", path=path)
    return path


def read_text(path: Path) -> str:
    """Read a UTF-8 file (BOM and CRLF tolerated); a decoding error names the file and line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidCharacter(
            f"not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8", path=path, line=line
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


@strict
@dataclass
class Character:
    """A loaded character: its manifest, system prompt and scenes."""

    name: str  # the folder name, or the manifest's name
    path: Path
    system_prompt: str
    scenes: list[Scene]
    manifest: Manifest = field(default_factory=Manifest)
    adapter: CharacterAdapter | None = None  # the manifest's [adapter], files resolved against the folder

    @property
    def display_name(self) -> str:
        """The human-facing name."""
        return self.manifest.display_name or self.name

    @property
    def aliases(self) -> list[str]:
        """Every name the character can be looked up by."""
        return [self.name, *self.manifest.aliases]

    @cached_property
    def language(self) -> str:
        """Language code: the manifest's, else ``zh`` when the scenes are mostly CJK, else ``en``."""
        if "language" in self.manifest.model_fields_set:
            return self.manifest.language
        return detect_language(" ".join(s.text for s in self.scenes[:50]))

    @cached_property
    def speaker(self) -> str:
        """The character's own name in the scene files: the manifest's, else the most frequent speaker."""
        if self.manifest.speaker:
            return self.manifest.speaker
        counts: dict[str, int] = {}
        for scene in self.scenes:
            for line in scene.lines:
                if line.kind == "speech" and line.speaker:
                    counts[line.speaker] = counts.get(line.speaker, 0) + 1
        if not counts:
            return self.display_name
        named = [s for s in counts if s in self.system_prompt]  # the prompt usually names its character
        return max(named or counts, key=lambda s: (counts[s], -len(s), s))

    @property
    def user_role(self) -> str:
        """The user's default in-story name."""
        return self.manifest.user_role or ("用户" if self.language.startswith("zh") else "User")

    @cached_property
    def speakers(self) -> frozenset[str]:
        """Every name that speaks in the scenes (the character and everyone else)."""
        return frozenset(name for scene in self.scenes for name in scene.speakers())

    @cached_property
    def stats(self) -> ParseStats:
        """How many speech, narration and unformatted lines the scenes hold."""
        kinds = [line.kind for scene in self.scenes for line in scene.lines]
        return ParseStats(kinds.count("speech"), kinds.count("narration"), kinds.count("other"))

    def scene(self, scene_id: str) -> Scene:
        """The scene with this id, or the window of one (``"<scene id>#<first>-<last>"``, see windows.py)."""
        for scene in self.scenes:
            if scene.id == scene_id:
                return scene
        base, _, span = scene_id.rpartition("#")
        first, _, last = span.partition("-")
        if base and first.isdigit() and last.isdigit():
            from .windows import cut

            return cut(self.scene(base), int(first), int(last), self.manifest.narrators)
        raise KeyError(scene_id)


def load_manifest(folder: Path) -> Manifest:
    """Read and validate ``character.toml``; a bad file raises ``InvalidCharacter`` naming the field."""
    path = own_file(folder, MANIFEST_FILE)
    if not path.is_file():
        return Manifest()
    try:
        data = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise InvalidCharacter(f"malformed TOML: {exc}", path=path, line=line) from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        allowed = ", ".join(Manifest.model_fields)
        raise InvalidCharacter(f"invalid manifest: {problems} (allowed keys: {allowed})", path=path) from None


def scene_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """The scene files under ``texts/`` that stay inside the folder, and those that link outside it."""
    texts = folder / TEXTS_DIR
    found = sorted(texts.rglob("*.txt")) if texts.is_dir() else []
    kept = {p: inside_folder(folder, p) for p in found}
    return [p for p, ok in kept.items() if ok], [p for p, ok in kept.items() if not ok]


@strict
def load_character(folder: str | Path) -> Character:
    """Load a character folder; a broken folder raises ``InvalidCharacter`` naming the file."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InvalidCharacter("not a folder", path=folder)
    manifest = load_manifest(folder)
    prompt_path = own_file(folder, SYSTEM_PROMPT_FILE)
    if not prompt_path.is_file():
        raise InvalidCharacter(f"missing {SYSTEM_PROMPT_FILE}: add the character's system prompt", path=folder)
    system_prompt = read_text(prompt_path).strip()
    if not system_prompt:
        raise InvalidCharacter(f"{SYSTEM_PROMPT_FILE} is empty", path=prompt_path)
    texts = own_file(folder, TEXTS_DIR)
    if not texts.is_dir():
        raise InvalidCharacter(f"missing {TEXTS_DIR}/ folder: add one scene per .txt file", path=folder)
    narrators = frozenset(manifest.narrators)
    scenes = []
    files, outside = scene_files(folder)
    for path in outside:
        warnings.warn(f"{path}: links outside the character folder; not read (chatharuhi validate reports it)",
                      RuntimeWarning, stacklevel=2)
    for path in files:
        scene = parse_scene(path.relative_to(texts).as_posix(), read_text(path), narrators)
        if scene.lines:  # empty scenes are reported by validate, not loaded
            scenes.append(scene)
    if not scenes:
        raise InvalidCharacter(f"no non-empty scenes in {TEXTS_DIR}/", path=texts)
    name = manifest.name or folder.name
    adapter = None
    if manifest.adapter is not None:
        adapter, missing = resolve_adapter(name, manifest.adapter, folder)
        if missing:  # at load, not at the first reply
            field_name, path = missing[0]
            raise InvalidCharacter(f"{field_name}: {path} does not exist; train it (chatharuhi train --out ...) "
                                   f"or fix the path in {MANIFEST_FILE}", path=folder / MANIFEST_FILE)
    return Character(name, folder, system_prompt, scenes, manifest, adapter)
