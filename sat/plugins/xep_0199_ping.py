"""XEP-0199: XMPP Ping.

* We answer pings (wokkel's ``PingHandler``, which also declares the feature).
* :meth:`PingPlugin.ping` measures the round trip to an entity.
* Keepalive: after ``[xmpp] keepalive_interval`` seconds (default 60, 0 = off)
  without anything received on the stream, the server is pinged; if nothing
  answers within ``[xep_0199] timeout`` seconds (default 20) the connection is
  declared dead: ``client.transport_dead(reason)`` when the client has it (it
  then reconnects), else the transport is aborted. Any answer, even an error,
  proves the link alive. The timers are stopped when the stream is lost.
"""

from __future__ import annotations

import logging

from twisted.python import failure
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import generic
from wokkel import ping as wokkel_ping

from sat.core import (
    errors,
    wokkel_compat,  # noqa: F401  (sat/__init__ loads it before wokkel)
)
from sat.core.plugin import Plugin
from sat.memory.config import register_option, register_section

log = logging.getLogger(__name__)

NS_PING = wokkel_ping.NS_PING
DEFAULT_KEEPALIVE_INTERVAL = 60.0
DEFAULT_TIMEOUT = 20.0

register_section("xep_0199", "XMPP Ping (XEP-0199), also used to detect dead connections.")
register_option(
    "xep_0199",
    "timeout",
    "float",
    DEFAULT_TIMEOUT,
    "Seconds to wait for the answer to a ping; an unanswered keepalive ping (see "
    "`[xmpp] keepalive_interval`) drops the connection, which is then reopened.",
    min=1,
)


class _PingRequest(generic.Request):
    def __init__(self, recipient):
        super().__init__(recipient=recipient, stanzaType="get")
        # the keepalive handles its own timeout
        self.timeout = None

    def toElement(self):
        element = super().toElement()
        element.addElement((NS_PING, "ping"))
        return element


class KeepAlive:
    """Pings the server of one stream after a period of silence."""

    def __init__(self, client, interval: float, timeout: float, clock):
        self.client = client
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.xmlstream = None
        self.last_received = 0.0
        self._call = None  # next check
        self._timeout_call = None  # running ping's deadline
        self._pending = None  # running ping's Deferred
        self.pings_sent = 0

    @property
    def running(self) -> bool:
        return self.xmlstream is not None

    def start(self, xs) -> None:
        self.stop()
        self.xmlstream = xs
        xs.addObserver("/*", self._on_received, priority=1000)
        self.last_received = self.clock.seconds()
        self._schedule(self.interval)

    def stop(self) -> None:
        if self.xmlstream is not None:
            try:
                self.xmlstream.removeObserver("/*", self._on_received)
            except Exception:
                pass
            self.xmlstream = None
        for attr in ("_call", "_timeout_call"):
            call = getattr(self, attr)
            if call is not None and call.active():
                call.cancel()
            setattr(self, attr, None)
        self._pending = None

    def _on_received(self, _element) -> None:
        self.last_received = self.clock.seconds()

    def _schedule(self, delay: float) -> None:
        self._call = self.clock.callLater(max(delay, 0.0), self._check)

    def _check(self) -> None:
        self._call = None
        if self.xmlstream is None or self._pending is not None:
            return
        idle = self.clock.seconds() - self.last_received
        if idle < self.interval:
            self._schedule(self.interval - idle)
            return
        self._send_ping()

    def _send_ping(self) -> None:
        server = jabber_jid.JID(self.client.jid.host)
        self.pings_sent += 1
        d = self.client.request(_PingRequest(server))
        self._pending = d
        self._timeout_call = self.clock.callLater(self.timeout, self._on_timeout, d)
        d.addBoth(self._on_answer, d)

    def _on_answer(self, result, d) -> None:
        if d is not self._pending:
            return None  # stale: the keepalive was stopped or restarted meanwhile
        self._pending = None
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.cancel()
        self._timeout_call = None
        if self.xmlstream is None:
            return None
        if not isinstance(result, failure.Failure) or result.check(jabber_error.StanzaError):
            # a result or an error stanza: the server answered, the link is alive
            self.last_received = self.clock.seconds()
        self._schedule(self.interval)
        return None

    def _on_timeout(self, d) -> None:
        self._timeout_call = None
        if d is not self._pending:
            return
        reason = f"no answer to a keepalive ping within {self.timeout:g} s"
        client = self.client
        self.stop()
        transport_dead = getattr(client, "transport_dead", None)
        if callable(transport_dead):
            transport_dead(reason)
            return
        log.warning("[%s] connection considered dead: %s", getattr(client, "profile", "?"), reason)
        xs = getattr(client, "xmlstream", None)
        transport = getattr(xs, "transport", None)
        if transport is not None:
            transport.abortConnection()


