"""XEP-0085: Chat State Notifications.

Sending
    Content messages of type chat (and groupchat) carry ``<active/>`` unless the
    contact showed it does not do chat states, or the user turned them off (the
    ``privacy/chat_states`` parameter: the XEP requires that choice). A frontend
    reports the user's state with the bridge method ``ChatStateSend(profile, to,
    state)`` (active, composing, paused, inactive, gone), which sends a standalone
    notification only when allowed:

    * to a room (``to`` is a MUC room, known by disco): any state but ``gone``;
    * to a contact: once it supports chat states, learnt from disco / entity
      capabilities of one of its online clients, or from the implicit negotiation
      of the XEP (our first content message carries ``<active/>``; a reply with a
      chat state, or any standalone state, says yes; a reply without says no);
    * never the same standalone state twice in a row.

    It returns whether a notification left.

Receiving
    ``ChatStateReceived(profile, from, state)`` is emitted when a contact's state
    (per full JID) changes; state-only messages are not stored (they have no
    body). Messages with several states, unknown states, ``gone`` in rooms,
    delayed or archived messages and the copies of our own states (carbons) emit
    nothing.
"""

from __future__ import annotations

import logging

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import disco, iwokkel
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core import errors
from sat.core.messages import full_jid, new_uid, parse_jid
from sat.core.plugin import Plugin
from sat.memory.params import UNKNOWN, ParamDef
from sat.plugins.xep_0184_receipts import _within, peer_supports

log = logging.getLogger(__name__)

NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
STATES = ("active", "composing", "paused", "inactive", "gone")
PRIORITY = 500
#: per profile, how many contacts' last states are remembered
MAX_TRACKED = 5000
#: at most this many online resources of a contact are asked about support
MAX_RESOURCES_ASKED = 5

PARAMS = (
    ParamDef(
        "privacy",
        "chat_states",
        "bool",
        True,
        "Send chat state notifications (XEP-0085: active, composing, paused...) to contacts "
        "who use them",
    ),
)


@implementer(iwokkel.IDisco)
class ChatStatesHandler(XMPPHandler):
    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        return [] if nodeIdentifier else [disco.DiscoFeature(NS_CHATSTATES)]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


def _bounded_set(table: dict, key, value) -> None:
    table.pop(key, None)
    table[key] = value
    while len(table) > MAX_TRACKED:
        table.pop(next(iter(table)))


class _Peer:
    __slots__ = ("support", "last_sent")

    def __init__(self):
        #: None (unknown), "pending" (our first message asked), True or False
        self.support: bool | str | None = None
        #: last standalone state we sent (a content message resets it to active)
        self.last_sent: str | None = None


