"""SillyTavern cards: V1/V2/V3 from JSON, PNG and CHARX; export to V2/V3 JSON and PNG; bad input."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import pytest

pytest.importorskip("PIL")
from PIL import Image, PngImagePlugin  # noqa: E402

from chatharuhi import ChatHaruhi, load_character  # noqa: E402
from chatharuhi.backends.scripted import ScriptedBackend  # noqa: E402
from chatharuhi.errors import CharacterImportError  # noqa: E402
from chatharuhi.interop import export_character, import_character  # noqa: E402
from chatharuhi.interop.cards import character_to_card, read_png_card  # noqa: E402


def v2_card(**data):
    base = {
        "name": "Mina", "description": "{{char}} is a librarian who loves <USER>'s questions.",
        "personality": "calm, curious", "scenario": "A quiet library at night.",
        "first_mes": "Hello {{user}}, looking for a book?", "alternate_greetings": ["Oh, {{user}} again!"],
        "mes_example": "<START>\n{{user}}: Any advice?\n{{char}}: Read slowly.\nTake notes.\n<START>\n<BOT>: Shh!",
        "creator_notes": "SECRET CREATOR NOTE", "system_prompt": "{{original}} Never break character.",
        "post_history_instructions": "Reply in under 50 words.", "tags": ["books"], "creator": "me",
        "character_version": "1", "extensions": {"depth_prompt": {"depth": 4, "prompt": "x"}, "fav": True},
        "character_book": {"entries": [{"keys": ["dragon"], "content": "Dragons live in the east wing.",
                                        "enabled": True, "insertion_order": 10}]},
    }
    base.update(data)
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": base, "unknown_top": {"keep": 1}}


def png_bytes(chunks: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def b64(card) -> str:
    return base64.b64encode(json.dumps(card).encode()).decode()


def test_v2_json_maps_to_a_character(tmp_path):
    src = tmp_path / "mina.json"
    src.write_text(json.dumps(v2_card()), encoding="utf-8")
    c = load_character(import_character(src, tmp_path / "chars"))
    assert c.name == "Mina" and c.display_name == "Mina" and c.language == "en"
    p = c.system_prompt
    assert p.startswith("You are Mina") and "Never break character." in p  # {{original}} expanded
    assert "Mina is a librarian who loves {{user}}'s questions." in p  # {{user}} is filled per session
    assert "calm, curious" in p and "A quiet library at night." in p
    assert "SECRET CREATOR NOTE" not in p and "{{char}}" not in p and "{{original}}" not in p
    assert c.manifest.greeting == "Hello {{user}}, looking for a book?"
    assert c.manifest.alternate_greetings == ["Oh, {{user}} again!"]
    assert c.manifest.post_history_instructions == "Reply in under 50 words."
    assert [s.text for s in c.scenes] == ["{{user}}:「Any advice?」\nMina:「Read slowly. Take notes.」",
                                          "Mina:「Shh!」"]
    assert (c.path / "lorebook.json").is_file() and (c.path / "card.json").is_file()


def test_v2_round_trip_keeps_extensions_and_unknown_fields(tmp_path):
    card = v2_card()
    src = tmp_path / "mina.json"
    src.write_text(json.dumps(card), encoding="utf-8")
    c = load_character(import_character(src, tmp_path / "chars"))
    out = export_character(c, "v2", tmp_path / "out.json")
    assert json.loads(out.read_text(encoding="utf-8")) == card
    v3 = json.loads(export_character(c, "v3", tmp_path / "out3.json").read_text(encoding="utf-8"))
    assert v3["spec"] == "chara_card_v3" and v3["spec_version"] == "3.0" and v3["unknown_top"] == {"keep": 1}
    assert v3["data"]["extensions"] == card["data"]["extensions"]
    assert v3["data"]["group_only_greetings"] == []


def test_v1_card_and_null_fields(tmp_path):
    src = tmp_path / "v1.json"
    src.write_text(json.dumps({"name": "Old", "description": "An old card.", "personality": None, "scenario": None,
                               "first_mes": "Hi.", "mes_example": None, "weird": [1, 2]}), encoding="utf-8")
    c = load_character(import_character(src, tmp_path / "chars"))
    assert c.scenes[0].text == "Old:「Hi.」" and "An old card." in c.system_prompt
    card = character_to_card(c, "v2")
    assert card["spec"] == "chara_card_v2" and card["data"]["weird"] == [1, 2]


def test_png_ccv3_wins_over_chara(tmp_path):
    v3 = v2_card(name="Three")
    v3.update(spec="chara_card_v3", spec_version="3.0")
    src = tmp_path / "card.png"
    src.write_bytes(png_bytes({"chara": b64(v2_card(name="Two")), "ccv3": b64(v3)}))
    c = load_character(import_character(src, tmp_path / "chars"))
    assert c.display_name == "Three" and (c.path / "avatar.png").is_file()


def test_charx_with_assets(tmp_path):
    v3 = v2_card(name="Xia")
    v3.update(spec="chara_card_v3", spec_version="3.0")
    v3["data"]["assets"] = [{"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main",
                             "ext": "png"}]
    src = tmp_path / "xia.charx"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("card.json", json.dumps(v3))
        zf.writestr("assets/icon/images/main.png", png_bytes({}))
    c = load_character(import_character(src, tmp_path / "chars"))
    assert c.display_name == "Xia"
    assert (c.path / "assets/icon/images/main.png").is_file() and (c.path / "avatar.png").is_file()


def test_folder_character_exports_to_v2_v3_json_and_png_and_back(fixtures_dir, tmp_path):
    original = load_character(fixtures_dir / "haruhi")
    for version in ("v2", "v3"):
        png = export_character(original, version, tmp_path / f"h-{version}.png", png=True)
        card, _ = read_png_card(png)
        assert card["spec"] == f"chara_card_{version}"
        with Image.open(png) as im:
            im.load()
            assert "chara" in im.text and ("ccv3" in im.text) == (version == "v3")
        back = load_character(import_character(png, tmp_path / version))
        assert back.system_prompt == original.system_prompt and back.speaker == original.speaker
        assert len(back.scenes) == len(original.scenes)
    data = character_to_card(original, "v2")["data"]
    assert data["mes_example"].startswith("<START>\n") and "{{char}}: " in data["mes_example"]


def test_long_fields_are_fine(tmp_path):
    src = tmp_path / "long.json"
    src.write_text(json.dumps(v2_card(description="很长的描述。" * 50_000)), encoding="utf-8")
    c = load_character(import_character(src, tmp_path / "chars"))
    assert len(c.system_prompt) > 300_000


@pytest.mark.parametrize("payload, match", [
    ({"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "  ", "description": "x"}}, "name is empty"),
    ({"spec": "chara_card_v2", "data": "nope"}, "'data' object"),
    ({"spec": "chara_card_v9", "data": {}}, "unknown card spec"),
    ({"hello": "world"}, "not a character card"),
    ({"spec": "chara_card_v2", "data": {"name": "A", "description": ["list"]}}, "should be text"),
    ({"spec": "chara_card_v2", "data": {"name": "A", "description": "x" * 2_000_001}}, "over"),
])
def test_bad_cards_are_typed_errors_and_write_nothing(tmp_path, payload, match):
    src = tmp_path / "bad.json"
    src.write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(CharacterImportError, match=match):
        import_character(src, tmp_path / "chars")
    assert not (tmp_path / "chars").exists() or not any((tmp_path / "chars").iterdir())


def test_bad_pngs(tmp_path):
    good = png_bytes({"chara": b64(v2_card())})
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "plain.png").write_bytes(png_bytes({}))
    (tmp_path / "b64.png").write_bytes(png_bytes({"chara": "not base64 !!"}))
    (tmp_path / "shape.png").write_bytes(png_bytes({"chara": base64.b64encode(b"[1, 2]").decode()}))
    for name, match in [("trunc.png", "PNG"), ("plain.png", "no character card"), ("b64.png", "base64"),
                        ("shape.png", "JSON object")]:
        with pytest.raises(CharacterImportError, match=match):
            import_character(tmp_path / name, tmp_path / "chars")
    assert not (tmp_path / "chars").exists() or not any((tmp_path / "chars").iterdir())


def test_charx_with_dotdot_entry_is_refused(tmp_path):
    src = tmp_path / "evil.charx"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("card.json", json.dumps(v2_card()))
        zf.writestr("../../escape.txt", "x")
    with pytest.raises(CharacterImportError, match="unsafe"):
        import_character(src, tmp_path / "chars")
    assert not (tmp_path.parent / "escape.txt").exists()


def test_card_character_chats_with_persona_macros_and_post_history(tmp_path):
    from chatharuhi.persona import Persona

    src = tmp_path / "mina.json"
    src.write_text(json.dumps(v2_card()), encoding="utf-8")
    folder = import_character(src, tmp_path / "chars")
    backend = ScriptedBackend(["Mina:「Welcome.」"])
    bot = ChatHaruhi(folder, llm=backend, embedder="hash", persona=Persona("Kyon", "a tired student"))
    bot.chat("Tell me about the dragon")
    system, *_, user = backend.calls[-1]
    assert "loves Kyon's questions" in system.content and "{{user}}" not in system.content
    assert "You are talking with Kyon. About Kyon: a tired student" in system.content
    assert "Dragons live in the east wing." in system.content  # the card's character_book fired
    assert "SECRET CREATOR NOTE" not in system.content
    assert user.content.startswith("Kyon:「Tell me about the dragon」") and user.content.endswith(
        "Reply in under 50 words.")
    assert bot.history[-1].user_role == "Kyon"
    assert bot.last_trace.lore[0].key == "dragon" and bot.last_trace.lore[0].included
