"""XEP-0424: Message Retraction (``urn:xmpp:message-retract:1``).

Sending
    ``MessageRetract(profile, uid)`` retracts one of our messages (any, not only the
    last): ``<retract id=…/>`` naming, in a 1:1 conversation, the original's ``id``
    attribute, in a room the room's XEP-0359 stanza-id (else its origin-id), with the
    XEP-0428 fallback body the XEP recommends (``/me retracted a previous message,
    but it's unsupported by your client.``) and a XEP-0334 ``<store/>`` hint. A 1:1
    retraction is applied to our history at once, a group chat one when the room
    reflects it. Refused (``PermissionDenied``) when the contact's online clients all
    announce caps without the feature.

Receiving
    A retraction is processed only when it comes from the author of the message
    (XEP-0424 business rules): same bare JID in a 1:1 conversation; in a room, the
    same occupant — same XEP-0421 occupant-id when the room advertises it (a nick
    change does not matter then), else same nick and same real JID when known, and
    the occupant did not leave since. Anything else (someone else's message, a
    retraction by a non-moderator of another occupant's message, an unknown message)
    is ignored with a log line: the history is unchanged and the fallback body is
    never stored.

    A retracted message becomes a tombstone: its body is cleared (and leaves the
    full-text index: nothing finds it any more), what was derived from it (previous
    versions, styling...) is dropped, and ``extra["retracted"] = {"by", "timestamp",
    "id"}`` (``by``: the retracting JID; in a room, room/nick). Then
    ``MessageUpdate(profile, uid, "retraction", {"body": "", "retracted": …})``.
    Retracting twice changes nothing.

    The older form (``<apply-to xmlns='urn:xmpp:fasten:0' id=…><retract
    xmlns='urn:xmpp:message-retract:0'/></apply-to>``, still sent by some clients)
    is accepted with the same rules. Moderators' retractions (XEP-0425, a
    ``<moderated/>`` inside) are the XEP-0425 plugin's business.
"""

from __future__ import annotations

import logging

from twisted.words.xish import domish

from sat.core import errors, hooks
from sat.plugins.xep_0308_correction import (
    EARLY_PRIORITY,
    NS_FALLBACK,
    NS_HINTS,
    Author,
    EditingPlugin,
    child,
    same_author,
    valid_id,
)

log = logging.getLogger(__name__)

NS_RETRACT = "urn:xmpp:message-retract:1"
NS_RETRACT_0 = "urn:xmpp:message-retract:0"
NS_FASTEN = "urn:xmpp:fasten:0"
NS_MODERATE = "urn:xmpp:message-moderate:1"
NS_MODERATE_0 = "urn:xmpp:message-moderate:0"
FALLBACK_BODY = "/me retracted a previous message, but it's unsupported by your client."


def parse_retraction(elt: domish.Element) -> tuple[str | None, domish.Element | None, bool]:
    """(referenced id, the retract element, moderated?) of a message; (None, None, False)."""
    retract = child(elt, NS_RETRACT, "retract")
    if retract is not None:
        moderated = child(retract, NS_MODERATE, "moderated") is not None
        return retract.getAttribute("id"), retract, moderated
    apply_to = child(elt, NS_FASTEN, "apply-to")
    if apply_to is not None:
        old = child(apply_to, NS_RETRACT_0, "retract")
        moderated = child(apply_to, NS_MODERATE_0, "moderated") is not None
        if old is not None or moderated:
            return apply_to.getAttribute("id"), old, moderated
    return None, None, False


