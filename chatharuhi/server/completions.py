"""``POST /v1/chat/completions``: read the call, run the pipeline for each choice, answer as JSON or as SSE.

A reply is recorded only when it completes: a client that disconnects stops the generation (the upstream request
is closed at the next chunk) and nothing is saved. How the incoming messages are read: see app.py's docstring.
"""

# no "from __future__ import annotations": FastAPI reads the handlers' annotations at runtime
import time
import uuid
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import anyio
import anyio.lowlevel
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..chat.conversation import read_conversation
from ..chat.history import History
from ..errors import ChatHaruhiError, InputError
from ..retrieval.index import query_window
from ..types import Turn
from . import guard
from .api import MAX_REPLY_CHARS, ChatRequest, check_name, parse_request, sse
from .errors import APIError, error_body, error_status, public_message
from .groups import group_completions, is_group_model
from .routes import state_of
from .state import ServerState
from .streaming import END, USER_ROLE_HEADER, DisconnectAwareStream, header_text, logger


@dataclass
class Call:
    """One completion request read: the character's bot, the conversation, who speaks, and the session if any."""

    req: ChatRequest
    bot: Any
    model_id: str
    turns: list[Turn]
    text: str
    role: str | None
    session: Any = None
    timing: dict[str, float] = field(default_factory=dict)
    memory: Any = None  # a session's memory


async def read_call(state: ServerState, request: Request, req: ChatRequest) -> Call:
    """The bot, the history (the session's when one is named), the message and the user's in-story name."""
    pool = state.pool
    bot = pool.cached(req.model) or await state.run(pool.get, req.model)
    chosen = check_name(header_text(request.headers.get(USER_ROLE_HEADER)), "X-Chatharuhi-User-Role") \
        or req.user_role  # the caller's choice names every unnamed user message
    turns, text, named = read_conversation(req.conversation(), chosen or bot.user_role)
    call = Call(req, bot, pool.canonical(req.model), turns, text, chosen or named or None)
    if req.session_id is not None:
        if (req.n or 1) > 1:
            raise APIError(400, "n > 1 cannot be used with session_id: a session records one reply per turn",
                           param="n")
        state.check_owner(req.session_id, req.session_token or request.headers.get(guard.SESSION_TOKEN_HEADER))
        call.session = await state.run(state.store().get, req.session_id)
        if call.session.character != bot.character.name:
            raise InputError(f"session {call.session.id} belongs to {call.session.character!r}, "
                             f"not {bot.character.name!r}")
        call.turns = await state.run(state.store().turns, call.session.id)
        call.role = call.role or call.session.user_role
        if bot.memory is not None:  # its pinned facts, summary and vectors (chat/memory.py)
            call.memory = await state.run(bot.session_memory, state.store(), call.session.id)
    return call


class Upstream:
    """The choices' chunk streams: on the event loop (``upstream="async"``) or on worker threads ("thread")."""

    def __init__(self, state: ServerState, call: Call):
        self.state, self.call = state, call
        self.opened: list[Any] = []  # chunk iterators whose upstream request may still be open

    async def start(self, index: int) -> tuple[Any, Any, Any]:
        """One choice: the reply, its chunk iterator and its first chunk (before any header is sent)."""
        c = self.call
        reply = await self.state.run(c.bot.stream, c.text, c.role, history=c.turns, memory=c.memory,
                                     **c.req.options())
        chunks = reply.__aiter__() if self.state.upstream == "async" else iter(reply)
        self.opened.append(chunks)
        return reply, chunks, await self.next(chunks)

    async def next(self, chunks: Any) -> Any:
        """The next chunk, or ``END``."""
        if self.state.upstream == "async":
            # a checkpoint per chunk: chunks already buffered would otherwise come without one, and a long reply
            # would hold the event loop (other streams wait, a client's disconnect goes unseen)
            await anyio.lowlevel.checkpoint()
            return await anext(chunks, END)
        return await self.state.run(next, chunks, END)

    async def close(self) -> None:
        """Close every stream opened (shielded: it runs while a request is being cancelled too)."""
        with anyio.CancelScope(shield=True):
            for chunks in self.opened:
                if self.state.upstream == "async":
                    await chunks.aclose()
                else:
                    await self.state.run(chunks.close)


def record(state: ServerState, call: Call, reply: Any) -> None:
    """Check a finished reply and, in a session, store the turn (retrying a busy database)."""
    guard.check_reply(reply.text())  # an empty reply is an upstream failure, never a stored turn
    if call.session is not None:
        turn = Turn(reply.plan.user_role, call.text, reply.text())
        trace = reply.trace.as_dict()
        guard.commit_with_retry(lambda: History(store=state.store(), session=call.session).commit(turn, trace))
        if call.memory is not None:
            call.memory.keep_vector(query_window(call.text))


async def commit(state: ServerState, call: Call, reply: Any) -> None:
    """``record`` on a thread when it writes to the store; inline when it only checks the reply."""
    if call.session is None:
        record(state, call, reply)
    else:
        await state.run(record, state, call, reply)


def runaway_reply() -> APIError:
    """The error for an upstream reply that passed ``MAX_REPLY_CHARS`` without ending (it ignores max_tokens)."""
    return APIError(502, f"the upstream's reply passed {MAX_REPLY_CHARS:,} characters without ending (it ignores "
                         "max_tokens); nothing was kept", type="server_error", code="upstream_reply_too_long")


