"""Sessions: the store contract run against both stores, SQLite and a real PostgreSQL (append-only turns,
swipes, edits, export, concurrent writers), resuming a ChatHaruhi from it, regenerate/undo/edit, a
``kill -9`` mid-reply, and read-only or locked database files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from chatharuhi import ChatHaruhi
from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.errors import InputError, SessionError
from chatharuhi.sessions import SESSION_FORMAT, Session, SessionStore
from chatharuhi.types import Turn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """Where a store lives: a SQLite file, or a fresh database on the test PostgreSQL."""
    if request.param == "sqlite":
        return tmp_path / "s.sqlite3"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(target):
    s = SessionStore(target)
    yield s
    s.close()


def raw_texts(store, table: str) -> set[str]:
    """Every ``text`` ever written to a table, read behind the store's back."""
    if isinstance(target_of(store), Path):
        with sqlite3.connect(store.path) as db:
            return {r[0] for r in db.execute(f"SELECT text FROM {table}")}
    import psycopg

    with psycopg.connect(store.db.url) as db:
        return {r[0] for r in db.execute(f"SELECT text FROM {table}")}


def target_of(store):
    return getattr(store, "path", None) or store.url


def bot(store, replies=("春日:「好啊！」",), **kw):
    return ChatHaruhi(role=kw.pop("role", "haruhi"), llm=ScriptedBackend(list(replies)), embedder="hash",
                      sessions=store, **kw)


