"""RFC 6121 messages: send, receive, store once, tell every frontend.

Incoming: ``<message/>`` → parsed into a plain dict → ``message_received``
hooks (plugins add receipts, corrections, ...; a hook may stop it) → stored in
history (duplicates are dropped there) → ``MessageNew`` signal.

Outgoing: ``MessageSend`` → stanza built → ``message_send`` hooks → sent
(queued if the stream is down, re-sent after reconnection) → stored →
``MessageNew`` signal, so all views agree.

Nothing a contact sends may crash the daemon: malformed stanzas are logged and
dropped.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from sat.core import errors

log = logging.getLogger(__name__)

MESSAGE_TYPES = ("chat", "groupchat", "normal", "headline")
#: bodies longer than this are refused on send and truncated on receive
MAX_BODY_LENGTH = 100_000


_UID_POOL_SIZE = 16 * 512
_uid_lock = threading.Lock()
_uid_pool = b""
_uid_at = 0


def new_uid() -> str:
    """A random UUID4, as 32 hex digits.

    Same randomness as ``uuid.uuid4()`` (``os.urandom``), but drawn 8 KiB at a time:
    one system call per 512 ids instead of one per id (it showed in the receive loop).
    """
    global _uid_pool, _uid_at
    with _uid_lock:
        at = _uid_at
        if at >= len(_uid_pool):
            _uid_pool = os.urandom(_UID_POOL_SIZE)
            at = 0
        _uid_at = at + 16
        chunk = bytearray(_uid_pool[at : at + 16])
    # RFC 4122 version 4 and variant bits, as uuid.UUID(bytes=..., version=4) sets them
    chunk[6] = (chunk[6] & 0x0F) | 0x40
    chunk[8] = (chunk[8] & 0x3F) | 0x80
    return chunk.hex()


@functools.lru_cache(maxsize=8192)
def parse_jid(text: str) -> jabber_jid.JID:
    """``JID(text)``, cached: stringprep costs ~0.1 ms per JID, the same few JIDs come back
    in every message (MAM catch-up, floods). The result is shared: never modify it.
    Raises ``jabber_jid.InvalidFormat`` like ``JID`` (errors are not cached)."""
    return jabber_jid.JID(text)


_TEXT_CHILDREN = frozenset({"body", "subject", "thread"})


def _texts_of(elt: domish.Element) -> dict[str, str]:
    """The first ``<body/>``, ``<subject/>`` and ``<thread/>`` of a message, in one pass."""
    found: dict[str, str] = {}
    own_uri = elt.uri
    for child in elt.children:
        if isinstance(child, str):
            continue
        name = child.name
        if (
            name in _TEXT_CHILDREN
            and name not in found
            and child.uri in (own_uri, None, "jabber:client")
        ):
            found[name] = str(child)
    return found


def parse_message(elt: domish.Element, own: jabber_jid.JID) -> dict:
    """The storable dict of a received ``<message/>``; ValueError if unusable."""
    sender = parse_jid(elt["from"]) if elt.hasAttribute("from") else own
    recipient = parse_jid(elt["to"]) if elt.hasAttribute("to") else own
    msg_type = elt.getAttribute("type", "normal")
    if msg_type not in MESSAGE_TYPES:
        msg_type = "normal"
    texts = _texts_of(elt)
    body = texts.get("body")
    if body is not None and len(body) > MAX_BODY_LENGTH:
        log.warning("truncating a %d characters body from %s", len(body), sender.full())
        body = body[:MAX_BODY_LENGTH]
    now = time.time()
    return {
        "uid": new_uid(),
        "timestamp": now,
        "received_timestamp": now,
        "source": sender.userhost(),
        "source_resource": sender.resource or "",
        "dest": recipient.userhost(),
        "dest_resource": recipient.resource or "",
        "type": msg_type,
        "body": body,
        "subject": texts.get("subject"),
        "thread": texts.get("thread"),
        "stanza_id": None,
        "stanza_id_by": None,
        "origin_id": None,
        "outgoing": sender.userhost() == own.userhost(),
        "extra": {},
    }


def full_jid(bare: str, resource: str | None) -> str:
    """``bare/resource``, or ``bare`` alone without a resource (stored messages keep them
    apart)."""
    return f"{bare}/{resource}" if resource else bare


def signal_data(data: dict) -> dict:
    """What frontends receive in ``MessageNew`` (an a{sv} record, None dropped)."""
    out = {}
    for key, value in data.items():
        if value is None:
            continue
        if key == "extra":
            value = {k: v for k, v in value.items() if v is not None}
        out[key] = value
    out["from"] = full_jid(data["source"], data["source_resource"])
    out["to"] = full_jid(data["dest"], data["dest_resource"])
    return out


class MessageHandling:
    def __init__(self, host):
        self.host = host

    def attach(self, client) -> None:
        """Observe the profile's incoming messages (every stream of the session)."""
        from twisted.words.protocols.jabber import xmlstream

        def on_stream(xs):
            xs.addObserver("/message", lambda elt: self._on_message(client, elt))

        client.factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, on_stream)

    def _on_message(self, client, elt: domish.Element) -> None:
        if getattr(elt, "handled", False):
            # consumed by a higher-priority observer (e.g. a MAM result wrapper, XEP-0313)
            return
        # The receive loop stays synchronous (no coroutine, no Deferred) until a hook or
        # the storage has something to wait for: a coroutine per message showed under floods.
        try:
            started = self._start_received(client, elt, None)
            if started is None:
                return
            if isinstance(started, dict):
                d = self._store_and_signal(client, started, True)
            else:
                d = defer.ensureDeferred(started).addCallback(
                    lambda data: (
                        None if data is None else self._store_and_signal(client, data, True)
                    )
                )
        except Exception:
            d = defer.fail()
        d.addErrback(lambda f: log.error("[%s] message dropped: %s", client.profile, f.value))

    async def received(self, client, elt: domish.Element, extra: dict | None = None) -> None:
        """Run a received ``<message/>`` through the pipeline.

        ``extra`` pre-fills ``data["extra"]`` for a message unwrapped by a plugin (e.g.
        ``{"carbon": "sent"}`` for a XEP-0280 copy), so the hooks know where it came from.
        """
        data = self._start_received(client, elt, extra)
        if data is not None and not isinstance(data, dict):
            data = await data
        if data is not None:
            await self._store_and_signal(client, data, True)

    def _start_received(self, client, elt: domish.Element, extra: dict | None):
        """Parse a received message and run the hooks: the data to store, None (dropped),
        or an awaitable of either when a hook has to wait."""
        if elt.getAttribute("type") == "error":
            log.info("[%s] error message from %s", client.profile, elt.getAttribute("from"))
            return None
        try:
            data = parse_message(elt, client.jid)
        except (ValueError, jabber_jid.InvalidFormat) as e:
            log.warning("[%s] malformed message dropped: %s", client.profile, e)
            return None
        if extra:
            data["extra"].update(extra)
        keep = self.run_received_hooks(client, elt, data)
        if keep is True:
            return data
        if keep is False:
            return None
        return self._finish_received(keep, data)

    @staticmethod
    async def _finish_received(pending, data: dict) -> dict | None:
        return data if await pending else None

    async def process_received(self, client, elt: domish.Element, data: dict) -> bool:
        """Run the ``message_received`` hooks on a parsed message; True if it is to be stored.

        Shared by live messages and archived ones (MAM, which sets ``extra["archived"]``
        and stores them in batches itself).
        """
        keep = self.run_received_hooks(client, elt, data)
        if keep is True or keep is False:
            return keep
        return await keep

    def run_received_hooks(self, client, elt: domish.Element, data: dict):
        """:meth:`process_received` without a coroutine when no hook has to wait: True/False
        (store or not), or an awaitable of it. The ``message_received`` chain skips the
        plugins for extensions the stanza lacks."""
        namespaces = {c.uri for c in elt.children if not isinstance(c, str)}
        started = self.host.hooks.start(
            "message_received", client, elt, data, namespaces=namespaces
        )
        if started is True:
            return self._worth_storing(data)
        if started is False:
            return False
        return self._finish_hooks(started, data)

    async def _finish_hooks(self, pending, data: dict) -> bool:
        return await pending and self._worth_storing(data)

    @staticmethod
    def _worth_storing(data: dict) -> bool:
        return not (
            data["body"] is None and data["subject"] is None and not data["extra"].get("store")
        )

    async def store_and_signal(self, client, data: dict) -> None:
        await self._store_and_signal(client, data)

    def _store_and_signal(self, client, data: dict, received: bool = False) -> defer.Deferred:
        """Store a message (duplicates dropped) and tell the frontends; a Deferred.

        For a ``received`` message, the ``message_stored`` hooks run next (after the
        signal: what they send, such as a receipt, is not on the path of the message to
        the frontends). The stanza is not kept until then (see the hook point)."""
        d = self.host.storage.history_add_deferred(client.profile, data)
        d.addCallback(self._signal_stored, client.profile, data)
        if received and self.host.hooks.has("message_stored"):
            d.addCallback(self._run_stored_hooks, client, data)
        return d

    def _signal_stored(self, stored: bool, profile: str, data: dict) -> bool:
        if not stored:
            log.debug("[%s] duplicate message %s ignored", profile, data["uid"])
            return stored
        self.host.bridge.emit("MessageNew", profile, signal_data(data))
        return stored

    def _run_stored_hooks(self, stored: bool, client, data: dict) -> None:
        self.host.hooks.run_sync("message_stored", client, data, stored)

    async def update(
        self, profile: str, uid: str, update_type: str, extra_updates: dict, data=None
    ) -> dict:
        """Merge ``extra_updates`` into a stored message's ``extra``; emit ``MessageUpdate``.

        ``update_type`` says what changed ("receipt", "marker", "correction", "retraction",
        "reaction"...); ``data`` is what frontends receive (default: the updates, None values
        dropped). Returns the message's new ``extra``; NotFound if ``uid`` is unknown.
        """
        new_extra = await self.host.storage.history_update_extra(profile, uid, extra_updates)
        if data is None:
            data = {k: v for k, v in extra_updates.items() if v is not None}
        self.host.bridge.emit("MessageUpdate", profile, uid, update_type, data)
        return new_extra

    async def send(self, profile: str, to: str, body: str, extra: dict | None = None) -> str:
        client = self.host.get_client(profile)
        extra = dict(extra or {})
        if not isinstance(body, str) or not body:
            raise errors.InvalidArgument("message body is empty")
        if len(body) > MAX_BODY_LENGTH:
            raise errors.InvalidArgument(f"message body longer than {MAX_BODY_LENGTH} characters")
        try:
            recipient = parse_jid(to)
        except jabber_jid.InvalidFormat:
            raise errors.InvalidArgument(f"{to!r} is not a valid JID") from None
        msg_type = extra.pop("type", "chat")
        if msg_type not in MESSAGE_TYPES:
            raise errors.InvalidArgument(f"invalid message type {msg_type!r}")
        elt = domish.Element((None, "message"))
        elt["to"] = recipient.full()
        elt["type"] = msg_type
        elt["id"] = new_uid()
        elt.addElement("body", content=body)
        now = time.time()
        data = {
            "uid": elt["id"],
            "timestamp": now,
            "received_timestamp": None,
            "source": client.jid.userhost(),
            "source_resource": client.jid.resource or "",
            "dest": recipient.userhost(),
            "dest_resource": recipient.resource or "",
            "type": msg_type,
            "body": body,
            "subject": None,
            "thread": None,
            "stanza_id": None,
            "stanza_id_by": None,
            "origin_id": None,
            "outgoing": True,
            "extra": extra,
        }
        if not await self.host.hooks.run("message_send", client, elt, data):
            # a hook may explain why in data["cancel_reason"] (e.g. "not in room X")
            raise errors.PermissionDenied(
                data.get("cancel_reason") or "message cancelled by a plugin"
            )
        client.send(elt)
        flush = getattr(client, "flush", None)
        if flush is not None:
            flush()  # someone waits for this one: on the wire now, not next reactor turn
        if msg_type != "groupchat":
            await self.store_and_signal(client, data)
        return data["uid"]
