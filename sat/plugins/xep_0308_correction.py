"""XEP-0308: Last Message Correction (``urn:xmpp:message-correct:0``).

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
    ``extra["replace_id"]``) and kept pending (see
    :mod:`sat.plugins._pending_references`): if that message arrives (live, or from
    an archive fetched newest first), the same checks are made (same sender; no other
    message of the sender between the two) and the message is corrected (``MessageUpdate`` type ``correction``), then the stand-alone
    copy is deleted (``MessageUpdate`` type ``deleted``, ``{"deleted": True,
    "merged_into": uid}``). The same correction seen twice (live, then again from the
    archive) is applied once.

The helpers shared with the other editing plugins (authors, references, archive pages,
references received before their message) are in :mod:`sat.plugins._editing`.
"""

from __future__ import annotations

import logging
import time

from twisted.words.xish import domish

from sat.core import errors, hooks
from sat.core.messages import MAX_BODY_LENGTH
from sat.plugins._editing import (
    ArchivedPage,
    Author,
    EditingPlugin,
    child,
    session_state,
    valid_id,
)

log = logging.getLogger(__name__)

NS_LMC = "urn:xmpp:message-correct:0"
#: previous versions kept per message, and their total size (oldest dropped first)
MAX_EDITS = 20
MAX_EDITS_CHARS = 200_000
#: extra keys computed from the body by other plugins (styling spans, /me): they follow it
BODY_DERIVED_KEYS = ("styling", "unstyled", "me")
#: corrections run last: the body-derived keys of the new body are computed by then
CORRECTION_PRIORITY = -100


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
            and ArchivedPage.in_conversation(d, peer, groupchat, own)
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