# -- the store -----------------------------------------------------------------------------------------
def test_default_path_is_in_the_home_folder_and_wal(tmp_path):
    with SessionStore() as s:
        assert s.path == tmp_path / "home" / "sessions.sqlite3"
        s.create("haruhi", "阿虚")
    db = sqlite3.connect(tmp_path / "home" / "sessions.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_create_get_list_rename_delete(store):
    a = store.create("haruhi", "阿虚")
    b = store.create("sherlock", "Watson", title="The case")
    assert isinstance(a, Session) and store.get(a.id) == a
    assert [s.id for s in store.list()] == [b.id, a.id]  # newest first
    store.append_turn(a.id, Turn("阿虚", "一", "好"))
    assert [s.id for s in store.list()] == [a.id, b.id]  # updated by the turn
    assert [s.id for s in store.list(character="sherlock")] == [b.id]
    assert len(store.list(limit=1)) == 1
    store.rename(a.id, "找外星人")
    assert store.get(a.id).title == "找外星人"
    store.delete(a.id)
    with pytest.raises(SessionError, match="unknown session"):
        store.get(a.id)
    with pytest.raises(SessionError, match="unknown session"):
        store.append_turn(a.id, Turn("阿虚", "二", "嗯"))
    assert [s.id for s in store.list()] == [b.id]


def test_turns_alternatives_edit_delete_are_append_only(store):
    s = store.create("haruhi", "阿虚")
    assert store.append_turn(s.id, Turn("阿虚", "一", "好"), {"total_tokens": 3}) == 0
    assert store.append_turn(s.id, Turn("阿虚", "二", "嗯")) == 1
    store.add_alternative(s.id, 1, "嗯嗯")
    store.add_alternative(s.id, -1, "哼")
    assert store.turns(s.id)[-1] == Turn("阿虚", "二", "哼")
    assert store.alternatives(s.id, 1) == ["嗯", "嗯嗯", "哼"]
    store.edit_last_turn(s.id, "二（改）")
    assert store.turns(s.id) == [Turn("阿虚", "一", "好"), Turn("阿虚", "二（改）", "哼")]
    store.delete_last_turn(s.id)
    assert store.turns(s.id) == [Turn("阿虚", "一", "好")]
    assert store.append_turn(s.id, Turn("阿虚", "三", "哈")) == 1
    assert store.trace(s.id, 0) == {"total_tokens": 3}
    # nothing was lost: every text and reply ever written is still stored
    assert raw_texts(store, "turns") == {"一", "二", "二（改）", "三"}
    assert raw_texts(store, "replies") >= {"好", "嗯", "嗯嗯", "哼", "哈"}
    with pytest.raises(SessionError, match="no turn 5"):
        store.add_alternative(s.id, 5, "x")


def test_export_json_and_jsonl(store):
    s = store.create("haruhi", "阿虚", title="t")
    store.append_turn(s.id, Turn("阿虚", "一", "好"), {"included_scenes": ["a.txt"]})
    store.add_alternative(s.id, 0, "好的")
    data = json.loads(store.export(s.id, "json"))
    assert data["format"] == SESSION_FORMAT and data["session"]["id"] == s.id
    (turn,) = data["turns"]
    assert (turn["text"], turn["reply"], turn["alternatives"]) == ("一", "好的", ["好", "好的"])
    lines = [json.loads(x) for x in store.export(s.id, "jsonl").splitlines()]
    assert lines[0]["session"]["title"] == "t" and lines[1]["reply"] == "好的"
    with pytest.raises(SessionError, match="'json' or 'jsonl'"):
        store.export(s.id, "csv")


def test_two_stores_on_one_database_from_many_threads(target):
    a, b = SessionStore(target), SessionStore(target)
    s = a.create("haruhi", "阿虚")

    def write(store, tag):
        for i in range(20):
            store.append_turn(s.id, Turn("阿虚", f"{tag}{i}", "好"))

    threads = [threading.Thread(target=write, args=(st, tag)) for st, tag in [(a, "a"), (b, "b"), (a, "c")]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(b.turns(s.id)) == 60
    a.close()
    b.close()


# -- ChatHaruhi with a session -----------------------------------------------------------------------------
def test_turns_are_written_on_completion_and_resumed(store):
    b = bot(store, ["春日:「外星人？今天就去找！」"])
    assert b.session is None  # a session is created by the first completed turn, not before
    b.chat("我们去找外星人吧")
    sid = b.session.id
    assert store.get(sid).character == "haruhi" and store.get(sid).user_role == "阿虚"
    assert store.turns(sid) == [Turn("阿虚", "我们去找外星人吧", "外星人？今天就去找！")]
    assert store.trace(sid, 0)["budget"] == b.last_trace.budget
    backend = ScriptedBackend(["春日:「嗯」"])
    resumed = ChatHaruhi(llm=backend, embedder="hash", session=sid, sessions=store)  # role from the session
    assert resumed.character.name == "haruhi" and resumed.history == b.history
    resumed.chat("然后呢？")
    assert [m.content for m in backend.calls[-1][1:3]] == ["阿虚:「我们去找外星人吧」", "春日:「外星人？今天就去找！」"]
    assert len(store.turns(sid)) == 2
    by_object = ChatHaruhi(llm=ScriptedBackend(), embedder="hash", session=store.get(sid), sessions=store)
    assert len(by_object.history) == 2


def test_session_id_alone_uses_the_home_store():
    with SessionStore() as s:
        sid = s.create("haruhi", "古泉").id
        s.append_turn(sid, Turn("古泉", "你好", "哼"))
    b = ChatHaruhi(llm=ScriptedBackend(), embedder="hash", session=sid)
    assert b.user_role == "古泉" and b.history == [Turn("古泉", "你好", "哼")]


def test_session_of_another_character_or_unknown_id(store):
    sid = store.create("haruhi", "阿虚").id
    with pytest.raises(SessionError, match="not 'sherlock'"):
        ChatHaruhi(role="sherlock", llm=ScriptedBackend(), embedder="hash", session=sid, sessions=store)
    with pytest.raises(SessionError, match="unknown session"):
        ChatHaruhi(llm=ScriptedBackend(), embedder="hash", session="nope", sessions=store)


def test_cancelled_or_failed_stream_stores_nothing(store):
    b = bot(store, ["春日:「第一句」", "春日:「这一句会断掉」"])
    b.chat("一")
    chunks = iter(b.stream("二"))
    next(chunks)
    chunks.close()  # the consumer stops reading: nothing is committed
    b.backend.fail_after = 1
    with pytest.raises(ConnectionError):
        b.chat("三")
    assert [t.text for t in store.turns(b.session.id)] == ["一"]


def test_regenerate_keeps_the_old_reply(store):
    b = bot(store, ["春日:「第一」", "春日:「第二」", "春日:「第三」"])
    b.chat("说点什么")
    new = b.regenerate()
    assert new.text() == "第二"
    assert b.history == [Turn("阿虚", "说点什么", "第二")]
    assert b.backend.calls[-1][-1].content == "阿虚:「说点什么」"  # the same question, no duplicated turn
    assert b.alternatives() == ["第一", "第二"] == store.alternatives(b.session.id, 0)
    assert store.turns(b.session.id) == b.history


def test_regenerate_undo_edit_without_a_store():
    b = ChatHaruhi(role="haruhi", llm=ScriptedBackend(["春日:「甲」", "春日:「乙」"]), embedder="hash")
    with pytest.raises(InputError, match="nothing to regenerate"):
        b.regenerate()
    b.chat("一")
    assert b.regenerate().text() == "乙" and b.alternatives(0) == ["甲", "乙"]
    b.edit_last("一（改）")
    assert b.history == [Turn("阿虚", "一（改）", "乙")]
    assert b.undo() == Turn("阿虚", "一（改）", "乙") and b.history == []
    with pytest.raises(InputError, match="nothing to undo"):
        b.undo()


def test_undo_and_edit_last_are_stored(store):
    b = bot(store, ["春日:「好」"])
    b.chat("一")
    b.chat("二")
    b.edit_last("二（改）")
    assert store.turns(b.session.id)[-1].text == "二（改）"
    b.undo()
    assert [t.text for t in store.turns(b.session.id)] == ["一"] == [t.text for t in b.history]
    b.chat("三")
    resumed = ChatHaruhi(llm=ScriptedBackend(), embedder="hash", session=b.session.id, sessions=store)
    assert [t.text for t in resumed.history] == ["一", "三"]


def test_reset_starts_a_new_session_and_keeps_the_old(store):
    b = bot(store)
    b.chat("一")
    first = b.session.id
    b.reset()
    b.chat("二")
    assert b.session.id != first and [t.text for t in store.turns(first)] == ["一"]


# -- crashes and bad files ---------------------------------------------------------------------------------
CRASH_SCRIPT = textwrap.dedent("""
    import sys, time
    from chatharuhi import ChatHaruhi
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.sessions import SessionStore

    class Slow(ScriptedBackend):
        def stream(self, messages, **options):
            if len(self.calls) < 2:
                yield from super().stream(messages, **options)
                return
            self.calls.append(messages)
            yield "春日:「这句话"
            while True:  # the rest never comes: the parent kills us here
                time.sleep(0.05)

    store = SessionStore(sys.argv[1])
    bot = ChatHaruhi(role="haruhi", llm=Slow(["春日:「第一句」", "春日:「第二句」"]), embedder="hash", sessions=store)
    bot.chat("一")
    bot.chat("二")
    print(bot.session.id, flush=True)
    for chunk in bot.stream("三"):
        print("CHUNK", chunk, flush=True)
""")


def test_kill_9_mid_reply_loses_no_earlier_turn_and_stores_no_half_reply(tmp_path):
    db = tmp_path / "s.db"
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        sid = proc.stdout.readline().strip()
        assert proc.stdout.readline().startswith("CHUNK"), proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    with SessionStore(db) as store:
        assert store.turns(sid) == [Turn("阿虚", "一", "第一句"), Turn("阿虚", "二", "第二句")]
        resumed = ChatHaruhi(llm=ScriptedBackend(["春日:「第三句」"]), embedder="hash", session=sid, sessions=store)
        resumed.chat("三")
        assert [t.reply for t in store.turns(sid)] == ["第一句", "第二句", "第三句"]


def _make_read_only(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o444)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root without chattr +i: cannot make a file read-only")


def test_read_only_database_gives_a_clear_error_and_loses_nothing(tmp_path):
    db = tmp_path / "s.db"
    with SessionStore(db) as s:
        sid = s.create("haruhi", "阿虚").id
        s.append_turn(sid, Turn("阿虚", "一", "好"))
    _make_read_only(db)
    try:
        with SessionStore(db) as s:
            assert s.turns(sid) == [Turn("阿虚", "一", "好")]  # reading still works
            with pytest.raises(SessionError, match="read-only"):
                s.append_turn(sid, Turn("阿虚", "二", "嗯"))
            b = ChatHaruhi(llm=ScriptedBackend(["春日:「嗯」"]), embedder="hash", session=sid, sessions=s)
            with pytest.raises(SessionError, match="read-only"):
                b.chat("二")
            assert len(b.history) == 1  # memory and file agree
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(db)], capture_output=True)
        db.chmod(0o644)
    with SessionStore(db) as s:
        assert s.turns(sid) == [Turn("阿虚", "一", "好")]


