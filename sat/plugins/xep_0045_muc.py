"""XEP-0045: Multi-User Chat (group chat rooms).

What it does
    Join (with a password; a nick already taken gets a ``_`` suffix, or a clear
    :class:`NickConflict` error with the ``nick_conflict=error`` option), leave,
    change nick, read/set the subject, keep every room's occupants with their
    role and affiliation (from the presences the room sends), kick/ban, change
    roles and affiliations, read and submit the room configuration (XEP-0004 data
    forms given as plain records), create rooms (instant, or configured with the
    values given at join), destroy them, and exchange group chat and private
    messages. After a fresh (not resumed) reconnection every room is joined again;
    a room whose service removed us (status 332: shutdown, 333: error) is joined
    again later, with growing delays (``MucRoomLeft`` then says ``rejoining``).

    Occupants' presences belong to this plugin (``MucOccupantUpdate``): its stream
    observer runs before the core's and marks the available/unavailable presences of
    the rooms it has (``elt.claimed_by = "XEP-0045"``), so the core presence handling
    does not take ``room@service/nick`` for a contact's resource (no ``PresenceUpdate``,
    nothing in ``PresenceStatusesGet``, no ghost after leaving). Presences from rooms we
    are not in, and presence errors, are left to the core as usual.

Messages
    A group chat message we send is *not* stored when it is sent (see
    :mod:`sat.core.messages`): the room reflects it to every occupant, us included,
    and that reflection is stored once, with the uid ``MessageSend`` returned, the
    room's stanza-id (when the room advertises ``urn:xmpp:sid:0``) and
    ``outgoing`` set. Stored group chat rows have ``type="groupchat"``, ``source`` =
    the room's bare JID and ``source_resource`` = the sender's nick. Private messages
    to and from occupants are ``chat`` messages with ``extra["muc_pm"]``.
    Subject changes are not stored: they update the room and emit ``MucSubject``.

    Untrusted input is filtered: a group chat message from a room we are not in,
    a subject change from a nick that is not an occupant (once the room's own
    initial subject arrived), a presence that is not from a joined room, a role
    or affiliation outside the XEP's values, an invalid status code, JID or nick:
    all are ignored with a log line and change nothing.

History and MAM
    When a room advertises ``urn:xmpp:mam:2`` the join asks for no history
    (``<history maxstanzas='0'/>``): the history comes from the room's archive.
    Otherwise it asks for what was said since the last stored message of the room
    (or the last ``[xep_0045] history_size`` messages the first time).

    With the MAM plugin (``XEP-0313``, auto catch-up on), for a room with MUC MAM this
    plugin calls ``mam.prepare_catch_up(client, room_jid)`` just before sending the
    join presence (so the catch-up starts before anything live of the room is stored)
    and ``mam.catch_up(client, room_jid)`` in the background once joined (also after
    every automatic rejoin).

    Public API for other plugins::

        muc = host.plugins["XEP-0045"]
        muc.add_join_callback(callback)   # callback(client, room) -> None or awaitable
        muc.joined_rooms(client)          # [Room] whose state is "joined"
        muc.get_room(client, room_jid)    # Room or None
        muc.is_joined(client, room_jid)
        room.jid (bare JID), room.nick, room.mam (bool: the room has MUC MAM),
        room.features (set of disco features), room.rejoined (bool)

    Every join callback is called each time a room is joined (also on every automatic
    rejoin), once our own presence arrived, in the background (the join does not wait
    for it); an exception is logged. Stored group chat rows have ``type="groupchat"``,
    ``source`` = room, ``source_resource`` = nick: the ``message_received`` hook of
    this plugin produces them for live and archived messages while the room is joined.

Bridge (interface ``plugin``)
    ``MucJoin(profile, room, nick, options a{sv}) -> a{sv}``, ``MucLeave``,
    ``MucNickSet``, ``MucSubjectSet``, ``MucOccupantsGet -> aa{sv}``,
    ``MucRoomsJoined -> aa{sv}``, ``MucKick``, ``MucBan``, ``MucAffiliationSet``,
    ``MucRoleSet``, ``MucAffiliationsGet -> aa{sv}``, ``MucConfigGet -> a{sv}``,
    ``MucConfigSet``, ``MucRoomDestroy``, ``MucServicesGet -> as``; signals
    ``MucRoomJoined``, ``MucRoomLeft``, ``MucOccupantUpdate``, ``MucSubject``,
    ``MucMessageError``.
"""

from __future__ import annotations

import datetime
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure as _Failure
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.protocols.jabber import xmlstream as jabber_xmlstream
from twisted.words.xish import domish
from wokkel import data_form, disco, iwokkel
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core import (
    errors,
    hooks,
    wokkel_compat,  # noqa: F401  (sat/__init__ loads it before wokkel)
)
from sat.core.messages import parse_jid
from sat.core.plugin import Plugin
from sat.memory.config import register_option, register_section

log = logging.getLogger(__name__)

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = NS_MUC + "#user"
NS_MUC_ADMIN = NS_MUC + "#admin"
NS_MUC_OWNER = NS_MUC + "#owner"
NS_MUC_ROOMCONFIG = NS_MUC + "#roomconfig"
NS_MAM = "urn:xmpp:mam:2"
NS_SID = "urn:xmpp:sid:0"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_X_DATA = data_form.NS_X_DATA

ROLES = ("moderator", "participant", "visitor", "none")
AFFILIATIONS = ("owner", "admin", "member", "outcast", "none")
SHOWS = ("away", "chat", "dnd", "xa")

#: limits against hostile rooms
MAX_OCCUPANTS = 10_000
MAX_STATUS_LENGTH = 2_000
MAX_SUBJECT_LENGTH = 10_000
MAX_REASON_LENGTH = 2_000
#: ids of our own recent group chat messages kept per room, to recognise reflections
SENT_IDS_KEPT = 500

DEFAULT_JOIN_TIMEOUT = 30.0
DEFAULT_HISTORY_SIZE = 20
MAX_SUFFIX_ATTEMPTS = 4
#: automatic rejoin after the room service went away (status 332/333): delays, attempts
REJOIN_FIRST_DELAY = 5.0
REJOIN_MAX_DELAY = 300.0
REJOIN_MAX_ATTEMPTS = 8

register_section("xep_0045", "Multi-User Chat (XEP-0045): group chat rooms.")
register_option(
    "xep_0045",
    "join_timeout",
    "float",
    DEFAULT_JOIN_TIMEOUT,
    "Seconds to wait for a room to answer a join, nick change or leave before giving up.",
    min=1,
)
register_option(
    "xep_0045",
    "history_size",
    "int",
    DEFAULT_HISTORY_SIZE,
    "Number of past messages asked from a room without archive (MUC MAM) the first time it "
    "is joined; later joins ask for what was said since the last stored message.",
    min=0,
)


# --- errors ---------------------------------------------------------------------------


class MucError(errors.SatError):
    """The room refused the request."""

    dbus_name = "MucError"


class NickConflict(errors.AlreadyExists):
    """The nick is already used in the room."""

    dbus_name = "MucNickConflict"


class PasswordRequired(errors.PermissionDenied):
    """The room needs a password, or the one given is wrong."""

    dbus_name = "MucPasswordRequired"


class Banned(errors.PermissionDenied):
    """We are banned from the room."""

    dbus_name = "MucBanned"


class MembersOnly(errors.PermissionDenied):
    """The room is members-only and we are not a member."""

    dbus_name = "MucMembersOnly"


class CreationRestricted(errors.PermissionDenied):
    """The room does not exist and we may not create it."""

    dbus_name = "MucCreationRestricted"


class RoomNotFound(errors.NotFound):
    """The room does not exist (or is locked while its owner configures it)."""

    dbus_name = "MucRoomNotFound"


class NickNotAcceptable(errors.InvalidArgument):
    """The room does not accept this nick."""

    dbus_name = "MucNickNotAcceptable"


class RoomFull(MucError):
    """The room has reached its maximum number of occupants."""

    dbus_name = "MucRoomFull"


class NotJoined(errors.NotFound):
    """We are not in this room."""

    dbus_name = "MucNotJoined"


