"""XEP-0198 Stream Management: acks and resumption, so no stanza is lost.

The state (:class:`SMState`) lives in the profile's client and survives
reconnections; the stream (:class:`sat.core.xmpp.stream.SatXmlStream`) calls
it for every stanza it sends and receives. Two initializers plug it into
Twisted's stream initialization:

* :class:`SMResumeInitializer` runs after SASL: if the previous stream was
  resumable it sends ``<resume/>``; on ``<resumed/>`` binding is skipped and
  unacknowledged stanzas are sent again, on ``<failed/>`` a fresh session is
  bound and the unacknowledged stanzas are sent again on it.
* :class:`SMEnableInitializer` runs after binding and asks for a resumable
  session with ``<enable resume='true'/>``.

Counters follow the XEP: ``h`` counts stanzas (message, presence, iq) modulo
2**32; nonzas (``<r/>``, ``<a/>``...) are not counted.
"""

from __future__ import annotations

import logging
from collections import deque

from twisted.internet import defer
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish

log = logging.getLogger(__name__)

NS_SM = "urn:xmpp:sm:3"
STANZA_NAMES = frozenset(("message", "presence", "iq"))
_MOD = 2**32

#: ask the server for an ack once this many stanzas are unacknowledged
ACK_REQUEST_THRESHOLD = 5
#: or this many seconds after the first unacknowledged one
ACK_REQUEST_DELAY = 1.0


def is_stanza(obj) -> bool:
    return isinstance(obj, domish.Element) and obj.name in STANZA_NAMES


