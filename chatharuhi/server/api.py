"""The server's wire format: body limits, the validated requests and the checks every field goes through.

Errors are answered in OpenAI's shape by ``server_errors``.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)

from ..chat.conversation import Incoming
from .errors import APIError, _validation_error

MAX_BODY_BYTES = 1_000_000  # a request body larger than this is refused (413) before it is parsed
MAX_MESSAGES = 256  # messages per request; older turns beyond the history budget are dropped anyway
MAX_NAME_CHARS = 40  # the user's in-story name, from every source (header, ``user_role``, a message's ``name``)
MAX_USER_ID_CHARS = 256  # OpenAI's ``user``: an end-user id (a 64-character hash, ``org:42``), never a story name
MAX_CHOICES = 8  # ``n``: replies per request (each is one upstream call)
MAX_MESSAGE_CHARS = 32_000  # one message's text; longer is refused (400), never embedded or counted
MAX_STOP_SEQUENCES = 4  # as OpenAI
MAX_STOP_CHARS = 200  # one stop sequence
MAX_TITLE_CHARS = 200  # a session's title
MAX_REPLY_TOKENS = 32_768  # ``max_tokens``: more is refused (400), never passed upstream
MAX_REPLY_CHARS = 300_000  # a non-streamed reply longer than this (an upstream that ignores max_tokens) is a 502
MAX_JSON_DEPTH = 32  # nesting of a request body; deeper is refused before validation recurses into it
_NAME_FORBIDDEN = set("\n\r「」:：\u2028\u2029")


def check_name(value: Any, param: str) -> str | None:
    """The one validator for the user's in-story name, whatever the source: one line, at most
    ``MAX_NAME_CHARS`` characters, no ``:`` or ``「」`` (which would fake a dialogue line); blank is ``None``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise APIError(400, f"Invalid value for '{param}': the in-story name must be a string", param=param)
    value = value.strip()
    if len(value) > MAX_NAME_CHARS:
        raise APIError(400, f"Invalid value for '{param}': the in-story name is {len(value)} characters; "
                       f"the limit is {MAX_NAME_CHARS}", param=param)
    bad = next((c for c in value if c in _NAME_FORBIDDEN or unicodedata.category(c) in ("Cc", "Cs", "Cf")), None)
    if bad is not None:  # Cf: direction overrides and zero-width characters make a name look like another
        raise APIError(400, f"Invalid value for '{param}': the in-story name must be one line without ':' or "
                       f"'「」', control characters, direction overrides or invisible characters (found {bad!r})",
                       param=param)
    return value or None


