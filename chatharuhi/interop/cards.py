"""SillyTavern character cards: V1, V2 (``chara_card_v2``) and V3 (``chara_card_v3``) from JSON, PNG
(base64 JSON in the ``chara`` text chunk, or ``ccv3``, which wins when both exist) and CHARX (a zip
with ``card.json`` and assets), read into a character folder draft. The way back, a character to a card,
is ``card_export``.

Card -> character folder: ``description``, ``personality`` and ``scenario`` go into the system prompt
through ``prompts/<lang>/card_*.txt``; the card's ``system_prompt`` replaces the default main prompt
(``{{original}}`` inside it stands for the default); ``post_history_instructions`` is kept in the
manifest; ``{{char}}``/``<BOT>`` become the name, ``<USER>`` becomes ``{{user}}`` (filled per
session from the persona); ``mes_example`` blocks (split at ``<START>``, and between messages when longer than
``IMPORT_SCENE_TOKENS``) become scenes, marked in the manifest as examples of how the character speaks
(``examples = true``: the prompt never calls them scenes of an original work); ``first_mes``
is the greeting; ``creator_notes`` never enters a prompt. The card itself is kept as ``card.json``, so
exporting it again gives back every field, ``extensions`` and unknown keys included.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from ..character.folder import detect_language
from ..config import IMAGE_MAX_PIXELS, IMPORT_SCENE_TOKENS
from ..errors import CharacterImportError
from ..prompting.templates import load_template
from .folder import CharacterDraft, plain_name

V2, V3 = "chara_card_v2", "chara_card_v3"
CARD_FILE = "card.json"
LOREBOOK_FILE = "lorebook.json"
AVATAR_FILE = "avatar.png"
ASSETS_DIR = "card_assets"  # a CHARX's assets, under their own paths: never where the importer writes
MAX_CARD_BYTES = 32 << 20  # a card's JSON
MAX_FIELD_CHARS = 2_000_000  # one text field; longer is not a real card
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_CHUNKS = 100_000  # chunks walked in one PNG (a real card has a few dozen)
_V1_ALIASES = {"name": "char_name", "description": "char_persona", "scenario": "world_scenario",
               "first_mes": "char_greeting", "mes_example": "example_dialogue"}
TEXT_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example", "creator_notes",
               "system_prompt", "post_history_instructions", "creator", "character_version")
_START = re.compile(r"<START>", re.IGNORECASE)
_CHAR = re.compile(r"\{\{char\}\}|<BOT>", re.IGNORECASE)
_USER = re.compile(r"\{\{user\}\}|<USER>", re.IGNORECASE)


def parse_card_json(raw: bytes | str, source: object = None) -> dict[str, Any]:
    """A card's JSON text as a dict (any version; not yet normalised)."""
    if len(raw) > MAX_CARD_BYTES:
        raise CharacterImportError(f"the card is larger than {MAX_CARD_BYTES} bytes", source)
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
        card = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CharacterImportError(f"the card is not valid UTF-8 JSON: {exc}", source) from None
    except RecursionError:
        raise CharacterImportError("the card's JSON is nested too deeply to be a character card", source) from None
    if not isinstance(card, dict):
        raise CharacterImportError(f"a card must be a JSON object, not {type(card).__name__}", source)
    return card


