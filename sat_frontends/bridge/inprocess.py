"""In-process bridge client: the D-Bus client's interface, calling the contract directly.

For tests and single-process use (no bus)::

    bridge = InProcessBridgeClient(host.bridge)
    await bridge.profile_create("alice", "secret")
    bridge.on("MessageNew", callback)

It behaves like :class:`sat_frontends.bridge.dbus_client.DBusBridgeClient`: snake_case
coroutine methods, the same argument checking and value conversion (values make the same
round trip through the wire format), the same :mod:`sat_frontends.bridge.errors` exceptions,
and signals delivered on a later loop iteration, never from inside ``emit``.

This is the only frontend module allowed to import the backend.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from sat.bridge import types as bt
from sat.bridge.contract import Bridge, Method, Signal, UnknownMethod
from sat.core.errors import SatError
from sat_frontends.bridge import errors

__all__ = ["InProcessBridgeClient"]

log = logging.getLogger(__name__)


def _bridge_error(error: SatError) -> errors.BridgeError:
    name = getattr(error, "dbus_name", "") or "Internal"
    return errors.error_class(name)(error.message, name)


class InProcessBridgeClient:
    """Same interface as DBusBridgeClient, bound to a :class:`~sat.bridge.contract.Bridge`."""

    def __init__(self, bridge: Bridge):
        self.bridge = bridge
        self._callbacks: dict[str, list[Callable]] = {}
        self._bound: dict[str, Callable] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        bridge.attach(self)

    @classmethod
    async def connect(cls, bridge: Bridge) -> InProcessBridgeClient:
        """Mirror of DBusBridgeClient.connect (nothing to wait for)."""
        return cls(bridge)

    async def close(self) -> None:
        self._closed = True
        self.bridge.detach(self)
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def refresh(self) -> None:
        """Nothing to do: the contract is read directly."""

    # ------------------------------------------------------------------ calls

    @property
    def methods(self) -> dict[str, Method]:
        return {m.snake_name: m for m in self.bridge.methods.values()}

    @property
    def signals(self) -> dict[str, Signal]:
        return {s.snake_name: s for s in self.bridge.signals.values()}

    async def call(self, name: str, *args) -> Any:
        """Call method ``name`` (CamelCase or snake_case) with plain ``args``."""
        if self._closed:
            raise errors.BridgeUnavailable("the in-process bridge client is closed")
        if self.bridge.find_method(name) is None:
            raise errors.UnknownMethod(f"the daemon has no method {name!r}")
        try:
            return await self.bridge.call(name, *args)
        except UnknownMethod as e:
            raise errors.UnknownMethod(e.message) from None
        except SatError as e:
            raise _bridge_error(e) from None

    def __getattr__(self, name: str) -> Callable:
        if name.startswith("_"):
            raise AttributeError(name)
        bound = self._bound.get(name)
        if bound is None:

            async def bound(*args):
                return await self.call(name, *args)

            bound.__name__ = bound.__qualname__ = name
            method = self.bridge.find_method(name)
            if method is not None:
                bound.__doc__ = method.doc
                self._bound[name] = bound
        return bound

    def __dir__(self):
        return [*super().__dir__(), *(m.snake_name for m in self.bridge.methods.values())]

    # ------------------------------------------------------------------ signals

    def _signal_name(self, name: str) -> str:
        signal = self.bridge.find_signal(name)
        return signal.name if signal is not None else bt.snake_to_camel(name)

    def on(self, signal: str, callback: Callable) -> Callable:
        """Call ``callback(*args)`` each time ``signal`` is emitted (see DBusBridgeClient.on)."""
        self._callbacks.setdefault(self._signal_name(signal), []).append(callback)
        return callback

    def off(self, signal: str, callback: Callable) -> None:
        member = self._signal_name(signal)
        callbacks = self._callbacks.get(member, [])
        if callback in callbacks:
            callbacks.remove(callback)
            if not callbacks:
                del self._callbacks[member]

    # BridgeListener
    def bridge_signal(self, signal: Signal, wire_args: list) -> None:
        if signal.name not in self._callbacks:
            return
        args = bt.from_wire(wire_args)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop()
        loop.call_soon(self._deliver, signal.name, args)

    def bridge_changed(self, member) -> None:
        self._bound.clear()

    def _deliver(self, member: str, args: list) -> None:
        for callback in list(self._callbacks.get(member, ())):
            try:
                result = callback(*args)
            except Exception:
                log.exception("callback for signal %s failed", member)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
