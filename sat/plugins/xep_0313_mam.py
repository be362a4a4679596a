"""XEP-0313: Message Archive Management (``urn:xmpp:mam:2``), paged with XEP-0059.

Catch-up
--------
On every fresh session (``profile_connected``; a XEP-0198 resumption missed
nothing), if our account's archive (disco#info on our bare JID) advertises
``urn:xmpp:mam:2``, the daemon fetches what the archive holds after the last
archived message it knows, page by page, and stores each page in one
transaction: no gap, no duplicate. The same :meth:`MAMPlugin.catch_up` serves a
MUC room's archive (the query goes to the room's JID).

Where a catch-up starts (per profile and archive):

1. if the previous catch-up of that archive was interrupted, after the last page it
   stored (kept under ``kv("XEP-0313", <archive>)``: ``{"last", "ts", "complete"}``);
2. else after the newest stored message of that archive
   (``storage.history_last_stanza_id``: this includes live messages, whose archive id
   comes from the ``<stanza-id/>`` the server adds, see below);
3. else (first run): the messages of the last ``[mam] first_sync_days`` days (a
   per-profile parameter, default 7); ``0`` fetches only the most recent page.

The resume point is read when the stream is set up, before any live message of
the new session can be stored (the storage runs jobs in order), so a message
arriving live during the catch-up cannot move it past the gap. A MUC plugin gets
the same guarantee by calling :meth:`MAMPlugin.prepare_catch_up` before sending
its join presence and :meth:`MAMPlugin.catch_up` once joined.

The first query goes out before ``profile_connected`` returns, so before our
initial presence: servers then do not replay offline messages that the archive
already gives us (XEP-0313 §5.1.1).

Pages ask for ``<max>[xep_0313] page_size</max>`` (the server may return fewer)
and go on with ``<after>last</after>`` until ``<fin complete='true'/>``. The next
page is requested before the current one is processed, so the server prepares
it while we parse and store. A page that fails with a transient error (timeout,
``wait`` errors, internal-server-error...) is asked again up to
``[xep_0313] retries`` times with a growing delay; an ``item-not-found`` on the
``after`` id (it expired from the archive) restarts from a ``start`` time filter
(the time of that message, minus a safety margin: duplicates are dropped);
other errors end the catch-up with ``ProgressError``. A result whose ``stable``
is false is stored but the cursor is not moved past it.

Each result (``<message><result queryid id><forwarded><delay/><message/>``) is
accepted only if its ``from`` is the archive (no ``from`` for our own account)
and its ``queryid`` is the one of a query we have running; others are dropped
with a log line. The inner message is parsed by the same code as live messages
(:func:`sat.core.messages.parse_message`) and goes through the same
``message_received`` hooks with ``data["extra"]["archived"] = True`` (plugins
must not act on the network for those: no receipt, no marker...). Its
``stanza_id``/``stanza_id_by`` are the result id and the archive JID, its
``timestamp`` the archive's ``<delay/>``. Results from the user archive of type
groupchat are skipped (the room's archive is the reference for them), and only
groupchat messages of the room are taken from a room archive.

Live messages: when an archive supports ``mam:2``, the ``<stanza-id by=archive>``
it adds to live messages is its archive id (XEP-0313 §3.5): a ``message_received``
hook copies it to ``stanza_id``/``stanza_id_by`` when no other plugin did, which
is what makes a message received live and again from the archive one row.

Bridge
------
Signals ``ProgressStarted/Updated/Finished/Error`` with the id
``mam:<profile>:<archive>`` (metadata: type "mam", archive; position = results
received, size = the server's RSM count or -1); ``MessageNew`` for the first
``[xep_0313] signal_limit`` new messages of a catch-up (``extra["archived"]``
set: a message that arrived while we were offline is announced as a live one
would have been), and ``MamMessagesNew`` (one per stored page that added
messages, with a summary: after a big catch-up, frontends reload the listed
conversations instead of receiving thousands of signals). Methods ``MamCatchUp``
(manual catch-up, returns the counts) and ``MamQuery`` (fetch a page of older
history on demand, store it and return it; no ``MessageNew`` for those).

Options (``[xep_0313]`` in sat.conf)
------------------------------------
``auto_catch_up`` (bool, true), ``page_size`` (int, 1000), ``retries`` (int, 3),
``timeout`` (float, 120 s per page), ``signal_limit`` (int, 100). Parameter
(per profile, ``ParamSet``): ``mam/first_sync_days`` (int, 7).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from twisted.internet import defer, task
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import iwokkel
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core import (
    errors,
    wokkel_compat,  # noqa: F401  (sat/__init__ loads it before wokkel)
)
from sat.core.messages import parse_jid, parse_message, signal_data
from sat.core.plugin import Plugin
from sat.memory.config import register_option, register_section
from sat.plugins.xep_0059_rsm import RSMRequest, parse_response

log = logging.getLogger(__name__)

NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXTENDED = "urn:xmpp:mam:2#extended"
NS_MAM_GROUPCHAT_FIELD = "urn:xmpp:mam:2#groupchat-field"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_SID = "urn:xmpp:sid:0"
NS_XDATA = "jabber:x:data"
NS_CLIENT = "jabber:client"

KV_NAMESPACE = "XEP-0313"
RESULT_XPATH = f"/message/result[@xmlns='{NS_MAM}']"
#: seconds taken off the time of an expired resume id before asking from that time
STALE_MARGIN = 600.0
#: stanza error conditions worth asking the same page again for
RETRYABLE_CONDITIONS = frozenset(
    {
        "internal-server-error",
        "resource-constraint",
        "remote-server-timeout",
        "service-unavailable-temporarily",
        "unexpected-request",
    }
)
#: seconds between messages moved before a stored one of the same second (see process_page)
ORDER_STEP = 1e-5
#: how many archive ids of live messages are remembered per profile
LIVE_MEMORY = 10_000
#: longest archive id we accept (ids are opaque; this only bounds memory)
MAX_ID_LENGTH = 1024

DEFAULT_PAGE_SIZE = 1000
DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT = 120.0
DEFAULT_FIRST_SYNC_DAYS = 7
DEFAULT_SIGNAL_LIMIT = 100

register_section(
    "xep_0313",
    "Message Archive Management (XEP-0313): catching up with the server's archive after "
    "each connection and fetching older history on demand.",
)
register_option(
    "xep_0313",
    "auto_catch_up",
    "bool",
    True,
    "Catch up with the account's archive on every new connection (not needed after a "
    "stream resumption). Off: only `MamCatchUp` does it.",
)
register_option(
    "xep_0313",
    "page_size",
    "int",
    DEFAULT_PAGE_SIZE,
    "Messages asked for per archive page; the server may send fewer (Prosody's "
    "`max_archive_query_results` defaults to 50).",
    min=1,
    max=10000,
)
register_option(
    "xep_0313",
    "retries",
    "int",
    DEFAULT_RETRIES,
    "How many times an archive page that failed with a transient error is asked again "
    "(after 1, 2, 4... seconds) before the catch-up is reported as failed.",
    min=0,
    max=10,
)
register_option(
    "xep_0313",
    "signal_limit",
    "int",
    DEFAULT_SIGNAL_LIMIT,
    "The first new messages of a catch-up (up to this many) are also announced one by one "
    "with `MessageNew` (their `extra` has `archived`), as if received live; beyond, only "
    "the per-page `MamMessagesNew` summary is sent (a big catch-up would flood frontends).",
    min=0,
)
register_option(
    "xep_0313",
    "timeout",
    "float",
    DEFAULT_TIMEOUT,
    "Seconds to wait for the end of one archive page.",
    min=1,
)


# --- helpers -----------------------------------------------------------------------------


def parse_datetime(text: str | None) -> float | None:
    """Epoch seconds of a XEP-0082 DateTime (``2010-07-10T23:08:25.123Z``), None if invalid."""
    if not text or len(text) > 64:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def format_datetime(timestamp: float, round_up: bool = False) -> str:
    """XEP-0082 DateTime (UTC, whole seconds: floored, or ceiled with ``round_up``)."""
    seconds = math.ceil(timestamp) if round_up else math.floor(timestamp)
    return datetime.fromtimestamp(max(seconds, 0), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _first_child(parent: domish.Element, uri: str, name: str) -> domish.Element | None:
    for child in parent.elements():
        if child.name == name and child.uri == uri:
            return child
    return None


def _bare(value: str | jabber_jid.JID) -> str:
    if isinstance(value, jabber_jid.JID):
        return value.userhost()
    return parse_jid(value).userhost()


def build_query(
    queryid: str,
    fields: dict[str, str] | None = None,
    rsm: RSMRequest | None = None,
) -> domish.Element:
    """A ``<query xmlns='urn:xmpp:mam:2'/>`` with a filter form and an RSM set."""
    query = domish.Element((NS_MAM, "query"))
    query["queryid"] = queryid
    if fields:
        form = query.addElement((NS_XDATA, "x"))
        form["type"] = "submit"
        form_type = form.addElement("field")
        form_type["var"] = "FORM_TYPE"
        form_type["type"] = "hidden"
        form_type.addElement("value", content=NS_MAM)
        for var, value in fields.items():
            field_elt = form.addElement("field")
            field_elt["var"] = var
            field_elt.addElement("value", content=value)
    if rsm is not None:
        query.addChild(rsm.to_element())
    return query


@dataclass
class Page:
    """One answered archive query."""

    results: list[domish.Element]
    complete: bool
    stable: bool = True
    first: str | None = None
    last: str | None = None
    count: int | None = None
    #: results dropped as forged or unsolicited while this query ran
    dropped: int = 0


@dataclass
class _Query:
    profile: str
    queryid: str
    archive: str
    own_archive: bool
    results: list = field(default_factory=list)
    dropped: int = 0
    waiter: defer.Deferred | None = None

    def accepts(self, sender: str | None, own_bare: str) -> bool:
        """XEP-0313 §7.2: a result must come from the queried archive."""
        if sender is None:
            return self.own_archive
        if sender == self.archive:
            return True
        try:
            return parse_jid(sender).full() == self.archive or (
                self.own_archive and sender == own_bare
            )
        except jabber_jid.InvalidFormat:
            return False


@dataclass
class _Start:
    """Where a catch-up starts."""

    after_id: str | None = None
    after_ts: float | None = None
    #: no id known but the archive was synced (empty) at this time: ask from then
    since: float | None = None
    first_sync: bool = False
    resumed_interrupted: bool = False


@dataclass
class _Run:
    """Options of one catch-up."""

    first_sync_days: float | None
    page_size: int
    progress: bool = True
    #: fired once the first query is sent
    started: defer.Deferred | None = None
    #: fired once our initial presence went out (then one more page is asked)
    presence: defer.Deferred | None = None


@dataclass
class CatchUpStats:
    archive: str
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0
    dropped: int = 0
    pages: int = 0
    retries: int = 0
    complete: bool = False
    first_sync: bool = False
    recovered_stale_id: bool = False
    seconds: float = 0.0
    last_id: str = ""

    def as_dict(self) -> dict:
        return {
            "archive": self.archive,
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "ignored": self.ignored,
            "dropped": self.dropped,
            "pages": self.pages,
            "retries": self.retries,
            "complete": self.complete,
            "first_sync": self.first_sync,
            "recovered_stale_id": self.recovered_stale_id,
            "seconds": round(self.seconds, 6),
            "last_id": self.last_id,
        }


class _PageFailed(Exception):
    def __init__(self, error: errors.SatError, retryable: bool):
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable


# --- stream handler ------------------------------------------------------------------------


@implementer(iwokkel.IDisco)
class MAMHandler(XMPPHandler):
    """Catches archive results on each stream; marks fresh sessions."""

    def __init__(self, plugin: MAMPlugin, client):
        super().__init__()
        self.plugin = plugin
        self.client = client

    def connectionInitialized(self):
        # before the generic message observer (priority 0): results are consumed here
        self.xmlstream.addObserver(RESULT_XPATH, self._on_result, 100)
        if not getattr(self.xmlstream, "sm_resumed", False):
            self.plugin.session_started(self.client)

    def _on_result(self, message: domish.Element) -> None:
        message.handled = True
        try:
            self.plugin.on_result(self.client, message)
        except Exception:
            log.exception("[%s] archive result dropped", self.client.profile)

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        return []

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


# --- plugin --------------------------------------------------------------------------------


class MAMPlugin(Plugin):
    name = "XEP-0313"
    label = "Message Archive Management"
    xeps = ("XEP-0313",)
    dependencies = ("XEP-0030", "XEP-0059")
    description = (
        "Catches up with the server's message archive after each connection (1:1 and rooms) "
        "and fetches older history on demand."
    )

    def __init__(self, host):
        super().__init__(host)
        self.auto_catch_up = bool(self.config("xep_0313", "auto_catch_up", True))
        self.page_size = int(self.config("xep_0313", "page_size", DEFAULT_PAGE_SIZE))
        self.retries = int(self.config("xep_0313", "retries", DEFAULT_RETRIES))
        self.timeout = float(self.config("xep_0313", "timeout", DEFAULT_TIMEOUT))
        self.signal_limit = int(self.config("xep_0313", "signal_limit", DEFAULT_SIGNAL_LIMIT))
        #: (profile, queryid) -> running query
        self._queries: dict[tuple[str, str], _Query] = {}
        #: (profile, archive) -> Deferred fired when the running catch-up ends
        self._running: dict[tuple[str, str], defer.Deferred] = {}
        #: (profile, archive) -> Deferred of the resume point read at session/join time
        self._snapshots: dict[tuple[str, str], defer.Deferred] = {}
        #: profile -> {archive supporting mam:2: its disco features} (kept until disconnection)
        self._archives: dict[str, dict[str, frozenset]] = {}
        #: clock for retry delays (tests replace it)
        self.clock = None
        #: profile -> (archive, archive id) of the last live messages (see _on_message_received)
        self._live: dict[str, OrderedDict] = {}
        #: profile -> Deferred fired once our initial presence of the session went out
        self._presence_waiters: dict[str, defer.Deferred] = {}
        host.hooks.add("message_received", self._on_message_received, 1000, namespaces=[NS_SID])
        host.hooks.add("presence_send", self._on_presence_send, -1000)
        self._declare_param()
        self._register_bridge()

    # --- configuration ----------------------------------------------------------

    def _declare_param(self) -> None:
        params = getattr(self.host, "params", None)
        if params is None:
            return
        from sat.memory.params import ParamDef

        params.declare(
            ParamDef(
                "mam",
                "first_sync_days",
                "int",
                DEFAULT_FIRST_SYNC_DAYS,
                "When this profile catches up with a message archive for the first time, "
                "fetch the messages of this many last days; 0: only the most recent page",
                minimum=0,
                maximum=36500,
            )
        )

    async def _first_sync_days(self, profile: str) -> float:
        params = getattr(self.host, "params", None)
        if params is None:
            return DEFAULT_FIRST_SYNC_DAYS
        try:
            return float(await params.get("mam", "first_sync_days", profile))
        except Exception:
            log.exception("[%s] cannot read mam/first_sync_days", profile)
            return DEFAULT_FIRST_SYNC_DAYS

    def _register_bridge(self) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is None or not hasattr(bridge, "add_signal"):
            return
        bridge.add_method(
            "MamCatchUp",
            self._bridge_catch_up,
            args=[("profile", "s", "profile name (empty: the default profile)")],
            out=(
                "a{sv}",
                "archive, received, stored, duplicates, ignored, dropped, pages, retries, "
                "complete, first_sync, recovered_stale_id, seconds, last_id",
            ),
            doc=(
                "Catch up now with the account's message archive (XEP-0313): fetch every "
                "archived message after the last one stored, store the new ones, report the "
                "counts. Progress signals are sent as for the automatic catch-up."
            ),
            interface="plugin",
        )
        bridge.add_method(
            "MamQuery",
            self._bridge_query,
            args=[
                ("profile", "s", "profile name (empty: the default profile)"),
                ("with_jid", "s", "conversation (bare JID of a contact); empty: all"),
                (
                    "filters",
                    "a{sv}",
                    "archive (s: a room's JID; default: the account's archive), before_uid "
                    "(s: a stored message; the page ends before it), before_id / after_id (s: "
                    "archive ids), start / end (d: timestamps). Without a position: the page "
                    "just before the oldest stored message of the conversation.",
                ),
                ("limit", "i", "most messages to fetch (1..1000)"),
            ],
            out=("aa{sv}", "the fetched messages in chronological order, as in HistoryGet"),
            doc=(
                "Fetch one page of archived messages from the server (XEP-0313), e.g. when a "
                "frontend scrolls back past the stored history; they are stored (once) and "
                "returned."
            ),
            interface="plugin",
        )
        bridge.add_signal(
            "MamMessagesNew",
            args=[
                ("profile", "s", "profile name"),
                ("archive", "s", "JID of the archive (the account, or a room)"),
                (
                    "summary",
                    "a{sv}",
                    "count (i), conversations (as: bare JIDs), first_uid, last_uid, "
                    "first_timestamp, last_timestamp",
                ),
            ],
            doc=(
                "Messages fetched from an archive were stored (one signal per page, instead "
                "of one MessageNew per message): frontends reload these conversations."
            ),
            interface="plugin",
        )

    # --- per profile --------------------------------------------------------------

    def get_handler(self, client):
        return MAMHandler(self, client)

    @property
    def _disco(self):
        return self.host.plugins["XEP-0030"]

    def _clock(self):
        if self.clock is not None:
            return self.clock
        from twisted.internet import reactor

        return reactor

    def session_started(self, client) -> None:
        """A fresh (not resumed) stream: drop what belonged to the old one, snapshot the resume
        point of our own archive before any live message of this session is stored."""
        profile = client.profile
        # what we know of archives' support is kept: the live stanza-id hook needs it from
        # the first message of the session, before any disco answer
        for key, query in list(self._queries.items()):
            if key[0] == profile:
                self._abort(query, errors.NotConnected("the connection was lost"))
        for key in [k for k in self._snapshots if k[0] == profile]:
            self._snapshots.pop(key).addErrback(lambda _f: None)
        self.prepare_catch_up(client, None)

    async def profile_connected(self, client) -> None:
        if not self.auto_catch_up:
            return
        own = client.jid.userhost()
        try:
            supported = await self.archive_supported(client, own)
        except errors.SatError as e:
            log.warning("[%s] cannot tell whether the server has an archive: %s", client.profile, e)
            return
        if not supported:
            log.info("[%s] the server offers no message archive (XEP-0313)", client.profile)
            return
        started = defer.Deferred()
        presence = defer.Deferred()
        old = self._presence_waiters.pop(client.profile, None)
        if old is not None and not old.called:
            old.callback(False)
        self._presence_waiters[client.profile] = presence
        d = defer.ensureDeferred(self.catch_up(client, own, _started=started, _presence=presence))
        d.addErrback(
            lambda f: log.warning(
                "[%s] archive catch-up failed: %s", client.profile, getattr(f.value, "message", f)
            )
        )
        # the first query is on the wire before our initial presence goes out
        await started

    def _on_presence_send(self, client, elt: domish.Element):
        """Our initial presence is going out: fire the waiter once it is on the wire."""
        waiter = self._presence_waiters.get(client.profile)
        if waiter is None or elt.getAttribute("to") or elt.getAttribute("type"):
            return None

        def sent():
            if self._presence_waiters.get(client.profile) is waiter:
                del self._presence_waiters[client.profile]
            if not waiter.called:
                waiter.callback(True)

        # the hook runs before the stanza is sent: fire after it
        self._clock().callLater(0, sent)
        return None

    async def _until_presence(self, client, waiter: defer.Deferred) -> bool:
        """Wait (at most ``timeout``) until our initial presence is sent; False if it was not."""
        timer = self._clock().callLater(
            self.timeout, lambda: waiter.called or waiter.callback(False)
        )
        try:
            return bool(await waiter)
        finally:
            if timer.active():
                timer.cancel()

    def profile_disconnected(self, client) -> None:
        profile = client.profile
        self._live.pop(profile, None)
        waiter = self._presence_waiters.pop(profile, None)
        if waiter is not None and not waiter.called:
            waiter.callback(False)
        self._archives.pop(profile, None)
        for key, query in list(self._queries.items()):
            if key[0] == profile:
                self._abort(query, errors.NotConnected("the profile was disconnected"))
        for key in [k for k in self._snapshots if k[0] == profile]:
            self._snapshots.pop(key).addErrback(lambda _f: None)

    # --- support -------------------------------------------------------------------

    async def archive_supported(self, client, archive: str | None = None) -> bool:
        """True if ``archive`` (None: our account; else e.g. a room) advertises
        ``urn:xmpp:mam:2`` (disco#info; remembered for the profile's life)."""
        return NS_MAM in await self._archive_features(client, self._archive_of(client, archive))

    async def _archive_features(self, client, archive: str) -> frozenset:
        known = self._archives.setdefault(client.profile, {})
        if archive in known:
            return known[archive]
        try:
            info = await self._disco.info(client, jabber_jid.JID(archive))
        except errors.SatError as e:
            if "condition" in e.details:  # an error answer: no archive there
                return frozenset()
            raise
        features = frozenset(info.features)
        if NS_MAM in features:
            self._archives.setdefault(client.profile, {})[archive] = features
        return features

    def _archive_of(self, client, archive) -> str:
        if archive is None or archive == "":
            return client.jid.userhost()
        try:
            return _bare(archive)
        except jabber_jid.InvalidFormat:
            raise errors.InvalidArgument(f"{archive!r} is not a valid JID") from None

    # --- live messages ------------------------------------------------------------

    def _on_message_received(self, client, elt: domish.Element, data: dict):
        """Give live messages their archive id (XEP-0313 §3.5) when no plugin did, and
        remember it: the same message met again in an archive page is left to the live
        pipeline (which also ran the hooks' side effects: receipts, corrections...)."""
        if data["extra"].get("archived"):
            return None
        known = self._archives.get(client.profile)
        if not known:
            return None
        if data.get("stanza_id") is not None:
            if data.get("stanza_id_by") in known:
                self._seen_live(client.profile, data["stanza_id_by"], data["stanza_id"])
            return None
        if data["type"] == "groupchat":
            expected = data["source"]
        else:
            expected = client.jid.userhost()
        if expected not in known:
            return None
        for child in elt.elements():
            if (
                child.name == "stanza-id"
                and child.uri == NS_SID
                and child.getAttribute("by") == expected
            ):
                stanza_id = child.getAttribute("id")
                if stanza_id and len(stanza_id) <= MAX_ID_LENGTH:
                    data["stanza_id"] = stanza_id
                    data["stanza_id_by"] = expected
                    self._seen_live(client.profile, expected, stanza_id)
                break
        return None

    def _seen_live(self, profile: str, archive: str, stanza_id: str) -> None:
        seen = self._live.setdefault(profile, OrderedDict())
        seen[(archive, stanza_id)] = None
        if len(seen) > LIVE_MEMORY:
            seen.popitem(last=False)

    # --- results --------------------------------------------------------------------

    def on_result(self, client, message: domish.Element) -> None:
        """A ``<message><result xmlns='urn:xmpp:mam:2'/></message>`` arrived."""
        result = _first_child(message, NS_MAM, "result")
        if result is None:
            return
        queryid = result.getAttribute("queryid")
        query = self._queries.get((client.profile, queryid)) if queryid else None
        sender = message.getAttribute("from")
        if query is None:
            log.warning(
                "[%s] unsolicited archive result from %s (queryid %r) ignored",
                client.profile,
                sender,
                queryid,
            )
            return
        if not query.accepts(sender, client.jid.userhost()):
            query.dropped += 1
            log.warning(
                "[%s] archive result from %s for a query sent to %s ignored (forged?)",
                client.profile,
                sender,
                query.archive,
            )
            return
        query.results.append(result)

    def _abort(self, query: _Query, error: errors.SatError) -> None:
        self._queries.pop((query.profile, query.queryid), None)
        waiter = query.waiter
        if waiter is not None and not waiter.called:
            waiter.errback(error)

    def send_query(
        self,
        client,
        archive: str,
        fields: dict[str, str] | None = None,
        rsm: RSMRequest | None = None,
    ) -> defer.Deferred:
        """Send one archive query; a Deferred of its :class:`Page`.

        Failures are :class:`_PageFailed` wrapping a SatError (``retryable`` tells
        whether asking again may help).
        """
        queryid = uuid.uuid4().hex[:16]
        own_archive = archive == client.jid.userhost()
        query = _Query(client.profile, queryid, archive, own_archive)
        waiter = defer.Deferred()
        query.waiter = waiter
        self._queries[(client.profile, queryid)] = query
        elt = build_query(queryid, fields, rsm)
        d = defer.ensureDeferred(
            self._disco.send_iq(
                client,
                jabber_jid.JID(archive),
                elt,
                what="archive query",
                timeout=self.timeout,
                iq_type="set",
            )
        )

        def answered(iq):
            self._queries.pop((client.profile, queryid), None)
            if waiter.called:
                return
            fin = _first_child(iq, NS_MAM, "fin")
            if fin is None:
                waiter.errback(
                    _PageFailed(
                        errors.SatError(f"the archive {archive} answered without <fin/>"),
                        retryable=False,
                    )
                )
                return
            rsm_answer = parse_response(fin)
            page = Page(
                results=query.results,
                complete=fin.getAttribute("complete") in ("true", "1"),
                stable=fin.getAttribute("stable") not in ("false", "0"),
                dropped=query.dropped,
            )
            if rsm_answer is not None:
                page.first = rsm_answer.first
                page.last = rsm_answer.last
                page.count = rsm_answer.count
            waiter.callback(page)

        def failed(f):
            self._queries.pop((client.profile, queryid), None)
            if waiter.called:
                return
            err = f.value
            if not isinstance(err, errors.SatError):
                err = errors.SatError(f"archive query to {archive} failed: {err}")
            condition = err.details.get("condition")
            retryable = (
                isinstance(err, errors.Timeout)
                or condition in RETRYABLE_CONDITIONS
                or (condition is None and not isinstance(err, errors.NotConnected))
            )
            waiter.errback(_PageFailed(err, retryable))

        d.addCallbacks(answered, failed)
        return waiter

    def _parse_result(
        self, client, archive: str, own_archive: bool, result: domish.Element, now: float
    ) -> tuple[str | None, domish.Element | None, dict | None]:
        """(archive id, inner message, data) of one result; data None if it is not kept."""
        archive_id = result.getAttribute("id")
        if not archive_id or len(archive_id) > MAX_ID_LENGTH:
            return None, None, None
        forwarded = _first_child(result, NS_FORWARD, "forwarded")
        if forwarded is None:
            return archive_id, None, None
        inner = delay = None
        for child in forwarded.elements():
            if child.name == "message" and child.uri in (NS_CLIENT, None):
                inner = child
            elif child.name == "delay" and child.uri == NS_DELAY:
                delay = child
        if inner is None or inner.getAttribute("type") == "error":
            return archive_id, None, None
        try:
            data = parse_message(inner, client.jid)
        except (ValueError, jabber_jid.InvalidFormat) as e:
            log.info("[%s] archived message %s ignored: %s", client.profile, archive_id, e)
            return archive_id, None, None
        own = client.jid.userhost()
        if own_archive:
            if data["type"] == "groupchat":
                return archive_id, None, None  # the room's archive is the reference
            if own not in (data["source"], data["dest"]):
                log.info(
                    "[%s] archived message %s neither from nor to us: ignored",
                    client.profile,
                    archive_id,
                )
                return archive_id, None, None
        elif data["type"] != "groupchat" or data["source"] != archive:
            log.info(
                "[%s] message %s of %s's archive is not from the room: ignored",
                client.profile,
                archive_id,
                archive,
            )
            return archive_id, None, None
        stamp = parse_datetime(delay.getAttribute("stamp")) if delay is not None else None
        data["timestamp"] = now if stamp is None else stamp
        data["received_timestamp"] = now
        data["stanza_id"] = archive_id
        data["stanza_id_by"] = archive
        data["extra"]["archived"] = True
        return archive_id, inner, data

    async def process_page(
        self,
        client,
        archive: str,
        page: Page,
        stats: CatchUpStats | None = None,
        before_ts: float | None = None,
        skip_live: bool = False,
    ) -> tuple[list[dict], list[dict], str | None, float | None]:
        """Parse, run the hooks on and store one page.

        ``before_ts`` is the time of the stored message the page comes before (scrolling
        back): archives stamp whole seconds, so messages of the page stamped at or after it
        are moved just before it, keeping the history in the archive's order. With
        ``skip_live``, results already received live in this session are left out.

        Returns (kept messages with their stored uid, the new ones, last archive id, its
        timestamp).
        """
        profile = client.profile
        own_archive = archive == client.jid.userhost()
        messages = self.host.messages
        now = time.time()
        kept: list[dict] = []
        last_id = None
        last_ts = None
        ignored = 0
        live = self._live.get(profile) if skip_live else None
        live_duplicates = 0
        for result in page.results:
            if live:
                result_id = result.getAttribute("id")
                if (archive, result_id) in live:
                    # received live in this session: the live pipeline stores it
                    last_id = result_id
                    live_duplicates += 1
                    continue
            archive_id, inner, data = self._parse_result(client, archive, own_archive, result, now)
            if archive_id is not None:
                last_id = archive_id
            if data is None:
                ignored += 1
                continue
            timestamp = data["timestamp"]
            last_ts = timestamp
            keep = messages.run_received_hooks(client, inner, data)
            if keep is not True and keep is not False:
                keep = await keep  # a hook had to wait (the usual case has no coroutine)
            if not keep:
                ignored += 1
                continue
            # the archive is the authority for these
            data["stanza_id"] = archive_id
            data["stanza_id_by"] = archive
            data["timestamp"] = timestamp
            data["extra"]["archived"] = True
            if data["origin_id"] is None:
                origin = _first_child(inner, NS_SID, "origin-id")
                if origin is not None:
                    origin_id = origin.getAttribute("id")
                    if origin_id and len(origin_id) <= MAX_ID_LENGTH:
                        data["origin_id"] = origin_id
            kept.append(data)
        if before_ts is not None:
            limit = before_ts
            for data in reversed(kept):
                if data["timestamp"] >= limit:
                    data["timestamp"] = limit - ORDER_STEP
                limit = data["timestamp"]
        new: list[dict] = []
        if kept:
            storage = self.host.storage
            try:
                outcome = await storage.history_add_batch(profile, kept)
            except errors.InvalidArgument as e:
                # a message a hook made unstorable must not block the archive forever:
                # store the others one by one (still one transaction each), drop it
                log.warning("[%s] page of %s stored message by message: %s", profile, archive, e)
                outcome, good = [], []
                for data in kept:
                    try:
                        outcome.extend(await storage.history_add_batch(profile, [data]))
                        good.append(data)
                    except errors.InvalidArgument as e2:
                        ignored += 1
                        log.warning("[%s] archived message dropped: %s", profile, e2)
                kept = good
            for data, (uid, is_new) in zip(kept, outcome, strict=True):
                if is_new:
                    new.append(data)
                elif uid is not None:
                    data["uid"] = uid
        if stats is not None:
            stats.received += len(page.results)
            stats.ignored += ignored
            stats.dropped += page.dropped
            stats.stored += len(new)
            stats.duplicates += len(kept) - len(new) + live_duplicates
            stats.pages += 1
        if new:
            self._signal_new(profile, archive, new)
        return kept, new, last_id, last_ts

    def _signal_new(self, profile: str, archive: str, new: list[dict]) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is None or not hasattr(bridge, "emit"):
            return
        conversations = []
        seen = set()
        for data in new:
            other = data["dest"] if data["outgoing"] else data["source"]
            if other not in seen:
                seen.add(other)
                conversations.append(other)
        timestamps = [d["timestamp"] for d in new]
        bridge.emit(
            "MamMessagesNew",
            profile,
            archive,
            {
                "count": len(new),
                "conversations": conversations,
                "first_uid": new[0]["uid"],
                "last_uid": new[-1]["uid"],
                "first_timestamp": float(min(timestamps)),
                "last_timestamp": float(max(timestamps)),
            },
        )

    # --- catch-up -------------------------------------------------------------------

    def prepare_catch_up(self, client, archive_jid=None) -> None:
        """Read now where the next catch-up of ``archive_jid`` (None: our account) starts.

        Call it before anything from that archive can arrive live (a MUC plugin: before
        sending the join presence), so live messages stored meanwhile cannot hide a gap.
        The storage runs jobs in order: the read happens before their storing.
        """
        archive = self._archive_of(client, archive_jid)
        key = (client.profile, archive)
        old = self._snapshots.pop(key, None)
        if old is not None:
            old.addErrback(lambda _f: None)
        self._snapshots[key] = self._read_start(client.profile, archive)

    def _read_start(self, profile: str, archive: str) -> defer.Deferred:
        storage = self.host.storage
        # both reads are queued now, in this order (see prepare_catch_up)
        d_state = defer.ensureDeferred(storage.kv_get(KV_NAMESPACE, archive, None, profile))
        d_last = defer.ensureDeferred(storage.history_last_stanza_id(profile, archive))

        async def combine():
            state = await d_state
            last = await d_last
            if not isinstance(state, dict):
                state = None
            if state and not state.get("complete") and state.get("last"):
                return _Start(state["last"], state.get("ts"), resumed_interrupted=True)
            if last is not None:
                return _Start(last[0], last[1])
            if state and state.get("last"):
                return _Start(state["last"], state.get("ts"))
            if state and state.get("complete") and isinstance(state.get("ts"), int | float):
                return _Start(since=float(state["ts"]))
            return _Start(first_sync=True)

        return defer.ensureDeferred(combine())

    async def catch_up(
        self,
        client,
        archive_jid=None,
        *,
        first_sync_days: float | None = None,
        page_size: int | None = None,
        progress: bool = True,
        _started: defer.Deferred | None = None,
        _presence: defer.Deferred | None = None,
    ) -> dict:
        """Fetch and store what ``archive_jid`` (None: our account; else e.g. a room) archived
        after the last message we have of it; return the counts (:class:`CatchUpStats`).

        Runs of the same archive are serialised. Raises NotFound if the archive does not
        support MAM, SatError (with ProgressError sent) if a page fails for good.
        """
        archive = self._archive_of(client, archive_jid)
        key = (client.profile, archive)
        previous = self._running.get(key)
        done = defer.Deferred()
        self._running[key] = done
        try:
            if previous is not None:
                await previous
            return await self._catch_up(
                client,
                archive,
                _Run(first_sync_days, page_size or self.page_size, progress, _started, _presence),
            )
        finally:
            if self._running.get(key) is done:
                del self._running[key]
            done.callback(None)
            if _started is not None and not _started.called:
                _started.callback(None)

    async def _catch_up(self, client, archive: str, run: _Run):
        profile = client.profile
        progress = run.progress
        t0 = time.monotonic()
        snapshot = self._snapshots.pop((profile, archive), None)
        if not await self.archive_supported(client, archive):
            if snapshot is not None:
                snapshot.addErrback(lambda _f: None)
            raise errors.NotFound(f"{archive} offers no message archive (XEP-0313)")
        start = await (snapshot if snapshot is not None else self._read_start(profile, archive))
        stats = CatchUpStats(archive=archive, first_sync=start.first_sync)
        progress_id = f"mam:{profile}:{archive}"
        if progress:
            self._emit(
                "ProgressStarted",
                profile,
                progress_id,
                {
                    "type": "mam",
                    "archive": archive,
                    "first_sync": start.first_sync,
                    "resumed": start.resumed_interrupted,
                },
            )
        try:
            await self._run_pages(client, archive, start, stats, progress_id, run)
        except _PageFailed as e:
            stats.seconds = time.monotonic() - t0
            if progress:
                self._emit("ProgressError", profile, progress_id, e.error.message)
            raise e.error from None
        except Exception as e:
            stats.seconds = time.monotonic() - t0
            if progress:
                self._emit(
                    "ProgressError", profile, progress_id, getattr(e, "message", None) or str(e)
                )
            raise
        stats.seconds = time.monotonic() - t0
        log.info(
            "[%s] caught up with %s: %d received, %d new, %d duplicates in %d page(s), %.3f s",
            profile,
            archive,
            stats.received,
            stats.stored,
            stats.duplicates,
            stats.pages,
            stats.seconds,
        )
        result = stats.as_dict()
        if progress:
            self._emit("ProgressFinished", profile, progress_id, result)
        return result

    async def _run_pages(
        self, client, archive: str, start: _Start, stats: CatchUpStats, progress_id: str, run: _Run
    ) -> None:
        profile = client.profile
        storage = self.host.storage
        page_size = run.page_size
        first_sync_days = run.first_sync_days
        progress = run.progress
        started = run.started
        presence = run.presence
        fields: dict[str, str] = {}
        last_page_only = False
        after = start.after_id
        if start.first_sync:
            days = (
                await self._first_sync_days(profile) if first_sync_days is None else first_sync_days
            )
            if days <= 0:
                last_page_only = True
            else:
                fields["start"] = format_datetime(time.time() - days * 86400)
        elif start.after_id is None and start.since is not None:
            # synced before while the archive had nothing for us: everything since then
            fields["start"] = format_datetime(start.since - STALE_MARGIN)
        own_archive = archive == client.jid.userhost()
        if own_archive and NS_MAM_GROUPCHAT_FIELD in await self._archive_features(client, archive):
            # rooms are caught up from their own archive
            fields["include-groupchat"] = "false"

        def ask(after_id: str | None) -> defer.Deferred:
            rsm = RSMRequest(max=page_size, after=after_id, before="" if last_page_only else None)
            d = self.send_query(client, archive, dict(fields), rsm)
            if started is not None and not started.called:
                started.callback(None)
            return d

        attempts = 0
        recovered = False
        # the cursor saved after each stored page; not moved past unstable results
        cursor_id, cursor_ts = start.after_id, start.after_ts
        stable_so_far = True
        asked_at = time.time()
        pending = ask(after)
        try:
            while True:
                waited = time.monotonic()
                try:
                    page = await pending
                except _PageFailed as e:
                    pending = None
                    condition = e.error.details.get("condition")
                    if condition == "item-not-found" and after is not None and not recovered:
                        recovered = True
                        stats.recovered_stale_id = True
                        since = (start.after_ts or time.time()) - STALE_MARGIN
                        log.info(
                            "[%s] archive id %s of %s expired: asking from %s",
                            profile,
                            after,
                            archive,
                            format_datetime(since),
                        )
                        fields["start"] = format_datetime(since)
                        after = None
                        pending = ask(None)
                        continue
                    if not e.retryable or attempts >= self.retries:
                        raise
                    delay = 2.0**attempts
                    attempts += 1
                    stats.retries += 1
                    log.info(
                        "[%s] archive page of %s failed (%s), asking again in %.0f s",
                        profile,
                        archive,
                        e.error.message,
                        delay,
                    )
                    await task.deferLater(self._clock(), delay, lambda: None)
                    pending = ask(after)
                    continue
                pending = None
                attempts = 0
                next_after = page.last or (
                    page.results[-1].getAttribute("id") if page.results else None
                )
                complete = (
                    page.complete
                    or last_page_only
                    or not page.results
                    or next_after is None
                    or next_after == after
                )
                if not page.complete and not complete:
                    after = next_after
                    pending = ask(after)  # the server prepares it while we store this one
                elif not page.complete and page.results and not last_page_only:
                    log.warning(
                        "[%s] archive %s does not move on after %s: stopping",
                        profile,
                        archive,
                        after,
                    )
                t_page = time.monotonic()
                signalled = stats.stored
                _kept, new, last_id, last_ts = await self.process_page(
                    client, archive, page, stats, skip_live=True
                )
                if signalled < self.signal_limit:
                    for data in new[: self.signal_limit - signalled]:
                        self._emit("MessageNew", profile, signal_data(data))
                log.debug(
                    "[%s] archive page %d of %s: %d results, waited %.3f s, stored in %.3f s",
                    profile,
                    stats.pages,
                    archive,
                    len(page.results),
                    t_page - waited,
                    time.monotonic() - t_page,
                )
                if not page.stable:
                    stable_so_far = False
                if stable_so_far and next_after is not None:
                    cursor_id = next_after
                    if last_ts is not None:
                        cursor_ts = last_ts
                    stats.last_id = cursor_id
                if cursor_id is None and complete and stable_so_far:
                    # nothing in the archive for us yet: remember when it was synced, so
                    # the next catch-up asks from then (not from the first-sync window)
                    await storage.kv_set(
                        KV_NAMESPACE,
                        archive,
                        {"last": None, "ts": asked_at, "complete": True},
                        profile,
                    )
                elif cursor_id is not None:
                    await storage.kv_set(
                        KV_NAMESPACE,
                        archive,
                        {
                            "last": cursor_id,
                            "ts": cursor_ts,
                            "complete": bool(complete and stable_so_far),
                        },
                        profile,
                    )
                if progress:
                    size = page.count if page.count is not None else -1
                    if size < stats.received:
                        size = -1
                    self._emit("ProgressUpdated", profile, progress_id, stats.received, size)
                if complete and presence is not None and stable_so_far:
                    # messages archived after the server answered the first query but
                    # before our initial presence is available were neither delivered
                    # live nor in these pages: one more look once the presence is out
                    waiting, presence = presence, None
                    if await self._until_presence(client, waiting):
                        last_page_only = False
                        after = cursor_id
                        pending = ask(after)
                        continue
                if complete:
                    stats.complete = stable_so_far
                    return
        finally:
            if pending is not None:
                pending.addErrback(lambda _f: None)

    def _emit(self, name: str, *args) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is None or not hasattr(bridge, "emit"):
            return
        try:
            bridge.emit(name, *args)
        except Exception:
            log.exception("cannot emit %s", name)

    # --- on-demand history ----------------------------------------------------------

    async def query_history(
        self,
        client,
        with_jid: str | None = None,
        *,
        archive_jid: str | None = None,
        limit: int = 50,
        before_uid: str | None = None,
        before_id: str | None = None,
        after_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> list[dict]:
        """Fetch one page of an archive, store the new messages, return all of the page.

        Without ``before_uid``/``before_id``/``after_id``/``start``/``end``, the page is the
        one just before the oldest stored message of the conversation (scrolling back).
        """
        archive = self._archive_of(client, archive_jid)
        if not 1 <= limit <= 1000:
            raise errors.InvalidArgument("limit must be within 1..1000")
        if not await self.archive_supported(client, archive):
            raise errors.NotFound(f"{archive} offers no message archive (XEP-0313)")
        profile = client.profile
        storage = self.host.storage
        fields: dict[str, str] = {}
        if with_jid:
            with_bare = self._archive_of(client, with_jid)
            if with_bare != archive:
                fields["with"] = with_bare
        else:
            with_bare = None
        rsm_before: str | None = None
        rsm_after: str | None = None
        fallback_end: float | None = None
        #: time of the stored message the page comes before (keeps the order, see process_page)
        anchor_ts: float | None = None
        if before_uid is not None:
            stored = await storage.history_find(profile, uid=before_uid)
            if stored is None:
                raise errors.NotFound(f"no stored message with uid {before_uid!r}")
            if stored["stanza_id"] and stored["stanza_id_by"] == archive:
                rsm_before = stored["stanza_id"]
            fallback_end = anchor_ts = stored["timestamp"]
        elif before_id is not None:
            rsm_before = before_id
            stored = await storage.history_find(profile, stanza_id=before_id, stanza_id_by=archive)
            if stored is not None:
                anchor_ts = stored["timestamp"]
        elif after_id is not None:
            rsm_after = after_id
        elif start is None and end is None:
            oldest = await storage.history_get(profile, with_bare, limit=1, after=0.0)
            if oldest:
                row = oldest[0]
                anchor_ts = row["timestamp"]
                if row["stanza_id"] and row["stanza_id_by"] == archive:
                    rsm_before = row["stanza_id"]
                else:
                    fallback_end = row["timestamp"]
        if start is not None:
            fields["start"] = format_datetime(start)
        if end is not None:
            fields["end"] = format_datetime(end, round_up=True)
        if rsm_before is None and rsm_after is None:
            if fallback_end is not None and "end" not in fields:
                fields["end"] = format_datetime(fallback_end, round_up=True)
            rsm = RSMRequest(max=limit, before="" if start is None else None)
        elif rsm_before is not None:
            rsm = RSMRequest(max=limit, before=rsm_before)
        else:
            rsm = RSMRequest(max=limit, after=rsm_after)
        try:
            page = await self.send_query(client, archive, fields, rsm)
        except _PageFailed as e:
            if (
                e.error.details.get("condition") == "item-not-found"
                and rsm_before is not None
                and fallback_end is not None
            ):
                fields["end"] = format_datetime(fallback_end, round_up=True)
                try:
                    page = await self.send_query(
                        client, archive, fields, RSMRequest(max=limit, before="")
                    )
                except _PageFailed as e2:
                    raise e2.error from None
            else:
                raise e.error from None
        kept, _new, _last, _ts = await self.process_page(client, archive, page, before_ts=anchor_ts)
        kept.sort(key=lambda d: d["timestamp"])
        return [signal_data(d) for d in kept]

    # --- bridge -----------------------------------------------------------------------

    async def _bridge_catch_up(self, profile: str) -> dict:
        client = self.host.get_client(await self.resolve_profile(profile))
        return await self.catch_up(client, None)

    async def _bridge_query(self, profile: str, with_jid: str, filters: dict, limit: int):
        client = self.host.get_client(await self.resolve_profile(profile))
        filters = dict(filters or {})
        allowed = {"archive", "before_uid", "before_id", "after_id", "start", "end"}
        unknown = set(filters) - allowed
        if unknown:
            raise errors.InvalidArgument(f"unknown MAM filters: {', '.join(sorted(unknown))}")
        for name in ("archive", "before_uid", "before_id", "after_id"):
            if name in filters and not isinstance(filters[name], str):
                raise errors.InvalidArgument(f"filter {name} must be a string")
        for name in ("start", "end"):
            if name in filters:
                value = filters[name]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise errors.InvalidArgument(f"filter {name} must be a timestamp")
                filters[name] = float(value)
        archive = filters.pop("archive", None) or None
        return await self.query_history(
            client, with_jid or None, archive_jid=archive, limit=limit, **filters
        )


PLUGIN = MAMPlugin