def model_name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a character name (it looks like a path), or ``None``."""
    v = value.strip()
    if not v or v in (".", "..") or any(c in v for c in "/\\\x00") or ".." in v or v.startswith("~"):
        return "must be a character name or alias (see GET /v1/models), not a path"
    return None


def check_body(data: Any) -> None:
    """Refuse a body nested deeper than ``MAX_JSON_DEPTH`` or holding an unpaired surrogate, naming the field."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise APIError(400, f"request body is nested more than {MAX_JSON_DEPTH} levels deep", param=where or None)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise APIError(400, f"Invalid value for '{where}': not valid Unicode (an unpaired surrogate)",
                               param=where or None) from None
        elif isinstance(value, dict):
            for k, v in value.items():
                name = f"{where}.{k}" if where else str(k)
                stack.append((k, name, depth + 1))
                stack.append((v, name, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, f"{where}.{i}", depth + 1) for i, v in enumerate(value))


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as JSON."""
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


class ContentPart(BaseModel):
    """One part of a multi-part message; only text parts are understood."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One incoming message. Tool-call fields are accepted (some clients echo them) and ignored; ``name`` on
    a user message is the user's in-story name for that turn (checked by ``check_name``)."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: Any = None
    tool_call_id: Any = None
    function_call: Any = None
    refusal: Any = None
    audio: Any = None

    def text(self) -> str:
        """The message's text; a non-text part is an error."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise APIError(400, f"message parts of type {part.type!r} are not supported: send text",
                               param="messages")
        return "".join(p.text or "" for p in self.content)


def _refuse(param: str, why: str) -> APIError:
    return APIError(400, f"'{param}' is not supported by a character model: {why}", param=param,
                    code="unsupported_parameter")


# OpenAI parameters accepted and not applied: they tune an upstream's sampling, caching, storage or
# billing, and a reply in the character's voice is the same answer without them. Listed in docs/web-and-server.md.
ACCEPTED_NOT_APPLIED = ("presence_penalty", "frequency_penalty", "seed", "logit_bias", "metadata", "store",
                        "service_tier", "prompt_cache_key", "safety_identifier", "verbosity", "reasoning_effort",
                        "prediction", "parallel_tool_calls", "top_k", "min_p", "repetition_penalty")


def _model_name(value: str) -> str:
    problem = model_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# Request fields checked the same way wherever they appear (chat completions, sessions).
ModelName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_model_name)]
UserRole = Annotated[str | None, BeforeValidator(lambda value: check_name(value, "user_role"))]


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``. Unknown fields are refused, as OpenAI does, so a typo fails loudly;
    OpenAI parameters whose meaning a character cannot honour (tools, structured output, audio, web
    search, logprobs) are refused with a 400 that says so; harmless tuning ones are accepted
    (``ACCEPTED_NOT_APPLIED``)."""

    model_config = ConfigDict(extra="forbid")
    model: ModelName
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_REPLY_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_REPLY_TOKENS)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    user: str | None = Field(None, max_length=MAX_USER_ID_CHARS)  # OpenAI's end-user id: never a story name
    # ours (extra_body): the server-side session and the user's in-story name
    session_id: str | None = Field(None, min_length=1, max_length=100)
    user_role: UserRole = None
    session_token: str | None = Field(None, max_length=200)  # the session's owner token (or the header)
    # accepted, not applied (ACCEPTED_NOT_APPLIED)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    logit_bias: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    verbosity: str | None = None
    reasoning_effort: str | None = None
    prediction: Any = None
    parallel_tool_calls: bool | None = None
    top_k: Any = None
    min_p: Any = None
    repetition_penalty: Any = None
    # honoured only in their "off" form; anything else is refused (see refuse_what_we_cannot_honour)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    web_search_options: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @field_validator("stop")
    @classmethod
    def _short_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_SEQUENCES or any(len(x) > MAX_STOP_CHARS for x in stops):
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences of at most {MAX_STOP_CHARS} characters "
                             "(they add to the character's own)")
        return value

    def refuse_what_we_cannot_honour(self) -> None:
        """A 400 naming the first parameter whose meaning a character model cannot honour."""
        if self.tools or self.functions:
            name = "tools" if self.tools else "functions"
            raise _refuse(name, "a character answers in its own voice and never calls tools; leave it out")
        for name, choice in (("tool_choice", self.tool_choice), ("function_call", self.function_call)):
            if choice not in (None, "none", "auto"):
                raise _refuse(name, "there are no tools to call; leave it out or send 'none'")
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            raise _refuse("response_format", f"a character replies in prose, not {kind}; leave it out or "
                                             "send {\"type\": \"text\"}")
        if self.audio is not None or any(m != "text" for m in self.modalities or ()):
            raise _refuse("audio" if self.audio is not None else "modalities", "replies are text only")
        if self.web_search_options is not None:
            raise _refuse("web_search_options", "a character answers from its own scenes, not the web")
        if self.logprobs or self.top_logprobs:
            raise _refuse("logprobs" if self.logprobs else "top_logprobs",
                          "the reply is post-processed, so token log-probabilities would not match it")
        unknown = sorted(set(self.stream_options or {}) - {"include_usage", "include_obfuscation"})
        if unknown:
            raise APIError(400, f"Unrecognized stream_options field: {unknown[0]}; use include_usage",
                           param=f"stream_options.{unknown[0]}")

    def conversation(self) -> list[Incoming]:
        """Each message as ``Incoming``; unpaired surrogates (invalid UTF-8 in disguise) are refused."""
        out = []
        for i, m in enumerate(self.messages):
            text = m.text()
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise APIError(400, f"messages[{i}].content is not valid Unicode (an unpaired surrogate)",
                               param=f"messages.{i}.content") from None
            if len(text) > MAX_MESSAGE_CHARS:
                raise APIError(400, f"messages[{i}].content is {len(text)} characters; the limit is "
                               f"{MAX_MESSAGE_CHARS} per message: send a shorter message",
                               param=f"messages.{i}.content", code="message_too_long")
            # a user message's name is the user's in-story name; an assistant's, in a group, who spoke
            name = check_name(m.name, f"messages.{i}.name") if m.role in ("user", "assistant") else None
            out.append(Incoming(m.role, text, name))
        return out

    def options(self) -> dict[str, Any]:
        """Sampling options forwarded to the backend (``stop`` adds to the character's own stops)."""
        given = {"temperature": self.temperature, "top_p": self.top_p,
                 "max_tokens": self.max_tokens or self.max_completion_tokens,
                 "stop": [self.stop] if isinstance(self.stop, str) else self.stop}
        return {k: v for k, v in given.items() if v is not None}


class SessionRequest(BaseModel):
    """``POST /v1/sessions``: the character, the user's in-story name and a title (all checked)."""

    model_config = ConfigDict(extra="forbid")
    model: ModelName
    user_role: UserRole = None
    title: str | None = Field(None, max_length=MAX_TITLE_CHARS)


async def parse_request(request: Any, model: type[BaseModel] | None) -> Any:
    """Read the body (at most ``MAX_BODY_BYTES``), decode UTF-8 strictly, parse JSON, validate."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise APIError(413, f"request body is {int(length)} bytes; the limit is {MAX_BODY_BYTES}",
                       code="request_too_large")
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise APIError(413, f"request body is over the limit of {MAX_BODY_BYTES} bytes",
                               code="request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:  # it left, or was closed at its body deadline (server.connections): nobody to tell
        raise APIError(400, "the client went away before its request body was complete",
                       code="client_disconnected") from None
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise APIError(400, f"request body is not valid UTF-8 (bad byte at offset {exc.start})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else ""
        raise APIError(400, f"request body is not valid JSON{where}: {getattr(exc, 'msg', exc)}") from None
    except RecursionError:
        raise APIError(400, f"request body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    if not isinstance(data, dict):
        raise APIError(400, f"request body must be a JSON object, not {type(data).__name__}")
    check_body(data)
    if model is None:
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None
