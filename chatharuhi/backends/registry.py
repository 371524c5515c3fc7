"""Backend registry: ``name -> factory``, plus the ``chatharuhi.backends`` entry-point group.

Selection when the user names no backend: an explicit argument, then ``CHATHARUHI_BACKEND``, then a
``model=`` that names a local model (a catalogue name such as ``qwen2.5-3b``, or a ``.gguf`` path:
the ``llama_cpp`` backend), then ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` (the ``openai`` backend), then
the largest model pulled with ``chatharuhi models pull``, then the embedded offline model
(``embedded``: xllamacpp + the pinned SmolLM2 GGUF, when both are installed); the last two
with a one-line notice on stderr. Else a clear error that says how to install it or configure another.

Built-in names: ``openai``, ``scripted``, ``debug`` (echoes the prompt), ``llama_cpp`` (any GGUF file:
``model_path=``), ``embedded`` (``llama_cpp`` with the pinned default model) and ``transformers`` (a model
folder + LoRA adapters). Every name's accepted keywords are declared (``backend_options``); others are refused.
"""

from __future__ import annotations

import logging
import os
import threading
from importlib.metadata import entry_points
from typing import Any, Callable, Iterable

from ..config import (
    EMBEDDED_FILE,
    EMBEDDED_INSTALL,
    ENV_BACKEND,
    ENV_MODEL,
    ENV_OPENAI_API_KEY,
    home_dir,
    openai_base_url_from_env,
)
from ..errors import BackendUnavailable, ModelError, UnknownBackend, UnknownOption
from ..options import check_options, parameter_names, strict
from .base import Backend

ENTRY_POINT_GROUP = "chatharuhi.backends"

BackendFactory = Callable[..., Backend]

_registry: dict[str, BackendFactory] = {}
_declared: dict[str, frozenset[str]] = {}  # options given to register_backend
_entry_points_loaded = False
_lock = threading.Lock()
logger = logging.getLogger("chatharuhi")


@strict
def register_backend(name: str, factory: BackendFactory, options: Iterable[str] | None = None) -> None:
    """Make ``factory(**options)`` available under ``name``.

    ``options``: the keywords it accepts; by default read from the factory (a ``Backend`` class's
    ``accepted_options()``, else its signature). ``get_backend`` refuses any other keyword."""
    _registry[name] = factory
    if options is not None:
        _declared[name] = frozenset(options)
    else:
        _declared.pop(name, None)


def _class(module: str, cls: str) -> type[Backend]:
    from importlib import import_module

    return getattr(import_module(f".{module}", __package__), cls)


# The embedded backend is llama_cpp with the pinned model: it refuses the keywords that pick another model.
EMBEDDED_REFUSED = ("llama", "model", "model_path", "sha256")


def _builtin_factories() -> dict[str, BackendFactory]:
    def openai(**options: Any) -> Backend:
        from .openai_compat import OpenAIBackend

        return OpenAIBackend(**options)

    def scripted(**options: Any) -> Backend:
        from .scripted import ScriptedBackend

        return ScriptedBackend(**options)

    def llama_cpp(**options: Any) -> Backend:
        from .llama_cpp.backend import LlamaCppBackend

        entry = _local_model(options)
        try:
            return LlamaCppBackend(**options, **({"entry": entry} if entry is not None and not entry.builtin else {}))
        except ModelError as exc:
            if entry is None or entry.builtin:
                raise
            raise ModelError(f"the pulled model {entry.name}: {exc} Its bytes matched their sha256 when pulled, so "
                             "this llama.cpp may not know its architecture: pip install -U xllamacpp, "
                             f"or choose another model (`chatharuhi models list`)") from None

    def embedded(**options: Any) -> Backend:
        from .llama_cpp.backend import LlamaCppBackend

        return LlamaCppBackend(**options)  # always the pinned default model (_check refuses another)

    def transformers(**options: Any) -> Backend:
        from .transformers.backend import TransformersBackend

        return TransformersBackend(**options)

    def debug(**options: Any) -> Backend:
        from .debug import DebugBackend

        return DebugBackend(**options)

    # the class whose constructor declares each factory's options
    openai.target = ("openai_compat", "OpenAIBackend")  # type: ignore[attr-defined]
    scripted.target = ("scripted", "ScriptedBackend")  # type: ignore[attr-defined]
    llama_cpp.target = embedded.target = ("llama_cpp.backend", "LlamaCppBackend")  # type: ignore[attr-defined]
    transformers.target = ("transformers.backend", "TransformersBackend")  # type: ignore[attr-defined]
    debug.target = ("debug", "DebugBackend")  # type: ignore[attr-defined]
    embedded.refused = EMBEDDED_REFUSED  # type: ignore[attr-defined]
    return {"debug": debug, "embedded": embedded, "llama_cpp": llama_cpp, "openai": openai, "scripted": scripted,
            "transformers": transformers}


