"""What the message editing plugins share: XEP-0308, 0424, 0425, 0444 and 0461.

Not a plugin (the loader skips modules whose name starts with ``_``). It holds the base
class :class:`EditingPlugin` and the helpers the corrections, retractions, moderation,
reactions and replies plugins have in common, so that each plugin module holds only its
XEP:

* who sent a message, as far as editing rights go (:class:`Author`, :func:`same_author`:
  bare JID, or room occupant with occupant-id / real JID);
* which id names a stored message for each XEP (:meth:`EditingPlugin.reference_for`,
  :func:`ids_of`) and how to find the message an incoming payload refers to (history
  first, then the archive page being processed);
* how to change a stored message and tell the frontends (``MessageUpdate``), and how to
  send a payload-only message through the send hooks;
* the references received before their message: a plugin lists the kinds it keeps
  (``pending_kinds``) and says how to check and apply them (``pending_accepts``,
  ``pending_apply``); the store itself is :mod:`sat.plugins._pending_references`.

Archived messages (XEP-0313) go through the same hooks *before* their page is stored: a
correction, retraction or reaction whose original is in the same page is applied to that
page's message before it is stored (see :class:`ArchivedPage`).
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

from sat.core import errors
from sat.core.messages import full_jid, new_uid, parse_jid
from sat.core.plugin import Plugin

log = logging.getLogger(__name__)

NS_SID = "urn:xmpp:sid:0"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_FALLBACK = "urn:xmpp:fallback:0"
NS_HINTS = "urn:xmpp:hints"

#: longest id we accept in a reference (ids are opaque; a huge one is refused)
MAX_ID_LENGTH = 256
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
    def in_conversation(data: dict, peer: str, groupchat: bool, own: str) -> bool:
        """Whether the message ``data`` belongs to the conversation with ``peer`` (``own``:
        our bare JID)."""
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
            if not self.in_conversation(data, peer, groupchat, own):
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
            if self.in_conversation(data, peer, groupchat, own) and author.wrote(data):
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


# --- the saved form of an Author (pending references) ----------------------------------------

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
    """``author`` as plain data (pending references keep it in ``kv``)."""
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


# --- base of the editing plugins -------------------------------------------------------------


class EditingPlugin(Plugin):
    """What corrections, retractions, moderation, reactions and replies share."""

    dependencies = ("XEP-0030", "XEP-0359")
    recommendations = ("XEP-0045", "XEP-0115", "XEP-0184", "XEP-0280", "XEP-0313")
    #: features advertised in disco
    features: tuple[str, ...] = ()

    #: keep the real JID of room occupants with their messages (checked by later edits)
    notes_identity = False
    #: kinds of references to unknown messages this plugin keeps (see _pending_references)
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
        # imported here, not at the top: the store is built on this module's Author and
        # ids_of, so a top-level import each way would be a cycle at load time
        from sat.plugins._pending_references import pending_references

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

    # --- references received before their message (see _pending_references) ------------

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
            to = full_jid(peer, row.get("dest_resource"))
        else:
            to = full_jid(peer, row.get("source_resource"))
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
