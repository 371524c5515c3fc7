"""The server's wire format: the validated request, body limits and OpenAI-style JSON errors.

Every error a client can cause is answered as OpenAI does, ``{"error": {"message", "type", "param",
"code"}}`` with a 4xx status; anything unexpected is a 500 with a generic message (the traceback goes to
the server log, never to the client).
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from pathlib import Path
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

from .conversation import Incoming
from .errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BudgetError,
    CharacterNotFound,
    ChatHaruhiError,
    InputError,
    InvalidCharacter,
    MissingAPIKey,
    SessionError,
    SessionNotFound,
)

MAX_BODY_BYTES = 1_000_000  # a request body larger than this is refused (413) before it is parsed
MAX_MESSAGES = 256  # messages per request; older turns beyond the history budget are dropped anyway
MAX_NAME_CHARS = 40  # the user's in-story name, from every source (header, ``user_role``, a message's ``name``)
MAX_USER_ID_CHARS = 256  # OpenAI's ``user``: an end-user id (a 64-character hash, ``org:42``), never a story name
MAX_CHOICES = 8  # ``n``: replies per request (each is one upstream call)
MAX_MESSAGE_CHARS = 32_000  # one message's text; longer is refused (400), never embedded or counted
MAX_STOP_SEQUENCES = 4  # as OpenAI
MAX_STOP_CHARS = 200  # one stop sequence
MAX_TITLE_CHARS = 200  # a session's title
MAX_JSON_DEPTH = 32  # nesting of a request body; deeper is refused before validation recurses into it
_NAME_FORBIDDEN = set("\n\r「」:：\u2028\u2029")

logger = logging.getLogger("chatharuhi.server")
_TYPE_TAG = re.compile(r"^(str|int|float|bool|list|dict|none|.*\[.*\])$")


class APIError(Exception):
    """An error answered to the client as-is."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_status(exc: Exception) -> tuple[int, str, str | None, str | None]:
    """(HTTP status, error type, param, code) for an exception."""
    if isinstance(exc, APIError):
        return exc.status, exc.type, exc.param, exc.code
    if isinstance(exc, CharacterNotFound):
        return 404, "invalid_request_error", "model", "model_not_found"
    if isinstance(exc, SessionNotFound):
        return 404, "invalid_request_error", "session_id", "session_not_found"
    if isinstance(exc, (InputError, BudgetError)):
        return 400, "invalid_request_error", None, None
    if isinstance(exc, InvalidCharacter):  # a broken folder: the request names a character that cannot load
        return 400, "invalid_request_error", "model", "character_invalid"
    if isinstance(exc, SessionError):
        return 503, "server_error", None, "session_store_unavailable"
    if isinstance(exc, BackendTimeout):
        return 504, "server_error", None, "upstream_timeout"
    if isinstance(exc, (BackendUnavailable, MissingAPIKey)):
        return 503, "server_error", None, "backend_unavailable"
    if isinstance(exc, BackendError):
        return 502, "server_error", None, "upstream_error"
    return 500, "server_error", None, None


_URL = re.compile(r"\bhttps?://[^\s'\"<>)]+")
_ABS_PATH = re.compile(r"(?<![\w./<])(?:[A-Za-z]:)?[/\\](?!v1/)(?:[^\s'\"/\\<>:]+[/\\])+[^\s'\"/\\<>:,;)]*")


def public_message(exc: BaseException, secrets: "list[str] | tuple[str, ...]" = ()) -> str:
    """The error's message as a client may see it: no server paths, database file or upstream address."""
    text = str(exc)
    if isinstance(exc, InvalidCharacter) and exc.path is not None:
        where = Path(str(exc.path)).name + (f" line {exc.line}" if exc.line else "")
        text = f"{where}: {exc.reason}"
    for secret in sorted((s for s in secrets if s and len(s) > 3), key=len, reverse=True):
        text = text.replace(secret, "the upstream" if _URL.match(secret) else "<server path>")
    text = _URL.sub("the upstream", text)
    text = _ABS_PATH.sub("<server path>", text)
    if text.startswith("<server path>: "):
        text = text[len("<server path>: "):]
    return text.replace(" in <server path>", "")


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
    bad = next((c for c in value if c in _NAME_FORBIDDEN or unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise APIError(400, f"Invalid value for '{param}': the in-story name must be one line without ':' or "
                       f"'「」' or control characters (found {bad!r})", param=param)
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
# billing, and a reply in the character's voice is the same answer without them. Listed in the README.
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
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
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
            name = check_name(m.name, f"messages.{i}.name") if m.role == "user" else None
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


def _validation_error(exc: ValidationError | Any) -> APIError:
    first = exc.errors()[0]
    # a union's loc names the member type tried last ("messages.0.content.str"): leave it out
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _TYPE_TAG.match(str(p))]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param)
    message = first.get("msg", "invalid value")
    if first.get("type") == "too_short" and param == "messages":
        message = "messages must not be empty: send at least one user message"
    return APIError(400, f"Invalid value for '{param}': {message}" if param else message, param=param)


async def parse_request(request: Any, model: type[BaseModel] | None) -> Any:
    """Read the body (at most ``MAX_BODY_BYTES``), decode UTF-8 strictly, parse JSON, validate."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise APIError(413, f"request body is {int(length)} bytes; the limit is {MAX_BODY_BYTES}",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise APIError(413, f"request body is over the limit of {MAX_BODY_BYTES} bytes", code="request_too_large")
        chunks.append(chunk)
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


def install_error_handlers(app: Any) -> None:
    """Answer every error in OpenAI's JSON shape; never a traceback."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(status: int, message: str, type: str, param: str | None = None, code: str | None = None):
        return JSONResponse(error_body(message, type, param, code), status_code=status)

    async def api_error(request, exc: APIError):
        return respond(exc.status, exc.message, exc.type, exc.param, exc.code)

    async def library_error(request, exc: ChatHaruhiError):
        status, type, param, code = error_status(exc)
        if status >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, exc)
        return respond(status, public_message(exc, getattr(request.app.state, "secrets", ())), type, param, code)

    async def validation_error(request, exc: RequestValidationError):
        err = _validation_error(exc)
        return respond(err.status, err.message, err.type, err.param, err.code)

    async def http_error(request, exc: HTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message = f"Unknown path {request.method} {request.url.path[:200]!r}" if exc.status_code in (404, 405) \
            else str(exc.detail)
        return respond(exc.status_code, message, kind, code=str(exc.status_code))

    async def unexpected(request, exc: Exception):
        logger.exception("unexpected error in %s %s", request.method, request.url.path)
        return respond(500, "internal server error (the server log has the details)", "server_error")

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(ChatHaruhiError, library_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
