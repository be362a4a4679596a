"""slixmpp (an independent XMPP implementation) as the other party of integration tests.

Every client here talks to a test Prosody (:class:`tests.support.prosody.ProsodyServer`) over
STARTTLS only, trusting the server's test CA.

- :func:`new_client`: a configured ``slixmpp.ClientXMPP``, for tests that drive it themselves;
- :class:`SlixPeer`: an account logged in with slixmpp, with the plugins a test needs, that
  records the slixmpp events it is asked to (``record``) for the test to wait on. It runs either
  on the test's own asyncio loop (the one the Twisted asyncio reactor drives, like the D-Bus
  client: the test may then use ``peer.xmpp`` directly) or, with ``own_loop=True``, on a private
  loop in a thread (everything touching ``peer.xmpp`` then goes through :meth:`SlixPeer.run`);
- :func:`befriend_accounts`: mutual presence subscription between two accounts;
- :func:`send_messages`: log in, send chat messages, wait until the server routed them, log out.

Example::

    peer = SlixPeer(prosody, account, plugins=("xep_0030", "xep_0184"), record=("message",))
    try:
        await peer.connect()
        peer.xmpp.send_message(mto=other_jid, mbody="hi", mtype="chat")
        reply = await peer.next_event("message", lambda m: m["body"] == "hello")
    finally:
        await peer.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tests.support.waiting import eventually

#: how long (s) waiting for an event lasts by default
EVENT_TIMEOUT = 10.0


def new_client(server, jid: str, password: str, plugins: Iterable[str] = (), **kwargs: Any):
    """A ``slixmpp.ClientXMPP`` for ``jid`` on ``server``: STARTTLS required, the test CA
    trusted, ``plugins`` registered; ``kwargs`` go to ``ClientXMPP`` (``sasl_mech``...).

    Create it on the loop it will run on (slixmpp binds to the running loop).
    """
    import slixmpp

    xmpp = slixmpp.ClientXMPP(jid, password, **kwargs)
    xmpp.enable_direct_tls = False
    xmpp.enable_starttls = True
    xmpp.enable_plaintext = False
    xmpp.ca_certs = server.ca_cert_path
    for plugin in plugins:
        xmpp.register_plugin(plugin)
    return xmpp


def _anything(item: Any) -> bool:
    return True


class SlixPeer:
    """``account`` logged in with slixmpp as ``account.jid/resource`` (bare JID if ``resource``
    is ``None``: the server picks one).

    - ``plugins``: the slixmpp plugins to register (``xep_0045`` for rooms...);
    - ``record``: slixmpp event names whose payloads are recorded, in arrival order, for
      :meth:`next_event` / :meth:`wait_event` (handlers are in place before connecting);
    - ``options``: attributes set on the ``ClientXMPP`` (``{"auto_authorize": None}``...);
    - ``own_loop``: run slixmpp on a private loop in a thread instead of the test's loop.

    The client is made by :meth:`connect` (``xmpp`` is ``None`` before); :meth:`close` logs out
    and, with ``own_loop``, ends the thread. Both may be called again harmlessly.
    """

    def __init__(
        self,
        server,
        account,
        resource: str | None = "slix",
        plugins: Iterable[str] = ("xep_0030",),
        *,
        record: Iterable[str] = (),
        options: Mapping[str, Any] | None = None,
        own_loop: bool = False,
    ):
        self.server = server
        self.account = account
        self.jid = account.jid if resource is None else f"{account.jid}/{resource}"
        self.plugins = tuple(plugins)
        self.recorded = tuple(record)
        self.options = dict(options or {})
        self.xmpp = None
        #: (event name, payload) for the events of ``record``, in arrival order
        self.events: list[tuple[str, Any]] = []
        self._cursors: dict[frozenset, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        if own_loop:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, daemon=True, name=f"slixmpp {self.jid}"
            )
            self._thread.start()

    # ------------------------------------------------------------------ running code

    async def run(self, fn: Callable[[], Any], timeout: float = 20.0) -> Any:
        """Call ``fn()`` on slixmpp's loop, await its result if it is awaitable, return it
        (bounded by ``timeout`` s). Use it for everything touching ``xmpp`` with ``own_loop``."""

        async def call():
            result = fn()
            if inspect.isawaitable(result):
                result = await result
            return result

        bounded = asyncio.wait_for(call(), timeout)
        if self._loop is None:
            return await bounded
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(bounded, self._loop))

    # ------------------------------------------------------------------ session

    async def connect(
        self, timeout: float = 15.0, roster: bool = False, presence: bool = True
    ) -> None:
        """Log in (within ``timeout`` s), then fetch the roster if ``roster`` and send the
        initial presence if ``presence``."""
        await self.run(lambda: self._connect(timeout, roster, presence), timeout + 5)

    async def _connect(self, timeout: float, roster: bool, presence: bool) -> None:
        xmpp = new_client(self.server, self.jid, self.account.password, self.plugins)
        for name, value in self.options.items():
            setattr(xmpp, name, value)
        for event in self.recorded:
            xmpp.add_event_handler(event, lambda payload, e=event: self.events.append((e, payload)))
        self.xmpp = xmpp
        started = asyncio.ensure_future(xmpp.wait_until("session_start", timeout=timeout))
        xmpp.connect(self.server.host, self.server.c2s_port)
        await started
        if roster:
            await xmpp.get_roster()
        if presence:
            xmpp.send_presence()

    async def close(self, wait: float = 1.0) -> None:
        """Log out (waiting up to ``wait`` s for the server to close the stream), then end the
        private loop if there is one. Errors while logging out are ignored."""
        xmpp, self.xmpp = self.xmpp, None
        if xmpp is not None:
            with contextlib.suppress(Exception):
                await self.run(lambda: _disconnect(xmpp, wait), wait + 5)
        if self._thread is not None:
            loop, thread, self._thread = self._loop, self._thread, None
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_cancel_tasks(), loop))
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 5)
            gc.collect()  # slixmpp objects cancel their tasks when collected: do it now
            if not thread.is_alive():
                loop.close()

    # ------------------------------------------------------------------ stanzas

    async def send_raw(self, xml: str) -> None:
        await self.run(lambda: self.xmpp.send_raw(xml))

    async def send_message(self, to: str, body: str, mtype: str = "chat") -> None:
        await self.run(lambda: self.xmpp.send_message(mto=to, mbody=body, mtype=mtype))

    async def join_room(self, room: str, nick: str, timeout: float = 10.0) -> None:
        """Join ``room`` as ``nick`` without history (needs the ``xep_0045`` plugin)."""
        await self.run(
            lambda: self.xmpp.plugin["xep_0045"].join_muc_wait(
                room, nick, maxstanzas=0, timeout=timeout
            ),
            timeout + 5,
        )

    # ------------------------------------------------------------------ recorded events

    def received(self, names: str | Iterable[str]) -> list[Any]:
        """Every recorded payload of the event(s) ``names``."""
        wanted = self._names(names)
        return [payload for name, payload in self.events if name in wanted]

    async def wait_event(
        self,
        names: str | Iterable[str],
        predicate: Callable[[Any], bool] = _anything,
        timeout: float = EVENT_TIMEOUT,
    ) -> Any:
        """The first recorded payload of ``names`` matching ``predicate``, since connecting
        (waiting up to ``timeout`` s for it)."""
        wanted = self._names(names)

        def find():
            return next((p for n, p in list(self.events) if n in wanted and predicate(p)), None)

        return await self._until(find, names, timeout)

    async def next_event(
        self,
        names: str | Iterable[str],
        predicate: Callable[[Any], bool] = _anything,
        timeout: float = EVENT_TIMEOUT,
    ) -> Any:
        """The next payload of ``names`` matching ``predicate``, like reading a queue of those
        events: the ones read before (returned or skipped) by ``next_event`` of the same
        ``names`` are not seen again."""
        wanted = self._names(names)

        def take():
            events = list(self.events)
            position = self._cursors.get(wanted, 0)
            for index in range(position, len(events)):
                name, payload = events[index]
                if name in wanted:
                    self._cursors[wanted] = index + 1
                    if predicate(payload):
                        return payload
            return None

        return await self._until(take, names, timeout)

    def _names(self, names: str | Iterable[str]) -> frozenset:
        wanted = frozenset([names] if isinstance(names, str) else names)
        missing = wanted - set(self.recorded)
        if missing:
            raise ValueError(f"{sorted(missing)} not recorded (record={self.recorded})")
        return wanted

    async def _until(self, find: Callable[[], Any], names, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = find()
            if found is not None:
                return found
            if loop.time() > deadline:
                seen = [(n, str(p)[:300]) for n, p in self.events[-10:]]
                raise AssertionError(
                    f"slixmpp ({self.jid}) got no matching {names} within {timeout} s; "
                    f"last events: {seen}"
                )
            await asyncio.sleep(0.02)


async def _disconnect(xmpp, wait: float) -> None:
    await xmpp.disconnect(wait=wait)
    # slixmpp cancels this task when collected: finish it while its loop runs
    task = getattr(xmpp, "_run_out_filters", None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _cancel_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)


async def befriend_accounts(server, first, second, timeout: float = 5.0) -> None:
    """Mutual presence subscription between two accounts, made by slixmpp clients (resource
    ``helper``) that log out afterwards."""
    peers = [SlixPeer(server, account, "helper", plugins=()) for account in (first, second)]
    a, b = peers
    try:
        await asyncio.gather(*(peer.connect(roster=True) for peer in peers))
        a.xmpp.send_presence(pto=second.jid, ptype="subscribe")
        b.xmpp.send_presence(pto=first.jid, ptype="subscribe")

        def mutual() -> bool:
            return (
                a.xmpp.client_roster[second.jid]["subscription"] == "both"
                and b.xmpp.client_roster[first.jid]["subscription"] == "both"
            )

        await eventually(mutual, timeout, "the mutual subscription")
    finally:
        await asyncio.gather(*(peer.close() for peer in peers))


async def send_messages(
    server, sender, to: str, bodies: Iterable[str], timeout: float = 120.0
) -> None:
    """Log in as ``sender`` (no presence), send ``bodies`` to ``to`` as chat messages, wait
    until the server handled them all (a ping answered after them), log out.

    Runs on its own loop in a thread, so the test's loop stays free meanwhile.
    """
    peer = SlixPeer(server, sender, None, plugins=("xep_0199",), own_loop=True)

    async def send_all() -> None:
        for body in bodies:
            peer.xmpp.send_message(mto=to, mbody=body, mtype="chat")
        # the server handles one session's stanzas in order: once this answer comes back,
        # every message above was routed (and archived)
        await peer.xmpp.plugin["xep_0199"].ping(jid=server.domain, timeout=60)

    try:
        await peer.connect(timeout=20, presence=False)
        await peer.run(send_all, timeout)
    finally:
        await peer.close(wait=2.0)
