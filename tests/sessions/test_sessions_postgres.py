"""The PostgreSQL store's own failure modes, on a real server: down at start, lost mid-run and back,
a newer schema, replicas migrating at once, and text PostgreSQL cannot hold."""

from __future__ import annotations

import threading
import time

import pytest

from chatharuhi.errors import InputError, SessionError
from chatharuhi.sessions import SessionStore
from chatharuhi.sessions.pg_schema import MIGRATION_LOCK, SCHEMA_VERSION, redact
from chatharuhi.sessions.postgres import PostgresSessionStore
from chatharuhi.types import Turn

psycopg = pytest.importorskip("psycopg", reason="pip install 'chatharuhi[postgres]'")


def test_sessionstore_opens_postgres_for_a_url(pg_url):
    with SessionStore(pg_url) as s:
        assert type(s) is PostgresSessionStore and isinstance(s, SessionStore)
        assert "s3cret-pw" not in repr(s) and "***" in repr(s)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM chatharuhi_schema").fetchall() == [(SCHEMA_VERSION,)]


def test_redact_hides_the_password_only():
    assert redact("postgresql://bob:pa:ss@db.example:5432/x") == "postgresql://bob:***@db.example:5432/x"
    assert redact("postgresql://db/x?user=bob&password=pw&sslmode=require") == \
        "postgresql://db/x?user=bob&password=***&sslmode=require"
    assert redact("postgresql://db.example/x") == "postgresql://db.example/x"


def test_down_at_start_names_the_url_without_its_password(postgres_server):
    from helpers.pg_server import free_port

    url = postgres_server.url().replace(f":{postgres_server.port}/", f":{free_port()}/")
    t0 = time.perf_counter()
    with pytest.raises(SessionError) as info:
        SessionStore(url, connect_timeout=2)
    message = str(info.value)
    assert "s3cret-pw" not in message and redact(url) in message and "unreachable" in message
    assert time.perf_counter() - t0 < 10


def test_a_newer_schema_is_refused(pg_url):
    SessionStore(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE chatharuhi_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SessionError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade chatharuhi"):
        SessionStore(pg_url)


def test_replicas_migrating_at_once_one_wins_the_others_wait(pg_url):
    opened: list[PostgresSessionStore] = []
    errors: list[BaseException] = []

    def start():
        try:
            opened.append(PostgresSessionStore(pg_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with psycopg.connect(pg_url) as holder:  # a replica caught mid-migration: it holds the lock
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        threads = [threading.Thread(target=start) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        assert opened == [] and errors == []  # all four wait for the lock...
        holder.execute("ROLLBACK")
    for t in threads:
        t.join(30)
    assert errors == [] and len(opened) == 4  # ...then one migrates and the others find nothing to do
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM chatharuhi_schema").fetchall() == [(SCHEMA_VERSION,)]
    s = opened[0].create("haruhi", "阿虚")
    assert opened[3].get(s.id) == s
    for store in opened:
        store.close()


def test_lost_mid_run_fails_cleanly_and_recovers(postgres_server, pg_url):
    store = PostgresSessionStore(pg_url, connect_timeout=2)
    s = store.create("haruhi", "阿虚")
    store.append_turn(s.id, Turn("阿虚", "一", "好"))
    postgres_server.stop("immediate")  # a crash, not a polite shutdown
    try:
        t0 = time.perf_counter()
        with pytest.raises(SessionError, match="unreachable") as info:
            store.append_turn(s.id, Turn("阿虚", "二", "嗯"))
        assert "s3cret-pw" not in str(info.value) and time.perf_counter() - t0 < 10
        with pytest.raises(SessionError):
            store.turns(s.id)
    finally:
        postgres_server.start()
    deadline = time.monotonic() + 30
    while True:  # the pool reconnects on its own; no restart of the store
        try:
            turns = store.turns(s.id)
            break
        except SessionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert turns == [Turn("阿虚", "一", "好")]  # the committed turn survived; the failed one left nothing
    assert store.append_turn(s.id, Turn("阿虚", "二", "嗯")) == 1
    store.close()


def test_text_postgres_cannot_hold_is_refused_not_mangled(pg_url):
    with SessionStore(pg_url) as store:
        s = store.create("haruhi", "阿虚")
        with pytest.raises(InputError, match="NUL"):
            store.append_turn(s.id, Turn("阿虚", "a\x00b", "好"))
        store.append_turn(s.id, Turn("阿虚", "一", "好"), {"note": "a\x00b"})  # JSON escapes it: kept exactly
        assert store.trace(s.id, 0) == {"note": "a\x00b"} and len(store.turns(s.id)) == 1


def test_scene_vectors_in_postgres_a_new_replica_embeds_nothing(pg_url, tmp_path, monkeypatch):
    import numpy as np

    from chatharuhi.character.discovery import find_character
    from chatharuhi.retrieval.embeddings import HashEmbedder
    from chatharuhi.retrieval.index import clear_shared_indexes, index_for

    class Counting(HashEmbedder):
        embedded = 0

        def embed_documents(self, texts):
            Counting.embedded += len(texts)
            return super().embed_documents(texts)

    character = find_character("haruhi")
    clear_shared_indexes()
    with SessionStore(pg_url) as store:
        first = index_for(character, Counting(16), cache=store.vector_cache)
        assert Counting.embedded == len({s.content_hash for s in character.scenes}) > 0
    assert not list((tmp_path / "home").rglob("*.npz"))  # nothing went to this machine's files

    # another replica: another process's memory, another home folder, the same database
    clear_shared_indexes()
    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path / "replica2"))
    Counting.embedded = 0
    with SessionStore(pg_url) as store:
        second = index_for(character, Counting(16), cache=store.vector_cache)
    assert Counting.embedded == 0 and np.array_equal(first.vectors, second.vectors)
    query = Counting(16).embed_query("外星人")
    assert [h.scene.id for h in first.search_vector(query, 3)] == [h.scene.id for h in second.search_vector(query, 3)]
    clear_shared_indexes()


def test_chatharuhi_store_env_picks_the_store(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("CHATHARUHI_STORE", pg_url)
    with SessionStore() as s:
        assert type(s) is PostgresSessionStore
    monkeypatch.setenv("CHATHARUHI_STORE", str(tmp_path / "elsewhere.db"))
    with SessionStore() as s:
        assert s.path == tmp_path / "elsewhere.db"


def test_an_older_schema_is_migrated_in_place_and_keeps_its_data(pg_url):
    with SessionStore(pg_url) as store:
        s = store.create("haruhi", "阿虚")
        store.append_turn(s.id, Turn("阿虚", "一", "好"))
    with psycopg.connect(pg_url) as conn:  # as a chatharuhi of schema 1 left it
        for table in ("settings", "memory_facts", "memory_summaries", "memory_vectors"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE chatharuhi_schema SET version = 1")
    with SessionStore(pg_url) as store:
        assert store.turns(s.id) == [Turn("阿虚", "一", "好")]
        assert store.shared_secret() == store.shared_secret()  # made once, then read
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM chatharuhi_schema").fetchall() == [(SCHEMA_VERSION,)]


def test_every_replica_gets_the_same_owner_token_secret(pg_url):
    a, b = SessionStore(pg_url), SessionStore(pg_url)
    secrets = set()
    threads = [threading.Thread(target=lambda st=st: secrets.add(st.shared_secret())) for st in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(secrets) == 1 and len(secrets.pop()) == 64
    a.close()
    b.close()
