"""XEP-0184: Message Delivery Receipts.

Requesting (on send)
    A ``<request xmlns='urn:xmpp:receipts'/>`` is added to content messages of
    type chat, normal or headline (never groupchat, never to a message carrying
    a ``<received/>``), following the XEP's rules: to a bare JID we MAY ask
    (nobody can tell which client gets it); to a full JID we ask only if that
    client advertises ``urn:xmpp:receipts`` (entity capabilities or disco: the
    answer is awaited a moment, then the message leaves without a request and the
    answer is cached for the next ones). ``extra["receipt"] = False`` asks for
    none. The stored message gets ``extra["receipt_requested"] = True``.

Acks we receive
    ``<received id=…/>`` updates our stored message with that id (its uid, or its
    origin-id for a message one of our other resources sent) if it was sent *to
    the sender of the ack* (nobody can acknowledge a message sent to someone
    else): ``extra["delivery"] = "received"`` and ``extra["delivery_timestamp"]``,
    then the ``MessageUpdate`` signal (type ``receipt``). Unknown or malformed ids
    are logged and ignored; repeated acks change nothing.

Acks we send
    Only for a content message (it has a body) with an ``id``, not of type
    groupchat or error, not carrying a ``<received/>`` (no loops), not a carbon
    copy (XEP-0280: no auto-reply to copies) nor an archived message (XEP-0184
    §5.5), and — the XEP's privacy rule — only to senders allowed to see our
    presence (roster subscription ``from`` or ``both``, or our own account),
    unless the user's ``privacy/receipts`` parameter says ``everyone`` (or
    ``nobody``). The ack is ``<message type=(same) to=sender><received
    id=…/></message>``.

Helpers shared by the other message plugins: :func:`peer_supports`,
:func:`presence_authorized`.
"""

from __future__ import annotations

import logging
import time

from twisted.internet import defer
from twisted.python import failure
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import disco, iwokkel
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core import errors
from sat.core.messages import full_jid, new_uid, parse_jid
from sat.core.plugin import Plugin
from sat.memory.params import UNKNOWN, ParamDef

log = logging.getLogger(__name__)

NS_RECEIPTS = "urn:xmpp:receipts"
#: after XEP-0359 (origin-id, stanza-id) and XEP-0203 (timestamps)
PRIORITY = 400
#: seconds a send waits for a full JID's disco answer before going without a request
DISCO_WAIT = 2.0
MAX_ID_LENGTH = 256
PRIVACY_CHOICES = ("contacts", "everyone", "nobody")

PARAMS = (
    ParamDef(
        "privacy",
        "receipts",
        "choice",
        "contacts",
        "Who gets delivery receipts (XEP-0184) for the messages they send us: contacts allowed "
        "to see our presence, everyone, or nobody",
        choices=PRIVACY_CHOICES,
    ),
)


# --- helpers shared with XEP-0085 / XEP-0333 ------------------------------------------


class _Late(Exception):
    """The awaited answer did not come in time (it may still come and be cached)."""


def _within(client, d: defer.Deferred, wait: float | None) -> defer.Deferred:
    """``d``'s result if it comes within ``wait`` seconds, else a _Late failure.

    ``d`` itself is not cancelled: a slow disco answer still fills the caches.
    """
    if wait is None or d.called:
        return d
    clock = getattr(client, "_reactor", None)
    if clock is None:
        from twisted.internet import reactor as clock
    out = defer.Deferred()

    def late():
        if not out.called:
            out.errback(_Late())

    timer = clock.callLater(wait, late)

    def relay(result):
        if timer.active():
            timer.cancel()
        if not out.called:
            if isinstance(result, failure.Failure):
                out.errback(result)
            else:
                out.callback(result)
        return None

    d.addBoth(relay)
    return out


async def peer_supports(host, client, entity: str, feature: str, wait: float = DISCO_WAIT):
    """Whether ``entity`` advertises ``feature``: True, False, or None when unknown.

    A bare JID is always unknown: any of its clients may get the message. For a
    full JID the entity capabilities cache answers at once; otherwise a disco#info
    request is awaited ``wait`` seconds (it goes on and is cached if slower). A
    client answering disco with an error does not support the feature.
    """
    try:
        parsed = parse_jid(entity)
    except (jabber_jid.InvalidFormat, TypeError):
        return False
    if not parsed.resource:
        return None
    disco_plugin = host.plugins.get("XEP-0030")
    if disco_plugin is None:
        return None
    try:
        info = await _within(client, defer.ensureDeferred(disco_plugin.info(client, parsed)), wait)
    except _Late:
        return None
    except errors.SatError as e:
        if "condition" in e.details:
            return False  # the client answered with an error: it does not support disco
        return None
    except Exception as e:
        log.debug("disco of %s failed: %s", parsed.full(), e)
        return None
    return feature in info.features


