"""Conversations: the messages of a 1:1 chat, a room or a private chat with a room occupant.

A :class:`Conversation` starts empty and loads its history from the daemon on demand
(:meth:`Conversation.load_history`: the last page first, then older pages with ``before_uid``
as the user scrolls up). Live messages (``MessageNew``) are appended; duplicates (a live
message that is also in a history page) are dropped by uid. Corrections, retractions,
reactions, delivery receipts and read markers change a message in place
(:meth:`Conversation.apply_update`) and the view redraws that message only.

Views listen to ``conversation.events``:

- ``append(message)``: a new message at the end;
- ``prepend(messages)``: older messages loaded at the beginning;
- ``reset()``: the list changed in a way that is neither (re-read ``messages``);
- ``update(message)``: a message changed (edited, retracted, reactions, receipt);
- ``state()``: chat state, subject, occupants or history status changed.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from sat_frontends.quick_frontend import jid as jidlib
from sat_frontends.quick_frontend import styling as stylinglib
from sat_frontends.quick_frontend.events import Events

log = logging.getLogger(__name__)

__all__ = ["Message", "Conversation", "CHAT", "GROUP", "PRIVATE", "conversation_key"]

CHAT = "chat"  # 1:1 with a bare JID
GROUP = "group"  # a room
PRIVATE = "private"  # a private chat with a room occupant (full JID key)

#: message delivery states, in order
DELIVERY_ORDER = ("", "pending", "sent", "received", "displayed")
ME_PREFIX = "/me "


@dataclass(slots=True, eq=False)
class Message:
    uid: str
    timestamp: float
    sender: str
    to: str
    type: str = "chat"
    body: str = ""
    outgoing: bool = False
    #: who wrote it, as shown (room nick, contact name, our name)
    nick: str = ""
    extra: dict = field(default_factory=dict)
    subject: str | None = None
    #: "message", "me" (XEP-0245 action) or "info" (a line from the frontend itself)
    kind: str = "message"
    edited: bool = False
    retracted: bool = False
    #: emoji -> list of who reacted
    reactions: dict = field(default_factory=dict)
    #: "", "sent", "received" (XEP-0184), "displayed" (XEP-0333), "error"
    delivery: str = ""
    error: str = ""
    mention: bool = False
    #: XEP-0393 spans (type, start, end) over ``body``
    styling: list = field(default_factory=list)
    #: other ids the network may use to reference this message (stanza-id, origin-id)
    ids: tuple = ()
    #: (nick, text) of the message this one replies to (XEP-0461), when we have it
    reply: tuple | None = None
    #: bumped on every change (views cache their rendering by it)
    version: int = 0

    @property
    def text(self) -> str:
        return self.body


def conversation_key(data: dict, rooms: set[str] | frozenset[str] = frozenset()) -> tuple[str, str]:
    """(key, kind) of the conversation a MessageNew record belongs to."""
    outgoing = bool(data.get("outgoing"))
    source = data.get("source") or jidlib.bare(data.get("from", ""))
    dest = data.get("dest") or jidlib.bare(data.get("to", ""))
    msg_type = data.get("type", "chat")
    if msg_type == "groupchat":
        # the room's reflection of our own message has source = the room (and outgoing set)
        if source in rooms or dest not in rooms:
            return source, GROUP
        return dest, GROUP
    other = dest if outgoing else source
    if other in rooms:
        res = data.get("dest_resource" if outgoing else "source_resource") or jidlib.resource(
            data.get("to" if outgoing else "from", "")
        )
        if res:
            return f"{other}/{res}", PRIVATE
    return other, CHAT


def mentions(body: str, nick: str) -> bool:
    if not nick or not body:
        return False
    return re.search(rf"(?<!\w){re.escape(nick)}(?!\w)", body, re.IGNORECASE) is not None


class Conversation:
    """One conversation of one profile."""

    #: messages per history page
    PAGE = 50

    def __init__(
        self,
        profile: str,
        jid: str,
        kind: str = CHAT,
        own_jid: str = "",
        name_of=None,
    ):
        self.profile = profile
        self.jid = jid
        self.kind = kind
        self.own_jid = own_jid
        #: callable giving a contact's display name from a bare JID
        self.name_of = name_of or (lambda j: jidlib.node(j) or j)
        self.messages: list[Message] = []
        self.by_uid: dict[str, Message] = {}
        self.events = Events()
        #: every message before the first one is loaded (or there is none)
        self.history_complete = False
        self.history_loaded = False
        self.loading = False
        self.unread = 0
        self.mentions = 0
        #: the other side's chat state (1:1), or nick -> state (rooms)
        self.chat_state = ""
        self.occupant_states: dict[str, str] = {}
        self.subject = ""
        self.own_nick = ""
        self.closed = False

    # ------------------------------------------------------------------ naming

    @property
    def is_room(self) -> bool:
        return self.kind == GROUP

    @property
    def title(self) -> str:
        if self.kind == GROUP:
            return jidlib.node(self.jid) or self.jid
        if self.kind == PRIVATE:
            return f"{jidlib.resource(self.jid)} ({jidlib.node(self.jid)})"
        return self.name_of(self.jid)

    @property
    def history_jid(self) -> str:
        return jidlib.bare(self.jid)

    def _filters(self) -> dict:
        if self.kind == GROUP:
            return {"msg_type": "groupchat"}
        if self.kind == PRIVATE:
            return {"msg_type": "chat"}
        return {}

    # ------------------------------------------------------------------ building messages

    def make_message(self, data: dict) -> Message | None:
        """A :class:`Message` from a MessageNew / HistoryGet record (None if not shown)."""
        body = data.get("body")
        subject = data.get("subject")
        extra = data.get("extra") or {}
        if body is None and subject is None:
            return None
        outgoing = bool(data.get("outgoing"))
        msg_type = data.get("type", "chat")
        source_res = data.get("source_resource") or jidlib.resource(data.get("from", ""))
        if self.kind in (GROUP, PRIVATE):
            if msg_type == "groupchat":
                nick = source_res
                if self.own_nick and nick == self.own_nick:
                    outgoing = True
            else:
                nick = (
                    self.own_nick or jidlib.node(self.own_jid)
                    if outgoing
                    else jidlib.resource(self.jid)
                )
        elif outgoing:
            nick = jidlib.node(self.own_jid) or "me"
        else:
            nick = self.name_of(data.get("source") or jidlib.bare(data.get("from", "")))
        body = body or ""
        kind = "message"
        if body.startswith(ME_PREFIX):
            kind = "me"
            body = body[len(ME_PREFIX) :]
            offset = len(ME_PREFIX)
        else:
            offset = 0
        styling = _styling_spans(extra, offset, len(body))
        if styling is None:
            styling = stylinglib.parse(body)
        ids = tuple(
            str(v) for v in (data.get("stanza_id"), data.get("origin_id"), extra.get("id")) if v
        )
        message = Message(
            uid=str(data.get("uid") or ""),
            timestamp=float(data.get("timestamp") or time.time()),
            sender=data.get("from", ""),
            to=data.get("to", ""),
            type=msg_type,
            body=body,
            outgoing=outgoing,
            nick=nick,
            extra=dict(extra),
            subject=subject,
            kind=kind,
            styling=styling,
            ids=ids,
        )
        if outgoing:
            if extra.get("marker") in ("displayed", "acknowledged"):
                message.delivery = "displayed"
            elif extra.get("delivery") in ("received", "error"):
                message.delivery = extra["delivery"]
            else:
                message.delivery = "sent"
        if extra.get("edited") or extra.get("corrected") or extra.get("replaced"):
            message.edited = True
        if extra.get("retracted"):
            message.retracted = True
        reactions = extra.get("reactions")
        if isinstance(reactions, dict):
            message.reactions = {k: list(v) for k, v in reactions.items()}
        if self.kind == GROUP and not outgoing:
            message.mention = mentions(body, self.own_nick)
        reply_to = extra.get("reply_to")
        if reply_to:
            target = self.find(str(reply_to))
            if target is not None:
                message.reply = (target.nick, target.body.split("\n", 1)[0][:60])
        return message

    def find(self, ref: str) -> Message | None:
        """A message by uid, or by stanza-id / origin-id."""
        message = self.by_uid.get(ref)
        if message is not None:
            return message
        for message in reversed(self.messages):
            if ref in message.ids:
                return message
        return None

    # ------------------------------------------------------------------ changes

    def add(self, data: dict) -> Message | None:
        """Append a live message (MessageNew); None if a duplicate or not displayable."""
        uid = data.get("uid")
        if uid and uid in self.by_uid:
            return None
        replaced = _replace_target(data)
        if replaced:
            target = self.find(replaced)
            if target is not None:
                self._edit(target, data.get("body") or "", data.get("extra") or {})
                return None
        message = self.make_message(data)
        if message is None:
            subject = data.get("subject")
            if subject is not None and self.kind == GROUP:
                self.set_subject(subject)
            return None
        if message.subject is not None and self.kind == GROUP and not message.body:
            self.set_subject(message.subject)
        self._insert_live(message)
        return message

    def _insert_live(self, message: Message) -> None:
        if message.uid:
            self.by_uid[message.uid] = message
        if self.messages and message.timestamp < self.messages[-1].timestamp - 1:
            # delayed delivery (offline message, room history): keep the list in time order
            index = len(self.messages)
            while index > 0 and self.messages[index - 1].timestamp > message.timestamp:
                index -= 1
            self.messages.insert(index, message)
            self.events.emit("reset")
            return
        self.messages.append(message)
        self.events.emit("append", message)

    def add_info(self, text: str, timestamp: float | None = None) -> Message:
        """A line from the frontend itself (errors, joins, command output)."""
        message = Message(
            uid="",
            timestamp=timestamp or time.time(),
            sender="",
            to="",
            type="info",
            body=text,
            kind="info",
        )
        self.messages.append(message)
        self.events.emit("append", message)
        return message

    def _edit(self, message: Message, body: str, extra: dict | None = None) -> None:
        if body.startswith(ME_PREFIX) and message.kind in ("me", "message"):
            message.kind = "me"
            body = body[len(ME_PREFIX) :]
        message.body = body
        message.edited = True
        spans = _styling_spans(extra or {}, 0, len(body))
        message.styling = stylinglib.parse(body) if spans is None else spans
        if self.kind == GROUP and not message.outgoing:
            message.mention = mentions(body, self.own_nick)
        self._touched(message)

    def _touched(self, message: Message) -> None:
        message.version += 1
        self.events.emit("update", message)

    def apply_update(self, uid: str, update_type: str, data: dict) -> Message | None:
        """Apply a MessageUpdate (receipt, marker, correction, retraction, reactions, reply,
        error, deleted)."""
        message = self.find(uid)
        if message is None:
            return None
        kind = update_type.lower()
        if kind in ("receipt", "received", "delivered", "delivery"):
            state = data.get("delivery") or data.get("state") or "received"
            new = "error" if state == "error" else "received"
            if message.delivery in (new, "displayed"):
                return None
            message.delivery = new
        elif kind in ("marker", "displayed", "read", "acknowledged"):
            changed = False
            marker = data.get("marker")
            if marker is None and kind != "marker":
                marker = kind
            if marker in ("displayed", "acknowledged", "read"):
                message.delivery = "displayed"
                changed = True
            elif marker == "received" and message.delivery != "displayed":
                message.delivery = "received"
                changed = True
            if data.get("marker_sent"):
                message.extra["marker_sent"] = data["marker_sent"]
                changed = True
            if data.get("displayed_by") is not None:
                message.extra["displayed_by"] = list(data["displayed_by"])
                changed = True
            if not changed:
                return None
        elif kind in ("correction", "corrected", "edit", "edited", "replace"):
            body = data.get("body")
            if body is None:
                body = data.get("new_body", message.body)
            self._edit(message, body, data.get("extra") or data)
            return message
        elif kind in ("retraction", "retracted", "retract", "moderated", "moderation"):
            message.retracted = True
            message.body = ""
            message.styling = []
            if isinstance(data.get("retracted"), dict):
                message.extra["retracted"] = data["retracted"]
            if data.get("reason"):
                message.extra["retract_reason"] = data["reason"]
            if data.get("by"):
                message.extra["retracted_by"] = data["by"]
        elif kind in ("reactions", "reaction", "reacted"):
            reactions = data.get("reactions", data.get("summary", {}))
            if isinstance(reactions, dict):
                message.reactions = {k: list(v) for k, v in reactions.items() if v}
            elif isinstance(reactions, list | tuple):
                # (sender's) whole set of reactions
                sender = data.get("from") or data.get("sender") or "?"
                merged = {k: [s for s in v if s != sender] for k, v in message.reactions.items()}
                for emoji in reactions:
                    merged.setdefault(emoji, []).append(sender)
                message.reactions = {k: v for k, v in merged.items() if v}
        elif kind in ("error", "failed"):
            message.delivery = "error"
            message.error = data.get("error") or data.get("text") or data.get("condition") or ""
        elif kind == "reply":
            # a reply stored before the message it answers, linked once that one came
            target = self.find(str(data.get("reply_to") or ""))
            if target is None:
                return None
            message.extra["reply_to"] = data["reply_to"]
            message.reply = (target.nick, target.body.split("\n", 1)[0][:60])
        elif kind == "deleted":
            # gone from the history (e.g. a correction that arrived before its original,
            # folded into it once the original came: data["merged_into"])
            self.messages.remove(message)
            if self.by_uid.get(uid) is message:
                del self.by_uid[uid]
            self.events.emit("reset")
            return message
        else:
            log.debug("unknown message update %r for %s", update_type, uid)
            return None
        self._touched(message)
        return message

    def set_chat_state(self, state: str, nick: str = "") -> None:
        if self.kind == GROUP:
            if nick:
                if state in ("composing", "paused"):
                    self.occupant_states[nick] = state
                else:
                    self.occupant_states.pop(nick, None)
        else:
            self.chat_state = state
        self.events.emit("state")

    def set_subject(self, subject: str) -> None:
        if subject != self.subject:
            self.subject = subject
            self.events.emit("state")

    def clear(self) -> None:
        self.messages.clear()
        self.by_uid.clear()
        self.history_complete = False
        self.history_loaded = False
        self.events.emit("reset")

    # ------------------------------------------------------------------ history

    async def load_history(self, bridge: Any, limit: int | None = None) -> int:
        """Load one page of older messages; returns how many were added."""
        if self.loading or self.history_complete:
            return 0
        limit = limit or self.PAGE
        filters = self._filters()
        first = next((m for m in self.messages if m.uid), None)
        if first is not None and self.history_loaded:
            filters["before_uid"] = first.uid
        elif first is not None:
            filters["before"] = first.timestamp + 1e-6
        self.loading = True
        self.events.emit("state")
        try:
            records = await bridge.history_get(self.profile, self.history_jid, limit, filters)
        finally:
            self.loading = False
        if len(records) < limit:
            self.history_complete = True
        self.history_loaded = True
        if self.kind == PRIVATE:
            nick = jidlib.resource(self.jid)
            records = [
                r
                for r in records
                if (r.get("dest_resource") if r.get("outgoing") else r.get("source_resource"))
                == nick
            ]
        older: list[Message] = []
        for record in records:
            uid = record.get("uid")
            if uid and uid in self.by_uid:
                continue
            replaced = _replace_target(record)
            if replaced:
                target = self.find(replaced) or next(
                    (m for m in older if m.uid == replaced or replaced in m.ids), None
                )
                if target is not None:
                    self._edit(target, record.get("body") or "", record.get("extra") or {})
                continue
            message = self.make_message(record)
            if message is None:
                continue
            if message.uid:
                self.by_uid[message.uid] = message
            older.append(message)
        if not older:
            self.events.emit("state")
            return 0
        if self.messages and older[-1].timestamp > self.messages[0].timestamp:
            self.messages = sorted(self.messages + older, key=lambda m: m.timestamp)
            self.events.emit("reset")
        else:
            self.messages[:0] = older
            self.events.emit("prepend", older)
        self.events.emit("state")
        return len(older)


def _replace_target(data: dict) -> str:
    extra = data.get("extra") or {}
    for key in ("replace", "replaces", "correction_of", "corrects", "edit_of"):
        value = extra.get(key)
        if value:
            return str(value)
    return ""


#: span type names accepted from the styling plugin, and their canonical name
SPAN_TYPES = {
    "strong": "strong",
    "bold": "strong",
    "emphasis": "emphasis",
    "em": "emphasis",
    "italic": "emphasis",
    "strike": "strike",
    "strikethrough": "strike",
    "del": "strike",
    "pre": "pre",
    "code": "pre",
    "preformatted": "pre",
    "pre_block": "pre_block",
    "pre-block": "pre_block",
    "preformatted_block": "pre_block",
    "code_block": "pre_block",
    "quote": "quote",
    "blockquote": "quote",
    "block_quote": "quote",
    "plain": "plain",
}


def _styling_spans(extra: dict, offset: int, length: int) -> list[tuple[str, int, int]] | None:
    """Spans from ``extra["styling"]`` shifted by ``offset`` (removed prefix) and clipped.

    None when the daemon gave no styling for this message (then the frontend parses it).
    """
    raw = extra.get("styling")
    if raw is None:
        return None
    if not isinstance(raw, list | tuple):
        return []
    spans = []
    for span in raw:
        try:
            if isinstance(span, dict):
                kind, start, end = span.get("type"), int(span["start"]), int(span["end"])
            else:
                kind, start, end = span[0], int(span[1]), int(span[2])
        except (KeyError, ValueError, TypeError, IndexError):
            continue
        kind = SPAN_TYPES.get(str(kind).lower())
        if kind is None:
            continue
        start, end = max(0, start - offset), min(length, end - offset)
        if end > start:
            spans.append((kind, start, end))
    return spans
