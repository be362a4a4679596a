"""XEP-0308: Last Message Correction, and the helpers shared by the message editing plugins.

Sending
    ``MessageCorrect(profile, uid, body)`` corrects our own *last* message of a
    conversation (1:1, group chat or room private message): the corrected stanza
    (new ``id``, same type and recipient, the new body and a ``<replace
    id=…/>`` naming the original's ``id`` attribute — always the original's, even
    for a second correction, as the XEP says) goes through the ``message_send``
    hooks (origin-id, carbons, encryption...). A 1:1 correction is applied to our
    history at once; a group chat one when the room reflects it back (like any
    group chat message). A correction to a contact whose online clients all
    advertise caps without ``urn:xmpp:message-correct:0`` is refused (it would
    show up as a second message there); with nothing known it is sent.

Receiving
    A ``<replace id=…/>`` is applied only when (XEP-0308 business rules and security
    considerations):

    * the referenced message comes from the same sender: same bare JID in a 1:1
      conversation; in a room (or a room private message) the same occupant: same
      nick, and the same XEP-0421 occupant-id when the room advertises it, or the
      same real JID when the room tells it, or else the occupant has not left the
      room since the original message (leave presences are tracked);
    * it is that sender's last message in the conversation.

    The body is replaced (the FTS index follows: ``storage.history_update_body``);
    the previous versions are kept in ``extra["edits"]`` (``[{"body", "timestamp",
    "replaced", "id"}]``, oldest first, at most :data:`MAX_EDITS` and
    :data:`MAX_EDITS_CHARS` characters), ``extra["edited"]``
    is the time of the last correction, the body-derived keys (styling spans, /me)
    are recomputed, then ``MessageUpdate(profile, uid, "correction", data)`` is
    emitted (``data``: ``body`` and the changed ``extra`` keys).

    A correction of someone else's message is refused with a log line: history
    unchanged, nothing stored. A correction of an older message of the same sender
    is not applied either: it is stored as a message of its own (nothing is lost).
    A correction of a message we do not have is stored as a plain message (with
    ``extra["replace_id"]``) and kept pending (:class:`PendingReferences`): if that
    message arrives (live, or from an archive fetched newest first), the same checks
    are made (same sender; no other message of the sender between the two) and the
    message is corrected (``MessageUpdate`` type ``correction``), then the stand-alone
    copy is deleted (``MessageUpdate`` type ``deleted``, ``{"deleted": True,
    "merged_into": uid}``). The same correction seen twice (live, then again from the
    archive) is applied once.

Archived messages (XEP-0313) go through the same hooks *before* their page is
stored: a correction, retraction or reaction whose original is in the same page is
applied to that page's message before it is stored (see :class:`ArchivedPage`).

The module also holds what the XEP-0424, XEP-0425, XEP-0444 and XEP-0461 plugins
share (:class:`EditingPlugin`, :class:`Author`): who sent a message (bare JID, or
room occupant with occupant-id/real JID), which id names a stored message for each
XEP, how to find the message an incoming payload refers to (history first, then
the archive page being processed), how to send a payload-only message through
the pipeline, and the references received before their message
(:class:`PendingReferences`: kept per profile, bounded, saved in ``kv``, applied once
the storage tells that message is stored).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer
from twisted.words.xish import domish
from wokkel import disco, iwokkel
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core import errors, hooks
from sat.core.messages import MAX_BODY_LENGTH, new_uid, parse_jid
from sat.core.plugin import Plugin

log = logging.getLogger(__name__)

NS_LMC = "urn:xmpp:message-correct:0"
NS_SID = "urn:xmpp:sid:0"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_FALLBACK = "urn:xmpp:fallback:0"
NS_HINTS = "urn:xmpp:hints"

#: longest id we accept in a reference (ids are opaque; a huge one is refused)
MAX_ID_LENGTH = 256
#: previous versions kept per message, and their total size (oldest dropped first)
MAX_EDITS = 20
MAX_EDITS_CHARS = 200_000
#: extra keys computed from the body by other plugins (styling spans, /me): they follow it
BODY_DERIVED_KEYS = ("styling", "unstyled", "me")
#: extra keys that would reveal a retracted message's text: removed with the body
BODY_REVEALING_KEYS = (
    "edits",
    "edited",
    "styling",
    "unstyled",
    "me",
    "xhtml",
    "html",
    "replace_id",
    "correction_refused",
)
#: hook priority of payloads without (or with only a fallback) body: before XEP-0045 (60)
#: stops body-less group chat messages, after XEP-0359 (1000), XEP-0203 (900) and the
#: receipt/marker/chat state plugins
EARLY_PRIORITY = 100
#: corrections run last: the body-derived keys of the new body are computed by then
CORRECTION_PRIORITY = -100


class FeatureNotSupported(errors.PermissionDenied):
    """The peer does not support this feature."""


# --- small XML helpers ------------------------------------------------------------------


def child(elt: domish.Element, uri: str, name: str) -> domish.Element | None:
    for c in elt.elements():
        if c.uri == uri and c.name == name:
            return c
    return None


def children(elt: domish.Element, uri: str, name: str) -> list[domish.Element]:
    return [c for c in elt.elements() if c.uri == uri and c.name == name]


def valid_id(value) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_LENGTH
        and value.strip() == value
        and value.isprintable()
    )


def _bare(jid_text: str) -> str:
    return jid_text.partition("/")[0]


# --- who sent a message -------------------------------------------------------------------


@dataclass(frozen=True)
class Author:
    """The sender of a message, as far as editing rights go."""

    #: sender's bare JID (the room's for an occupant)
    bare: str
    #: sender's resource; the nick for an occupant
    resource: str = ""
    #: a room occupant (group chat message or room private message)
    muc: bool = False
    #: XEP-0421 occupant-id, only when the room advertises it (else it could be forged)
    occupant_id: str = ""
    #: the occupant's real bare JID, when the room told us
    real_jid: str = ""
    #: the sender is us
    outgoing: bool = False

    @property
    def jid(self) -> str:
        """The JID that identifies the sender: bare for a contact, room/nick for an occupant."""
        if self.muc and self.resource:
            return f"{self.bare}/{self.resource}"
        return self.bare

    @property
    def key(self) -> str:
        """A stable key for this sender (reactions are aggregated per key)."""
        if self.muc:
            if self.occupant_id:
                return f"occupant-id:{self.occupant_id}"
            if self.real_jid:
                return f"jid:{self.real_jid}"
            return f"occupant:{self.jid}"
        return f"jid:{self.bare}"

    def wrote(self, row: dict) -> bool:
        """True if ``row`` (a stored or received message) was sent by this sender."""
        if row["source"] != self.bare:
            return False
        return not self.muc or (row.get("source_resource") or "") == self.resource

    @classmethod
    def of_row(cls, row: dict) -> Author:
        """The author of a stored message."""
        extra = row.get("extra") or {}
        muc = row["type"] == "groupchat" or bool(extra.get("muc_pm") and not row["outgoing"])
        return cls(
            bare=row["source"],
            resource=row.get("source_resource") or "",
            muc=muc,
            occupant_id=(extra.get("occupant_id") or "") if muc else "",
            real_jid=(extra.get("occupant_jid") or "") if muc else "",
            outgoing=bool(row["outgoing"]),
        )


def same_author(
    original: Author, new: Author, *, same_nick: bool = True, left_since: bool = False
) -> tuple[bool, str]:
    """Whether ``new`` may edit a message of ``original``, and why not.

    1:1: the bare JIDs must match. Occupants: same room; then the occupant-ids must match
    when both are known (XEP-0421: the same participant, even after a nick change,
    unless ``same_nick``); otherwise the nicks must match and the real JIDs too when
    both are known; with neither, ``left_since`` (the occupant left the room after the
    original) refuses: the nick may belong to someone else now.
    """
    if original.muc != new.muc:
        return False, "not the same kind of sender (contact / room occupant)"
    if original.bare != new.bare:
        return False, f"{new.jid} is not {original.jid}"
    if not original.muc:
        return True, ""
    if same_nick and original.resource != new.resource:
        return False, f"occupant {new.resource!r} is not {original.resource!r}"
    if original.occupant_id and new.occupant_id:
        if original.occupant_id != new.occupant_id:
            return False, "different occupant-id"
        return True, ""
    if not same_nick and original.resource != new.resource:
        return False, f"occupant {new.resource!r} is not {original.resource!r}"
    if original.real_jid and new.real_jid:
        if original.real_jid != new.real_jid:
            return False, "the nick now belongs to another user"
        return True, ""
    if left_since:
        return False, "the occupant left the room since that message (maybe not the same person)"
    return True, ""


# --- per session state shared by the editing plugins ---------------------------------------


class ArchivedPage:
    """Archived messages that went through the hooks and are about to be stored.

    The MAM plugin runs the ``message_received`` hooks on a whole page, then stores it
    in one transaction: a correction (retraction, reaction) may refer to a message of
    the same page that is not stored yet. The editing plugins then find it here and
    change that page's dict before it is stored. Entries expire after :attr:`TTL`
    seconds (a page is stored right after its hooks ran); at most :attr:`MAX` are kept.
    """

    MAX = 5000
    TTL = 600.0

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._entries: OrderedDict[int, tuple[float, dict]] = OrderedDict()

    def add(self, data: dict) -> None:
        now = self._clock()
        self._entries[id(data)] = (now, data)
        self._entries.move_to_end(id(data))
        while self._entries:
            first_time, _ = next(iter(self._entries.values()))
            if len(self._entries) <= self.MAX and now - first_time <= self.TTL:
                break
            self._entries.popitem(last=False)

    def holds(self, data: dict) -> bool:
        entry = self._entries.get(id(data))
        return entry is not None and entry[1] is data

    def live(self):
        """The unexpired page messages, newest first."""
        now = self._clock()
        for added, data in reversed(self._entries.values()):
            if now - added <= self.TTL:
                yield data

    @staticmethod
    def _in_conversation(data: dict, peer: str, groupchat: bool, own: str) -> bool:
        if groupchat:
            return data["type"] == "groupchat" and data["source"] == peer
        if data["type"] == "groupchat":
            return False
        return {data["source"], data["dest"]} == {peer, own} or (
            peer == own and data["source"] == data["dest"] == own
        )

    def find(
        self, ref_id: str, peer: str, groupchat: bool, own: str, *, source=None, resource=None
    ) -> dict | None:
        """Newest page message of the conversation named by ``ref_id`` (see :func:`ids_of`)."""
        for data in self.live():
            if not self._in_conversation(data, peer, groupchat, own):
                continue
            if source is not None and data["source"] != source:
                continue
            if resource is not None and (data.get("source_resource") or "") != resource:
                continue
            if ref_id in ids_of(data, groupchat):
                return data
        return None

    def last_from(self, author: Author, peer: str, groupchat: bool, own: str) -> dict | None:
        for data in self.live():
            if self._in_conversation(data, peer, groupchat, own) and author.wrote(data):
                return data
        return None


def ids_of(row: dict, groupchat: bool) -> set[str]:
    """Every id another message may use to refer to ``row``."""
    found = set()
    extra = row.get("extra") or {}
    for value in (extra.get("message_id"), row.get("origin_id"), row.get("uid")):
        if value:
            found.add(value)
    if groupchat and row.get("stanza_id") and row.get("stanza_id_by") == row.get("source"):
        found.add(row["stanza_id"])
    return found


class _SessionState:
    def __init__(self):
        self.archived = ArchivedPage()
        #: (room bare JID, nick) -> time the occupant was last seen leaving
        self.left: dict[tuple[str, str], float] = {}


_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_state(client) -> _SessionState:
    state = _sessions.get(client)
    if state is None:
        state = _sessions[client] = _SessionState()
    return state


def _note_archived(client, elt: domish.Element, data: dict) -> None:
    """Last ``message_received`` hook: remember archived messages kept for storage."""
    if data["extra"].get("archived"):
        session_state(client).archived.add(data)


def _note_presence(client, elt: domish.Element) -> None:
    """Track room occupants leaving (or changing nick): their nick may change hands."""
    if elt.getAttribute("type") != "unavailable":
        return
    if child(elt, NS_MUC_USER, "x") is None:
        return
    sender = elt.getAttribute("from") or ""
    bare, sep, nick = sender.partition("/")
    if not sep or not nick:
        return
    left = session_state(client).left
    if len(left) > 50_000:
        left.clear()
    left[(bare, nick)] = time.time()


#: lowest priority: after every hook that may stop a message
NOTE_PRIORITY = -1000


# --- references that arrived before their message -------------------------------------------

#: kv namespace / key where the pending references of a profile are kept across restarts
PENDING_KV_NAMESPACE = "XEP-0308"
PENDING_KV_KEY = "pending_references"
PENDING_KINDS = ("correction", "retraction", "moderation", "reaction")
#: Author fields and their types, as saved
_AUTHOR_FIELDS = {
    "bare": str,
    "resource": str,
    "muc": bool,
    "occupant_id": str,
    "real_jid": str,
    "outgoing": bool,
}


def author_to_dict(author: Author) -> dict:
    return {name: getattr(author, name) for name in _AUTHOR_FIELDS}


def author_from_dict(value) -> Author | None:
    """The :class:`Author` saved by :func:`author_to_dict`; None if ``value`` is not one."""
    if not isinstance(value, dict) or not isinstance(value.get("bare"), str):
        return None
    fields = {}
    for name, kind in _AUTHOR_FIELDS.items():
        item = value.get(name, kind())
        if not isinstance(item, kind):
            return None
        fields[name] = item
    return Author(**fields)


def _valid_entry(entry) -> bool:
    """True for a well-formed pending reference (what we saved, read back from storage)."""
    if not isinstance(entry, dict):
        return False
    return (
        entry.get("kind") in PENDING_KINDS
        and valid_id(entry.get("ref"))
        and isinstance(entry.get("peer"), str)
        and bool(entry.get("peer"))
        and isinstance(entry.get("groupchat"), bool)
        and isinstance(entry.get("timestamp"), int | float)
        and isinstance(entry.get("added"), int | float)
        and isinstance(entry.get("key"), str)
        and isinstance(entry.get("sender"), str)
        and isinstance(entry.get("data"), dict)
        and author_from_dict(entry.get("author")) is not None
    )


class _ProfilePending:
    def __init__(self):
        #: entry key -> entry, oldest first
        self.entries: OrderedDict[str, dict] = OrderedDict()
        #: referenced id -> keys of the entries naming it
        self.by_ref: dict[str, set[str]] = {}
        self.loaded = False
        #: changed since last saved
        self.dirty = False

    def put(self, entry: dict) -> None:
        key = entry["key"]
        self.discard(key)
        self.entries[key] = entry
        self.by_ref.setdefault(entry["ref"], set()).add(key)

    def discard(self, key: str) -> dict | None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            keys = self.by_ref.get(entry["ref"])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_ref[entry["ref"]]
        return entry


class PendingReferences:
    """References to messages we do not have yet, applied when the message is stored.

    A reaction, retraction, moderation notice or correction may arrive before the message
    it names (archive pages fetched newest first, carbons, room joins...). The plugins
    keep it here instead of dropping it; when a message carrying the referenced id is
    stored (live or from an archive: the storage tells :meth:`on_stored`, a set lookup per
    stored message, and only while something is pending), the entries naming it go
    through the same checks as when the message is known (author of a retraction or
    correction, room of a moderation notice), then are applied to the stored row
    (``MessageUpdate`` as usual). An entry refused for one message stays (another message
    of the right author may carry the same id: ids are chosen by senders).

    Bounds, per profile: :attr:`MAX_ENTRIES` entries, :attr:`MAX_PER_SENDER` per sender,
    :attr:`MAX_AGE` seconds (the oldest go first, with a log line), so a hostile contact
    cannot grow memory or storage without bound. Entries are small (no message body: a
    correction's text is the message stored for it) and are saved in ``kv``
    (:data:`PENDING_KV_NAMESPACE`), at most every :attr:`FLUSH_DELAY` seconds and when
    the daemon stops, so they survive a restart.
    """

    MAX_ENTRIES = 500
    MAX_PER_SENDER = 100
    MAX_AGE = 24 * 3600.0
    FLUSH_DELAY = 2.0

    def __init__(self, host, clock=None, wall: Callable[[], float] = time.time):
        if clock is None:
            from twisted.internet import reactor as clock
        self.host = host
        self.clock = clock
        self.wall = wall
        self._profiles: dict[str, _ProfilePending] = {}
        #: kind -> plugin with pending_accepts / pending_apply
        self._handlers: dict[str, EditingPlugin] = {}
        self._loading: dict[str, defer.Deferred] = {}
        self._flush_calls: dict = {}
        self._listening = False
        #: applications running (see idle)
        self._running: set[defer.Deferred] = set()

    def register(self, kind: str, plugin: EditingPlugin) -> None:
        self._handlers[kind] = plugin

    # --- adding --------------------------------------------------------------------------

    def _store(self, profile: str) -> _ProfilePending:
        store = self._profiles.get(profile)
        if store is None:
            store = self._profiles[profile] = _ProfilePending()
        return store

    def supported(self) -> bool:
        return hasattr(getattr(self.host, "storage", None), "add_stored_listener")

    def add(
        self,
        client,
        kind: str,
        ref: str,
        peer: str,
        groupchat: bool,
        author: Author,
        timestamp: float,
        data: dict,
        discriminator: str = "",
    ) -> bool:
        """Keep a reference to ``ref`` (conversation ``peer``) until that message is stored.

        One entry per (kind, conversation, ref, sender, ``discriminator``): a newer one
        replaces an older one (reactions: the whole set), an older one is ignored. Returns
        False when references cannot be kept (storage without notifications)."""
        if not self.supported():
            return False
        profile = client.profile
        store = self._store(profile)
        self._expire(profile, store)
        key = "\x1f".join((kind, peer, "g" if groupchat else "c", ref, author.key, discriminator))
        previous = store.entries.get(key)
        if previous is not None and previous["timestamp"] > timestamp:
            return True
        entry = {
            "key": key,
            "kind": kind,
            "ref": ref,
            "peer": peer,
            "groupchat": groupchat,
            "author": author_to_dict(author),
            "sender": author.key,
            "timestamp": float(timestamp),
            "added": self.wall(),
            "data": data,
        }
        store.put(entry)
        self._bound(profile, store, author.key)
        self._changed(profile)
        return True

    def _bound(self, profile: str, store: _ProfilePending, sender_key: str) -> None:
        mine = [k for k, e in store.entries.items() if e["sender"] == sender_key]
        dropped = 0
        for key in mine[: max(0, len(mine) - self.MAX_PER_SENDER)]:
            store.discard(key)
            dropped += 1
        while len(store.entries) > self.MAX_ENTRIES:
            store.discard(next(iter(store.entries)))
            dropped += 1
        if dropped:
            log.warning(
                "[%s] too many references to unknown messages: %d oldest dropped "
                "(at most %d, %d per sender)",
                profile,
                dropped,
                self.MAX_ENTRIES,
                self.MAX_PER_SENDER,
            )

    def _expire(self, profile: str, store: _ProfilePending) -> None:
        limit = self.wall() - self.MAX_AGE
        expired = 0
        while store.entries:
            key, entry = next(iter(store.entries.items()))  # the oldest
            if entry["added"] >= limit:
                break
            store.discard(key)
            expired += 1
        if expired:
            log.info("[%s] %d reference(s) to messages never received expired", profile, expired)
            self._changed(profile)

    def matching(self, profile: str, kind: str, peer: str, groupchat: bool, ref: str) -> list[dict]:
        """The pending entries of ``kind`` naming ``ref`` in that conversation."""
        store = self._profiles.get(profile)
        if store is None:
            return []
        found = []
        for key in store.by_ref.get(ref, ()):
            entry = store.entries[key]
            if entry["kind"] == kind and entry["peer"] == peer and entry["groupchat"] == groupchat:
                found.append(entry)
        return found

    def count(self, profile: str) -> int:
        store = self._profiles.get(profile)
        return 0 if store is None else len(store.entries)

    # --- applying ---------------------------------------------------------------------------

    def _update_listening(self) -> None:
        wanted = any(store.entries for store in self._profiles.values())
        if wanted == self._listening or not self.supported():
            return
        if wanted:
            self.host.storage.add_stored_listener(self.on_stored)
        else:
            self.host.storage.remove_stored_listener(self.on_stored)
        self._listening = wanted

    def on_stored(self, profile: str, message: dict) -> None:
        """A message was stored: apply the pending references that name it (storage hook)."""
        store = self._profiles.get(profile)
        if store is None or not store.by_ref:
            return
        uid = message.get("uid")
        if not uid:
            return
        groupchat = message.get("type") == "groupchat"
        keys = [key for ref in ids_of(message, groupchat) for key in store.by_ref.get(ref, ())]
        if not keys:
            return
        client = getattr(self.host, "clients", {}).get(profile)
        if client is None:
            return
        peer, _ = EditingPlugin.conversation(client, message)
        limit = self.wall() - self.MAX_AGE
        accepted = []
        changed = False
        for key in keys:
            entry = store.entries.get(key)
            if entry is None or entry["peer"] != peer or entry["groupchat"] != groupchat:
                continue
            if entry["added"] < limit:
                store.discard(key)
                changed = True
                continue
            if entry["data"].get("uid") == uid:
                continue  # a correction stored as a message of its own is not its target
            plugin = self._handlers.get(entry["kind"])
            if plugin is None:
                continue
            try:
                ok = plugin.pending_accepts(client, message, entry)
            except Exception:
                log.exception("[%s] checking a pending %s failed", profile, entry["kind"])
                ok = False
            if ok:
                store.discard(key)
                accepted.append(entry)
        if changed or accepted:
            self._changed(profile)
        if accepted:
            log.info(
                "[%s] message %s arrived: applying %d reference(s) received before it",
                profile,
                uid,
                len(accepted),
            )
            d = defer.ensureDeferred(self._apply(client, uid, accepted))
            d.addErrback(
                lambda f: log.error("[%s] pending references failed: %s", profile, f.value)
            )
            if not d.called:
                self._running.add(d)
                d.addBoth(self._done, d)

    def _done(self, result, d: defer.Deferred):
        self._running.discard(d)
        return result

    async def idle(self) -> None:
        """Wait until the references being applied are (tests, shutdown)."""
        while self._running:
            await defer.DeferredList(list(self._running))

    async def _apply(self, client, uid: str, entries: list[dict]) -> None:
        entries.sort(key=lambda e: e["timestamp"])
        for entry in entries:
            # read again each time: the previous entry changed the row
            row = await self.host.storage.history_find(client.profile, uid=uid)
            if row is None:
                return
            try:
                await self._handlers[entry["kind"]].pending_apply(client, row, entry)
            except Exception as e:
                log.error(
                    "[%s] pending %s of message %s not applied: %s",
                    client.profile,
                    entry["kind"],
                    uid,
                    e,
                )

    # --- persistence ------------------------------------------------------------------------

    def _changed(self, profile: str) -> None:
        self._store(profile).dirty = True
        self._update_listening()
        call = self._flush_calls.get(profile)
        if call is None or not call.active():
            self._flush_calls[profile] = self.clock.callLater(
                self.FLUSH_DELAY, self._flush_later, profile
            )

    def _flush_later(self, profile: str) -> None:
        self._flush_calls.pop(profile, None)
        defer.ensureDeferred(self.flush(profile)).addErrback(
            lambda f: log.warning("[%s] pending references not saved: %s", profile, f.value)
        )

    async def load(self, profile: str) -> None:
        """Read the profile's saved entries (once; merged with those received meanwhile)."""
        store = self._store(profile)
        if store.loaded:
            return
        running = self._loading.get(profile)
        if running is None:
            running = self._loading[profile] = defer.ensureDeferred(self._read(profile, store))
        try:
            await running
        finally:
            self._loading.pop(profile, None)

    async def _read(self, profile: str, store: _ProfilePending) -> None:
        try:
            saved = await self.host.storage.kv_get(
                PENDING_KV_NAMESPACE, PENDING_KV_KEY, None, profile
            )
        except Exception as e:
            log.warning("[%s] pending references not read: %s", profile, e)
            return
        store.loaded = True
        entries = saved.get("entries") if isinstance(saved, dict) else None
        kept = 0
        for entry in entries if isinstance(entries, list) else ():
            if not _valid_entry(entry):
                continue
            if entry["key"] not in store.entries:
                store.put(entry)
                kept += 1
        # the saved ones are older than those received since: keep the order by age
        store.entries = OrderedDict(sorted(store.entries.items(), key=lambda i: i[1]["added"]))
        if kept:
            log.info("[%s] %d reference(s) to unknown messages still waiting", profile, kept)
        self._expire(profile, store)
        self._bound(profile, store, "")
        self._update_listening()

    async def flush(self, profile: str) -> None:
        """Save the profile's entries now."""
        store = self._profiles.get(profile)
        if store is None:
            return
        call = self._flush_calls.pop(profile, None)
        if call is not None and call.active():
            call.cancel()
        await self.load(profile)  # never overwrite saved entries not read yet
        if not store.loaded or not store.dirty:
            return
        store.dirty = False
        try:
            await self.host.storage.kv_set(
                PENDING_KV_NAMESPACE,
                PENDING_KV_KEY,
                {"version": 1, "entries": list(store.entries.values())},
                profile,
            )
        except Exception:
            store.dirty = True
            raise

    async def flush_all(self) -> None:
        await self.idle()
        for profile in list(self._profiles):
            try:
                await self.flush(profile)
            except Exception as e:
                log.warning("[%s] pending references not saved: %s", profile, e)


_pending_managers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pending_references(host) -> PendingReferences:
    """The :class:`PendingReferences` of ``host`` (one shared by the editing plugins)."""
    manager = _pending_managers.get(host)
    if manager is None:
        manager = _pending_managers[host] = PendingReferences(host)
    return manager


# --- base of the editing plugins -------------------------------------------------------------


class EditingPlugin(Plugin):
    """What corrections, retractions, moderation, reactions and replies share."""

    dependencies = ("XEP-0030", "XEP-0359")
    recommendations = ("XEP-0045", "XEP-0115", "XEP-0184", "XEP-0280", "XEP-0313")
    #: features advertised in disco
    features: tuple[str, ...] = ()

    #: keep the real JID of room occupants with their messages (checked by later edits)
    notes_identity = False
    #: kinds of references to unknown messages this plugin keeps (see PendingReferences)
    pending_kinds: tuple[str, ...] = ()

    def __init__(self, host):
        super().__init__(host)
        if self.notes_identity:
            host.hooks.add("message_received", self._note_identity, EARLY_PRIORITY - 1)
        # one registration per host, whichever editing plugins are loaded
        host.hooks.remove("message_received", _note_archived)
        host.hooks.add("message_received", _note_archived, NOTE_PRIORITY)
        host.hooks.remove("presence_received", _note_presence)
        host.hooks.add("presence_received", _note_presence, 0)
        #: references to messages not received yet (shared by the editing plugins)
        self.pending = pending_references(host)
        if self.pending_kinds and type(self).pending_apply is EditingPlugin.pending_apply:
            # a plugin keeping references must say how to apply them: refuse it at load
            # (reported by the plugin loader) rather than fail when a target arrives
            raise TypeError(
                f"{type(self).__name__} keeps {self.pending_kinds} references "
                "but does not define pending_apply"
            )
        for kind in self.pending_kinds:
            self.pending.register(kind, self)

    def get_handler(self, client):
        return FeaturesHandler(self.features) if self.features else None

    async def profile_connecting(self, client) -> None:
        # before the stream opens: the saved references wait for what the session brings
        try:
            await self.pending.load(client.profile)
        except Exception as e:
            log.warning("[%s] pending references not loaded: %s", client.profile, e)

    def profile_disconnected(self, client) -> None:
        _sessions.pop(client, None)
        defer.ensureDeferred(self.pending.flush(client.profile)).addErrback(
            lambda f: log.warning("[%s] pending references not saved: %s", client.profile, f.value)
        )

    async def stop(self) -> None:
        await self.pending.flush_all()

    # --- references received before their message (see PendingReferences) ---------------

    def keep_pending(
        self,
        client,
        kind: str,
        ref: str,
        data: dict,
        author: Author,
        payload: dict,
        discriminator: str = "",
    ) -> bool:
        """Keep a reference to the unknown message ``ref`` of ``data``'s conversation until
        that message is stored (then :meth:`pending_accepts` and :meth:`pending_apply` of
        this plugin run); False if it cannot be kept."""
        peer, groupchat = self.conversation(client, data)
        return self.pending.add(
            client,
            kind,
            ref,
            peer,
            groupchat,
            author,
            data["timestamp"],
            payload,
            discriminator,
        )

    def pending_accepts(self, client, message: dict, entry: dict) -> bool:
        """Whether the pending ``entry`` may apply to the stored ``message`` (synchronous:
        the same author checks as for a known message; log why not)."""
        return True

    async def pending_apply(self, client, row: dict, entry: dict) -> None:
        """Apply the accepted pending ``entry`` to the stored ``row``. Plugins with
        ``pending_kinds`` define it (checked when they load); the others are never asked."""

    @staticmethod
    def pending_author(entry: dict) -> Author:
        author = author_from_dict(entry["author"])
        assert author is not None  # checked when added / read back
        return author

    def pending_author_matches(
        self, client, message: dict, entry: dict, *, same_nick: bool
    ) -> bool:
        """Whether the sender of ``entry`` may edit the stored ``message`` (logged if not)."""
        author = self.pending_author(entry)
        return self.may_edit(
            client,
            message,
            author,
            same_nick=same_nick,
            what=f"{entry['kind']} from {author.jid} (received before the message) of message "
            f"{message.get('uid')}",
        )

    def may_edit(self, client, target: dict, author: Author, *, same_nick: bool, what: str) -> bool:
        """:func:`same_author` for ``author`` editing the message ``target``; a refusal is
        logged as "refused ``what``: reason"."""
        ok, reason = same_author(
            Author.of_row(target),
            author,
            same_nick=same_nick,
            left_since=self.left_since(client, target),
        )
        if not ok:
            log.warning("[%s] refused %s: %s; history unchanged", client.profile, what, reason)
        return ok

    # --- bridge helpers ---------------------------------------------------------------

    def _add_method(self, name, handler, args, out=None, doc=""):
        bridge = getattr(self.host, "bridge", None)
        if bridge is not None:
            bridge.add_method(name, handler, args=args, out=out, doc=doc, interface="plugin")

    async def _client(self, profile: str):
        return self.host.get_client(await self.resolve_profile(profile))

    def emit_update(self, profile: str, uid: str, kind: str, data: dict) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is None:
            return
        data = {k: v for k, v in data.items() if v is not None}
        bridge.emit("MessageUpdate", profile, uid, kind, data)

    # --- rooms ----------------------------------------------------------------------------

    @property
    def muc(self):
        return getattr(self.host, "plugins", {}).get("XEP-0045")

    def room_of(self, client, bare: str):
        """The XEP-0045 room object of ``bare`` if we are in (or joining) it, else None."""
        muc = self.muc
        if muc is None:
            return None
        try:
            room = muc.get_room(client, bare)
        except Exception:
            return None
        if room is None or getattr(room, "state", "joined") not in ("joined", "joining"):
            return None
        return room

    def own_nick(self, client, room_jid: str) -> str | None:
        room = self.room_of(client, room_jid)
        return getattr(room, "nick", None) if room is not None else None

    def own_role(self, client, room_jid: str) -> str | None:
        """Our role in a room ("moderator"...), None if unknown."""
        room = self.room_of(client, room_jid)
        if room is None:
            return None
        own = getattr(room, "own", None)
        return getattr(own, "role", None) if own is not None else None

    @staticmethod
    def room_features(room) -> set:
        return set(getattr(room, "features", None) or ())

    # --- authors -------------------------------------------------------------------------

    def author_of(self, client, elt: domish.Element, data: dict) -> Author | None:
        """The sender of a received message; None for a group chat message of a room we
        are not in (the XEP-0045 plugin drops those)."""
        bare = data["source"]
        resource = data.get("source_resource") or ""
        extra = data["extra"]
        groupchat = data["type"] == "groupchat"
        room = self.room_of(client, bare) if (groupchat or resource) else None
        if groupchat and room is None and self.muc is not None:
            return None
        muc = groupchat or (room is not None and bool(resource)) or bool(extra.get("muc_pm"))
        if not muc:
            return Author(bare=bare, resource=resource, outgoing=bool(data["outgoing"]))
        occupant_id = ""
        real_jid = ""
        outgoing = bool(data["outgoing"])
        if room is not None:
            if NS_OCCUPANT_ID in self.room_features(room):
                oid = child(elt, NS_OCCUPANT_ID, "occupant-id")
                if oid is not None and valid_id(oid.getAttribute("id")):
                    occupant_id = oid["id"]
            live = not extra.get("archived") and "delay" not in extra
            occupant = (getattr(room, "occupants", None) or {}).get(resource)
            if live and occupant is not None and getattr(occupant, "jid", ""):
                real_jid = _bare(occupant.jid)
            if groupchat and resource and resource == getattr(room, "nick", None):
                outgoing = True
        return Author(
            bare=bare,
            resource=resource,
            muc=True,
            occupant_id=occupant_id,
            real_jid=real_jid,
            outgoing=outgoing,
        )

    def _note_identity(self, client, elt: domish.Element, data: dict) -> None:
        if data["type"] != "groupchat" and (
            not data.get("source_resource")
            or (not data["extra"].get("muc_pm") and self.room_of(client, data["source"]) is None)
        ):
            return  # a 1:1 message: nothing to note
        author = self.author_of(client, elt, data)
        if author is not None:
            self.note_author(client, elt, data, author)

    def note_author(self, client, elt: domish.Element, data: dict, author: Author) -> None:
        """Keep what identifies an occupant with its message (checked by later edits)."""
        if not author.muc:
            return
        extra = data["extra"]
        if author.occupant_id:
            extra.setdefault("occupant_id", author.occupant_id)
        if author.real_jid:
            extra.setdefault("occupant_jid", author.real_jid)

    def left_since(self, client, row: dict) -> bool:
        """True if the author (an occupant) of ``row`` left the room after it was sent."""
        left = session_state(client).left.get((row["source"], row.get("source_resource") or ""))
        if left is None:
            return False
        sent = row.get("received_timestamp") or row["timestamp"]
        if (row.get("extra") or {}).get("archived"):
            sent = row["timestamp"]
        return left > sent

    # --- conversations and references --------------------------------------------------------

    @staticmethod
    def conversation(client, row: dict) -> tuple[str, bool]:
        """(peer bare JID, group chat?) of a stored or received message."""
        if row["type"] == "groupchat":
            return row["source"], True
        own = client.jid.userhost()
        if row["outgoing"] or row["source"] == own:
            return row["dest"], False
        return row["source"], False

    @staticmethod
    def reference_for(row: dict, kind: str) -> str | None:
        """The id to put in a payload that refers to ``row``.

        ``kind``: "id" (XEP-0308 corrections, XEP-0424 1:1 retractions: the ``id``
        attribute), or "stable" (XEP-0444 reactions, XEP-0461 replies, XEP-0424/0425
        group chat retractions: the room's stanza-id in a room, else the origin-id,
        else the ``id`` attribute). None if the message cannot be referred to that way.
        """
        extra = row.get("extra") or {}
        id_attr = extra.get("message_id") or (row["uid"] if row.get("outgoing") else None)
        if kind == "id":
            return id_attr or row.get("origin_id")
        if row["type"] == "groupchat":
            if row.get("stanza_id") and row.get("stanza_id_by") == row["source"]:
                return row["stanza_id"]
            return None
        return row.get("origin_id") or id_attr

    async def find_referenced(
        self, client, ref_id: str, peer: str, groupchat: bool, author: Author | None = None
    ) -> dict | None:
        """The message of the conversation with ``peer`` that ``ref_id`` names, or None.

        History first, then the archive page being stored. With ``author``, only that
        sender's messages are considered (senders choose their ids: two may use the same).
        """
        own = client.jid.userhost()
        source = resource = None
        if author is not None:
            source = author.bare
            resource = author.resource if author.muc else None
        row = await self.host.storage.history_find_ref(
            client.profile,
            ref_id,
            peer,
            own_jid=None if groupchat else own,
            groupchat=groupchat,
            stanza_id_by=peer if groupchat else None,
            source=source,
            source_resource=resource,
        )
        if row is None:
            row = session_state(client).archived.find(
                ref_id, peer, groupchat, own, source=source, resource=resource
            )
        return row

    async def last_from(self, client, author: Author, peer: str, groupchat: bool) -> dict | None:
        """``author``'s newest message in the conversation with ``peer`` (history or page)."""
        own = client.jid.userhost()
        if groupchat:
            row = await self.host.storage.history_last_from(
                client.profile, author.bare, source_resource=author.resource, groupchat=True
            )
        else:
            dest = peer if author.bare == own else own
            row = await self.host.storage.history_last_from(
                client.profile,
                author.bare,
                source_resource=author.resource if author.muc else None,
                dest=dest,
            )
        pending = session_state(client).archived.last_from(author, peer, groupchat, own)
        if pending is not None and (row is None or pending["timestamp"] >= row["timestamp"]):
            return pending
        return row

    @staticmethod
    def is_pending(client, row: dict) -> bool:
        """True for a message of the archive page being processed (not stored yet)."""
        return session_state(client).archived.holds(row)

    async def get_message(self, client, uid: str) -> dict:
        if not isinstance(uid, str) or not uid:
            raise errors.InvalidArgument("uid must be a non-empty string")
        row = await self.host.storage.history_find(client.profile, uid=uid)
        if row is None:
            raise errors.NotFound(f"no message with uid {uid!r}")
        return row

    def is_own(self, client, row: dict) -> bool:
        """True if we wrote ``row`` (in a room: our current nick's message)."""
        if row["type"] == "groupchat":
            nick = self.own_nick(client, row["source"])
            return bool(row["outgoing"]) or (
                nick is not None and (row.get("source_resource") or "") == nick
            )
        return bool(row["outgoing"]) or row["source"] == client.jid.userhost()

    # --- changing a message -------------------------------------------------------------------

    async def update_row(
        self,
        client,
        target: dict,
        kind: str,
        extra_updates: dict,
        *,
        body: str | None = None,
        set_body: bool = False,
        signal: dict | None = None,
    ) -> None:
        """Apply a change to ``target`` and tell the frontends (``MessageUpdate``).

        ``set_body`` replaces the body by ``body`` (None clears it); ``extra_updates``
        are merged into ``extra`` (None removes a key). A message of the archive page
        being processed is changed in place before it is stored (no signal: the page's
        ``MamMessagesNew`` covers it).
        """
        if self.is_pending(client, target):
            if set_body:
                target["body"] = body
            target_extra = target.setdefault("extra", {})
            for key, value in extra_updates.items():
                if value is None:
                    target_extra.pop(key, None)
                else:
                    target_extra[key] = value
            return
        old_extra = target.get("extra") or {}
        if set_body:
            await self.host.storage.history_update_body(
                client.profile, target["uid"], body, extra_updates
            )
        else:
            await self.host.storage.history_update_extra(
                client.profile, target["uid"], extra_updates
            )
        data = dict(signal or {})
        if set_body:
            data.setdefault("body", body or "")
        data.update({k: v for k, v in extra_updates.items() if v is not None})
        removed = [
            k for k, v in extra_updates.items() if v is None and k in old_extra and k not in data
        ]
        if removed:
            data["removed"] = removed
        self.emit_update(client.profile, target["uid"], kind, data)

    async def retract_row(self, client, target: dict, retracted: dict) -> None:
        """Turn ``target`` into a tombstone: body cleared (and out of the full-text index),
        everything derived from it dropped, ``extra["retracted"] = retracted``."""
        updates: dict = {key: None for key in BODY_REVEALING_KEYS}
        updates["retracted"] = {k: v for k, v in retracted.items() if v is not None}
        await self.update_row(client, target, "retraction", updates, body=None, set_body=True)
        log.info(
            "[%s] message %s retracted by %s",
            client.profile,
            target["uid"],
            retracted.get("by", "?"),
        )

    # --- peers ------------------------------------------------------------------------------

    async def peer_supports(self, client, peer: str, feature: str) -> bool | None:
        """Whether the online clients of ``peer`` support ``feature``, from their caps.

        True if one of them announces it, False if all those whose caps are known do
        not, None when nothing is known (offline contact, no caps). Sends no request.
        """
        presences = getattr(client, "presences", None) or {}
        resources = [full for full in presences if _bare(full) == peer and "/" in full]
        if not resources:
            return None
        caps = getattr(self.host, "plugins", {}).get("XEP-0115")
        if caps is None:
            return None
        known = False
        for full in resources:
            try:
                info = await caps.get_caps_info(client, full)
            except Exception:
                info = None
            if info is None:
                continue
            known = True
            if feature in info.features:
                return True
        return False if known else None

    async def check_peer(self, client, row: dict, feature: str, what: str) -> None:
        peer, groupchat = self.conversation(client, row)
        if groupchat:
            return
        if await self.peer_supports(client, peer, feature) is False:
            raise FeatureNotSupported(f"{peer} does not support {what} ({feature})")

    # --- sending ----------------------------------------------------------------------------

    async def send_payload(
        self,
        client,
        row: dict,
        build: Callable[[domish.Element], None],
        *,
        body: str | None = None,
        extra: dict | None = None,
    ) -> tuple[domish.Element, dict]:
        """Send a message about ``row`` in its conversation through the send hooks.

        The message goes where ``row`` went (the room, the contact — the full JID if the
        original was sent to one), with its type; ``build`` adds the payload. Returns
        the sent element and the hooks' data (not stored).
        """
        own = client.jid.userhost()
        peer, groupchat = self.conversation(client, row)
        if groupchat:
            to = peer
        elif row["outgoing"] or row["source"] == own:
            to = peer + (f"/{row['dest_resource']}" if row.get("dest_resource") else "")
        else:
            to = peer + (f"/{row['source_resource']}" if row.get("source_resource") else "")
            if not (row.get("extra") or {}).get("muc_pm"):
                to = peer  # a contact: any of its clients may answer
        elt = domish.Element((None, "message"))
        elt["to"] = to
        elt["type"] = row["type"] if row["type"] in ("chat", "groupchat", "normal") else "chat"
        elt["id"] = new_uid()
        if body is not None:
            elt.addElement("body", content=body)
        build(elt)
        recipient = parse_jid(to)
        data = {
            "uid": elt["id"],
            "timestamp": time.time(),
            "received_timestamp": None,
            "source": own,
            "source_resource": client.jid.resource or "",
            "dest": recipient.userhost(),
            "dest_resource": recipient.resource or "",
            "type": elt["type"],
            "body": body,
            "subject": None,
            "thread": None,
            "stanza_id": None,
            "stanza_id_by": None,
            "origin_id": None,
            "outgoing": True,
            "extra": dict(extra or {}),
        }
        if not await self.host.hooks.run("message_send", client, elt, data):
            raise errors.PermissionDenied(
                data.get("cancel_reason") or "message cancelled by a plugin"
            )
        client.send(elt)
        return elt, data


@implementer(iwokkel.IDisco)
class FeaturesHandler(XMPPHandler):
    """Advertises a plugin's features."""

    def __init__(self, features):
        super().__init__()
        self.features = tuple(features)

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier:
            return []
        return [disco.DiscoFeature(f) for f in self.features]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


# --- XEP-0308 ----------------------------------------------------------------------------------


class CorrectionPlugin(EditingPlugin):
    name = "XEP-0308"
    label = "Last Message Correction"
    xeps = ("XEP-0308",)
    description = "Corrects our last message; applies contacts' corrections of theirs."
    features = (NS_LMC,)
    notes_identity = True
    pending_kinds = ("correction",)

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add(
            "message_received", self._on_received, CORRECTION_PRIORITY, namespaces=[NS_LMC]
        )
        self._add_method(
            "MessageCorrect",
            self._bridge_correct,
            args=[
                ("profile", "s", "profile (empty: the default profile)"),
                ("uid", "s", "uid of our last message in its conversation"),
                ("body", "s", "the corrected text"),
            ],
            doc="Correct our last message of a conversation (XEP-0308). The history and the "
            "MessageUpdate signal (type correction) follow; in a room, once the room "
            "reflects the correction.",
        )

    async def _bridge_correct(self, profile: str, uid: str, body: str) -> None:
        client = await self._client(profile)
        await self.correct(client, uid, body)

    # --- sending ----------------------------------------------------------------------

    async def correct(self, client, uid: str, body: str) -> dict:
        """Send a correction of our message ``uid``; return the hooks' data of it."""
        if not isinstance(body, str) or not body.strip():
            raise errors.InvalidArgument("the corrected body is empty")
        if len(body) > MAX_BODY_LENGTH:
            raise errors.InvalidArgument(f"body longer than {MAX_BODY_LENGTH} characters")
        row = await self.get_message(client, uid)
        if not self.is_own(client, row):
            raise errors.PermissionDenied("only our own messages can be corrected")
        extra = row.get("extra") or {}
        if extra.get("retracted"):
            raise errors.PermissionDenied("a retracted message cannot be corrected")
        if row.get("body") is None:
            raise errors.InvalidArgument("this message has no text to correct")
        peer, groupchat = self.conversation(client, row)
        own = Author.of_row(row) if groupchat else Author(bare=client.jid.userhost())
        last = await self.last_from(client, own, peer, groupchat)
        if last is None or last["uid"] != row["uid"]:
            raise errors.PermissionDenied(
                "only the last message of a conversation can be corrected (XEP-0308)"
            )
        ref = self.reference_for(row, "id")
        if not ref:
            raise errors.InvalidArgument("this message has no id to refer to")
        await self.check_peer(client, row, NS_LMC, "message correction")

        def build(elt):
            replace = elt.addElement((NS_LMC, "replace"))
            replace["id"] = ref

        send_extra: dict = {"receipt": False}
        for key in ("reply_to",):
            if extra.get(key):
                send_extra[key] = extra[key]
        _elt, data = await self.send_payload(client, row, build, body=body, extra=send_extra)
        if not groupchat:
            await self.apply(client, row, body, data, correction_id=data["uid"])
        return data

    # --- receiving --------------------------------------------------------------------

    async def _on_received(self, client, elt: domish.Element, data: dict):
        replace = child(elt, NS_LMC, "replace")
        if replace is None:
            return None
        ref = replace.getAttribute("id")
        profile = client.profile
        sender = elt.getAttribute("from") or data["source"]
        if not valid_id(ref):
            log.warning(
                "[%s] correction with an invalid id from %s: kept as a message", profile, sender
            )
            return None
        if data.get("body") is None:
            log.info("[%s] correction without body from %s ignored", profile, sender)
            return hooks.STOP
        author = self.author_of(client, elt, data)
        if author is None:
            return hooks.STOP
        self.note_author(client, elt, data, author)
        peer, groupchat = self.conversation(client, data)
        correction_id = data["extra"].get("message_id") or elt.getAttribute("id") or ""
        target = await self.find_referenced(client, ref, peer, groupchat, author)
        if target is None:
            other = await self.find_referenced(client, ref, peer, groupchat)
            if other is not None:
                if self._already_applied(other, correction_id):
                    return hooks.STOP
                log.warning(
                    "[%s] refused correction from %s of message %s written by %s "
                    "(XEP-0308: only the sender may correct a message): history unchanged",
                    profile,
                    sender,
                    ref,
                    Author.of_row(other).jid,
                )
                return hooks.STOP
            data["extra"]["replace_id"] = ref
            kept = ref != correction_id and self.keep_pending(
                client,
                "correction",
                ref,
                data,
                author,
                {"uid": data["uid"], "id": correction_id},
                discriminator=correction_id or data["uid"],
            )
            log.info(
                "[%s] correction from %s of unknown message %s: stored as a new message%s",
                profile,
                sender,
                ref,
                " (applied to that message if it arrives)" if kept else "",
            )
            return None
        if self._already_applied(target, correction_id):
            log.debug("[%s] correction %s already applied", profile, correction_id)
            return hooks.STOP
        if (target.get("extra") or {}).get("retracted"):
            log.info(
                "[%s] correction of retracted message %s from %s ignored", profile, ref, sender
            )
            return hooks.STOP
        if not self.may_edit(
            client,
            target,
            author,
            same_nick=True,
            what=f"correction from {sender} of message {ref}",
        ):
            return hooks.STOP
        last = await self.last_from(client, author, peer, groupchat)
        if last is not None and last["uid"] != target["uid"] and last is not target:
            log.info(
                "[%s] correction from %s of %s, which is not its last message: not applied, "
                "stored as a message of its own (XEP-0308 corrects the last message only)",
                profile,
                sender,
                ref,
            )
            data["extra"]["replace_id"] = ref
            data["extra"]["correction_refused"] = "not the last message"
            return None
        await self.apply(client, target, data["body"], data, correction_id=correction_id)
        return hooks.STOP

    # --- corrections received before their original ---------------------------------------

    def pending_accepts(self, client, message: dict, entry: dict) -> bool:
        return self.pending_author_matches(client, message, entry, same_nick=True)

    async def pending_apply(self, client, row: dict, entry: dict) -> None:
        """The original of a correction stored as a message of its own arrived: correct it
        with that message's text, then delete that message (its text now lives in the
        original, its previous version in ``edits``; ``MessageUpdate`` type ``deleted``)."""
        profile = client.profile
        info = entry["data"]
        author = self.pending_author(entry)
        correction_id = info.get("id") or ""
        correction = None
        if isinstance(info.get("uid"), str) and info["uid"]:
            correction = await self.host.storage.history_find(profile, uid=info["uid"])
        if correction is None and correction_id:
            # stored under another uid (a duplicate copy was stored first): by its id
            peer, groupchat = self.conversation(client, row)
            correction = await self.find_referenced(client, correction_id, peer, groupchat, author)
            if ((correction or {}).get("extra") or {}).get("replace_id") != entry["ref"]:
                correction = None
        extra = (correction or {}).get("extra") or {}
        if correction is None or correction["uid"] == row["uid"]:
            log.info(
                "[%s] correction of %s received before it is gone: nothing to apply",
                profile,
                row["uid"],
            )
            return
        if (row.get("extra") or {}).get("retracted") or extra.get("retracted"):
            # the corrected text of a retracted message must go with it
            await self._drop_merged(client, correction, row, "its original is retracted")
            return
        if self._already_applied(row, correction_id):
            await self._drop_merged(client, correction, row, "already applied")
            return
        if correction.get("body") is None:
            return
        if await self._spoke_between(client, author, row, correction, entry["ref"]):
            log.info(
                "[%s] correction %s of %s, which was not the sender's last message: kept as a "
                "message of its own (XEP-0308 corrects the last message only)",
                profile,
                correction["uid"],
                row["uid"],
            )
            await self.host.storage.history_update_extra(
                profile, correction["uid"], {"correction_refused": "not the last message"}
            )
            return
        await self.apply(
            client, row, correction["body"], correction, correction_id=correction_id or ""
        )
        await self._drop_merged(client, correction, row, "applied to its original")

    async def _drop_merged(self, client, correction: dict, row: dict, why: str) -> None:
        """Delete a correction stored on its own, now folded into (or gone with) ``row``."""
        try:
            await self.host.storage.history_delete(client.profile, correction["uid"])
        except errors.NotFound:
            return
        log.info(
            "[%s] correction %s of %s removed from the history: %s",
            client.profile,
            correction["uid"],
            row["uid"],
            why,
        )
        self.emit_update(
            client.profile,
            correction["uid"],
            "deleted",
            {"deleted": True, "merged_into": row["uid"]},
        )

    async def _spoke_between(
        self, client, author: Author, row: dict, correction: dict, ref: str
    ) -> bool:
        """True if ``author`` sent another message between ``row`` and its ``correction``
        (other corrections of ``row`` aside): ``row`` was not its last message then."""
        start, end = row["timestamp"], correction["timestamp"]
        if end <= start:
            return False
        peer, groupchat = self.conversation(client, row)
        rows = await self.host.storage.history_get(
            client.profile,
            with_jid=peer,
            after=start,
            before=end,
            limit=500,
            msg_type="groupchat" if groupchat else ("chat", "normal", "headline"),
        )
        own = client.jid.userhost()
        page = [
            d
            for d in session_state(client).archived.live()
            if start < d["timestamp"] < end
            and ArchivedPage._in_conversation(d, peer, groupchat, own)
        ]
        return any(
            other["uid"] not in (row["uid"], correction["uid"])
            and (other.get("extra") or {}).get("replace_id") != ref
            and author.wrote(other)
            for other in (*rows, *page)
        )

    @staticmethod
    def _already_applied(row: dict, correction_id: str) -> bool:
        if not correction_id:
            return False
        edits = (row.get("extra") or {}).get("edits") or []
        return any(isinstance(e, dict) and e.get("id") == correction_id for e in edits)

    async def apply(self, client, target: dict, body: str, data: dict, correction_id: str) -> None:
        """Replace ``target``'s body by ``body`` (``data``: the correction's hooks data)."""
        if len(body) > MAX_BODY_LENGTH:
            body = body[:MAX_BODY_LENGTH]
        extra = target.get("extra") or {}
        now = data.get("timestamp") or time.time()
        previous_time = extra.get("edited") or target["timestamp"]
        edits = [e for e in (extra.get("edits") or []) if isinstance(e, dict)]
        edits.append(
            {
                "body": target.get("body") or "",
                "timestamp": previous_time,
                "replaced": now,
                "id": correction_id,
            }
        )
        edits = edits[-MAX_EDITS:]
        while len(edits) > 1 and sum(len(e.get("body") or "") for e in edits) > MAX_EDITS_CHARS:
            edits.pop(0)
        new_extra = data.get("extra") or {}
        updates = {"edits": edits, "edited": now}
        for key in BODY_DERIVED_KEYS:
            updates[key] = new_extra.get(key)
        for key in ("reply_to", "reply_to_id", "reply_to_jid"):
            if new_extra.get(key):
                updates[key] = new_extra[key]
        await self.update_row(client, target, "correction", updates, body=body, set_body=True)
        log.debug("[%s] message %s corrected", client.profile, target["uid"])


PLUGIN = CorrectionPlugin