#: stanza error condition of a join refusal -> (error class, explanation)
JOIN_ERRORS: dict[str, tuple[type[errors.SatError], str]] = {
    "not-authorized": (PasswordRequired, "a password is required, or the one given is wrong"),
    "forbidden": (Banned, "you are banned from this room"),
    "item-not-found": (RoomNotFound, "the room does not exist or is locked"),
    "not-allowed": (CreationRestricted, "room creation is restricted on this service"),
    "not-acceptable": (NickNotAcceptable, "this nick is not accepted (a reserved nick?)"),
    "registration-required": (MembersOnly, "the room is members-only"),
    "conflict": (NickConflict, "this nick is already used in the room"),
    "service-unavailable": (RoomFull, "the room is full or unavailable"),
    "jid-malformed": (NickNotAcceptable, "the nick is missing or invalid"),
    "remote-server-not-found": (errors.NotFound, "the room's server cannot be reached"),
    "remote-server-timeout": (errors.Timeout, "the room's server did not answer in time"),
}

#: status codes of an unavailable self-presence -> reason given in MucRoomLeft
LEFT_REASONS = {
    301: "banned",
    307: "kicked",
    321: "affiliation",
    322: "members_only",
    332: "shutdown",
    333: "error",
}


def stanza_error(elt: domish.Element) -> tuple[str, str]:
    """(condition, text) of a stanza's ``<error/>``; ("undefined-condition", "") if none."""
    error = next((c for c in elt.elements() if c.name == "error"), None)
    if error is None:
        return "undefined-condition", ""
    condition = "undefined-condition"
    text = ""
    for child in error.elements():
        if child.uri != NS_STANZAS:
            continue
        if child.name == "text":
            text = str(child)[:MAX_REASON_LENGTH]
        elif condition == "undefined-condition":
            condition = child.name
    return condition, text


def join_error(condition: str, text: str, room: str) -> errors.SatError:
    cls, explanation = JOIN_ERRORS.get(condition, (MucError, condition))
    message = f"cannot join {room}: {explanation} ({condition})"
    if text:
        message += f": {text}"
    return cls(message, condition=condition, room=room, text=text)


# --- data forms as plain records -------------------------------------------------------


def _str_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, jabber_jid.JID):
        return value.full()
    return str(value)


def form_to_dict(form: data_form.Form) -> dict:
    """Bridge-friendly view of a data form (XEP-0004)."""
    fields = []
    for field in form.fieldList:
        options = [
            {"value": _str_value(o.value), "label": o.label or ""} for o in field.options or ()
        ]
        fields.append(
            {
                "var": field.var or "",
                "type": field.fieldType or "text-single",
                "label": field.label or "",
                "desc": field.desc or "",
                "required": bool(field.required),
                "values": [_str_value(v) for v in field.values],
                "options": options,
            }
        )
    return {
        "type": form.formType or "form",
        "form_type": form.formNamespace or "",
        "title": form.title or "",
        "instructions": [str(i) for i in form.instructions or ()],
        "fields": fields,
    }


def _values_for(field: data_form.Field, value: Any) -> list[str]:
    multi = field.fieldType in ("list-multi", "jid-multi", "text-multi")
    if isinstance(value, list | tuple):
        values = [_str_value(v) for v in value]
        if not multi and len(values) > 1:
            raise errors.InvalidArgument(f"field {field.var!r} takes one value")
        return values
    if field.fieldType == "boolean":
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("1", "0", "true", "false"):
                raise errors.InvalidArgument(f"field {field.var!r} is a boolean, not {value!r}")
            return ["1" if lowered in ("1", "true") else "0"]
        return ["1" if value else "0"]
    text = _str_value(value)
    if field.fieldType == "text-multi":
        return text.split("\n")
    return [text]


def submit_form(form: data_form.Form, values: dict) -> domish.Element:
    """A ``<x type='submit'/>`` answering ``form`` with its current values replaced by ``values``.

    Unknown fields are refused with InvalidArgument; fixed fields are left out.
    """
    by_var = {f.var: f for f in form.fieldList if f.var}
    unknown = set(values) - set(by_var)
    if unknown:
        raise errors.InvalidArgument(f"unknown form fields: {', '.join(sorted(unknown))}")
    x = domish.Element((NS_X_DATA, "x"))
    x["type"] = "submit"
    if form.formNamespace and "FORM_TYPE" not in by_var:
        form_type = x.addElement("field")
        form_type["var"] = "FORM_TYPE"
        form_type["type"] = "hidden"
        form_type.addElement("value", content=form.formNamespace)
    for var, field in by_var.items():
        if field.fieldType == "fixed":
            continue
        if var in values:
            new_values = _values_for(field, values[var])
        else:
            new_values = [_str_value(v) for v in field.values]
        field_elt = x.addElement("field")
        field_elt["var"] = var
        if field.fieldType == "hidden" or var == "FORM_TYPE":
            field_elt["type"] = "hidden"
        for value in new_values:
            field_elt.addElement("value", content=value)
    return x


def parse_form(parent: domish.Element | None) -> data_form.Form | None:
    if parent is None:
        return None
    x = next((c for c in parent.elements() if c.uri == NS_X_DATA and c.name == "x"), None)
    if x is None:
        return None
    try:
        return data_form.Form.fromElement(x)
    except Exception as e:
        log.warning("invalid data form ignored: %s", e)
        return None


# --- room state -------------------------------------------------------------------------


class Occupant:
    __slots__ = ("nick", "jid", "role", "affiliation", "show", "status", "occupant_id")

    def __init__(self, nick: str):
        self.nick = nick
        self.jid = ""
        self.role = "none"
        self.affiliation = "none"
        self.show = ""
        self.status = ""
        self.occupant_id = ""

    def as_dict(self) -> dict:
        data = {
            "nick": self.nick,
            "role": self.role,
            "affiliation": self.affiliation,
            "show": self.show,
            "status": self.status,
        }
        if self.jid:
            data["jid"] = self.jid
        if self.occupant_id:
            data["occupant_id"] = self.occupant_id
        return data


class Room:
    """What we know of one room we are in (or joining)."""

    def __init__(self, room_jid: jabber_jid.JID, nick: str, password: str | None = None):
        self.jid = room_jid
        self.nick = nick
        self.password = password or None
        #: joining, joined, left
        self.state = "joining"
        self.occupants: dict[str, Occupant] = {}
        self.subject = ""
        self.subject_by = ""
        self.subject_received = False
        self.features: set[str] = set()
        self.name = ""
        self.created = False
        self.rejoined = False
        self.last_activity = 0.0
        #: nick we asked for (join or nick change)
        self.pending_nick: str | None = None
        self.join_waiter: defer.Deferred | None = None
        self.nick_waiter: defer.Deferred | None = None
        self.leave_waiter: defer.Deferred | None = None
        self.subject_waiter: defer.Deferred | None = None
        self.subject_request_id: str | None = None
        #: id of a group chat message we sent -> {"uid", "extra"}
        self.sent: OrderedDict[str, dict] = OrderedDict()
        self.join_options: dict = {}
        #: a join (or rejoin) is running; join_observers wait for its outcome
        self.joining = False
        self.join_observers: list[defer.Deferred] = []
        #: automatic rejoin pending (the room's service went away): IDelayedCall, attempts
        self.rejoin_call = None
        self.rejoin_attempts = 0

    @property
    def mam(self) -> bool:
        return NS_MAM in self.features

    @property
    def occupant_jid(self) -> jabber_jid.JID:
        return jabber_jid.JID(tuple=(self.jid.user, self.jid.host, self.nick))

    @property
    def own(self) -> Occupant | None:
        return self.occupants.get(self.nick)

    def remember_sent(self, msg_id: str, uid: str, extra: dict) -> None:
        self.sent[msg_id] = {"uid": uid, "extra": dict(extra)}
        while len(self.sent) > SENT_IDS_KEPT:
            self.sent.popitem(last=False)

    def info(self, with_occupants: bool = True) -> dict:
        own = self.own
        data = {
            "room": self.jid.userhost(),
            "nick": self.nick,
            "state": self.state,
            "name": self.name,
            "role": own.role if own else "none",
            "affiliation": own.affiliation if own else "none",
            "subject": self.subject,
            "subject_by": self.subject_by,
            "created": self.created,
            "rejoined": self.rejoined,
            "mam": self.mam,
            "features": sorted(self.features),
            "occupants_count": len(self.occupants),
        }
        if with_occupants:
            data["occupants"] = [o.as_dict() for o in self.occupants.values()]
        return data


def _parse_codes(x: domish.Element | None) -> set[int]:
    codes = set()
    if x is None:
        return codes
    for status in x.elements(NS_MUC_USER, "status"):
        code = status.getAttribute("code", "")
        if len(code) == 3 and code.isdigit():
            codes.add(int(code))
    return codes


