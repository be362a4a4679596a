"""XEP-0313 (MAM) catch-up and XEP-0059 (RSM) helper, on in-memory streams.

The account's server is played by the test: it answers disco#info and archive
queries on wokkel's ``XmlStreamStub``; time is a ``task.Clock``. The storage is
an in-memory stand-in with the real dedup keys, except in the last tests which
use the real SQLite storage.
"""

from __future__ import annotations

from sat.core import wokkel_compat  # noqa: F401  (before any wokkel import)

# isort: split

import time
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.words.xish import domish
from wokkel.generic import parseXml

from sat.core import errors
from sat.core.hooks import Hooks
from sat.core.messages import MessageHandling
from sat.memory.storage import Storage
from sat.plugins import xep_0030_disco, xep_0059_rsm, xep_0313_mam
from sat.plugins.xep_0059_rsm import NS_RSM, RSMRequest, RSMResponse, parse_response
from tests.unit.test_disco_caps import FakeClient, failure_of, result_of, run

NS_MAM = "urn:xmpp:mam:2"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
OWN = "juliet@capulet.lit"
FULL = "juliet@capulet.lit/chamber"
ROMEO = "romeo@montague.lit"
ROOM = "coven@chat.shakespeare.lit"
PROGRESS_ID = f"mam:juliet:{OWN}"
#: archive time of the first served result: a minute ago (live messages are stamped "now")
T0 = int(time.time()) - 60


# --- fakes ---------------------------------------------------------------------------------


class MemoryStorage:
    """The storage calls MAM and the message pipeline use, with the real dedup keys."""

    def __init__(self):
        self.rows: list[dict] = []
        self.kv: dict[tuple, object] = {}
        self.batches = 0
        self.log: list[str] = []  # order of jobs, as the storage thread would run them

    def _duplicate(self, message):
        for row in self.rows:
            if row["uid"] == message["uid"]:
                return row
            if message.get("stanza_id") is not None and (
                row["stanza_id"],
                row["stanza_id_by"],
            ) == (message["stanza_id"], message["stanza_id_by"]):
                return row
            if message.get("origin_id") is not None and (row["source"], row["origin_id"]) == (
                message["source"],
                message["origin_id"],
            ):
                return row
        return None

    def _add(self, message):
        if self._duplicate(message) is not None:
            return False
        row = dict(message)
        row["extra"] = dict(message.get("extra") or {})
        self.rows.append(row)
        return True

    def history_add_deferred(self, profile, message):
        # the receive loop's Deferred flavour of history_add
        return defer.ensureDeferred(self.history_add(profile, message))

    async def history_add(self, profile, message):
        self.log.append("add")
        return self._add(message)

    async def history_add_batch(self, profile, messages):
        self.log.append("batch")
        self.batches += 1
        out = []
        batch_uids = set()
        for message in messages:
            existing = self._duplicate(message)
            if existing is None:
                self._add(message)
                batch_uids.add(message["uid"])
                out.append((message["uid"], True))
            else:
                uid = existing["uid"]
                out.append((None if uid in batch_uids else uid, False))
        return out

    async def history_last_stanza_id(self, profile, archive_jid):
        self.log.append("last")
        rows = [r for r in self.rows if r["stanza_id_by"] == archive_jid and r["stanza_id"]]
        if not rows:
            return None
        row = max(enumerate(rows), key=lambda ir: (ir[1]["timestamp"], ir[0]))[1]
        return row["stanza_id"], row["timestamp"]

    async def history_get(self, profile, with_jid=None, limit=50, after=None, **kwargs):
        rows = [r for r in self.rows if with_jid in (None, r["source"], r["dest"])]
        rows.sort(key=lambda r: r["timestamp"])
        return [dict(r) for r in rows[:limit]]

    async def history_find(self, profile, *, uid=None, stanza_id=None, stanza_id_by=None):
        for row in self.rows:
            if uid is not None and row["uid"] == uid:
                return dict(row)
            if stanza_id is not None and (row["stanza_id"], row["stanza_id_by"]) == (
                stanza_id,
                stanza_id_by,
            ):
                return dict(row)
        return None

    async def kv_get(self, namespace, key, default=None, profile=None):
        self.log.append("kv_get")
        return self.kv.get((namespace, key, profile), default)

    async def kv_set(self, namespace, key, value, profile=None):
        self.kv[(namespace, key, profile)] = value

    def bodies(self):
        return [r["body"] for r in self.rows]


