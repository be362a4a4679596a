"""XEP-0461: Message Replies (``urn:xmpp:reply:0``), with a XEP-0428 fallback.

Sending
    ``MessageSend(..., extra={"reply_to": uid})`` marks the message as a reply to the
    stored message ``uid`` of the same conversation: ``<reply to=author id=…/>``, the
    id being the room's stanza-id in a room, else the origin-id or ``id`` of the
    message (XEP-0461 "Using the correct ID"). Clients that do not know replies get a
    quote of the message before the text, marked as a XEP-0428 fallback (``<fallback
    for='urn:xmpp:reply:0'><body start end/></fallback>``) so that supporting clients
    hide it; ``extra["reply_fallback"] = False`` sends no quote. Our stored copy keeps
    the text as typed (no quote) with ``reply_to``, ``reply_to_id`` and
    ``reply_to_jid`` in ``extra``. A ``reply_to`` that is unknown, of another
    conversation or that cannot be referred to (a group chat message without
    stanza-id) is dropped with a log line: the message goes as a plain one.

Receiving
    ``extra["reply_to_id"]`` / ``extra["reply_to_jid"]`` keep what the sender said;
    when the referenced message is in our history (same conversation),
    ``extra["reply_to"]`` is its uid and the fallback quote is removed from the body
    (frontends show the referenced message instead); otherwise the body is kept as
    received, quote included. Malformed references are ignored (the message stays).

Replies received before their message
    A reply may arrive before the message it answers (archive catch-up, carbons, room
    history). It is stored as received (quote included) and kept waiting (see
    :class:`sat.plugins._pending_references.PendingReferences`: at most 500 references
    per profile and 100 per sender, 24 hours, saved across restarts). When a message of
    the same conversation carrying the referenced id is stored, the reply gets
    ``extra["reply_to"]`` (its uid), then ``MessageUpdate(profile, reply uid, "reply",
    {"reply_to": uid})``. Which id counts follows XEP-0461 "Using the correct ID": in a
    room only the stanza-id the room gave the message (the ``id`` attribute and the
    origin-id are chosen by occupants, so anyone could send a message carrying the id a
    waiting reply names); in a 1:1 conversation its ``id`` attribute (or the origin-id
    earlier versions of the XEP used). The body keeps the quote then: it was stored with
    it, and what other plugins derived from the body (styling spans, /me) was computed on
    it.
"""

from __future__ import annotations

import logging

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from sat.core.messages import full_jid
from sat.plugins._editing import (
    EARLY_PRIORITY,
    NS_FALLBACK,
    Author,
    EditingPlugin,
    child,
    children,
    valid_id,
)

log = logging.getLogger(__name__)

NS_REPLY = "urn:xmpp:reply:0"
#: fallback namespace of the first XEP-0461 versions
NS_FALLBACK_OLD = "urn:xmpp:feature-fallback:0"
#: quoted lines / characters in the fallback of a reply we send
QUOTE_LINES = 3
QUOTE_CHARS = 200
MAX_JID_LENGTH = 3071
#: on send: after the ids (XEP-0359) and before styling (50) and encryption
SEND_PRIORITY = 300


def fallback_ranges(elt: domish.Element, body_length: int) -> list[tuple[int, int]]:
    """Valid ``[start, end)`` body ranges the XEP-0428 fallbacks for replies mark."""
    ranges = []
    for ns in (NS_FALLBACK, NS_FALLBACK_OLD):
        for fallback in children(elt, ns, "fallback"):
            if fallback.getAttribute("for") != NS_REPLY:
                continue
            for body in fallback.elements():
                if body.name != "body":
                    continue
                try:
                    start = int(body.getAttribute("start", "0"))
                    end = int(body.getAttribute("end", str(body_length)))
                except ValueError:
                    continue
                if 0 <= start < end <= body_length:
                    ranges.append((start, end))
    return ranges


def strip_ranges(text: str, ranges: list[tuple[int, int]]) -> str:
    for start, end in sorted(set(ranges), reverse=True):
        text = text[:start] + text[end:]
    return text


def quote(body: str) -> str:
    lines = body.splitlines()[:QUOTE_LINES] or [""]
    text = "\n".join(f"> {line}" for line in lines)
    if len(text) > QUOTE_CHARS:
        text = text[:QUOTE_CHARS] + "…"
    return text + "\n"


