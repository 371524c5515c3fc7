"""ChatHaruhi formats: packaged role JSONL, 54K rows, ChatHaruhi 2.0 role zips, zipped folders; CLI."""

from __future__ import annotations

import base64
import json
import os
import zipfile

import numpy as np
import pytest

from chatharuhi import load_character
from chatharuhi.cli import main
from chatharuhi.errors import CharacterImportError
from chatharuhi.interop import export_character, import_character
from chatharuhi.interop.haruhi_formats import base64_to_float_array, float_array_to_base64
from conftest import FIXTURE_NAMES, PACKAGED


def test_float_base64_is_big_endian_float32():
    v = np.array([1.0, -2.5, 0.125], dtype=np.float32)
    encoded = float_array_to_base64(v)
    assert base64.b64decode(encoded) == v.astype(">f4").tobytes()
    assert np.array_equal(base64_to_float_array(encoded), v)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_fixture_round_trips_through_jsonl(fixtures_dir, tmp_path, name):
    original = load_character(fixtures_dir / name)
    out = export_character(original, "jsonl", tmp_path / f"{name}.jsonl", embedder="hash")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["hash:64"] == "system_prompt" and rows[1]["hash:64"] == "config"
    assert len(base64.b64decode(rows[2]["hash:64"])) == 64 * 4
    back = load_character(import_character(out, tmp_path / "chars"))
    assert back.system_prompt == original.system_prompt
    assert [s.text for s in back.scenes] == [s.text for s in original.scenes]
    assert [s.id for s in back.scenes] == [s.id for s in original.scenes]


def _chatharuhi_jsonl(path, scenes, prompt="你正在扮演春日", enc=False, column="luotuo_openai", dim=8):
    rows = [{"text": prompt, column: "system_prompt"}, {"text": "", column: "config"}]
    rng = np.random.default_rng(0)
    for s in scenes:
        row = {"enc_text": base64.b64encode(s.encode()).decode()} if enc else {"text": s}
        row[column] = float_array_to_base64(rng.normal(size=dim))
        rows.append(row)
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return path


def test_chatharuhi_style_jsonl_with_enc_text(tmp_path):
    scenes = ["春日:「走吧！」\n阿虚:「去哪？」", "阿虚:「又来了」\n春日:「当然！」"]
    src = _chatharuhi_jsonl(tmp_path / "haruhi.jsonl", scenes, enc=True)
    c = load_character(import_character(src, tmp_path / "chars"))
    assert c.name == "haruhi" and c.system_prompt == "你正在扮演春日"
    assert [s.text for s in c.scenes] == scenes


def test_stored_vectors_are_reused_when_the_embedder_matches(tmp_path):
    from chatharuhi.retrieval.embeddings import HashEmbedder
    from chatharuhi.retrieval.index import clear_shared_indexes, index_for

    scenes = ["春日:「走吧！」", "阿虚:「去哪？」"]
    src = _chatharuhi_jsonl(tmp_path / "r.jsonl", scenes, column="hash:8", dim=8)
    stored = [base64_to_float_array(json.loads(line)["hash:8"]) for line in src.read_text().splitlines()[2:]]
    c = load_character(import_character(src, tmp_path / "chars"))
    clear_shared_indexes()

    class Refuses(HashEmbedder):
        def embed_documents(self, texts):
            raise AssertionError("re-embedded although the file carried this embedder's vectors")

    index = index_for(c, Refuses(8))
    for scene, vec in zip(index.scenes, index.vectors):
        want = stored[scenes.index(scene.text)]
        assert np.allclose(vec, want / np.linalg.norm(want), atol=1e-6)


def test_dialogue_rows_54k(tmp_path):
    rows = [{"agent_role": "春日", "user_role": "阿虚", "user_question": f"问题{i}", "agent_response": f"回答{i}"}
            for i in range(3)] + [{"agent_role": "长门", "user_role": "阿虚", "user_question": "q",
                                   "agent_response": "……"}]
    src = tmp_path / "54k.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    with pytest.raises(CharacterImportError, match="role="):
        import_character(src, tmp_path / "chars")
    c = load_character(import_character(src, tmp_path / "chars", role="春日"))
    assert len(c.scenes) == 3 and c.scenes[0].text == "阿虚:「问题0」\n春日:「回答0」"
    assert c.speaker == "春日" and "春日" in c.system_prompt


