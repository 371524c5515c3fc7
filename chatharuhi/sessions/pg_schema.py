"""PostgreSQL plumbing shared by the session store and the scene-vector cache: pool, errors, migrations.

The schema carries a version (table ``chatharuhi_schema``). Every process migrates on start inside one
transaction holding an advisory lock: when replicas start together one migrates, the others wait for
its commit and then find nothing to do. A database written by a newer chatharuhi is refused.

    sessions(id, character, user_role, title, created, updated, seq)
    turns(id, session_id, idx, user_role, text, created, deleted, superseded_by)
    replies(id, turn_id, text, trace, created)           -- newest reply of a turn is its current one
    scene_vectors(embedder_id, hash, dim, vector)        -- float32 bytes, searched in process
    settings(name, value)                                -- e.g. the session owner-token secret (v2)
    memory_facts(id, session_id, character, text, created, updated)   -- pinned facts (v3)
    memory_summaries(session_id, character, text, upto, created)      -- rolling summaries (v3)
    memory_vectors(session_id, embedder_id, hash, vector)              -- the messages' vectors (v3)
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from typing import Any, Iterator

from ..config import DEFAULT_PG_CONNECT_TIMEOUT_S, DEFAULT_PG_POOL_MAX
from ..errors import BackendUnavailable, SessionError
from .base import POSTGRES_URL_PREFIXES

SCHEMA_VERSION = 3
INSTALL_HINT = "pip install 'chatharuhi[postgres]'"
MIGRATION_LOCK = 0x6368617468617275  # pg_advisory lock key ("chatharu"): one migrating process at a time
URL_PREFIXES = POSTGRES_URL_PREFIXES

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            character TEXT NOT NULL,
            user_role TEXT NOT NULL,
            title TEXT,
            created DOUBLE PRECISION NOT NULL,
            updated DOUBLE PRECISION NOT NULL,
            seq BIGSERIAL NOT NULL)""",
        "CREATE INDEX sessions_updated ON sessions(updated)",
        """CREATE TABLE turns (
            id BIGSERIAL PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            user_role TEXT NOT NULL,
            text TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            deleted BOOLEAN NOT NULL DEFAULT FALSE,
            superseded_by BIGINT)""",
        # at most one live turn per position: the guard against two writers racing for the same index
        "CREATE UNIQUE INDEX turns_live ON turns(session_id, idx) WHERE NOT deleted AND superseded_by IS NULL",
        """CREATE TABLE replies (
            id BIGSERIAL PRIMARY KEY,
            turn_id BIGINT NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
            text TEXT NOT NULL,
            trace TEXT,
            created DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX replies_turn ON replies(turn_id)",
        """CREATE TABLE scene_vectors (
            embedder_id TEXT NOT NULL,
            hash TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BYTEA NOT NULL,
            PRIMARY KEY (embedder_id, hash))""",
    ],
    2: [
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    3: [
        """CREATE TABLE memory_facts (
            id BIGSERIAL PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            character TEXT NOT NULL,
            text TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            updated DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX memory_facts_session ON memory_facts(session_id)",
        """CREATE TABLE memory_summaries (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            character TEXT NOT NULL,
            text TEXT NOT NULL,
            upto INTEGER NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (session_id, character))""",
        """CREATE TABLE memory_vectors (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            embedder_id TEXT NOT NULL,
            hash TEXT NOT NULL,
            vector BYTEA NOT NULL,
            PRIMARY KEY (session_id, embedder_id, hash))""",
    ],
}

logger = logging.getLogger("chatharuhi.sessions")


def is_postgres_url(target: Any) -> bool:
    """Whether ``target`` names a PostgreSQL database (``postgresql://...``) rather than a SQLite file."""
    return isinstance(target, str) and target.strip().lower().startswith(URL_PREFIXES)


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe to print and log)."""
    url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url, flags=re.I)


def _psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(f"a postgresql:// store needs psycopg 3 ({exc.name} is missing): {INSTALL_HINT}") \
            from None
    return psycopg


def explain(exc: BaseException, url: str, action: str) -> SessionError:
    """A typed error for a database failure, naming the URL (never its password) and what to check."""
    import psycopg
    import psycopg_pool

    where = redact(url)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.replace(url, where)
    if isinstance(exc, (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError)):
        return SessionError(f"cannot {action}: PostgreSQL at {where} is unreachable ({text}); "
                            "check that it is running and the URL is right")
    return SessionError(f"cannot {action} in PostgreSQL at {where}: {text}")


def migrate(conn: Any, url: str) -> int:
    """Bring the schema to ``SCHEMA_VERSION`` (under the migration lock); returns the version found."""
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (MIGRATION_LOCK,)).fetchone()[0]
        if not got:
            logger.info("another process is migrating %s; waiting for it", redact(url))
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS chatharuhi_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM chatharuhi_schema").fetchone()
        found = row[0] if row else 0
        if found > SCHEMA_VERSION:
            raise SessionError(f"PostgreSQL at {redact(url)} holds schema version {found}, written by a newer "
                               f"chatharuhi (this one knows up to {SCHEMA_VERSION}): upgrade chatharuhi")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO chatharuhi_schema VALUES (%s)", (SCHEMA_VERSION,))
        elif found < SCHEMA_VERSION:
            conn.execute("UPDATE chatharuhi_schema SET version = %s", (SCHEMA_VERSION,))
        if found < SCHEMA_VERSION:
            logger.info("migrated %s from schema %d to %d", redact(url), found, SCHEMA_VERSION)
    return found


class Database:
    """A migrated PostgreSQL database behind a connection pool; one per process and URL."""

    def __init__(self, url: str, *, pool_size: int = DEFAULT_PG_POOL_MAX,
                 connect_timeout: float = DEFAULT_PG_CONNECT_TIMEOUT_S):
        psycopg = _psycopg()
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.url, self.where = url.strip(), redact(url.strip())
        seconds = max(1, round(connect_timeout))
        try:  # one direct connection first: a clear error when the server is down, and the migration
            with psycopg.connect(self.url, connect_timeout=seconds) as conn:
                migrate(conn, self.url)
        except SessionError:
            raise
        except psycopg.Error as exc:
            raise explain(exc, self.url, "open the session store") from None
        self.pool = ConnectionPool(self.url, min_size=1, max_size=pool_size, open=False, timeout=connect_timeout,
                                   kwargs={"connect_timeout": seconds, "row_factory": dict_row},
                                   check=ConnectionPool.check_connection,
                                   name=f"chatharuhi {self.where}")
        self.pool.open(wait=False)

    @contextmanager
    def transaction(self, action: str) -> Iterator[Any]:
        """A connection inside one transaction: committed when the block ends, rolled back if it raises."""
        import psycopg
        import psycopg_pool

        try:
            with self.pool.connection() as conn:
                with conn.transaction():
                    yield conn
        except SessionError:
            raise
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise explain(exc, self.url, action) from None

    def close(self) -> None:
        """Close every pooled connection (idempotent)."""
        self.pool.close()
