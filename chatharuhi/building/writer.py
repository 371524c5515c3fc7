"""Writing the character folder: into a temporary folder beside the target, checked with ``validate``, then
moved into place, so a failure or an interrupt never leaves a half-written character."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..config import MANIFEST_FILE, SYSTEM_PROMPT_FILE, TEXTS_DIR
from ..errors import BuildError, OutputExists
from ..prompting.templates import load_template
from .analysis import Analysis
from .scenes import BuiltScene

EXAMPLE_LINES = 5


def characteristic_lines(analysis: Analysis, member: int, n: int = EXAMPLE_LINES) -> list[str]:
    """A few of the character's surest, mid-length lines, spread over the book."""
    lines = [line for line in analysis.lines if line.speaker == member and line.confidence >= analysis.threshold]
    good = [line for line in lines if 40 <= len(analysis.text(line)) <= 240] or lines
    if not good:
        return []
    step = max(1, len(good) // n)
    return [" ".join(analysis.text(line).split()) for line in good[::step][:n]]


def draft_system_prompt(analysis: Analysis, member: int, work: str) -> str:
    """The template draft: the character's name, the work and a few of their lines."""
    m = analysis.cast.members[member]
    examples = "\n".join(f"- {x}" for x in characteristic_lines(analysis, member)) or "-"
    return load_template("build_system", analysis.cast.language).render(name=m.name, work=work, examples=examples,
                                                                        speaker=m.name)


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML)."""
    return json.dumps(value, ensure_ascii=False)


def manifest_text(analysis: Analysis, member: int, folder_name: str, work: str) -> str:
    """``character.toml``: names, language, speaker and the sources it was built from."""
    m = analysis.cast.members[member]
    narrator = "旁白" if analysis.cast.language == "zh" else "Narrator"
    sources = "; ".join(f"{s.title or Path(s.path).name} ({Path(s.path).name})" for s in analysis.sources)
    aliases = [a for a in m.aliases if a != folder_name]
    lines = [f"name = {toml_string(folder_name)}", f"display_name = {toml_string(m.name)}",
             f"aliases = [{', '.join(toml_string(a) for a in aliases)}]",
             f"language = {toml_string(analysis.cast.language)}", f"speaker = {toml_string(m.name)}",
             f"narrators = [{toml_string(narrator)}]",
             f"description = {toml_string(f'{m.name}, from {work}. Scenes built by chatharuhi build-character.')}",
             f"source = {toml_string(f'Built with chatharuhi build-character from: {sources}')}"]
    return "\n".join(lines) + "\n"


def folder_name_for(name: str) -> str:
    """A safe folder name for a character: letters, digits, CJK, ``_`` and ``-``."""
    slug = re.sub(r"[^\w\-]+", "_", name.strip()).strip("_")
    return slug[:60] or "character"


def write_folder(out: Path, system_prompt: str, manifest: str, scenes: list[BuiltScene], force: bool) -> Path:
    """Write the folder atomically: a temporary folder beside ``out``, validated, then renamed onto it."""
    out = Path(out).expanduser()
    if out.exists() and not force:
        raise OutputExists("exists; pass --force (force=True) to replace it, or choose another --out", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        (tmp / SYSTEM_PROMPT_FILE).write_text(system_prompt, encoding="utf-8")
        (tmp / MANIFEST_FILE).write_text(manifest, encoding="utf-8")
        texts = tmp / TEXTS_DIR
        texts.mkdir()
        for s in scenes:
            (texts / s.name).write_text(s.text + "\n", encoding="utf-8")
        from ..character.validate import validate_folder

        errors = [p for p in validate_folder(tmp) if p.severity == "error"]
        if errors:
            raise BuildError("the built folder does not validate (a bug: please report it): "
                             + "; ".join(str(p) for p in errors[:3]), out)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