def _local_model(options: dict[str, Any]):
    """Turn ``model=`` (or ``CHATHARUHI_MODEL``) into ``model_path=``; the catalogue entry, if it names one."""
    from ..models import BUILTIN, find_model, is_model_name, model_path

    name = options.pop("model", None)
    if name is None and options.get("model_path") is None and options.get("llama") is None:
        name = os.environ.get(ENV_MODEL) or None
    if name is None:
        return BUILTIN if options.get("model_path") is None and options.get("llama") is None else None
    name = str(name)
    if is_model_name(name):
        options["model_path"] = model_path(name)
        return find_model(name)
    if _looks_like_path(name):
        options["model_path"] = name
        return None
    find_model(name)  # raises UnknownModel with close matches
    return None


def _looks_like_path(name: str) -> bool:
    return name.lower().endswith(".gguf") or os.sep in name or "/" in name or os.path.exists(name)


def _names_local_model(model: Any) -> bool:
    if not isinstance(model, str):
        return False
    from ..models import is_model_name

    return is_model_name(model) or model.lower().endswith(".gguf")


def _load_entry_points() -> None:
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        for name, factory in _builtin_factories().items():
            _registry.setdefault(name, factory)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _registry.setdefault(ep.name, _lazy(ep))  # imported only when first used
        _entry_points_loaded = True


def _lazy(ep) -> BackendFactory:
    def factory(**options: Any) -> Backend:
        return ep.load()(**options)

    factory.target = ep  # type: ignore[attr-defined]
    return factory


def backend_options(name: str) -> frozenset[str] | None:
    """The keywords backend ``name`` accepts, or None when its factory does not declare them."""
    _load_entry_points()
    if name in _declared:
        return _declared[name]
    factory = _registry.get(name)
    if factory is None:
        raise UnknownBackend(name, list(_registry))
    target = getattr(factory, "target", factory)
    if isinstance(target, tuple):
        target = _class(*target)
    elif hasattr(target, "load") and hasattr(target, "group"):  # an entry point
        target = target.load()
    if isinstance(target, type) and issubclass(target, Backend):
        valid = target.accepted_options()
    else:
        names, takes_any = parameter_names(target)
        valid = None if takes_any else names
    return None if valid is None else valid - frozenset(getattr(factory, "refused", ()))


def _check(name: str, factory: BackendFactory, options: dict[str, Any]) -> None:
    """Refuse keywords backend ``name`` does not accept, before anything is built."""
    refused = [k for k in getattr(factory, "refused", ()) if k in options]
    if refused:
        raise UnknownOption(refused[0], f"backend {name!r}", (),
                            hint="The embedded backend always runs the pinned default model; for another GGUF "
                                 "file use llm='llama_cpp' with model_path= (or model='qwen2.5-3b').")
    valid = backend_options(name)
    if valid is not None and not options.keys() <= valid:
        check_options(options, valid, f"backend {name!r}")