def presence_authorized(client, entity: str) -> bool:
    """True if ``entity`` may see our presence (RFC 6121 subscription from/both, or us)."""
    try:
        bare = parse_jid(entity).userhost()
    except (jabber_jid.InvalidFormat, TypeError):
        return False
    if bare == client.jid.userhost():
        return True
    item = (getattr(client, "roster", None) or {}).get(bare)
    return bool(item) and item.get("subscription") in ("from", "both")


async def privacy_allows(host, client, param: str, entity: str) -> bool:
    """Apply a ``privacy/<param>`` choice (contacts / everyone / nobody) to ``entity``."""
    allowed = privacy_allows_now(host, client, param, entity)
    if allowed is not None:
        return allowed
    try:
        choice = await host.params.get("privacy", param, client.profile)
    except Exception as e:
        log.debug("[%s] privacy/%s unreadable (%s): contacts only", client.profile, param, e)
        choice = "contacts"
    return _apply_privacy(choice, client, entity)


def privacy_allows_now(host, client, param: str, entity: str) -> bool | None:
    """:func:`privacy_allows` without waiting: None when the choice is not in memory yet."""
    peek = getattr(host.params, "peek", None)
    if peek is None:
        return None
    try:
        choice = peek("privacy", param, client.profile)
    except Exception:
        return None
    if choice is UNKNOWN:
        return None
    return _apply_privacy(choice, client, entity)


def _apply_privacy(choice: str, client, entity: str) -> bool:
    if choice == "nobody":
        return False
    if choice == "everyone":
        return True
    return presence_authorized(client, entity)


def child(elt: domish.Element, uri: str, name: str | None = None) -> domish.Element | None:
    for c in elt.elements():
        if c.uri == uri and (name is None or c.name == name):
            return c
    return None


# --- plugin ---------------------------------------------------------------------------


@implementer(iwokkel.IDisco)
class ReceiptsHandler(XMPPHandler):
    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        return [] if nodeIdentifier else [disco.DiscoFeature(NS_RECEIPTS)]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


