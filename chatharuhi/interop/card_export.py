"""Any character back to a SillyTavern card: V2 or V3 JSON, a PNG card (``chara``, and ``ccv3`` for V3)
or a CHARX zip with the assets the card names.

An imported character gives back its own ``card.json`` (every field, ``extensions`` and unknown key kept;
missing required fields filled by ``card_spec``); any other character gets a card built from its folder,
with the folder's own settings under ``extensions.chatharuhi`` so that importing it again restores them.
"""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path
from typing import Any

from ..character.folder import Character, inside_folder, own_file
from ..config import IMAGE_MAX_PIXELS
from ..errors import CharacterImportError
from .card_spec import V2_FIELDS, spec_data
from .cards import (
    ASSETS_DIR,
    AVATAR_FILE,
    CARD_FILE,
    LOREBOOK_FILE,
    V2,
    V3,
    _embedded,
    normalize_card,
    parse_card_json,
)
from .folder import manifest_dict


def stored_card(character: Character) -> dict[str, Any] | None:
    """The card a character was imported from (``card.json``), if any."""
    path = own_file(Path(character.path), CARD_FILE)  # a link out of the folder is refused, never read
    if not path.is_file():
        return None
    return parse_card_json(path.read_bytes(), path)


def character_to_card(character: Character, version: str = "v2") -> dict[str, Any]:
    """A spec-valid V2 or V3 card for any character: an imported card's own JSON (every field, extension and
    unknown key kept; missing required fields filled, see ``card_spec``), else one built from the folder.

    From a V1 card, ``data`` holds the V2 fields and the V1 card's other keys stay at the top level, where
    they were."""
    spec = {"v2": V2, "2": V2, V2: V2, "v3": V3, "3": V3, V3: V3}.get(str(version).lower())
    if spec is None:
        raise CharacterImportError(f"unknown card version {version!r}; use 'v2' or 'v3'")
    original = stored_card(character)
    if original is None:
        card, data = {}, _data_from_folder(character)
    elif original.get("spec") is None:  # V1: the fields the spec defines go into data, the rest stays on top
        data = {k: v for k, v in normalize_card(original)["data"].items() if k in V2_FIELDS or k == "character_book"}
        card = {k: copy.deepcopy(v) for k, v in original.items() if k not in data}
    else:
        data = copy.deepcopy(normalize_card(original)["data"])
        card = {k: copy.deepcopy(v) for k, v in original.items() if k not in ("spec", "spec_version", "data")}
    if original is not None:
        _edits_since_import(character, data)
    return {"spec": spec, "spec_version": "3.0" if spec == V3 else "2.0", "data": spec_data(data, spec), **card}


def _edits_since_import(character: Character, data: dict[str, Any]) -> None:
    """The greeting and name the character has now (changed in the demo, say), where they differ from the card's
    own (the card's macros filled in the same way the importer fills them)."""
    from .cards import fill_card_macros

    m = character.manifest
    name = str(data.get("name") or character.display_name)
    greeting = (m.greeting or "").strip()
    if greeting != fill_card_macros(str(data.get("first_mes") or ""), name).strip().replace("\r\n", "\n"):
        data["first_mes"] = greeting
    if m.display_name and m.display_name != name:
        data["name"] = m.display_name


def _data_from_folder(character: Character) -> dict[str, Any]:
    m = character.manifest
    data: dict[str, Any] = {
        "name": character.display_name, "description": character.system_prompt, "personality": "",
        "scenario": "", "first_mes": m.greeting or "", "mes_example": scenes_to_mes_example(character),
        "creator_notes": m.description or "", "system_prompt": "",
        "post_history_instructions": m.post_history_instructions or "",
        "alternate_greetings": list(m.alternate_greetings), "tags": [], "creator": "", "character_version": "",
        "extensions": {"chatharuhi": {"prompt": "description", "name": character.name, "speaker": character.speaker,
                                      "manifest": manifest_dict(character)}},
    }
    book = Path(character.path) / LOREBOOK_FILE
    if book.is_file():
        from ..prompting.lorebook import Lorebook

        data["character_book"] = Lorebook.load(book).to_character_book()
    return data


