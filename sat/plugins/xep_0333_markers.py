"""XEP-0333: Chat Markers (displayed / received / acknowledged).

Sending
    Our chat and groupchat content messages are *markable* (``<markable/>``),
    except to a full JID whose client says it does not support markers. A frontend
    marks a stored received message with ``MarkerSend(profile, uid, marker)``
    (``displayed`` usually; ``received``; ``acknowledged`` only after a user
    action, the XEP forbids doing it automatically). The marker refers to the
    message with the id the XEP asks for: the ``id`` attribute of a 1:1 message,
    the room's ``<stanza-id/>`` (checked by XEP-0359) in a room announcing
    XEP-0359 — the senders' ids cannot be trusted there. It goes to the contact's
    bare JID (all its clients, and its archive: a ``<store/>`` hint is added) or
    to the room. Markers only move forward: a message older than the last one
    marked, or already marked at that level, sends nothing. The message and the
    earlier ones of the conversation get ``extra["marker_sent"]`` (so all our
    frontends agree on what was read). As for receipts, markers only go to
    contacts allowed to see our presence unless the ``privacy/markers``
    parameter says otherwise (XEP-0333 security considerations).

Receiving
    A marker from a contact about one of our messages sets ``extra["marker"]``
    (received < displayed < acknowledged) on it *and on every earlier message we
    sent to that contact* (a marker means "up to here"), each announced with
    ``MessageUpdate`` (type ``marker``). The message must have been sent to that
    contact; markers for unknown messages, older than the current marker or from
    a stranger's forged id are ignored. A marker one of our other resources sent
    (carbon) marks the contact's messages as read here too (``marker_sent``). In
    rooms, markers from occupants add their nick to ``extra["displayed_by"]`` of
    the message (found by the room's stanza-id).
"""

from __future__ import annotations

import logging
import time

from twisted.words.xish import domish
from wokkel import disco, iwokkel
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core import errors
from sat.core.messages import new_uid
from sat.core.plugin import Plugin
from sat.memory.params import ParamDef
from sat.plugins.xep_0184_receipts import PRIVACY_CHOICES, peer_supports, privacy_allows

log = logging.getLogger(__name__)

NS_MARKERS = "urn:xmpp:chat-markers:0"
NS_HINTS = "urn:xmpp:hints"
#: in order of significance
MARKERS = ("received", "displayed", "acknowledged")
PRIORITY = 400
MAX_ID_LENGTH = 256
#: most nicks kept in a room message's displayed_by
MAX_DISPLAYED_BY = 100
#: how many recent messages of a conversation are searched for a marker's id when
#: the sender did not use an origin-id
SCAN_LIMIT = 200
KV_NAMESPACE = "XEP-0333"

PARAMS = (
    ParamDef(
        "privacy",
        "markers",
        "choice",
        "contacts",
        "Who gets chat markers (XEP-0333: displayed...) for their messages: contacts allowed "
        "to see our presence, everyone, or nobody",
        choices=PRIVACY_CHOICES,
    ),
)


@implementer(iwokkel.IDisco)
class MarkersHandler(XMPPHandler):
    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        return [] if nodeIdentifier else [disco.DiscoFeature(NS_MARKERS)]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


def _rank(marker: str | None) -> int:
    return MARKERS.index(marker) if marker in MARKERS else -1


