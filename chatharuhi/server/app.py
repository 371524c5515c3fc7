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
  search and logprobs are refused with a 400 (see ``server_api.ChatRequest``); every response has an
  ``x-request-id``;
- ``session_id`` (an extra body field; ``extra_body={"session_id": ...}`` in the SDK) uses the server's
  session store: its saved turns are the history (earlier ``messages`` are ignored) and the completed
  turn is saved. ``POST /v1/sessions`` creates one, ``GET /v1/sessions/{id}`` exports it.

A reply is recorded only when it completes: a client that disconnects mid-stream stops the generation
(the upstream request is closed at the next chunk) and nothing is saved.

The server keeps no state of its own beyond caches: with a ``postgresql://`` store (sessions, scene
vectors and the owner-token secret), any number of replicas serve one conversation turn by turn
(server_workers.py). Upstream streams run on the event loop through the backend's async twin
(``upstream="async"``); ``upstream="thread"`` is the older path, a blocking stream on a worker thread.

This module builds the app (``create_app``); ``serve`` (server_run.py) runs it with uvicorn.
"""


# no "from __future__ import annotations": FastAPI reads the handlers' annotations at runtime
import json
import logging
import os
import time
import uuid
from pathlib import Path
from time import perf_counter
from typing import Any, Iterable

from ..backends.base import Backend
from ..chat.conversation import read_conversation
from ..chat.history import History
from ..errors import BackendUnavailable, ChatHaruhiError, InputError
from ..types import Turn
from . import guard
from .api import MAX_REPLY_CHARS, ChatRequest, SessionRequest, check_name, parse_request, sse
from .asgi import _BearerAuth, _disconnect_aware, _RequestId
from .errors import APIError, error_body, error_status, install_error_handlers, public_message
from .pool import BotPool, _TimedBackend

# ``serve`` and its settings live in server_run; the names stay importable from here, where users import them
from .run import DEFAULT_HOST, DEFAULT_PORT, ENV_API_KEY, INSTALL_HINT, is_loopback, serve  # noqa: F401

USER_ROLE_HEADER = "x-chatharuhi-user-role"
UPSTREAM_MODES = ("async", "thread")  # how upstream chunks reach the event loop (see the module docstring)
WORKER_THREADS = 256  # blocking backend streams run in threads: one per open stream, up to this many

logger = logging.getLogger("chatharuhi.server")


def _header_text(value: str | None) -> str | None:
    """A header value as the client meant it: raw UTF-8 bytes or percent-encoding both work."""
    if not value:
        return None
    from urllib.parse import unquote

    try:
        value = value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        pass
    return unquote(value).strip() or None


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
    """The FastAPI app. ``bot_options`` configure each character's ``ChatHaruhi`` (embedder=, top_k=, ...);
    ``session_secret`` makes the sessions' owner tokens (default: see ``server_guard``; a PostgreSQL store
    keeps one for all replicas). ``sessions_path`` is a SQLite file or a ``postgresql://`` URL (opened now:
    a database that is down stops the start with a clear error)."""
    try:
        import anyio
        import anyio.lowlevel
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, Response, StreamingResponse
    except ImportError as exc:
        raise BackendUnavailable(f"the server needs FastAPI and uvicorn ({exc.name} is missing): {INSTALL_HINT}") \
            from None
    from ..backends.registry import resolve_backend

    if upstream not in UPSTREAM_MODES:
        raise InputError(f"unknown upstream mode {upstream!r}: use one of {', '.join(UPSTREAM_MODES)}")
    from .workers import open_shared_store

    sessions = sessions if sessions is not None else open_shared_store(sessions_path)
    if getattr(sessions, "vector_cache", None) is not None:  # replicas share one embedding of every scene
        bot_options.setdefault("vector_cache", sessions.vector_cache)
    backend = _TimedBackend(resolve_backend(llm, **(llm_options or {})))
    pool = BotPool(backend, characters_dir, bot_options)
    limiter = anyio.CapacityLimiter(WORKER_THREADS)
    state: dict[str, Any] = {"store": sessions}

    def store():
        if state["store"] is None:
            from ..sessions import SessionStore

            state["store"] = SessionStore(sessions_path)
        return state["store"]

    def secret() -> bytes:
        if state.get("secret") is None:
            explicit = session_secret or os.environ.get(guard.ENV_SESSION_SECRET)
            shared = getattr(store(), "shared_secret", None)  # PostgreSQL: one secret for every replica
            state["secret"] = shared() if shared is not None and not explicit else guard.session_secret(explicit)
        return state["secret"]

    def owner(session_id: str, token: str | None) -> None:
        guard.check_owner(secret(), session_id, token)

    def token_of(session_id: str) -> str:
        return guard.owner_token(secret(), session_id)

    app = FastAPI(title="chatharuhi", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pool = pool
    app.state.secrets = _secrets(backend, pool, sessions, sessions_path)  # never shown in an error body
    install_error_handlers(app)

    if api_key:  # a plain ASGI wrapper: Starlette's BaseHTTPMiddleware would re-stream every response body
        app.add_middleware(_BearerAuth, api_key=api_key)
    app.add_middleware(_RequestId)  # outermost: errors and 401s carry an id too

    def run(fn, *args, **kwargs):
        return anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=limiter)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": await run(pool.models)}

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str) -> dict:
        bot = await run(pool.get, model)
        return next(m for m in await run(pool.models) if m["id"] == bot.character.path.name)

    @app.post("/v1/sessions")
    async def create_session(request: Request) -> dict:
        body: SessionRequest = await parse_request(request, SessionRequest)
        bot = await run(pool.get, body.model)
        session = await run(store().create, bot.character.name, body.user_role or bot.user_role, body.title)
        return {**session.as_dict(), "owner_token": token_of(session.id)}  # only the creator learns it

    @app.get("/v1/sessions/{session_id}")
    async def export_session(session_id: str, request: Request) -> JSONResponse:
        owner(session_id, request.headers.get(guard.SESSION_TOKEN_HEADER))
        return JSONResponse(json.loads(await run(store().export, session_id, "json")))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        received = perf_counter()
        req: ChatRequest = await parse_request(request, ChatRequest)
        req.refuse_what_we_cannot_honour()
        bot = pool.cached(req.model) or await run(pool.get, req.model)
        model_id = pool.canonical(req.model)
        chosen = check_name(_header_text(request.headers.get(USER_ROLE_HEADER)), "X-Chatharuhi-User-Role") \
            or req.user_role  # the caller's choice names every unnamed user message
        turns, text, named = read_conversation(req.conversation(), chosen or bot.user_role)
        role = chosen or named or None
        session = None
        if req.session_id is not None:
            if (req.n or 1) > 1:
                raise APIError(400, "n > 1 cannot be used with session_id: a session records one reply per turn",
                               param="n")
            owner(req.session_id, req.session_token or request.headers.get(guard.SESSION_TOKEN_HEADER))
            session = await run(store().get, req.session_id)
            if session.character != bot.character.name:
                raise InputError(f"session {session.id} belongs to {session.character!r}, not {bot.character.name!r}")
            turns = await run(store().turns, session.id)
            role = role or session.user_role
        timing: dict[str, float] = {}
        end, opened = object(), []  # opened: chunk iterators whose upstream request may still be open
        if upstream == "async":  # chunks arrive on the event loop: no thread hop per chunk
            def open_chunks(reply):
                return reply.__aiter__()

            async def next_of(chunks):
                # a checkpoint per chunk: chunks already buffered would otherwise come without one, and a long
                # reply would hold the event loop (other streams wait, a client's disconnect goes unseen)
                await anyio.lowlevel.checkpoint()
                return await anext(chunks, end)

            async def close_of(chunks) -> None:
                await chunks.aclose()
        else:
            def open_chunks(reply):
                return iter(reply)

            async def next_of(chunks):
                return await run(next, chunks, end)

            async def close_of(chunks) -> None:
                await run(chunks.close)

        async def start(index: int):
            """One choice: the reply, its chunk iterator and its first chunk (before any header is sent)."""
            reply = await run(bot.stream, text, role, history=turns, _timing=timing if index == 0 else None,
                              **req.options())
            chunks = open_chunks(reply)
            opened.append(chunks)
            return reply, chunks, await next_of(chunks)

        async def close_upstream() -> None:
            with anyio.CancelScope(shield=True):
                for chunks in opened:
                    await close_of(chunks)

        async def commit(reply) -> None:
            if session is None:
                record(reply)  # only checks the reply: no I/O, no thread
            else:
                await run(record, reply)

        try:  # embedding, retrieval and the first chunk, cancelled if the client leaves meanwhile
            present, first_choice = await guard.unless_disconnected(request, lambda: start(0))
        except BaseException:
            await close_upstream()
            raise
        if not present:
            await close_upstream()
            return Response(status_code=499)  # nobody reads it: the client is gone, nothing was saved
        choices = [first_choice]  # an upstream failure on the first call got a proper status
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        trace = choices[0][0].trace
        timing.update({k: round(v, 3) for k, v in trace.timings_ms.items()})
        timing["ttfb"] = (perf_counter() - received) * 1e3
        headers = {"Server-Timing": ", ".join(f"{k};dur={v:.3f}" for k, v in timing.items()),
                   "X-Chatharuhi-Character": bot.character.name}
        if session is not None:
            headers["X-Chatharuhi-Session"] = session.id

        def record(reply) -> None:
            guard.check_reply(reply.text())  # an empty reply is an upstream failure, never a stored turn
            if session is not None:
                turn = Turn(reply.plan.user_role, text, reply.text())
                guard.commit_with_retry(lambda: History(store=store(), session=session).commit(turn, trace.as_dict()))

        def usage(replies) -> tuple[dict[str, int], str]:
            """The upstream's figures summed over the choices when every call reported them, else ours."""
            if all(r.usage for r in replies):
                totals = {k: sum(r.usage[k] for r in replies)
                          for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
                return totals, "upstream"
            prompt = trace.total_tokens * len(replies)
            completion = sum(bot.counter.count(r.text()) for r in replies)
            return {"prompt_tokens": prompt, "completion_tokens": completion,
                    "total_tokens": prompt + completion}, "estimate"

        n = req.n or 1
        if not req.stream:
            async def finish() -> list:
                out = []
                for index in range(n):
                    reply, chunks, first = choices[0] if index == 0 else await start(index)
                    parts = [] if first is end else [first]
                    size = sum(map(len, parts))
                    while (chunk := await next_of(chunks)) is not end:  # cancellable between chunks
                        parts.append(chunk)
                        size += len(chunk)
                        if size > MAX_REPLY_CHARS:  # an upstream that ignores max_tokens: held to a bound
                            raise APIError(502, f"the upstream's reply passed {MAX_REPLY_CHARS:,} characters "
                                                "without ending (it ignores max_tokens); nothing was kept",
                                           type="server_error", code="upstream_reply_too_long")
                    await commit(reply)
                    out.append((reply, {"index": index, "logprobs": None, "finish_reason": reply.finish_reason,
                                        "message": {"role": "assistant", "content": "".join(parts), "refusal": None,
                                                    "annotations": []}}))
                return out

            try:
                present, out = await guard.unless_disconnected(request, finish)
            finally:
                await close_upstream()
            if not present:  # an abandoned request commits nothing, and its upstream request is closed
                return Response(status_code=499)
            totals, source = await run(usage, [r for r, _ in out])
            return JSONResponse({"id": ident, "object": "chat.completion", "created": created, "model": model_id,
                                 "choices": [c for _, c in out], "usage": totals, "service_tier": None,
                                 "system_fingerprint": None},
                                headers={**headers, "X-Chatharuhi-Usage": source})
        include_usage = bool(req.stream_options and req.stream_options.get("include_usage"))

        def event(index: int, delta: dict, finish: str | None = None) -> bytes:
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model_id,
                     "system_fingerprint": None,
                     "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                chunk["usage"] = None  # as OpenAI: null on every chunk, the totals on the last
            return sse(chunk)

        async def body():
            # Events that are ready together go out in one write (a choice's role with its first chunk, the
            # last finish with the usage and [DONE]): the same events in the same order, fewer system calls.
            done, current, replies, pending = False, None, [], b""
            try:
                for index in range(n):  # the choices one after another, each with its own index
                    current = choices[0] if index == 0 else await start(index)
                    reply, chunks, chunk = current
                    pending += event(index, {"role": "assistant", "content": ""})
                    while chunk is not end:
                        yield pending + event(index, {"content": chunk})
                        pending = b""
                        chunk = await next_of(chunks)
                    await commit(reply)  # the reply is complete: only now is anything saved
                    replies.append(reply)
                    pending += event(index, {}, reply.finish_reason)
                done = True
                if include_usage:
                    totals, _ = await run(usage, replies)
                    pending += sse({"id": ident, "object": "chat.completion.chunk", "created": created,
                                    "model": model_id, "system_fingerprint": None, "choices": [], "usage": totals})
                yield pending + b"data: [DONE]\n\n"
            except ChatHaruhiError as exc:  # headers are sent: the error goes in the stream, as OpenAI does
                logger.warning("stream failed: %s", exc)
                yield pending + sse(error_body(public_message(exc, app.state.secrets), *error_status(exc)[1:]))
            finally:
                if not done:
                    await close_upstream()  # nothing more is recorded

        return _DisconnectAwareStream(body(), media_type="text/event-stream",
                                      headers={**headers, "Cache-Control": "no-cache"})

    _DisconnectAwareStream = _disconnect_aware(StreamingResponse, anyio)
    return app


def _secrets(backend: Any, pool: BotPool, sessions: Any, sessions_path: Any) -> list[str]:
    """Strings an error body must not reveal: the upstream address, the session database, character folders."""
    from ..character.discovery import search_dirs
    from ..sessions import default_sessions_path

    found = [str(getattr(getattr(backend, "inner", backend), "base_url", "") or "")]
    db = getattr(sessions, "path", None) or sessions_path or default_sessions_path()
    found += [str(db), str(Path(str(db)).parent)]
    for d in search_dirs(pool.characters_dir):
        found += [str(d), str(d.resolve()) if d.exists() else ""]
    return [s for s in found if s]
