"""The server's small routes: health, the models (characters) and sessions. Chat completions: completions.py."""

# no "from __future__ import annotations": FastAPI reads the handlers' annotations at runtime
import json

from fastapi import Request
from fastapi.responses import JSONResponse

from . import guard
from .api import SessionRequest, parse_request
from .state import ServerState


def state_of(request: Request) -> ServerState:
    """The app's shared parts."""
    return request.app.state.server


async def health() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def list_models(request: Request) -> dict:
    """Every character, as an OpenAI model list."""
    state = state_of(request)
    return {"object": "list", "data": await state.run(state.pool.models)}


async def get_model(model: str, request: Request) -> dict:
    """One character by name or alias, as an OpenAI model."""
    state = state_of(request)
    bot = await state.run(state.pool.get, model)
    return next(m for m in await state.run(state.pool.models) if m["id"] == bot.character.path.name)


async def create_session(request: Request) -> dict:
    """A new stored conversation with a character; the answer carries its owner token (only the creator's)."""
    state = state_of(request)
    body: SessionRequest = await parse_request(request, SessionRequest)
    bot = await state.run(state.pool.get, body.model)
    session = await state.run(state.store().create, bot.character.name, body.user_role or bot.user_role, body.title)
    return {**session.as_dict(), "owner_token": state.owner_token(session.id)}


async def export_session(session_id: str, request: Request) -> JSONResponse:
    """A stored conversation, for its owner."""
    state = state_of(request)
    state.check_owner(session_id, request.headers.get(guard.SESSION_TOKEN_HEADER))
    return JSONResponse(json.loads(await state.run(state.store().export, session_id, "json")))


ROUTES = [
    ("GET", "/health", health),
    ("GET", "/v1/models", list_models),
    ("GET", "/v1/models/{model:path}", get_model),
    ("POST", "/v1/sessions", create_session),
    ("GET", "/v1/sessions/{session_id}", export_session),
]