class RepliesPlugin(EditingPlugin):
    name = "XEP-0461"
    label = "Message Replies"
    xeps = ("XEP-0461", "XEP-0428")
    description = "Marks messages as replies to earlier ones (with a quote for older clients)."
    features = (NS_REPLY, NS_FALLBACK)

    pending_kinds = ("reply",)

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add("message_send", self._on_send, SEND_PRIORITY)
        host.hooks.add("message_received", self._on_received, EARLY_PRIORITY, namespaces=[NS_REPLY])

    # --- sending --------------------------------------------------------------------------

    async def _on_send(self, client, elt: domish.Element, data: dict) -> None:
        extra = data["extra"]
        uid = extra.get("reply_to")
        if uid is None:
            return
        if child(elt, NS_REPLY, "reply") is not None:
            return  # already built (a correction re-sending its payloads)
        want_fallback = extra.pop("reply_fallback", True) is not False
        row = None
        if isinstance(uid, str) and uid and len(uid) <= 256:
            row = await self.host.storage.history_find(client.profile, uid=uid)
        if row is None:
            log.warning(
                "[%s] reply_to %r: no such message, sent as a plain message",
                client.profile,
                str(uid)[:64],
            )
            extra.pop("reply_to", None)
            return
        peer, groupchat = self.conversation(client, row)
        to_peer = data["dest"]
        if peer != to_peer or groupchat != (data["type"] == "groupchat"):
            log.warning(
                "[%s] reply_to %s is not a message of the conversation with %s: sent as a plain "
                "message",
                client.profile,
                uid,
                to_peer,
            )
            extra.pop("reply_to", None)
            return
        ref = self.reference_for(row, "stable")
        if not ref:
            log.warning(
                "[%s] message %s cannot be replied to (no stanza-id from the room): sent as a "
                "plain message",
                client.profile,
                uid,
            )
            extra.pop("reply_to", None)
            return
        author = Author.of_row(row)
        if author.muc:
            to = author.jid
        elif author.outgoing or author.bare == client.jid.userhost():
            to = full_jid(client.jid.userhost(), row.get("source_resource"))
        else:
            to = full_jid(author.bare, row.get("source_resource"))
        reply = elt.addElement((NS_REPLY, "reply"))
        reply["to"] = to
        reply["id"] = ref
        extra["reply_to_id"] = ref
        extra["reply_to_jid"] = to
        body_elt = next((c for c in elt.elements() if c.name == "body"), None)
        quoted_body = row.get("body")
        if want_fallback and body_elt is not None and quoted_body:
            prefix = quote(quoted_body)
            text = prefix + str(body_elt)
            body_elt.children = []
            body_elt.addContent(text)
            fallback = elt.addElement((NS_FALLBACK, "fallback"))
            fallback["for"] = NS_REPLY
            marked = fallback.addElement("body")
            marked["start"] = "0"
            marked["end"] = str(len(prefix))

    # --- receiving ------------------------------------------------------------------------

    async def _on_received(self, client, elt: domish.Element, data: dict) -> None:
        reply = child(elt, NS_REPLY, "reply")
        if reply is None:
            return
        profile = client.profile
        ref = reply.getAttribute("id")
        if not valid_id(ref):
            log.info(
                "[%s] reply with an invalid id from %s: kept as a plain message",
                profile,
                elt.getAttribute("from"),
            )
            return
        extra = data["extra"]
        extra["reply_to_id"] = ref
        to = reply.getAttribute("to")
        if to:
            try:
                if len(to) <= MAX_JID_LENGTH:
                    extra["reply_to_jid"] = jabber_jid.JID(to).full()
            except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
                pass
        author = self.author_of(client, elt, data)
        if author is None:
            return
        peer, groupchat = self.conversation(client, data)
        target = await self.find_referenced(client, ref, peer, groupchat)
        if target is None:
            reply_id = extra.get("message_id") or elt.getAttribute("id") or ""
            kept = self.keep_pending(
                client,
                "reply",
                ref,
                data,
                author,
                {"uid": data["uid"], "id": reply_id},
                # one entry per reply: the same reply seen twice (live, then from the
                # archive) keeps one
                discriminator=reply_id or data["uid"],
            )
            log.info(
                "[%s] reply from %s to unknown message %s: %s",
                profile,
                elt.getAttribute("from"),
                ref,
                "linked if that message arrives" if kept else "kept unlinked",
            )
            return
        extra["reply_to"] = target["uid"]
        body = data.get("body")
        if body:
            ranges = fallback_ranges(elt, len(body))
            if ranges:
                stripped = strip_ranges(body, ranges)
                if stripped.strip():
                    data["body"] = stripped

    # --- replies received before their message --------------------------------------------

    def pending_accepts(self, client, message: dict, entry: dict) -> bool:
        """Whether the stored ``message`` is the one the waiting reply names.

        The store matched one of its ids in the reply's conversation; in a room only the
        stanza-id the room gave it counts (XEP-0461 "Using the correct ID"): the other ids
        are chosen by occupants. Anyone may be replied to: no author check."""
        if entry["groupchat"]:
            return (
                message.get("stanza_id") == entry["ref"]
                and message.get("stanza_id_by") == message["source"]
            )
        return True

    async def pending_apply(self, client, row: dict, entry: dict) -> None:
        """The message ``row`` a stored reply answers arrived: link the reply to it."""
        info = entry["data"]
        reply = None
        if isinstance(info.get("uid"), str) and info["uid"]:
            reply = await self.host.storage.history_find(client.profile, uid=info["uid"])
        if reply is None and valid_id(info.get("id")):
            # stored under another uid (a copy of it was stored first): by its id
            peer, groupchat = self.conversation(client, row)
            reply = await self.find_referenced(
                client, info["id"], peer, groupchat, self.pending_author(entry)
            )
        extra = (reply or {}).get("extra") or {}
        if reply is None or extra.get("reply_to_id") != entry["ref"]:
            log.debug(
                "[%s] reply to %s received before it is gone: nothing to link",
                client.profile,
                row["uid"],
            )
            return
        if extra.get("reply_to") or extra.get("retracted"):
            return
        await self.update_row(client, reply, "reply", {"reply_to": row["uid"]})
        log.debug("[%s] reply %s linked to %s", client.profile, reply["uid"], row["uid"])


PLUGIN = RepliesPlugin
