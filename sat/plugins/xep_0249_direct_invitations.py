"""XEP-0249: Direct MUC Invitations (and XEP-0045 mediated invitations, received).

Sending
    ``MucInvite(profile, room, invitee, reason)`` sends
    ``<message to=invitee><x xmlns='jabber:x:conference' jid=room reason=…/></message>``
    (with the room's password when we joined it with one).

Receiving
    A direct invitation (``jabber:x:conference``), or a mediated one sent by a room
    (``<x xmlns='http://jabber.org/protocol/muc#user'><invite from=…/></x>``, XEP-0045
    §7.8.2), becomes the ``MucInvitation(profile, room, from, reason, password)``
    signal. The room is never joined automatically (the user decides), the message is
    not stored in the history. Invalid invitations (no or bad room JID, an invitation
    to a room we are already in) are ignored with a log line. A mediated invitation is
    believed only if its sender announces the ``conference`` identity (disco#info).
"""

from __future__ import annotations

import logging

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import disco, iwokkel
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core import (
    errors,
    hooks,
    wokkel_compat,  # noqa: F401  (sat/__init__ loads it before wokkel)
)
from sat.core.plugin import Plugin

log = logging.getLogger(__name__)

NS_CONFERENCE = "jabber:x:conference"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
MAX_REASON_LENGTH = 2_000
MAX_PASSWORD_LENGTH = 1_000


@implementer(iwokkel.IDisco)
class InvitationsHandler(XMPPHandler):
    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        return [] if nodeIdentifier else [disco.DiscoFeature(NS_CONFERENCE)]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


def _child(elt: domish.Element, uri: str, name: str) -> domish.Element | None:
    return next((c for c in elt.elements() if c.uri == uri and c.name == name), None)


def _text(elt: domish.Element | None, name: str) -> str:
    if elt is None:
        return ""
    child = next((c for c in elt.elements() if c.name == name), None)
    return str(child) if child is not None else ""


class DirectInvitationsPlugin(Plugin):
    name = "XEP-0249"
    label = "Direct MUC Invitations"
    xeps = ("XEP-0249",)
    dependencies = ("XEP-0045", "XEP-0030")
    description = "Invite contacts to rooms; tell the user about invitations received."

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add(
            "message_received",
            self._on_message_received,
            priority=70,
            namespaces=[NS_CONFERENCE, NS_MUC_USER],
        )
        bridge = getattr(host, "bridge", None)
        if bridge is not None:
            bridge.add_method(
                "MucInvite",
                self._bridge_invite,
                args=[
                    ("profile", "s", "profile name"),
                    ("room", "s", "room bare JID"),
                    ("invitee", "s", "JID of the person to invite"),
                    ("reason", "s", "invitation text, may be empty"),
                ],
                doc="Invite someone to a room (XEP-0249 direct invitation)",
                interface="plugin",
            )
            bridge.add_signal(
                "MucInvitation",
                args=[
                    ("profile", "s", "profile name"),
                    ("room", "s", "room bare JID"),
                    ("from", "s", "who invites us"),
                    ("reason", "s", "invitation text, may be empty"),
                    ("password", "s", "room password given with the invitation, may be empty"),
                ],
                doc="Someone invited us to a room (never joined automatically)",
                interface="plugin",
            )

    def get_handler(self, client):
        return InvitationsHandler()

    # --- sending ----------------------------------------------------------------------

    async def invite(self, client, room, invitee, reason: str = "") -> None:
        muc = self.host.plugins["XEP-0045"]
        room_jid = muc._room_jid(room)
        try:
            invitee_jid = jabber_jid.JID(str(invitee).strip())
        except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
            raise errors.InvalidArgument(f"{invitee!r} is not a valid JID") from None
        if not invitee_jid.host or invitee_jid.userhost() == room_jid.userhost():
            raise errors.InvalidArgument(f"{invitee!r} cannot be invited")
        message = domish.Element((None, "message"))
        message["to"] = invitee_jid.full()
        message["id"] = _new_id()
        x = message.addElement((NS_CONFERENCE, "x"))
        x["jid"] = room_jid.userhost()
        if reason:
            x["reason"] = reason[:MAX_REASON_LENGTH]
        joined = muc.get_room(client, room_jid)
        if joined is not None and joined.password:
            x["password"] = joined.password
        client.send(message)

    async def _bridge_invite(self, profile, room, invitee, reason):
        resolve = getattr(getattr(self.host, "profiles", None), "resolve", None)
        if resolve is not None:
            profile = await resolve(profile)
        await self.invite(self.host.get_client(profile), room, invitee, reason)

    # --- receiving ----------------------------------------------------------------------

    def _on_message_received(self, client, elt: domish.Element, data: dict):
        if data.get("type") == "groupchat":
            return None
        direct = _child(elt, NS_CONFERENCE, "x")
        if direct is not None:
            self._direct(client, elt, direct)
            return hooks.STOP
        muc_x = _child(elt, NS_MUC_USER, "x")
        if muc_x is not None and _child(muc_x, NS_MUC_USER, "invite") is not None:
            d = defer.ensureDeferred(self._mediated(client, elt, muc_x))
            d.addErrback(
                lambda f: log.warning("[%s] invitation dropped: %s", client.profile, f.value)
            )
            return hooks.STOP
        return None

    def _signal(self, client, room: str, inviter: str, reason: str, password: str) -> None:
        muc = self.host.plugins["XEP-0045"]
        if muc.is_joined(client, room):
            log.info("[%s] invitation to %s, where we already are: ignored", client.profile, room)
            return
        log.info("[%s] %s invites us to %s", client.profile, inviter, room)
        bridge = getattr(self.host, "bridge", None)
        if bridge is not None:
            bridge.emit(
                "MucInvitation",
                client.profile,
                room,
                inviter,
                reason[:MAX_REASON_LENGTH],
                password[:MAX_PASSWORD_LENGTH],
            )

    @staticmethod
    def _room(value: str | None) -> str | None:
        try:
            room = jabber_jid.JID((value or "").strip())
        except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
            return None
        if not room.user or room.resource:
            return None
        return room.userhost()

    def _direct(self, client, elt, x) -> None:
        room = self._room(x.getAttribute("jid"))
        if room is None:
            log.info(
                "[%s] direct invitation without a valid room from %s ignored",
                client.profile,
                elt.getAttribute("from"),
            )
            return
        inviter = elt.getAttribute("from") or ""
        self._signal(
            client, room, inviter, x.getAttribute("reason") or "", x.getAttribute("password") or ""
        )

    async def _mediated(self, client, elt, x) -> None:
        room = self._room(elt.getAttribute("from"))
        if room is None:
            log.info("[%s] mediated invitation not from a room ignored", client.profile)
            return
        invite = _child(x, NS_MUC_USER, "invite")
        inviter = invite.getAttribute("from") or ""
        try:
            inviter = jabber_jid.JID(inviter).full() if inviter else ""
        except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
            inviter = ""
        disco_plugin = self.host.plugins["XEP-0030"]
        try:
            info = await disco_plugin.info(client, room)
        except errors.SatError as e:
            log.info(
                "[%s] invitation from %s, which is not a room (%s): ignored",
                client.profile,
                room,
                e,
            )
            return
        if not any(category == "conference" for category, _type in info.identities):
            log.info("[%s] invitation from %s, which is not a room: ignored", client.profile, room)
            return
        self._signal(client, room, inviter or room, _text(invite, "reason"), _text(x, "password"))


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex


PLUGIN = DirectInvitationsPlugin
