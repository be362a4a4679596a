"""The XMPP session of one profile.

:class:`SatXMPPClient` is a wokkel ``StreamManager`` (so protocol handlers from
plugins attach to it as in wokkel) that also owns the connection's life:

* the stream set-up: STARTTLS or direct TLS, SASL (SCRAM first), stream
  management resumption or resource binding, then enabling stream management;
* reconnection by itself after a lost stream, with exponential backoff and
  jitter, resuming the XEP-0198 session when the server still has it;
* no stanza lost: stanzas sent while disconnected are queued, unacknowledged
  ones are sent again after a reconnection;
* IQ answers are only accepted from the entity the request went to.

The first :meth:`connect` reports why it failed (wrong password, unknown
host, bad certificate, dead port...) and does not retry: the user must see the
error. Once a session was up, losses are retried until :meth:`disconnect`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from twisted.internet import defer
from twisted.python import failure
from twisted.words.protocols.jabber import client as jabber_client
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import xpath
from wokkel import subprotocols

from sat.core import errors
from sat.core.xmpp import connection
from sat.core.xmpp.parser import ElementStream
from sat.core.xmpp.sasl import SatSASLInitializer
from sat.core.xmpp.stream_management import SMEnableInitializer, SMResumeInitializer, SMState

log = logging.getLogger(__name__)

#: an XPath step anchored at the stanza ("/iq..."), unlike "//x" which may match deeper
_ROOTED_LOCATION = xpath._Location


def _xmlns_of(location) -> str | None:
    """The namespace an ``[@xmlns='...']`` predicate of ``location`` requires, if any."""
    for predicate in location.predicates:
        lhs = getattr(predicate, "lhs", None)
        if (
            type(predicate) is xpath.CompareValue
            and type(lhs) is xpath.AttribValue
            and lhs.attribname == "xmlns"
            and isinstance(predicate.rhs, str)
            and predicate.value == predicate._compareEqual
        ):
            return predicate.rhs
    return None


def _prefilter(query) -> tuple:
    """What a stanza needs for ``query`` to have a chance: (root element name or None,
    (direct child name, its namespace or None) or None, whether the name is all it asks).

    Read from Twisted's parsed XPath (``/message``, ``/iq[@type='get']/query[@xmlns=X]``):
    checking these against the stanza costs a set lookup, evaluating the query walks the
    children with Python objects. Queries of another shape get (None, None, False): always
    evaluated."""
    base = getattr(query, "baseLocation", None)
    if type(base) is not _ROOTED_LOCATION:
        return (None, None, False)
    child = base.childLocation
    if child is None:
        return (base.elementName, None, base.elementName is not None and not base.predicates)
    if type(child) is not _ROOTED_LOCATION or child.elementName is None:
        return (base.elementName, None, False)
    return (base.elementName, (child.elementName, _xmlns_of(child)), False)


NS_CLIENT = "jabber:client"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
#: errors that another attempt cannot fix: stop reconnecting
FATAL_ERRORS = (errors.AuthenticationFailed, errors.CertificateError, errors.TLSRequired)


class SatXmlStream(xmlstream.XmlStream):
    """XML stream that feeds stream management with what goes in and out.

    Parsed with :class:`sat.core.xmpp.parser.ElementStream` (Twisted's parser builds the
    same trees, slower).
    """

    sm: SMState | None = None
    sm_resumed = False
    tls_active = False

    def _initializeStream(self):
        self.stream = ElementStream()
        self.stream.DocumentStartEvent = self.onDocumentStart
        self.stream.ElementEvent = self.onElement
        self.stream.DocumentEndEvent = self.onDocumentEnd

    def send(self, obj):
        super().send(obj)
        if self.sm is not None:
            self.sm.on_sent(obj)

    def onElement(self, element):
        if self.sm is not None and self.sm.on_received(element):
            return
        super().onElement(element)

    def dispatch(self, obj, event=None):
        """Twisted's dispatch, except that an XPath observer whose query starts with another
        element name (``/iq...`` for a ``<message/>``), or asks for a direct child the stanza
        lacks (``/message/result[@xmlns=X]``), is skipped without evaluating it, and a bare
        ``/message`` matches by name (see :func:`_prefilter`).

        Every received stanza is offered to every observer (about twenty once the plugins'
        handlers are attached); evaluating each query took ~15 % of the daemon's time during
        a MAM catch-up, still ~10 % of a received message's after the root check. Order,
        priorities and observer removal are Twisted's.
        """
        if event is not None:
            return super().dispatch(obj, event)
        found = False
        self._dispatchDepth += 1
        observers = self._xpathObservers
        empty = []
        name = getattr(obj, "name", None)
        children = None  # {(name, uri)} of the direct children, when a query needs it
        for priority in sorted(observers, reverse=True):
            for query, callbacks in observers[priority].items():
                # kept on the query itself: it lives as long as the query, and a dict keyed
                # by queries would call XPathQuery.__hash__ (Python code) for each
                known = getattr(query, "_sat_prefilter", None)
                if known is None:
                    known = query._sat_prefilter = _prefilter(query)
                root, child, by_name = known
                if root is not None and root != name:
                    continue
                if child is not None:
                    if children is None:
                        children = {(c.name, c.uri) for c in obj.children if not isinstance(c, str)}
                        children.update((n, None) for n, _ in list(children))
                    if child not in children:
                        continue
                if by_name or query.matches(obj):
                    callbacks.callback(obj)
                    found = True
                    if callbacks.isEmpty():
                        empty.append((priority, query))
        for priority, query in empty:
            del observers[priority][query]
        self._dispatchDepth -= 1
        if self._dispatchDepth == 0:
            for update in self._updateQueue:
                update()
            self._updateQueue = []
        return found


class BindInitializer(jabber_client.BindInitializer):
    skip_on_resume = True


class SessionInitializer(jabber_client.SessionInitializer):
    """RFC 3921 session establishment, skipped when the server marks it optional."""

    skip_on_resume = True

    def start(self):
        feature = self.xmlstream.features.get((NS_SESSION, "session"))
        if feature is not None and any(c.name == "optional" for c in feature.elements()):
            return None
        return super().start()


class TLSInitializer(xmlstream.TLSInitiatingInitializer):
    def onProceed(self, obj):
        self.xmlstream.tls_active = True
        return super().onProceed(obj)


class SASLInitializer(SatSASLInitializer):
    """Records the mechanism used, for status reports and tests."""

    def setMechanism(self):
        super().setMechanism()
        self.xmlstream.sasl_mechanism = getattr(self.mechanism, "name", None)


class SatAuthenticator(xmlstream.ConnectAuthenticator):
    """Builds the initializer chain for each new stream of a client."""

    namespace = NS_CLIENT

    def __init__(self, client: SatXMPPClient):
        super().__init__(client.jid.host)
        self.client = client
        self.jid = client.jid
        self.password = client.password

    def associateWithStream(self, xs):
        super().associateWithStream(xs)
        client = self.client
        settings = client.settings
        xs.sm = client.sm
        xs.tls_active = settings.direct_tls
        client.sm.stream_started(xs)
        inits = [jabber_client.CheckVersionInitializer(xs)]
        if not settings.direct_tls:
            inits.append(
                TLSInitializer(
                    xs,
                    required=True,
                    configurationForTLS=connection.tls_options(client.jid.host, settings.ca_file),
                )
            )
        inits += [
            SASLInitializer(xs, required=True),
            SMResumeInitializer(xs, client.sm, settings.stream_management),
            BindInitializer(xs, required=True),
            SessionInitializer(xs, required=False),
            SMEnableInitializer(xs, client.sm, settings.stream_management),
        ]
        xs.initializers = inits


class SatXMPPClient(subprotocols.StreamManager):
    """One profile's XMPP session: handlers, connection, reconnection."""

    #: default IQ timeout (seconds) for ``request``
    timeout = 60

    def __init__(
        self,
        profile: str,
        user_jid: str | jabber_jid.JID,
        password: str,
        settings: connection.ConnectionSettings,
        reactor=None,
    ):
        if reactor is None:
            from twisted.internet import reactor
        self.profile = profile
        self.jid = user_jid if isinstance(user_jid, jabber_jid.JID) else jabber_jid.JID(user_jid)
        if not self.jid.user or not self.jid.host:
            raise errors.InvalidArgument(f"{user_jid!s} is not a valid account JID (user@domain)")
        self.password = password
        self.settings = settings
        self.sm = SMState(reactor)
        self.factory = xmlstream.XmlStreamFactory(SatAuthenticator(self))
        self.factory.protocol = SatXmlStream
        self.factory.maxRetries = 0
        super().__init__(self.factory, reactor)
        self._reactor = reactor
        self._attempt: bool | None = None
        self._waiters: list[defer.Deferred] = []
        self._init_timeout = None
        self._want_connected = False
        self._session_up = False
        self._reconnect_call = None
        self._retries = 0
        #: callbacks(client, resumed: bool) when the stream is ready
        self.on_ready: list[Callable] = []
        #: callbacks(client, reason: SatError, reconnecting: bool) when the stream is lost
        self.on_lost: list[Callable] = []
        #: last error that stopped a connection, for status reports
        self.last_error: errors.SatError | None = None
        self.reconnections = 0
        self.sasl_mechanism: str | None = None
        self.tls_active = False

    # --- public API ----------------------------------------------------------

    def __repr__(self):
        return f"<SatXMPPClient profile={self.profile!r} jid={self.jid.full()!r}>"

    @property
    def server_jid(self) -> jabber_jid.JID:
        return jabber_jid.JID(self.jid.host)

    def is_connected(self) -> bool:
        return self._initialized

    def flush(self) -> None:
        """Hand what the stream has buffered to the socket now, not on the next reactor turn.

        For stanzas someone waits on (``MessageSend``): Twisted writes when the reactor next
        finds the socket writable, and in that turn the storage and the bridge get the CPU
        first (measured: 0.3 ms on the MessageSend -> peer MessageNew path). A write error
        is left to the reactor, which still watches the socket and reports it as usual.
        """
        xs = self.xmlstream
        transport = getattr(xs, "transport", None) if xs is not None else None
        # Twisted's TLS layer (TLSMemoryBIOProtocol) holds small writes until a callLater(0):
        # STARTTLS puts it under the TCP transport as its protocol, direct TLS above it
        for layer in (transport, getattr(transport, "protocol", None)):
            aggregator = getattr(layer, "_aggregator", None)
            if aggregator is not None and callable(getattr(aggregator, "flush", None)):
                aggregator.flush()
        while transport is not None and getattr(transport, "doWrite", None) is None:
            transport = getattr(transport, "transport", None)
        do_write = getattr(transport, "doWrite", None)
        if do_write is None or not getattr(transport, "connected", False):
            return
        if getattr(transport, "disconnecting", True):
            return
        pending = getattr(transport, "_tempDataLen", 0) or (
            len(getattr(transport, "dataBuffer", b"")) > getattr(transport, "offset", 0)
        )
        if pending:
            do_write()

    async def connect(self) -> None:
        """Open the session; raise a clear SatError if this first attempt fails."""
        if self._initialized:
            return
        if self._attempt is not None:
            await self._attempt_waiter()
            return
        self._want_connected = True
        try:
            await self._connect_once()
        except errors.SatError:
            self._want_connected = False
            raise

    async def disconnect(self) -> None:
        """Close the stream on purpose (no reconnection); queued stanzas are dropped."""
        self._want_connected = False
        self._cancel_reconnect()
        self.sm.forget_session()
        self.sm.unacked.clear()
        self._packetQueue = []
        xs = self.xmlstream
        if xs is not None and xs.transport is not None:
            # observe this very stream: factory bootstraps only reach streams built later
            lost = defer.Deferred()
            xs.addOnetimeObserver(
                xmlstream.STREAM_END_EVENT, lambda _: lost.called or lost.callback(None)
            )
            xs.sendFooter()
            xs.transport.loseConnection()
            timeout = self._reactor.callLater(3, lambda: lost.called or lost.callback(None))
            await lost
            if timeout.active():
                timeout.cancel()

    def transport_dead(self, reason: str) -> None:
        """Called when the link is known dead (e.g. unanswered keepalive): drop it now."""
        xs = self.xmlstream
        log.warning("[%s] connection considered dead: %s", self.profile, reason)
        if xs is not None and xs.transport is not None:
            xs.transport.abortConnection()

    # --- connection attempts -------------------------------------------------

    def _attempt_waiter(self) -> defer.Deferred:
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def _connect_once(self) -> defer.Deferred:
        """One connection attempt; fires when the stream is ready or fails mapped."""
        self._attempt = True
        waiter = self._attempt_waiter()
        endpoint = connection.make_endpoint(self._reactor, self.jid.host, self.settings)
        self._init_timeout = self._reactor.callLater(
            self.settings.connect_timeout + self.settings.init_timeout, self._on_init_timeout
        )
        d = endpoint.connect(self.factory)
        d.addErrback(self._fail_attempt)
        return waiter

    def _end_attempt(self, err: errors.SatError | None) -> None:
        self._attempt = None
        self._cancel_init_timeout()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if err is None:
                waiter.callback(None)
            else:
                waiter.errback(failure.Failure(err))

    def _fail_attempt(self, reason) -> None:
        if self._attempt is None:
            return
        err = connection.map_failure(reason, self.jid.host, self.settings)
        self.last_error = err
        self._end_attempt(err)

    def _on_init_timeout(self) -> None:
        self._init_timeout = None
        xs = self.xmlstream
        self._fail_attempt(
            errors.Timeout(f"stream set-up with {self.jid.host} did not finish in time")
        )
        if xs is not None and xs.transport is not None:
            xs.transport.abortConnection()

    def _cancel_init_timeout(self) -> None:
        if self._init_timeout is not None and self._init_timeout.active():
            self._init_timeout.cancel()
        self._init_timeout = None

    # --- StreamManager events ------------------------------------------------

    def _connected(self, xs):
        _set_no_delay(xs.transport)
        super()._connected(xs)

    def _authd(self, xs):
        resumed = bool(getattr(xs, "sm_resumed", False))
        self.jid = self.factory.authenticator.jid
        self.sasl_mechanism = getattr(xs, "sasl_mechanism", None)
        self.tls_active = bool(getattr(xs, "tls_active", False))
        self._cancel_init_timeout()
        # stanzas the server may not have received are sent first, then the queue
        pending = self.sm.take_unacked()
        if pending:
            log.info("[%s] sending %d unacknowledged stanza(s) again", self.profile, len(pending))
        self._packetQueue = pending + self._packetQueue
        was_up = self._session_up
        self._session_up = True
        self._retries = 0
        super()._authd(xs)
        if was_up:
            self.reconnections += 1
        self.last_error = None
        log.info(
            "[%s] %s as %s", self.profile, "stream resumed" if resumed else "connected", self.jid
        )
        for cb in list(self.on_ready):
            try:
                cb(self, resumed)
            except Exception:
                log.exception("on_ready callback failed")
        if self._attempt is not None:
            self._end_attempt(None)

    def initializationFailed(self, reason):
        log.debug("[%s] stream initialisation failed: %s", self.profile, reason.value)
        self._fail_attempt(reason)
        xs = self.xmlstream
        if xs is not None and xs.transport is not None:
            xs.transport.loseConnection()

    def _disconnected(self, reason):
        was_initialized = self._initialized
        self.sm.stream_lost()
        if self.sm.session_id and self._want_connected:
            # keep IQ requests pending: their answers may come on the resumed stream
            pending_iqs, self._iqDeferreds = self._iqDeferreds, {}
            super()._disconnected(reason)
            self._iqDeferreds = pending_iqs
        else:
            super()._disconnected(reason)
        if self._attempt is not None:
            self._fail_attempt(reason)
        if not was_initialized and not self._session_up:
            return
        mapped = connection.map_failure(reason, self.jid.host, self.settings)
        reconnecting = self._want_connected
        if not reconnecting:
            self._session_up = False
        log.info(
            "[%s] connection lost (%s)%s",
            self.profile,
            mapped.message,
            ", reconnecting" if reconnecting else "",
        )
        if was_initialized:
            for cb in list(self.on_lost):
                try:
                    cb(self, mapped, reconnecting)
                except Exception:
                    log.exception("on_lost callback failed")
        if reconnecting:
            self._schedule_reconnect()

    def _onIQResponse(self, iq):
        """Accept an IQ answer only from the entity the request was sent to."""
        d = self._iqDeferreds.get(iq.getAttribute("id"))
        if d is None:
            return
        expected = getattr(d, "sat_expected_from", None)
        sender = iq.getAttribute("from")
        if not _same_entity(expected, sender, self.jid):
            log.warning(
                "[%s] ignoring IQ answer from %s to a request sent to %s",
                self.profile,
                sender,
                expected,
            )
            return
        super()._onIQResponse(iq)

    def request(self, request):
        d = super().request(request)
        recipient = getattr(request, "recipient", None)
        d.sat_expected_from = recipient.full() if recipient is not None else None
        return d

    # --- reconnection -----------------------------------------------------------

    def reconnect_delay(self, retries: int) -> float:
        """Exponential backoff with ±20 % jitter, capped."""
        base = self.settings.reconnect_initial_delay * (1.6**retries)
        return min(self.settings.reconnect_max_delay, base) * random.uniform(0.8, 1.2)

    def _schedule_reconnect(self) -> None:
        self._cancel_reconnect()
        delay = self.reconnect_delay(self._retries)
        self._retries += 1
        log.debug("[%s] reconnection attempt in %.2f s", self.profile, delay)
        self._reconnect_call = self._reactor.callLater(delay, self._reconnect)

    def _reconnect(self) -> None:
        self._reconnect_call = None
        if not self._want_connected or self._initialized:
            return
        d = self._connect_once()

        def failed(f):
            err = f.value
            if isinstance(err, FATAL_ERRORS):
                log.error("[%s] reconnection stopped: %s", self.profile, err)
                self._want_connected = False
                self._session_up = False
                for cb in list(self.on_lost):
                    try:
                        cb(self, err, False)
                    except Exception:
                        log.exception("on_lost callback failed")
                return None
            log.info("[%s] reconnection failed (%s)", self.profile, err)
            if self._want_connected:
                self._schedule_reconnect()
            return None

        d.addErrback(failed)

    def _cancel_reconnect(self) -> None:
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None


def _set_no_delay(transport) -> None:
    """Disable Nagle on the TCP socket under the stream (through a TLS wrapper if any).

    With Nagle and delayed ACKs, a stanza following an XEP-0198 ``<r/>``/``<a/>`` can wait
    ~40 ms: interactive latency needs every write sent at once.
    """
    for _ in range(3):
        if transport is None:
            return
        setter = getattr(transport, "setTcpNoDelay", None)
        if setter is not None:
            try:
                setter(True)
            except OSError:
                pass
            return
        transport = getattr(transport, "transport", None)


def _same_entity(expected: str | None, sender: str | None, own: jabber_jid.JID) -> bool:
    """RFC 6120 8.1.2.1: no 'from' means our server or our own account."""
    if expected is None:
        return sender is None or sender in (own.host, own.userhost(), own.full())
    if sender is None:
        return expected in (own.host, own.userhost(), own.full())
    try:
        return jabber_jid.JID(sender) == jabber_jid.JID(expected)
    except jabber_jid.InvalidFormat:
        return False