@pytest.mark.shared
def test_chatharuhi2_role_zip_imports_all_172_scenes(tmp_path):
    c = load_character(import_character(PACKAGED / "haruhi.zip", tmp_path / "chars"))
    assert c.name == "haruhi" and len(c.scenes) == 172
    assert c.system_prompt.startswith("你正在扮演凉宫春日")
    assert c.scenes[0].text.startswith("旁白:SOS团在别墅休息了下来")
    assert c.speaker == "春日"


def test_folder_zip_round_trip(fixtures_dir, tmp_path):
    original = load_character(fixtures_dir / "wangduoyu")
    out = export_character(original, "zip", tmp_path / "w.zip")
    back = load_character(import_character(out, tmp_path / "chars"))
    assert back.system_prompt == original.system_prompt
    assert [(s.id, s.text) for s in back.scenes] == [(s.id, s.text) for s in original.scenes]


def _zip(path, entries):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("bad", ["../evil.txt", "/abs/evil.txt", "x/../../evil.txt"])
def test_zip_with_unsafe_entries_is_refused(tmp_path, bad):
    src = _zip(tmp_path / "bad.zip", {"c/system_prompt.txt": "p", "c/texts/a.txt": "甲:「乙」", bad: "x"})
    with pytest.raises(CharacterImportError, match="unsafe"):
        import_character(src, tmp_path / "chars")
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "chars").exists() or not any((tmp_path / "chars").iterdir())


def test_zip_bomb_and_symlink_are_refused(tmp_path):
    src = _zip(tmp_path / "bomb.zip", {"c/system_prompt.txt": "p" * (50 << 20), "c/texts/a.txt": "甲:「乙」"})
    with pytest.raises(CharacterImportError, match="zip bomb"):
        import_character(src, tmp_path / "chars")
    link = zipfile.ZipInfo("c/texts/link.txt")
    link.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr("c/system_prompt.txt", "p")
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(CharacterImportError, match="symbolic link"):
        import_character(tmp_path / "link.zip", tmp_path / "chars")
    assert not (tmp_path / "chars").exists() or not any((tmp_path / "chars").iterdir())


def test_bad_jsonl_is_a_typed_error_and_writes_nothing(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "p", "luotuo_openai": "system_prompt"}\n{"enc_text": "%%%", "luotuo_openai": "AAAA"}\n')
    with pytest.raises(CharacterImportError, match="enc_text"):
        import_character(src, tmp_path / "chars")
    src.write_text('{"text": "p"\n')
    with pytest.raises(CharacterImportError, match="line 1"):
        import_character(src, tmp_path / "chars")
    assert not (tmp_path / "chars").exists() or not any((tmp_path / "chars").iterdir())


def test_existing_folder_is_not_overwritten_without_force(fixtures_dir, tmp_path):
    out = export_character(load_character(fixtures_dir / "wangduoyu"), "zip", tmp_path / "w.zip")
    import_character(out, tmp_path / "chars")
    with pytest.raises(CharacterImportError, match="already exists"):
        import_character(out, tmp_path / "chars")
    import_character(out, tmp_path / "chars", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "chars").iterdir()) == ["wangduoyu"]


@pytest.mark.shared
def test_cli_import_and_export(fixtures_dir, tmp_path, capsys):
    assert main(["import", str(PACKAGED / "haruhi.zip"), "--to", str(tmp_path / "chars")]) == 0
    assert capsys.readouterr().out.strip() == "haruhi"
    out = tmp_path / "h.jsonl"
    assert main(["export", "haruhi", "--characters-dir", str(tmp_path / "chars"), "--format", "jsonl",
                 "--embedder", "hash", "--out", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 172 + 2
    assert main(["import", str(PACKAGED / "haruhi.zip"), "--to", str(tmp_path / "chars")]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.shared
def test_cli_import_defaults_to_the_users_characters_folder(tmp_path, capsys):
    from chatharuhi.character.discovery import find_character, user_characters_dir

    assert main(["import", str(PACKAGED / "haruhi.zip"), "--name", "haruhi2"]) == 0
    assert (user_characters_dir() / "haruhi2" / "system_prompt.txt").is_file()
    assert len(find_character("haruhi2").scenes) == 172
    assert os.fspath(user_characters_dir()).startswith(os.environ["CHATHARUHI_HOME"])
