"""Schema of the SàT database, as an ordered list of migration steps.

The schema version lives in ``PRAGMA user_version``. Step *n* takes a
database at version *n - 1* to version *n*; :class:`sat.memory.storage.Storage`
runs each pending step in its own transaction (the step's statements, then
``PRAGMA user_version = n``, then ``COMMIT``), so an interrupted upgrade
leaves the database at the last completed version, never half-migrated.

Rules for adding a step:

- append a new :class:`Migration` at the end; never edit a released step;
- a step is a tuple of SQL statements (no ``BEGIN``/``COMMIT``: the runner
  owns the transaction) or a callable taking the ``sqlite3.Connection``;
- a step must not depend on Python code that may change later (copy the
  data transformation into the step itself).

Version 1 tables
----------------

``profiles``
    one row per profile: ``id``, unique ``name``, ``created`` (epoch).
``params``
    settings keyed by (``category``, ``name``); ``profile_id`` NULL for a
    general setting, else per profile. Two partial unique indexes make each
    key unique per scope.
``secrets``
    per profile named blobs (encrypted by the caller).
``kv``
    plugins' private key/value store: (``namespace``, ``key``), ``profile_id``
    NULL for global values, ``value`` JSON text.
``history``
    one row per message (see :mod:`sat.memory.storage` for the columns);
    dedup keys are unique ``uid``, unique (profile_id, stanza_id,
    stanza_id_by) when stanza_id is set, unique (profile_id, source,
    origin_id) when origin_id is set.
``history_fts``
    FTS5 index over ``history.body`` (external content, kept in sync by
    triggers, ``unicode61 remove_diacritics 2``).
``disco_cache``
    entity capabilities cache: ``ver_hash`` -> disco#info XML text.

Every per-profile table references ``profiles(id) ON DELETE CASCADE``, so
deleting a profile removes all its data (the FTS rows go too: SQLite fires
the delete trigger for cascaded deletes).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One schema step: applying it brings the database to ``version``."""

    version: int
    description: str
    step: tuple[str, ...] | Callable[[sqlite3.Connection], None]

    def apply(self, conn: sqlite3.Connection) -> None:
        if callable(self.step):
            self.step(conn)
        else:
            for statement in self.step:
                conn.execute(statement)


_V1 = (
    """CREATE TABLE profiles (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL
    )""",
    """CREATE TABLE params (
        id INTEGER PRIMARY KEY,
        profile_id INTEGER REFERENCES profiles(id) ON DELETE CASCADE,
        category TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT
    )""",
    "CREATE UNIQUE INDEX params_general ON params(category, name) WHERE profile_id IS NULL",
    """CREATE UNIQUE INDEX params_individual ON params(profile_id, category, name)
        WHERE profile_id IS NOT NULL""",
    """CREATE TABLE secrets (
        profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (profile_id, name)
    ) WITHOUT ROWID""",
    """CREATE TABLE kv (
        id INTEGER PRIMARY KEY,
        profile_id INTEGER REFERENCES profiles(id) ON DELETE CASCADE,
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX kv_general ON kv(namespace, key) WHERE profile_id IS NULL",
    "CREATE UNIQUE INDEX kv_individual ON kv(profile_id, namespace, key) WHERE profile_id IS NOT NULL",
    """CREATE TABLE history (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
        stanza_id TEXT,
        stanza_id_by TEXT,
        origin_id TEXT,
        timestamp REAL NOT NULL,
        received_timestamp REAL,
        source TEXT NOT NULL,
        source_resource TEXT,
        dest TEXT NOT NULL,
        dest_resource TEXT,
        type TEXT NOT NULL CHECK (type IN ('chat', 'groupchat', 'normal', 'headline')),
        body TEXT,
        subject TEXT,
        thread TEXT,
        extra TEXT,
        outgoing INTEGER NOT NULL DEFAULT 0 CHECK (outgoing IN (0, 1)),
        CHECK (stanza_id IS NULL OR stanza_id_by IS NOT NULL)
    )""",
    """CREATE UNIQUE INDEX history_stanza_id ON history(profile_id, stanza_id, stanza_id_by)
        WHERE stanza_id IS NOT NULL""",
    """CREATE UNIQUE INDEX history_origin_id ON history(profile_id, source, origin_id)
        WHERE origin_id IS NOT NULL""",
    # paging of the whole history, and MAM catch-up (last stanza-id of an archive)
    "CREATE INDEX history_time ON history(profile_id, timestamp)",
    """CREATE INDEX history_archive ON history(profile_id, stanza_id_by, timestamp)
        WHERE stanza_id IS NOT NULL""",
    # paging of one conversation: source or dest is the contact / room
    "CREATE INDEX history_source ON history(profile_id, source, timestamp)",
    "CREATE INDEX history_dest ON history(profile_id, dest, timestamp)",
    """CREATE VIRTUAL TABLE history_fts USING fts5(
        body,
        content='history',
        content_rowid='id',
        tokenize='unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER history_fts_insert AFTER INSERT ON history
        WHEN new.body IS NOT NULL
        BEGIN
            INSERT INTO history_fts(rowid, body) VALUES (new.id, new.body);
        END""",
    """CREATE TRIGGER history_fts_delete AFTER DELETE ON history
        WHEN old.body IS NOT NULL
        BEGIN
            INSERT INTO history_fts(history_fts, rowid, body) VALUES ('delete', old.id, old.body);
        END""",
    """CREATE TRIGGER history_fts_update AFTER UPDATE OF body ON history
        BEGIN
            INSERT INTO history_fts(history_fts, rowid, body)
                SELECT 'delete', old.id, old.body WHERE old.body IS NOT NULL;
            INSERT INTO history_fts(rowid, body)
                SELECT new.id, new.body WHERE new.body IS NOT NULL;
        END""",
    """CREATE TABLE disco_cache (
        ver_hash TEXT PRIMARY KEY,
        xml TEXT NOT NULL,
        updated REAL NOT NULL
    ) WITHOUT ROWID""",
)


#: v2: the storage indexes new history rows itself, one statement per batch
#: (``Storage._index_new_rows``); a per-row trigger cost 35 µs a row (MAM catch-up)
_V2 = ("DROP TRIGGER history_fts_insert",)


#: every schema step, in order; ``MIGRATIONS[i].version == i + 1``
MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema: profiles, params, secrets, kv, history + FTS5, disco cache", _V1),
    Migration(2, "full-text index of new history rows filled per batch, not by a trigger", _V2),
]


def latest_version(migrations: list[Migration] | None = None) -> int:
    """The schema version a fully migrated database has."""
    migrations = MIGRATIONS if migrations is None else migrations
    return migrations[-1].version if migrations else 0
