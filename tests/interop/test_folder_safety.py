"""Issue 15: nothing outside a character folder is ever read; imports cannot be bombs; caches are bounded.

Built from the issue's reproductions: a ``texts/passwd.txt`` link to a file outside the folder, a linked
``system_prompt.txt``, a zip of 1,000 x 1 MiB entries, a CHARX with hundreds of 1 MiB assets, a card
nested 200k deep, the ``.name.import-XXXX`` folders a killed import leaves, and a token counter fed
large unique texts."""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
import zipfile

import pytest

from chatharuhi.character.discovery import list_characters
from chatharuhi.character.folder import load_character
from chatharuhi.character.validate import validate_path
from chatharuhi.config import builtin_characters_dir
from chatharuhi.errors import CharacterImportError, InvalidCharacter
from chatharuhi.interop import export_character, import_character
from chatharuhi.prompting.memo import BytesMemo

SECRET = "root:x:0:0:SECRET-OUTSIDE-LINE"


@pytest.fixture
def outside(tmp_path):
    """A file outside any character folder, in scene format, so a loader that follows links would use it."""
    p = tmp_path / "outside" / "passwd"
    p.parent.mkdir()
    p.write_text(f"春日:「{SECRET}」\n", encoding="utf-8")
    return p


@pytest.fixture
def character(tmp_path):
    folder = tmp_path / "chars" / "haruhi"
    shutil.copytree(builtin_characters_dir() / "haruhi", folder)
    return folder


# -- §3 links out of the folder ------------------------------------------------------------------------------
def test_scene_linking_outside_is_never_read_and_validate_reports_it(character, outside, tmp_path):
    (character / "texts" / "passwd.txt").symlink_to(outside)
    (outside.parent / "more.txt").write_text(f"春日:「{SECRET}」\n", encoding="utf-8")
    (character / "texts" / "linked-dir").symlink_to(outside.parent, target_is_directory=True)
    (character / "notes").symlink_to(outside.parent, target_is_directory=True)  # not a scene, still copied by imports
    with pytest.warns(RuntimeWarning, match="outside the character folder"):
        c = load_character(character)
    assert all(SECRET not in s.text for s in c.scenes) and "passwd.txt" not in [s.id for s in c.scenes]
    problems = validate_path(character)[character]
    assert any("outside the character folder" in p.message and p.path.name == "passwd.txt" for p in problems)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = export_character(c, "jsonl", tmp_path / "out.jsonl", embedder="hash")
        assert SECRET not in out.read_text(encoding="utf-8")
        z = export_character(c, "zip", tmp_path / "out.zip")
        with zipfile.ZipFile(z) as zf:
            assert all(SECRET.encode() not in zf.read(n) for n in zf.namelist())
        copied = import_character(character, tmp_path / "imported", name="copy")
    assert not (copied / "texts" / "passwd.txt").exists()
    assert all(SECRET not in p.read_text(encoding="utf-8", errors="replace") for p in copied.rglob("*") if p.is_file())


def test_linked_texts_folder_and_system_prompt_are_refused(character, outside, tmp_path):
    prompt = character / "system_prompt.txt"
    prompt.unlink()
    prompt.symlink_to(outside)
    with pytest.raises(InvalidCharacter, match="outside the character folder"):
        load_character(character)
    assert any(p.severity == "error" and p.path.name == "system_prompt.txt"
               for p in validate_path(character)[character])
    other = tmp_path / "chars" / "linked-texts"
    shutil.copytree(builtin_characters_dir() / "haruhi", other)
    shutil.rmtree(other / "texts")
    (other / "texts").symlink_to(outside.parent)
    with pytest.raises(InvalidCharacter, match="outside the character folder"):
        load_character(other)


def test_links_inside_the_folder_still_work(character):
    first = sorted((character / "texts").glob("*.txt"))[0]
    (character / "texts" / "again").mkdir()
    (character / "texts" / "again" / "link.txt").symlink_to(first)
    c = load_character(character)
    assert "again/link.txt" in [s.id for s in c.scenes]


# -- §4 bombs and stale temp folders -------------------------------------------------------------------------
def _zip(path, entries):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def test_zip_of_a_thousand_one_mib_entries_is_refused(tmp_path):
    mib = b"\0" * (1 << 20)
    src = _zip(tmp_path / "bomb.zip", [("c/system_prompt.txt", "你是春日。"), ("c/texts/a.txt", "春日:「好」")]
               + [(f"c/assets/{i}.bin", mib) for i in range(1000)])
    assert src.stat().st_size < 2 << 20  # about 1 MB on disk
    with pytest.raises(CharacterImportError, match="zip bomb"):
        import_character(src, tmp_path / "chars")
    assert not (tmp_path / "chars").exists() or not any((tmp_path / "chars").iterdir())


