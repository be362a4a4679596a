"""XEP-0410: MUC Self-Ping (Schrödinger's Chat).

A room (or the link to it) can forget us without telling: a restart of the room's
server, a lost server-to-server link. For every joined room that stayed silent for
``[xep_0410] interval`` seconds (default 15 minutes), we ping our own occupant JID
(``room@service/our-nick``) and read the answer as the XEP says (§3.2):

========================================================  =============================
answer                                                    meaning / action
========================================================  =============================
result                                                    still joined
``service-unavailable``, ``feature-not-implemented``      joined (the client answering
                                                          for our nick has no ping)
``item-not-found``                                        joined (our nick was being
                                                          changed by another client)
``remote-server-not-found``, ``remote-server-timeout``    the room is unreachable (our
                                                          server says so): like a timeout
no answer within ``[xep_0410] timeout``                   unreachable: ping again after
                                                          ``[xep_0410] retry`` seconds
any other error (``not-acceptable`` is the one            not joined any more: join again
recommended; ``not-allowed``, ``bad-request``...)         (same nick and password)
========================================================  =============================

No ping is sent while a nick change is pending in the room, nor while the stream is
down (a XEP-0198 session waiting to be resumed). ``MucSelfPing(profile, room)`` runs
one check at once and tells the result ("joined", "rejoined", "unreachable").
"""

from __future__ import annotations

import logging

from twisted.internet import defer, task
from twisted.python import failure
from twisted.words.xish import domish

from sat.core import errors
from sat.core.plugin import Plugin
from sat.memory.config import register_option, register_section

log = logging.getLogger(__name__)

NS_PING = "urn:xmpp:ping"
DEFAULT_INTERVAL = 900.0
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRY = 60.0

JOINED_CONDITIONS = ("service-unavailable", "feature-not-implemented", "item-not-found")
UNREACHABLE_CONDITIONS = ("remote-server-not-found", "remote-server-timeout")

register_section("xep_0410", "MUC Self-Ping (XEP-0410): detect rooms that silently forgot us.")
register_option(
    "xep_0410",
    "interval",
    "float",
    DEFAULT_INTERVAL,
    "Seconds of silence from a joined room after which we check (by pinging our own "
    "occupant JID) that we are still in it; 0 disables the checks.",
    min=0,
)
register_option(
    "xep_0410",
    "timeout",
    "float",
    DEFAULT_TIMEOUT,
    "Seconds to wait for the answer to a self-ping before considering the room unreachable.",
    min=1,
)
register_option(
    "xep_0410",
    "retry",
    "float",
    DEFAULT_RETRY,
    "Seconds before pinging an unreachable room again.",
    min=1,
)


