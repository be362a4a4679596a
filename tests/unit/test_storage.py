"""Tests of sat.memory.storage (SQLite in WAL mode, FTS5, off the reactor thread).

Run with: python -m pytest -p pytest_twisted --reactor=asyncio tests/unit/test_storage.py
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
import pytest_twisted
from twisted.internet import defer

from sat.core.errors import AlreadyExists, InvalidArgument, NotFound, StorageError
from sat.memory import migrations
from sat.memory import storage as storage_mod
from sat.memory.storage import Storage, fts_query

ME = "louise@example.org"
BOB = "bob@example.net"
ROOM = "cafe@conference.example.org"
ARCHIVE = ME


def msg(body=None, **kwargs):
    data = {"source": BOB, "dest": ME, "timestamp": 1000.0, "type": "chat", "body": body}
    data.update(kwargs)
    return data


async def sql(storage: Storage, query: str, args=()):
    """Run raw SQL on the storage's own thread and connection (white-box checks)."""
    return await storage._call(lambda: storage._conn.execute(query, args).fetchall())


@pytest_twisted.async_yield_fixture
async def storage(tmp_path):
    st = Storage(tmp_path / "data" / "sat.db")
    await st.initialise()
    await st.profile_create("louise")
    yield st
    await st.close()


# --- opening, migrations -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_migrates_from_zero(tmp_path):
    path = tmp_path / "sub" / "dir" / "sat.db"
    st = Storage(path)
    await st.initialise()
    assert (await sql(st, "PRAGMA user_version"))[0][0] == migrations.latest_version()
    assert (await sql(st, "PRAGMA journal_mode"))[0][0] == "wal"
    assert (await sql(st, "PRAGMA synchronous"))[0][0] == 1  # NORMAL
    assert (await sql(st, "PRAGMA foreign_keys"))[0][0] == 1
    assert (await sql(st, "PRAGMA busy_timeout"))[0][0] > 0
    names = {row[0] for row in await sql(st, "SELECT name FROM sqlite_master")}
    expected = {"profiles", "params", "secrets", "kv", "history", "history_fts", "disco_cache"}
    assert expected <= names
    await st.close()
    assert path.stat().st_mode & 0o077 == 0  # private file


@pytest_twisted.ensureDeferred
async def test_reopen_keeps_data(tmp_path):
    path = tmp_path / "sat.db"
    st = Storage(path)
    await st.initialise()
    await st.profile_create("louise")
    await st.param_set("General", "lang", "fr")
    await st.history_add("louise", msg("bonjour", uid="u1"))
    await st.close()
    # the final checkpoint folded the WAL into the main file
    assert not (tmp_path / "sat.db-wal").exists() or (tmp_path / "sat.db-wal").stat().st_size == 0

    st = Storage(path)
    await st.initialise()
    assert await st.profiles_list() == ["louise"]
    assert await st.param_get("General", "lang") == "fr"
    assert [m["body"] for m in await st.history_get("louise")] == ["bonjour"]
    await st.close()


@pytest_twisted.ensureDeferred
async def test_newer_schema_refused(tmp_path):
    path = tmp_path / "sat.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {migrations.latest_version() + 5}")
    conn.close()
    st = Storage(path)
    with pytest.raises(StorageError, match="newer"):
        await st.initialise()
    with pytest.raises(StorageError):
        await st.profiles_list()


@pytest_twisted.ensureDeferred
async def test_each_migration_step_is_one_transaction(tmp_path):
    path = tmp_path / "sat.db"
    steps = list(migrations.MIGRATIONS)
    v = migrations.latest_version()
    good = migrations.Migration(v + 1, "add a table", ("CREATE TABLE extra_a (x INTEGER)",))
    bad = migrations.Migration(
        v + 2,
        "half done then fails",
        ("CREATE TABLE extra_b (x INTEGER)", "INSERT INTO no_such_table VALUES (1)"),
    )
    st = Storage(path, migrations=[*steps, good, bad])
    with pytest.raises(StorageError):
        await st.initialise()

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == v + 1
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "extra_a" in names
    assert "extra_b" not in names  # rolled back with its step

    fixed = migrations.Migration(v + 2, "fixed", ("CREATE TABLE extra_b (x INTEGER)",))
    st = Storage(path, migrations=[*steps, good, fixed])
    await st.initialise()
    assert (await sql(st, "PRAGMA user_version"))[0][0] == v + 2
    await st.close()


@pytest_twisted.ensureDeferred
async def test_not_a_database(tmp_path):
    path = tmp_path / "sat.db"
    path.write_bytes(b"this is not sqlite at all" * 200)
    st = Storage(path)
    with pytest.raises(StorageError, match="not a SQLite database|not a database"):
        await st.initialise()


@pytest_twisted.ensureDeferred
async def test_unusable_paths(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(StorageError, match="directory"):
        await Storage(tmp_path / "adir").initialise()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError):
        await Storage(tmp_path / "afile" / "sat.db").initialise()


