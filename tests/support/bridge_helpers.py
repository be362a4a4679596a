"""Driving the real daemon through its D-Bus bridge in integration tests.

The daemon comes from the ``sat_daemon`` / ``make_sat_daemon`` fixtures
(``tests/integration/conftest.py``); the accounts from ``make_account``. Typical use::

    bridge, signals = await open_session(sat_daemon, prosody, {"alice": a, "bob": b})
    try:
        await bridge.message_send("alice", b.jid, "hi", {})
        message = await signals.new("bob", lambda m: m["body"] == "hi")
    finally:
        await bridge.close()

- connecting: :func:`open_bridge`, :func:`connection_options`, :func:`create_profile` (create
  only), :func:`add_profile` (create and connect), :func:`open_session` (all of it, with a
  :class:`SignalRecorder` listening before the first profile connects);
- signals: :class:`SignalRecorder` (records signals, waits for one matching a predicate),
  :class:`ProgressWatcher` (the progress signals of one job), predicates :func:`available` and
  :func:`in_room`, :func:`befriend_profiles` (mutual subscription of two profiles);
- history: :func:`history`, :func:`find_message`, :func:`search_uids`;
- :func:`room_jid`: a fresh room address on a test server's MUC service.

Waiting for other conditions: :mod:`tests.support.waiting`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sat_frontends.bridge.dbus_client import DBusBridgeClient

#: default time (s) a recorder waits for a signal
SIGNAL_TIMEOUT = 10.0

#: the daemon's signals the integration tests look at, by subject
MESSAGE_SIGNALS = ("MessageNew", "MessageUpdate", "ChatStateReceived")
CONTACT_SIGNALS = (
    "ContactNew",
    "ContactDeleted",
    "SubscriptionEvent",
    "PresenceUpdate",
    "BlockingChanged",
    "AvatarUpdated",
)
MUC_SIGNALS = (
    "MucMessageError",
    "MucRoomJoined",
    "MucRoomLeft",
    "MucOccupantUpdate",
    "MucSubject",
    "MucInvitation",
    "BookmarkUpdate",
    "BookmarkRemoved",
)
#: what a recorder listens to by default
ALL_SIGNALS = ("Connected", *MESSAGE_SIGNALS, *CONTACT_SIGNALS, *MUC_SIGNALS)


def _anything(*args: Any) -> bool:
    return True


# ---------------------------------------------------------------------------- connecting


async def open_bridge(daemon, timeout: float = 30.0) -> DBusBridgeClient:
    """A D-Bus client of ``daemon`` (waits up to 10 s for it on the bus; calls time out after
    ``timeout`` s)."""
    return await DBusBridgeClient.connect(daemon.bus_address, wait=10, timeout=timeout)


def connection_options(server, **extra: Any) -> dict[str, Any]:
    """Profile options reaching the test Prosody ``server`` on loopback, plus ``extra``."""
    return {"host": "127.0.0.1", "port": server.c2s_port, **extra}


async def create_profile(
    bridge, name: str, account, server, profile_password: str = "", **options: Any
) -> None:
    """Create profile ``name`` for ``account`` on ``server`` (not connected); ``options`` are
    added to the connection options (``resource="pc"``...)."""
    await bridge.profile_create(
        name,
        account.jid,
        account.password,
        profile_password,
        connection_options(server, **options),
    )


async def add_profile(bridge, name: str, account, server, **options: Any) -> str:
    """Create profile ``name`` and connect it (checking that it was not connected already);
    return its full JID.

    Messages sent to that full JID are delivered even before the profile's initial presence is
    out (sent to a bare JID, they would only reach the archive until then).
    """
    await create_profile(bridge, name, account, server, **options)
    assert await bridge.profile_connect(name, "") is True
    return (await bridge.profile_info_get(name))["full_jid"]


async def open_session(
    daemon,
    server,
    accounts: Mapping[str, Any],
    signals: Iterable[str] = ALL_SIGNALS,
    timeout: float = SIGNAL_TIMEOUT,
) -> tuple[DBusBridgeClient, SignalRecorder]:
    """A bridge client and a :class:`SignalRecorder` (of ``signals``, waiting ``timeout`` s by
    default), then one connected profile per ``{name: account}`` of ``accounts``, in order."""
    bridge = await open_bridge(daemon)
    recorder = SignalRecorder(bridge, signals, timeout=timeout)
    for name, account in accounts.items():
        await add_profile(bridge, name, account, server)
    return bridge, recorder


# ---------------------------------------------------------------------------- signals


class SignalRecorder:
    """Records the daemon's ``names`` signals from the moment it is made.

    ``events`` holds ``(name, args)`` in arrival order. :meth:`wait` returns the arguments of
    the first recorded signal matching a predicate (already recorded or still to come),
    :meth:`matching` / :meth:`of` list them, :meth:`clear` forgets everything recorded so far
    (so that the next :meth:`wait` only sees what comes after).
    """

    def __init__(
        self,
        bridge: DBusBridgeClient,
        names: Iterable[str] = ALL_SIGNALS,
        timeout: float = SIGNAL_TIMEOUT,
    ):
        self.names = tuple(names)
        self.timeout = timeout
        self.events: list[tuple[str, tuple]] = []
        self._changed = asyncio.Event()
        for name in self.names:
            bridge.on(name, lambda *args, n=name: self._record(n, args))

    def _record(self, name: str, args: tuple) -> None:
        self.events.append((name, args))
        self._changed.set()

    def _check(self, name: str) -> None:
        if name not in self.names:
            raise ValueError(f"{name} is not recorded (only {', '.join(self.names)})")

    def matching(self, name: str, predicate: Callable[..., bool] = _anything) -> list[tuple]:
        """The arguments of every recorded ``name`` signal for which ``predicate(*args)``."""
        self._check(name)
        return [args for n, args in self.events if n == name and predicate(*args)]

    def of(self, name: str, profile: str | None = None) -> list[tuple]:
        """The arguments of every recorded ``name`` signal (of ``profile`` if given)."""
        return self.matching(name, lambda *args: profile in (None, args[0]))

    async def wait(
        self,
        name: str,
        predicate: Callable[..., bool] = _anything,
        timeout: float | None = None,
    ) -> tuple:
        """The arguments of the first ``name`` signal for which ``predicate(*args)`` holds,
        waiting for it up to ``timeout`` s (the recorder's default if ``None``)."""
        self._check(name)
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = self.matching(name, predicate)
            if found:
                return found[0]
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = [args for n, args in self.events if n == name][-10:]
                raise AssertionError(
                    f"no matching {name} signal within {timeout} s; last ones: {recent}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def clear(self) -> None:
        self.events.clear()

    async def new(
        self, profile: str, predicate: Callable[[dict], bool] = _anything, **kwargs: Any
    ) -> dict:
        """The first ``MessageNew`` message of ``profile`` matching ``predicate(message)``."""
        _profile, message = await self.wait(
            "MessageNew", lambda p, m: p == profile and predicate(m), **kwargs
        )
        return message

    async def update(self, profile: str, uid: str, kind: str, **kwargs: Any) -> tuple:
        """The first ``MessageUpdate`` of ``kind`` for message ``uid`` of ``profile``."""
        return await self.wait(
            "MessageUpdate", lambda p, u, k, data: (p, u, k) == (profile, uid, kind), **kwargs
        )

    async def presence(self, profile: str, entity: str, **kwargs: Any) -> tuple:
        """The first ``PresenceUpdate`` telling ``profile`` that ``entity`` is available."""
        return await self.wait("PresenceUpdate", available(profile, entity), **kwargs)


def available(profile: str, entity: str) -> Callable[..., bool]:
    """``PresenceUpdate`` predicate: ``entity`` (a full JID, or a bare JID for any of its
    resources) is available to ``profile``."""

    def predicate(p, jid, show, *rest) -> bool:
        return (
            p == profile
            and show != "unavailable"
            and (jid == entity or jid.split("/")[0] == entity)
        )

    return predicate


def in_room(room: str, nick: str | None = None, body: str | None = None) -> Callable[[dict], bool]:
    """Message predicate: a groupchat message of ``room`` (from occupant ``nick``, with
    ``body``, when given)."""

    def predicate(message: dict) -> bool:
        sender = message.get("from", "")
        return (
            message.get("type") == "groupchat"
            and sender.startswith(room + "/")
            and (
                nick is None or (sender, message.get("source_resource")) == (f"{room}/{nick}", nick)
            )
            and (body is None or message.get("body") == body)
        )

    return predicate


async def befriend_profiles(
    bridge, signals: SignalRecorder, a: tuple[str, str], b: tuple[str, str]
) -> None:
    """Mutual presence subscription between two profiles, each given as (profile, bare JID);
    returns once each sees the other available."""
    (pa, ja), (pb, jb) = a, b
    await bridge.call("SubscriptionSend", pa, jb, "subscribe")
    await signals.wait("SubscriptionEvent", lambda p, e, t, x: (p, e, t) == (pb, ja, "subscribe"))
    await bridge.call("SubscriptionSend", pb, ja, "subscribed")
    await bridge.call("SubscriptionSend", pb, ja, "subscribe")
    await signals.wait("SubscriptionEvent", lambda p, e, t, x: (p, e, t) == (pa, jb, "subscribe"))
    await bridge.call("SubscriptionSend", pa, jb, "subscribed")
    await signals.presence(pa, jb)
    await signals.presence(pb, ja)


class ProgressWatcher:
    """Collects the progress signals (``Progress*``) of one job id.

    ``started`` (metadata) and ``updates`` ((position, size)) accumulate; :meth:`wait` returns
    the metadata of ``ProgressFinished`` and fails on ``ProgressError``; :meth:`reset` prepares
    for the next run of the same job.
    """

    def __init__(self, bridge: DBusBridgeClient, job_id: str):
        self.job_id = job_id
        self.started: list[dict] = []
        self.updates: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self.finished: asyncio.Future = asyncio.get_running_loop().create_future()
        bridge.on("ProgressStarted", self._started)
        bridge.on("ProgressUpdated", self._updated)
        bridge.on("ProgressFinished", self._finished)
        bridge.on("ProgressError", self._error)

    def _started(self, profile, job_id, metadata):
        if job_id == self.job_id:
            self.started.append(metadata)

    def _updated(self, profile, job_id, position, size):
        if job_id == self.job_id:
            self.updates.append((position, size))

    def _finished(self, profile, job_id, metadata):
        if job_id == self.job_id and not self.finished.done():
            self.finished.set_result(metadata)

    def _error(self, profile, job_id, error):
        if job_id == self.job_id:
            self.errors.append(error)
            if not self.finished.done():
                self.finished.set_exception(AssertionError(f"{job_id} failed: {error}"))

    def reset(self) -> None:
        self.started.clear()
        self.updates.clear()
        self.finished = asyncio.get_running_loop().create_future()

    async def wait(self, timeout: float = 60) -> dict:
        return await asyncio.wait_for(self.finished, timeout)


# ---------------------------------------------------------------------------- history


async def history(bridge, profile: str, with_jid: str, limit: int = 100) -> list[dict]:
    """The last ``limit`` messages of ``profile`` with ``with_jid`` (oldest first)."""
    return await bridge.history_get(profile, with_jid, limit, {})


async def find_message(bridge, profile: str, with_jid: str, uid: str) -> dict:
    """Message ``uid`` in ``profile``'s history with ``with_jid`` (fails if absent)."""
    for message in await history(bridge, profile, with_jid):
        if message["uid"] == uid:
            return message
    raise AssertionError(f"{uid} not in {profile}'s history")


async def search_uids(bridge, profile: str, words: str, limit: int = 20) -> list[str]:
    """The uids of ``profile``'s messages a full-text search for ``words`` finds."""
    return [m["uid"] for m in await bridge.history_search(profile, words, {}, limit)]


def room_jid(server, prefix: str = "room") -> str:
    """A new, unique room address on ``server``'s MUC service."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}@{server.muc_domain}"
