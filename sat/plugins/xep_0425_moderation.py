"""XEP-0425: Moderated Message Retraction (``urn:xmpp:message-moderate:1``).

Moderating
    ``MessageModerate(profile, room, uid, reason)``: a room moderator asks the room to
    retract an occupant's message. The room must advertise the feature (``:1``, or
    the older ``:0``, whose request form is used then); the message must be a group
    chat message of that room carrying the room's XEP-0359 stanza-id (the only id the
    room knows it by). When the room tells us our role and it is not ``moderator``
    the request is refused locally (``PermissionDenied``); a room refusal comes back
    as a named error too. Nothing changes in our history until the room broadcasts
    the retraction.

Receiving
    A moderation notice — ``<retract id=stanza-id><moderated by=…/><reason/></retract>``
    (or the ``:0`` form inside ``<apply-to/>``) — is applied only when it comes from
    the room itself: a group chat message from the room's bare JID (no nick), a room
    we are in, naming a message of that room by the stanza-id *that room* gave it
    (XEP-0425 business rules: "all other such messages MUST be discarded"). A notice
    sent by an occupant (a non-moderator trying to retract someone else's message)
    or by a contact is ignored with a log line: the history is unchanged. A notice from
    the room naming a stanza-id we do not have yet is kept (see
    :class:`sat.plugins._pending_references.PendingReferences`) and applied when the
    room's message with that stanza-id is stored.

    The message becomes a tombstone as for XEP-0424, with ``extra["retracted"] =
    {"by": moderator, "moderated": True, "reason", "timestamp", "id"}``, then
    ``MessageUpdate(profile, uid, "retraction", …)``.
"""

from __future__ import annotations

import logging

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from sat.core import errors, hooks
from sat.plugins._editing import (
    EARLY_PRIORITY,
    Author,
    EditingPlugin,
    FeatureNotSupported,
    child,
    session_state,
    valid_id,
)
from sat.plugins.xep_0424_retraction import (
    NS_FASTEN,
    NS_MODERATE,
    NS_MODERATE_0,
    NS_RETRACT,
    NS_RETRACT_0,
)

log = logging.getLogger(__name__)

MAX_REASON_LENGTH = 2000
MAX_JID_LENGTH = 3071
#: before XEP-0424's hook: moderation notices are ours
PRIORITY = EARLY_PRIORITY + 10


def parse_moderation(elt: domish.Element) -> tuple[str | None, domish.Element | None, str]:
    """(stanza-id, <moderated/> element, reason) of a moderation notice, or (None, None, "")."""
    retract = child(elt, NS_RETRACT, "retract")
    if retract is not None:
        moderated = child(retract, NS_MODERATE, "moderated")
        if moderated is not None:
            reason = child(retract, NS_RETRACT, "reason")
            return retract.getAttribute("id"), moderated, str(reason) if reason else ""
    apply_to = child(elt, NS_FASTEN, "apply-to")
    if apply_to is not None:
        moderated = child(apply_to, NS_MODERATE_0, "moderated")
        if moderated is not None and child(moderated, NS_RETRACT_0, "retract") is not None:
            reason = child(moderated, NS_MODERATE_0, "reason")
            return apply_to.getAttribute("id"), moderated, str(reason) if reason else ""
    return None, None, ""