class RecordingBridge:
    def __init__(self):
        self.methods: dict[str, dict] = {}
        self.signals: dict[str, dict] = {}
        self.emitted: list[tuple] = []

    def add_method(self, name, handler, args=(), out=None, doc="", interface="plugin"):
        self.methods[name] = {"handler": handler, "args": list(args), "out": out}

    def add_signal(self, name, args=(), doc="", interface="plugin"):
        self.signals[name] = {"args": list(args)}

    def emit(self, name, *args):
        self.emitted.append((name, *args))

    def of(self, name):
        return [e[1:] for e in self.emitted if e[0] == name]


class FakeConfig:
    def __init__(self, values=None):
        self.values = values or {}

    def get(self, section, name):
        return self.values[(section, name)]


class Host:
    def __init__(self, config=None):
        self.plugins: dict = {}
        self.hooks = Hooks()
        self.storage = MemoryStorage()
        self.bridge = RecordingBridge()
        self.config = FakeConfig(config)
        self.clients: dict = {}
        self.messages = MessageHandling(self)

    def get_client(self, profile):
        try:
            return self.clients[profile]
        except KeyError:
            raise errors.NotConnected(f"profile {profile!r} is not connected") from None


def make(config=None, clock=None):
    clock = clock or task.Clock()
    host = Host(config)
    for cls in (xep_0030_disco.DiscoPlugin, xep_0059_rsm.RSMPlugin, xep_0313_mam.MAMPlugin):
        plugin = cls(host)
        host.plugins[plugin.name] = plugin
    host.plugins["XEP-0313"].clock = clock
    client = FakeClient(clock, jid=FULL, profile="juliet")
    # the generic message observer, as MessageHandling.attach installs it on real streams
    client.stub.xmlstream.addObserver("/message", lambda e: host.messages._on_message(client, e))
    for plugin in host.plugins.values():
        handler = plugin.get_handler(client)
        if handler is not None:
            handler.setHandlerParent(client)
    host.clients["juliet"] = client
    return host, client, clock


# --- the server side -------------------------------------------------------------------------


def sent(client, name="iq", iq_type=None):
    out = []
    for e in client.output:
        if not isinstance(e, domish.Element) or e.name != name:
            continue
        if iq_type is not None and e.getAttribute("type") != iq_type:
            continue
        out.append(e)
    return out


def archive_queries(client):
    return [q for q in sent(client, iq_type="set") if _query(q) is not None]


def _query(iq):
    return next(iq.elements(NS_MAM, "query"), None)


def answer_disco(client, features=(NS_MAM,), jid=OWN, error=None):
    """Answer the pending disco#info request sent to ``jid``."""
    for iq in sent(client, iq_type="get"):
        query = next(iq.elements(NS_DISCO_INFO, "query"), None)
        if query is not None and iq.getAttribute("to") == jid and not getattr(iq, "answered", 0):
            iq.answered = 1
            if error:
                reply(client, iq, error=error)
            else:
                payload = "".join(f"<feature var='{f}'/>" for f in features)
                reply(client, iq, f"<query xmlns='{NS_DISCO_INFO}'>{payload}</query>")
            return iq
    raise AssertionError(f"no disco#info request to {jid}")