@pytest_twisted.ensureDeferred
async def test_closed_storage_refuses_calls(tmp_path):
    st = Storage(tmp_path / "sat.db")
    with pytest.raises(StorageError, match="new"):
        await st.profiles_list()
    await st.initialise()
    await st.close()
    await st.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await st.profiles_list()


# --- threading -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_db_calls_run_off_the_reactor_thread(storage):
    seen = []

    def trace(statement):
        seen.append(threading.get_ident())

    await storage._call(lambda: storage._conn.set_trace_callback(trace))
    reactor_thread = threading.get_ident()
    await storage.profile_create("bob")
    await storage.param_set("General", "x", "1", profile="bob")
    await storage.history_add("bob", msg("hello"))
    await storage.history_search("bob", "hello")
    await storage.history_get("bob")
    await storage.kv_set("ns", "k", [1])
    await storage._call(lambda: storage._conn.set_trace_callback(None))
    assert len(seen) > 5
    assert set(seen) == {storage._db.ident}
    assert reactor_thread not in seen


# --- profiles ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_profiles(storage):
    assert await storage.profile_exists("louise")
    assert not await storage.profile_exists("zoé")
    await storage.profile_create("zoé")
    await storage.profile_create("albert")
    assert await storage.profiles_list() == ["albert", "louise", "zoé"]
    with pytest.raises(AlreadyExists):
        await storage.profile_create("albert")
    with pytest.raises(InvalidArgument):
        await storage.profile_create("")
    await storage.profile_delete("albert")
    assert await storage.profiles_list() == ["louise", "zoé"]
    with pytest.raises(NotFound):
        await storage.profile_delete("albert")
    with pytest.raises(NotFound):
        await storage.param_get("General", "x", profile="albert")


@pytest_twisted.ensureDeferred
async def test_profile_delete_cascades(storage):
    await storage.profile_create("bob")
    for profile in ("louise", "bob"):
        await storage.param_set("General", "lang", "fr", profile=profile)
        await storage.secret_set(profile, "password", b"\x00secret")
        await storage.kv_set("ns", "key", {"a": 1}, profile=profile)
        await storage.history_add_many(profile, [msg(f"café n°{i}") for i in range(5)])
    await storage.param_set("General", "global", "yes")
    await storage.kv_set("ns", "global", 1)

    await storage.profile_delete("bob")

    for table in ("params", "secrets", "kv", "history"):
        rows = await sql(
            storage,
            f"SELECT count(*) FROM {table} WHERE profile_id NOT IN (SELECT id FROM profiles)",
        )
        assert rows[0][0] == 0, table
    assert await storage.history_count("louise") == 5
    assert len(await storage.history_search("louise", "cafe")) == 5
    assert await storage.param_get("General", "global") == "yes"
    assert await storage.kv_get("ns", "global") == 1
    fts_rows = await sql(storage, "SELECT count(*) FROM history_fts")
    assert fts_rows[0][0] == 5
    await sql(storage, "INSERT INTO history_fts(history_fts, rank) VALUES ('integrity-check', 1)")
    # a profile created again with the same name starts empty
    await storage.profile_create("bob")
    assert await storage.history_count("bob") == 0
    assert await storage.secret_get("bob", "password") is None


# --- params, secrets, kv, disco -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_params(storage):
    assert await storage.param_get("Connection", "server") is None
    assert await storage.param_get("Connection", "server", default="d") == "d"
    await storage.param_set("Connection", "server", "general.example")
    await storage.param_set("Connection", "server", "louise.example", profile="louise")
    await storage.param_set("Connection", "port", "5222", profile="louise")
    assert await storage.param_get("Connection", "server") == "general.example"
    assert await storage.param_get("Connection", "server", profile="louise") == "louise.example"
    await storage.param_set("Connection", "server", "other.example", profile="louise")
    assert await storage.params_get_all("louise") == {
        ("Connection", "server"): "other.example",
        ("Connection", "port"): "5222",
    }
    assert await storage.params_get_all() == {("Connection", "server"): "general.example"}
    assert await storage.param_delete("Connection", "port", profile="louise")
    assert not await storage.param_delete("Connection", "port", profile="louise")
    assert await storage.param_get("Connection", "port", profile="louise") is None
    with pytest.raises(InvalidArgument):
        await storage.param_set("Connection", "port", 5222)


@pytest_twisted.ensureDeferred
async def test_secrets(storage):
    assert await storage.secret_get("louise", "password") is None
    blob = bytes(range(256))
    await storage.secret_set("louise", "password", blob)
    assert await storage.secret_get("louise", "password") == blob
    await storage.secret_set("louise", "password", b"new")
    assert await storage.secret_get("louise", "password") == b"new"
    assert await storage.secret_delete("louise", "password")
    assert await storage.secret_get("louise", "password") is None
    with pytest.raises(InvalidArgument):
        await storage.secret_set("louise", "password", "not bytes")
    with pytest.raises(NotFound):
        await storage.secret_set("nobody", "password", b"x")