class ChatStatesPlugin(Plugin):
    name = "XEP-0085"
    label = "Chat State Notifications"
    xeps = ("XEP-0085",)
    dependencies = ("XEP-0030",)
    recommendations = ("XEP-0359", "XEP-0203", "XEP-0280", "XEP-0184")
    description = "Typing notifications: ChatStateSend, ChatStateReceived."

    def __init__(self, host):
        super().__init__(host)
        params = getattr(host, "params", None)
        if params is not None:
            for definition in PARAMS:
                params.declare(definition)
        #: profile -> bare JID -> _Peer
        self._peers: dict[str, dict[str, _Peer]] = {}
        #: profile -> full JID -> last state received
        self._received: dict[str, dict[str, str]] = {}
        host.hooks.add("message_send", self._on_send, PRIORITY)
        host.hooks.add("message_received", self._on_received, PRIORITY)
        bridge = getattr(host, "bridge", None)
        if bridge is not None:
            bridge.add_method(
                "ChatStateSend",
                self._bridge_send,
                args=[
                    ("profile", "s", "profile name (empty: the default profile)"),
                    ("to", "s", "contact (bare or full JID) or room"),
                    ("state", "s", "active, composing, paused, inactive or gone"),
                ],
                out=("b", "true if a notification was sent (false: not wanted or not allowed)"),
                doc="Tell a contact or a room the user's chat state (XEP-0085), when it uses them",
                interface="plugin",
            )
            bridge.add_signal(
                "ChatStateReceived",
                args=[
                    ("profile", "s", "profile name"),
                    ("from", "s", "full JID of the contact, or room/nick"),
                    ("state", "s", "active, composing, paused, inactive or gone"),
                ],
                doc="A contact's chat state changed (XEP-0085)",
                interface="plugin",
            )

    def get_handler(self, client):
        return ChatStatesHandler()

    def profile_disconnected(self, client) -> None:
        self._peers.pop(client.profile, None)
        self._received.pop(client.profile, None)

    def _peer(self, client, bare: str) -> _Peer:
        peers = self._peers.setdefault(client.profile, {})
        peer = peers.get(bare)
        if peer is None:
            peer = _Peer()
            _bounded_set(peers, bare, peer)
        return peer

    async def enabled(self, client) -> bool:
        try:
            return bool(await self.host.params.get("privacy", "chat_states", client.profile))
        except Exception:
            return True

    # --- sending -----------------------------------------------------------------------

    def _on_send(self, client, elt: domish.Element, data: dict):
        # synchronous once the privacy choice is in memory (every sent message runs this)
        if data["type"] not in ("chat", "groupchat") or data.get("body") is None:
            return None
        if any(c.uri == NS_CHATSTATES for c in elt.elements()):
            return None
        try:
            enabled = self.host.params.peek("privacy", "chat_states", client.profile)
        except Exception:
            enabled = UNKNOWN
        if enabled is UNKNOWN:
            return self._add_state_when_known(client, elt, data)
        if enabled:
            self._add_active(client, elt, data)
        return None

    async def _add_state_when_known(self, client, elt: domish.Element, data: dict) -> None:
        if await self.enabled(client):
            self._add_active(client, elt, data)

    def _add_active(self, client, elt: domish.Element, data: dict) -> None:
        if data["type"] == "chat":
            peer = self._peer(client, data["dest"])
            if peer.support is False:
                return
            if peer.support is None:
                peer.support = "pending"
            peer.last_sent = "active"
        elt.addElement((NS_CHATSTATES, "active"))

    async def is_room(self, client, bare: str) -> bool:
        if bare in (getattr(client, "roster", None) or {}):
            return False
        disco_plugin = self.host.plugins.get("XEP-0030")
        if disco_plugin is None:
            return False
        try:
            info = await _within(client, _deferred(disco_plugin.info(client, bare)), 5.0)
        except Exception as e:  # _Late, a disco error: not a room we can tell of
            log.debug("[%s] %s not known as a room: %r", client.profile, bare, e)
            return False
        return ("conference", "text") in info.identities

    async def supported(self, client, entity: jabber_jid.JID) -> bool:
        """Whether a standalone notification may go to ``entity`` (a contact)."""
        peer = self._peer(client, entity.userhost())
        if peer.support is True or peer.support is False:
            return peer.support
        if entity.resource:
            candidates = [entity.full()]
        else:
            prefix = entity.userhost() + "/"
            presences = getattr(client, "presences", None) or {}
            candidates = [full for full in presences if full.startswith(prefix)]
        for full in candidates[:MAX_RESOURCES_ASKED]:
            if await peer_supports(self.host, client, full, NS_CHATSTATES) is True:
                peer.support = True
                return True
        return False

    async def send_state(self, client, to: str, state: str) -> bool:
        if state not in STATES:
            raise errors.InvalidArgument(f"unknown chat state {state!r}: one of {STATES}")
        try:
            entity = parse_jid(to)
        except (jabber_jid.InvalidFormat, TypeError):
            raise errors.InvalidArgument(f"{to!r} is not a valid JID") from None
        if not entity.user:
            raise errors.InvalidArgument(f"{to!r} is not a contact or a room")
        if not await self.enabled(client):
            return False
        bare = entity.userhost()
        room = not entity.resource and await self.is_room(client, bare)
        peer = self._peer(client, bare)
        if room:
            if state == "gone":
                return False
        elif not await self.supported(client, entity):
            return False
        if peer.last_sent == state:
            return False  # the XEP forbids repeating a standalone state
        elt = domish.Element((None, "message"))
        elt["to"] = entity.full()
        elt["type"] = "groupchat" if room else "chat"
        elt["id"] = new_uid()
        elt.addElement((NS_CHATSTATES, state))
        client.send(elt)
        peer.last_sent = state
        return True

    async def _bridge_send(self, profile: str, to: str, state: str) -> bool:
        profile = await self.host.profiles.resolve(profile)
        return await self.send_state(self.host.get_client(profile), to, state)

    # --- receiving ----------------------------------------------------------------------

    def _on_received(self, client, elt: domish.Element, data: dict) -> None:
        states = [c for c in elt.elements() if c.uri == NS_CHATSTATES]
        extra = data["extra"]
        msg_type = data["type"]
        if msg_type == "headline":
            return
        carbon = extra.get("carbon")
        own = data["outgoing"] or carbon == "sent"
        if len(states) > 1:
            log.info(
                "[%s] message with %d chat states from %s ignored",
                client.profile,
                len(states),
                elt.getAttribute("from"),
            )
            return
        state = states[0].name if states else None
        if state is not None and state not in STATES:
            log.info(
                "[%s] unknown chat state %r from %s ignored",
                client.profile,
                state[:32],
                elt.getAttribute("from"),
            )
            return
        if msg_type != "groupchat" and not own:
            peer = self._peer(client, data["source"])
            if state is not None:
                peer.support = True
            elif data.get("body") is not None and peer.support == "pending":
                peer.support = False
        if state is None or own or extra.get("archived") or "delay" in extra:
            return
        if msg_type == "groupchat" and state == "gone":
            return
        sender = full_jid(data["source"], data["source_resource"])
        received = self._received.setdefault(client.profile, {})
        if received.get(sender) == state:
            return
        _bounded_set(received, sender, state)
        self.host.bridge.emit("ChatStateReceived", client.profile, sender, state)


def _deferred(coro):
    from twisted.internet import defer

    return defer.ensureDeferred(coro)


PLUGIN = ChatStatesPlugin