class ModerationPlugin(EditingPlugin):
    name = "XEP-0425"
    label = "Moderated Message Retraction"
    xeps = ("XEP-0425",)
    dependencies = ("XEP-0030", "XEP-0359", "XEP-0045")
    recommendations = ("XEP-0424", "XEP-0313")
    description = "Room moderators retract occupants' messages; only the room's notices count."
    pending_kinds = ("moderation",)

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add(
            "message_received", self._on_received, PRIORITY, namespaces=[NS_RETRACT, NS_FASTEN]
        )
        self._add_method(
            "MessageModerate",
            self._bridge_moderate,
            args=[
                ("profile", "s", "profile (empty: the default profile)"),
                ("room", "s", "room bare JID"),
                ("uid", "s", "uid of the group chat message to retract"),
                ("reason", "s", "why (shown to the occupants); may be empty"),
            ],
            doc="As a room moderator, ask the room to retract a message (XEP-0425). The "
            "history changes (tombstone, MessageUpdate type retraction) when the room "
            "broadcasts the retraction.",
        )

    async def _bridge_moderate(self, profile: str, room: str, uid: str, reason: str) -> None:
        client = await self._client(profile)
        await self.moderate(client, room, uid, reason)

    # --- moderating -------------------------------------------------------------------------

    async def moderate(self, client, room_jid: str, uid: str, reason: str = "") -> None:
        try:
            room_bare = jabber_jid.JID(room_jid).userhost()
        except (jabber_jid.InvalidFormat, TypeError):
            raise errors.InvalidArgument(f"{room_jid!r} is not a valid room JID") from None
        if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
            raise errors.InvalidArgument(f"reason must be a text of at most {MAX_REASON_LENGTH}")
        room = self.room_of(client, room_bare)
        if room is None:
            raise errors.NotFound(f"we are not in room {room_bare}")
        row = await self.get_message(client, uid)
        if row["type"] != "groupchat" or row["source"] != room_bare:
            raise errors.InvalidArgument(
                f"message {uid} is not a group chat message of {room_bare}"
            )
        if (row.get("extra") or {}).get("retracted"):
            return
        role = self.own_role(client, room_bare)
        if role is not None and role != "moderator":
            raise errors.PermissionDenied(
                f"only moderators may retract others' messages in {room_bare} (our role: {role})"
            )
        stanza_id = self.reference_for(row, "stable")
        if not stanza_id:
            raise errors.InvalidArgument(
                f"message {uid} has no stanza-id from {room_bare}: the room cannot retract it"
            )
        features = self.room_features(room)
        if not features:
            disco_plugin = self.host.plugins["XEP-0030"]
            features = set((await disco_plugin.info(client, room_bare)).features)
        if NS_MODERATE in features:
            payload = domish.Element((NS_MODERATE, "moderate"))
            payload["id"] = stanza_id
            payload.addElement((NS_RETRACT, "retract"))
            if reason:
                payload.addElement("reason", content=reason)
        elif NS_MODERATE_0 in features:
            payload = domish.Element((NS_FASTEN, "apply-to"))
            payload["id"] = stanza_id
            moderate = payload.addElement((NS_MODERATE_0, "moderate"))
            moderate.addElement((NS_RETRACT_0, "retract"))
            if reason:
                moderate.addElement("reason", content=reason)
        else:
            raise FeatureNotSupported(
                f"{room_bare} does not support message moderation ({NS_MODERATE})"
            )
        disco_plugin = self.host.plugins["XEP-0030"]
        await disco_plugin.send_iq(
            client, room_bare, payload, what="moderation request", iq_type="set"
        )

    # --- receiving ------------------------------------------------------------------------------

    async def _on_received(self, client, elt: domish.Element, data: dict):
        ref, moderated, reason = parse_moderation(elt)
        if moderated is None:
            return None
        profile = client.profile
        sender = elt.getAttribute("from") or ""
        room_bare = data["source"]
        if data["type"] != "groupchat" or data.get("source_resource"):
            log.warning(
                "[%s] moderation notice from %s refused: only the room itself may send one "
                "(XEP-0425); history unchanged",
                profile,
                sender,
            )
            return hooks.STOP
        if self.room_of(client, room_bare) is None:
            log.warning(
                "[%s] moderation notice from %s, a room we are not in: ignored", profile, sender
            )
            return hooks.STOP
        if not valid_id(ref):
            log.warning(
                "[%s] moderation notice with an invalid id from %s ignored", profile, sender
            )
            return hooks.STOP
        target = await self.host.storage.history_find(
            profile, stanza_id=ref, stanza_id_by=room_bare
        )
        if target is None:
            target = self._pending_by_stanza_id(client, ref, room_bare)
        by = moderated.getAttribute("by") or ""
        if len(by) > MAX_JID_LENGTH:
            by = ""
        occupant = child(moderated, "urn:xmpp:occupant-id:0", "occupant-id")
        occupant_id = occupant.getAttribute("id") if occupant is not None else None
        retracted = {
            "by": by or room_bare,
            "moderated": True,
            "reason": reason[:MAX_REASON_LENGTH] or None,
            "by_occupant_id": occupant_id if valid_id(occupant_id) else None,
            "timestamp": data["timestamp"],
            "id": data["extra"].get("message_id") or elt.getAttribute("id"),
        }
        if target is None:
            kept = self.keep_pending(
                client,
                "moderation",
                ref,
                data,
                Author(bare=room_bare, muc=True),
                {"retracted": {k: v for k, v in retracted.items() if v is not None}},
            )
            log.info(
                "[%s] moderation notice from %s for unknown stanza-id %s %s",
                profile,
                room_bare,
                ref,
                "kept until that message arrives" if kept else "ignored",
            )
            return hooks.STOP
        if target["type"] != "groupchat" or target["source"] != room_bare:
            log.info(
                "[%s] moderation notice from %s for stanza-id %s of another conversation ignored",
                profile,
                room_bare,
                ref,
            )
            return hooks.STOP
        if (target.get("extra") or {}).get("retracted"):
            return hooks.STOP
        await self.retract_row(client, target, retracted)
        return hooks.STOP

    # --- moderation notices received before their message -----------------------------------

    def pending_accepts(self, client, message: dict, entry: dict) -> bool:
        """Only the message the room gave that stanza-id (the notice came from the room)."""
        room = entry["peer"]
        return (
            message.get("type") == "groupchat"
            and message.get("source") == room
            and message.get("stanza_id") == entry["ref"]
            and message.get("stanza_id_by") == room
        )

    async def pending_apply(self, client, row: dict, entry: dict) -> None:
        if (row.get("extra") or {}).get("retracted"):
            return
        await self.retract_row(client, row, entry["data"]["retracted"])

    @staticmethod
    def _pending_by_stanza_id(client, ref: str, room_bare: str) -> dict | None:
        for data in session_state(client).archived.live():
            if (
                data["type"] == "groupchat"
                and data["source"] == room_bare
                and data.get("stanza_id") == ref
                and data.get("stanza_id_by") == room_bare
            ):
                return data
        return None


PLUGIN = ModerationPlugin