def _parse_item(x: domish.Element | None) -> dict:
    """role, affiliation, jid, nick, actor, reason of a muc#user/muc#admin ``<item/>``."""
    item = {"role": None, "affiliation": None, "jid": "", "nick": "", "actor": "", "reason": ""}
    if x is None:
        return item
    elt = next((c for c in x.elements() if c.name == "item" and c.uri == x.uri), None)
    if elt is None:
        return item
    role = elt.getAttribute("role")
    if role in ROLES:
        item["role"] = role
    elif role is not None:
        log.info("ignoring unknown MUC role %r", role[:50])
    affiliation = elt.getAttribute("affiliation")
    if affiliation in AFFILIATIONS:
        item["affiliation"] = affiliation
    elif affiliation is not None:
        log.info("ignoring unknown MUC affiliation %r", affiliation[:50])
    real = elt.getAttribute("jid")
    if real:
        try:
            item["jid"] = jabber_jid.JID(real).full()
        except jabber_jid.InvalidFormat:
            log.info("ignoring invalid occupant JID %r", real[:100])
    nick = elt.getAttribute("nick")
    if nick:
        item["nick"] = nick
    for child in elt.elements():
        if child.name == "actor":
            item["actor"] = child.getAttribute("nick") or child.getAttribute("jid") or ""
        elif child.name == "reason":
            item["reason"] = str(child)[:MAX_REASON_LENGTH]
    return item


def _valid_nick(room_jid: jabber_jid.JID, nick: str) -> bool:
    try:
        jabber_jid.JID(tuple=(room_jid.user, room_jid.host, nick))
    except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
        return False
    return bool(nick)


def _format_stamp(timestamp: float) -> str:
    """XEP-0082 DateTime, in UTC, with milliseconds."""
    when = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


# --- stream handler ---------------------------------------------------------------------


@implementer(iwokkel.IDisco)
class MucHandler(XMPPHandler):
    def __init__(self, plugin: MucPlugin, client):
        super().__init__()
        self.plugin = plugin
        self.client = client

    def connectionInitialized(self):
        self.xmlstream.addObserver("/presence", self._on_presence, priority=10)
        self.xmlstream.addObserver("/message[@type='error']", self._on_message_error)

    def _on_presence(self, elt):
        try:
            self.plugin.on_presence(self.client, elt)
        except Exception:
            log.exception("[%s] MUC presence handling failed", self.client.profile)

    def _on_message_error(self, elt):
        try:
            self.plugin.on_message_error(self.client, elt)
        except Exception:
            log.exception("[%s] MUC message error handling failed", self.client.profile)

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier:
            return []
        return [disco.DiscoFeature(NS_MUC)]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


# --- plugin -----------------------------------------------------------------------------


