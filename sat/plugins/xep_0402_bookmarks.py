"""XEP-0402: PEP Native Bookmarks, with XEP-0048/XEP-0049 compatibility.

Where bookmarks are kept (decided on each fresh session):

* the account announces ``urn:xmpp:bookmarks:1#compat``: one item per room (id = the
  room's bare JID) in the private PEP node ``urn:xmpp:bookmarks:1``, published with
  the publish-options of XEP-0402 (persist_items, max_items=max,
  send_last_published_item=never, access_model=whitelist); the server keeps older
  clients (XEP-0048) in sync;
* otherwise XEP-0048 (plugin ``XEP-0048``): the ``storage:bookmarks`` item of the
  private PEP node (XEP-0223) when the account has PEP with publish-options, else
  XEP-0049 private XML storage.

On connection the list is read and the rooms marked ``autojoin`` are joined (with
the bookmark's nick, or the account's user name, and password). PEP notifications
(``urn:xmpp:bookmarks:1+notify`` and ``storage:bookmarks+notify`` are announced) keep
the list in sync with the user's other clients, as XEP-0402 says: a bookmark whose
``autojoin`` becomes true has its room joined; one whose ``autojoin`` becomes false,
or which is retracted, has its room left (if it was joined because of it).
Notifications are only accepted from our own account.

Unknown ``<extensions/>`` content of a XEP-0402 bookmark is kept when we change it.
Passwords never leave the daemon: ``BookmarksList`` only says ``has_password``.

Bridge: ``BookmarksList(profile) -> aa{sv}``, ``BookmarkSet(profile, room, name, nick,
autojoin, password)``, ``BookmarkRemove(profile, room)``; signals ``BookmarkUpdate``,
``BookmarkRemoved``.
"""

from __future__ import annotations

import logging

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import disco, iwokkel
from wokkel.generic import parseXml
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core import (
    errors,
    wokkel_compat,  # noqa: F401  (sat/__init__ loads it before wokkel)
)
from sat.core.plugin import Plugin

log = logging.getLogger(__name__)

NS_BOOKMARKS2 = "urn:xmpp:bookmarks:1"
NS_BOOKMARKS_LEGACY = "storage:bookmarks"
FEATURE_COMPAT = NS_BOOKMARKS2 + "#compat"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
PUBLISH_OPTIONS = {
    "pubsub#max_items": "max",
    "pubsub#send_last_published_item": "never",
}
MAX_TEXT = 1_000
MAX_BOOKMARKS = 10_000


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true")


def parse_conference(room: str, elt: domish.Element | None) -> dict | None:
    """Bookmark dict of a XEP-0402 item (id ``room``, payload ``elt``); None if invalid."""
    try:
        room_jid = jabber_jid.JID((room or "").strip())
    except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
        return None
    if not room_jid.user or room_jid.resource:
        return None
    if elt is None or elt.name != "conference" or elt.uri != NS_BOOKMARKS2:
        return None
    nick = password = None
    extensions = None
    for child in elt.elements():
        if child.uri != NS_BOOKMARKS2:
            continue
        if child.name == "nick":
            nick = str(child)[:MAX_TEXT]
        elif child.name == "password":
            password = str(child)[:MAX_TEXT]
        elif child.name == "extensions":
            extensions = child.toXml()
    return {
        "room": room_jid.userhost(),
        "name": (elt.getAttribute("name") or "")[:MAX_TEXT],
        "nick": nick or "",
        "autojoin": _bool(elt.getAttribute("autojoin")),
        "password": password or None,
        "extensions": extensions,
    }


def build_conference(bookmark: dict) -> domish.Element:
    conference = domish.Element((NS_BOOKMARKS2, "conference"))
    if bookmark.get("name"):
        conference["name"] = bookmark["name"]
    conference["autojoin"] = "true" if bookmark.get("autojoin") else "false"
    if bookmark.get("nick"):
        conference.addElement("nick", content=bookmark["nick"])
    if bookmark.get("password"):
        conference.addElement("password", content=bookmark["password"])
    if bookmark.get("extensions"):
        try:
            conference.addChild(parseXml(bookmark["extensions"].encode("utf-8")))
        except Exception:
            log.warning("bookmark extensions of %s could not be kept", bookmark["room"])
    return conference


def public_view(bookmark: dict) -> dict:
    """What frontends see: no password, no raw XML."""
    return {
        "room": bookmark["room"],
        "name": bookmark.get("name") or "",
        "nick": bookmark.get("nick") or "",
        "autojoin": bool(bookmark.get("autojoin")),
        "has_password": bool(bookmark.get("password")),
    }