class ReceiptsPlugin(Plugin):
    name = "XEP-0184"
    label = "Message Delivery Receipts"
    xeps = ("XEP-0184",)
    dependencies = ("XEP-0030",)
    recommendations = ("XEP-0359", "XEP-0115", "XEP-0280")
    description = "Asks for and answers delivery receipts; marks sent messages as received."

    def __init__(self, host):
        super().__init__(host)
        params = getattr(host, "params", None)
        if params is not None:
            for definition in PARAMS:
                params.declare(definition)
        host.hooks.add("message_send", self._on_send, PRIORITY)
        host.hooks.add("message_received", self._on_received, PRIORITY, namespaces=[NS_RECEIPTS])
        host.hooks.add("message_stored", self._on_stored, PRIORITY)

    def get_handler(self, client):
        return ReceiptsHandler()

    # --- sending -----------------------------------------------------------------------

    async def should_request(self, client, elt: domish.Element, data: dict) -> bool:
        request = self._should_request_now(elt, data)
        if request is not None:
            return request
        # full JID: only when that client says it supports receipts
        return await peer_supports(self.host, client, elt["to"], NS_RECEIPTS) is True

    @staticmethod
    def _should_request_now(elt: domish.Element, data: dict) -> bool | None:
        """Whether to ask for a receipt, None when the peer's support must be looked up."""
        if data["extra"].get("receipt") is False:
            return False
        if data["type"] not in ("chat", "normal", "headline"):
            return False
        if child(elt, NS_RECEIPTS, "received") is not None or data.get("body") is None:
            return False
        if not data["dest_resource"]:
            return True  # bare JID: we MAY ask, nobody can tell which client answers
        return None

    def _on_send(self, client, elt: domish.Element, data: dict):
        # synchronous unless a full JID's support must be looked up
        if data["dest_resource"] and data["extra"].get("receipt") is not False:
            return self._request_when_known(client, elt, data)
        self._add_request(elt, data, self._should_request_now(elt, data))
        return None

    async def _request_when_known(self, client, elt: domish.Element, data: dict) -> None:
        self._add_request(elt, data, await self.should_request(client, elt, data))

    def _add_request(self, elt: domish.Element, data: dict, request: bool | None) -> None:
        extra = data["extra"]
        extra.pop("receipt", None)
        if not request:
            return
        if not elt.getAttribute("id"):
            elt["id"] = data["uid"]
        if child(elt, NS_RECEIPTS, "request") is None:
            elt.addElement((NS_RECEIPTS, "request"))
        extra["receipt_requested"] = True

    # --- receiving ----------------------------------------------------------------------

    def _on_received(self, client, elt: domish.Element, data: dict):
        # synchronous for a request (most messages carry one) once the privacy choice is
        # in memory; a coroutine for a receipt (it updates the stored message)
        received = child(elt, NS_RECEIPTS, "received")
        if received is not None:
            return self._on_ack(client, elt, data, received)
        if child(elt, NS_RECEIPTS, "request") is not None:
            return self._answer(client, elt, data)
        return None

    async def find_sent(self, client, peer: str, msg_id: str) -> dict | None:
        """Our stored outgoing message to ``peer`` with stanza id ``msg_id``, or None."""
        storage = self.host.storage
        found = await storage.history_find(client.profile, uid=msg_id)
        if found is None:
            found = await storage.history_find(
                client.profile, source=client.jid.userhost(), origin_id=msg_id
            )
        if found is None or not found["outgoing"] or found["dest"] != peer:
            return None
        return found

    async def _on_ack(self, client, elt, data: dict, received: domish.Element) -> None:
        msg_id = received.getAttribute("id")
        sender = data["source"]
        if data["extra"].get("carbon") == "sent" or data["outgoing"]:
            return  # one of our resources acknowledged a contact's message
        if data["type"] == "groupchat":
            return  # we never ask for receipts in rooms
        if not msg_id or len(msg_id) > MAX_ID_LENGTH:
            log.info("[%s] receipt without usable id from %s ignored", client.profile, sender)
            return
        try:
            found = await self.find_sent(client, sender, msg_id)
        except errors.SatError as e:
            log.info("[%s] receipt %r from %s ignored: %s", client.profile, msg_id, sender, e)
            return
        if (
            found is not None
            and data["extra"].get("muc_pm")
            and found["dest_resource"] != data["source_resource"]
        ):
            found = None  # a room occupant acknowledging our message to another occupant
        if found is None:
            log.info(
                "[%s] receipt from %s for an unknown message %r ignored",
                client.profile,
                sender,
                msg_id[:64],
            )
            return
        if found["extra"].get("delivery") == "received":
            return
        updates = {"delivery": "received", "delivery_timestamp": time.time()}
        if data["source_resource"]:
            updates["delivery_resource"] = data["source_resource"]
        try:
            await self.host.messages.update(client.profile, found["uid"], "receipt", updates)
        except errors.NotFound:
            return
        log.debug("[%s] message %s delivered to %s", client.profile, found["uid"], sender)

    def _answer(self, client, elt: domish.Element, data: dict):
        """Send the receipt asked for, if allowed; None, or a coroutine when the privacy
        choice has to be read first."""
        extra = data["extra"]
        msg_id = elt.getAttribute("id")
        if extra.get("carbon") or extra.get("archived") or data["outgoing"]:
            return
        if data["type"] == "groupchat" or data.get("body") is None:
            return
        if not msg_id or len(msg_id) > MAX_ID_LENGTH:
            return
        sender = elt.getAttribute("from")
        if not sender:
            return
        allowed = privacy_allows_now(self.host, client, "receipts", sender)
        if allowed is None:
            return self._answer_when_known(client, data, sender, msg_id)
        self._decide_receipt(client, data, sender, msg_id, allowed)
        return None

    async def _answer_when_known(self, client, data, sender: str, msg_id: str) -> None:
        allowed = await privacy_allows(self.host, client, "receipts", sender)
        self._decide_receipt(client, data, sender, msg_id, allowed)

    def _decide_receipt(self, client, data, sender: str, msg_id: str, allowed: bool) -> None:
        """Decide to acknowledge; the receipt itself goes once the message is stored
        (:meth:`_on_stored`): "received" then means kept, and a message that a later hook
        drops, or that cannot be stored (disk full), is not acknowledged."""
        if not allowed:
            log.debug(
                "[%s] no receipt to %s (not allowed to see our presence)", client.profile, sender
            )
            return
        extra = data["extra"]
        extra["receipt_sent"] = True
        extra.setdefault("message_id", msg_id)  # what the receipt names (XEP-0359 sets it too)

    def _on_stored(self, client, data: dict, _new: bool) -> None:
        """Send the receipt decided by :meth:`_answer` (also for a duplicate: the sender
        is still waiting for it, e.g. after a stream resumption re-sent the message)."""
        extra = data["extra"]
        if not extra.get("receipt_sent"):
            return
        ack = domish.Element((None, "message"))
        ack["to"] = full_jid(data["source"], data["source_resource"])
        ack["id"] = new_uid()
        ack["type"] = data["type"]  # chat, normal or headline: never a room's
        ack.addElement((NS_RECEIPTS, "received"))["id"] = extra["message_id"]
        client.send(ack)


PLUGIN = ReceiptsPlugin