class SMState:
    """Stream-management counters and the queue of unacknowledged stanzas."""

    def __init__(self, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        #: stream management negotiated on the current stream
        self.enabled = False
        #: id of a resumable session (None: nothing to resume)
        self.session_id: str | None = None
        self.resume_max: int | None = None
        #: stanzas received on the managed session (our ``h``)
        self.in_count = 0
        #: stanzas the server acknowledged (its ``h``)
        self.acked = 0
        #: stanzas sent and not acknowledged yet, oldest first
        self.unacked: deque[domish.Element] = deque()
        self.xmlstream = None
        self._ack_call = None
        #: count of stanzas sent again after a reconnection (for tests and stats)
        self.resent_total = 0
        #: number of successful resumptions
        self.resumed_total = 0

    # --- lifecycle ---------------------------------------------------------

    def stream_started(self, xs) -> None:
        self.xmlstream = xs
        self.enabled = False

    def stream_lost(self) -> None:
        self.enabled = False
        self.xmlstream = None
        self._cancel_ack_call()

    def forget_session(self) -> None:
        """The session cannot be resumed: start counting afresh (queue kept)."""
        self.session_id = None
        self.in_count = 0
        self.acked = 0

    def enabled_on(self, xs, session_id: str | None, resume_max: int | None) -> None:
        self.enabled = True
        self.xmlstream = xs
        self.in_count = 0
        self.acked = 0
        self.session_id = session_id
        self.resume_max = resume_max

    def resumed_on(self, xs, h: int) -> None:
        self.enabled = True
        self.xmlstream = xs
        self.resumed_total += 1
        self.ack(h)

    def take_unacked(self) -> list[domish.Element]:
        """Remove and return the stanzas to send again on a new or resumed stream."""
        pending = list(self.unacked)
        self.unacked.clear()
        self.resent_total += len(pending)
        return pending

    # --- counting ----------------------------------------------------------

    def on_sent(self, element) -> None:
        if not (self.enabled and is_stanza(element)):
            return
        self.unacked.append(element)
        if len(self.unacked) >= ACK_REQUEST_THRESHOLD:
            self.request_ack()
        elif self._ack_call is None:
            self._ack_call = self._reactor.callLater(ACK_REQUEST_DELAY, self._delayed_request)

    def on_received(self, element) -> bool:
        """Account for a received element; return True if it was an SM nonza we handled."""
        if element.uri == NS_SM:
            if element.name == "r":
                self.send_ack()
                return True
            if element.name == "a":
                try:
                    self.ack(int(element.getAttribute("h", "")))
                except ValueError:
                    log.warning("ignoring <a/> with invalid h=%r", element.getAttribute("h"))
                return True
            return False
        if self.enabled and element.name in STANZA_NAMES:
            self.in_count = (self.in_count + 1) % _MOD
        return False

    def ack(self, h: int) -> None:
        """The server handled ``h`` stanzas in all: drop them from the queue."""
        newly = (h - self.acked) % _MOD
        if newly > len(self.unacked):
            log.warning(
                "server acknowledged %d stanzas but only %d were pending", newly, len(self.unacked)
            )
            newly = len(self.unacked)
        for _ in range(newly):
            self.unacked.popleft()
        self.acked = h % _MOD
        if not self.unacked:
            self._cancel_ack_call()

    # --- sending nonzas ----------------------------------------------------

    def request_ack(self) -> None:
        self._cancel_ack_call()
        if self.enabled and self.xmlstream is not None:
            self.xmlstream.send(domish.Element((NS_SM, "r")))

    def send_ack(self) -> None:
        if self.enabled and self.xmlstream is not None:
            a = domish.Element((NS_SM, "a"))
            a["h"] = str(self.in_count)
            self.xmlstream.send(a)

    def _delayed_request(self) -> None:
        self._ack_call = None
        if self.unacked:
            self.request_ack()

    def _cancel_ack_call(self) -> None:
        if self._ack_call is not None:
            if self._ack_call.active():
                self._ack_call.cancel()
            self._ack_call = None


class _SMInitializer(xmlstream.BaseFeatureInitiatingInitializer):
    feature = (NS_SM, "sm")

    def __init__(self, xs, state: SMState, enabled: bool = True):
        super().__init__(xs, required=False)
        self.state = state
        self.wanted = enabled

    def initialize(self):
        if not self.wanted:
            return None
        return super().initialize()

    def _wait(self, success_name: str):
        d = defer.Deferred()
        xs = self.xmlstream

        def on_element(elt):
            if elt.uri != NS_SM or elt.name not in (success_name, "failed"):
                return
            xs.removeObserver("/*", on_element)
            d.callback(elt)

        xs.addObserver("/*", on_element)
        return d


class SMResumeInitializer(_SMInitializer):
    """Try to resume the previous session; on success skip binding."""

    def start(self):
        state = self.state
        if not state.session_id:
            return None
        resume = domish.Element((NS_SM, "resume"))
        resume["previd"] = state.session_id
        resume["h"] = str(state.in_count)
        d = self._wait("resumed")
        self.xmlstream.send(resume)
        d.addCallback(self._on_answer)
        return d

    def _on_answer(self, elt):
        xs = self.xmlstream
        if elt.name == "resumed":
            try:
                h = int(elt.getAttribute("h", ""))
            except ValueError:
                h = self.state.acked
            self.state.resumed_on(xs, h)
            xs.sm_resumed = True
            # binding, session and enabling belong to the old, resumed session
            xs.initializers = [
                i for i in xs.initializers if i is self or not getattr(i, "skip_on_resume", False)
            ]
            log.info("stream resumed (server handled %d of our stanzas)", h)
        else:
            condition = next((c.name for c in elt.elements()), "unknown")
            log.info("stream resumption failed (%s): binding a new session", condition)
            h_attr = elt.getAttribute("h")
            if h_attr is not None:
                try:
                    self.state.ack(int(h_attr))
                except ValueError:
                    pass
            self.state.forget_session()


class SMEnableInitializer(_SMInitializer):
    """Enable stream management (resumable) on a freshly bound session."""

    skip_on_resume = True

    def start(self):
        enable = domish.Element((NS_SM, "enable"))
        enable["resume"] = "true"
        d = self._wait("enabled")
        self.xmlstream.send(enable)
        d.addCallback(self._on_answer)
        return d

    def _on_answer(self, elt):
        if elt.name == "enabled":
            resumable = elt.getAttribute("resume") in ("true", "1")
            try:
                resume_max = int(elt.getAttribute("max", ""))
            except ValueError:
                resume_max = None
            self.state.enabled_on(
                self.xmlstream, elt.getAttribute("id") if resumable else None, resume_max
            )
            log.debug("stream management enabled (resumable: %s)", resumable)
        else:
            log.warning("server refused stream management")
            self.state.forget_session()