def usage(call: Call, replies: list[Any]) -> tuple[dict[str, int], str]:
    """The upstream's figures summed over the choices when every call reported them, else ours."""
    if all(r.usage for r in replies):
        return {k: sum(r.usage[k] for r in replies) for k in ("prompt_tokens", "completion_tokens",
                                                               "total_tokens")}, "upstream"
    prompt = replies[0].trace.total_tokens * len(replies) if replies else 0
    completion = sum(call.bot.counter.count(r.text()) for r in replies)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}, "estimate"


async def chat_completions(request: Request):
    """Run the character's pipeline for each of the ``n`` choices; stream them (SSE) or answer once."""
    received = perf_counter()
    state = state_of(request)
    req: ChatRequest = await parse_request(request, ChatRequest)
    req.refuse_what_we_cannot_honour()
    if is_group_model(req.model):
        return await group_completions(request, state, req)
    call = await read_call(state, request, req)
    upstream = Upstream(state, call)
    try:  # embedding, retrieval and the first chunk, cancelled if the client leaves meanwhile
        present, first = await guard.unless_disconnected(request, lambda: upstream.start(0))
    except BaseException:
        await upstream.close()
        raise
    if not present:
        await upstream.close()
        return Response(status_code=499)  # nobody reads it: the client is gone, nothing was saved
    trace = first[0].trace
    if first[0].first_chunk_ms is not None:  # the upstream's own time to its first chunk
        call.timing["upstream"] = first[0].first_chunk_ms
    call.timing.update({k: round(v, 3) for k, v in trace.timings_ms.items()})
    call.timing["ttfb"] = (perf_counter() - received) * 1e3
    headers = {"Server-Timing": ", ".join(f"{k};dur={v:.3f}" for k, v in call.timing.items()),
               "X-Chatharuhi-Character": call.bot.character.name}
    if call.session is not None:
        headers["X-Chatharuhi-Session"] = call.session.id
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if not req.stream:
        return await _answer(request, state, call, upstream, first, headers, ident, created)
    return DisconnectAwareStream(_events(state, call, upstream, first, ident, created), media_type="text/event-stream",
                                  headers={**headers, "Cache-Control": "no-cache"})


async def _answer(request: Request, state: ServerState, call: Call, upstream: Upstream, first: tuple, headers: dict,
                  ident: str, created: int):
    """The non-streamed answer: every choice read to its end, then one JSON body."""
    async def finish() -> list:
        out = []
        for index in range(call.req.n or 1):
            reply, chunks, chunk = first if index == 0 else await upstream.start(index)
            parts = [] if chunk is END else [chunk]
            size = sum(map(len, parts))
            while (chunk := await upstream.next(chunks)) is not END:  # cancellable between chunks
                parts.append(chunk)
                size += len(chunk)
                if size > MAX_REPLY_CHARS:  # an upstream that ignores max_tokens: held to a bound
                    raise runaway_reply()
            await commit(state, call, reply)
            out.append((reply, {"index": index, "logprobs": None, "finish_reason": reply.finish_reason,
                                "message": {"role": "assistant", "content": "".join(parts), "refusal": None,
                                            "annotations": []}}))
        return out

    try:
        present, out = await guard.unless_disconnected(request, finish)
    finally:
        await upstream.close()
    if not present:  # an abandoned request commits nothing, and its upstream request is closed
        return Response(status_code=499)
    totals, source = await state.run(usage, call, [r for r, _ in out])
    return JSONResponse({"id": ident, "object": "chat.completion", "created": created, "model": call.model_id,
                         "choices": [c for _, c in out], "usage": totals, "service_tier": None,
                         "system_fingerprint": None}, headers={**headers, "X-Chatharuhi-Usage": source})


async def _events(state: ServerState, call: Call, upstream: Upstream, first: tuple, ident: str, created: int):
    """The SSE body. Events that are ready together go out in one write (a choice's role with its first chunk, the
    last finish with the usage and [DONE]): the same events in the same order, fewer system calls."""
    include_usage = bool(call.req.stream_options and call.req.stream_options.get("include_usage"))

    def event(index: int, delta: dict, finish: str | None = None) -> bytes:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": call.model_id,
                 "system_fingerprint": None,
                 "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            chunk["usage"] = None  # as OpenAI: null on every chunk, the totals on the last
        return sse(chunk)

    done, replies, pending = False, [], b""
    try:
        for index in range(call.req.n or 1):  # the choices one after another, each with its own index
            reply, chunks, chunk = first if index == 0 else await upstream.start(index)
            pending += event(index, {"role": "assistant", "content": ""})
            size = 0
            while chunk is not END:
                size += len(chunk)
                if size > MAX_REPLY_CHARS:  # the same bound as a non-streamed reply: stop, keep nothing
                    raise runaway_reply()
                yield pending + event(index, {"content": chunk})
                pending = b""
                chunk = await upstream.next(chunks)
            await commit(state, call, reply)  # the reply is complete: only now is anything saved
            replies.append(reply)
            pending += event(index, {}, reply.finish_reason)
        done = True
        if include_usage:
            totals, _ = await state.run(usage, call, replies)
            pending += sse({"id": ident, "object": "chat.completion.chunk", "created": created,
                            "model": call.model_id, "system_fingerprint": None, "choices": [], "usage": totals})
        yield pending + b"data: [DONE]\n\n"
    except (ChatHaruhiError, APIError) as exc:  # headers are sent: the error goes in the stream, as OpenAI does
        logger.warning("stream failed: %s", exc)
        yield pending + sse(error_body(public_message(exc, state.secrets), *error_status(exc)[1:]))
    finally:
        if not done:
            await upstream.close()  # nothing more is recorded
