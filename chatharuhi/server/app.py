"""An OpenAI-compatible HTTP server where the *model* is the character: ``chatharuhi serve``.

``GET /v1/models`` lists the characters; ``POST /v1/chat/completions`` with ``model=<name or alias>``
runs the whole pipeline (retrieval over the last user message, packing under the upstream model's
budget, post-processing) and forwards to the configured backend, streamed (SSE) or not. Any OpenAI
client works unchanged. How the incoming ``messages`` are read:

- the conversation is read by ``chatharuhi.chat.conversation.read_conversation`` (the LangChain model uses
  the same function): the last message is the query; earlier user/assistant messages are the history
  (consecutive user messages are joined, a leading assistant greeting is kept); ``system``/``developer``
  messages are left out, the character's own system prompt is used;
- the user's in-story name: the ``X-Chatharuhi-User-Role`` header (UTF-8, or percent-encoded), else
  ``user_role`` (an extra body field), else the last user message's ``name`` field or ``name:「…」``
  wrapper, else the session's, else the character's default. OpenAI's ``user`` field is the end-user
  id (any string up to 256 characters) and is never used as a name;
- ``n`` replies are ``n`` pipeline runs; ``finish_reason`` is the upstream's (``length`` for a cut
  reply); ``usage`` is the upstream's own figures summed over the choices when it reports them, else
  our exact count of what was sent (the ``X-Chatharuhi-Usage`` header says ``upstream`` or ``estimate``);
- a client's ``stop`` strings are added to the character's own; tools, structured output, audio, web
  search and logprobs are refused with a 400 (see ``server.api.ChatRequest``); every response has an
  ``x-request-id``;
- ``session_id`` (an extra body field; ``extra_body={"session_id": ...}`` in the SDK) uses the server's
  session store: its saved turns are the history (earlier ``messages`` are ignored) and the completed
  turn is saved. ``POST /v1/sessions`` creates one, ``GET /v1/sessions/{id}`` exports it.

A reply is recorded only when it completes: a client that disconnects mid-stream stops the generation
(the upstream request is closed at the next chunk) and nothing is saved.

The server keeps no state of its own beyond caches: with a ``postgresql://`` store (sessions, scene
vectors and the owner-token secret), any number of replicas serve one conversation turn by turn
(server/workers.py). Upstream streams run on the event loop through the backend's async twin
(``upstream="async"``); ``upstream="thread"`` is the older path, a blocking stream on a worker thread.

This module builds the app (``create_app``) from its parts: the shared state (state.py), the small routes
(routes.py) and chat completions (completions.py); ``serve`` (run.py) runs it with uvicorn.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from ..backends.base import Backend
from ..errors import BackendUnavailable, InputError
from .asgi import _BearerAuth, _RequestId
from .errors import INSTALL_HINT, install_error_handlers
from .pool import BotPool

UPSTREAM_MODES = ("async", "thread")  # how upstream chunks reach the event loop (see the module docstring)


def create_app(
    llm: Backend | str | None = None,
    *,
    characters_dir: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    api_key: str | None = None,
    sessions: Any = None,
    sessions_path: str | os.PathLike | None = None,
    llm_options: dict[str, Any] | None = None,
    session_secret: str | None = None,
    upstream: str = "async",
    **bot_options: Any,
):
    """The FastAPI app. ``bot_options`` configure each character's ``Chatbot`` (embedder=, top_k=, ...);
    ``session_secret`` makes the sessions' owner tokens (default: see ``server.guard``; a PostgreSQL store
    keeps one for all replicas). ``sessions_path`` is a SQLite file or a ``postgresql://`` URL (opened now:
    a database that is down stops the start with a clear error)."""
    try:
        from fastapi import FastAPI

        from . import completions, routes
    except ImportError as exc:
        raise BackendUnavailable(f"the server needs FastAPI and uvicorn ({exc.name} is missing): {INSTALL_HINT}") \
            from None
    from ..backends.registry import resolve_backend
    from .state import ServerState, open_shared_store

    if upstream not in UPSTREAM_MODES:
        raise InputError(f"unknown upstream mode {upstream!r}: use one of {', '.join(UPSTREAM_MODES)}")
    sessions = sessions if sessions is not None else open_shared_store(sessions_path)
    if getattr(sessions, "vector_cache", None) is not None:  # replicas share one embedding of every scene
        bot_options.setdefault("vector_cache", sessions.vector_cache)
    backend = resolve_backend(llm, **(llm_options or {}))
    pool = BotPool(backend, characters_dir, bot_options)
    app = FastAPI(title="chatharuhi", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = ServerState(pool, sessions=sessions, sessions_path=sessions_path,
                                   session_secret=session_secret, upstream=upstream)
    app.state.pool, app.state.secrets = pool, app.state.server.secrets  # never shown in an error body
    install_error_handlers(app)
    if api_key:  # a plain ASGI wrapper: Starlette's BaseHTTPMiddleware would re-stream every response body
        app.add_middleware(_BearerAuth, api_key=api_key)
    app.add_middleware(_RequestId)  # outermost: errors and 401s carry an id too
    for method, path, handler in [*routes.ROUTES, ("POST", "/v1/chat/completions", completions.chat_completions)]:
        app.add_api_route(path, handler, methods=[method])
    return app
