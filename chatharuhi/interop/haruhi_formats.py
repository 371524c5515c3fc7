"""ChatHaruhi's own formats: the packaged role JSONL, the 54K dialogue rows, ChatHaruhi 2.0 role zips
(``content/system_prompt.txt`` + a Chroma 0.4 database) and a zipped character folder.

Packaged role JSONL (``silk-road/ChatHaruhi-RolePlaying``): one JSON object a line. The row whose
vector columns hold the literal ``system_prompt`` carries the system prompt in ``text``; the row
holding ``config`` is a placeholder (ours stores the manifest there as JSON); every other row is a
scene in ``text`` (or base64 UTF-8 in ``enc_text``) plus one column per embedding model
(``luotuo_openai``, ``bge_en_s15``, ``bge_zh_s15``, or one of our embedder ids) holding base64 of
big-endian float32. Vectors under a column named like an embedder id seed that embedder's cache.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sqlite3
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..character.folder import Character, inside_folder
from ..errors import CharacterImportError
from .folder import CharacterDraft, manifest_dict, safe_name
from .safezip import SafeZip

TEXT_COLUMNS = ("text", "enc_text")
SYSTEM_PROMPT_MARK = "system_prompt"
CONFIG_MARK = "config"
CHATHARUHI_COLUMNS = ("luotuo_openai", "bge_en_s15", "bge_zh_s15")
# A ChatHaruhi column whose vectors live in the same space as one of our embedders.
COLUMN_EMBEDDER_IDS = {"luotuo_openai": "openai:text-embedding-ada-002",  # what compat.embedding builds
                       "bge_zh_s15": "st:bge-small-zh-v1.5", "bge_en_s15": "st:bge-small-en-v1.5"}
MAX_JSONL_BYTES = 1 << 30
DIALOGUE_KEYS = ("agent_role", "user_role", "user_question", "agent_response")


def float_array_to_base64(vector: Iterable[float]) -> str:
    """Base64 of big-endian float32, as ChatHaruhi stores vectors."""
    return base64.b64encode(np.asarray(vector, dtype=">f4").tobytes()).decode("ascii")


def base64_to_float_array(data: str) -> np.ndarray:
    """The inverse of ``float_array_to_base64`` (native float32)."""
    raw = base64.b64decode(data, validate=True)
    if len(raw) % 4:
        raise ValueError(f"{len(raw)} bytes is not a whole number of float32 values")
    return np.frombuffer(raw, dtype=">f4").astype(np.float32)


def _read_rows(path: Path, bad_lines: list[int] | None = None) -> list[dict[str, Any]]:
    """The file's rows. A line that is not a JSON object raises, or, given a ``bad_lines`` list, is
    skipped and its number appended there (ChatHaruhi's lenient reading)."""
    if path.stat().st_size > MAX_JSONL_BYTES:
        raise CharacterImportError(f"file is larger than {MAX_JSONL_BYTES} bytes", path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CharacterImportError(f"not UTF-8 (byte {exc.start})", path) from None
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array of rows is accepted too
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise CharacterImportError(f"invalid JSON: {exc}", path) from None
        except RecursionError:
            raise CharacterImportError("the JSON is nested too deeply to be a role file", path) from None
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if bad_lines is None:
                    raise CharacterImportError(f"line {n}: invalid JSON: {exc.msg}", path) from None
                bad_lines.append(n)
                continue
            except RecursionError:
                if bad_lines is None:
                    raise CharacterImportError(f"line {n}: the JSON is nested too deeply", path) from None
                bad_lines.append(n)
                continue
            if not isinstance(row, dict) and bad_lines is not None:
                bad_lines.append(n)
                continue
            rows.append(row)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CharacterImportError("expected one JSON object per line", path)
    if not rows:
        raise CharacterImportError("the file has no rows", path)
    return rows


def _row_text(row: dict[str, Any], n: int, path: Path) -> str:
    if isinstance(row.get("text"), str):
        return row["text"]
    if isinstance(row.get("enc_text"), str):
        try:
            return base64.b64decode(row["enc_text"], validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise CharacterImportError(f"row {n}: enc_text is not base64 of UTF-8 text: {exc}", path) from None
    raise CharacterImportError(f"row {n}: no 'text' or 'enc_text' string", path)


def is_dialogue_rows(row: dict[str, Any]) -> bool:
    """Whether a row looks like ChatHaruhi-54K (``agent_role``/``agent_response``...)."""
    return all(k in row for k in ("agent_role", "agent_response"))


def read_role_jsonl(path: str | os.PathLike, name: str | None = None, role: str | None = None, *,
                    bad_lines: list[int] | None = None) -> CharacterDraft:
    """A packaged role JSONL (or 54K dialogue rows) as a draft character (``bad_lines``: see ``_read_rows``)."""
    path = Path(path)
    rows = _read_rows(path, bad_lines)
    if is_dialogue_rows(rows[0]):
        return dialogue_rows_to_draft(rows, path, name=name, role=role)
    system_prompt, manifest, config_name = "", {}, None
    scenes: list[tuple[str, str]] = []
    columns: dict[str, list[Any]] = {}
    for n, row in enumerate(rows, start=1):
        marks = {v for k, v in row.items() if k not in TEXT_COLUMNS and isinstance(v, str)}
        if SYSTEM_PROMPT_MARK in marks:
            system_prompt = _row_text(row, n, path)
            continue
        if CONFIG_MARK in marks:
            manifest, config_name = _config_manifest(row)
            continue
        text = _row_text(row, n, path)
        if not text.strip():
            continue
        scene_id = row.get("id") if isinstance(row.get("id"), str) else f"{len(scenes) + 1:04d}.txt"
        scenes.append((scene_id, text))
        for key, value in row.items():
            if key not in (*TEXT_COLUMNS, "id"):
                columns.setdefault(key, []).append(value)
    if not system_prompt.strip():
        raise CharacterImportError("no system prompt row (a row whose vector column holds 'system_prompt')", path)
    if not scenes:
        raise CharacterImportError("no scene rows", path)
    draft = CharacterDraft(name or config_name or path.stem, system_prompt, scenes, manifest, source=str(path))
    draft.vectors = _vectors(columns, len(scenes))
    return draft


def _config_manifest(row: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The manifest and folder name our exporter keeps in the config row's text (else nothing)."""
    try:
        data = json.loads(row.get("text") or "")
    except (TypeError, json.JSONDecodeError):
        return {}, None
    ours = data.get("chatharuhi") if isinstance(data, dict) else None
    if not isinstance(ours, dict):
        return {}, None
    manifest, name = ours.get("manifest"), ours.get("name")
    return (manifest if isinstance(manifest, dict) else {}), (name if isinstance(name, str) else None)


def _vectors(columns: dict[str, list[Any]], count: int) -> dict[str, np.ndarray]:
    """Decoded vector columns by embedder id; a column with a bad or missing value is skipped."""
    out = {}
    for column, values in columns.items():
        if len(values) != count or not all(isinstance(v, str) for v in values):
            continue
        try:
            vectors = np.stack([base64_to_float_array(v) for v in values])
        except (binascii.Error, ValueError):
            continue
        if vectors.shape[1] == 0:
            continue
        out[COLUMN_EMBEDDER_IDS.get(column, column)] = vectors
    return out


def dialogue_rows_to_draft(rows: list[dict[str, Any]], path: Path, *, name: str | None = None,
                           role: str | None = None) -> CharacterDraft:
    """ChatHaruhi-54K rows as scenes of one character: each row a two-line exchange."""
    roles: dict[str, int] = {}
    for row in rows:
        if isinstance(row.get("agent_role"), str):
            roles[row["agent_role"]] = roles.get(row["agent_role"], 0) + 1
    if role is None:
        if len(roles) != 1:
            listing = ", ".join(f"{r} ({c})" for r, c in sorted(roles.items(), key=lambda x: -x[1])[:20])
            raise CharacterImportError(f"the rows hold {len(roles)} characters; pick one with role= "
                                       f"(--role): {listing}", path)
        role = next(iter(roles))
    elif role not in roles:
        raise CharacterImportError(f"no rows for role {role!r}; found: {', '.join(sorted(roles)[:20])}", path)
    scenes = []
    for row in rows:
        if row.get("agent_role") != role:
            continue
        question, answer = row.get("user_question"), row.get("agent_response")
        if not isinstance(answer, str) or not answer.strip():
            continue
        lines = []
        if isinstance(question, str) and question.strip():
            lines.append(f"{(row.get('user_role') or '用户')}:「{question.strip()}」")
        lines.append(f"{role}:「{answer.strip()}」")
        scenes.append((f"{len(scenes) + 1:05d}.txt", "\n".join(lines)))
    if not scenes:
        raise CharacterImportError(f"no usable rows for role {role!r}", path)
    from ..character.folder import detect_language
    from ..prompting.templates import load_template

    language = detect_language(" ".join(t for _, t in scenes[:50]))
    prompt = load_template("imported_system", language).render(character=role)
    manifest = {"display_name": role, "speaker": role, "language": language}
    return CharacterDraft(name or safe_name(role, "character"), prompt, scenes, manifest, source=str(path))


def write_role_jsonl(character: Character, out: str | os.PathLike, embedder: Any = None) -> Path:
    """Write a character as a packaged role JSONL, with our embedder's vectors under its id."""
    from ..retrieval.embeddings import get_embedder
    from ..retrieval.index import index_for

    embedder = get_embedder(embedder)
    index = index_for(character, embedder, whole_scenes=True)  # the scenes as they are, not their windows
    column = embedder.id
    config = {"chatharuhi": {"manifest": manifest_dict(character), "name": character.name}}
    rows = [{"text": character.system_prompt, column: SYSTEM_PROMPT_MARK, "id": SYSTEM_PROMPT_MARK},
            {"text": json.dumps(config, ensure_ascii=False), column: CONFIG_MARK, "id": CONFIG_MARK}]
    for scene, vector in zip(index.scenes, index.vectors):
        rows.append({"text": scene.text, column: float_array_to_base64(vector), "id": scene.id})
    return _atomic_write(Path(out), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))


def _atomic_write(path: Path, data: bytes) -> Path:
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# -- zips -------------------------------------------------------------------------------------------
def is_chroma_role_zip(z: SafeZip) -> bool:
    """ChatHaruhi 2.0's downloadable role: ``content/system_prompt.txt`` and a ``chroma.sqlite3``."""
    return any(n.endswith("system_prompt.txt") for n in z.names) and any(n.endswith("chroma.sqlite3") for n in z.names)


def read_chroma_role_zip(z: SafeZip, name: str | None = None) -> CharacterDraft:
    """The scenes (``embedding_metadata`` rows with key ``chroma:document``) and the system prompt."""
    prompt_name = min((n for n in z.names if n.endswith("system_prompt.txt")), key=len)
    db_name = next(n for n in z.names if n.endswith("chroma.sqlite3"))
    try:
        system_prompt = z.read(prompt_name).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CharacterImportError(f"{prompt_name} is not UTF-8", z.path) from None
    with tempfile.TemporaryDirectory(prefix="chatharuhi-chroma-") as tmp:
        db = z.extract(db_name, Path(tmp))
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                docs = [r[0] for r in con.execute(
                    "SELECT m.string_value FROM embedding_metadata m LEFT JOIN embeddings e ON e.id = m.id "
                    "WHERE m.key = 'chroma:document' ORDER BY e.seq_id, m.id")]
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise CharacterImportError(f"{db_name} is not a readable Chroma database: {exc}", z.path) from None
    scenes = [(f"{i:04d}.txt", d) for i, d in enumerate((d for d in docs if d and d.strip()), start=1)]
    if not scenes:
        raise CharacterImportError(f"{db_name} holds no scene documents", z.path)
    parts = db_name.split("/")
    guess = parts[-2] if len(parts) >= 2 and parts[-2] != "content" else z.path.stem
    return CharacterDraft(name or guess, system_prompt, scenes, source=str(z.path))


def folder_root(z: SafeZip) -> str | None:
    """The prefix ('' or 'name/') of a zipped character folder, or ``None`` if the zip holds none."""
    for n in z.names:
        if n == "system_prompt.txt":
            return ""
        parts = n.split("/")
        if len(parts) == 2 and parts[1] == "system_prompt.txt":
            return parts[0] + "/"
    return None


def read_folder_zip(z: SafeZip, root: str, name: str | None = None) -> CharacterDraft:
    """A zipped character folder: every file under ``root`` is carried over as it is."""
    text = {"system_prompt.txt", "character.toml"}  # read now; other files are streamed to disk on write
    files: dict[str, Any] = {n[len(root):]: z.read(n) if n[len(root):] in text or
                             (n[len(root):].startswith("texts/") and n.endswith(".txt")) else z.member(n)
                             for n in z.names if n.startswith(root)}
    try:
        prompt = files.pop("system_prompt.txt").decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CharacterImportError("system_prompt.txt is not UTF-8", z.path) from None
    scenes = []
    for rel in sorted(f for f in files if f.startswith("texts/") and f.endswith(".txt")):
        try:
            scenes.append((rel[len("texts/"):], files.pop(rel).decode("utf-8-sig")))
        except UnicodeDecodeError:
            raise CharacterImportError(f"{rel} is not UTF-8", z.path) from None
    manifest = files.pop("character.toml", None)
    draft = CharacterDraft(name or root.rstrip("/") or z.path.stem, prompt, scenes, files=files, source=str(z.path))
    if manifest is not None:
        draft.files["character.toml"] = manifest
    return draft


def write_folder_zip(character: Character, out: str | os.PathLike) -> Path:
    """Zip a character's folder (every file under it) as ``<name>/...``."""
    import io

    root = Path(character.path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink() and inside_folder(root, path) \
                    and not any(p.startswith(".") for p in path.parts[-1:]):
                zf.write(path, f"{safe_name(character.name, 'character')}/{path.relative_to(root).as_posix()}")
    return _atomic_write(Path(out), buf.getvalue())