class MucPlugin(Plugin):
    name = "XEP-0045"
    label = "Multi-User Chat"
    xeps = ("XEP-0045",)
    dependencies = ("XEP-0030",)
    recommendations = ("XEP-0313",)
    description = "Group chat rooms: join, talk, occupants, moderation, configuration."

    def __init__(self, host):
        super().__init__(host)
        from twisted.internet import reactor

        self.clock = reactor
        self.join_timeout = float(self.config("xep_0045", "join_timeout", DEFAULT_JOIN_TIMEOUT))
        self.history_size = int(self.config("xep_0045", "history_size", DEFAULT_HISTORY_SIZE))
        #: profile -> {room bare JID: Room}
        self._rooms: dict[str, dict[str, Room]] = {}
        self._join_callbacks: list[Callable] = []
        host.hooks.add("message_received", self._on_message_received, priority=60)
        host.hooks.add("message_send", self._on_message_send, priority=60)
        host.hooks.add("presence_send", self._on_presence_send, priority=-100)
        self._register_bridge()

    # --- public API ---------------------------------------------------------------------

    def add_join_callback(self, callback: Callable) -> None:
        """``callback(client, room)`` runs (in the background) every time a room is joined."""
        self._join_callbacks.append(callback)

    def remove_join_callback(self, callback: Callable) -> None:
        self._join_callbacks = [c for c in self._join_callbacks if c != callback]

    def rooms(self, client) -> list[Room]:
        """Every room of the profile, whatever its state."""
        return list(self._rooms.get(client.profile, {}).values())

    def joined_rooms(self, client) -> list[Room]:
        return [r for r in self.rooms(client) if r.state == "joined"]

    def get_room(self, client, room_jid) -> Room | None:
        rooms = self._rooms.get(client.profile)
        if not rooms:
            # the common case for every one-to-one message: no JID to parse
            return None
        try:
            bare = self._room_jid(room_jid).userhost()
        except errors.InvalidArgument:
            return None
        return rooms.get(bare)

    def is_joined(self, client, room_jid) -> bool:
        room = self.get_room(client, room_jid)
        return room is not None and room.state == "joined"

    def default_nick(self, client) -> str:
        return client.jid.user or "user"

    # --- helpers --------------------------------------------------------------------------

    @property
    def disco(self):
        return self.host.plugins["XEP-0030"]

    @staticmethod
    def _room_jid(room) -> jabber_jid.JID:
        if isinstance(room, jabber_jid.JID):
            entity = room
        else:
            try:
                entity = parse_jid(str(room).strip())
            except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
                raise errors.InvalidArgument(f"{room!r} is not a valid room JID") from None
        if not entity.user or entity.resource:
            raise errors.InvalidArgument(f"{entity.full()!r} is not a room JID (room@service)")
        return entity.userhostJID()

    def _joined_room(self, client, room_jid) -> Room:
        room = self.get_room(client, room_jid)
        if room is None or room.state != "joined":
            raise NotJoined(f"not in room {self._room_jid(room_jid).userhost()}")
        return room

    def _waiter(self, timeout: float | None, on_timeout: Callable[[], Exception]):
        d = defer.Deferred()
        call = self.clock.callLater(timeout or self.join_timeout, _fail_waiter, d, on_timeout)

        def cancel(result):
            if call.active():
                call.cancel()
            return result

        d.addBoth(cancel)
        return d

    def _mam(self):
        """The MAM plugin when it catches up by itself and offers room catch-up, else None."""
        mam = getattr(self.host, "plugins", {}).get("XEP-0313")
        if mam is None or not getattr(mam, "auto_catch_up", True):
            return None
        if not hasattr(mam, "prepare_catch_up") or not hasattr(mam, "catch_up"):
            return None
        return mam

    def _emit(self, name: str, *args) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is not None:
            bridge.emit(name, *args)

    # --- joining ------------------------------------------------------------------------

    async def join(
        self,
        client,
        room_jid,
        nick: str | None = None,
        password: str | None = None,
        options: dict | None = None,
    ) -> Room:
        """Join ``room_jid`` as ``nick``; return the Room once our presence is in.

        options: ``nick_conflict`` ("suffix" (default) or "error"), ``history``
        (maximum number of past messages, overriding the MAM/since choice),
        ``create`` ("instant" (default): a new room is unlocked with its default
        configuration; "none": left for MucConfigGet/Set), ``config`` (record of
        room configuration values submitted when the room is new), ``timeout``.
        """
        room_jid = self._room_jid(room_jid)
        options = dict(options or {})
        nick = (nick or "").strip() or self.default_nick(client)
        if not _valid_nick(room_jid, nick):
            raise NickNotAcceptable(f"{nick!r} is not a valid nick")
        conflict = options.get("nick_conflict", "suffix")
        if conflict not in ("suffix", "error"):
            raise errors.InvalidArgument("nick_conflict must be 'suffix' or 'error'")
        if options.get("create", "instant") not in ("instant", "none"):
            raise errors.InvalidArgument("create must be 'instant' or 'none'")
        rooms = self._rooms.setdefault(client.profile, {})
        existing = rooms.get(room_jid.userhost())
        if existing is not None:
            if existing.state == "joined":
                return existing
            if existing.joining:
                observer = defer.Deferred()
                existing.join_observers.append(observer)
                await observer
                return existing
            self._cancel_rejoin(existing)  # waiting to rejoin: this join replaces it
        room = Room(room_jid, nick, password)
        room.join_options = options
        rooms[room_jid.userhost()] = room
        await self._run_join(client, room, conflict)
        return room

    async def _run_join(self, client, room: Room, conflict: str) -> None:
        """Join (or rejoin) ``room``; on failure the room is forgotten and the error raised."""
        rooms = self._rooms.setdefault(client.profile, {})
        room.joining = True
        outcome: Any = room
        try:
            await self._refresh_features(client, room)
            await self._join_attempts(client, room, conflict)
            await self._after_join(client, room)
        except BaseException as e:
            outcome = _Failure(e)
            if rooms.get(room.jid.userhost()) is room:
                del rooms[room.jid.userhost()]
            if room.state == "joined":
                # in the room but unusable (its configuration failed): get out of it
                leave = domish.Element((None, "presence"))
                leave["to"] = room.occupant_jid.full()
                leave["type"] = "unavailable"
                client.send(leave)
            room.state = "left"
            raise
        finally:
            room.joining = False
            observers, room.join_observers = room.join_observers, []
            for observer in observers:
                if isinstance(outcome, _Failure):
                    observer.errback(outcome)
                else:
                    observer.callback(outcome)

    async def _refresh_features(self, client, room: Room) -> None:
        try:
            info = await self.disco.info(client, room.jid, use_cache=False)
        except errors.SatError as e:
            # item-not-found: the room does not exist yet (it will be created)
            log.debug("[%s] no disco#info for %s: %s", client.profile, room.jid.full(), e)
            room.features = set()
            return
        room.features = set(info.features)
        for (category, _type), name in info.identities.items():
            if category == "conference" and name:
                room.name = str(name)

    async def _join_attempts(self, client, room: Room, conflict: str) -> None:
        base = room.nick
        for attempt in range(MAX_SUFFIX_ATTEMPTS):
            room.nick = base if attempt == 0 else base + "_" * attempt
            try:
                await self._send_join(client, room)
                return
            except NickConflict:
                if conflict == "error" or attempt == MAX_SUFFIX_ATTEMPTS - 1:
                    raise
                log.info(
                    "[%s] nick %r taken in %s, trying another",
                    client.profile,
                    room.nick,
                    room.jid.userhost(),
                )

    async def _history_element(self, client, room: Room, x: domish.Element) -> None:
        wanted = room.join_options.get("history")
        history = x.addElement("history")
        if wanted is not None:
            try:
                history["maxstanzas"] = str(max(0, int(wanted)))
            except (TypeError, ValueError):
                raise errors.InvalidArgument("history must be a number of messages") from None
            return
        if room.mam:
            history["maxstanzas"] = "0"
            return
        last = None
        storage = getattr(self.host, "storage", None)
        if storage is not None:
            try:
                rows = await storage.history_get(
                    client.profile, with_jid=room.jid.userhost(), limit=1, msg_type="groupchat"
                )
                last = rows[-1]["timestamp"] if rows else None
            except Exception as e:
                log.warning(
                    "[%s] cannot read the last message of %s: %s",
                    client.profile,
                    room.jid.userhost(),
                    e,
                )
        if last is not None:
            # just after the last stored message: it is not sent again
            history["since"] = _format_stamp(last + 0.001)
        else:
            history["maxstanzas"] = str(self.history_size)

    async def _send_join(self, client, room: Room) -> None:
        room.state = "joining"
        room.pending_nick = room.nick
        room.occupants.clear()
        room.subject_received = False
        presence = domish.Element((None, "presence"))
        presence["to"] = room.occupant_jid.full()
        x = presence.addElement((NS_MUC, "x"))
        if room.password:
            x.addElement("password", content=room.password)
        await self._history_element(client, room, x)
        self._copy_own_presence(client, presence)
        timeout = room.join_options.get("timeout")
        waiter = self._waiter(
            timeout,
            lambda: errors.Timeout(f"{room.jid.userhost()} did not answer the join in time"),
        )
        room.join_waiter = waiter
        mam = self._mam()
        if room.mam and mam is not None:
            # where the room's catch-up starts is read before anything of it can arrive
            try:
                mam.prepare_catch_up(client, room.jid)
            except Exception:
                log.exception("[%s] MAM preparation for %s failed", client.profile, room.jid)
        client.send(presence)
        try:
            await waiter
        finally:
            if room.join_waiter is waiter:
                room.join_waiter = None

    def _copy_own_presence(self, client, presence: domish.Element) -> None:
        own = getattr(client, "own_presence", None) or {}
        if own.get("show"):
            presence.addElement("show", content=own["show"])
        for lang, text in (own.get("statuses") or {}).items():
            status = presence.addElement("status", content=text)
            if lang and lang != "default":
                status[(jabber_xmlstream.NS_XML, "lang")] = lang

    async def _after_join(self, client, room: Room) -> None:
        if room.created and room.join_options.get("create", "instant") == "instant":
            try:
                await self._configure_new_room(client, room)
            except errors.SatError as e:
                log.warning(
                    "[%s] configuration of new room %s failed: %s",
                    client.profile,
                    room.jid.userhost(),
                    e,
                )
                if room.join_options.get("config"):
                    raise
            if room.created:
                await self._refresh_features(client, room)
        log.info("[%s] joined %s as %s", client.profile, room.jid.userhost(), room.nick)
        self._emit("MucRoomJoined", client.profile, room.jid.userhost(), room.info())
        mam = self._mam()
        if room.mam and mam is not None:
            d = defer.ensureDeferred(mam.catch_up(client, room.jid))
            d.addErrback(
                lambda f: log.warning(
                    "[%s] catch-up of %s failed: %s", client.profile, room.jid.userhost(), f.value
                )
            )
        for callback in list(self._join_callbacks):
            d = defer.maybeDeferred(callback, client, room)
            d.addErrback(
                lambda f, cb=callback: log.error(
                    "[%s] MUC join callback %r failed: %s", client.profile, cb, f.value
                )
            )

    async def _configure_new_room(self, client, room: Room) -> None:
        values = room.join_options.get("config") or {}
        query = domish.Element((NS_MUC_OWNER, "query"))
        if values:
            form = await self.config_get_form(client, room.jid)
            query.addChild(submit_form(form, values))
        else:
            x = query.addElement((NS_X_DATA, "x"))
            x["type"] = "submit"
        await self.disco.send_iq(client, room.jid, query, what="room configuration", iq_type="set")
        self._remember_secret(client, room.jid, values)

    def _remember_secret(self, client, room_jid, values: dict) -> None:
        """A password we set for a room is the one to rejoin and invite with."""
        if "muc#roomconfig_roomsecret" not in values:
            return
        room = self.get_room(client, room_jid)
        if room is not None:
            room.password = str(values["muc#roomconfig_roomsecret"] or "") or None

    async def rejoin(self, client, room: Room, retry: bool = False) -> None:
        """Join ``room`` again with the same nick and password (after a reconnection...).

        With ``retry``, a failure that may be temporary (time-out, unreachable or full
        room) schedules another attempt later (with a growing delay, a few times); other
        failures are logged and reported with ``MucRoomLeft`` (reason "error").
        """
        rooms = self._rooms.setdefault(client.profile, {})
        bare = room.jid.userhost()
        if rooms.get(bare) is not room or room.joining:
            return
        self._cancel_rejoin(room)
        room.rejoined = True
        room.join_options = {**room.join_options, "create": "none", "config": None}
        room.join_options.pop("history", None)
        try:
            await self._run_join(client, room, room.join_options.get("nick_conflict", "suffix"))
        except errors.SatError as e:
            if retry and _transient(e) and room.rejoin_attempts < REJOIN_MAX_ATTEMPTS:
                log.info(
                    "[%s] rejoining %s failed (%s), trying again later", client.profile, bare, e
                )
                if bare not in rooms:
                    rooms[bare] = room
                room.state = "left"
                self._schedule_rejoin(client, room)
                return
            log.warning("[%s] rejoining %s failed: %s", client.profile, bare, e)
            self._emit(
                "MucRoomLeft", client.profile, bare, {"reason": "error", "message": e.message}
            )
            return
        room.rejoin_attempts = 0

    # --- presence processing ---------------------------------------------------------------

    def on_presence(self, client, elt: domish.Element) -> None:
        sender_attr = elt.getAttribute("from")
        if not sender_attr:
            return
        try:
            sender = parse_jid(sender_attr)
        except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
            return
        room = self._rooms.get(client.profile, {}).get(sender.userhost())
        if room is None:
            return
        room.last_activity = self.clock.seconds()
        ptype = elt.getAttribute("type", "available")
        if ptype == "error":
            self._presence_error(client, room, sender, elt)
            return
        if ptype not in ("available", "unavailable"):
            return
        # an occupant's presence (this observer runs before the core's): not a contact's
        # resource for the core presence handling (client.presences, PresenceUpdate)
        elt.claimed_by = self.name
        nick = sender.resource
        if not nick:
            log.debug("[%s] presence from room %s itself ignored", client.profile, room.jid.full())
            return
        x = next((c for c in elt.elements() if c.uri == NS_MUC_USER and c.name == "x"), None)
        codes = _parse_codes(x)
        item = _parse_item(x)
        is_self = 110 in codes or (
            room.pending_nick is not None
            and nick == room.pending_nick
            and (room.state == "joining" or room.nick_waiter is not None)
        )
        if ptype == "unavailable":
            self._unavailable(client, room, nick, codes, item, x, is_self)
        else:
            self._available(client, room, nick, codes, item, elt, is_self)

    def _presence_error(self, client, room: Room, sender: jabber_jid.JID, elt) -> None:
        condition, text = stanza_error(elt)
        pending = room.pending_nick
        from_pending = sender.resource in (None, pending)
        if room.state == "joining" and room.join_waiter is not None and from_pending:
            waiter, room.join_waiter = room.join_waiter, None
            waiter.errback(join_error(condition, text, room.jid.userhost()))
            return
        if room.nick_waiter is not None and from_pending:
            waiter, room.nick_waiter = room.nick_waiter, None
            room.pending_nick = None
            cls, explanation = JOIN_ERRORS.get(condition, (MucError, condition))
            message = f"cannot change nick in {room.jid.userhost()}: {explanation} ({condition})"
            waiter.errback(cls(message + (f": {text}" if text else ""), condition=condition))
            return
        log.info(
            "[%s] presence error from %s: %s %s", client.profile, sender.full(), condition, text
        )

    def _read_presence(self, occupant: Occupant, elt: domish.Element, item: dict) -> None:
        show = ""
        status = ""
        for child in elt.elements():
            if child.name == "show" and str(child) in SHOWS:
                show = str(child)
            elif child.name == "status" and not status:
                status = str(child)[:MAX_STATUS_LENGTH]
            elif child.name == "occupant-id" and child.uri == NS_OCCUPANT_ID:
                occupant.occupant_id = (child.getAttribute("id") or "")[:256]
        occupant.show = show
        occupant.status = status
        if item["role"] is not None:
            occupant.role = item["role"]
        if item["affiliation"] is not None:
            occupant.affiliation = item["affiliation"]
        if item["jid"]:
            occupant.jid = item["jid"]

    def _available(self, client, room, nick, codes, item, elt, is_self) -> None:
        occupant = room.occupants.get(nick)
        new = occupant is None
        if new:
            if len(room.occupants) >= MAX_OCCUPANTS:
                log.warning(
                    "[%s] too many occupants in %s, ignoring %r",
                    client.profile,
                    room.jid.userhost(),
                    nick[:50],
                )
                return
            occupant = Occupant(nick)
            room.occupants[nick] = occupant
        if NS_OCCUPANT_ID not in room.features:
            occupant.occupant_id = ""
        self._read_presence(occupant, elt, item)
        if NS_OCCUPANT_ID not in room.features:
            occupant.occupant_id = ""
        if is_self:
            if room.state == "joining":
                room.nick = nick  # the service may have changed it (210)
                room.pending_nick = None
                room.created = 201 in codes
                room.state = "joined"
                if room.join_waiter is not None:
                    waiter, room.join_waiter = room.join_waiter, None
                    waiter.callback(room)
                return
            if room.nick_waiter is not None:
                room.nick = nick
                room.pending_nick = None
                waiter, room.nick_waiter = room.nick_waiter, None
                waiter.callback(nick)
        if room.state != "joined":
            return  # the occupants list arrives with MucRoomJoined
        data = occupant.as_dict()
        data["state"] = "joined" if new else "updated"
        data["self"] = is_self
        data["codes"] = sorted(codes)
        self._emit("MucOccupantUpdate", client.profile, room.jid.userhost(), data)

    def _unavailable(self, client, room, nick, codes, item, x, is_self) -> None:
        if not is_self and nick == room.nick and room.state == "joined":
            # our own nick without status 110: not a valid self-presence, keep our state
            log.info(
                "[%s] unavailable for our nick in %s without status 110: ignored",
                client.profile,
                room.jid.userhost(),
            )
            return
        occupant = room.occupants.pop(nick, None)
        if 303 in codes:
            new_nick = item["nick"]
            if not new_nick or not _valid_nick(room.jid, new_nick):
                log.info(
                    "[%s] nick change in %s without a valid new nick",
                    client.profile,
                    room.jid.userhost(),
                )
                return
            if occupant is None:
                occupant = Occupant(nick)
            occupant.nick = new_nick
            if item["role"] is not None:
                occupant.role = item["role"]
            if item["affiliation"] is not None:
                occupant.affiliation = item["affiliation"]
            room.occupants[new_nick] = occupant
            if is_self:
                room.nick = new_nick
            if room.state == "joined":
                data = occupant.as_dict()
                data.update(
                    {"state": "nick", "old_nick": nick, "self": is_self, "codes": sorted(codes)}
                )
                self._emit("MucOccupantUpdate", client.profile, room.jid.userhost(), data)
            return
        if is_self:
            reason = "left"
            for code, name in LEFT_REASONS.items():
                if code in codes:
                    reason = name
                    break
            details = {"reason": reason, "codes": sorted(codes)}
            destroy = None
            if x is not None:
                destroy = next((c for c in x.elements() if c.name == "destroy"), None)
            if destroy is not None:
                details["reason"] = "destroyed"
                if destroy.getAttribute("jid"):
                    details["alternate"] = destroy.getAttribute("jid")[:3071]
                text = next((str(c) for c in destroy.elements() if c.name == "reason"), "")
                if text:
                    details["message"] = text[:MAX_REASON_LENGTH]
            if item["actor"]:
                details["actor"] = item["actor"]
            if item["reason"]:
                details["message"] = item["reason"]
            if (
                details["reason"] in ("shutdown", "error")
                and room.leave_waiter is None
                and room.state == "joined"
            ):
                # the service went away, not our choice nor a moderator's: come back later
                self._suspend(client, room, details)
                return
            self._room_gone(client, room, details)
            return
        if occupant is None:
            return
        if room.state == "joined":
            data = occupant.as_dict()
            data.update({"state": "left", "self": False, "codes": sorted(codes)})
            for code, name in LEFT_REASONS.items():
                if code in codes:
                    data["reason"] = name
                    break
            if item["actor"]:
                data["actor"] = item["actor"]
            if item["reason"]:
                data["message"] = item["reason"]
            self._emit("MucOccupantUpdate", client.profile, room.jid.userhost(), data)

    def _room_gone(self, client, room: Room, details: dict) -> None:
        rooms = self._rooms.get(client.profile, {})
        if rooms.get(room.jid.userhost()) is room:
            del rooms[room.jid.userhost()]
        was = room.state
        room.state = "left"
        self._cancel_rejoin(room)
        for attr in ("join_waiter", "nick_waiter", "subject_waiter"):
            waiter = getattr(room, attr)
            if waiter is not None:
                setattr(room, attr, None)
                waiter.errback(
                    MucError(f"removed from {room.jid.userhost()} ({details['reason']})")
                )
        if room.leave_waiter is not None:
            waiter, room.leave_waiter = room.leave_waiter, None
            waiter.callback(None)
        log.info("[%s] left %s: %s", client.profile, room.jid.userhost(), details["reason"])
        if was != "left":
            self._emit("MucRoomLeft", client.profile, room.jid.userhost(), details)

    def _suspend(self, client, room: Room, details: dict) -> None:
        """We were removed by the service (shutdown, error): keep the room, rejoin later."""
        room.state = "left"
        for attr in ("nick_waiter", "subject_waiter"):
            waiter = getattr(room, attr)
            if waiter is not None:
                setattr(room, attr, None)
                waiter.errback(
                    MucError(f"removed from {room.jid.userhost()} ({details['reason']})")
                )
        log.info(
            "[%s] removed from %s (%s): joining again later",
            client.profile,
            room.jid.userhost(),
            details["reason"],
        )
        self._emit(
            "MucRoomLeft", client.profile, room.jid.userhost(), {**details, "rejoining": True}
        )
        self._schedule_rejoin(client, room)

    def _schedule_rejoin(self, client, room: Room) -> None:
        self._cancel_rejoin(room)
        delay = min(REJOIN_MAX_DELAY, REJOIN_FIRST_DELAY * 2**room.rejoin_attempts)
        room.rejoin_attempts += 1
        room.rejoin_call = self.clock.callLater(delay, self._rejoin_later, client, room)

    @staticmethod
    def _cancel_rejoin(room: Room) -> None:
        if room.rejoin_call is not None and room.rejoin_call.active():
            room.rejoin_call.cancel()
        room.rejoin_call = None

    def _rejoin_later(self, client, room: Room) -> None:
        room.rejoin_call = None
        if not getattr(client, "is_connected", lambda: True)():
            return  # the next fresh session rejoins every room
        d = defer.ensureDeferred(self.rejoin(client, room, retry=True))
        d.addErrback(lambda f: log.error("[%s] rejoin failed: %s", client.profile, f.value))

    # --- messages -----------------------------------------------------------------------------

    def _on_message_received(self, client, elt: domish.Element, data: dict):
        try:
            sender = parse_jid(elt.getAttribute("from") or "")
        except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
            return None
        room = self._rooms.get(client.profile, {}).get(sender.userhost())
        if data.get("type") != "groupchat":
            if room is not None and sender.resource:
                data["extra"]["muc_pm"] = True
            return None
        if room is None or room.state not in ("joined", "joining"):
            log.info(
                "[%s] groupchat message from %s, a room we are not in: ignored",
                client.profile,
                sender.full(),
            )
            return hooks.STOP
        archived = bool(data["extra"].get("archived"))
        if not archived:
            room.last_activity = self.clock.seconds()
        nick = sender.resource or ""
        body = data.get("body")
        subject = data.get("subject")
        if subject is not None and body is None and data.get("thread") is None:
            # a subject change: not a message to store (an archived one is history)
            if not archived:
                self._subject(client, room, nick, subject, elt)
            return hooks.STOP
        if body is None and not archived:
            # chat states, markers... go on to their plugins; room notices are read here
            self._room_notice(client, room, elt)
        data["extra"]["muc_nick"] = nick
        if nick and nick == room.nick:
            data["outgoing"] = True
            sent = self._match_sent(room, elt)
            if sent is not None:
                data["uid"] = sent["uid"]
                for key, value in sent["extra"].items():
                    data["extra"].setdefault(key, value)
        if (
            "XEP-0359" not in getattr(self.host, "plugins", {})
            and NS_SID in room.features
            and data.get("stanza_id") is None
        ):
            for sid in elt.elements(NS_SID, "stanza-id"):
                if sid.getAttribute("by") == room.jid.userhost() and sid.getAttribute("id"):
                    data["stanza_id"] = sid["id"][:256]
                    data["stanza_id_by"] = room.jid.userhost()
                    break
        if NS_OCCUPANT_ID in room.features:
            oid = next(elt.elements(NS_OCCUPANT_ID, "occupant-id"), None)
            if oid is not None and oid.getAttribute("id"):
                data["extra"]["occupant_id"] = oid["id"][:256]
        return None

    @staticmethod
    def _match_sent(room: Room, elt: domish.Element) -> dict | None:
        candidates = [elt.getAttribute("id")]
        for origin in elt.elements("urn:xmpp:sid:0", "origin-id"):
            candidates.append(origin.getAttribute("id"))
        for candidate in candidates:
            if candidate and candidate in room.sent:
                return room.sent.pop(candidate)
        return None

    def _subject(self, client, room: Room, nick: str, subject: str, elt) -> None:
        if nick and room.subject_received and nick not in room.occupants:
            log.warning(
                "[%s] subject change in %s from %r, who is not an occupant: ignored",
                client.profile,
                room.jid.userhost(),
                nick[:50],
            )
            return
        room.subject = subject[:MAX_SUBJECT_LENGTH]
        room.subject_by = nick
        room.subject_received = True
        if room.subject_waiter is not None and nick == room.nick:
            waiter, room.subject_waiter = room.subject_waiter, None
            room.subject_request_id = None
            waiter.callback(None)
        self._emit("MucSubject", client.profile, room.jid.userhost(), room.subject, nick)

    def _room_notice(self, client, room: Room, elt) -> None:
        """A body-less group chat message: configuration change notices (status codes)."""
        x = next((c for c in elt.elements() if c.uri == NS_MUC_USER and c.name == "x"), None)
        codes = _parse_codes(x)
        if codes & {104, 170, 171, 172, 173, 174}:
            d = defer.ensureDeferred(self._refresh_features(client, room))
            d.addErrback(lambda f: log.debug("feature refresh failed: %s", f.value))

    def on_message_error(self, client, elt: domish.Element) -> None:
        try:
            sender = parse_jid(elt.getAttribute("from") or "")
        except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
            return
        room = self._rooms.get(client.profile, {}).get(sender.userhost())
        if room is None:
            return
        condition, text = stanza_error(elt)
        msg_id = elt.getAttribute("id") or ""
        if room.subject_waiter is not None and msg_id == room.subject_request_id:
            waiter, room.subject_waiter = room.subject_waiter, None
            room.subject_request_id = None
            cls = errors.PermissionDenied if condition in ("forbidden", "not-allowed") else MucError
            waiter.errback(
                cls(
                    f"{room.jid.userhost()} refused the subject change ({condition})"
                    + (f": {text}" if text else ""),
                    condition=condition,
                )
            )
            return
        sent = room.sent.pop(msg_id, None)
        uid = sent["uid"] if sent else ""
        log.info(
            "[%s] %s refused a message: %s %s", client.profile, room.jid.userhost(), condition, text
        )
        self._emit(
            "MucMessageError",
            client.profile,
            room.jid.userhost(),
            uid,
            condition + (f": {text}" if text else ""),
        )
        if condition == "not-acceptable" and room.state == "joined" and not sender.resource:
            # the room tells us we are not an occupant any more
            d = defer.ensureDeferred(self.rejoin(client, room))
            d.addErrback(lambda f: log.error("rejoin failed: %s", f.value))

    def _on_message_send(self, client, elt: domish.Element, data: dict):
        try:
            recipient = parse_jid(elt.getAttribute("to") or "")
        except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
            return None
        room = self._rooms.get(client.profile, {}).get(recipient.userhost())
        if data.get("type") == "groupchat":
            if room is None or room.state != "joined":
                data["cancel_reason"] = f"not in room {recipient.userhost()}: join it first"
                return hooks.STOP
            if recipient.resource:
                data["cancel_reason"] = "a groupchat message goes to the room's bare JID"
                return hooks.STOP
            room.remember_sent(elt.getAttribute("id") or data["uid"], data["uid"], data["extra"])
            if data["uid"] != elt.getAttribute("id"):
                room.remember_sent(data["uid"], data["uid"], data["extra"])
            return None
        if room is not None and recipient.resource:
            if not any(c.uri == NS_MUC_USER and c.name == "x" for c in elt.elements()):
                elt.addElement((NS_MUC_USER, "x"))
            data["extra"]["muc_pm"] = True
        return None

    def _on_presence_send(self, client, elt: domish.Element):
        """Our new presence (show/status) also goes to the rooms we are in."""
        if elt.getAttribute("to") or elt.getAttribute("type"):
            return None
        for room in self.joined_rooms(client):
            copy = domish.Element((None, "presence"))
            copy["to"] = room.occupant_jid.full()
            for child in elt.elements():
                if child.name in ("show", "status", "priority") or child.uri == (
                    "http://jabber.org/protocol/caps"
                ):
                    copy.addChild(_clone(child))
            client.send(copy)
        return None

    # --- room actions ---------------------------------------------------------------------

    async def leave(self, client, room_jid, status: str = "") -> None:
        room_jid = self._room_jid(room_jid)
        rooms = self._rooms.get(client.profile, {})
        room = rooms.get(room_jid.userhost())
        if room is None:
            raise NotJoined(f"not in room {room_jid.userhost()}")
        presence = domish.Element((None, "presence"))
        presence["to"] = room.occupant_jid.full()
        presence["type"] = "unavailable"
        if status:
            presence.addElement("status", content=status[:MAX_STATUS_LENGTH])
        if room.state == "left":
            # suspended (waiting to rejoin): we are not in the room, just forget it
            self._room_gone(client, room, {"reason": "left", "codes": []})
            self._emit("MucRoomLeft", client.profile, room_jid.userhost(), {"reason": "left"})
            return
        waiter = self._waiter(5.0, lambda: errors.Timeout("no answer to leave"))
        room.leave_waiter = waiter
        if getattr(client, "is_connected", lambda: True)():
            client.send(presence)
        else:
            waiter.callback(None)
        try:
            await waiter
        except errors.Timeout:
            log.info("[%s] %s did not confirm our leave", client.profile, room_jid.userhost())
        if room.state != "left" or rooms.get(room_jid.userhost()) is room:
            self._room_gone(client, room, {"reason": "left", "codes": []})

    async def nick_set(self, client, room_jid, nick: str) -> str:
        room = self._joined_room(client, room_jid)
        nick = (nick or "").strip()
        if not _valid_nick(room.jid, nick):
            raise NickNotAcceptable(f"{nick!r} is not a valid nick")
        if nick == room.nick:
            return nick
        if room.nick_waiter is not None:
            raise errors.AlreadyExists("a nick change is already running in this room")
        presence = domish.Element((None, "presence"))
        presence["to"] = jabber_jid.JID(tuple=(room.jid.user, room.jid.host, nick)).full()
        self._copy_own_presence(client, presence)
        waiter = self._waiter(None, lambda: errors.Timeout("no answer to the nick change"))
        room.pending_nick = nick
        room.nick_waiter = waiter
        client.send(presence)
        try:
            return await waiter
        finally:
            if room.nick_waiter is waiter:
                room.nick_waiter = None
                room.pending_nick = None

    async def subject_set(self, client, room_jid, subject: str) -> None:
        room = self._joined_room(client, room_jid)
        if len(subject) > MAX_SUBJECT_LENGTH:
            raise errors.InvalidArgument("subject too long")
        message = domish.Element((None, "message"))
        message["to"] = room.jid.userhost()
        message["type"] = "groupchat"
        message["id"] = msg_id = _new_id()
        message.addElement("subject", content=subject)
        waiter = self._waiter(None, lambda: errors.Timeout("the room did not confirm the subject"))
        room.subject_waiter = waiter
        room.subject_request_id = msg_id
        client.send(message)
        try:
            await waiter
        finally:
            if room.subject_waiter is waiter:
                room.subject_waiter = None
                room.subject_request_id = None

    async def _admin(self, client, room: Room, item_attrs: dict, reason: str, what: str) -> None:
        query = domish.Element((NS_MUC_ADMIN, "query"))
        item = query.addElement("item")
        for key, value in item_attrs.items():
            item[key] = value
        if reason:
            item.addElement("reason", content=reason[:MAX_REASON_LENGTH])
        await self.disco.send_iq(client, room.jid, query, what=what, iq_type="set")

    async def role_set(self, client, room_jid, nick: str, role: str, reason: str = "") -> None:
        room = self._joined_room(client, room_jid)
        if role not in ROLES:
            raise errors.InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        if nick not in room.occupants:
            raise errors.NotFound(f"no occupant {nick!r} in {room.jid.userhost()}")
        await self._admin(client, room, {"nick": nick, "role": role}, reason, f"{role} role change")

    async def kick(self, client, room_jid, nick: str, reason: str = "") -> None:
        await self.role_set(client, room_jid, nick, "none", reason)

    def _entity(self, room: Room, who: str) -> str:
        occupant = room.occupants.get(who)
        if occupant is not None and occupant.jid:
            return parse_jid(occupant.jid).userhost()
        try:
            entity = parse_jid(who)
        except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
            raise errors.InvalidArgument(f"{who!r} is neither a JID nor a known nick") from None
        if entity.host == room.jid.host and entity.user == room.jid.user:
            raise errors.InvalidArgument(
                f"{who!r} is an occupant JID: give the real JID (the room is anonymous)"
            )
        return entity.userhost()

    async def affiliation_set(
        self, client, room_jid, who: str, affiliation: str, reason: str = ""
    ) -> None:
        room = self._joined_room(client, room_jid)
        if affiliation not in AFFILIATIONS:
            raise errors.InvalidArgument(f"affiliation must be one of {', '.join(AFFILIATIONS)}")
        entity = self._entity(room, who)
        await self._admin(
            client,
            room,
            {"jid": entity, "affiliation": affiliation},
            reason,
            f"{affiliation} affiliation change",
        )

    async def ban(self, client, room_jid, who: str, reason: str = "") -> None:
        await self.affiliation_set(client, room_jid, who, "outcast", reason)

    async def affiliations_get(self, client, room_jid, affiliation: str) -> list[dict]:
        room_jid = self._room_jid(room_jid)
        if affiliation not in AFFILIATIONS or affiliation == "none":
            raise errors.InvalidArgument("affiliation must be owner, admin, member or outcast")
        query = domish.Element((NS_MUC_ADMIN, "query"))
        query.addElement("item")["affiliation"] = affiliation
        iq = await self.disco.send_iq(client, room_jid, query, what="affiliation list")
        result = []
        answer = next(iq.elements(NS_MUC_ADMIN, "query"), None)
        for item in answer.elements(NS_MUC_ADMIN, "item") if answer is not None else ():
            real = item.getAttribute("jid")
            if not real:
                continue
            entry = {"jid": real, "affiliation": item.getAttribute("affiliation", affiliation)}
            if item.getAttribute("nick"):
                entry["nick"] = item["nick"]
            result.append(entry)
        return result

    async def config_get_form(self, client, room_jid) -> data_form.Form:
        room_jid = self._room_jid(room_jid)
        query = domish.Element((NS_MUC_OWNER, "query"))
        iq = await self.disco.send_iq(client, room_jid, query, what="room configuration request")
        form = parse_form(next(iq.elements(NS_MUC_OWNER, "query"), None))
        if form is None:
            raise MucError(f"{room_jid.userhost()} sent no configuration form")
        return form

    async def config_get(self, client, room_jid) -> dict:
        return form_to_dict(await self.config_get_form(client, room_jid))

    async def config_set(self, client, room_jid, values: dict) -> None:
        room_jid = self._room_jid(room_jid)
        form = await self.config_get_form(client, room_jid)
        query = domish.Element((NS_MUC_OWNER, "query"))
        query.addChild(submit_form(form, dict(values)))
        await self.disco.send_iq(client, room_jid, query, what="room configuration", iq_type="set")
        self._remember_secret(client, room_jid, values)

    async def destroy(self, client, room_jid, reason: str = "", alternate: str = "") -> None:
        room_jid = self._room_jid(room_jid)
        query = domish.Element((NS_MUC_OWNER, "query"))
        destroy = query.addElement("destroy")
        if alternate:
            destroy["jid"] = self._room_jid(alternate).userhost()
        if reason:
            destroy.addElement("reason", content=reason[:MAX_REASON_LENGTH])
        await self.disco.send_iq(client, room_jid, query, what="room destruction", iq_type="set")

    async def services(self, client) -> list[str]:
        found = await self.disco.find_service(client, "conference", "text")
        return [e.full() for e in found]

    # --- session ------------------------------------------------------------------------

    def get_handler(self, client):
        self._rooms.setdefault(client.profile, {})
        return MucHandler(self, client)

    async def profile_connected(self, client) -> None:
        """A fresh session: the rooms we were in forgot us, join them again."""
        for room in self.rooms(client):
            if room.joining:
                continue  # its join presence, queued while offline, is sent again
            room.state = "left"
            room.rejoin_attempts = 0
            d = defer.ensureDeferred(self.rejoin(client, room, retry=True))
            d.addErrback(lambda f: log.error("[%s] rejoin failed: %s", client.profile, f.value))

    def profile_disconnected(self, client) -> None:
        for room in self.rooms(client):
            self._room_gone(client, room, {"reason": "disconnected", "codes": []})
        self._rooms.pop(client.profile, None)

    # --- bridge -------------------------------------------------------------------------

    def _register_bridge(self) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is None:
            return
        P = ("profile", "s", "profile name")
        R = ("room", "s", "room bare JID (room@service)")

        def method(name, handler, args, out=None, doc=""):
            bridge.add_method(name, handler, args=args, out=out, doc=doc, interface="plugin")

        def signal(name, args, doc):
            bridge.add_signal(name, args=args, doc=doc, interface="plugin")

        room_info = (
            "room, nick (ours), state, name, role, affiliation (ours), subject, subject_by, "
            "created (the join created the room), rejoined, mam (the room archives messages), "
            "features, occupants (list of {nick, role, affiliation, show, status, jid?, "
            "occupant_id?})"
        )
        method(
            "MucJoin",
            self._bridge_join,
            [
                P,
                R,
                ("nick", "s", "nick to use; empty: the account's user name"),
                (
                    "options",
                    "a{sv}",
                    "password (s), nick_conflict ('suffix' (default): add '_' to a taken "
                    "nick, or 'error'), history (x: number of past messages, overrides "
                    "the default), create ('instant' (default) or 'none': leave a new room "
                    "unconfigured), config (a{sv}: configuration of a new room), timeout (d)",
                ),
            ],
            ("a{sv}", room_info),
            "Join a group chat room (XEP-0045); creates it if it does not exist. Errors: "
            "MucNickConflict, MucPasswordRequired, MucBanned, MucMembersOnly, "
            "MucCreationRestricted, MucRoomNotFound, MucNickNotAcceptable, MucRoomFull",
        )
        method(
            "MucLeave",
            self._bridge_leave,
            [P, R, ("status", "s", "goodbye message, may be empty")],
            doc="Leave a room",
        )
        method(
            "MucNickSet",
            self._bridge_nick_set,
            [P, R, ("nick", "s", "new nick")],
            ("s", "the nick now used"),
            "Change our nick in a room (MucNickConflict if taken)",
        )
        method(
            "MucSubjectSet",
            self._bridge_subject_set,
            [P, R, ("subject", "s", "new subject")],
            doc="Change a room's subject (PermissionDenied if the room does not allow us)",
        )
        method(
            "MucOccupantsGet",
            self._bridge_occupants,
            [P, R],
            ("aa{sv}", "nick, role, affiliation, show, status, jid (when visible), occupant_id"),
            "Occupants of a joined room",
        )
        method(
            "MucRoomsJoined",
            self._bridge_rooms,
            [P],
            ("aa{sv}", room_info.replace(", occupants (list of", " (no occupants list;")),
            "Rooms we are in (or joining)",
        )
        method(
            "MucKick",
            self._bridge_kick,
            [P, R, ("nick", "s", "occupant to kick"), ("reason", "s", "may be empty")],
            doc="Kick an occupant (moderators only)",
        )
        method(
            "MucBan",
            self._bridge_ban,
            [
                P,
                R,
                ("who", "s", "bare JID to ban, or the nick of an occupant whose JID we see"),
                ("reason", "s", "may be empty"),
            ],
            doc="Ban someone from a room (admins and owners only)",
        )
        method(
            "MucAffiliationSet",
            self._bridge_affiliation_set,
            [
                P,
                R,
                ("who", "s", "bare JID, or the nick of an occupant whose JID we see"),
                ("affiliation", "s", "owner, admin, member, outcast or none"),
                ("reason", "s", "may be empty"),
            ],
            doc="Change someone's affiliation with a room",
        )
        method(
            "MucRoleSet",
            self._bridge_role_set,
            [
                P,
                R,
                ("nick", "s", "occupant"),
                ("role", "s", "moderator, participant, visitor or none (kick)"),
                ("reason", "s", "may be empty"),
            ],
            doc="Change an occupant's role",
        )
        method(
            "MucAffiliationsGet",
            self._bridge_affiliations_get,
            [P, R, ("affiliation", "s", "owner, admin, member or outcast")],
            ("aa{sv}", "jid, affiliation, nick (if reserved)"),
            "Who has this affiliation with a room (admins and owners only)",
        )
        method(
            "MucConfigGet",
            self._bridge_config_get,
            [P, R],
            (
                "a{sv}",
                "data form: type, form_type, title, instructions (as), fields (aa{sv}: var, "
                "type, label, desc, required, values (as), options (aa{sv}: value, label))",
            ),
            "Configuration form of a room (owners only)",
        )
        method(
            "MucConfigSet",
            self._bridge_config_set,
            [
                P,
                R,
                (
                    "values",
                    "a{sv}",
                    "field var -> value (s, b, x or as); fields not given keep their value",
                ),
            ],
            doc="Change a room's configuration (owners only)",
        )
        method(
            "MucRoomDestroy",
            self._bridge_destroy,
            [
                P,
                R,
                ("reason", "s", "may be empty"),
                ("alternate", "s", "room to go to instead, may be empty"),
            ],
            doc="Destroy a room (owners only)",
        )
        method(
            "MucServicesGet",
            self._bridge_services,
            [P],
            ("as", "JIDs of the group chat services of the profile's server"),
            "Find the group chat (MUC) services of our server",
        )
        signal(
            "MucRoomJoined",
            [P, R, ("info", "a{sv}", room_info)],
            "We are in a room (after MucJoin, an autojoin or a rejoin after reconnection)",
        )
        signal(
            "MucRoomLeft",
            [
                P,
                R,
                (
                    "details",
                    "a{sv}",
                    "reason (left, kicked, banned, affiliation, members_only, shutdown, error, "
                    "destroyed, disconnected), codes (ax), actor, message, alternate",
                ),
            ],
            "We are no longer in a room",
        )
        signal(
            "MucOccupantUpdate",
            [
                P,
                R,
                (
                    "occupant",
                    "a{sv}",
                    "nick, role, affiliation, show, status, jid?, state (joined, updated, "
                    "left, nick), old_nick (state nick), self (b), codes (ax), reason, actor, "
                    "message",
                ),
            ],
            "An occupant joined, changed, left or changed nick",
        )
        signal(
            "MucSubject",
            [P, R, ("subject", "s", "new subject"), ("by", "s", "nick, empty: the room")],
            "A room's subject (sent when joining and when it changes)",
        )
        signal(
            "MucMessageError",
            [
                P,
                R,
                ("uid", "s", "uid of our message the room refused, empty if unknown"),
                ("error", "s", "condition and text"),
            ],
            "A room refused one of our messages",
        )

    async def _client(self, profile):
        resolve = getattr(getattr(self.host, "profiles", None), "resolve", None)
        if resolve is not None:
            profile = await resolve(profile)
        return self.host.get_client(profile)

    async def _bridge_join(self, profile, room, nick, options):
        client = await self._client(profile)
        options = dict(options or {})
        password = options.pop("password", None)
        unknown = set(options) - {"nick_conflict", "history", "create", "config", "timeout"}
        if unknown:
            raise errors.InvalidArgument(f"unknown join options: {', '.join(sorted(unknown))}")
        joined = await self.join(client, room, nick, password, options)
        return joined.info()

    async def _bridge_leave(self, profile, room, status):
        await self.leave(await self._client(profile), room, status)

    async def _bridge_nick_set(self, profile, room, nick):
        return await self.nick_set(await self._client(profile), room, nick)

    async def _bridge_subject_set(self, profile, room, subject):
        await self.subject_set(await self._client(profile), room, subject)

    async def _bridge_occupants(self, profile, room):
        joined = self._joined_room(await self._client(profile), room)
        return [o.as_dict() for o in joined.occupants.values()]

    async def _bridge_rooms(self, profile):
        client = await self._client(profile)
        return [r.info(with_occupants=False) for r in self.rooms(client)]

    async def _bridge_kick(self, profile, room, nick, reason):
        await self.kick(await self._client(profile), room, nick, reason)

    async def _bridge_ban(self, profile, room, who, reason):
        await self.ban(await self._client(profile), room, who, reason)

    async def _bridge_affiliation_set(self, profile, room, who, affiliation, reason):
        await self.affiliation_set(await self._client(profile), room, who, affiliation, reason)

    async def _bridge_role_set(self, profile, room, nick, role, reason):
        await self.role_set(await self._client(profile), room, nick, role, reason)

    async def _bridge_affiliations_get(self, profile, room, affiliation):
        return await self.affiliations_get(await self._client(profile), room, affiliation)

    async def _bridge_config_get(self, profile, room):
        return await self.config_get(await self._client(profile), room)

    async def _bridge_config_set(self, profile, room, values):
        await self.config_set(await self._client(profile), room, values)

    async def _bridge_destroy(self, profile, room, reason, alternate):
        await self.destroy(await self._client(profile), room, reason, alternate)

    async def _bridge_services(self, profile):
        return await self.services(await self._client(profile))


# --- small helpers ----------------------------------------------------------------------


def _transient(error: errors.SatError) -> bool:
    """A join failure another attempt later may not meet."""
    if isinstance(error, errors.Timeout | errors.NotConnected | RoomFull):
        return True
    return error.details.get("condition") in (
        "remote-server-not-found",
        "remote-server-timeout",
        "internal-server-error",
        "resource-constraint",
    )


def _fail_waiter(d: defer.Deferred, make_error: Callable[[], Exception]) -> None:
    if not d.called:
        d.errback(make_error())


def _clone(elt: domish.Element) -> domish.Element:
    """A deep copy of ``elt`` (domish elements have one parent)."""
    copy = domish.Element((elt.uri, elt.name), elt.defaultUri, dict(elt.attributes))
    for child in elt.children:
        if isinstance(child, domish.Element):
            copy.addChild(_clone(child))
        else:
            copy.addContent(str(child))
    return copy


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex


PLUGIN = MucPlugin
