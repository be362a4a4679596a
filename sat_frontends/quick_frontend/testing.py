"""A scriptable fake bridge client, for unit tests, demos and benchmarks (no daemon, no bus).

It has the interface of :class:`sat_frontends.bridge.dbus_client.DBusBridgeClient` that
frontends use: snake_case coroutine methods, ``call(name, *args)``, ``methods``, ``on``/``off``,
``refresh``. Behaviour comes from handlers::

    bridge = FakeBridge()
    bridge.handle("RosterGet", lambda profile: [{"jid": "bob@example.org", "name": "Bob"}])
    bridge.emit("MessageNew", "alice", {...})     # delivered to the callbacks at once

Unknown methods raise ``UnknownMethod`` like the real clients; every call is recorded in
``bridge.calls`` as ``(CamelName, args)``.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sat_frontends.bridge import errors

__all__ = ["FakeBridge", "FakeMethod", "message_record"]


def _camel(name: str) -> str:
    if "_" not in name and name[:1].isupper():
        return name
    special = {"muc": "Muc", "mam": "MAM"}
    return "".join(special.get(p, p[:1].upper() + p[1:]) for p in name.split("_") if p)


def _snake(name: str) -> str:
    import re

    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


@dataclass
class FakeMethod:
    name: str
    snake_name: str
    arg_names: tuple[str, ...] = ()


class FakeBridge:
    def __init__(self, with_core: bool = True):
        self.handlers: dict[str, Callable] = {}
        self.arities: dict[str, tuple[str, ...]] = {}
        self.callbacks: dict[str, list[Callable]] = {}
        self.calls: list[tuple[str, tuple]] = []
        self.state_callbacks: list[Callable[[bool], Any]] = []
        if with_core:
            self._core()

    # ------------------------------------------------------------------ setup

    def handle(self, name: str, handler: Callable, arg_names: tuple[str, ...] | None = None):
        """Answer method ``name`` (CamelCase) with ``handler(*args)`` (may be async)."""
        self.handlers[name] = handler
        if arg_names is None:
            try:
                params = inspect.signature(handler).parameters.values()
                arg_names = tuple(
                    p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                )
            except (TypeError, ValueError):
                arg_names = ()
        self.arities[name] = arg_names
        return handler

    def remove(self, name: str) -> None:
        self.handlers.pop(name, None)

    def _core(self) -> None:
        self.profiles: dict[str, dict] = {}
        self.rosters: dict[str, list[dict]] = {}
        self.history: dict[str, list[dict]] = {}
        self.connected: set[str] = set()
        self.sent: list[tuple] = []
        counter = itertools.count(1)

        def profile_create(name, jid, xmpp_password, profile_password, options):
            if name in self.profiles:
                raise errors.AlreadyExists(f"profile {name!r} exists")
            self.profiles[name] = {"jid": jid, "password": profile_password}

        def profile_connect(profile, profile_password):
            if profile not in self.profiles:
                raise errors.NotFound(f"no profile {profile!r}")
            if self.profiles[profile]["password"] not in ("", profile_password):
                raise errors.PermissionDenied("wrong profile password")
            was = profile in self.connected
            self.connected.add(profile)
            if not was:
                self.emit("Connected", profile, self.profiles[profile]["jid"] + "/fake", False)
            return not was

        def profile_info(profile):
            jid = self.profiles.get(profile, {}).get("jid", "")
            return {
                "name": profile,
                "jid": jid,
                "connected": profile in self.connected,
                "full_jid": jid + "/fake",
            }

        def message_send(profile, to, body, extra):
            uid = f"uid-{next(counter)}"
            self.sent.append((profile, to, body, dict(extra)))
            msg_type = extra.get("type", "chat")
            own = self.profiles.get(profile, {}).get("jid", "me@example.org")
            if msg_type != "groupchat":
                record = message_record(own, to, body, outgoing=True, uid=uid, type=msg_type)
                self.history.setdefault(profile, []).append(record)
                self.emit("MessageNew", profile, record)
            return uid

        def history_get(profile, with_jid, limit, filters):
            rows = [
                r
                for r in self.history.get(profile, [])
                if not with_jid or with_jid in (r["source"], r["dest"])
            ]
            if filters.get("msg_type"):
                rows = [r for r in rows if r["type"] == filters["msg_type"]]
            if filters.get("before_uid"):
                uids = [r["uid"] for r in rows]
                if filters["before_uid"] in uids:
                    rows = rows[: uids.index(filters["before_uid"])]
            if filters.get("before") is not None:
                rows = [r for r in rows if r["timestamp"] < filters["before"]]
            return rows[-limit:]

        def history_search(profile, query, filters, limit):
            words = query.lower().split()
            out = []
            for r in self.history.get(profile, []):
                body = (r.get("body") or "").lower()
                if all(w.rstrip("*") in body for w in words):
                    if filters.get("with_jid") and filters["with_jid"] not in (
                        r["source"],
                        r["dest"],
                    ):
                        continue
                    out.append({**r, "snippet": r.get("body", "")})
            return out[:limit]

        self.handle("ProfilesList", lambda: sorted(self.profiles))
        self.handle("ProfileDefaultGet", lambda: next(iter(sorted(self.profiles)), ""))
        self.handle("ProfileCreate", profile_create)
        self.handle("ProfileConnect", profile_connect)
        self.handle("ProfileDisconnect", lambda profile: self.connected.discard(profile))
        self.handle("ProfileIsConnected", lambda profile: profile in self.connected)
        self.handle("ProfileInfoGet", profile_info)
        self.handle("RosterGet", lambda profile: list(self.rosters.get(profile, [])))
        self.handle("PresenceStatusesGet", lambda profile: [])
        self.handle("PresenceSet", lambda profile, show, statuses, priority: None)
        self.handle("MessageSend", message_send)
        self.handle("HistoryGet", history_get)
        self.handle("HistorySearch", history_search)
        self.handle("SubscriptionSend", lambda profile, jid, type_: None)
        self.handle("RosterAdd", lambda profile, jid, name, groups: None)

    # ------------------------------------------------------------------ client interface

    @property
    def methods(self) -> dict[str, FakeMethod]:
        return {
            _snake(name): FakeMethod(name, _snake(name), self.arities.get(name, ()))
            for name in self.handlers
        }

    @property
    def signals(self) -> dict:
        return {}

    async def refresh(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _resolve(self, name: str) -> str:
        if name in self.handlers:
            return name
        for camel in self.handlers:
            if _snake(camel) == name:
                return camel
        return _camel(name)

    async def call(self, name: str, *args) -> Any:
        camel = self._resolve(name)
        self.calls.append((camel, args))
        handler = self.handlers.get(camel)
        if handler is None:
            raise errors.UnknownMethod(f"the daemon has no method {camel!r}")
        result = handler(*args)
        if inspect.isawaitable(result):
            result = await result
        return result

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        async def bound(*args):
            return await self.call(name, *args)

        bound.__name__ = name
        return bound

    def on(self, signal: str, callback: Callable) -> Callable:
        self.callbacks.setdefault(_camel(signal), []).append(callback)
        return callback

    def off(self, signal: str, callback: Callable) -> None:
        callbacks = self.callbacks.get(_camel(signal), [])
        if callback in callbacks:
            callbacks.remove(callback)

    def emit(self, signal: str, *args) -> None:
        """Deliver a signal to the callbacks right away (synchronously)."""
        for callback in list(self.callbacks.get(_camel(signal), ())):
            callback(*args)

    # ------------------------------------------------------------------ daemon state

    def on_daemon_state(self, callback: Callable[[bool], Any]) -> Callable[[bool], Any]:
        self.state_callbacks.append(callback)
        return callback

    def off_daemon_state(self, callback: Callable[[bool], Any]) -> None:
        if callback in self.state_callbacks:
            self.state_callbacks.remove(callback)

    def daemon_state(self, available: bool) -> None:
        """Tell the listeners that the daemon left the bus (False) or is back (True); a
        restarted daemon has no connected profile."""
        if not available and hasattr(self, "connected"):
            self.connected.clear()
        for callback in list(self.state_callbacks):
            callback(available)

    def called(self, name: str) -> list[tuple]:
        return [args for n, args in self.calls if n == name]


_uids = itertools.count(1)


def message_record(
    sender: str,
    to: str,
    body: str,
    outgoing: bool = False,
    uid: str | None = None,
    type: str = "chat",  # noqa: A002
    timestamp: float | None = None,
    extra: dict | None = None,
) -> dict:
    """A MessageNew / HistoryGet record as the daemon sends it."""
    source, _, source_res = sender.partition("/")
    dest, _, dest_res = to.partition("/")
    return {
        "uid": uid or f"m{next(_uids)}",
        "timestamp": timestamp if timestamp is not None else time.time(),
        "source": source,
        "source_resource": source_res,
        "dest": dest,
        "dest_resource": dest_res,
        "from": sender,
        "to": to,
        "type": type,
        "body": body,
        "outgoing": outgoing,
        "extra": dict(extra or {}),
    }