class RetractionPlugin(EditingPlugin):
    name = "XEP-0424"
    label = "Message Retraction"
    xeps = ("XEP-0424", "XEP-0428")
    description = "Retracts our messages; turns contacts' retracted messages into tombstones."
    features = (NS_RETRACT, NS_FALLBACK)
    notes_identity = True

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add(
            "message_received",
            self._on_received,
            EARLY_PRIORITY,
            namespaces=[NS_RETRACT, NS_FASTEN],
        )
        self._add_method(
            "MessageRetract",
            self._bridge_retract,
            args=[
                ("profile", "s", "profile (empty: the default profile)"),
                ("uid", "s", "uid of one of our messages"),
            ],
            doc="Retract one of our messages (XEP-0424): recipients are asked to remove it; "
            "our history keeps a tombstone (empty body, extra.retracted) and the "
            "MessageUpdate signal (type retraction) follows (in a room, once the room "
            "reflects the retraction).",
        )

    async def _bridge_retract(self, profile: str, uid: str) -> None:
        client = await self._client(profile)
        await self.retract(client, uid)

    # --- sending --------------------------------------------------------------------------

    async def retract(self, client, uid: str) -> None:
        row = await self.get_message(client, uid)
        if not self.is_own(client, row):
            raise errors.PermissionDenied(
                "only our own messages can be retracted (a room moderator uses MessageModerate)"
            )
        if (row.get("extra") or {}).get("retracted"):
            return
        peer, groupchat = self.conversation(client, row)
        if groupchat:
            ref = self.reference_for(row, "stable") or row.get("origin_id")
        else:
            ref = self.reference_for(row, "id")
        if not ref:
            raise errors.InvalidArgument("this message has no id to refer to: cannot retract it")
        await self.check_peer(client, row, NS_RETRACT, "message retraction")

        def build(elt: domish.Element) -> None:
            retract = elt.addElement((NS_RETRACT, "retract"))
            retract["id"] = ref
            fallback = elt.addElement((NS_FALLBACK, "fallback"))
            fallback["for"] = NS_RETRACT
            elt.addElement((NS_HINTS, "store"))

        _elt, data = await self.send_payload(
            client, row, build, body=FALLBACK_BODY, extra={"receipt": False}
        )
        if not groupchat:
            await self.retract_row(
                client,
                row,
                {"by": client.jid.userhost(), "timestamp": data["timestamp"], "id": data["uid"]},
            )

    # --- receiving --------------------------------------------------------------------------

    async def _on_received(self, client, elt: domish.Element, data: dict):
        ref, retract, moderated = parse_retraction(elt)
        if ref is None and retract is None and not moderated:
            return None
        profile = client.profile
        sender = elt.getAttribute("from") or data["source"]
        if moderated:
            # XEP-0425 (higher priority) handles legitimate ones; what is left is refused
            log.warning(
                "[%s] moderation notice from %s not accepted (only the room itself may send "
                "one, and only when XEP-0425 is loaded): ignored",
                profile,
                sender,
            )
            return hooks.STOP
        if not valid_id(ref):
            log.warning("[%s] retraction with an invalid id from %s ignored", profile, sender)
            return hooks.STOP
        author = self.author_of(client, elt, data)
        if author is None:
            return hooks.STOP
        peer, groupchat = self.conversation(client, data)
        target = await self.find_referenced(client, ref, peer, groupchat, author)
        if target is None:
            target = await self.find_referenced(client, ref, peer, groupchat)
        if target is None:
            log.info("[%s] retraction from %s of unknown message %s ignored", profile, sender, ref)
            return hooks.STOP
        if (target.get("extra") or {}).get("retracted"):
            log.debug("[%s] message %s already retracted", profile, target["uid"])
            return hooks.STOP
        original = Author.of_row(target)
        ok, reason = same_author(
            original, author, same_nick=False, left_since=self.left_since(client, target)
        )
        if not ok:
            log.warning(
                "[%s] refused retraction from %s of message %s written by %s: %s; "
                "history unchanged",
                profile,
                sender,
                ref,
                original.jid,
                reason,
            )
            return hooks.STOP
        await self.retract_row(
            client,
            target,
            {
                "by": author.jid,
                "timestamp": data["timestamp"],
                "id": data["extra"].get("message_id") or elt.getAttribute("id"),
            },
        )
        return hooks.STOP


PLUGIN = RetractionPlugin