@implementer(iwokkel.IDisco)
class BookmarksHandler(XMPPHandler):
    def __init__(self, plugin: BookmarksPlugin, client):
        super().__init__()
        self.plugin = plugin
        self.client = client

    def connectionInitialized(self):
        self.xmlstream.addObserver(
            f"/message/event[@xmlns='{NS_PUBSUB_EVENT}']", self._on_event, priority=10
        )

    def _on_event(self, elt):
        try:
            self.plugin.on_event(self.client, elt)
        except Exception:
            log.exception("[%s] bookmark notification handling failed", self.client.profile)

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier:
            return []
        return [
            disco.DiscoFeature(NS_BOOKMARKS2 + "+notify"),
            disco.DiscoFeature(NS_BOOKMARKS_LEGACY + "+notify"),
        ]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


class BookmarksPlugin(Plugin):
    name = "XEP-0402"
    label = "Bookmarks"
    xeps = ("XEP-0402",)
    dependencies = ("XEP-0030", "XEP-0045", "XEP-0223")
    recommendations = ("XEP-0048",)
    description = "Room bookmarks kept on the server, with autojoin, synced between clients."

    def __init__(self, host):
        super().__init__(host)
        #: profile -> "bookmarks2", "pep" or "private"
        self._backend: dict[str, str] = {}
        #: profile -> {room: bookmark}
        self._bookmarks: dict[str, dict[str, dict]] = {}
        #: profile -> [Deferreds waiting for the first load]
        self._loading: dict[str, list[defer.Deferred] | None] = {}
        self._register_bridge()

    @property
    def muc(self):
        return self.host.plugins["XEP-0045"]

    @property
    def pep(self):
        return self.host.plugins["XEP-0223"]

    @property
    def legacy(self):
        legacy = self.host.plugins.get("XEP-0048")
        if legacy is None:
            raise errors.PluginError("the server needs XEP-0048 bookmarks: plugin not loaded")
        return legacy

    def get_handler(self, client):
        return BookmarksHandler(self, client)

    # --- session ----------------------------------------------------------------------

    async def profile_connected(self, client) -> None:
        # callers already waiting (an earlier session's load) wait for this one
        self._loading[client.profile] = self._loading.get(client.profile) or []
        d = defer.ensureDeferred(self._start(client))
        d.addErrback(lambda f: log.error("[%s] bookmarks not loaded: %s", client.profile, f.value))

    def profile_disconnected(self, client) -> None:
        self._backend.pop(client.profile, None)
        self._bookmarks.pop(client.profile, None)
        self._finish_loading(client.profile, errors.NotConnected("profile disconnected"))

    def _finish_loading(self, profile: str, error: Exception | None = None) -> None:
        waiters = self._loading.get(profile)
        self._loading[profile] = None
        for waiter in waiters or ():
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)

    async def _start(self, client) -> None:
        try:
            backend = await self.detect_backend(client)
            self._backend[client.profile] = backend
            self._bookmarks[client.profile] = await self._load(client, backend)
        except Exception as e:
            self._finish_loading(client.profile, e)
            raise
        self._finish_loading(client.profile)
        log.info(
            "[%s] %d bookmark(s) (%s)",
            client.profile,
            len(self._bookmarks[client.profile]),
            self._backend[client.profile],
        )
        await self.autojoin(client)

    async def detect_backend(self, client) -> str:
        disco_plugin = self.host.plugins["XEP-0030"]
        try:
            info = await disco_plugin.info(client, client.jid.userhostJID())
            features = info.features
        except errors.SatError as e:
            log.info("[%s] no disco#info of our account: %s", client.profile, e)
            features = set()
        if FEATURE_COMPAT in features:
            return "bookmarks2"
        if await self.pep.is_supported(client):
            return "pep"
        return "private"

    async def _load(self, client, backend: str) -> dict[str, dict]:
        if backend == "bookmarks2":
            bookmarks = {}
            for item_id, payload in await self.pep.retrieve(client, NS_BOOKMARKS2):
                bookmark = parse_conference(item_id, payload)
                if bookmark is None:
                    log.info("[%s] invalid bookmark %r ignored", client.profile, item_id[:100])
                    continue
                bookmarks[bookmark["room"]] = bookmark
                if len(bookmarks) >= MAX_BOOKMARKS:
                    break
            return bookmarks
        return await self.legacy.load(client, backend)

    async def _ready(self, client) -> dict[str, dict]:
        waiters = self._loading.get(client.profile)
        if waiters is not None:
            waiter = defer.Deferred()
            waiters.append(waiter)
            await waiter
        if client.profile not in self._bookmarks:
            # the first load failed: try once more
            backend = self._backend.get(client.profile) or await self.detect_backend(client)
            self._backend[client.profile] = backend
            self._bookmarks[client.profile] = await self._load(client, backend)
        return self._bookmarks[client.profile]

    async def autojoin(self, client) -> None:
        joins = []
        for bookmark in list(self._bookmarks.get(client.profile, {}).values()):
            if bookmark["autojoin"] and not self.muc.is_joined(client, bookmark["room"]):
                joins.append(defer.ensureDeferred(self._join(client, bookmark)))
        if joins:
            await defer.DeferredList(joins, consumeErrors=True)

    async def _join(self, client, bookmark: dict) -> None:
        try:
            await self.muc.join(
                client,
                bookmark["room"],
                bookmark.get("nick") or None,
                bookmark.get("password"),
                {"create": "none"},
            )
        except errors.SatError as e:
            log.warning("[%s] autojoin of %s failed: %s", client.profile, bookmark["room"], e)

    # --- API ------------------------------------------------------------------------------

    async def list(self, client) -> list[dict]:
        bookmarks = await self._ready(client)
        return [public_view(b) for b in sorted(bookmarks.values(), key=lambda b: b["room"])]

    async def set(
        self,
        client,
        room: str,
        name: str = "",
        nick: str = "",
        autojoin: bool = False,
        password: str = "",
    ) -> None:
        """Add or change the bookmark of ``room``; an empty password keeps the stored one."""
        room_jid = self.muc._room_jid(room)
        nick = (nick or "").strip()
        if len(name) > MAX_TEXT or len(nick) > MAX_TEXT or len(password) > MAX_TEXT:
            raise errors.InvalidArgument("bookmark name, nick or password too long")
        bookmarks = await self._ready(client)
        current = bookmarks.get(room_jid.userhost(), {})
        bookmark = {
            "room": room_jid.userhost(),
            "name": name or "",
            "nick": nick,
            "autojoin": bool(autojoin),
            "password": password or current.get("password"),
            "extensions": current.get("extensions"),
        }
        backend = self._backend[client.profile]
        if backend == "bookmarks2":
            await self.pep.publish(
                client, NS_BOOKMARKS2, bookmark["room"], build_conference(bookmark), PUBLISH_OPTIONS
            )
        else:
            legacy = {k: v for k, v in bookmark.items() if k != "extensions"}
            await self.legacy.update(client, backend, bookmark["room"], legacy)
        self._store(client, bookmark)

    async def remove(self, client, room: str) -> None:
        room_jid = self.muc._room_jid(room)
        bookmarks = await self._ready(client)
        if room_jid.userhost() not in bookmarks:
            raise errors.NotFound(f"no bookmark for {room_jid.userhost()}")
        backend = self._backend[client.profile]
        if backend == "bookmarks2":
            await self.pep.retract(client, NS_BOOKMARKS2, room_jid.userhost(), notify=True)
        else:
            await self.legacy.update(client, backend, room_jid.userhost(), None)
        self._forget(client, room_jid.userhost())

    def get(self, client, room: str) -> dict | None:
        """The stored bookmark (with its password) of ``room``, for other plugins."""
        return self._bookmarks.get(client.profile, {}).get(room)

    # --- local state and signals -------------------------------------------------------------

    def _emit(self, name: str, *args) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is not None:
            bridge.emit(name, *args)

    def _store(self, client, bookmark: dict) -> dict | None:
        """Keep ``bookmark``; return the previous one. Signals a change."""
        bookmarks = self._bookmarks.setdefault(client.profile, {})
        previous = bookmarks.get(bookmark["room"])
        if previous is None and len(bookmarks) >= MAX_BOOKMARKS:
            log.warning("[%s] too many bookmarks, %s ignored", client.profile, bookmark["room"])
            return None
        bookmarks[bookmark["room"]] = bookmark
        if previous != bookmark:
            self._emit("BookmarkUpdate", client.profile, bookmark["room"], public_view(bookmark))
        return previous

    def _forget(self, client, room: str) -> dict | None:
        previous = self._bookmarks.get(client.profile, {}).pop(room, None)
        if previous is not None:
            self._emit("BookmarkRemoved", client.profile, room)
        return previous

    # --- notifications -----------------------------------------------------------------------

    def on_event(self, client, elt: domish.Element) -> None:
        parsed = self.pep.parse_event(client, elt)
        if parsed is None:
            return
        node, published, retracted, purged = parsed
        backend = self._backend.get(client.profile)
        if node == NS_BOOKMARKS2 and backend == "bookmarks2":
            elt.handled = True
            self._bookmarks2_event(client, published, retracted, purged)
        elif node == NS_BOOKMARKS_LEGACY and backend == "pep":
            elt.handled = True
            self._legacy_event(client, published, purged)

    def _bookmarks2_event(self, client, published, retracted, purged) -> None:
        if purged:
            for room in list(self._bookmarks.get(client.profile, {})):
                self._changed(client, self._forget(client, room), None)
            return
        for item_id, payload in published:
            bookmark = parse_conference(item_id, payload)
            if bookmark is None:
                log.info("[%s] invalid bookmark notification ignored", client.profile)
                continue
            self._changed(client, self._store(client, bookmark), bookmark)
        for room in retracted:
            self._changed(client, self._forget(client, room), None)

    def _legacy_event(self, client, published, purged) -> None:
        from sat.plugins.xep_0048_bookmarks_legacy import parse_storage

        if purged:
            new = {}
        else:
            storage = None
            for _item_id, payload in published:
                if payload is not None and payload.name == "storage":
                    storage = payload
            if storage is None:
                return
            new, _others = parse_storage(storage)
        current = self._bookmarks.get(client.profile, {})
        for room in list(current):
            if room not in new:
                self._changed(client, self._forget(client, room), None)
        for bookmark in new.values():
            bookmark.setdefault("extensions", None)
            self._changed(client, self._store(client, bookmark), bookmark)

    def _changed(self, client, previous: dict | None, bookmark: dict | None) -> None:
        """XEP-0402 §4: autojoin switched on: join; switched off or removed: leave."""
        if bookmark is not None and bookmark["autojoin"]:
            if not self.muc.is_joined(client, bookmark["room"]):
                d = defer.ensureDeferred(self._join(client, bookmark))
                d.addErrback(
                    lambda f: log.error("[%s] autojoin failed: %s", client.profile, f.value)
                )
            return
        if previous is None or not previous.get("autojoin"):
            return
        room = previous["room"]
        if self.muc.get_room(client, room) is not None:
            d = defer.ensureDeferred(self.muc.leave(client, room))
            d.addErrback(lambda f: log.info("[%s] leaving %s: %s", client.profile, room, f.value))

    # --- bridge ---------------------------------------------------------------------------

    def _register_bridge(self) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is None:
            return
        P = ("profile", "s", "profile name")
        view = "room, name, nick, autojoin (b), has_password (b)"
        bridge.add_method(
            "BookmarksList",
            self._bridge_list,
            args=[P],
            out=("aa{sv}", view),
            doc="Bookmarked rooms (XEP-0402, or XEP-0048 on older servers)",
            interface="plugin",
        )
        bridge.add_method(
            "BookmarkSet",
            self._bridge_set,
            args=[
                P,
                ("room", "s", "room bare JID"),
                ("name", "s", "name to show, may be empty"),
                ("nick", "s", "nick to use in the room, may be empty"),
                ("autojoin", "b", "join the room on connection"),
                ("password", "s", "room password; empty keeps the stored one"),
            ],
            doc="Add or change a room bookmark (stored on the server, private)",
            interface="plugin",
        )
        bridge.add_method(
            "BookmarkRemove",
            self._bridge_remove,
            args=[P, ("room", "s", "room bare JID")],
            doc="Remove a room bookmark (NotFound if there is none)",
            interface="plugin",
        )
        bridge.add_signal(
            "BookmarkUpdate",
            args=[P, ("room", "s", "room bare JID"), ("bookmark", "a{sv}", view)],
            doc="A bookmark was added or changed (by us or another client of the account)",
            interface="plugin",
        )
        bridge.add_signal(
            "BookmarkRemoved",
            args=[P, ("room", "s", "room bare JID")],
            doc="A bookmark was removed (by us or another client of the account)",
            interface="plugin",
        )

    async def _client(self, profile):
        resolve = getattr(getattr(self.host, "profiles", None), "resolve", None)
        if resolve is not None:
            profile = await resolve(profile)
        return self.host.get_client(profile)

    async def _bridge_list(self, profile):
        return await self.list(await self._client(profile))

    async def _bridge_set(self, profile, room, name, nick, autojoin, password):
        await self.set(await self._client(profile), room, name, nick, autojoin, password)

    async def _bridge_remove(self, profile, room):
        await self.remove(await self._client(profile), room)


PLUGIN = BookmarksPlugin