def reply(client, iq, payload="", error=None, sender=None):
    sender = sender or iq.getAttribute("to")
    if error:
        body = (
            f"<error type='cancel'><{error} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        )
        kind = "error"
    else:
        body, kind = payload, "result"
    client.receive(
        f"<iq xmlns='jabber:client' type='{kind}' id='{iq['id']}' from='{sender}' to='{FULL}'>"
        f"{body}</iq>"
    )


def query_info(iq):
    """(queryid, form fields, RSMRequest) of an archive query."""
    query = _query(iq)
    fields = {}
    form = next(query.elements("jabber:x:data", "x"), None)
    if form is not None:
        for f in form.elements("jabber:x:data", "field"):
            value = next(f.elements("jabber:x:data", "value"), None)
            fields[f["var"]] = str(value) if value is not None else None
    set_elt = xep_0059_rsm.find_set(query)
    rsm = RSMRequest.parse(set_elt) if set_elt is not None else None
    return query.getAttribute("queryid"), fields, rsm


def stamp(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def result_xml(
    queryid,
    archive_id,
    body,
    *,
    sender=ROMEO + "/orchard",
    to=FULL,
    ts=None,
    archive_from=OWN,
    msg_type="chat",
    extra="",
):
    ts = T0 if ts is None else ts
    from_attr = f" from='{archive_from}'" if archive_from else ""
    to_attr = f" to='{to}'" if to else ""
    return (
        f"<message xmlns='jabber:client' id='{uuid.uuid4().hex}'{from_attr} to='{FULL}'>"
        f"<result xmlns='{NS_MAM}' queryid='{queryid}' id='{archive_id}'>"
        "<forwarded xmlns='urn:xmpp:forward:0'>"
        f"<delay xmlns='urn:xmpp:delay' stamp='{stamp(ts)}'/>"
        f"<message xmlns='jabber:client' from='{sender}'{to_attr} type='{msg_type}'>"
        f"<body>{body}</body>{extra}</message>"
        "</forwarded></result></message>"
    )


def serve_page(client, iq, items, complete, count=None, **kwargs):
    """Send ``items`` ((archive id, body)) as results of ``iq``, then its <fin/>."""
    queryid, _fields, _rsm = query_info(iq)
    for i, (archive_id, body) in enumerate(items):
        client.receive(result_xml(queryid, archive_id, body, ts=T0 + i, **kwargs))
    rsm = RSMResponse(
        first=items[0][0] if items else None,
        last=items[-1][0] if items else None,
        count=count,
    )
    fin = domish.Element((NS_MAM, "fin"))
    if complete:
        fin["complete"] = "true"
    fin.addChild(rsm.to_element())
    reply(client, iq, fin.toXml())


def items(start, stop):
    return [(f"id-{i}", f"message {i}") for i in range(start, stop)]


def fresh_session(host, client):
    """The stream is lost and a new (not resumed) session starts."""
    client.drop()
    client.reconnect()
    client.stub.xmlstream.addObserver("/message", lambda e: host.messages._on_message(client, e))


def start_catch_up(host, client, reread=True, **kwargs):
    """Start a catch-up of our archive (re-reading the resume point the test set up)."""
    mam = host.plugins["XEP-0313"]
    if reread:
        mam.prepare_catch_up(client, None)
    d = run(mam.catch_up(client, None, **kwargs))
    if not mam._archives.get("juliet"):
        answer_disco(client)
    return d


# --- XEP-0059 helper -------------------------------------------------------------------------


def test_rsm_request_elements():
    elt = RSMRequest(max=10, after="abc").to_element()
    assert elt.uri == NS_RSM and elt.name == "set"
    assert [(c.name, str(c)) for c in elt.elements()] == [("max", "10"), ("after", "abc")]
    last_page = RSMRequest(max=5, before="").to_element()
    before = next(c for c in last_page.elements() if c.name == "before")
    assert str(before) == ""
    parsed = RSMRequest.parse(last_page)
    assert (parsed.max, parsed.before, parsed.after) == (5, "", None)
    with pytest.raises(ValueError):
        RSMRequest(after="a", before="b")
    with pytest.raises(ValueError):
        RSMRequest(max=-1)


def test_rsm_response_parsing_is_defensive():
    fin = parseXml(
        f"<fin xmlns='{NS_MAM}'><set xmlns='{NS_RSM}'><first index='0'>a</first>"
        "<last>z</last><count>20</count></set></fin>"
    )
    assert parse_response(fin) == RSMResponse(first="a", first_index=0, last="z", count=20)
    bad = parseXml(
        f"<fin xmlns='{NS_MAM}'><set xmlns='{NS_RSM}'><first index='x'>a</first>"
        "<count>-3</count></set></fin>"
    )
    assert parse_response(bad) == RSMResponse(first="a", first_index=None, last=None, count=None)
    assert parse_response(parseXml(f"<fin xmlns='{NS_MAM}'/>")) is None


def test_datetime_helpers():
    assert xep_0313_mam.parse_datetime("2010-07-10T23:08:25Z") == 1278803305.0
    assert xep_0313_mam.parse_datetime("2010-07-10T23:08:25.5+00:00") == 1278803305.5
    assert xep_0313_mam.parse_datetime("2010-07-11T01:08:25+02:00") == 1278803305.0
    assert xep_0313_mam.parse_datetime("yesterday") is None
    assert xep_0313_mam.parse_datetime("") is None
    assert xep_0313_mam.format_datetime(1278803305.7) == "2010-07-10T23:08:25Z"
    assert xep_0313_mam.format_datetime(1278803305.2, round_up=True) == "2010-07-10T23:08:26Z"


# --- catch-up ---------------------------------------------------------------------------------


def test_catch_up_pages_with_rsm_and_reports_progress():
    host, client, clock = make(config={("xep_0313", "page_size"): 3})
    storage = host.storage
    storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    (q1,) = archive_queries(client)
    assert q1["to"] == OWN and q1["type"] == "set"
    queryid, fields, rsm = query_info(q1)
    assert queryid and fields == {}
    assert (rsm.max, rsm.after, rsm.before) == (3, "id-0", None)
    serve_page(client, q1, items(1, 4), complete=False, count=5)
    # the next page was asked for before this one was stored
    q2 = archive_queries(client)[1]
    assert query_info(q2)[2].after == "id-3"
    assert query_info(q2)[0] != queryid
    serve_page(client, q2, items(4, 6), complete=True)
    stats = result_of(d)
    assert storage.bodies() == [f"message {i}" for i in range(1, 6)]
    assert storage.batches == 2  # one transaction per page
    row = storage.rows[0]
    assert (row["stanza_id"], row["stanza_id_by"]) == ("id-1", OWN)
    assert row["timestamp"] == T0
    assert row["extra"] == {"archived": True}
    assert row["source"] == ROMEO and row["dest"] == OWN and not row["outgoing"]
    assert stats["received"] == 5 and stats["stored"] == 5 and stats["pages"] == 2
    assert stats["complete"] and not stats["first_sync"]
    assert storage.kv[("XEP-0313", OWN, "juliet")] == {
        "last": "id-5",
        "ts": T0 + 1,
        "complete": True,
    }
    bridge = host.bridge
    assert bridge.of("ProgressStarted")[0][:2] == ("juliet", PROGRESS_ID)
    assert [u[2:] for u in bridge.of("ProgressUpdated")] == [(3, 5), (5, -1)]
    ((profile, pid, meta),) = bridge.of("ProgressFinished")
    assert pid == PROGRESS_ID and meta["stored"] == 5
    summaries = bridge.of("MamMessagesNew")
    assert [s[2]["count"] for s in summaries] == [3, 2]
    assert summaries[0][2]["conversations"] == [ROMEO]
    # each new message is announced once (not by the live pipeline: results are consumed)
    announced = bridge.of("MessageNew")
    assert [m[1]["body"] for m in announced] == [f"message {i}" for i in range(1, 6)]
    assert all(m[1]["extra"]["archived"] for m in announced)


def test_big_catch_up_announces_only_summaries_past_the_limit():
    host, client, clock = make(config={("xep_0313", "signal_limit"): 3})
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    serve_page(client, archive_queries(client)[0], items(1, 3), complete=False)
    serve_page(client, archive_queries(client)[1], items(3, 6), complete=True)
    assert result_of(d)["stored"] == 5
    assert [m[1]["body"] for m in host.bridge.of("MessageNew")] == [
        "message 1",
        "message 2",
        "message 3",
    ]
    assert [s[2]["count"] for s in host.bridge.of("MamMessagesNew")] == [2, 3]


def test_hooks_see_archived_messages_with_the_flag():
    host, client, clock = make()
    seen = []

    def hook(client_, elt, data):
        seen.append((elt.name, data["body"], dict(data["extra"])))

    host.hooks.add("message_received", hook)
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    serve_page(client, archive_queries(client)[0], items(1, 3), complete=True)
    result_of(d)
    assert seen == [
        ("message", "message 1", {"archived": True}),
        ("message", "message 2", {"archived": True}),
    ]


def test_a_hook_can_drop_an_archived_message():
    from sat.core.hooks import STOP

    host, client, clock = make()
    host.hooks.add("message_received", lambda c, e, d: STOP if d["body"] == "message 2" else None)
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    serve_page(client, archive_queries(client)[0], items(1, 4), complete=True)
    stats = result_of(d)
    assert host.storage.bodies() == ["message 1", "message 3"]
    assert stats["ignored"] == 1 and stats["stored"] == 2


def test_forged_and_unsolicited_results_are_ignored():
    host, client, clock = make()
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    (q1,) = archive_queries(client)
    queryid = query_info(q1)[0]
    # right queryid, but from someone else than our archive
    client.receive(result_xml(queryid, "evil-1", "forged", archive_from="mallory@evil.example"))
    # from our archive, but for a query we never sent
    client.receive(result_xml("not-ours", "evil-2", "unsolicited"))
    # our own full JID is not the archive either
    client.receive(result_xml(queryid, "evil-3", "full jid", archive_from=FULL))
    serve_page(client, q1, items(1, 2), complete=True)
    stats = result_of(d)
    assert host.storage.bodies() == ["message 1"]
    assert stats["dropped"] == 2 and stats["received"] == 1
    # none of them went through the live pipeline either
    assert [m[1]["body"] for m in host.bridge.of("MessageNew")] == ["message 1"]


def test_results_without_from_are_our_archive():
    host, client, clock = make()
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    serve_page(client, archive_queries(client)[0], items(1, 3), complete=True, archive_from=None)
    assert result_of(d)["stored"] == 2


def test_live_message_during_catch_up_is_stored_once():
    host, client, clock = make()
    processed = []
    host.hooks.add("message_received", lambda c, e, d: processed.append(d["body"]))
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    (q1,) = archive_queries(client)
    # message 2 arrives live (with the archive's stanza-id) before the page is served
    client.receive(
        f"<message xmlns='jabber:client' from='{ROMEO}/orchard' to='{FULL}' type='chat'>"
        "<body>message 2</body>"
        f"<stanza-id xmlns='urn:xmpp:sid:0' by='{OWN}' id='id-2'/></message>"
    )
    assert host.storage.bodies() == ["message 2"]
    assert host.storage.rows[0]["stanza_id"] == "id-2"
    serve_page(client, q1, items(1, 4), complete=True)
    stats = result_of(d)
    assert sorted(host.storage.bodies()) == ["message 1", "message 2", "message 3"]
    assert stats["stored"] == 2 and stats["duplicates"] == 1
    # its archived copy was not run through the hooks again (no second receipt...)
    assert processed.count("message 2") == 1
    # a second catch-up finds nothing new
    d = start_catch_up(host, client)
    q = archive_queries(client)[-1]
    # after the newest stored archive id (by time: the live one here, stamped "now")
    assert query_info(q)[2].after == "id-2"
    serve_page(client, q, [("id-3", "message 3")], complete=True)
    assert result_of(d)["stored"] == 0
    assert len(host.storage.rows) == 3


def test_stanza_id_by_someone_else_is_not_trusted():
    host, client, clock = make()
    d = start_catch_up(host, client, first_sync_days=0)
    serve_page(client, archive_queries(client)[0], [], complete=True)
    result_of(d)
    client.receive(
        f"<message xmlns='jabber:client' from='{ROMEO}/orchard' to='{FULL}' type='chat'>"
        "<body>hi</body>"
        f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROMEO}' id='id-9'/></message>"
    )
    (row,) = host.storage.rows
    assert row["stanza_id"] is None


def test_duplicates_in_archive_not_stored_twice():
    host, client, clock = make()
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": False}
    d = start_catch_up(host, client)
    q1 = archive_queries(client)[0]
    queryid = query_info(q1)[0]
    for archive_id in ("id-1", "id-2", "id-1"):
        client.receive(result_xml(queryid, archive_id, f"body {archive_id}"))
    serve_page(client, q1, [], complete=True)
    stats = result_of(d)
    assert host.storage.bodies() == ["body id-1", "body id-2"]
    assert stats["duplicates"] == 1


def test_own_sent_message_deduplicated_by_origin_id():
    host, client, clock = make()
    host.storage.rows.append(
        {
            "uid": "u1",
            "stanza_id": None,
            "stanza_id_by": None,
            "origin_id": "orig-1",
            "source": OWN,
            "dest": ROMEO,
            "timestamp": 5.0,
            "body": "sent live",
            "type": "chat",
            "extra": {},
        }
    )
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    q1 = archive_queries(client)[0]
    serve_page(
        client,
        q1,
        [("id-1", "sent live")],
        complete=True,
        sender=FULL,
        to=ROMEO,
        extra="<origin-id xmlns='urn:xmpp:sid:0' id='orig-1'/>",
    )
    stats = result_of(d)
    assert stats["duplicates"] == 1 and stats["stored"] == 0
    assert len(host.storage.rows) == 1


def test_stale_after_id_restarts_from_a_time_filter():
    host, client, clock = make()
    host.storage.rows.append(
        {
            "uid": "u0",
            "stanza_id": "gone",
            "stanza_id_by": OWN,
            "origin_id": None,
            "source": ROMEO,
            "dest": OWN,
            "timestamp": 1_700_000_000.0,
            "body": "old",
            "type": "chat",
            "extra": {},
        }
    )
    d = start_catch_up(host, client)
    (q1,) = archive_queries(client)
    assert query_info(q1)[2].after == "gone"
    reply(client, q1, error="item-not-found")
    q2 = archive_queries(client)[1]
    _queryid, fields, rsm = query_info(q2)
    assert rsm.after is None
    assert fields["start"] == stamp(1_700_000_000 - xep_0313_mam.STALE_MARGIN)
    serve_page(client, q2, items(1, 3), complete=True)
    stats = result_of(d)
    assert stats["recovered_stale_id"] and stats["stored"] == 2


def test_transient_page_error_is_retried():
    host, client, clock = make()
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    (q1,) = archive_queries(client)
    reply(client, q1, error="internal-server-error")
    assert len(archive_queries(client)) == 1
    clock.advance(1.0)
    q2 = archive_queries(client)[1]
    assert query_info(q2)[2].after == "id-0"
    serve_page(client, q2, items(1, 2), complete=True)
    stats = result_of(d)
    assert stats["retries"] == 1 and stats["stored"] == 1


def test_page_error_is_reported():
    host, client, clock = make()
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    reply(client, archive_queries(client)[0], error="forbidden")
    err = failure_of(d, errors.PermissionDenied)
    assert "forbidden" in err.message
    ((profile, pid, text),) = host.bridge.of("ProgressError")
    assert pid == PROGRESS_ID and "forbidden" in text


def test_timeout_retried_then_reported():
    host, client, clock = make(config={("xep_0313", "retries"): 1, ("xep_0313", "timeout"): 5.0})
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    clock.advance(5.0)  # first page times out
    clock.advance(1.0)  # retry delay
    assert len(archive_queries(client)) == 2
    clock.advance(5.0)
    failure_of(d, errors.Timeout)
    assert host.bridge.of("ProgressError")


def test_incomplete_catch_up_resumes_where_it_stopped():
    host, client, clock = make(config={("xep_0313", "page_size"): 2})
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    serve_page(client, archive_queries(client)[0], items(1, 3), complete=False)
    q2 = archive_queries(client)[1]
    reply(client, q2, error="forbidden")
    failure_of(d, errors.PermissionDenied)
    assert host.storage.kv[("XEP-0313", OWN, "juliet")]["complete"] is False
    # meanwhile a live message with a newer archive id is stored
    client.receive(
        f"<message xmlns='jabber:client' from='{ROMEO}/orchard' to='{FULL}' type='chat'>"
        f"<body>live</body><stanza-id xmlns='urn:xmpp:sid:0' by='{OWN}' id='id-50'/></message>"
    )
    # next session: it starts after id-2 (the last stored page), not after the live id-50
    fresh_session(host, client)
    d = start_catch_up(host, client, reread=False)
    q = archive_queries(client)[-1]
    assert query_info(q)[2].after == "id-2"
    serve_page(client, q, items(3, 5), complete=True)
    assert result_of(d)["stored"] == 2


def test_first_sync_days_and_last_page_modes():
    host, client, clock = make()
    before = time.time()
    d = start_catch_up(host, client, first_sync_days=2)
    q1 = archive_queries(client)[0]
    _queryid, fields, rsm = query_info(q1)
    since = xep_0313_mam.parse_datetime(fields["start"])
    assert before - 2 * 86400 - 1 <= since <= time.time() - 2 * 86400
    assert rsm.after is None and rsm.before is None
    serve_page(client, q1, items(1, 3), complete=True)
    stats = result_of(d)
    assert stats["first_sync"] and stats["stored"] == 2

    host, client, clock = make()
    d = start_catch_up(host, client, first_sync_days=0)
    q1 = archive_queries(client)[0]
    _queryid, fields, rsm = query_info(q1)
    assert fields == {} and rsm.before == ""  # the last page
    serve_page(client, q1, items(7, 9), complete=False)  # complete or not: one page only
    stats = result_of(d)
    assert stats["pages"] == 1 and host.storage.bodies() == ["message 7", "message 8"]
    assert host.storage.kv[("XEP-0313", OWN, "juliet")]["last"] == "id-8"


def test_groupchat_in_user_archive_skipped_and_include_groupchat_field():
    host, client, clock = make()
    mam = host.plugins["XEP-0313"]
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    mam.prepare_catch_up(client, None)
    d = run(mam.catch_up(client, None))
    answer_disco(client, features=(NS_MAM, xep_0313_mam.NS_MAM_GROUPCHAT_FIELD))
    q1 = archive_queries(client)[0]
    assert query_info(q1)[1] == {"FORM_TYPE": NS_MAM, "include-groupchat": "false"}
    queryid = query_info(q1)[0]
    client.receive(
        result_xml(queryid, "id-1", "in a room", sender=ROOM + "/x", msg_type="groupchat")
    )
    client.receive(result_xml(queryid, "id-2", "not ours", sender=ROMEO, to="someone@else.lit"))
    serve_page(client, q1, items(3, 4), complete=True)
    stats = result_of(d)
    assert host.storage.bodies() == ["message 3"]
    assert stats["ignored"] == 2


def test_room_archive():
    host, client, clock = make()
    mam = host.plugins["XEP-0313"]
    mam.prepare_catch_up(client, ROOM)
    d = run(mam.catch_up(client, ROOM, first_sync_days=1))
    answer_disco(client, jid=ROOM)
    q1 = archive_queries(client)[0]
    assert q1["to"] == ROOM
    queryid = query_info(q1)[0]
    client.receive(
        result_xml(
            queryid,
            "r1",
            "hello room",
            sender=ROOM + "/witch",
            to=None,
            archive_from=ROOM,
            msg_type="groupchat",
        )
    )
    # a room archive may only give the room's messages
    client.receive(result_xml(queryid, "r2", "pm", sender=ROMEO, to=None, archive_from=ROOM))
    # and only the room may send them
    client.receive(
        result_xml(
            queryid,
            "r3",
            "forged",
            sender=ROOM + "/witch",
            to=None,
            archive_from=OWN,
            msg_type="groupchat",
        )
    )
    serve_page(client, q1, [], complete=True, archive_from=ROOM)
    stats = result_of(d)
    (row,) = host.storage.rows
    assert row["body"] == "hello room" and row["stanza_id_by"] == ROOM
    assert row["source"] == ROOM and row["source_resource"] == "witch"
    assert stats["dropped"] == 1 and stats["ignored"] == 1
    assert host.bridge.of("ProgressFinished")[0][1] == f"mam:juliet:{ROOM}"
    # live groupchat messages of a room known to archive get their archive id
    client.receive(
        f"<message xmlns='jabber:client' from='{ROOM}/witch' to='{FULL}' type='groupchat'>"
        f"<body>live</body><stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='r9'/></message>"
    )
    assert host.storage.rows[-1]["stanza_id"] == "r9"


def test_server_without_mam():
    host, client, clock = make()
    mam = host.plugins["XEP-0313"]
    d = run(mam.profile_connected(client))
    answer_disco(client, features=("urn:xmpp:ping",))
    result_of(d)
    assert not archive_queries(client)
    d = run(mam._bridge_catch_up("juliet"))
    failure_of(d, errors.NotFound)
    assert not archive_queries(client)


def test_profile_connected_sends_the_first_query_before_returning():
    host, client, clock = make()
    mam = host.plugins["XEP-0313"]
    d = run(mam.profile_connected(client))
    answer_disco(client)
    # profile_connected returned once the query was on the wire, before the page came back
    result_of(d)
    (q1,) = archive_queries(client)
    serve_page(client, q1, items(1, 2), complete=True)
    assert host.storage.bodies() == ["message 1"]
    # not finished yet: what arrives before our initial presence is available goes to the
    # archive only (offline), so one more page is asked once the presence went out
    assert not host.bridge.of("ProgressFinished")
    presence = domish.Element((None, "presence"))
    assert host.hooks.run_sync("presence_send", client, presence)
    assert len(archive_queries(client)) == 1  # not before the presence itself
    clock.advance(0)
    q2 = archive_queries(client)[1]
    assert query_info(q2)[2].after == "id-1"
    serve_page(client, q2, [("id-2", "arrived before our presence")], complete=True)
    assert host.storage.bodies() == ["message 1", "arrived before our presence"]
    ((_p, _id, meta),) = host.bridge.of("ProgressFinished")
    assert meta["stored"] == 2 and meta["pages"] == 2


def test_no_presence_no_tail_query():
    host, client, clock = make(config={("xep_0313", "timeout"): 10.0})
    mam = host.plugins["XEP-0313"]
    run(mam.profile_connected(client))
    answer_disco(client)
    serve_page(client, archive_queries(client)[0], items(1, 2), complete=True)
    clock.advance(10.0)
    assert len(archive_queries(client)) == 1
    assert host.bridge.of("ProgressFinished")[0][2]["stored"] == 1


def test_resume_point_read_before_live_messages_of_the_session():
    host, client, clock = make()
    # make() attached the handler: the resume point was read at stream set-up
    assert host.storage.log[:2] == ["kv_get", "last"]


def test_bridge_catch_up_and_query():
    host, client, clock = make()
    mam = host.plugins["XEP-0313"]
    assert {"MamCatchUp", "MamQuery"} <= set(host.bridge.methods)
    assert "MamMessagesNew" in host.bridge.signals
    host.storage.rows.append(
        {
            "uid": "u5",
            "stanza_id": "id-5",
            "stanza_id_by": OWN,
            "origin_id": None,
            "source": ROMEO,
            "dest": OWN,
            "timestamp": 1_700_000_100.0,
            "body": "oldest stored",
            "type": "chat",
            "extra": {},
        }
    )
    d = run(mam._bridge_query("juliet", ROMEO, {}, 2))
    answer_disco(client)
    (q1,) = archive_queries(client)
    _queryid, fields, rsm = query_info(q1)
    assert fields == {"FORM_TYPE": NS_MAM, "with": ROMEO}
    assert (rsm.max, rsm.before) == (2, "id-5")
    serve_page(client, q1, items(3, 5), complete=False)
    messages = result_of(d)
    assert [m["body"] for m in messages] == ["message 3", "message 4"]
    assert all(m["extra"]["archived"] for m in messages)
    assert len(host.storage.rows) == 3
    # archives stamp whole seconds: the older page is kept before the stored message
    times = [r["timestamp"] for r in host.storage.rows[1:]]
    assert times[0] < times[1] < 1_700_000_100.0
    # again: nothing stored twice, uids are the stored ones
    d = run(mam._bridge_query("juliet", ROMEO, {"before_id": "id-5"}, 2))
    serve_page(client, archive_queries(client)[-1], items(3, 5), complete=False)
    again = result_of(d)
    assert [m["uid"] for m in again] == [m["uid"] for m in messages]
    assert len(host.storage.rows) == 3
    with pytest.raises(errors.InvalidArgument):
        result_of(run(mam._bridge_query("juliet", ROMEO, {"bogus": 1}, 2)))


def test_disconnection_fails_running_catch_up():
    host, client, clock = make()
    mam = host.plugins["XEP-0313"]
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    mam.profile_disconnected(client)
    failure_of(d, errors.NotConnected)
    assert not mam._queries


# --- with the real storage ---------------------------------------------------------------------


def _msg(uid, **kwargs):
    data = {
        "uid": uid,
        "source": ROMEO,
        "dest": OWN,
        "timestamp": 1000.0,
        "type": "chat",
        "body": uid,
    }
    data.update(kwargs)
    return data


@pytest_twisted.ensureDeferred
async def test_history_add_batch_reports_new_and_duplicates(tmp_path):
    st = Storage(tmp_path / "sat.db")
    await st.initialise()
    try:
        await st.profile_create("juliet")
        await st.history_add("juliet", _msg("a", stanza_id="s1", stanza_id_by=OWN))
        await st.history_add("juliet", _msg("b", origin_id="o1"))
        outcome = await st.history_add_batch(
            "juliet",
            [
                _msg("c", stanza_id="s1", stanza_id_by=OWN),  # same archive id as a
                _msg("d", origin_id="o1"),  # same origin id as b
                _msg("e", stanza_id="s2", stanza_id_by=OWN),
                _msg("f", stanza_id="s2", stanza_id_by=OWN),  # duplicate inside the batch
                _msg("g", stanza_id="s1", stanza_id_by=ROOM),  # another archive: new
            ],
        )
        assert outcome == [("a", False), ("b", False), ("e", True), (None, False), ("g", True)]
        assert await st.history_count("juliet") == 4
        assert await st.history_last_stanza_id("juliet", OWN) == ("s2", 1000.0)
    finally:
        await st.close()


def test_empty_archive_sync_time_is_the_next_start():
    host, client, clock = make()
    before = time.time()
    d = start_catch_up(host, client, first_sync_days=3)
    serve_page(client, archive_queries(client)[0], [], complete=True)
    stats = result_of(d)
    assert stats["first_sync"] and stats["stored"] == 0
    state = host.storage.kv[("XEP-0313", OWN, "juliet")]
    assert state["last"] is None and state["complete"] and state["ts"] >= before
    # offline for longer than the first-sync window: the next catch-up still starts there
    d = start_catch_up(host, client)
    _queryid, fields, rsm = query_info(archive_queries(client)[-1])
    assert fields["start"] == stamp(state["ts"] - xep_0313_mam.STALE_MARGIN)
    assert rsm.after is None
    serve_page(client, archive_queries(client)[-1], items(1, 3), complete=True)
    stats = result_of(d)
    assert not stats["first_sync"] and stats["stored"] == 2
    assert host.storage.kv[("XEP-0313", OWN, "juliet")]["last"] == "id-2"


def test_unstorable_message_does_not_block_the_archive():
    host, client, clock = make()

    def spoil(c, e, d):
        if d["body"] == "message 2":
            d["extra"]["bad"] = object()  # not JSON: the storage refuses it

    host.hooks.add("message_received", spoil)
    real_batch = host.storage.history_add_batch

    async def checking_batch(profile, messages):
        import json

        for m in messages:
            try:
                json.dumps(m["extra"])
            except TypeError:
                raise errors.InvalidArgument("extra is not JSON") from None
        return await real_batch(profile, messages)

    host.storage.history_add_batch = checking_batch
    host.storage.kv[("XEP-0313", OWN, "juliet")] = {"last": "id-0", "ts": 1.0, "complete": True}
    d = start_catch_up(host, client)
    serve_page(client, archive_queries(client)[0], items(1, 4), complete=True)
    stats = result_of(d)
    assert host.storage.bodies() == ["message 1", "message 3"]
    assert stats["stored"] == 2 and stats["ignored"] == 1 and stats["complete"]