class MarkersPlugin(Plugin):
    name = "XEP-0333"
    label = "Chat Markers"
    xeps = ("XEP-0333",)
    dependencies = ("XEP-0030", "XEP-0359")
    recommendations = ("XEP-0280", "XEP-0184")
    description = "Displayed markers: MarkerSend, and history updated by contacts' markers."

    def __init__(self, host):
        super().__init__(host)
        params = getattr(host, "params", None)
        if params is not None:
            for definition in PARAMS:
                params.declare(definition)
        host.hooks.add("message_send", self._on_send, PRIORITY)
        host.hooks.add("message_received", self._on_received, PRIORITY, namespaces=[NS_MARKERS])
        bridge = getattr(host, "bridge", None)
        if bridge is not None:
            bridge.add_method(
                "MarkerSend",
                self._bridge_send,
                args=[
                    ("profile", "s", "profile name (empty: the default profile)"),
                    ("uid", "s", "uid of a stored received message"),
                    ("marker", "s", "displayed, received or acknowledged (after a user action)"),
                ],
                out=(
                    "b",
                    "true if the marker was sent; false if not markable, not allowed or older "
                    "than the last marker",
                ),
                doc="Mark a received message (and the earlier ones) as displayed (XEP-0333)",
                interface="plugin",
            )

    def get_handler(self, client):
        return MarkersHandler()

    # --- sending -----------------------------------------------------------------------

    def _on_send(self, client, elt: domish.Element, data: dict):
        # synchronous unless a full JID's support must be looked up
        if data["type"] not in ("chat", "groupchat") or data.get("body") is None:
            return None
        if any(c.uri == NS_MARKERS for c in elt.elements()):
            return None
        if data["type"] == "chat" and data["dest_resource"]:
            return self._markable_if_supported(client, elt, data)
        self._add_markable(elt, data)
        return None

    async def _markable_if_supported(self, client, elt: domish.Element, data: dict) -> None:
        if await peer_supports(self.host, client, elt["to"], NS_MARKERS) is not False:
            self._add_markable(elt, data)

    @staticmethod
    def _add_markable(elt: domish.Element, data: dict) -> None:
        elt.addElement((NS_MARKERS, "markable"))
        data["extra"]["markable"] = True

    async def send_marker(self, client, uid: str, marker: str) -> bool:
        if marker not in MARKERS:
            raise errors.InvalidArgument(f"unknown marker {marker!r}: one of {MARKERS}")
        message = await self.host.storage.history_find(client.profile, uid=uid)
        if message is None:
            raise errors.NotFound(f"no message with uid {uid!r}")
        if message["outgoing"]:
            raise errors.InvalidArgument("markers are sent for received messages only")
        extra = message["extra"]
        marker_id = extra.get("marker_id")
        if not extra.get("markable") or not marker_id:
            log.debug("[%s] message %s is not markable", client.profile, uid)
            return False
        if _rank(extra.get("marker_sent")) >= _rank(marker):
            return False
        groupchat = message["type"] == "groupchat"
        peer = message["source"]
        # a private message from a room occupant: answer that occupant, who already sees
        # our presence in the room
        muc_pm = bool(extra.get("muc_pm")) and bool(message["source_resource"]) and not groupchat
        to = f"{peer}/{message['source_resource']}" if muc_pm else peer
        last = await self.host.storage.kv_get(KV_NAMESPACE, to, profile=client.profile)
        if isinstance(last, dict) and _rank(last.get("marker")) >= _rank(marker):
            if message["timestamp"] < float(last.get("timestamp", 0)):
                return False
        if not (groupchat or muc_pm) and not await privacy_allows(
            self.host, client, "markers", peer
        ):
            log.debug("[%s] no marker to %s (privacy)", client.profile, peer)
            return False
        elt = domish.Element((None, "message"))
        elt["to"] = to
        elt["type"] = "groupchat" if groupchat else "chat"
        elt["id"] = new_uid()
        elt.addElement((NS_MARKERS, marker))["id"] = marker_id
        if message.get("thread"):
            elt.addElement("thread", content=message["thread"])
        elt.addElement((NS_HINTS, "store"))
        client.send(elt)
        await self.host.storage.kv_set(
            KV_NAMESPACE,
            to,
            {"uid": uid, "timestamp": message["timestamp"], "marker": marker},
            client.profile,
        )
        if muc_pm:
            # the room's bare JID also carries its public messages: mark this one only
            await self.host.messages.update(client.profile, uid, "marker", {"marker_sent": marker})
        else:
            await self._mark(client, uid, "marker_sent", marker, peer, outgoing=False)
        return True

    async def _bridge_send(self, profile: str, uid: str, marker: str) -> bool:
        profile = await self.host.profiles.resolve(profile)
        return await self.send_marker(self.host.get_client(profile), uid, marker)

    async def _mark(self, client, uid, key, marker, peer, outgoing) -> list[str]:
        """Mark ``uid`` and the earlier messages of the conversation; one MessageUpdate each."""
        try:
            uids = await self.host.storage.history_mark_before(
                client.profile, uid, key, marker, MARKERS, with_jid=peer, outgoing=outgoing
            )
        except errors.SatError as e:
            log.info("[%s] marker on %s not recorded: %s", client.profile, uid, e)
            return []
        now = time.time()
        for updated in uids:
            self.host.bridge.emit(
                "MessageUpdate",
                client.profile,
                updated,
                "marker",
                {key: marker, f"{key}_timestamp": now, "marked_up_to": uid},
            )
        return uids

    # --- receiving ----------------------------------------------------------------------

    def _remember_markable(self, client, elt: domish.Element, data: dict) -> None:
        extra = data["extra"]
        extra["markable"] = True
        if data["type"] == "groupchat":
            # XEP-0333 §7.7: in a room announcing XEP-0359, only the room's id is usable
            # (XEP-0359 keeps it only if the room announces urn:xmpp:sid:0; otherwise a
            # claimed one is spoofed and the sender's id is all there is)
            if data.get("stanza_id") and data.get("stanza_id_by") == data["source"]:
                extra["marker_id"] = data["stanza_id"]
                return
        msg_id = elt.getAttribute("id")
        if msg_id and len(msg_id) <= MAX_ID_LENGTH:
            extra["marker_id"] = msg_id
        else:
            extra.pop("markable", None)

    def _on_received(self, client, elt: domish.Element, data: dict):
        # synchronous for <markable/> (on most messages); a coroutine for a marker, which
        # updates stored messages
        markers = [c for c in elt.elements() if c.uri == NS_MARKERS]
        if not markers:
            return
        if len(markers) > 1:
            log.info(
                "[%s] message with several chat markers from %s ignored",
                client.profile,
                elt.getAttribute("from"),
            )
            return
        marker = markers[0]
        if marker.name == "markable":
            if data.get("body") is not None and data["type"] in ("chat", "groupchat", "normal"):
                self._remember_markable(client, elt, data)
            return
        if marker.name not in MARKERS:
            log.info("[%s] unknown chat marker %r ignored", client.profile, marker.name[:32])
            return
        if data.get("body") is not None:
            return  # a marker rides alone; a content message does not mark (no loops)
        marked_id = marker.getAttribute("id")
        if not marked_id or len(marked_id) > MAX_ID_LENGTH:
            log.info("[%s] chat marker without usable id ignored", client.profile)
            return
        return self._apply_marker(client, data, marker.name, marked_id)

    async def _apply_marker(self, client, data: dict, name: str, marked_id: str) -> None:
        try:
            if data["type"] == "groupchat":
                await self._room_marker(client, data, name, marked_id)
            elif data["outgoing"] or data["extra"].get("carbon") == "sent":
                await self._own_marker(client, data, name, marked_id)
            else:
                await self._contact_marker(client, data, name, marked_id)
        except errors.SatError as e:
            log.info("[%s] chat marker ignored: %s", client.profile, e)

    async def _find(self, client, sender: str, msg_id: str, outgoing: bool, peer: str):
        """A stored message of the conversation with ``peer`` having stanza id ``msg_id``."""
        storage = self.host.storage
        own = client.jid.userhost()
        if outgoing:
            found = await storage.history_find(client.profile, uid=msg_id)
            if found is None:
                found = await storage.history_find(client.profile, source=own, origin_id=msg_id)
            if found is not None and found["outgoing"] and found["dest"] == peer:
                return found
            return None
        found = await storage.history_find(client.profile, source=sender, origin_id=msg_id)
        if found is None:
            for candidate in reversed(
                await storage.history_get(client.profile, with_jid=peer, limit=SCAN_LIMIT)
            ):
                if not candidate["outgoing"] and candidate["extra"].get("marker_id") == msg_id:
                    found = candidate
                    break
        if found is not None and not found["outgoing"] and found["source"] == peer:
            return found
        return None

    async def _contact_marker(self, client, data: dict, marker: str, msg_id: str) -> None:
        peer = data["source"]
        found = await self._find(client, peer, msg_id, outgoing=True, peer=peer)
        if found is None:
            log.info(
                "[%s] %s marker from %s for an unknown message ignored",
                client.profile,
                marker,
                peer,
            )
            return
        if _rank(found["extra"].get("marker")) >= _rank(marker):
            return  # markers only move forward
        if data["extra"].get("muc_pm"):
            # a room occupant: our messages to the room's other occupants are not its to mark
            if found["dest_resource"] == data["source_resource"]:
                await self.host.messages.update(
                    client.profile, found["uid"], "marker", {"marker": marker}
                )
            return
        await self._mark(client, found["uid"], "marker", marker, peer, outgoing=True)

    async def _own_marker(self, client, data: dict, marker: str, msg_id: str) -> None:
        """One of our other resources marked a contact's message: sync our read state."""
        peer = data["dest"]
        found = await self._find(client, peer, msg_id, outgoing=False, peer=peer)
        if found is None:
            return
        if _rank(found["extra"].get("marker_sent")) >= _rank(marker):
            return
        await self.host.storage.kv_set(
            KV_NAMESPACE,
            peer,
            {"uid": found["uid"], "timestamp": found["timestamp"], "marker": marker},
            client.profile,
        )
        await self._mark(client, found["uid"], "marker_sent", marker, peer, outgoing=False)

    async def _room_marker(self, client, data: dict, marker: str, msg_id: str) -> None:
        room = data["source"]
        nick = data["source_resource"]
        if not nick:
            return
        found = await self.host.storage.history_find(
            client.profile, stanza_id=msg_id, stanza_id_by=room
        )
        if found is None or found["source"] != room:
            return
        if marker != "displayed":
            return
        displayed_by = list(found["extra"].get("displayed_by") or [])
        if nick in displayed_by or len(displayed_by) >= MAX_DISPLAYED_BY:
            return
        displayed_by.append(nick)
        await self.host.messages.update(
            client.profile,
            found["uid"],
            "marker",
            {"displayed_by": displayed_by},
            data={"marker": marker, "by": nick, "displayed_by": displayed_by},
        )


PLUGIN = MarkersPlugin
