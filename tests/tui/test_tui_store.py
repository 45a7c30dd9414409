"""The session database: schema, migrations, and bad input (each one clear message; nothing altered)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from tui_helpers import MODEL, make_app, ready

from mtprun.tui.cli import open_store
from mtprun.tui.store import APPLICATION_ID, SCHEMA_VERSION, Message, ModelFile, Store, StoreError


def test_schema_wal_and_reopen(tmp_path):
    path = tmp_path / "sessions.db"
    store = Store(path)
    model = ModelFile.of(MODEL)
    sid = store.create_session("t", model, {"temp": 0})
    store.add_message(sid, Message("user", "hi", token_ids=[1, 2]), model)
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    db.close()
    again = Store(path)
    assert again.session(sid).model == model and again.messages(sid)[0].token_ids == [1, 2]
    assert [s.title for s in again.sessions("hi")] == ["t"] and again.sessions("nothing like it") == []
    again.close()


def _bad_db(path, kind: str) -> None:
    if kind == "corrupt":
        path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)
    elif kind == "garbage":
        path.write_bytes(b"this is not a database at all\n" * 100)
    else:
        db = sqlite3.connect(path)
        if kind == "foreign":
            db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        else:  # written by a newer mtprun
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
            db.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY)")
        db.commit()
        db.close()


@pytest.mark.parametrize("kind, says", [("corrupt", "corrupt"), ("garbage", "corrupt"),
                                        ("foreign", "not an mtprun session database"), ("newer", "newer mtprun")])
def test_bad_database_is_refused_and_left_alone(tmp_path, kind, says):
    path = tmp_path / "sessions.db"
    _bad_db(path, kind)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=says):
        Store(path)
    assert path.read_bytes() == before
    # the chat still starts, on an in-memory store, saying why
    store, note = open_store(str(tmp_path))
    assert store.path == ":memory:" and says in note
    assert path.read_bytes() == before


def test_unwritable_data_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the data directory should be")
    with pytest.raises(StoreError, match="cannot create the data directory"):
        Store.in_dir(blocker / "mtprun")
    store, note = open_store(str(blocker / "mtprun"))
    assert store.path == ":memory:" and "not be saved" in note


def test_unknown_session(store):
    with pytest.raises(StoreError, match="there is no session 42"):
        store.session(42)
    with pytest.raises(StoreError, match="there is no session 42"):
        store.delete_session(42)


def test_ui_starts_on_a_corrupt_database_and_leaves_it_alone(tmp_path, model, settings):
    path = tmp_path / "sessions.db"
    _bad_db(path, "garbage")
    before = path.read_bytes()
    store, note = open_store(str(tmp_path))

    async def scenario():
        async with make_app(store, model, settings, notes=[note], resume=7).run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot)
            notice = str(screen.query_one("#notice").render())
            assert "not be saved" in notice and "no session 7" in notice
            assert screen.conv.writable

    asyncio.run(scenario())
    assert path.read_bytes() == before


def test_a_write_failure_keeps_the_conversation(tmp_path, model, settings):
    """A database that fails mid-session: a warning, and the conversation goes on in memory."""
    from mtprun.tui.engine import Conversation, Engine

    store = Store(tmp_path / "sessions.db")
    warnings = []
    conv = Conversation(store, Engine(model), settings, on_warning=warnings.append)
    conv.add_user("hello")
    store.close()  # every later write fails
    conv.add_user("still here")
    assert [m.content for m in conv.messages] == ["hello", "still here"]
    assert warnings and "not saved" in warnings[0]