class PingHandler(wokkel_ping.PingHandler):
    """Answers pings and runs the keepalive of its stream."""

    def __init__(self, plugin: PingPlugin, client):
        super().__init__()
        self.plugin = plugin
        self.client = client

    def connectionInitialized(self):
        super().connectionInitialized()
        self.plugin.start_keepalive(self.client, self.xmlstream)

    def connectionLost(self, reason):
        self.plugin.stop_keepalive(self.client)
        super().connectionLost(reason)


class PingPlugin(Plugin):
    name = "XEP-0199"
    label = "XMPP Ping"
    xeps = ("XEP-0199",)
    dependencies = ("XEP-0030",)
    description = "Answers pings, measures round trips and detects dead connections."

    def __init__(self, host):
        super().__init__(host)
        self.keepalive_interval = float(
            self.config("xmpp", "keepalive_interval", DEFAULT_KEEPALIVE_INTERVAL)
        )
        self.timeout = float(self.config("xep_0199", "timeout", DEFAULT_TIMEOUT))
        #: IReactorTime used for the keepalive and round-trip measures (tests set a Clock)
        from twisted.internet import reactor

        self.clock = reactor
        self._keepalives: dict[str, KeepAlive] = {}
        bridge = getattr(host, "bridge", None)
        if bridge is not None:
            bridge.add_method(
                "Ping",
                self._bridge_ping,
                args=[
                    ("profile", "s", "profile to send the ping from"),
                    ("jid", "s", "entity to ping; empty: the profile's server"),
                ],
                out=("d", "round-trip time in seconds"),
                doc="Ping an entity (XEP-0199) and return the round-trip time.",
                interface="plugin",
            )

    def get_handler(self, client):
        return PingHandler(self, client)

    # --- keepalive ---------------------------------------------------------------

    def start_keepalive(self, client, xs) -> None:
        self.stop_keepalive(client)
        if self.keepalive_interval <= 0 or xs is None:
            return
        keepalive = KeepAlive(client, self.keepalive_interval, self.timeout, self.clock)
        self._keepalives[client.profile] = keepalive
        keepalive.start(xs)

    def stop_keepalive(self, client) -> None:
        keepalive = self._keepalives.pop(client.profile, None)
        if keepalive is not None:
            keepalive.stop()

    def profile_disconnected(self, client) -> None:
        self.stop_keepalive(client)

    async def stop(self) -> None:
        for profile in list(self._keepalives):
            self._keepalives.pop(profile).stop()

    # --- requester -----------------------------------------------------------------

    async def ping(self, client, jid=None) -> float:
        """Ping ``jid`` (None: our server); the round-trip time in seconds.

        An entity answering that it does not implement ping
        (``feature-not-implemented``) still answered: its round trip is returned.
        Other errors are raised (see XEP-0030's ``send_iq``).
        """
        disco_plugin = self.host.plugins["XEP-0030"]
        start = self.clock.seconds()
        try:
            await disco_plugin.send_iq(
                client, jid, domish.Element((NS_PING, "ping")), what="ping", timeout=self.timeout
            )
        except errors.SatError as e:
            if e.details.get("condition") != "feature-not-implemented":
                raise
        return max(0.0, self.clock.seconds() - start)

    async def _bridge_ping(self, profile: str, jid: str) -> float:
        client = self.host.get_client(profile)
        return await self.ping(client, jid or None)


PLUGIN = PingPlugin