@pytest_twisted.ensureDeferred
async def test_kv_json_round_trip(storage):
    value = {"liste": [1, 2.5, True, None, "é\u2603"], "nested": {"a": {"b": []}}, "n": -3}
    await storage.kv_set("XEP-0384", "devices", value, profile="louise")
    await storage.kv_set("XEP-0384", "count", 7, profile="louise")
    await storage.kv_set("XEP-0384", "devices", "global one")
    assert await storage.kv_get("XEP-0384", "devices", profile="louise") == value
    assert await storage.kv_get("XEP-0384", "devices") == "global one"
    assert await storage.kv_get("XEP-0384", "missing", default={"d": 1}) == {"d": 1}
    await storage.kv_set("XEP-0384", "nothing", None)
    assert await storage.kv_get("XEP-0384", "nothing", default="d") is None  # stored null
    assert await storage.kv_all("XEP-0384", profile="louise") == {"devices": value, "count": 7}
    assert await storage.kv_all("XEP-0384") == {"devices": "global one", "nothing": None}
    assert await storage.kv_delete("XEP-0384", "count", profile="louise")
    assert not await storage.kv_delete("XEP-0384", "count", profile="louise")
    with pytest.raises(InvalidArgument):
        await storage.kv_set("XEP-0384", "bad", {1, 2})
    with pytest.raises(InvalidArgument):
        await storage.kv_set("XEP-0384", "bad", float("nan"))