def test_locked_database_gives_a_clear_error_and_loses_nothing(tmp_path):
    db = tmp_path / "s.db"
    store = SessionStore(db, timeout=0.2)
    sid = store.create("haruhi", "阿虚").id
    store.append_turn(sid, Turn("阿虚", "一", "好"))
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
    try:
        with pytest.raises(SessionError, match="another process is writing"):
            store.append_turn(sid, Turn("阿虚", "二", "嗯"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.append_turn(sid, Turn("阿虚", "二", "嗯"))  # works again once the lock is gone
    assert [t.text for t in store.turns(sid)] == ["一", "二"]
    store.close()


def test_not_a_database_and_closed_store(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SessionError, match=str(bad)):
        SessionStore(bad)
    assert bad.read_bytes().startswith(b"this is not sqlite")  # left alone
    s = SessionStore(tmp_path / "ok.db")
    s.close()
    with pytest.raises(SessionError, match="closed"):
        s.list()


def test_sessionstore_is_the_contract_and_opens_sqlite_for_a_path(tmp_path):
    from chatharuhi.sessions import SQLiteSessionStore

    with SessionStore(tmp_path / "c.db") as s:
        assert type(s) is SQLiteSessionStore and isinstance(s, SessionStore)
        assert s.get(s.create("haruhi", "阿虚").id).character == "haruhi"
    with SQLiteSessionStore(tmp_path / "c.db") as s:  # the implementation opens the same file directly
        assert len(s.list()) == 1


def test_choose_edit_and_delete_any_turn_lose_nothing(store):
    s = store.create("haruhi", "阿虚")
    for i in range(3):
        store.append_turn(s.id, Turn("阿虚", f"问{i}", f"答{i}"), {"n": i})
    store.add_alternative(s.id, 1, "答1b", {"n": "1b"})
    store.add_alternative(s.id, 1, "答1c")
    assert store.alternatives(s.id, 1) == ["答1", "答1b", "答1c"] and store.chosen(s.id, 1) == 2
    assert store.select_alternative(s.id, 1, 0) == "答1"  # swipe back: the first reply is current again
    assert store.alternatives(s.id, 1) == ["答1", "答1b", "答1c"] and store.chosen(s.id, 1) == 0
    assert store.turns(s.id)[1].reply == "答1" and store.trace(s.id, 1) == {"n": 1}
    with pytest.raises(SessionError, match="no reply 3"):
        store.select_alternative(s.id, 1, 3)
    # edit a middle message: its replies (and which one is chosen) come along; later turns stay
    store.edit_turn(s.id, 1, text="问1改")
    assert [t.text for t in store.turns(s.id)] == ["问0", "问1改", "问2"]
    assert store.alternatives(s.id, 1) == ["答1", "答1b", "答1c"] and store.turns(s.id)[1].reply == "答1"
    store.edit_turn(s.id, 0, reply="答0改")  # an edited reply is the newest alternative
    assert store.alternatives(s.id, 0) == ["答0", "答0改"] and store.turns(s.id)[0].reply == "答0改"
    # delete a middle turn: later ones move up, and a new turn still appends at the end
    store.delete_turn(s.id, 1)
    assert [t.text for t in store.turns(s.id)] == ["问0", "问2"]
    assert store.append_turn(s.id, Turn("阿虚", "问3", "答3")) == 2
    assert [t.text for t in store.turns(s.id)] == ["问0", "问2", "问3"]
    with pytest.raises(SessionError, match="empty"):
        store.edit_turn(s.id, 0, text="  ")
    assert {"问1", "问1改", "答0", "答1b"} <= raw_texts(store, "turns") | raw_texts(store, "replies")  # all kept


def test_a_full_disk_is_called_full_not_damaged(tmp_path):
    """Issue 21 §9: SQLITE_FULL said "the file may be damaged"."""
    from chatharuhi.errors import SessionError
    from chatharuhi.sessions import SessionStore

    store = SessionStore(tmp_path / "s.sqlite3")
    kept = store.create("haruhi", "阿虚", title="kept")
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # as if the disk had no room for another page
    with pytest.raises(SessionError, match="is full: free some space there") as caught:
        for n in range(10_000):
            store.create("haruhi", "阿虚", title="x" * 200 + str(n))
    assert "damaged" not in str(caught.value)
    assert store.get(kept.id).title == "kept"  # what was stored before is all there
    store.close()