def png_size(path: str | os.PathLike) -> tuple[int, int]:
    """A PNG's width and height from its header (nothing decoded); ``CharacterImportError`` if it is no PNG."""
    with Path(path).open("rb") as f:
        head = f.read(24)
    if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise CharacterImportError("not a PNG image (no PNG signature and header)", path)
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def png_text_chunks(path: str | os.PathLike, keys: tuple[str, ...] = ("ccv3", "chara")) -> dict[str, str]:
    """The text chunks called ``keys`` in a PNG, read chunk by chunk: the image data is skipped, never
    decompressed, so a small file that would decode to gigabytes costs nothing (SillyTavern writes its chunk
    after the image data, so the whole file is walked). A compressed text chunk may expand to
    ``MAX_CARD_BYTES`` at most."""
    import zlib

    path = Path(path)
    found: dict[str, str] = {}
    with path.open("rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            raise CharacterImportError("not a PNG image (no PNG signature)", path)
        for _ in range(MAX_PNG_CHUNKS):
            head = f.read(8)
            if len(head) < 8:
                break
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"IEND":
                break
            if kind not in (b"tEXt", b"zTXt", b"iTXt") or length > MAX_CARD_BYTES * 2:
                f.seek(length + 4, os.SEEK_CUR)  # the chunk and its CRC, unread
                continue
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)
            if len(data) < length:
                raise CharacterImportError("not a readable PNG (truncated in a text chunk)", path)
            keyword, _, rest = data.partition(b"\0")
            key = keyword.decode("latin-1")
            if key not in keys or key in found:
                continue
            compressed = kind == b"zTXt" or (kind == b"iTXt" and rest[:1] == b"\1")
            if kind == b"zTXt":
                rest = rest[1:]
            elif kind == b"iTXt":
                rest = rest[2:].split(b"\0", 2)[-1]  # language tag and translated keyword, then the text
            if compressed:
                inflate = zlib.decompressobj()
                try:
                    rest = inflate.decompress(rest, MAX_CARD_BYTES + 1)
                except zlib.error as exc:
                    raise CharacterImportError(f"the PNG's {key!r} chunk cannot be decompressed: {exc}", path) from None
                if len(rest) > MAX_CARD_BYTES:
                    raise CharacterImportError(f"the PNG's {key!r} chunk is larger than {MAX_CARD_BYTES} bytes", path)
            found[key] = rest.decode("utf-8" if kind == b"iTXt" else "latin-1", "replace")
    return found


