"""Persistent storage of the daemon: one SQLite database per daemon.

What is stored
--------------
Profiles, settings (general and per profile), per-profile secrets (blobs the
caller already encrypted), plugins' private key/value data (JSON), message
history with a full-text index (FTS5), and the disco/caps cache. The schema
and its versioning are in :mod:`sat.memory.migrations`.

Threading: one dedicated thread, one connection
-----------------------------------------------
No database call runs on the reactor thread. A single dedicated thread
(:class:`_DatabaseThread`) takes jobs from a FIFO queue and runs them on the
one ``sqlite3.Connection`` it opened and owns; each job's result (or error)
comes back to the reactor with ``reactor.callFromThread`` by firing a
Deferred. The public methods are ``async def`` and ``await`` that Deferred,
so they are meant to be called from Twisted coroutines
(``defer.ensureDeferred``) or wrapped with :mod:`sat.tools.async_glue` from
asyncio code (``as_future(defer.ensureDeferred(storage.history_get(...)))``).

Why a dedicated thread rather than a one-thread
``twisted.python.threadpool.ThreadPool``:

- the connection must live on exactly one OS thread for its whole life
  (``sqlite3`` checks it, and we keep that check on); a thread we start
  ourselves guarantees it, while the pool's worker is an implementation
  detail of its "team" that may in principle be replaced;
- jobs run strictly one after the other in submission order, so there is a
  single writer and no ``SQLITE_BUSY`` between our own calls, and
  read-modify-write jobs (:meth:`Storage.history_update_extra`) are atomic
  without locks;
- shutdown is explicit: :meth:`Storage.close` queues the final checkpoint and
  close after every pending job, then the thread ends; it does not depend on
  when the reactor stops its own thread pool.

The thread is a daemon thread: if the process exits without :meth:`close`,
it dies like a killed process would, which is safe (see below).

Group commit: :meth:`Storage.history_add` calls that arrive while the
database thread is busy are written together in one transaction (one commit
for a burst of received messages instead of one each); every caller still
gets its own duplicate/new result, only once the row is committed, and a
failing row makes the batch fall back to one transaction per row. Jobs keep
their submission order. Parameters read with :meth:`Storage.param_get` are
cached in memory (hooks read some for every message); every write through
this class (``param_set``, ``param_delete``, ``profile_delete``) clears the
cache.

Durability: WAL with ``synchronous=NORMAL``
-------------------------------------------
In WAL mode a commit appends the transaction's pages and a commit frame to
the ``-wal`` file with ``write()``; with ``synchronous=NORMAL`` SQLite does not
``fsync`` on each commit, only when checkpointing. Once ``write()`` has
returned the data is in the kernel's page cache, which survives the death of
the process: a ``kill -9`` (or a crash of the daemon) loses no committed
transaction and never corrupts the database; a transaction that was not
committed is simply absent on the next open (the WAL is replayed up to the
last valid commit frame). Only an operating system crash or a power loss can
lose the last transactions committed before it (never corrupting the file),
which is the usual trade for a ~10x faster commit than ``synchronous=FULL``.
``tests/unit/test_storage_crash.py`` checks the kill -9 case.

Full-text indexing
------------------
Live messages (:meth:`Storage.history_add`) are written by one ``INSERT`` in its own
implicit transaction and indexed for full-text search a little later
(:data:`FTS_INDEX_DELAY`), many at a time: indexing in the same transaction doubled the
cost of each commit (FTS5 writes a new index segment per transaction) on the path of
every received message, and each extra statement is one more wait for the GIL on the
database thread while the reactor thread is busy. Nobody sees the lag: every job that
reads the index or changes what it covers (a search, a body edit, a deletion, a batch
insert, closing) first indexes what is pending (:meth:`Storage._fts_sync`), in order on
the same thread. After a crash, the rows left unindexed are found on the next open
(everything above the index's highest rowid).

Errors
------
``sqlite3`` errors never escape: disk full (``SQLITE_FULL``), I/O errors,
corruption, a locked or read-only database... become
:class:`~sat.core.errors.StorageError` with a message naming the file and
the cause (the SQLite error name is in ``error.details["code"]``); the
transaction is rolled back and the storage stays usable. A unique name that
already exists (profile) is :class:`~sat.core.errors.AlreadyExists`; an
unknown profile or message is :class:`~sat.core.errors.NotFound`; a bad
argument is :class:`~sat.core.errors.InvalidArgument` (raised before
anything is queued).

History rows
------------
A message is a dict with the keys of :data:`HISTORY_FIELDS`:
``uid`` (ours, generated if missing), ``stanza_id`` + ``stanza_id_by``
(XEP-0359 id given by the archive, and the archive's JID), ``origin_id``,
``timestamp`` (float, message time; now if missing), ``received_timestamp``,
``source`` / ``dest`` (bare JIDs; a full JID is split into ``*_resource``),
``source_resource``, ``dest_resource``, ``type`` (chat, groupchat, normal,
headline), ``body``, ``subject``, ``thread``, ``extra`` (a JSON-able dict for
everything else) and ``outgoing`` (bool). Rows read back have the same keys.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from sat.core.errors import AlreadyExists, InvalidArgument, NotFound, SatError, StorageError
from sat.memory import migrations as migrations_mod

log = logging.getLogger(__name__)

#: keys of a history message dict
HISTORY_FIELDS = (
    "uid",
    "stanza_id",
    "stanza_id_by",
    "origin_id",
    "timestamp",
    "received_timestamp",
    "source",
    "source_resource",
    "dest",
    "dest_resource",
    "type",
    "body",
    "subject",
    "thread",
    "extra",
    "outgoing",
)
MESSAGE_TYPES = frozenset({"chat", "groupchat", "normal", "headline"})

#: milliseconds a statement waits for a lock held by another connection
BUSY_TIMEOUT_MS = 5000
#: default of Storage.search_window (see history_search)
SEARCH_WINDOW = 10_000
#: most results one history_search call returns
MAX_SEARCH_LIMIT = 1000

#: full-text indexing of the rows inserted after a given id (one statement for a batch: the
#: schema has no insert trigger since v2, see migrations)
_FTS_INDEX_AFTER = (
    "INSERT INTO history_fts(rowid, body) "
    "SELECT id, body FROM history WHERE id > ? AND body IS NOT NULL"
)
#: full-text indexing of every row not indexed yet. FTS5 keeps one ``history_fts_docsize``
#: row per indexed document, keyed by its rowid (our history id): its highest id is where the
#: index stops. Rows are always indexed in id order, so everything above it is to do.
_FTS_CATCH_UP = (
    "INSERT INTO history_fts(rowid, body) SELECT id, body FROM history "
    "WHERE id > (SELECT coalesce(max(id), 0) FROM history_fts_docsize) AND body IS NOT NULL"
)
#: seconds between a live message's storage and its full-text indexing (see
#: "Full-text indexing" in the module doc)
FTS_INDEX_DELAY = 0.5
_LAST_HISTORY_ID = "SELECT coalesce(max(id), 0) FROM history"
_HISTORY_INSERT = (
    f"INSERT INTO history (profile_id, {', '.join(HISTORY_FIELDS)}) "
    f"VALUES (?, {', '.join('?' * len(HISTORY_FIELDS))}) ON CONFLICT DO NOTHING"
)
_TEXT_FIELDS = (
    "uid",
    "stanza_id",
    "stanza_id_by",
    "origin_id",
    "source",
    "source_resource",
    "dest",
    "dest_resource",
    "body",
    "subject",
    "thread",
)

# primary result codes (https://sqlite.org/rescode.html)
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_NOMEM = 7
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26

_CAUSES = {
    _SQLITE_FULL: "disk full (no space left for the database)",
    _SQLITE_IOERR: "I/O error while accessing the database",
    _SQLITE_CORRUPT: "the database file is corrupt",
    _SQLITE_NOTADB: "the file is not a SQLite database (or is corrupt)",
    _SQLITE_BUSY: "the database is locked by another process",
    _SQLITE_LOCKED: "the database is locked",
    _SQLITE_READONLY: "the database is read-only",
    _SQLITE_CANTOPEN: "cannot open the database file",
    _SQLITE_PERM: "permission denied on the database file",
    _SQLITE_NOMEM: "out of memory in SQLite",
}


def _translate_error(exc: sqlite3.Error, path: Path) -> SatError:
    """Turn a sqlite3 exception into the SatError a caller should see."""
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
        return AlreadyExists(f"already exists ({exc})", code=name)
    cause = _CAUSES.get(code & 0xFF if code is not None else None, "database error")
    return StorageError(f"storage {path}: {cause}: {exc} [{name}]", code=name, path=str(path))


# --- FTS query building ---------------------------------------------------------------


def fts_query(text: str) -> str | None:
    """Turn what a user typed into a safe FTS5 query (None if it has no word).

    Each whitespace-separated chunk becomes a quoted phrase, so FTS5 syntax
    (``"``, ``AND``/``OR``/``NOT``, ``NEAR(``, ``(``, column filters like
    ``body:``, ``^``, ``+``...) is just text; chunks are ANDed. A trailing
    ``*`` on a chunk makes it a prefix search. Chunks without any letter or
    digit are dropped (they would match nothing).
    """
    if not isinstance(text, str):
        raise InvalidArgument("the search query must be a string")
    phrases = []
    for chunk in text.split():
        prefix = chunk.endswith("*")
        word = chunk.rstrip("*")
        if not any(ch.isalnum() for ch in word):
            continue
        phrases.append('"' + word.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(phrases) or None


# --- argument checks (run on the caller's thread, before queueing) ------------------


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must be a non-empty string, not {value!r}")
    return value


def _check_optional_profile(profile: Any) -> str | None:
    return None if profile is None else _check_name(profile, "profile")


def _check_limit(value: Any, what: str, allow_none: bool = False) -> int:
    if value is None and allow_none:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{what} must be a non-negative integer, not {value!r}")
    return value


def _check_time(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidArgument(f"{what} must be a number (epoch seconds), not {value!r}")
    return float(value)


def _check_types(msg_type: Any) -> tuple[str, ...] | None:
    if msg_type is None:
        return None
    types = (msg_type,) if isinstance(msg_type, str) else tuple(msg_type)
    unknown = [t for t in types if t not in MESSAGE_TYPES]
    if unknown or not types:
        raise InvalidArgument(f"unknown message type(s) {unknown or types!r}")
    return types


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} is not JSON-serialisable: {exc}") from exc


def _split_jid(jid: Any, what: str) -> tuple[str, str | None]:
    jid = _check_name(jid, what)
    bare, sep, resource = jid.partition("/")
    if not bare:
        raise InvalidArgument(f"{what} {jid!r} is not a valid JID")
    return bare, (resource if sep else None)


def _message_row(message: dict) -> tuple:
    """Validate a message dict; return the values in HISTORY_FIELDS order."""
    if not isinstance(message, dict):
        raise InvalidArgument(f"a message must be a dict, not {type(message).__name__}")
    unknown = set(message) - set(HISTORY_FIELDS)
    if unknown:
        raise InvalidArgument(f"unknown message field(s): {', '.join(sorted(unknown))}")
    msg = dict(message)
    if msg.get("uid") is None:
        msg["uid"] = str(uuid.uuid4())
    for key in ("source", "dest"):
        bare, resource = _split_jid(msg.get(key), key)
        msg[key] = bare
        if resource is not None:
            if msg.get(f"{key}_resource") not in (None, resource):
                raise InvalidArgument(f"{key} resource given twice with different values")
            msg[f"{key}_resource"] = resource
    for key in _TEXT_FIELDS:
        value = msg.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidArgument(f"message field {key!r} must be a string, not {value!r}")
    if msg.get("stanza_id") is not None and not msg.get("stanza_id_by"):
        raise InvalidArgument("stanza_id needs stanza_id_by (the JID of the archive)")
    timestamp = _check_time(msg.get("timestamp"), "timestamp")
    msg["timestamp"] = time.time() if timestamp is None else timestamp
    msg["received_timestamp"] = _check_time(msg.get("received_timestamp"), "received_timestamp")
    msg_type = msg.get("type") or "chat"
    if msg_type not in MESSAGE_TYPES:
        raise InvalidArgument(f"unknown message type {msg_type!r}")
    msg["type"] = msg_type
    extra = msg.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise InvalidArgument("message field 'extra' must be a dict")
    msg["extra"] = _to_json(extra, "extra") if extra else None
    msg["outgoing"] = 1 if msg.get("outgoing") else 0
    return tuple(msg.get(key) for key in HISTORY_FIELDS)


def _message_dict(row: sqlite3.Row | tuple) -> dict:
    message = dict(zip(HISTORY_FIELDS, row[: len(HISTORY_FIELDS)], strict=True))
    message["extra"] = json.loads(message["extra"]) if message["extra"] else {}
    message["outgoing"] = bool(message["outgoing"])
    return message


# --- the database thread --------------------------------------------------------------

_STOP = object()


class _DatabaseThread:
    """One thread running queued jobs in order; results come back as Deferreds."""

    def __init__(self, reactor, name: str):
        self._reactor = reactor
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.ident: int | None = None

    def start(self) -> None:
        self._thread.start()

    def submit(self, func: Callable, *args, **kwargs) -> defer.Deferred:
        d = defer.Deferred()
        self._queue.put((d, func, args, kwargs))
        return d

    def stop(self) -> None:
        """Let the thread end once the jobs already queued are done."""
        self._queue.put(_STOP)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        self.ident = threading.get_ident()
        # On the asyncio reactor, hand results straight to its event loop: Twisted's
        # callFromThread goes through the loop then through a callLater(0) timer, two loop
        # turns on the path of every stored message (measured in MessageSend -> MessageNew)
        loop = getattr(self._reactor, "_asyncioEventloop", None)
        if loop is not None and callable(getattr(loop, "call_soon_threadsafe", None)):

            def call_back(func, arg) -> None:
                try:
                    loop.call_soon_threadsafe(func, arg)
                except RuntimeError:  # the loop is closed: the daemon is gone, nobody waits
                    log.debug("storage result dropped: the event loop is closed")

        else:
            call_back = self._reactor.callFromThread
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            d, func, args, kwargs = item
            try:
                result = func(*args, **kwargs)
            except BaseException:
                failure = Failure()
                failure.cleanFailure()
                call_back(d.errback, failure)
            else:
                call_back(d.callback, result)


# --- the storage ---------------------------------------------------------------------


class Storage:
    """The daemon's SQLite database. Call :meth:`initialise` first, :meth:`close` last."""

    def __init__(
        self,
        path: str | Path,
        *,
        search_window: int | None = SEARCH_WINDOW,
        reactor=None,
        migrations=None,
    ):
        self.path = Path(path)
        #: ranking bound for very common words, see :meth:`history_search` (None: no bound)
        self.search_window = search_window
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._migrations = migrations_mod.MIGRATIONS if migrations is None else migrations
        self._db: _DatabaseThread | None = None
        self._conn: sqlite3.Connection | None = None  # used only on the database thread
        self._profile_ids: dict[str, int] = {}  # idem
        self._state = "new"  # new -> open -> closed
        self._shutdown_trigger = None
        # group commit of history_add (see _history_add_group): the batch still open to
        # new rows, shared by the reactor and the database thread under _add_lock
        self._add_lock = threading.Lock()
        self._add_batch: list | None = None
        # param_get cache, reactor thread only: (category, name, profile) -> stored value
        self._param_cache: dict[tuple[str, str, str | None], str | None] = {}
        self._param_generation = 0
        # callbacks told of every newly stored message, see add_stored_listener
        self._stored_listeners: tuple[Callable[[str, dict], None], ...] = ()
        # full-text indexing left to do (database thread; True after opening: a crash may
        # have left some) and its timer (reactor thread), see "Full-text indexing"
        self._fts_behind = True
        self._fts_timer = None

    # -- plumbing

    def _submit(self, func: Callable, *args, **kwargs) -> defer.Deferred:
        if self._state != "open" or self._db is None:
            raise StorageError(f"storage {self.path} is {self._state}, not open")
        if self._add_batch is not None:
            # later history_add calls go after this job (keeps submission order)
            with self._add_lock:
                self._add_batch = None
        return self._db.submit(self._guarded, func, *args, **kwargs)

    def _guarded(self, func: Callable, *args, **kwargs):
        """On the database thread: run ``func``, translating sqlite3 and OS errors."""
        if self._conn is None and func not in (self._open, self._close_db):
            # queued behind an _open that failed
            raise StorageError(f"storage {self.path} could not be opened")
        try:
            return func(*args, **kwargs)
        except sqlite3.Error as exc:
            raise _translate_error(exc, self.path) from exc
        except OSError as exc:
            raise StorageError(f"storage {self.path}: {exc}", path=str(self.path)) from exc

    def _write(self, func: Callable, *args, **kwargs):
        """On the database thread: run ``func`` inside one write transaction."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = func(*args, **kwargs)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed on %s", self.path)
            # cached ids may come from rows that the rollback removed, and a full-text
            # catch-up done in the transaction is undone
            self._profile_ids.clear()
            self._fts_behind = True
            raise
        return result

    def _fts_sync(self, required: bool = True) -> None:
        """On the database thread: index the live rows not indexed yet (see "Full-text
        indexing"). Called first by every job that reads the index or changes what it
        covers: a body changed or a row deleted while missing from the index would corrupt
        it. Inside a write transaction, it is part of it. ``required`` False (a search,
        closing): a failure (disk full...) is logged, the job goes on."""
        if not self._fts_behind:
            return
        try:
            self._conn.execute(_FTS_CATCH_UP)
        except sqlite3.Error as exc:
            if required:
                raise
            log.warning("storage %s: full-text indexing postponed: %s", self.path, exc)
            return
        self._fts_behind = False

    async def _call(self, func: Callable, *args, **kwargs):
        return await self._submit(func, *args, **kwargs)

    async def _call_write(self, func: Callable, *args, **kwargs):
        return await self._submit(self._write, func, *args, **kwargs)

    def _profile_id(self, profile: str) -> int:
        """On the database thread: the id of ``profile``, NotFound if unknown."""
        try:
            return self._profile_ids[profile]
        except KeyError:
            pass
        row = self._conn.execute("SELECT id FROM profiles WHERE name = ?", (profile,)).fetchone()
        if row is None:
            raise NotFound(f"unknown profile {profile!r}")
        self._profile_ids[profile] = row[0]
        return row[0]

    def _scope(self, profile: str | None) -> tuple[str, tuple]:
        """SQL condition and arguments selecting general (None) or per-profile rows."""
        if profile is None:
            return "profile_id IS NULL", ()
        return "profile_id = ?", (self._profile_id(profile),)

    # -- life cycle

    async def initialise(self) -> None:
        """Create the directory, open the database, set pragmas and migrate the schema.

        Raises StorageError if the file cannot be opened, is not a database, or has
        a schema version newer than this code knows (written by a newer SàT).
        """
        if self._state == "open":
            return
        if self._state == "closed":
            raise StorageError(f"storage {self.path} was closed; create a new Storage")
        self._db = _DatabaseThread(self._reactor, name=f"sat-storage:{self.path.name}")
        self._db.start()
        self._state = "open"
        try:
            await self._submit(self._open)
        except BaseException:
            self._state = "closed"
            self._db.stop()
            raise
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "before", "shutdown", self._close_on_shutdown
        )

    def _open(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(f"storage {path}: cannot create the directory: {exc}") from exc
        if path.is_dir():
            raise StorageError(f"storage {path}: is a directory, not a database file")
        created = not path.exists()
        conn = sqlite3.connect(path, isolation_level=None, cached_statements=256)
        try:
            if created:
                os.chmod(path, 0o600)  # history and secrets are private
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StorageError(f"storage {path}: cannot use WAL journal mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA cache_size = -32000")
            conn.execute("PRAGMA temp_store = MEMORY")
            self._conn = conn
            self._migrate()
        except BaseException:
            self._conn = None
            conn.close()
            raise

    def _migrate(self) -> None:
        conn = self._conn
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        latest = migrations_mod.latest_version(self._migrations)
        if current > latest:
            raise StorageError(
                f"storage {self.path}: the database schema is version {current}, newer than the "
                f"latest this SàT knows ({latest}); it was written by a newer SàT. Upgrade SàT "
                "or use another data directory.",
                code="SCHEMA_TOO_NEW",
                path=str(self.path),
            )
        for migration in self._migrations:
            if migration.version <= current:
                continue
            if migration.version != current + 1:
                raise StorageError(f"migration steps out of order at version {migration.version}")
            log.info("storage %s: migrating to v%d (%s)", self.path, *_describe(migration))
            conn.execute("BEGIN IMMEDIATE")
            try:
                # a step written by another process meanwhile? re-read under the lock
                if conn.execute("PRAGMA user_version").fetchone()[0] != current:
                    conn.execute("ROLLBACK")
                    return self._migrate()
                migration.apply(conn)
                conn.execute(f"PRAGMA user_version = {int(migration.version)}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            current = migration.version

    async def close(self) -> None:
        """Checkpoint the WAL into the database file and close it. Idempotent.

        Jobs queued before are completed first. Called by the daemon on SIGTERM (and
        by a reactor shutdown trigger, in case it was not).
        """
        if self._state != "open":
            self._state = "closed"
            return
        if self._shutdown_trigger is not None:
            try:
                self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            except (ValueError, KeyError):
                pass
            self._shutdown_trigger = None
        if self._fts_timer is not None and self._fts_timer.active():
            self._fts_timer.cancel()  # the closing job indexes what is pending
        self._fts_timer = None
        d = self._submit(self._close_db)
        self._state = "closed"
        self._db.stop()
        await d

    def _close_on_shutdown(self) -> defer.Deferred:
        self._shutdown_trigger = None
        return defer.ensureDeferred(self.close())

    def _close_db(self) -> None:
        if self._conn is None:
            return
        self._fts_sync(required=False)
        conn, self._conn = self._conn, None
        try:
            conn.execute("PRAGMA optimize")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("storage %s: final checkpoint failed: %s", self.path, exc)
        finally:
            conn.close()

    async def fts_sync(self) -> None:
        """Index for full-text search the live messages waiting for it, now (they would be
        within :data:`FTS_INDEX_DELAY`, or by the next job that needs the index)."""
        await self._submit(self._write, self._fts_sync)

    async def optimize(self) -> None:
        """Maintenance for idle times: merge the FTS index segments, refresh planner stats."""

        def merge_segments():
            self._fts_sync()  # first the rows still waiting, or they would stay apart
            self._conn.execute("INSERT INTO history_fts(history_fts) VALUES ('optimize')")

        def run():
            self._write(merge_segments)
            self._conn.execute("PRAGMA optimize")

        await self._call(run)

    @property
    def schema_version(self) -> int:
        """The version this code migrates to."""
        return migrations_mod.latest_version(self._migrations)

    # -- profiles

    async def profile_create(self, name: str) -> int:
        """Create a profile; return its id. AlreadyExists if the name is taken."""
        name = _check_name(name, "profile name")

        def run():
            try:
                cur = self._conn.execute(
                    "INSERT INTO profiles (name, created) VALUES (?, ?)", (name, time.time())
                )
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"profile {name!r} already exists") from exc
            return cur.lastrowid

        return await self._call_write(run)

    async def profile_delete(self, name: str) -> None:
        """Delete a profile and everything it owns (params, secrets, kv, history)."""
        name = _check_name(name, "profile name")

        def run():
            self._fts_sync()  # its history goes too
            cur = self._conn.execute("DELETE FROM profiles WHERE name = ?", (name,))
            self._profile_ids.pop(name, None)
            if cur.rowcount == 0:
                raise NotFound(f"unknown profile {name!r}")

        self._params_changed()
        try:
            await self._call_write(run)
        finally:
            self._params_changed()

    async def profiles_list(self) -> list[str]:
        """Names of all profiles, sorted."""

        def run():
            rows = self._conn.execute("SELECT name FROM profiles ORDER BY name").fetchall()
            return [row[0] for row in rows]

        return await self._call(run)

    async def profile_exists(self, name: str) -> bool:
        name = _check_name(name, "profile name")

        def run():
            try:
                self._profile_id(name)
            except NotFound:
                return False
            return True

        return await self._call(run)

    # -- params (settings)

    def param_cached(self, category: str, name: str, profile: str | None = None):
        """``(True, value)`` if the setting is in memory (value None when unset), else
        ``(False, None)``: a synchronous look for code run on every message."""
        try:
            return True, self._param_cache[(category, name, profile)]
        except KeyError:
            return False, None

    async def param_get(
        self, category: str, name: str, profile: str | None = None, default: str | None = None
    ) -> str | None:
        """Value of a general (profile None) or per-profile setting, ``default`` if unset."""
        category = _check_name(category, "category")
        name = _check_name(name, "name")
        profile = _check_optional_profile(profile)
        key = (category, name, profile)
        try:
            value = self._param_cache[key]
        except KeyError:
            pass
        else:
            # served from memory: hooks read some params for every message
            return default if value is None else value
        generation = self._param_generation

        def run():
            cond, args = self._scope(profile)
            row = self._conn.execute(
                f"SELECT value FROM params WHERE {cond} AND category = ? AND name = ?",
                (*args, category, name),
            ).fetchone()
            return None if row is None else row[0]

        value = await self._call(run)
        if generation == self._param_generation:
            self._param_cache[key] = value
        return default if value is None else value

    def _params_changed(self) -> None:
        """Forget cached params (after a write; results of reads in flight are not cached)."""
        self._param_generation += 1
        self._param_cache.clear()

    async def param_set(
        self, category: str, name: str, value: str | None, profile: str | None = None
    ) -> None:
        category = _check_name(category, "category")
        name = _check_name(name, "name")
        profile = _check_optional_profile(profile)
        if value is not None and not isinstance(value, str):
            raise InvalidArgument(f"a parameter value must be a string, not {value!r}")

        def run():
            if profile is None:
                self._conn.execute(
                    "INSERT INTO params (profile_id, category, name, value) VALUES (NULL, ?, ?, ?) "
                    "ON CONFLICT (category, name) WHERE profile_id IS NULL "
                    "DO UPDATE SET value = excluded.value",
                    (category, name, value),
                )
            else:
                self._conn.execute(
                    "INSERT INTO params (profile_id, category, name, value) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (profile_id, category, name) WHERE profile_id IS NOT NULL "
                    "DO UPDATE SET value = excluded.value",
                    (self._profile_id(profile), category, name, value),
                )

        self._params_changed()
        try:
            await self._call_write(run)
        finally:
            self._params_changed()

    async def params_get_all(self, profile: str | None = None) -> dict[tuple[str, str], str]:
        """All general (profile None) or per-profile settings: {(category, name): value}."""
        profile = _check_optional_profile(profile)

        def run():
            cond, args = self._scope(profile)
            rows = self._conn.execute(
                f"SELECT category, name, value FROM params WHERE {cond}", args
            ).fetchall()
            return {(category, name): value for category, name, value in rows}

        return await self._call(run)

    async def param_delete(self, category: str, name: str, profile: str | None = None) -> bool:
        """Remove a setting; return False if it was not set."""
        category = _check_name(category, "category")
        name = _check_name(name, "name")
        profile = _check_optional_profile(profile)

        def run():
            cond, args = self._scope(profile)
            cur = self._conn.execute(
                f"DELETE FROM params WHERE {cond} AND category = ? AND name = ?",
                (*args, category, name),
            )
            return cur.rowcount > 0

        self._params_changed()
        try:
            return await self._call_write(run)
        finally:
            self._params_changed()

    # -- secrets

    async def secret_get(self, profile: str, name: str) -> bytes | None:
        """The blob stored under ``name`` for ``profile``, None if there is none."""
        profile = _check_name(profile, "profile")
        name = _check_name(name, "secret name")

        def run():
            row = self._conn.execute(
                "SELECT value FROM secrets WHERE profile_id = ? AND name = ?",
                (self._profile_id(profile), name),
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self._call(run)

    async def secret_set(self, profile: str, name: str, blob: bytes) -> None:
        """Store a blob (already encrypted by the caller), replacing any previous one."""
        profile = _check_name(profile, "profile")
        name = _check_name(name, "secret name")
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise InvalidArgument("a secret must be bytes")
        blob = bytes(blob)

        def run():
            self._conn.execute(
                "INSERT INTO secrets (profile_id, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT (profile_id, name) DO UPDATE SET value = excluded.value",
                (self._profile_id(profile), name, blob),
            )

        await self._call_write(run)

    async def secret_delete(self, profile: str, name: str) -> bool:
        """Remove a secret; return False if there was none."""
        profile = _check_name(profile, "profile")
        name = _check_name(name, "secret name")

        def run():
            cur = self._conn.execute(
                "DELETE FROM secrets WHERE profile_id = ? AND name = ?",
                (self._profile_id(profile), name),
            )
            return cur.rowcount > 0

        return await self._call_write(run)

    # -- plugins' private key/value store

    async def kv_get(
        self, namespace: str, key: str, default: Any = None, profile: str | None = None
    ) -> Any:
        """The JSON value under (namespace, key), global or for ``profile``; else ``default``."""
        namespace = _check_name(namespace, "namespace")
        key = _check_name(key, "key")
        profile = _check_optional_profile(profile)

        def run():
            cond, args = self._scope(profile)
            row = self._conn.execute(
                f"SELECT value FROM kv WHERE {cond} AND namespace = ? AND key = ?",
                (*args, namespace, key),
            ).fetchone()
            return None if row is None else row[0]

        text = await self._call(run)
        return default if text is None else json.loads(text)

    async def kv_set(
        self, namespace: str, key: str, value: Any, profile: str | None = None
    ) -> None:
        """Store a JSON-serialisable value (InvalidArgument if it is not)."""
        namespace = _check_name(namespace, "namespace")
        key = _check_name(key, "key")
        profile = _check_optional_profile(profile)
        text = _to_json(value, f"value of {namespace}/{key}")

        def run():
            if profile is None:
                self._conn.execute(
                    "INSERT INTO kv (profile_id, namespace, key, value) VALUES (NULL, ?, ?, ?) "
                    "ON CONFLICT (namespace, key) WHERE profile_id IS NULL "
                    "DO UPDATE SET value = excluded.value",
                    (namespace, key, text),
                )
            else:
                self._conn.execute(
                    "INSERT INTO kv (profile_id, namespace, key, value) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (profile_id, namespace, key) WHERE profile_id IS NOT NULL "
                    "DO UPDATE SET value = excluded.value",
                    (self._profile_id(profile), namespace, key, text),
                )

        await self._call_write(run)

    async def kv_delete(self, namespace: str, key: str, profile: str | None = None) -> bool:
        """Remove a key; return False if it was not there."""
        namespace = _check_name(namespace, "namespace")
        key = _check_name(key, "key")
        profile = _check_optional_profile(profile)

        def run():
            cond, args = self._scope(profile)
            cur = self._conn.execute(
                f"DELETE FROM kv WHERE {cond} AND namespace = ? AND key = ?",
                (*args, namespace, key),
            )
            return cur.rowcount > 0

        return await self._call_write(run)

    async def kv_all(self, namespace: str, profile: str | None = None) -> dict[str, Any]:
        """Every key of ``namespace`` (global or for ``profile``) with its value."""
        namespace = _check_name(namespace, "namespace")
        profile = _check_optional_profile(profile)

        def run():
            cond, args = self._scope(profile)
            return self._conn.execute(
                f"SELECT key, value FROM kv WHERE {cond} AND namespace = ?", (*args, namespace)
            ).fetchall()

        rows = await self._call(run)
        return {key: json.loads(text) for key, text in rows}

    # -- history

    async def history_add(self, profile: str, message: dict) -> bool:
        """Store one message in its own transaction; False if it was a duplicate.

        A duplicate is a message with the same ``uid``, or the same (stanza_id,
        stanza_id_by), or the same (source, origin_id) as a stored one of the profile.
        """
        return await self.history_add_deferred(profile, message)

    def history_add_deferred(self, profile: str, message: dict) -> defer.Deferred:
        """:meth:`history_add` as a plain Deferred (no coroutine: the receive loop's way).
        Errors (bad profile name or message, closed storage) come as a failed Deferred."""
        try:
            profile = _check_name(profile, "profile")
            row = _message_row(message)
            if self._state != "open" or self._db is None:
                raise StorageError(f"storage {self.path} is {self._state}, not open")
        except Exception:
            return defer.fail()
        d = defer.Deferred()
        if self._stored_listeners:
            d.addCallback(self._tell_stored, profile, message)
        with self._add_lock:
            batch = self._add_batch
            if batch is None:
                batch = self._add_batch = []
                first = True
            else:
                first = False
            batch.append((profile, row, d))
        if first:
            done = self._db.submit(self._guarded, self._history_add_group, batch)
            done.addCallbacks(
                self._history_add_fan_out, self._history_add_fail, (batch,), None, (batch,), None
            )
        if self._fts_timer is None:
            self._fts_timer = self._reactor.callLater(FTS_INDEX_DELAY, self._fts_index_pending)
        return d

    def _fts_index_pending(self) -> None:
        """Reactor thread, :data:`FTS_INDEX_DELAY` after a live insert: queue a job that
        indexes the rows waiting for it (:meth:`fts_sync`, without waiting for it)."""
        self._fts_timer = None
        if self._state != "open" or self._db is None:
            return
        self._submit(self._write, self._fts_sync).addErrback(
            lambda f: log.warning("storage %s: full-text indexing failed: %s", self.path, f.value)
        )

    def add_stored_listener(self, callback: Callable[[str, dict], None]) -> None:
        """Call ``callback(profile, message)`` for every message newly stored (not a duplicate)
        by :meth:`history_add`, :meth:`history_add_deferred` or :meth:`history_add_batch`,
        on the reactor thread, once it is committed; ``message`` is the dict given to store
        (read it, do not change it). Meant to be registered only while needed (e.g. while a
        plugin waits for some message): with no listener, storing costs nothing more. The
        callback must be quick and synchronous (start a Deferred for slow work); its
        exceptions are logged."""
        if callback not in self._stored_listeners:
            self._stored_listeners = (*self._stored_listeners, callback)

    def remove_stored_listener(self, callback: Callable[[str, dict], None]) -> None:
        self._stored_listeners = tuple(c for c in self._stored_listeners if c != callback)

    def _tell_stored(self, stored: bool, profile: str, message: dict) -> bool:
        if stored:
            for callback in self._stored_listeners:
                try:
                    callback(profile, message)
                except Exception:
                    log.exception("stored message listener %r failed", callback)
        return stored

    # Group commit: history_add calls arriving while the database thread is busy join
    # the batch that is still open (queued, not yet started), and the whole batch is written
    # in one transaction, each caller getting its own result once the COMMIT is done. The
    # batch closes when the database thread starts it, or when another job is submitted (so
    # jobs still run in submission order). If any row fails, the batch is rolled back and
    # every row is written again in its own transaction, so one bad row loses no other.

    def _history_add_group(self, batch: list) -> list:
        """On the database thread: write a batch; one result (bool or exception) per row."""
        with self._add_lock:
            if self._add_batch is batch:
                self._add_batch = None
        # indexed for full-text search later (see "Full-text indexing"), even if this fails
        self._fts_behind = True
        if len(batch) > 1:
            try:
                return self._write(
                    self._insert_rows,
                    [(self._profile_id(profile), *row) for profile, row, _ in batch],
                    False,
                )
            except Exception:
                pass  # retried row by row below
        # one row (the usual case when messages come one at a time), or the retry of a
        # failed batch: each row in its own transaction
        results = []
        for profile, row, _ in batch:
            try:
                results.append(self._guarded(self._insert_one, self._profile_id(profile), row))
            except Exception as exc:
                results.append(exc)
        return results

    def _insert_rows(self, rows: list[tuple], index: bool = True) -> list[bool]:
        """On the database thread, in a transaction: insert (profile id, *row) tuples and,
        if ``index``, index the new ones for full-text search; True for each new row."""
        execute = self._conn.execute
        if not index:
            return [execute(_HISTORY_INSERT, row).rowcount > 0 for row in rows]
        self._fts_sync()
        last = execute(_LAST_HISTORY_ID).fetchone()[0]
        added = [execute(_HISTORY_INSERT, row).rowcount > 0 for row in rows]
        if any(added):
            execute(_FTS_INDEX_AFTER, (last,))
        return added

    def _insert_one(self, pid: int, row: tuple) -> bool:
        """On the database thread: one row, by one statement in its own implicit transaction
        (the connection is in autocommit mode): a single call into SQLite, a single wait for
        the GIL when it returns. Not indexed yet for full-text search."""
        return self._conn.execute(_HISTORY_INSERT, (pid, *row)).rowcount > 0

    @staticmethod
    def _history_add_fan_out(results: list, batch: list) -> None:
        for (_, _, d), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                d.errback(Failure(result))
            else:
                d.callback(result)

    @staticmethod
    def _history_add_fail(failure: Failure, batch: list) -> None:
        for _, _, d in batch:
            d.errback(failure)

    async def history_add_many(self, profile: str, messages: Iterable[dict]) -> int:
        """Store a batch of messages in one transaction; return how many were new.

        Duplicates (of stored messages or inside the batch) are skipped. Meant for MAM
        catch-up: hundreds of rows cost about one commit.
        """
        profile = _check_name(profile, "profile")
        rows = [_message_row(message) for message in messages]
        if not rows:
            return 0

        def run():
            pid = self._profile_id(profile)
            return sum(self._insert_rows([(pid, *row) for row in rows]))

        return await self._call_write(run)

    async def history_add_batch(
        self, profile: str, messages: Iterable[dict]
    ) -> list[tuple[str | None, bool]]:
        """Like :meth:`history_add_many` (one transaction), telling what became of each message.

        Returns, in order, one ``(uid, new)`` per message: ``(its uid, True)`` if it was
        stored, else ``(uid of the stored message it duplicates, False)`` (same uid,
        (stanza_id, stanza_id_by) or (source, origin_id)), the uid being None when it
        duplicates another message of the same batch. Used by MAM: callers learn which
        archived messages were new and the uids of those already known.
        """
        profile = _check_name(profile, "profile")
        messages = list(messages)
        rows = [_message_row(message) for message in messages]
        if not rows:
            return []
        uid_at = HISTORY_FIELDS.index("uid")
        sid_at = HISTORY_FIELDS.index("stanza_id")
        by_at = HISTORY_FIELDS.index("stanza_id_by")
        oid_at = HISTORY_FIELDS.index("origin_id")
        src_at = HISTORY_FIELDS.index("source")

        def existing(pid: int, row: tuple, batch_uids: set) -> str | None:
            conn = self._conn
            found = None
            if row[sid_at] is not None:
                found = conn.execute(
                    "SELECT uid FROM history WHERE profile_id = ? AND stanza_id = ? "
                    "AND stanza_id_by = ?",
                    (pid, row[sid_at], row[by_at]),
                ).fetchone()
            if found is None and row[oid_at] is not None:
                found = conn.execute(
                    "SELECT uid FROM history WHERE profile_id = ? AND source = ? AND origin_id = ?",
                    (pid, row[src_at], row[oid_at]),
                ).fetchone()
            if found is None:
                found = conn.execute(
                    "SELECT uid FROM history WHERE profile_id = ? AND uid = ?", (pid, row[uid_at])
                ).fetchone()
            if found is None or found[0] in batch_uids:
                return None
            return found[0]

        def run():
            pid = self._profile_id(profile)
            added = self._insert_rows([(pid, *row) for row in rows])
            batch_uids = {row[uid_at] for row, new in zip(rows, added, strict=True) if new}
            return [
                (row[uid_at], True) if new else (existing(pid, row, batch_uids), False)
                for row, new in zip(rows, added, strict=True)
            ]

        outcome = await self._call_write(run)
        if self._stored_listeners:
            for message, (_uid, new) in zip(messages, outcome, strict=True):
                self._tell_stored(new, profile, message)
        return outcome

    def _uid_position(self, pid: int, uid: str) -> tuple[float, int]:
        row = self._conn.execute(
            "SELECT timestamp, id FROM history WHERE profile_id = ? AND uid = ?", (pid, uid)
        ).fetchone()
        if row is None:
            raise NotFound(f"no message with uid {uid!r} in this profile")
        return row[0], row[1]

    async def history_get(
        self,
        profile: str,
        with_jid: str | None = None,
        limit: int | None = 50,
        before: float | None = None,
        after: float | None = None,
        before_uid: str | None = None,
        after_uid: str | None = None,
        msg_type: str | Iterable[str] | None = None,
    ) -> list[dict]:
        """Messages of ``profile``, oldest first.

        ``with_jid`` keeps the conversation with a bare JID (it is the source or the
        dest). ``before``/``after`` are exclusive timestamp bounds; ``before_uid``/
        ``after_uid`` are exclusive bounds at a stored message (NotFound if unknown),
        ordered by (timestamp, insertion order) so equal timestamps page correctly.
        Without an "after" bound the ``limit`` most recent matching messages are
        returned (scroll back with ``before_uid`` = the first uid received); with an
        "after" bound, the ``limit`` oldest after it (catch up with ``after_uid`` = the
        last uid received). ``limit=None`` means no limit. ``msg_type`` is a type or a
        list of types.
        """
        profile = _check_name(profile, "profile")
        if with_jid is not None:
            with_jid = _split_jid(with_jid, "with_jid")[0]
        limit = _check_limit(limit, "limit", allow_none=True)
        before = _check_time(before, "before")
        after = _check_time(after, "after")
        for value, what in ((before_uid, "before_uid"), (after_uid, "after_uid")):
            if value is not None:
                _check_name(value, what)
        types = _check_types(msg_type)
        forward = after is not None or after_uid is not None
        order = "ASC" if forward else "DESC"

        def run():
            pid = self._profile_id(profile)
            conds: list[str] = []
            args: list[Any] = []
            if types:
                conds.append(f"type IN ({', '.join('?' * len(types))})")
                args.extend(types)
            if before is not None:
                conds.append("timestamp < ?")
                args.append(before)
            if after is not None:
                conds.append("timestamp > ?")
                args.append(after)
            if before_uid is not None:
                ts, row_id = self._uid_position(pid, before_uid)
                # the first term lets SQLite use the timestamp index as a range
                conds.append("timestamp <= ? AND (timestamp < ? OR id < ?)")
                args.extend((ts, ts, row_id))
            if after_uid is not None:
                ts, row_id = self._uid_position(pid, after_uid)
                conds.append("timestamp >= ? AND (timestamp > ? OR id > ?)")
                args.extend((ts, ts, row_id))
            extra = "".join(f" AND {cond}" for cond in conds)
            ordering = f"ORDER BY timestamp {order}, id {order} LIMIT ?"
            columns = ", ".join(HISTORY_FIELDS)
            if with_jid is None:
                sql = f"SELECT {columns} FROM history WHERE profile_id = ?{extra} {ordering}"
                params = (pid, *args, limit)
            else:
                # one index range per side of the conversation, merged: stays fast on
                # a big history, unlike "source = ? OR dest = ?" sorted afterwards
                sql = (
                    f"SELECT {columns} FROM ("
                    f"SELECT {columns}, id FROM (SELECT * FROM history "
                    f"WHERE profile_id = ? AND source = ?{extra} {ordering}) "
                    "UNION ALL "
                    f"SELECT {columns}, id FROM (SELECT * FROM history "
                    f"WHERE profile_id = ? AND dest = ? AND source <> ?{extra} {ordering})"
                    f") {ordering}"
                )
                params = (
                    *(pid, with_jid, *args, limit),
                    *(pid, with_jid, with_jid, *args, limit),
                    limit,
                )
            rows = self._conn.execute(sql, params).fetchall()
            if not forward:
                rows.reverse()
            return rows

        return [_message_dict(row) for row in await self._call(run)]

    async def history_search(
        self,
        profile: str,
        query: str,
        with_jid: str | None = None,
        sender: str | None = None,
        start: float | None = None,
        end: float | None = None,
        msg_type: str | Iterable[str] | None = None,
        limit: int = 20,
        offset: int = 0,
        *,
        markers: tuple[str, str] = ("[", "]"),
        ellipsis: str = "…",
        snippet_tokens: int = 12,
    ) -> list[dict]:
        """Full-text search in message bodies, best match first (bm25).

        ``query`` is plain words (accents and case ignored, every word must match, a
        trailing ``*`` makes a word a prefix); FTS5 syntax in it is treated as text, so
        no query raises. ``with_jid`` restricts to a conversation, ``sender`` to the
        author (a bare JID, or ``room@server/nick`` for a room occupant), ``start``/
        ``end`` to a time range (inclusive). Each result is a history dict plus
        ``snippet`` (about ``snippet_tokens`` words of the body around the matches, matches
        wrapped in ``markers``) and ``rank`` (bm25 score, lower is better). At most
        :data:`MAX_SEARCH_LIMIT` results per call; page with ``offset``.

        Cost: ranking takes ~1.5 µs per matching message, and it runs on the one
        database thread that every other call waits for. So when a query matches more
        than :attr:`search_window` messages (a very common word), only the
        ``search_window`` most recently stored matches (after the filters) are ranked:
        results are still matches, best first among recent ones, and the time stays
        bounded (~20 ms for 10,000). Filters are applied while walking the matches,
        so a filtered search for a very common word still costs ~0.6 µs per match.
        """
        profile = _check_name(profile, "profile")
        match = fts_query(query)
        if with_jid is not None:
            with_jid = _split_jid(with_jid, "with_jid")[0]
        sender_bare = sender_resource = None
        if sender is not None:
            sender_bare, sender_resource = _split_jid(sender, "sender")
        start = _check_time(start, "start")
        end = _check_time(end, "end")
        types = _check_types(msg_type)
        limit = _check_limit(limit, "limit")
        offset = _check_limit(offset, "offset")
        if limit > MAX_SEARCH_LIMIT:
            raise InvalidArgument(f"limit must be at most {MAX_SEARCH_LIMIT}")
        if (
            not isinstance(markers, (tuple, list))
            or len(markers) != 2
            or not all(isinstance(m, str) for m in markers)
            or not isinstance(ellipsis, str)
        ):
            raise InvalidArgument("markers must be two strings and ellipsis a string")
        if not isinstance(snippet_tokens, int) or not 1 <= snippet_tokens <= 64:
            raise InvalidArgument("snippet_tokens must be an integer from 1 to 64")
        if match is None or limit == 0:
            return []

        def run():
            self._fts_sync(required=False)
            conn = self._conn
            conds = ["h.profile_id = ?"]
            args: list[Any] = [self._profile_id(profile)]
            if with_jid is not None:
                conds.append("(h.source = ? OR h.dest = ?)")
                args.extend((with_jid, with_jid))
            if sender_bare is not None:
                conds.append("h.source = ?")
                args.append(sender_bare)
                if sender_resource is not None:
                    conds.append("h.source_resource = ?")
                    args.append(sender_resource)
            if start is not None:
                conds.append("h.timestamp >= ?")
                args.append(start)
            if end is not None:
                conds.append("h.timestamp <= ?")
                args.append(end)
            if types:
                conds.append(f"h.type IN ({', '.join('?' * len(types))})")
                args.extend(types)
            matched = (
                "FROM history_fts JOIN history AS h ON h.id = history_fts.rowid "
                f"WHERE history_fts MATCH ? AND {' AND '.join(conds)}"
            )
            window = self.search_window
            if window:
                # counting matches is cheap (no ranking): only look for a window
                # boundary when there are more matches than the window
                total = conn.execute(
                    "SELECT count(*) FROM history_fts WHERE history_fts MATCH ?", (match,)
                ).fetchone()[0]
                if total == 0:
                    return []
                if total > window:
                    row = conn.execute(
                        f"SELECT history_fts.rowid {matched} "
                        "ORDER BY history_fts.rowid DESC LIMIT 1 OFFSET ?",
                        (match, *args, window - 1),
                    ).fetchone()
                    if row is not None:
                        matched += " AND history_fts.rowid >= ?"
                        args.append(row[0])
            # phase 1: rank (bm25) without building snippets for every match
            ranked = conn.execute(
                f"SELECT h.id, history_fts.rank {matched} "
                "ORDER BY history_fts.rank, h.timestamp DESC LIMIT ? OFFSET ?",
                (match, *args, limit, offset),
            ).fetchall()
            if not ranked:
                return []
            # phase 2: rows and snippets of the page only
            ids = [row_id for row_id, _rank in ranked]
            marks = ", ".join("?" * len(ids))
            snippets = dict(
                conn.execute(
                    "SELECT rowid, snippet(history_fts, 0, ?, ?, ?, ?) FROM history_fts "
                    f"WHERE history_fts MATCH ? AND rowid IN ({marks})",
                    (*markers, ellipsis, snippet_tokens, match, *ids),
                )
            )
            rows = {
                row[-1]: row
                for row in conn.execute(
                    f"SELECT {', '.join(HISTORY_FIELDS)}, id FROM history WHERE id IN ({marks})",
                    ids,
                )
            }
            return [(rows[row_id], snippets.get(row_id, ""), rank) for row_id, rank in ranked]

        results = []
        for row, snippet, rank in await self._call(run):
            message = _message_dict(row)
            message["snippet"] = snippet
            message["rank"] = rank
            results.append(message)
        return results

    async def history_last_stanza_id(
        self, profile: str, archive_jid: str
    ) -> tuple[str, float] | None:
        """(stanza_id, timestamp) of the newest message from ``archive_jid``'s archive.

        This is where a MAM catch-up resumes (``after`` = that stanza_id). None if no
        message of that archive is stored.
        """
        profile = _check_name(profile, "profile")
        archive_jid = _check_name(archive_jid, "archive_jid")

        def run():
            row = self._conn.execute(
                "SELECT stanza_id, timestamp FROM history "
                "WHERE profile_id = ? AND stanza_id_by = ? AND stanza_id IS NOT NULL "
                "ORDER BY timestamp DESC, id DESC LIMIT 1",
                (self._profile_id(profile), archive_jid),
            ).fetchone()
            return None if row is None else (row[0], row[1])

        return await self._call(run)

    def _merge_extra(self, profile: str, uid: str, updates: dict) -> tuple[int, dict, str | None]:
        """(storage thread) Row id, merged ``extra`` and its JSON text for a stored message.

        A key whose new value is None is removed. NotFound if the message is unknown.
        """
        pid = self._profile_id(profile)
        row = self._conn.execute(
            "SELECT id, extra FROM history WHERE profile_id = ? AND uid = ?", (pid, uid)
        ).fetchone()
        if row is None:
            raise NotFound(f"no message with uid {uid!r} in profile {profile!r}")
        extra = json.loads(row[1]) if row[1] else {}
        for key, value in updates.items():
            if value is None:
                extra.pop(key, None)
            else:
                extra[key] = value
        return row[0], extra, (_to_json(extra, "extra") if extra else None)

    async def history_update_extra(self, profile: str, uid: str, extra_updates: dict) -> dict:
        """Merge ``extra_updates`` into a message's ``extra``; return the new extra.

        A key whose new value is None is removed. NotFound if the message is unknown.
        """
        profile = _check_name(profile, "profile")
        uid = _check_name(uid, "uid")
        if not isinstance(extra_updates, dict):
            raise InvalidArgument("extra_updates must be a dict")
        _to_json(extra_updates, "extra_updates")

        def run():
            row_id, extra, text = self._merge_extra(profile, uid, extra_updates)
            self._conn.execute("UPDATE history SET extra = ? WHERE id = ?", (text, row_id))
            return extra

        return await self._call_write(run)

    async def history_find(
        self,
        profile: str,
        *,
        uid: str | None = None,
        source: str | None = None,
        origin_id: str | None = None,
        stanza_id: str | None = None,
        stanza_id_by: str | None = None,
    ) -> dict | None:
        """One stored message found by a key that identifies it, or None.

        Exactly one key: ``uid``, or ``origin_id`` with ``source`` (the sender's bare JID:
        origin-ids are only unique per sender), or ``stanza_id`` with ``stanza_id_by`` (the
        archive's JID). Each lookup uses an index (XEP-0184/0333/0308... find the message an
        incoming stanza refers to).
        """
        profile = _check_name(profile, "profile")
        if uid is not None:
            if any(v is not None for v in (source, origin_id, stanza_id, stanza_id_by)):
                raise InvalidArgument("history_find: give uid alone")
            cond, args = "uid = ?", (_check_name(uid, "uid"),)
        elif origin_id is not None:
            if source is None or stanza_id is not None or stanza_id_by is not None:
                raise InvalidArgument("history_find: origin_id needs source (and nothing else)")
            bare = _split_jid(source, "source")[0]
            cond, args = "source = ? AND origin_id = ?", (bare, _check_name(origin_id, "origin_id"))
        elif stanza_id is not None:
            if stanza_id_by is None or source is not None:
                raise InvalidArgument("history_find: stanza_id needs stanza_id_by")
            cond = "stanza_id = ? AND stanza_id_by = ?"
            args = (_check_name(stanza_id, "stanza_id"), _check_name(stanza_id_by, "stanza_id_by"))
        else:
            raise InvalidArgument("history_find needs uid, origin_id or stanza_id")

        def run():
            return self._conn.execute(
                f"SELECT {', '.join(HISTORY_FIELDS)} FROM history "
                f"WHERE profile_id = ? AND {cond} LIMIT 1",
                (self._profile_id(profile), *args),
            ).fetchone()

        row = await self._call(run)
        return None if row is None else _message_dict(row)

    async def history_mark_before(
        self,
        profile: str,
        uid: str,
        key: str,
        value: str,
        levels: Iterable[str],
        *,
        with_jid: str,
        outgoing: bool,
        limit: int = 500,
    ) -> list[str]:
        """Set ``extra[key] = value`` on message ``uid`` and on the earlier ones it covers.

        For markers that mean "everything up to here" (XEP-0333): the messages of the
        conversation with ``with_jid`` going the same way (``outgoing``: sent to it, else
        received from it), at or before ``uid``, newest first, are updated until one already
        has a value at least as high in ``levels`` (an ordered list, lowest first): markers
        only move forward, so everything older is marked already. At most ``limit`` rows are
        updated. Returns the updated uids, oldest first; empty if ``uid`` itself is already
        marked at least as high. NotFound if ``uid`` is unknown.
        """
        profile = _check_name(profile, "profile")
        uid = _check_name(uid, "uid")
        key = _check_name(key, "key")
        levels = [_check_name(level, "level") for level in levels]
        if value not in levels:
            raise InvalidArgument(f"{value!r} is not one of the levels {levels!r}")
        rank = levels.index(value)
        with_jid = _split_jid(with_jid, "with_jid")[0]
        limit = _check_limit(limit, "limit")
        side = "dest" if outgoing else "source"

        def run():
            pid = self._profile_id(profile)
            ts, row_id = self._uid_position(pid, uid)
            target = self._conn.execute(
                f"SELECT {side}, outgoing FROM history WHERE id = ?", (row_id,)
            ).fetchone()
            if target[0] != with_jid or bool(target[1]) != bool(outgoing):
                raise InvalidArgument(
                    f"message {uid!r} is not {'to' if outgoing else 'from'} {with_jid}"
                )
            rows = self._conn.execute(
                f"SELECT id, uid, extra FROM history WHERE profile_id = ? AND {side} = ? "
                "AND outgoing = ? AND timestamp <= ? AND (timestamp < ? OR id <= ?) "
                "ORDER BY timestamp DESC, id DESC LIMIT ?",
                (pid, with_jid, 1 if outgoing else 0, ts, ts, row_id, limit),
            ).fetchall()
            updated = []
            for rid, ruid, text in rows:
                extra = json.loads(text) if text else {}
                current = extra.get(key)
                if current in levels and levels.index(current) >= rank:
                    break
                extra[key] = value
                self._conn.execute(
                    "UPDATE history SET extra = ? WHERE id = ?", (_to_json(extra, "extra"), rid)
                )
                updated.append(ruid)
            updated.reverse()
            return updated

        return await self._call_write(run)

    # -- message editing (XEP-0308 corrections, XEP-0424/0425 retractions, XEP-0444...)

    async def history_update_body(
        self, profile: str, uid: str, body: str | None, extra_updates: dict | None = None
    ) -> dict:
        """Replace a message's body and merge ``extra_updates`` into its ``extra``, atomically.

        ``body`` None clears it (a retraction tombstone). The full-text index follows (the
        ``history_fts_update`` trigger removes the old body's terms and indexes the new
        one in the same transaction). A key of ``extra_updates`` whose value is None is
        removed. Returns the updated message; NotFound if ``uid`` is unknown.
        """
        profile = _check_name(profile, "profile")
        uid = _check_name(uid, "uid")
        if body is not None and not isinstance(body, str):
            raise InvalidArgument(f"body must be a string or None, not {body!r}")
        extra_updates = dict(extra_updates or {})
        _to_json(extra_updates, "extra_updates")
        columns = ", ".join(HISTORY_FIELDS)

        def run():
            row_id, extra, text = self._merge_extra(profile, uid, extra_updates)
            self._fts_sync()
            self._conn.execute(
                "UPDATE history SET body = ?, extra = ? WHERE id = ?", (body, text, row_id)
            )
            return self._conn.execute(
                f"SELECT {columns} FROM history WHERE id = ?", (row_id,)
            ).fetchone()

        return _message_dict(await self._call_write(run))

    async def history_last_from(
        self,
        profile: str,
        source: str,
        *,
        source_resource: str | None = None,
        dest: str | None = None,
        groupchat: bool = False,
    ) -> dict | None:
        """The newest message sent by ``source`` (a bare JID), or None.

        ``groupchat`` True: among the group chat messages of the room ``source``, from the
        occupant ``source_resource``; else among the other types (chat, normal,
        headline), sent to ``dest`` (a bare JID) when given, and from ``source_resource``
        when given (a room occupant's private messages). XEP-0308 corrections may only
        replace this message.
        """
        profile = _check_name(profile, "profile")
        source = _split_jid(source, "source")[0]
        conds = ["source = ?"]
        args: list[Any] = [source]
        if groupchat:
            conds.append("type = 'groupchat'")
        else:
            conds.append("type <> 'groupchat'")
            if dest is not None:
                conds.append("dest = ?")
                args.append(_split_jid(dest, "dest")[0])
        if source_resource is not None:
            conds.append("source_resource = ?")
            args.append(source_resource)
        columns = ", ".join(HISTORY_FIELDS)

        def run():
            return self._conn.execute(
                f"SELECT {columns} FROM history WHERE profile_id = ? AND {' AND '.join(conds)} "
                "ORDER BY timestamp DESC, id DESC LIMIT 1",
                (self._profile_id(profile), *args),
            ).fetchone()

        row = await self._call(run)
        return None if row is None else _message_dict(row)

    async def history_find_ref(
        self,
        profile: str,
        ref_id: str,
        with_jid: str,
        *,
        own_jid: str | None = None,
        groupchat: bool = False,
        stanza_id_by: str | None = None,
        source: str | None = None,
        source_resource: str | None = None,
        scan_limit: int = 2000,
    ) -> dict | None:
        """The message of the conversation with ``with_jid`` that another message refers to.

        Corrections, retractions, reactions and replies name the message they apply to by
        an id whose meaning depends on the context; this tries, in order, and returns the
        first (newest) match, or None:

        1. ``stanza_id`` = ``ref_id`` given by ``stanza_id_by`` (a room's XEP-0359 id),
           when ``stanza_id_by`` is set;
        2. ``origin_id`` = ``ref_id`` (XEP-0359 origin-id) of a message from ``with_jid``
           or from ``own_jid``;
        3. ``uid`` = ``ref_id`` (our own sent messages: their ``id`` attribute is their uid);
        4. ``extra["message_id"]`` = ``ref_id`` (the ``id`` attribute of a received
           message), among the ``scan_limit`` newest messages of each side.

        Only messages of that conversation count: ``groupchat`` True means the group chat
        messages of the room ``with_jid``; else the other types exchanged between
        ``with_jid`` and ``own_jid`` (or anyone when ``own_jid`` is None). ``source``
        (a bare JID) and ``source_resource`` keep the messages of one sender (ids are
        chosen by senders: two senders may use the same).
        """
        profile = _check_name(profile, "profile")
        ref_id = _check_name(ref_id, "ref_id")
        with_jid = _split_jid(with_jid, "with_jid")[0]
        own = None if own_jid is None else _split_jid(own_jid, "own_jid")[0]
        by = None if stanza_id_by is None else _split_jid(stanza_id_by, "stanza_id_by")[0]
        scan_limit = _check_limit(scan_limit, "scan_limit")
        columns = ", ".join(HISTORY_FIELDS)
        if groupchat:
            sides = [("source = ?", (with_jid,))]
            type_cond = "type = 'groupchat'"
        else:
            type_cond = "type <> 'groupchat'"
            if own is None:
                sides = [("source = ?", (with_jid,)), ("dest = ? AND source <> ?", (with_jid,) * 2)]
            else:
                sides = [("source = ? AND dest = ?", (with_jid, own))]
                if own != with_jid:
                    sides.append(("source = ? AND dest = ?", (own, with_jid)))
        if source is not None:
            source = _split_jid(source, "source")[0]
            type_cond += " AND source = ?"
            type_args: tuple = (source,)
            if source_resource is not None:
                type_cond += " AND source_resource = ?"
                type_args += (source_resource,)
        else:
            type_args = ()

        def first(pid: int, key_cond: str, key_args: tuple) -> tuple | None:
            best = None
            for side_cond, side_args in sides:
                row = self._conn.execute(
                    f"SELECT {columns}, id FROM history WHERE profile_id = ? AND {key_cond} "
                    f"AND {side_cond} AND {type_cond} ORDER BY timestamp DESC, id DESC LIMIT 1",
                    (pid, *key_args, *side_args, *type_args),
                ).fetchone()
                if row is not None and (best is None or (row[4], row[-1]) > (best[4], best[-1])):
                    best = row
            return best

        def run():
            pid = self._profile_id(profile)
            if by is not None:
                row = first(pid, "stanza_id = ? AND stanza_id_by = ?", (ref_id, by))
                if row is not None:
                    return row
            for key_cond in ("origin_id = ?", "uid = ?"):
                row = first(pid, key_cond, (ref_id,))
                if row is not None:
                    return row
            if scan_limit == 0:
                return None
            best = None
            for side_cond, side_args in sides:
                row = self._conn.execute(
                    f"SELECT {columns}, id FROM (SELECT * FROM history WHERE profile_id = ? "
                    f"AND {side_cond} AND {type_cond} ORDER BY timestamp DESC, id DESC LIMIT ?) "
                    "WHERE extra IS NOT NULL AND json_extract(extra, '$.message_id') = ? "
                    "ORDER BY timestamp DESC, id DESC LIMIT 1",
                    (pid, *side_args, *type_args, scan_limit, ref_id),
                ).fetchone()
                if row is not None and (best is None or (row[4], row[-1]) > (best[4], best[-1])):
                    best = row
            return best

        row = await self._call(run)
        return None if row is None else _message_dict(row)

    async def history_delete(self, profile: str, uid: str) -> None:
        """Delete one message (and its index entry). NotFound if it is unknown."""
        profile = _check_name(profile, "profile")
        uid = _check_name(uid, "uid")

        def run():
            self._fts_sync()
            cur = self._conn.execute(
                "DELETE FROM history WHERE profile_id = ? AND uid = ?",
                (self._profile_id(profile), uid),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no message with uid {uid!r} in profile {profile!r}")

        await self._call_write(run)

    async def history_count(self, profile: str) -> int:
        """How many messages ``profile`` has."""
        profile = _check_name(profile, "profile")

        def run():
            return self._conn.execute(
                "SELECT count(*) FROM history WHERE profile_id = ?", (self._profile_id(profile),)
            ).fetchone()[0]

        return await self._call(run)

    # -- disco / caps cache (global)

    async def disco_cache_get(self, ver_hash: str) -> str | None:
        """The disco#info XML cached for a caps ``ver`` hash, None if unknown."""
        ver_hash = _check_name(ver_hash, "ver_hash")

        def run():
            row = self._conn.execute(
                "SELECT xml FROM disco_cache WHERE ver_hash = ?", (ver_hash,)
            ).fetchone()
            return None if row is None else row[0]

        return await self._call(run)

    async def disco_cache_set(self, ver_hash: str, xml_text: str) -> None:
        ver_hash = _check_name(ver_hash, "ver_hash")
        xml_text = _check_name(xml_text, "xml_text")

        def run():
            self._conn.execute(
                "INSERT INTO disco_cache (ver_hash, xml, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (ver_hash) DO UPDATE SET xml = excluded.xml, updated = excluded.updated",
                (ver_hash, xml_text, time.time()),
            )

        await self._call_write(run)


def _describe(migration: migrations_mod.Migration) -> tuple[int, str]:
    return migration.version, migration.description