def scenes_to_mes_example(character: Character) -> str:
    """Scenes as ``<START>`` blocks of ``{{char}}: text`` lines."""
    blocks = []
    for scene in character.scenes:
        out = []
        for line in scene.lines:
            if line.kind == "speech":
                who = ("{{char}}" if line.speaker == character.speaker else
                       "{{user}}" if line.speaker in ("{{user}}", character.user_role) else line.speaker)
                out.append(f"{who}: {line.text}{line.action}")
            elif line.kind == "narration" and line.speaker:
                out.append(f"{line.speaker}: {line.text}")
            else:
                out.append(line.text)
        blocks.append("<START>\n" + "\n".join(out))
    return "\n".join(blocks)


CHARX_ICON = "assets/icon/images/main.png"  # where the V3 spec says an icon image goes


def card_charx_bytes(character: Character) -> bytes:
    """A CHARX file: ``card.json`` (V3) plus every embedded asset the card names, read from the folder; the
    avatar is the main icon when the card has no embedded one."""
    import zipfile


    card = character_to_card(character, "v3")
    folder = Path(character.path)
    files: dict[str, bytes] = {}
    assets = []
    for asset in card["data"]["assets"]:
        path = _embedded(asset["uri"])
        if path is None:
            assets.append(asset)
            continue
        file = folder / ASSETS_DIR / path
        if not file.is_file():  # imported before assets had their own folder
            file = folder / path
        if not (file.is_file() and inside_folder(folder, file)):
            raise CharacterImportError(f"the card names the asset {asset['uri']!r} but {path} is not in the "
                                       "character's folder; restore it or remove it from card.json", folder)
        files[path] = file.read_bytes()
        assets.append(asset)
    avatar = folder / AVATAR_FILE
    has_icon = any(a["type"] == "icon" and _embedded(a["uri"]) for a in assets)
    if avatar.is_file() and inside_folder(folder, avatar) and not has_icon:
        assets = [a for a in assets if not (a["type"] == "icon" and a["uri"] == "ccdefault:")]
        assets.insert(0, {"type": "icon", "uri": f"embeded://{CHARX_ICON}", "name": "main", "ext": "png"})
        files[CHARX_ICON] = avatar.read_bytes()
    card["data"]["assets"] = assets
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(CARD_FILE, card_json_bytes(card))
        for path, data in sorted(files.items()):
            zf.writestr(path, data)
    return out.getvalue()


def card_json_bytes(card: dict[str, Any]) -> bytes:
    """A card as UTF-8 JSON."""
    return json.dumps(card, ensure_ascii=False, indent=1).encode("utf-8")


def card_png_bytes(character: Character, version: str = "v2", image: bytes | None = None) -> bytes:
    """A PNG card: the avatar (or a plain image) with ``chara`` (V2) and, for V3, ``ccv3`` chunks."""
    try:
        from PIL import Image, PngImagePlugin
    except ImportError:  # pragma: no cover
        raise CharacterImportError("writing PNG cards needs Pillow: pip install 'chatharuhi[cards]'") from None
    card = character_to_card(character, version)
    info = PngImagePlugin.PngInfo()
    v2 = card if card["spec"] == V2 else character_to_card(character, "v2")
    info.add_text("chara", base64.b64encode(card_json_bytes(v2)).decode("ascii"))
    if card["spec"] == V3:
        info.add_text("ccv3", base64.b64encode(card_json_bytes(card)).decode("ascii"))
    avatar = Path(character.path) / AVATAR_FILE
    if image is None and avatar.is_file() and inside_folder(Path(character.path), avatar):  # never a link out
        image = avatar.read_bytes()
    im = None
    if image is not None:
        try:
            im = Image.open(io.BytesIO(image))
            if im.width * im.height > IMAGE_MAX_PIXELS:  # from the header: never decoded
                raise ValueError("too many pixels")
            im.load()
        except Exception:  # noqa: BLE001 - a broken avatar falls back to the plain image
            im = None
    if im is None:
        im = Image.new("RGB", (400, 600), (222, 218, 230))
    out = io.BytesIO()
    im.save(out, "PNG", pnginfo=info)
    return out.getvalue()
