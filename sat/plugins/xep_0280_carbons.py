"""XEP-0280: Message Carbons.

* On every fresh session (not after a XEP-0198 resumption, which keeps it), if
  our server advertises ``urn:xmpp:carbons:2``, carbons are enabled with an
  ``<enable/>`` IQ addressed to our own account (no ``to``).
* A received copy (``<received/>`` or ``<sent/>`` holding a XEP-0297
  ``<forwarded><message/></forwarded>``) is accepted **only if its ``from`` is
  our own bare JID**: anyone else could otherwise put words in our contacts'
  mouths or in ours (XEP-0280 security considerations: other copies MUST be
  ignored). The inner message then goes through the whole pipeline again with
  ``data["extra"]["carbon"]`` set to ``"received"`` (a message to another of our
  resources) or ``"sent"`` (a message one of our other resources sent: stored as
  an outgoing message from that resource). Its ``from`` must be our account
  for a sent copy and its ``to`` our account for a received copy. Nested copies
  are refused. Plugins must not auto-reply to copies (no receipts, XEP-0280 §10).
* On send, ``extra["private"]`` adds ``<private xmlns='urn:xmpp:carbons:2'/>``
  (and the XEP-0334 ``<no-copy/>`` hint) so the message is not copied to our
  other resources; ``extra["no_copy"]`` adds only the ``<no-copy/>`` hint.
"""

from __future__ import annotations

import logging

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import generic

from sat.core import hooks
from sat.core.messages import parse_jid
from sat.core.plugin import Plugin

log = logging.getLogger(__name__)

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"
#: receive: unwrap before anything else (the inner message then runs all hooks)
PRIORITY = 2000
#: send: anywhere (only adds hints)
SEND_PRIORITY = 500


class _EnableRequest(generic.Request):
    """``<iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>`` to our own account."""

    def __init__(self, timeout: float | None):
        super().__init__(recipient=None, stanzaType="set")
        self.timeout = timeout

    def toElement(self):
        element = super().toElement()
        element.addElement((NS_CARBONS, "enable"))
        return element


def _child(elt: domish.Element, uri: str, name: str) -> domish.Element | None:
    for child in elt.elements():
        if child.uri == uri and child.name == name:
            return child
    return None


def _jid(value: str | None) -> jabber_jid.JID | None:
    if not value:
        return None
    try:
        return parse_jid(value)
    except (jabber_jid.InvalidFormat, TypeError):
        return None


class CarbonsPlugin(Plugin):
    name = "XEP-0280"
    label = "Message Carbons"
    xeps = ("XEP-0280",)
    dependencies = ("XEP-0030",)
    recommendations = ("XEP-0359",)
    description = "Copies of the messages our other resources send and receive."

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add("message_received", self._on_received, PRIORITY, namespaces=[NS_CARBONS])
        host.hooks.add("message_send", self._on_send, SEND_PRIORITY)

    async def profile_connected(self, client) -> None:
        client.carbons_enabled = False
        disco = self.host.plugins["XEP-0030"]
        try:
            supported = await disco.has_feature(client, NS_CARBONS)
        except Exception as e:
            log.warning("[%s] cannot tell if the server offers carbons: %s", client.profile, e)
            return
        if not supported:
            log.info("[%s] the server does not offer message carbons", client.profile)
            return
        try:
            await client.request(_EnableRequest(getattr(disco, "timeout", 30.0)))
        except Exception as e:
            log.warning("[%s] enabling message carbons failed: %s", client.profile, e)
            return
        client.carbons_enabled = True
        log.info("[%s] message carbons enabled", client.profile)

    # --- sending ---------------------------------------------------------------------

    def _on_send(self, client, elt: domish.Element, data: dict) -> None:
        extra = data["extra"]
        if extra.get("private"):
            if _child(elt, NS_CARBONS, "private") is None:
                elt.addElement((NS_CARBONS, "private"))
            extra["private"] = True
        if extra.get("private") or extra.get("no_copy"):
            if _child(elt, NS_HINTS, "no-copy") is None:
                elt.addElement((NS_HINTS, "no-copy"))

    # --- receiving -------------------------------------------------------------------

    def _on_received(self, client, elt: domish.Element, data: dict):
        # synchronous until a copy is found: it runs for every message and most are not
        # copies (a coroutine per message showed in the receive loop)
        wrapper = None
        direction = None
        for child in elt.elements():
            if child.uri == NS_CARBONS and child.name in ("received", "sent"):
                if wrapper is not None:
                    log.warning("[%s] message with several carbon copies dropped", client.profile)
                    return hooks.STOP
                wrapper, direction = child, child.name
        if wrapper is None:
            return None
        sender = elt.getAttribute("from")
        own_bare = client.jid.userhost()
        sender_jid = _jid(sender)
        if sender_jid is None or sender_jid.full() != own_bare:
            log.warning(
                "[%s] forged carbon copy from %r ignored (only %s may send them)",
                client.profile,
                sender,
                own_bare,
            )
            return hooks.STOP
        if data["extra"].get("carbon") or data["extra"].get("archived"):
            log.warning("[%s] nested carbon copy dropped", client.profile)
            return hooks.STOP
        forwarded = _child(wrapper, NS_FORWARD, "forwarded")
        inner = None
        if forwarded is not None:
            messages = [c for c in forwarded.elements() if c.name == "message"]
            if len(messages) == 1:
                inner = messages[0]
        if inner is None:
            log.warning("[%s] carbon copy without one forwarded message dropped", client.profile)
            return hooks.STOP
        inner_from, inner_to = _jid(inner.getAttribute("from")), _jid(inner.getAttribute("to"))
        if direction == "sent":
            if inner_from is None or inner_from.userhost() != own_bare:
                log.warning(
                    "[%s] sent carbon of a message not from us (%r) dropped",
                    client.profile,
                    inner.getAttribute("from"),
                )
                return hooks.STOP
        elif inner_to is not None and inner_to.userhost() != own_bare:
            log.warning(
                "[%s] received carbon of a message not to us (%r) dropped",
                client.profile,
                inner.getAttribute("to"),
            )
            return hooks.STOP
        elif inner_from is None:
            log.warning("[%s] received carbon without sender dropped", client.profile)
            return hooks.STOP
        return self._receive_copy(client, inner, direction)

    async def _receive_copy(self, client, inner: domish.Element, direction: str):
        await self.host.messages.received(client, inner, extra={"carbon": direction})
        return hooks.STOP


PLUGIN = CarbonsPlugin