@strict
def available_backends() -> list[str]:
    """Names of every registered backend, built-in and from entry points."""
    _load_entry_points()
    return sorted(_registry)


def get_backend(name: str, **options: Any) -> Backend:
    """Build the backend registered as ``name``; an unknown name lists the available ones."""
    _load_entry_points()
    try:
        factory = _registry[name]
    except KeyError:
        raise UnknownBackend(name, list(_registry)) from None
    _check(name, factory, options)
    return factory(**options)


NO_BACKEND_HELP = (
    "No language-model backend is configured. Choose one of:\n"
    "  - an OpenAI-compatible API: set OPENAI_API_KEY (and OPENAI_BASE_URL for vLLM, Ollama or a llama.cpp "
    "server), or pass llm='openai' with api_key=/base_url=;\n"
    "  - a backend by name: set CHATHARUHI_BACKEND or pass llm=<name> (available: {names});\n"
    "  - on the command line: --backend NAME [--model M] [--base-url URL];\n"
    "  - offline, the embedded model ({file}): {install}."
)


# Local models run in a worker process that holds the weights: every bot that resolves the same model with the
# same settings shares one backend (and so one worker), or the README's one-ChatHaruhi-per-user would load a
# pulled 7B model once per user.
SHARED_LOCAL_BACKENDS = ("embedded", "llama_cpp")
_shared: dict[tuple, Backend] = {}
_announced: set[tuple] = set()  # default choices already told to the user, once per process
_shared_lock = threading.Lock()


def _local(name: str, options: dict[str, Any], notice: Callable[[], str] | None = None) -> Backend:
    """The process's backend for this local model and settings, built on first use; a default choice is
    announced once."""
    key = (name, home_dir(), tuple(sorted(options.items())))  # a model name means a file in this home
    try:
        hash(key)
    except TypeError:  # settings that cannot be compared (a callable, say): this caller gets its own
        return get_backend(name, **options)
    with _shared_lock:
        if notice is not None and key not in _announced:
            logger.warning(notice())
            _announced.add(key)
        backend = _shared.get(key)
        if backend is None or backend.closed:
            backend = _shared[key] = get_backend(name, **options)
        return backend


def _named(name: str, options: dict[str, Any]) -> Backend:
    return _local(name, options) if name in SHARED_LOCAL_BACKENDS else get_backend(name, **options)


def resolve_backend(llm: Backend | str | None = None, **options: Any) -> Backend:
    """Pick the backend: explicit argument, then environment, then the embedded model, else ``BackendUnavailable``."""
    if isinstance(llm, Backend):
        if options:  # they would be dropped: a built backend takes its settings in its constructor
            raise UnknownOption(next(iter(options)), "resolve_backend()", (),
                                hint=f"llm= is an already built {type(llm).__name__}: pass backend settings to "
                                     "its constructor, or name the backend (llm='openai') instead")
        return llm
    if isinstance(llm, str):
        return _named(llm, options)
    env_name = os.environ.get(ENV_BACKEND)
    if env_name:
        return _named(env_name, options)
    if _names_local_model(options.get("model")):
        return _local("llama_cpp", options)
    if os.environ.get(ENV_OPENAI_API_KEY) or openai_base_url_from_env():
        return get_backend("openai", **options)
    from ..models.embedded import embedded_available, llama_cpp_installed
    from ..models.selection import default_pulled, embedded_notice, pulled_notice

    pulled = default_pulled() if llama_cpp_installed() else None
    if pulled is not None:
        return _local("llama_cpp", {**options, "model": pulled.name}, lambda: pulled_notice(pulled))
    if embedded_available():
        return _local("embedded", options, embedded_notice)
    raise BackendUnavailable(NO_BACKEND_HELP.format(names=", ".join(available_backends()), file=EMBEDDED_FILE,
                                                    install=EMBEDDED_INSTALL))