def read_png_card(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """The card inside a PNG (``ccv3`` chunk first, then ``chara``) and its JSON text; the image itself is
    never decoded (``png_text_chunks``)."""
    path = Path(path)
    try:
        png_size(path)
        chunks = png_text_chunks(path)
    except OSError as exc:
        raise CharacterImportError(f"not a readable PNG: {exc}", path) from None
    for key in ("ccv3", "chara"):
        value = chunks.get(key)
        if isinstance(value, str) and value.strip():
            raw = _decode_chunk(value, key, path)
            return parse_card_json(raw, path), raw
    raise CharacterImportError("the PNG has no character card (no 'chara' or 'ccv3' text chunk)", path)


def _decode_chunk(value: str, key: str, path: Path) -> bytes:
    value = value.strip()
    if value.startswith("{"):  # a few tools store the JSON itself
        return value.encode("utf-8")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CharacterImportError(f"the PNG's {key!r} chunk is not valid base64: {exc}", path) from None


def normalize_card(card: dict[str, Any], source: object = None) -> dict[str, Any]:
    """Any card as ``{"spec", "spec_version", "data"}`` (V1 becomes V2 data; the input is not changed)."""
    spec = card.get("spec")
    if spec in (V2, V3):
        data = card.get("data")
        if not isinstance(data, dict):
            raise CharacterImportError(f"a {spec} card needs a 'data' object", source)
        return {"spec": spec, "spec_version": card.get("spec_version") or ("3.0" if spec == V3 else "2.0"),
                "data": data}
    if spec is not None:
        raise CharacterImportError(f"unknown card spec {spec!r}; expected {V2!r}, {V3!r} or a V1 card", source)
    if not any(k in card for k in ("name", "char_name", "description", "first_mes", "char_persona")):
        raise CharacterImportError("not a character card: no 'spec', 'name' or 'description' field", source)
    data = {k: v for k, v in card.items() if k not in _V1_ALIASES.values()}
    for key, old in _V1_ALIASES.items():
        if not data.get(key) and card.get(old):
            data[key] = card[old]
    return {"spec": V2, "spec_version": "2.0", "data": data}


def _text(data: dict[str, Any], key: str, source: object) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise CharacterImportError(f"card field {key!r} should be text, not {type(value).__name__}", source)
    if len(value) > MAX_FIELD_CHARS:
        raise CharacterImportError(f"card field {key!r} is {len(value)} characters, over {MAX_FIELD_CHARS}", source)
    return value.replace("\r\n", "\n")


def _texts(data: dict[str, Any], key: str, source: object) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise CharacterImportError(f"card field {key!r} should be a list of texts", source)
    return [v for v in value if isinstance(v, str) and v.strip()]


def fill_card_macros(text: str, name: str) -> str:
    """``{{char}}``/``<BOT>`` -> the name; ``<USER>`` -> ``{{user}}`` (filled per session)."""
    return _USER.sub("{{user}}", _CHAR.sub(lambda _: name, text))


_LABEL = re.compile(r"^\s*(\{\{char\}\}|\{\{user\}\}|<BOT>|<USER>|[^:：*\"“「」()\[\]{}<>.,!?。，！？\n]{1,24}?)"
                    r"\s*[:：]\s*(.*)$", re.IGNORECASE)


def mes_example_scenes(mes_example: str, name: str, max_tokens: int = IMPORT_SCENE_TOKENS) -> list[str]:
    """``mes_example`` blocks as scene texts in our ``名字:「台词」`` line format, each at most about
    ``max_tokens`` (a longer block is cut between messages, so every part fits a story budget).

    A line starting with ``{{char}}:``, ``{{user}}:`` or a short name and a colon starts a message; other
    lines continue the message before them."""
    scenes = []
    for block in _START.split(mes_example):
        lines: list[list[str]] = []  # [speaker, text] or [raw line]
        for raw in block.split("\n"):
            m = _LABEL.match(raw)
            if m:
                who = m[1].strip()
                speaker = "{{user}}" if _USER.fullmatch(who) else name if _CHAR.fullmatch(who) else who
                lines.append([speaker, m[2].strip()])
            elif raw.strip():
                if lines and len(lines[-1]) == 2:
                    lines[-1][1] = f"{lines[-1][1]} {raw.strip()}".strip()  # a message over several lines
                else:
                    lines.append([raw.strip()])
        rendered = [f"{ln[0]}:「{ln[1]}」" if len(ln) == 2 else ln[0] for ln in lines if ln[-1]]
        scenes += [fill_card_macros(part, name) for part in _parts(rendered, max_tokens)]
    return scenes


def _parts(lines: list[str], max_tokens: int) -> list[str]:
    """Consecutive whole lines joined into texts of at most ``max_tokens`` (estimated); a longer line stands alone."""
    from ..character.windows import estimate_tokens

    parts, current, size = [], [], 0
    for line in lines:
        tokens = estimate_tokens(line) + 1
        if current and size + tokens > max_tokens:
            parts.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += tokens
    if current:
        parts.append("\n".join(current))
    return [p for p in parts if p.strip()]


def card_to_draft(card: dict[str, Any], source: object = None, *, name: str | None = None,
                  raw: bytes | None = None, files: dict[str, Any] | None = None) -> CharacterDraft:
    """Map a card (any version) to a character folder draft; the card itself goes into ``card.json``."""
    norm = normalize_card(card, source)
    data = norm["data"]
    char = plain_name(_text(data, "name", source)).strip()  # no direction overrides or invisible characters
    if not char:
        raise CharacterImportError("the card's name is empty; give the character a name (name=, --name)", source)
    fields = {k: _text(data, k, source) for k in TEXT_FIELDS}
    ext = data.get("extensions") if isinstance(data.get("extensions"), dict) else {}
    ours = ext.get("chatharuhi") if isinstance(ext.get("chatharuhi"), dict) else {}
    language = detect_language(" ".join(fields[k] for k in ("description", "personality", "first_mes",
                                                            "mes_example"))[:5000])
    speaker = plain_name(ours["speaker"]).strip() if isinstance(ours.get("speaker"), str) and \
        plain_name(ours["speaker"]).strip() else char
    # a card's texts are examples of how the character speaks, never scenes of an "original work"
    manifest: dict[str, Any] = {"display_name": char, "speaker": speaker, "language": language, "examples": True}
    ours_card = ours.get("prompt") == "description" and bool(fields["description"].strip())  # a card we exported
    if ours_card:  # our character comes back as it was: its own scenes, uncut, and its own manifest
        system_prompt = fields["description"]
        manifest["examples"] = False
        if isinstance(ours.get("manifest"), dict):
            manifest = {**manifest, **ours["manifest"]}
        language = manifest.get("language", language)
    else:
        system_prompt = card_system_prompt(fields, char, language)
    greeting = fill_card_macros(fields["first_mes"], char).strip()
    manifest["greeting"] = greeting or None
    alternates = [fill_card_macros(g, char).strip() for g in _texts(data, "alternate_greetings", source)]
    manifest["alternate_greetings"] = alternates
    phi = fill_card_macros(fields["post_history_instructions"].replace("{{original}}", ""), char).strip()
    manifest["post_history_instructions"] = phi or None
    manifest["talkativeness"] = _talkativeness(ext.get("talkativeness"))
    scenes = mes_example_scenes(fields["mes_example"], speaker, max_tokens=10**9 if ours_card else IMPORT_SCENE_TOKENS)
    if not scenes and greeting:
        scenes = ["\n".join(f"{char}:「{p.strip()}」" for p in greeting.split("\n") if p.strip())]
    if not scenes and fields["description"].strip():
        narrator = "旁白" if language.startswith("zh") else "Narrator"
        scenes = [f"{narrator}:{fill_card_macros(fields['description'], char).strip()}"]
    if not scenes:
        raise CharacterImportError("the card has no example messages, greeting or description to use as scenes",
                                   source)
    out_files = dict(files or {})
    out_files[CARD_FILE] = raw if raw is not None else json.dumps(card, ensure_ascii=False, indent=1).encode()
    book = data.get("character_book")
    if isinstance(book, dict) and book.get("entries"):
        out_files[LOREBOOK_FILE] = json.dumps(book, ensure_ascii=False, indent=1).encode("utf-8")
    scene_list = [(f"example_{i:03d}.txt", s) for i, s in enumerate(scenes, start=1)]
    return CharacterDraft(name or char, system_prompt, scene_list, manifest, out_files, source=str(source or ""))


def card_system_prompt(fields: dict[str, str], char: str, language: str) -> str:
    """The system prompt built from a card's fields through the ``card_*`` templates."""
    default_main = load_template("card_main", language).render(char=char, user="{{user}}").strip()
    main = fields["system_prompt"].replace("{{original}}", default_main) if fields["system_prompt"].strip() \
        else default_main
    parts = [main, fields["description"]]
    if fields["personality"].strip():
        parts.append(load_template("card_personality", language).render(char=char,
                                                                         personality=fields["personality"].strip()))
    if fields["scenario"].strip():
        parts.append(load_template("card_scenario", language).render(scenario=fields["scenario"].strip()))
    return fill_card_macros("\n\n".join(p.strip() for p in parts if p.strip()), char)


def read_charx(z: Any, name: str | None = None) -> CharacterDraft:
    """A CHARX zip (``card.json`` + assets, already opened as a ``SafeZip``); every asset is kept under
    ``card_assets/`` at its own path (so none can stand in for the prompt, a scene or the manifest), and the
    main icon becomes ``avatar.png`` (converted if it is not a PNG)."""
    raw = z.read(CARD_FILE)
    card = parse_card_json(raw, z.path)
    assets = {n: z.member(n) for n in z.names if n != CARD_FILE}  # streamed to disk, not held
    files: dict[str, Any] = {f"{ASSETS_DIR}/{n}": member for n, member in assets.items()}
    icon = _icon_asset(normalize_card(card, z.path)["data"])
    if icon and icon in assets:
        avatar = assets[icon] if assets[icon].head(8) == PNG_SIGNATURE else _as_png(z.read(icon))
        if avatar is not None:
            files[AVATAR_FILE] = avatar
    return card_to_draft(card, z.path, name=name, raw=raw, files=files)


def _embedded(uri: Any) -> str | None:
    """The path inside a CHARX of an ``embeded://`` (the spec's spelling) or ``embedded://`` URI."""
    if isinstance(uri, str):
        for prefix in ("embeded://", "embedded://"):
            if uri.startswith(prefix):
                return uri[len(prefix):]
    return None


def _icon_asset(data: dict[str, Any]) -> str | None:
    """The main icon's path: the ``icon`` asset named ``main`` (the V3 spec), else the first icon."""
    icons = [a for a in data.get("assets") or [] if isinstance(a, dict) and a.get("type") == "icon"
             and _embedded(a.get("uri"))]
    main = next((a for a in icons if a.get("name") == "main"), icons[0] if icons else None)
    return _embedded(main["uri"]) if main else None


def _as_png(image: bytes) -> bytes | None:
    """Any image Pillow reads, as PNG bytes (None if it is not an image)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency of the cards extra
        return None
    try:
        with Image.open(io.BytesIO(image)) as im:
            if im.width * im.height > IMAGE_MAX_PIXELS:  # from the header: a bomb is never decoded
                return None
            out = io.BytesIO()
            im.convert("RGBA").save(out, "PNG")
            return out.getvalue()
    except Exception:  # noqa: BLE001 - an unreadable icon just gives no avatar; the asset itself is kept
        return None


def _talkativeness(value: Any) -> float | None:
    """SillyTavern's ``extensions.talkativeness`` (a number or a numeric string, 0 to 1), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None
