"""A group as a model: ``POST /v1/chat/completions`` with ``"model": "haruhi+wukong"``.

The messages are read as rounds: a user message (or several in a row) opens one, and each assistant message
after it is a member's reply, named by its ``name`` (the member's model id or an alias) or by a ``名字:「…」``
wrapper. The answer holds one choice per speaker of the new round, in the order they spoke, each message
carrying the speaker's ``name`` (its model id); streamed, the choices come one after another, each with its own
index. ``n`` > 1 is refused (each choice is one speaker), as is ``session_id`` (a group's sessions live in the
Python API, the terminal and the web app). Nothing is kept: the client sends the conversation each time.
"""

# no "from __future__ import annotations": FastAPI reads the handlers' annotations at runtime
import time
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..chat.conversation import Incoming, unwrap
from ..chat.rounds import GROUP_SEPARATOR
from ..errors import ChatHaruhiError, InputError
from ..types import Round, Said
from . import guard
from .api import ChatRequest, check_name, sse
from .errors import APIError, error_body, error_status, public_message
from .state import ServerState
from .streaming import END, USER_ROLE_HEADER, DisconnectAwareStream, header_text, logger


def is_group_model(model: str) -> bool:
    """Whether a model name names a group (``haruhi+wukong``)."""
    return GROUP_SEPARATOR in model


def read_rounds(messages: list[Incoming], group: Any, user_role: str) -> tuple[list[Round], str, str | None]:
    """Messages -> (the rounds so far, the new message, the in-story name it came with, if any)."""
    convo = [(i, m) for i, m in enumerate(messages) if m.role in ("user", "assistant")]
    if not convo or convo[-1][1].role != "user":
        raise InputError("the last message must be the user's: it is what the group answers")
    present = tuple(group.characters)
    rounds: list[Round] = []
    pending: list[tuple[str | None, str]] = []  # the user messages since the last reply
    replies: list[Said] = []
    for i, m in convo:
        wrapped, text = unwrap(m.text)
        who = (m.name or "").strip() or wrapped
        if m.role == "user":
            if replies:  # a reply came since the last user message: the round before is complete
                rounds.append(_round(pending, replies, present, user_role))
                pending, replies = [], []
            pending.append((who, text))
            continue
        if not who:
            raise APIError(400, f"messages[{i}] is an assistant message with no name: in a group, say who spoke "
                           "(name = a member's model id)", param=f"messages.{i}.name")
        try:
            replies.append(Said(group.member_name(who), text))
        except InputError as exc:
            raise APIError(400, f"messages[{i}].name: {exc}", param=f"messages.{i}.name") from None
    names = [n for n, _ in pending if n]
    return rounds, "\n".join(t for _, t in pending), names[-1] if names else None


def _round(pending: list[tuple[str | None, str]], replies: list[Said], present: tuple[str, ...],
           user_role: str) -> Round:
    names = [n for n, _ in pending if n]
    return Round(names[-1] if names else (user_role if pending else ""), "\n".join(t for _, t in pending),
                 tuple(replies), present)


async def group_completions(request: Request, state: ServerState, req: ChatRequest):
    """The group's round for the conversation sent: one choice per speaker, streamed (SSE) or as one answer."""
    if (req.n or 1) > 1:
        raise APIError(400, "n > 1 cannot be used with a group model: each choice is one speaker of the round",
                       param="n")
    if req.session_id is not None:
        raise APIError(400, "session_id cannot be used with a group model: send the conversation, or keep group "
                       "sessions with the Python API (GroupChat) or the web app", param="session_id")
    group = await state.run(state.pool.group, req.model)
    chosen = check_name(header_text(request.headers.get(USER_ROLE_HEADER)), "X-Chatharuhi-User-Role") \
        or req.user_role
    rounds, text, named = read_rounds(req.conversation(), group, chosen or group.user_role)
    speakers = await state.run(group.stream, text, role=chosen or named, history=rounds, **req.options())
    ident, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), group.dialogue.key
    headers = {"X-Chatharuhi-Character": model}
    if not req.stream:
        return await _answer(request, state, speakers, ident, created, model, headers, group)
    return DisconnectAwareStream(_events(state, speakers, ident, created, model, req, group),
                                  media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})


def _usage(group: Any, said: list[tuple[Any, str]]) -> dict[str, int]:
    prompt = sum(s.reply.trace.total_tokens for s, _ in said)
    counter = next(iter(group.bots.values())).counter
    completion = sum(counter.count(text) for _, text in said)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _answer(request: Request, state: ServerState, speakers: Any, ident: str, created: int, model: str,
                  headers: dict, group: Any):
    """Every speaker read to its end, then one JSON body."""
    def run() -> list[tuple[Any, str]]:
        out = []
        for speaking in speakers:
            text = speaking.text()
            guard.check_reply(text)
            out.append((speaking, text))
        return out

    async def work() -> list[tuple[Any, str]]:
        return await state.run(run)

    try:
        present, said = await guard.unless_disconnected(request, work)
    finally:
        await state.run(speakers.close)
    if not present:
        return Response(status_code=499)
    choices = [{"index": i, "logprobs": None, "finish_reason": s.reply.finish_reason,
                "message": {"role": "assistant", "name": s.speaker, "content": text, "refusal": None,
                            "annotations": []}} for i, (s, text) in enumerate(said)]
    return JSONResponse({"id": ident, "object": "chat.completion", "created": created, "model": model,
                         "choices": choices, "usage": _usage(group, said), "service_tier": None,
                         "system_fingerprint": None}, headers={**headers, "X-Chatharuhi-Usage": "estimate"})


async def _events(state: ServerState, speakers: Any, ident: str, created: int, model: str, req: ChatRequest,
                  group: Any):
    """The SSE body: each speaker's choice in turn (its role and name first, then its chunks, then its finish)."""
    include_usage = bool(req.stream_options and req.stream_options.get("include_usage"))

    def event(index: int, delta: dict, finish: str | None = None) -> bytes:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                 "system_fingerprint": None,
                 "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            chunk["usage"] = None
        return sse(chunk)

    said: list[tuple[Any, str]] = []
    try:
        index = 0
        while (speaking := await state.run(next, speakers, END)) is not END:
            chunks = iter(speaking)
            yield event(index, {"role": "assistant", "name": speaking.speaker, "content": ""})
            while (chunk := await state.run(next, chunks, END)) is not END:
                yield event(index, {"content": chunk})
            guard.check_reply(speaking.reply.text())
            said.append((speaking, speaking.reply.text()))
            yield event(index, {}, speaking.reply.finish_reason)
            index += 1
        tail = b""
        if include_usage:
            tail = sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                        "system_fingerprint": None, "choices": [], "usage": _usage(group, said)})
        yield tail + b"data: [DONE]\n\n"
    except ChatHaruhiError as exc:  # headers are sent: the error goes in the stream, as OpenAI does
        logger.warning("group stream failed: %s", exc)
        yield sse(error_body(public_message(exc, state.secrets), *error_status(exc)[1:]))
    finally:
        await state.run(speakers.close)
