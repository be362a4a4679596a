"""The backend host: owns config, storage, profiles, plugins, sessions and the bridge.

One :class:`SAT` instance is the daemon. It wires the pieces together and
declares the core part of the bridge API (:mod:`sat.core.core_api`); plugins
reach each other through ``host.plugins`` and extend the pipeline through
``host.hooks``.
"""

from __future__ import annotations

import logging
import time

from twisted.internet import defer

from sat import __version__
from sat.bridge.contract import Bridge
from sat.core import errors
from sat.core.hooks import Hooks
from sat.core.plugin import PluginLoader
from sat.core.xmpp.client import SatXMPPClient
from sat.core.xmpp.connection import ConnectionSettings
from sat.memory.params import Params
from sat.memory.profiles import ProfileManager
from sat.memory.storage import Storage

log = logging.getLogger(__name__)


class SAT:
    """The daemon's root object."""

    def __init__(self, config, bus: str | None = None):
        self.config = config
        self.version = __version__
        self.bus = bus or self._bus_from_config()
        self.hooks = Hooks()
        self.bridge = Bridge()
        self.storage = Storage(self._storage_path())
        self.profiles = ProfileManager(self.storage)
        self.params = Params(self.storage, self.profiles)
        self.plugins: dict = {}
        self.plugin_loader = PluginLoader(
            self, disabled=set(config.get("core", "plugins_disabled") or ())
        )
        self.clients: dict[str, SatXMPPClient] = {}
        self.started_at: float | None = None
        self.ready = False
        self._bridge_server = None
        from sat.core import actions, core_api, messages, presence

        self.actions = actions.Actions(self)

        self.messages = messages.MessageHandling(self)
        self.presence = presence.PresenceHandling(self)
        core_api.register(self)

    def _bus_from_config(self) -> str:
        mode = self.config.get("bridge", "bus")
        if mode == "address":
            return self.config.get("bridge", "bus_address")
        return mode

    def _storage_path(self):
        return self.config.get("storage", "path")

    # --- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        t0 = time.monotonic()
        await self.storage.initialise()
        self.plugins = self.plugin_loader.load_all()
        if self.bus != "none":
            from sat.bridge import dbus_server

            self._bridge_server = await defer.Deferred.fromFuture(
                _ensure_future(dbus_server.start(self.bridge, self.bus))
            )
        self.ready = True
        self.started_at = time.time()
        log.info("SàT %s ready in %.3f s", self.version, time.monotonic() - t0)
        self.bridge.emit("Ready", self.version)
        await self._autoconnect()

    async def _autoconnect(self) -> None:
        for profile in await self.profiles.list():
            try:
                if not await self.params.get("connection", "autoconnect", profile):
                    continue
                await self.profiles.unlock(profile, "")
            except errors.SatError as e:
                log.warning("profile %s not autoconnected: %s", profile, e.message)
                continue
            d = defer.ensureDeferred(self.connect(profile))
            d.addErrback(lambda f, p=profile: log.error("autoconnect of %s failed: %s", p, f.value))

    async def stop(self) -> None:
        log.info("SàT stopping")
        for client in list(self.clients.values()):
            try:
                await client.disconnect()
            except Exception:
                log.exception("error while disconnecting %s", client.profile)
        for plugin in list(self.plugins.values()):
            try:
                await plugin.stop()
            except Exception:
                log.exception("error while stopping plugin %s", plugin.name)
        if self._bridge_server is not None:
            try:
                await defer.Deferred.fromFuture(_ensure_future(self._bridge_server.stop()))
            except Exception:
                log.exception("error while stopping the bridge")
        await self.storage.close()
        log.info("SàT stopped")

    # --- sessions -------------------------------------------------------------------

    def get_client(self, profile: str) -> SatXMPPClient:
        """The session of a connected (or connecting) profile; NotConnected otherwise."""
        try:
            return self.clients[profile]
        except KeyError:
            raise errors.NotConnected(f"profile {profile!r} is not connected") from None

    async def connection_settings(self, profile: str) -> ConnectionSettings:
        cfg = self.config
        host = await self.params.get("connection", "host", profile)
        port = await self.params.get("connection", "port", profile)
        return ConnectionSettings(
            host=host or None,
            port=port or None,
            direct_tls=await self.params.get("connection", "direct_tls", profile),
            ca_file=cfg.get("xmpp", "ca_file") or None,
            connect_timeout=cfg.get("xmpp", "connect_timeout"),
            stream_management=cfg.get("xmpp", "stream_management"),
            reconnect_initial_delay=cfg.get("xmpp", "reconnect_initial_delay"),
            reconnect_max_delay=cfg.get("xmpp", "reconnect_max_delay"),
        )

    async def connect(self, profile: str, profile_password: str | None = None) -> bool:
        """Connect a profile; returns False if it was already connected."""
        await self.profiles.ensure_exists(profile)
        if profile_password is not None:
            await self.profiles.unlock(profile, profile_password)
        client = self.clients.get(profile)
        if client is not None:
            if client.is_connected():
                return False
            await client.connect()
            return True
        account = await self.params.get("connection", "jid", profile)
        if not account:
            raise errors.InvalidArgument(f"profile {profile!r} has no XMPP account (JID) set")
        password = await self.params.get_secret("connection", "password", profile)
        settings = await self.connection_settings(profile)
        resource = await self.params.get("connection", "resource", profile)
        user_jid = account if "/" in account else f"{account}/{resource or self._resource()}"
        client = SatXMPPClient(profile, user_jid, password, settings)
        client.on_ready.append(self._on_client_ready)
        client.on_lost.append(self._on_client_lost)
        self.attach_client(client)
        for plugin in self.plugins.values():
            try:
                await plugin.profile_connecting(client)
            except Exception:
                log.exception("plugin %s failed in profile_connecting", plugin.name)
        try:
            await client.connect()
        except Exception:
            self.clients.pop(profile, None)
            raise
        return True

    def attach_client(self, client: SatXMPPClient) -> None:
        """Make ``client`` this host's session of its profile: every plugin's protocol
        handler and the core's message and presence handling on its streams."""
        client.host = self
        for plugin in self.plugins.values():
            handler = plugin.get_handler(client)
            if handler is not None:
                handler.setHandlerParent(client)
        self.messages.attach(client)
        self.presence.attach(client)
        self.clients[client.profile] = client

    def _resource(self) -> str:
        return self.config.get("xmpp", "resource")

    async def disconnect(self, profile: str) -> None:
        client = self.get_client(profile)
        await client.disconnect()
        self.clients.pop(profile, None)
        for plugin in self.plugins.values():
            try:
                plugin.profile_disconnected(client)
            except Exception:
                log.exception("plugin %s failed in profile_disconnected", plugin.name)
        self.bridge.emit("Disconnected", profile, "disconnected on request", False)

    def is_connected(self, profile: str) -> bool:
        client = self.clients.get(profile)
        return client is not None and client.is_connected()

    def _on_client_ready(self, client: SatXMPPClient, resumed: bool) -> None:
        self.bridge.emit("Connected", client.profile, client.jid.full(), resumed)
        if not resumed:
            defer.ensureDeferred(self._session_started(client)).addErrback(
                lambda f: log.error("[%s] session start failed: %s", client.profile, f.value)
            )

    async def _session_started(self, client: SatXMPPClient) -> None:
        await self.hooks.run("stream_ready", client)
        for plugin in list(self.plugins.values()):
            try:
                await plugin.profile_connected(client)
            except Exception:
                log.exception("plugin %s failed in profile_connected", plugin.name)
        await self.presence.session_started(client)

    def _on_client_lost(self, client: SatXMPPClient, reason, reconnecting: bool) -> None:
        self.bridge.emit("Disconnected", client.profile, reason.message, reconnecting)
        if not reconnecting:
            self.clients.pop(client.profile, None)


def _ensure_future(coro):
    import asyncio

    return asyncio.ensure_future(coro)