def test_many_small_highly_compressible_entries_hit_the_total_cap(tmp_path):
    """Entries too small for the per-entry ratio still cannot add up to far more than the archive."""
    small = b"\0" * (60 << 10)
    src = _zip(tmp_path / "many.zip", [("c/system_prompt.txt", "你是春日。"), ("c/texts/a.txt", "春日:「好」")]
               + [(f"c/assets/{i}.bin", small) for i in range(1000)])
    with pytest.raises(CharacterImportError, match="zip bomb"):
        import_character(src, tmp_path / "chars")


def test_charx_with_hundreds_of_mib_assets_is_refused(tmp_path):
    card = {"spec": "chara_card_v3", "spec_version": "3.0",
            "data": {"name": "Bomb", "description": "x", "first_mes": "hi", "mes_example": ""}}
    src = _zip(tmp_path / "bomb.charx", [("card.json", json.dumps(card))]
               + [(f"assets/other/{i}.png", b"\0" * (1 << 20)) for i in range(900)])
    with pytest.raises(CharacterImportError, match="zip bomb"):
        import_character(src, tmp_path / "chars")


def test_honest_charx_assets_are_streamed_to_disk(tmp_path):
    card = {"spec": "chara_card_v3", "spec_version": "3.0",
            "data": {"name": "Honest", "description": "A girl.", "first_mes": "hi", "mes_example": ""}}
    blob = os.urandom(300_000)  # incompressible, so well within the ratios
    src = _zip(tmp_path / "ok.charx", [("card.json", json.dumps(card)), ("assets/other/x.bin", blob)])
    dest = import_character(src, tmp_path / "chars")
    assert (dest / "card_assets" / "assets" / "other" / "x.bin").read_bytes() == blob


def test_deeply_nested_card_is_a_typed_error(tmp_path):
    src = tmp_path / "nested.json"
    src.write_text('{"spec": "chara_card_v2", "data": ' + "[" * 200_000 + "]" * 200_000 + "}", encoding="utf-8")
    with pytest.raises(CharacterImportError, match="nested too deeply"):
        import_character(src, tmp_path / "chars")


def test_import_temp_folders_are_never_characters_and_stale_ones_are_removed(character, tmp_path):
    root = character.parent
    stale = root / ".haruhi.import-k1ll3d"
    shutil.copytree(character, stale)
    fresh = root / ".other.import-running"
    shutil.copytree(character, fresh)
    os.utime(fresh)  # copytree copies the source folder's times: a checkout over an hour old would look stale
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    assert [e.name for e in list_characters(root) if e.path.parent == root] == ["haruhi"]
    import_character(character, root, name="copy")
    assert not stale.exists()  # left by a killed import: cleaned up
    assert fresh.exists()  # may belong to an import still running: kept


# -- §2 byte-bounded caches ------------------------------------------------------------------------------------
def test_bytes_memo_is_bounded_by_bytes_not_entries():
    memo = BytesMemo(max_bytes=1 << 20, max_item_bytes=200 << 10)
    for i in range(200):
        memo.put(f"{i}" + "x" * 100_000, i)  # 200 unique ~100 KB texts = 20 MB offered
    assert memo.bytes <= 1 << 20 and 0 < len(memo) <= 11
    assert memo.get("199" + "x" * 100_000) == 199  # the newest are kept
    memo.put("y" * 300_000, 1)  # over the per-item limit: not remembered
    assert memo.get("y" * 300_000) is None


def test_token_counter_memo_stays_bounded_with_large_unique_texts():
    from chatharuhi.prompting.memo import MEMO_MAX_BYTES
    from chatharuhi.prompting.tokens import TiktokenCounter

    counter = TiktokenCounter()
    base = "春日:「外星人在哪里」" * 5_000  # ~55 KB
    for i in range(400):  # ~45 MB of keys offered to a 32 MiB memo
        text = f"{i}:{base}"
        assert counter.count(text) == len(counter.encode(text)) if i % 200 == 0 else counter.count(text) > 0
    assert counter._memo.bytes <= MEMO_MAX_BYTES