class SelfPingPlugin(Plugin):
    name = "XEP-0410"
    label = "MUC Self-Ping"
    xeps = ("XEP-0410",)
    dependencies = ("XEP-0045", "XEP-0030")
    recommendations = ("XEP-0199",)
    description = "Checks that silent rooms still count us in, and joins them again if not."

    def __init__(self, host):
        super().__init__(host)
        from twisted.internet import reactor

        self.clock = reactor
        self.interval = float(self.config("xep_0410", "interval", DEFAULT_INTERVAL))
        self.timeout = float(self.config("xep_0410", "timeout", DEFAULT_TIMEOUT))
        self.retry = float(self.config("xep_0410", "retry", DEFAULT_RETRY))
        #: profile -> LoopingCall checking the rooms
        self._loops: dict[str, task.LoopingCall] = {}
        #: (profile, room) -> callers waiting for the running check
        self._running: dict[tuple[str, str], list[defer.Deferred]] = {}
        #: (profile, room) -> time before which an unreachable room is not pinged again
        self._retry_at: dict[tuple[str, str], float] = {}
        bridge = getattr(host, "bridge", None)
        if bridge is not None:
            bridge.add_method(
                "MucSelfPing",
                self._bridge_self_ping,
                args=[("profile", "s", "profile name"), ("room", "s", "joined room")],
                out=("s", "joined, rejoined or unreachable"),
                doc="Check now that we are still in a room (XEP-0410); join it again if not",
                interface="plugin",
            )

    @property
    def muc(self):
        return self.host.plugins["XEP-0045"]

    # --- scheduling ----------------------------------------------------------------------

    def check_period(self) -> float:
        return max(1.0, min(self.interval / 4, 60.0))

    async def profile_connected(self, client) -> None:
        self._stop(client.profile)
        if self.interval <= 0:
            return
        loop = task.LoopingCall(self._check_rooms, client)
        loop.clock = self.clock
        self._loops[client.profile] = loop
        d = loop.start(self.check_period(), now=False)
        d.addErrback(lambda f: log.error("[%s] self-ping loop failed: %s", client.profile, f.value))

    def profile_disconnected(self, client) -> None:
        self._stop(client.profile)

    async def stop(self) -> None:
        for profile in list(self._loops):
            self._stop(profile)

    def _stop(self, profile: str) -> None:
        loop = self._loops.pop(profile, None)
        if loop is not None and loop.running:
            loop.stop()
        for key in [k for k in self._retry_at if k[0] == profile]:
            del self._retry_at[key]

    def _check_rooms(self, client) -> None:
        if not getattr(client, "is_connected", lambda: True)():
            return  # hibernated stream: wait for the resumption or the new session
        now = self.clock.seconds()
        for room in self.muc.joined_rooms(client):
            key = (client.profile, room.jid.userhost())
            if key in self._running or room.nick_waiter is not None:
                continue
            if now - room.last_activity < self.interval:
                continue
            if self._retry_at.get(key, 0.0) > now:
                continue
            d = defer.ensureDeferred(self.self_ping(client, room))
            d.addErrback(
                lambda f, r=room: log.error(
                    "[%s] self-ping of %s failed: %s", client.profile, r.jid.userhost(), f.value
                )
            )

    # --- the check ------------------------------------------------------------------------

    async def ping_once(self, client, room) -> str:
        """Ping our occupant JID once: "joined", "not_joined" or "unreachable"."""
        disco_plugin = self.host.plugins["XEP-0030"]
        try:
            await disco_plugin.send_iq(
                client,
                room.occupant_jid,
                domish.Element((NS_PING, "ping")),
                what="self-ping",
                timeout=self.timeout,
            )
        except (errors.Timeout, errors.NotConnected):
            return "unreachable"
        except errors.SatError as e:
            condition = e.details.get("condition")
            if condition is None:
                return "unreachable"
            if condition in JOINED_CONDITIONS:
                return "joined"
            if condition in UNREACHABLE_CONDITIONS:
                return "unreachable"
            log.info(
                "[%s] self-ping of %s: %s, we are not in the room any more",
                client.profile,
                room.jid.userhost(),
                condition,
            )
            return "not_joined"
        return "joined"

    async def self_ping(self, client, room) -> str:
        """Check ``room`` (a joined Room) now; rejoin if needed. Returns the outcome."""
        key = (client.profile, room.jid.userhost())
        if key in self._running:
            waiter = defer.Deferred()
            self._running[key].append(waiter)
            return await waiter
        self._running[key] = []
        try:
            outcome = await self._self_ping(client, room)
        except Exception as e:
            for observer in self._running.pop(key, []):
                observer.errback(failure.Failure(e))
            raise
        for observer in self._running.pop(key, []):
            observer.callback(outcome)
        return outcome

    async def _self_ping(self, client, room) -> str:
        key = (client.profile, room.jid.userhost())
        outcome = await self.ping_once(client, room)
        if outcome == "joined":
            room.last_activity = self.clock.seconds()
            self._retry_at.pop(key, None)
            return "joined"
        if outcome == "unreachable":
            log.info("[%s] %s is unreachable, checking again later", client.profile, key[1])
            self._retry_at[key] = self.clock.seconds() + self.retry
            return "unreachable"
        self._retry_at.pop(key, None)
        await self.muc.rejoin(client, room)
        return "rejoined" if room.state == "joined" else "not_joined"

    async def _bridge_self_ping(self, profile, room_jid):
        resolve = getattr(getattr(self.host, "profiles", None), "resolve", None)
        if resolve is not None:
            profile = await resolve(profile)
        client = self.host.get_client(profile)
        room = self.muc._joined_room(client, room_jid)
        return await self.self_ping(client, room)


PLUGIN = SelfPingPlugin