@pytest_twisted.ensureDeferred
async def test_disco_cache(storage):
    assert await storage.disco_cache_get("abc=") is None
    await storage.disco_cache_set("abc=", "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert "disco#info" in await storage.disco_cache_get("abc=")
    await storage.disco_cache_set("abc=", "<query/>")
    assert await storage.disco_cache_get("abc=") == "<query/>"


# --- history: add, dedup, get ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_history_round_trip(storage):
    message = {
        "uid": "u-1",
        "stanza_id": "sid-1",
        "stanza_id_by": ARCHIVE,
        "origin_id": "oid-1",
        "timestamp": 1700000000.25,
        "received_timestamp": 1700000001.5,
        "source": f"{BOB}/phone",
        "dest": f"{ME}/sat",
        "type": "chat",
        "body": "Salut ! Ça va ?",
        "subject": None,
        "thread": "th-1",
        "extra": {"receipt": True, "lang": {"en": "Hi!"}},
        "outgoing": False,
    }
    assert await storage.history_add("louise", message)
    [got] = await storage.history_get("louise")
    expected = dict(message, source=BOB, source_resource="phone", dest=ME, dest_resource="sat")
    assert got == expected
    assert await storage.history_count("louise") == 1
    # defaults: generated uid, current time, empty extra
    assert await storage.history_add("louise", {"source": ME, "dest": BOB, "body": "x"})
    last = (await storage.history_get("louise", limit=1))[0]
    assert last["uid"] and last["extra"] == {} and last["type"] == "chat"


@pytest_twisted.ensureDeferred
async def test_history_add_validates(storage):
    with pytest.raises(InvalidArgument, match="unknown message field"):
        await storage.history_add("louise", msg("x", bodyy="typo"))
    with pytest.raises(InvalidArgument):
        await storage.history_add("louise", msg("x", type="weird"))
    with pytest.raises(InvalidArgument):
        await storage.history_add("louise", msg("x", stanza_id="s"))  # no stanza_id_by
    with pytest.raises(InvalidArgument):
        await storage.history_add("louise", msg("x", source=None))
    with pytest.raises(InvalidArgument):
        await storage.history_add("louise", msg("x", extra={"obj": object()}))
    with pytest.raises(NotFound):
        await storage.history_add("nobody", msg("x"))
    assert await storage.history_count("louise") == 0


@pytest_twisted.ensureDeferred
async def test_history_dedup_by_each_key(storage):
    await storage.profile_create("bob")
    add = storage.history_add
    assert await add("louise", msg("a", uid="same"))
    assert not await add("louise", msg("a again", uid="same"))
    assert not await add("bob", msg("uid is global", uid="same"))

    assert await add("louise", msg("b", stanza_id="s1", stanza_id_by=ARCHIVE))
    assert not await add("louise", msg("b", stanza_id="s1", stanza_id_by=ARCHIVE))
    assert await add("louise", msg("b", stanza_id="s1", stanza_id_by=ROOM))  # other archive
    assert await add("bob", msg("b", stanza_id="s1", stanza_id_by=ARCHIVE))  # other profile

    assert await add("louise", msg("c", origin_id="o1"))
    assert not await add("louise", msg("c", origin_id="o1", stanza_id="s9", stanza_id_by=ARCHIVE))
    assert await add("louise", msg("c", origin_id="o1", source="carol@example.com"))
    assert await add("bob", msg("c", origin_id="o1"))

    assert await storage.history_count("louise") == 5
    assert await storage.history_count("bob") == 2
    # duplicates were not indexed
    fts = await sql(storage, "SELECT count(*) FROM history_fts")
    assert fts[0][0] == 7


@pytest_twisted.ensureDeferred
async def test_history_add_many_counts_new_rows(storage):
    batch = [msg(f"m{i}", stanza_id=f"s{i}", stanza_id_by=ARCHIVE, timestamp=i) for i in range(10)]
    assert await storage.history_add_many("louise", batch) == 10
    again = batch[5:] + [
        msg(f"m{i}", stanza_id=f"s{i}", stanza_id_by=ARCHIVE) for i in range(10, 15)
    ]
    again += [msg("dup inside batch", stanza_id="s14", stanza_id_by=ARCHIVE)]
    assert await storage.history_add_many("louise", again) == 5
    assert await storage.history_add_many("louise", []) == 0
    assert await storage.history_count("louise") == 15
    # a bad message refuses the whole batch before anything is written
    with pytest.raises(InvalidArgument):
        await storage.history_add_many("louise", [msg("ok"), msg("bad", type="nope")])
    assert await storage.history_count("louise") == 15


@pytest_twisted.ensureDeferred
async def test_history_paging_by_time(storage):
    await storage.history_add_many(
        "louise", [msg(f"m{i}", uid=f"u{i}", timestamp=100 + i) for i in range(20)]
    )

    def bodies(rows):
        return [r["body"] for r in rows]

    assert bodies(await storage.history_get("louise", limit=3)) == ["m17", "m18", "m19"]
    assert bodies(await storage.history_get("louise", limit=3, before=105)) == ["m2", "m3", "m4"]
    assert bodies(await storage.history_get("louise", limit=3, after=105)) == ["m6", "m7", "m8"]
    assert bodies(await storage.history_get("louise", before=104, after=100)) == ["m1", "m2", "m3"]
    assert len(await storage.history_get("louise", limit=None)) == 20
    assert await storage.history_get("louise", limit=0) == []
    with pytest.raises(InvalidArgument):
        await storage.history_get("louise", limit=-1)


@pytest_twisted.ensureDeferred
async def test_history_paging_by_uid_with_equal_timestamps(storage):
    # several messages in the same second: paging by uid must neither skip nor repeat
    await storage.history_add_many(
        "louise", [msg(f"m{i}", uid=f"u{i}", timestamp=100 + i // 4) for i in range(20)]
    )
    seen = []
    page = await storage.history_get("louise", limit=3)
    while page:
        seen[:0] = [r["body"] for r in page]
        page = await storage.history_get("louise", limit=3, before_uid=page[0]["uid"])
    assert seen == [f"m{i}" for i in range(20)]

    seen = []
    page = await storage.history_get("louise", limit=3, after=0)
    while page:
        seen += [r["body"] for r in page]
        page = await storage.history_get("louise", limit=3, after_uid=page[-1]["uid"])
    assert seen == [f"m{i}" for i in range(20)]

    rows = await storage.history_get("louise", after_uid="u5", before_uid="u9")
    assert [r["body"] for r in rows] == ["m6", "m7", "m8"]
    with pytest.raises(NotFound):
        await storage.history_get("louise", before_uid="unknown")


@pytest_twisted.ensureDeferred
async def test_history_get_filters(storage):
    carol = "carol@example.com"
    await storage.history_add_many(
        "louise",
        [
            msg("from bob", timestamp=1),
            msg("to bob", source=ME, dest=f"{BOB}/laptop", outgoing=True, timestamp=2),
            msg("from carol", source=carol, timestamp=3),
            msg("room", source=ROOM, source_resource="nick", type="groupchat", timestamp=4),
            msg("note to self", source=BOB, dest=BOB, timestamp=5),
            msg("headline", source="news.example", type="headline", timestamp=6),
        ],
    )
    rows = await storage.history_get("louise", with_jid=BOB)
    assert [r["body"] for r in rows] == ["from bob", "to bob", "note to self"]
    rows = await storage.history_get("louise", with_jid=f"{BOB}/any", limit=2)
    assert [r["body"] for r in rows] == ["to bob", "note to self"]
    rows = await storage.history_get("louise", with_jid=BOB, limit=1, after=0)
    assert [r["body"] for r in rows] == ["from bob"]
    rows = await storage.history_get("louise", msg_type="groupchat")
    assert [r["body"] for r in rows] == ["room"]
    rows = await storage.history_get("louise", msg_type=["groupchat", "headline"])
    assert [r["body"] for r in rows] == ["room", "headline"]
    with pytest.raises(InvalidArgument):
        await storage.history_get("louise", msg_type="bogus")


@pytest_twisted.ensureDeferred
async def test_history_last_stanza_id(storage):
    assert await storage.history_last_stanza_id("louise", ARCHIVE) is None
    await storage.history_add_many(
        "louise",
        [
            msg("a", stanza_id="s1", stanza_id_by=ARCHIVE, timestamp=10),
            msg("b", stanza_id="s3", stanza_id_by=ARCHIVE, timestamp=30),
            msg("c", stanza_id="s2", stanza_id_by=ARCHIVE, timestamp=20),
            msg("d", stanza_id="r9", stanza_id_by=ROOM, timestamp=99),
            msg("e", timestamp=100),
        ],
    )
    assert await storage.history_last_stanza_id("louise", ARCHIVE) == ("s3", 30.0)
    assert await storage.history_last_stanza_id("louise", ROOM) == ("r9", 99.0)


@pytest_twisted.ensureDeferred
async def test_history_update_extra_and_delete(storage):
    await storage.history_add("louise", msg("hello café", uid="u1", extra={"a": 1, "b": 2}))
    new = await storage.history_update_extra("louise", "u1", {"b": None, "c": {"d": [1]}})
    assert new == {"a": 1, "c": {"d": [1]}}
    [row] = await storage.history_get("louise")
    assert row["extra"] == {"a": 1, "c": {"d": [1]}}
    with pytest.raises(NotFound):
        await storage.history_update_extra("louise", "nope", {"x": 1})

    await storage.history_delete("louise", "u1")
    assert await storage.history_count("louise") == 0
    assert await storage.history_search("louise", "cafe") == []
    with pytest.raises(NotFound):
        await storage.history_delete("louise", "u1")
    await sql(storage, "INSERT INTO history_fts(history_fts, rank) VALUES ('integrity-check', 1)")


# --- full-text search ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_search_is_accent_and_case_insensitive(storage):
    await storage.history_add_many(
        "louise",
        [
            msg("On prend un café ?", uid="fr"),
            msg("CAFÉ CRÈME pour moi", uid="caps"),
            msg("Ein Kaffee im Café, bitte", uid="de"),
            msg("cafe without accent", uid="en"),
            msg("rien à voir", uid="no"),
            msg("Übermäßig naïve façade", uid="mix"),
        ],
    )

    async def uids(query):
        return {r["uid"] for r in await storage.history_search("louise", query)}

    assert await uids("cafe") == {"fr", "caps", "de", "en"}
    assert await uids("Café") == {"fr", "caps", "de", "en"}
    assert await uids("creme cafe") == {"caps"}
    assert await uids("ubermassig") == set()  # ß is not a diacritic
    assert await uids("ubermäßig NAIVE facade") == {"mix"}
    assert await uids("a") == {"no"}  # "à" -> "a"
    assert await uids("caf*") == {"fr", "caps", "de", "en"}


@pytest_twisted.ensureDeferred
async def test_search_ranking_and_snippets(storage):
    filler = " ".join(["word"] * 40)
    await storage.history_add_many(
        "louise",
        [
            msg(f"{filler} omelette {filler}", uid="long"),
            msg("omelette omelette omelette du fromage", uid="best"),
            msg("une omelette", uid="short"),
        ],
    )
    results = await storage.history_search("louise", "omelette")
    assert [r["uid"] for r in results] == ["best", "short", "long"]
    assert results[0]["rank"] <= results[1]["rank"] <= results[2]["rank"]
    assert results[1]["snippet"] == "une [omelette]"
    long = results[2]["snippet"]
    assert "[omelette]" in long and long.startswith("…") and long.endswith("…")
    assert len(long.split()) <= 12

    results = await storage.history_search(
        "louise", "OMELETTE", markers=("<b>", "</b>"), ellipsis="...", snippet_tokens=4
    )
    assert results[1]["snippet"] == "une <b>omelette</b>"
    assert results[2]["snippet"].startswith("...") and "<b>omelette</b>" in results[2]["snippet"]
    # limit / offset page the ranking
    assert [r["uid"] for r in await storage.history_search("louise", "omelette", limit=1)] == [
        "best"
    ]
    page = await storage.history_search("louise", "omelette", limit=2, offset=1)
    assert [r["uid"] for r in page] == ["short", "long"]


HOSTILE = [
    '"',
    '""',
    '"unbalanced',
    "AND OR NOT (",
    "AND",
    "NOT omelette",
    "omelette OR",
    ")",
    "(",
    "*",
    "**",
    "*omelette",
    "omel*tte",
    "NEAR(",
    "NEAR(omelette fromage, 2)",
    "body:",
    "body:omelette",
    "{body}: omelette",
    "-body:omelette",
    "^omelette",
    "+",
    "omelette + fromage",
    ":",
    "'",
    "\\",
    "%_",
    "\x00",
    "",
    "   ",
    "rank:1",
    "history_fts",
    "🙂 🙂*",
    "'; DROP TABLE history; --",
]


@pytest_twisted.ensureDeferred
async def test_hostile_queries_never_raise(storage):
    await storage.history_add("louise", msg("une omelette au fromage, body: and NOT near"))
    for query in HOSTILE:
        results = await storage.history_search("louise", query)
        assert isinstance(results, list), query
    # the words in them are still searched as plain words
    assert len(await storage.history_search("louise", "body: NOT")) == 1
    # punctuation inside a chunk joins its words into a phrase, as in "l'été"
    assert len(await storage.history_search("louise", "fromage,body:and")) == 1
    assert len(await storage.history_search("louise", "body:omelette")) == 0
    assert len(await storage.history_search("louise", "NOT omelette")) == 1
    assert len(await storage.history_search("louise", "NEAR(omelette fromage, 2)")) == 0
    assert await storage.history_count("louise") == 1
    assert fts_query('a"b') == '"a""b"'
    assert fts_query("caf*") == '"caf"*'
    assert fts_query("( ) * ") is None


@pytest_twisted.ensureDeferred
async def test_search_filters(storage):
    await storage.profile_create("bob")
    await storage.history_add_many(
        "louise",
        [
            msg("soleil du matin", uid="bob1", timestamp=100),
            msg("soleil à midi", uid="me1", source=ME, dest=BOB, outgoing=True, timestamp=200),
            msg("soleil couchant", uid="carol1", source="carol@example.com", timestamp=300),
            msg(
                "soleil sur la salle",
                uid="room1",
                source=ROOM,
                source_resource="nina",
                dest=ME,
                type="groupchat",
                timestamp=400,
            ),
            msg(
                "soleil encore",
                uid="room2",
                source=ROOM,
                source_resource="paul",
                dest=ME,
                type="groupchat",
                timestamp=500,
            ),
        ],
    )
    await storage.history_add("bob", msg("soleil de bob", uid="other-profile"))

    async def uids(**kwargs):
        return {r["uid"] for r in await storage.history_search("louise", "soleil", **kwargs)}

    assert await uids() == {"bob1", "me1", "carol1", "room1", "room2"}
    assert await uids(with_jid=BOB) == {"bob1", "me1"}
    assert await uids(sender=BOB) == {"bob1"}
    assert await uids(sender=ME) == {"me1"}
    assert await uids(sender=f"{ROOM}/nina") == {"room1"}
    assert await uids(with_jid=ROOM) == {"room1", "room2"}
    assert await uids(start=200, end=400) == {"me1", "carol1", "room1"}
    assert await uids(start=450) == {"room2"}
    assert await uids(end=150) == {"bob1"}
    assert await uids(msg_type="groupchat") == {"room1", "room2"}
    assert await uids(msg_type="chat", with_jid=ROOM) == set()
    with pytest.raises(InvalidArgument):
        await storage.history_search("louise", "soleil", limit=-1)
    with pytest.raises(NotFound):
        await storage.history_search("nobody", "soleil")


# --- failures --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_disk_full_is_a_storage_error(storage):
    await storage.history_add("louise", msg("before", uid="before"))
    pages = (await sql(storage, "PRAGMA page_count"))[0][0]
    await sql(storage, f"PRAGMA max_page_count = {pages + 2}")
    big = [msg("x" * 2000 + f" n{i}") for i in range(200)]
    with pytest.raises(StorageError, match="disk full") as info:
        await storage.history_add_many("louise", big)
    assert info.value.details["code"] == "SQLITE_FULL"
    with pytest.raises(StorageError, match="disk full"):
        for i in range(50):
            await storage.history_add("louise", msg("y" * 4000 + f" n{i}"))
    # nothing half-written, the storage still answers, and works once space is back
    count = await storage.history_count("louise")
    assert [r["uid"] for r in (await storage.history_get("louise", limit=None))][0] == "before"
    await sql(storage, "PRAGMA max_page_count = 1073741823")
    assert await storage.history_add_many("louise", big) == 200
    assert await storage.history_count("louise") == count + 200
    assert (await sql(storage, "PRAGMA integrity_check"))[0][0] == "ok"


@pytest_twisted.ensureDeferred
async def test_search_window_bounds_ranking_of_common_words(tmp_path):
    st = Storage(tmp_path / "sat.db", search_window=5)
    await st.initialise()
    await st.profile_create("louise")
    await st.profile_create("bob")
    await st.history_add("louise", msg("pluie pluie pluie pluie", uid="old-best", timestamp=1))
    await st.history_add_many(
        "louise",
        [msg(f"pluie n°{i} " + "x " * 20, uid=f"u{i}", timestamp=10 + i) for i in range(20)],
    )
    # another profile's recent matches do not eat this profile's window
    await st.history_add_many("bob", [msg(f"pluie {i}", timestamp=100 + i) for i in range(20)])
    results = await st.history_search("louise", "pluie", limit=50)
    assert {r["uid"] for r in results} == {f"u{i}" for i in range(15, 20)}
    # filters are applied before the window: an old range still finds its messages
    results = await st.history_search("louise", "pluie", end=12, limit=50)
    assert [r["uid"] for r in results] == ["old-best", "u2", "u1", "u0"]  # ties: newest first
    # a rare word is ranked over the whole history
    await st.history_add("louise", msg("arc-en-ciel", uid="rare", timestamp=0))
    assert [r["uid"] for r in await st.history_search("louise", "arc-en-ciel")] == ["rare"]
    with pytest.raises(InvalidArgument):
        await st.history_search("louise", "pluie", limit=100_000)
    await st.close()

    st = Storage(tmp_path / "sat.db", search_window=None)
    await st.initialise()
    results = await st.history_search("louise", "pluie", limit=50)
    assert len(results) == 21 and results[0]["uid"] == "old-best"
    await st.close()


# --- group commit of history_add, param cache ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_history_add_group_commit(storage):
    """Concurrent history_add calls share transactions; each gets its own result."""
    from twisted.internet import defer

    commits = []

    def trace(statement):
        if statement == "COMMIT":
            commits.append(statement)

    await storage._call(lambda: storage._conn.set_trace_callback(trace))
    calls = [storage.history_add("louise", msg(f"m{i}", uid=f"u{i}")) for i in range(50)]
    calls.append(storage.history_add("louise", msg("dup", uid="u3")))
    results = await defer.gatherResults([defer.ensureDeferred(c) for c in calls])
    await storage._call(lambda: storage._conn.set_trace_callback(None))
    assert results == [True] * 50 + [False]
    assert len(commits) < 50
    assert await storage.history_count("louise") == 50


@pytest_twisted.ensureDeferred
async def test_history_add_group_one_failure_loses_no_other(storage):
    from twisted.internet import defer

    calls = [defer.ensureDeferred(storage.history_add("louise", msg("a", uid="a")))]
    calls.append(defer.ensureDeferred(storage.history_add("nobody", msg("b", uid="b"))))
    calls.append(defer.ensureDeferred(storage.history_add("louise", msg("c", uid="c"))))
    outcomes = await defer.DeferredList(calls, consumeErrors=True)
    assert outcomes[0] == (True, True)
    assert outcomes[2] == (True, True)
    assert not outcomes[1][0] and outcomes[1][1].check(NotFound)
    assert await storage.history_count("louise") == 2


@pytest_twisted.ensureDeferred
async def test_history_add_keeps_submission_order(storage):
    """A history_add issued after another job is written after it."""
    from twisted.internet import defer

    first = defer.ensureDeferred(storage.history_add("louise", msg("a", uid="x")))
    delete = defer.ensureDeferred(storage.history_delete("louise", "x"))
    again = defer.ensureDeferred(storage.history_add("louise", msg("a2", uid="x")))
    assert await first
    await delete
    assert await again
    assert await storage.history_count("louise") == 1


@pytest_twisted.ensureDeferred
async def test_param_get_is_cached_and_invalidated(storage):
    assert await storage.param_get("privacy", "x", profile="louise") is None
    reads = []

    def trace(statement):
        if "FROM params" in statement:
            reads.append(statement)

    await storage._call(lambda: storage._conn.set_trace_callback(trace))
    assert await storage.param_get("privacy", "x", profile="louise", default="d") == "d"
    assert not reads
    await storage.param_set("privacy", "x", "on", profile="louise")
    assert await storage.param_get("privacy", "x", profile="louise") == "on"
    assert await storage.param_get("privacy", "x", profile="louise") == "on"
    assert len(reads) == 1
    assert await storage.param_delete("privacy", "x", profile="louise")
    assert await storage.param_get("privacy", "x", profile="louise") is None
    await storage.param_set("privacy", "x", "on", profile="louise")
    await storage.profile_delete("louise")
    await storage.profile_create("louise")
    assert await storage.param_get("privacy", "x", profile="louise") is None
    await storage._call(lambda: storage._conn.set_trace_callback(None))


# --- full-text index filled by the storage (schema v2) -------------------------------


async def fts_rowids(storage: Storage, word: str) -> set[int]:
    rows = await sql(storage, "SELECT rowid FROM history_fts WHERE history_fts MATCH ?", (word,))
    return {r[0] for r in rows}


@pytest_twisted.ensureDeferred
async def test_every_insert_path_indexes_bodies_once(storage):
    # one message alone, a group commit of several, a MAM batch, history_add_many
    assert await storage.history_add("louise", msg("lonely walrus", uid="a1"))
    group = await defer.gatherResults(
        [
            storage.history_add_deferred("louise", msg(f"grouped walrus {i}", uid=f"g{i}"))
            for i in range(5)
        ]
    )
    assert group == [True] * 5
    outcome = await storage.history_add_batch(
        "louise", [msg("batched walrus", uid="b1"), msg(None, uid="b2", subject="no body")]
    )
    assert [new for _uid, new in outcome] == [True, True]
    assert await storage.history_add_many("louise", [msg("many walrus", uid="m1")]) == 1
    # duplicates index nothing again
    assert not await storage.history_add("louise", msg("lonely walrus", uid="a1"))
    assert (await storage.history_add_batch("louise", [msg("batched walrus", uid="b1")]))[0][
        1
    ] is False
    ids = await sql(storage, "SELECT id FROM history WHERE body IS NOT NULL")
    assert await fts_rowids(storage, "walrus") == {r[0] for r in ids}
    assert len(ids) == 8
    found = await storage.history_search("louise", "walrus")
    assert len(found) == 8
    # the index agrees with the table (FTS5's own check for external content tables)
    await sql(storage, "INSERT INTO history_fts(history_fts) VALUES ('integrity-check')")


async def raw(storage: Storage, query: str, args=()):
    """Like :func:`sql` but not as a storage job: sees the index before any catch-up."""
    return await storage._db.submit(lambda: storage._conn.execute(query, args).fetchall())


async def integrity_check(storage: Storage) -> None:
    """FTS5's check of the index against the table (raises if they disagree)."""
    await raw(storage, "INSERT INTO history_fts(history_fts, rank) VALUES ('integrity-check', 1)")


@pytest_twisted.ensureDeferred
async def test_live_messages_are_indexed_before_any_other_job(storage, monkeypatch):
    monkeypatch.setattr(storage_mod, "FTS_INDEX_DELAY", 600)  # no timer during the test
    assert await storage.history_add("louise", msg("late heron", uid="h1"))
    # stored, not indexed yet
    assert await raw(storage, "SELECT count(*) FROM history_fts_docsize") == [(0,)]
    # a search sees it all the same: the job indexes what is pending first
    assert [m["uid"] for m in await storage.history_search("louise", "heron")] == ["h1"]
    await integrity_check(storage)
    # an edit of a row not indexed yet (a correction right after the message) keeps the
    # index right: the old words are gone, the new ones found
    assert await storage.history_add("louise", msg("first drafty", uid="c1"))
    await storage.history_update_body("louise", "c1", "second version")
    await integrity_check(storage)
    assert await storage.history_search("louise", "drafty") == []
    assert [m["uid"] for m in await storage.history_search("louise", "version")] == ["c1"]
    # a deletion too
    await storage.profile_create("bob")
    assert await storage.history_add("bob", msg("doomed heron", uid="d1"))
    await storage.profile_delete("bob")
    await integrity_check(storage)
    assert [m["uid"] for m in await storage.history_search("louise", "heron")] == ["h1"]


@pytest_twisted.ensureDeferred
async def test_live_messages_are_indexed_after_a_short_delay(storage, monkeypatch):
    from twisted.internet import reactor, task

    monkeypatch.setattr(storage_mod, "FTS_INDEX_DELAY", 0.05)
    for i in range(3):
        assert await storage.history_add("louise", msg(f"idle puffin {i}", uid=f"p{i}"))
    # no other job: the timer indexes them, in one go
    await task.deferLater(reactor, 0.3, lambda: None)
    ids = {r[0] for r in await raw(storage, "SELECT id FROM history")}
    assert {r[0] for r in await raw(storage, "SELECT id FROM history_fts_docsize")} == ids
    await integrity_check(storage)


@pytest_twisted.ensureDeferred
async def test_fts_sync_indexes_pending_messages_now(storage, monkeypatch):
    monkeypatch.setattr(storage_mod, "FTS_INDEX_DELAY", 600)
    assert await storage.history_add("louise", msg("hasty lark", uid="l1"))
    assert await raw(storage, "SELECT count(*) FROM history_fts_docsize") == [(0,)]
    await storage.fts_sync()
    assert await raw(storage, "SELECT count(*) FROM history_fts_docsize") == [(1,)]
    await integrity_check(storage)


@pytest_twisted.ensureDeferred
async def test_index_behind_after_a_crash_is_caught_up_on_open(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_mod, "FTS_INDEX_DELAY", 600)
    path = tmp_path / "sat.db"
    first = Storage(path)
    await first.initialise()
    await first.profile_create("louise")
    assert await first.history_add("louise", msg("crashed gannet", uid="g1"))
    # "crash": the first storage never indexes nor closes; another one opens the file
    second = Storage(path)
    await second.initialise()
    assert [m["uid"] for m in await second.history_search("louise", "gannet")] == ["g1"]
    await integrity_check(second)
    await second.close()
    first._fts_behind = False  # what a dead process would do: nothing more
    await first.close()


@pytest_twisted.ensureDeferred
async def test_v1_database_keeps_its_index_after_the_upgrade(tmp_path):
    path = tmp_path / "sat.db"
    old = Storage(path, migrations=migrations.MIGRATIONS[:1])
    await old.initialise()
    await old.profile_create("louise")
    assert await old.history_add("louise", msg("before upgrade otter", uid="v1"))
    await old.close()
    new = Storage(path)
    await new.initialise()
    triggers = {r[0] for r in await sql(new, "SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert "history_fts_insert" not in triggers
    assert {"history_fts_delete", "history_fts_update"} <= triggers
    assert await new.history_add("louise", msg("after upgrade otter", uid="v2"))
    assert len(await new.history_search("louise", "otter")) == 2
    await new.close()
