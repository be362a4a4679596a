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
    retraction by a non-moderator of another occupant's message) is ignored with a log
    line: the history is unchanged and the fallback body is never stored.

    A retraction of a message we do not have yet is kept (see
    :class:`sat.plugins._pending_references.PendingReferences`: bounded, saved across
    restarts) and applied when that message is stored, after the same author check (a
    retraction by someone else than the author is refused then); corrections of that
    message stored on their own meanwhile are retracted at once (they carry its text).

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

Archived tombstones
    An archive may replace a retracted message by a tombstone (XEP-0424 "Tombstones":
    ``<retracted xmlns='urn:xmpp:message-retract:1' id=… stamp=…/>`` instead of the
    body; XEP-0425 adds ``<moderated by=…/>`` and ``<reason/>``; the older ``:0`` forms
    are read too). Archived messages go through the ``message_received`` hooks with
    ``extra["archived"]``: a tombstone from our own archive (1:1) or from the room's
    archive (group chat) is authoritative (no author check). If we stored that message
    (same archive id; else same origin-id or same sender and ``id``, when our copy has no
    id from that archive) it becomes a tombstone as for a live retraction
    (``extra["retracted"]`` gets ``"tombstone": True``, ``MessageUpdate``); otherwise the
    tombstone is stored as a retracted placeholder (no body, ``extra["retracted"]``) at
    the message's place. A ``<retracted/>`` anywhere else (a live message, another
    archive) is ignored with a log line.
