"""Running ``chatharuhi serve`` as many processes: the shared store, and ``--workers N`` on one machine.

Replicas share nothing but the store: sessions (each completed turn one transaction) and, with
PostgreSQL, the scene vectors. A ``postgresql://`` store is opened when the app is built, so a database
that is down stops the start with an error naming the URL (never its password). ``--workers N`` runs N
uvicorn processes on one socket; each builds its own app from the options the parent hands down in
``CHATHARUHI_SERVE_OPTIONS`` (JSON), and all of them open the same store.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ..errors import InputError
from .state import open_shared_store

ENV_SERVE_OPTIONS = "CHATHARUHI_SERVE_OPTIONS"  # set by the parent for its worker processes only
ENV_SERVE_LIMITS = "CHATHARUHI_SERVE_LIMITS"  # the slow-client limits, likewise (server.connections.Limits)
MAX_WORKERS = 64


def serve_workers(workers: int, *, host: str, port: int, log_level: str, limits: Any = None,
                  **app_options: Any) -> None:
    """Run ``workers`` server processes on one port, all on the same session store."""
    if not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"--workers must be a whole number from 1 to {MAX_WORKERS}, not {workers!r}")
    try:
        options = json.dumps(app_options)
    except TypeError as exc:
        raise InputError(f"--workers needs options given by name (a backend name, not an object): {exc}") from None
    store = open_shared_store(app_options.get("sessions_path"))
    if store is not None:  # fail now, once, if PostgreSQL is down; and migrate before the workers race to
        store.close()
    import uvicorn

    from .connections import protocol_path

    os.environ[ENV_SERVE_OPTIONS] = options  # inherited by the worker processes uvicorn spawns
    if limits is not None:
        os.environ[ENV_SERVE_LIMITS] = json.dumps(dataclasses.asdict(limits))
    uvicorn.run("chatharuhi.server.workers:app_from_env", factory=True, workers=workers, host=host, port=port,
                log_level=log_level, server_header=False, http=protocol_path())


def app_from_env():
    """The app of one worker process, built from the options its parent handed down."""
    from .app import create_app
    from .connections import Limits, configure

    if os.environ.get(ENV_SERVE_LIMITS):
        configure(Limits(**json.loads(os.environ[ENV_SERVE_LIMITS])))
    raw = os.environ.get(ENV_SERVE_OPTIONS)
    if not raw:
        raise InputError(f"{ENV_SERVE_OPTIONS} is not set: start workers with `chatharuhi serve --workers N`")
    return create_app(**json.loads(raw))
