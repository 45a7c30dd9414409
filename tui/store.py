"""Chat sessions in SQLite (stdlib sqlite3, WAL): one transaction per completed message.

The schema is versioned with `PRAGMA user_version` and upgraded by the ordered MIGRATIONS; the
file is marked with `PRAGMA application_id` so a foreign SQLite database is refused, never altered.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from mtprun.runner.errors import MtprunError

APPLICATION_ID = 0x6D747072  # "mtpr"
DB_NAME = "sessions.db"
HEADER_BYTES = 16 << 20  # a GGUF's metadata and tensor table sit at its start; 16 MiB covers the largest vocabularies

# MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        header_sha256 TEXT NOT NULL,
        UNIQUE (path, size, header_sha256)
    );
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        model_id INTEGER REFERENCES models(id),
        settings TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        token_ids TEXT NOT NULL DEFAULT '[]',
        origins TEXT NOT NULL DEFAULT '',
        stats TEXT,
        settings TEXT,
        model_id INTEGER REFERENCES models(id),
        started REAL,
        finished REAL,
        stopped INTEGER NOT NULL DEFAULT 0,
        UNIQUE (session_id, seq)
    );
    CREATE INDEX sessions_updated ON sessions(updated);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(MtprunError):
    """The session database cannot be used; the message says why and what was left untouched."""


@dataclass(frozen=True)
class ModelFile:
    """Identifies a model file: a session made with one opens writable only with the same file."""

    path: str
    size: int
    header_sha256: str

    @classmethod
    def of(cls, path: str | os.PathLike) -> "ModelFile":
        p = Path(path).resolve()
        h = hashlib.sha256()
        with open(p, "rb") as f:
            h.update(f.read(HEADER_BYTES))
        return cls(str(p), p.stat().st_size, h.hexdigest())

    def same_file(self, other: "ModelFile | None") -> bool:
        return other is not None and (self.size, self.header_sha256) == (other.size, other.header_sha256)


@dataclass
class Message:
    role: str  # system / user / assistant
    content: str
    token_ids: list[int] = field(default_factory=list)
    origins: str = ""  # per token: "d" accepted draft, "t" the target's own token
    stats: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    started: float | None = None
    finished: float | None = None
    stopped: bool = False
    id: int | None = None


@dataclass
class SessionInfo:
    id: int
    title: str
    created: float
    updated: float
    n_messages: int
    model: ModelFile | None
    settings: dict[str, Any]


def default_data_dir() -> Path:
    env = os.environ.get("MTPRUN_DATA_DIR")
    return Path(env) if env else platformdirs.user_data_path("mtprun", appauthor=False)


class Store:
    def __init__(self, path: str | os.PathLike) -> None:
        """Open (creating if needed) the database at `path`; ":memory:" keeps nothing."""
        self.path = str(path)
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the data directory {Path(self.path).parent} ({e.strerror}).") from None
        try:
            # autocommit mode: transactions are explicit (see _tx)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the session database {self.path} ({e}).") from None
        try:
            self._open()
        except sqlite3.Error as e:
            self._db.close()
            raise StoreError(f"the session database {self.path} is unreadable or corrupt ({e}); it was left as it is.") from None
        except StoreError:
            self._db.close()
            raise

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike | None) -> "Store":
        return cls(Path(data_dir or default_data_dir()) / DB_NAME)

    def _open(self) -> None:
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        n_tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id != APPLICATION_ID and (app_id != 0 or n_tables):
            raise StoreError(f"{self.path} is not an mtprun session database; it was left as it is.")
        if version > SCHEMA_VERSION:
            raise StoreError(f"the session database {self.path} was written by a newer mtprun (schema {version}, "
                             f"this one reads up to {SCHEMA_VERSION}); it was left as it is.")
        if self.path != ":memory:" and db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise StoreError(f"the session database {self.path} cannot use write-ahead logging.")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across process crashes, one fsync per checkpoint
        if version < SCHEMA_VERSION:
            with self._tx():
                if version == 0:
                    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                for script in MIGRATIONS[version:]:
                    for stmt in filter(str.strip, script.split(";")):
                        db.execute(stmt)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise StoreError(f"the session database {self.path} is damaged (quick_check failed); it was left as it is.")

    def close(self) -> None:
        self._db.close()

    def _tx(self):
        return _Transaction(self._db)

    # -- sessions
    def _model_id(self, model: ModelFile | None) -> int | None:
        if model is None:
            return None
        self._db.execute("INSERT OR IGNORE INTO models(path, size, header_sha256) VALUES (?, ?, ?)",
                         (model.path, model.size, model.header_sha256))
        return self._db.execute("SELECT id FROM models WHERE path=? AND size=? AND header_sha256=?",
                                (model.path, model.size, model.header_sha256)).fetchone()[0]

    def create_session(self, title: str, model: ModelFile | None, settings: dict[str, Any]) -> int:
        now = time.time()
        with self._tx():
            cur = self._db.execute("INSERT INTO sessions(title, created, updated, model_id, settings) VALUES (?, ?, ?, ?, ?)",
                                   (title, now, now, self._model_id(model), json.dumps(settings)))
        return int(cur.lastrowid)

    def add_message(self, session_id: int, msg: Message, model: ModelFile | None) -> int:
        """Append one completed message (and bump the session) in one transaction."""
        with self._tx():
            seq = self._db.execute("SELECT coalesce(max(seq), -1) + 1 FROM messages WHERE session_id=?",
                                   (session_id,)).fetchone()[0]
            cur = self._db.execute(
                "INSERT INTO messages(session_id, seq, role, content, token_ids, origins, stats, settings, model_id,"
                " started, finished, stopped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, seq, msg.role, msg.content, json.dumps(msg.token_ids), msg.origins,
                 None if msg.stats is None else json.dumps(msg.stats),
                 None if msg.settings is None else json.dumps(msg.settings),
                 self._model_id(model), msg.started, msg.finished, int(msg.stopped)))
            self._db.execute("UPDATE sessions SET updated=? WHERE id=?", (time.time(), session_id))
        msg.id = int(cur.lastrowid)
        return msg.id

    def delete_message(self, message_id: int) -> None:
        with self._tx():
            self._db.execute("DELETE FROM messages WHERE id=?", (message_id,))

    def update_session(self, session_id: int, *, title: str | None = None, settings: dict[str, Any] | None = None) -> None:
        self.session(session_id)  # unknown id -> StoreError
        with self._tx():
            if title is not None:
                self._db.execute("UPDATE sessions SET title=? WHERE id=?", (title, session_id))
            if settings is not None:
                self._db.execute("UPDATE sessions SET settings=? WHERE id=?", (json.dumps(settings), session_id))

    def delete_session(self, session_id: int) -> None:
        self.session(session_id)
        with self._tx():
            self._db.execute("DELETE FROM sessions WHERE id=?", (session_id,))

    _SESSION_SQL = (
        "SELECT s.id, s.title, s.created, s.updated, s.settings, m.path, m.size, m.header_sha256,"
        " (SELECT count(*) FROM messages WHERE session_id=s.id) FROM sessions s LEFT JOIN models m ON m.id=s.model_id")

    @staticmethod
    def _info(row: tuple) -> SessionInfo:
        model = ModelFile(row[5], row[6], row[7]) if row[5] is not None else None
        return SessionInfo(row[0], row[1], row[2], row[3], row[8], model, json.loads(row[4]))

    def sessions(self, search: str = "") -> list[SessionInfo]:
        """Newest first; `search` matches titles and message text."""
        sql, params = self._SESSION_SQL, ()
        if search:
            like = f"%{search.replace(chr(92), chr(92) * 2).replace('%', chr(92) + '%').replace('_', chr(92) + '_')}%"
            sql += (" WHERE s.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages WHERE session_id=s.id"
                    " AND content LIKE ? ESCAPE '\\')")
            params = (like, like)
        return [self._info(r) for r in self._db.execute(sql + " ORDER BY s.updated DESC, s.id DESC", params)]

    def session(self, session_id: int) -> SessionInfo:
        row = self._db.execute(self._SESSION_SQL + " WHERE s.id=?", (session_id,)).fetchone()
        if row is None:
            raise StoreError(f"there is no session {session_id} (`mtprun sessions list` lists them).")
        return self._info(row)

    def last_session(self) -> SessionInfo | None:
        found = self.sessions()
        return found[0] if found else None

    def messages(self, session_id: int) -> list[Message]:
        rows = self._db.execute(
            "SELECT id, role, content, token_ids, origins, stats, settings, started, finished, stopped"
            " FROM messages WHERE session_id=? ORDER BY seq", (session_id,))
        return [Message(r[1], r[2], json.loads(r[3]), r[4], _loads(r[5]), _loads(r[6]), r[7], r[8], bool(r[9]), r[0])
                for r in rows]


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"cannot write the session database ({e}).") from None

    def __exit__(self, exc_type: type | None, exc: BaseException | None, _tb: Any) -> bool:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return False
            except sqlite3.Error as e:
                exc = e
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"cannot write the session database ({exc}).") from None
        return False