"""

from __future__ import annotations

import logging

from twisted.words.xish import domish

from sat.core import errors, hooks
from sat.plugins._editing import (
    BODY_REVEALING_KEYS,
    EARLY_PRIORITY,
    NS_FALLBACK,
    NS_HINTS,
    NS_OCCUPANT_ID,
    NS_SID,
    Author,
    EditingPlugin,
    child,
    same_author,
    valid_id,
)
from sat.plugins.xep_0203_delay import parse_datetime

log = logging.getLogger(__name__)

NS_RETRACT = "urn:xmpp:message-retract:1"
NS_RETRACT_0 = "urn:xmpp:message-retract:0"
NS_FASTEN = "urn:xmpp:fasten:0"
NS_MODERATE = "urn:xmpp:message-moderate:1"
NS_MODERATE_0 = "urn:xmpp:message-moderate:0"
FALLBACK_BODY = "/me retracted a previous message, but it's unsupported by your client."
#: longest JID kept from a tombstone's ``by``, longest reason
MAX_JID_LENGTH = 3071
MAX_REASON_LENGTH = 2000


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


def _first_named(parent: domish.Element, name: str) -> domish.Element | None:
    return next((c for c in parent.elements() if c.name == name), None)


def parse_tombstone(elt: domish.Element) -> dict | None:
    """What an archived tombstone says, or None if ``elt`` is not one.

    XEP-0424 (Tombstones): the archive replaced the message's content by ``<retracted
    xmlns='urn:xmpp:message-retract:1' id=retraction's id stamp=…/>``; XEP-0425 puts a
    ``<moderated by=…/>`` (and a ``<reason/>``) in it. Older forms: ``<retracted
    xmlns='urn:xmpp:message-retract:0' stamp=…/>`` directly in the message, or inside a
    ``<moderated xmlns='urn:xmpp:message-moderate:0' by=…/>``. Returns ``{"id", "stamp",
    "moderated", "by", "by_occupant_id", "reason", "origin_id"}`` (unusable values None).
    """
    retracted = child(elt, NS_RETRACT, "retracted") or child(elt, NS_RETRACT_0, "retracted")
    moderated = None
    if retracted is not None:
        moderated = child(retracted, NS_MODERATE, "moderated")
        reason = _first_named(retracted, "reason")
    else:
        moderated = child(elt, NS_MODERATE_0, "moderated")
        if moderated is None:
            return None
        retracted = child(moderated, NS_RETRACT_0, "retracted")
        if retracted is None:
            return None
        reason = _first_named(moderated, "reason")
    by = moderated.getAttribute("by") if moderated is not None else None
    occupant = child(moderated, NS_OCCUPANT_ID, "occupant-id") if moderated is not None else None
    occupant_id = occupant.getAttribute("id") if occupant is not None else None
    origin = child(retracted, NS_SID, "origin-id")  # the 0.2 form named the message so
    origin_id = origin.getAttribute("id") if origin is not None else None
    reason_text = str(reason).strip()[:MAX_REASON_LENGTH] if reason is not None else ""
    retraction_id = retracted.getAttribute("id")
    return {
        "id": retraction_id if valid_id(retraction_id) else None,
        "stamp": parse_datetime(retracted.getAttribute("stamp")),
        "moderated": moderated is not None,
        "by": by if by and len(by) <= MAX_JID_LENGTH else None,
        "by_occupant_id": occupant_id if valid_id(occupant_id) else None,
        "reason": reason_text or None,
        "origin_id": origin_id if valid_id(origin_id) else None,
    }


class RetractionPlugin(EditingPlugin):
    name = "XEP-0424"
    label = "Message Retraction"
    xeps = ("XEP-0424", "XEP-0428")
    description = "Retracts our messages; turns contacts' retracted messages into tombstones."
    features = (NS_RETRACT, NS_FALLBACK)
    notes_identity = True
    pending_kinds = ("retraction",)

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add(
            "message_received",
            self._on_received,
            EARLY_PRIORITY,
            # the last two: the older forms of archived tombstones
            namespaces=[NS_RETRACT, NS_FASTEN, NS_RETRACT_0, NS_MODERATE_0],
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
        tombstone = parse_tombstone(elt)
        if tombstone is not None:
            if data["extra"].get("archived"):
                return await self._on_tombstone(client, elt, data, tombstone)
            log.info(
                "[%s] tombstone outside an archive result from %s: element ignored",
                client.profile,
                elt.getAttribute("from") or data["source"],
            )
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
        retracted = {
            "by": author.jid,
            "timestamp": data["timestamp"],
            "id": data["extra"].get("message_id") or elt.getAttribute("id"),
        }
        if target is None:
            await self._retract_early_corrections(client, ref, data, author, retracted)
            kept = self.keep_pending(
                client, "retraction", ref, data, author, {"retracted": retracted}
            )
            log.info(
                "[%s] retraction from %s of unknown message %s %s",
                profile,
                sender,
                ref,
                "kept until that message arrives" if kept else "ignored",
            )
            return hooks.STOP
        if (target.get("extra") or {}).get("retracted"):
            log.debug("[%s] message %s already retracted", profile, target["uid"])
            return hooks.STOP
        what = f"retraction from {sender} of message {ref} written by {Author.of_row(target).jid}"
        if not self.may_edit(client, target, author, same_nick=False, what=what):
            return hooks.STOP
        await self.retract_row(client, target, retracted)
        return hooks.STOP

    async def _retract_early_corrections(
        self, client, ref: str, data: dict, author: Author, retracted: dict
    ) -> None:
        """The message ``ref`` is unknown but corrections of it by the same author were
        stored as messages of their own (they came first): they carry its text, retract
        them too."""
        peer, groupchat = self.conversation(client, data)
        for entry in self.pending.matching(client.profile, "correction", peer, groupchat, ref):
            ok, _reason = same_author(self.pending_author(entry), author, same_nick=False)
            uid = entry["data"].get("uid")
            if not ok or not isinstance(uid, str) or not uid:
                continue
            row = await self.host.storage.history_find(client.profile, uid=uid)
            if row is None or (row.get("extra") or {}).get("retracted"):
                continue
            if (row.get("extra") or {}).get("replace_id") != ref:
                continue
            await self.retract_row(client, row, retracted)

    # --- archived tombstones -----------------------------------------------------------------

    async def _on_tombstone(self, client, elt: domish.Element, data: dict, tombstone: dict):
        """An archive (ours, or a room's) replaced a retracted message by a tombstone.

        Those archives are authoritative (the MAM plugin only takes results from the archive
        queried, and from a room's archive only the room's messages): no author check. A
        message we stored becomes a tombstone as for a live retraction; for one we never
        had, the tombstone is stored as a retracted placeholder (no body) at the place the
        message had, so the conversation shows that something was said and removed there
        (XEP-0424 lets clients tell the user), a later copy of the message (same archive
        id, same origin-id) is a duplicate that cannot bring the text back, and the
        retraction message that follows in the archive finds its target.
        """
        profile = client.profile
        groupchat = data["type"] == "groupchat"
        archive = data.get("stanza_id_by")
        own = client.jid.userhost()
        if archive != (data["source"] if groupchat else own):
            log.warning(
                "[%s] tombstone from the archive of %s, neither ours nor the room's: ignored",
                profile,
                archive,
            )
            return hooks.STOP
        resource = data.get("source_resource") or ""
        author_jid = f"{data['source']}/{resource}" if groupchat and resource else data["source"]
        retracted = {
            "by": tombstone["by"] or (data["source"] if tombstone["moderated"] else author_jid),
            "timestamp": tombstone["stamp"] or data["timestamp"],
            "id": tombstone["id"],
            "tombstone": True,
        }
        if tombstone["moderated"]:
            retracted["moderated"] = True
            retracted["reason"] = tombstone["reason"]
            retracted["by_occupant_id"] = tombstone["by_occupant_id"]
        retracted = {k: v for k, v in retracted.items() if v is not None}
        target = await self._tombstone_target(client, elt, data, tombstone, archive)
        if target is not None:
            if not (target.get("extra") or {}).get("retracted"):
                await self.retract_row(client, target, retracted)
            return hooks.STOP
        log.info(
            "[%s] archived tombstone of a message we never had (archive id %s of %s): stored "
            "as a retracted placeholder",
            profile,
            data.get("stanza_id"),
            archive,
        )
        data["body"] = None
        extra = data["extra"]
        for key in BODY_REVEALING_KEYS:
            extra.pop(key, None)
        extra["retracted"] = retracted
        extra["store"] = True  # no body, but a row to keep (see above)
        return None

    async def _tombstone_target(
        self, client, elt: domish.Element, data: dict, tombstone: dict, archive: str
    ) -> dict | None:
        """The stored message a tombstone stands for: same archive id, else (stored before we
        knew its archive id) same origin-id, else same sender and ``id`` attribute."""
        storage = self.host.storage
        profile = client.profile
        if data.get("stanza_id"):
            row = await storage.history_find(
                profile, stanza_id=data["stanza_id"], stanza_id_by=archive
            )
            if row is not None:
                return row
        peer, groupchat = self.conversation(client, data)
        resource = data.get("source_resource") or ""

        def usable(row: dict | None) -> bool:
            # an archived message of that archive with another id is another message
            return (
                row is not None
                and self.conversation(client, row) == (peer, groupchat)
                and row["source"] == data["source"]
                and (not groupchat or (row.get("source_resource") or "") == resource)
                and not (row.get("stanza_id") and row.get("stanza_id_by") == archive)
            )

        origin_id = data.get("origin_id") or tombstone["origin_id"]
        if origin_id:
            row = await storage.history_find(profile, source=data["source"], origin_id=origin_id)
            if usable(row):
                return row
        msg_id = data["extra"].get("message_id") or elt.getAttribute("id")
        if valid_id(msg_id):
            author = Author(bare=data["source"], resource=resource, muc=groupchat)
            row = await self.find_referenced(client, msg_id, peer, groupchat, author)
            if usable(row):
                return row
        return None

    # --- retractions received before their message ----------------------------------------

    def pending_accepts(self, client, message: dict, entry: dict) -> bool:
        return self.pending_author_matches(client, message, entry, same_nick=False)

    async def pending_apply(self, client, row: dict, entry: dict) -> None:
        if (row.get("extra") or {}).get("retracted"):
            return
        await self.retract_row(client, row, entry["data"]["retracted"])


PLUGIN = RetractionPlugin
