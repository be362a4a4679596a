"""D-Bus client of the SàT daemon's bridge (dbus-fast, asyncio).

The client knows no method in advance: it introspects the daemon's bridge object and offers
every member as an ``async`` Python method named in snake_case::

    bridge = await DBusBridgeClient.connect()            # session bus, or SAT_BRIDGE_BUS
    await bridge.profile_create("alice", "secret")        # -> org.salutatoi.SAT.core.ProfileCreate
    bridge.on("message_new", lambda profile, data: ...)   # or "MessageNew"
    await bridge.close()

Arguments and results are plain Python values: dicts passed for ``a{sv}`` arguments are
wrapped in variants (signature guessed from each value's type, ``None`` values left out),
returned variants are unwrapped recursively. D-Bus errors become
:mod:`sat_frontends.bridge.errors` exceptions (``NotFound``, ``InvalidArgument``...).

Methods declared by plugins after ``connect`` are found on first use (the client
introspects again when it meets an unknown name, and whenever the daemon restarts).

The client follows the daemon's bus name (``NameOwnerChanged``): signal subscriptions survive a
restart of the daemon, and :meth:`DBusBridgeClient.on_daemon_state` tells a frontend when the
daemon goes away (``callback(False)``) and when it is back and introspected again
(``callback(True)``), so it can show that it is offline and reload its state.

The coroutines are asyncio ones: await them from asyncio tasks; Twisted code wraps them
with ``Deferred.fromFuture(asyncio.ensure_future(coro))``.

Frontends must not import the backend: the little wire conversion below mirrors
``sat.bridge.types`` (a unit test checks both agree).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.signature import SignatureType, get_signature_tree

from sat_frontends.bridge import errors

__all__ = [
    "DBusBridgeClient",
    "MethodInfo",
    "SignalInfo",
    "camel_to_snake",
    "snake_to_camel",
    "BUS_NAME",
    "OBJECT_PATH",
]

log = logging.getLogger(__name__)

BUS_NAME = "org.salutatoi.SAT"
OBJECT_PATH = "/org/salutatoi/SAT/bridge"
INTERFACE_PREFIX = "org.salutatoi.SAT."
DOC_ANNOTATION = "org.freedesktop.DBus.DocString"
_DBUS = "org.freedesktop.DBus"

# ---------------------------------------------------------------------------- naming
# (same rules as sat.bridge.types)

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def camel_to_snake(name: str) -> str:
    """``ProfileCreate`` -> ``profile_create``; ``MUCJoin`` -> ``muc_join``."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def snake_to_camel(name: str) -> str:
    """``profile_create`` -> ``ProfileCreate``; CamelCase input is returned unchanged."""
    if "_" not in name and name[:1].isupper():
        return name
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


# ---------------------------------------------------------------------------- wire values
# (same guesses as sat.bridge.types.guess_variant)

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


class _WireError(ValueError):
    pass


def _list_signature(items) -> str | None:
    if all(type(x) is str for x in items):
        return "as"
    if all(isinstance(x, Mapping) for x in items):
        return "aa{sv}"
    if all(type(x) is bool for x in items):
        return "ab"
    if all(type(x) is int and _INT64_MIN <= x <= _INT64_MAX for x in items):
        return "ax"
    if all(type(x) is float for x in items):
        return "ad"
    if all(isinstance(x, (bytes, bytearray, memoryview)) for x in items):
        return "aay"
    return None


def _record(value) -> dict:
    if not isinstance(value, Mapping):
        raise _WireError(f"expected dict, got {type(value).__name__}")
    out = {}
    for key, item in value.items():
        if item is None:
            continue
        if not isinstance(key, str):
            raise _WireError(f"record keys must be str, got {type(key).__name__}")
        out[key] = guess_variant(item)
    return out


def guess_variant(value: Any) -> Variant:
    """Wrap a plain value in a Variant whose signature follows its Python type."""
    kind = type(value)
    if kind is str:
        return Variant("s", value, False)
    if kind is bool:
        return Variant("b", value, False)
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return Variant("x", value, False)
        if 0 <= value <= _UINT64_MAX:
            return Variant("t", value, False)
        raise _WireError(f"{value} does not fit in 64 bits")
    if kind is float:
        return Variant("d", value, False)
    if kind is Variant:
        return value
    if value is None:
        raise _WireError("None cannot be sent (leave the key out instead)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Variant("ay", bytes(value), False)
    if isinstance(value, Mapping):
        return Variant("a{sv}", _record(value), False)
    if isinstance(value, (list, tuple)):
        if not value:
            return Variant("as", [], False)
        sig = _list_signature(value)
        if sig == "aa{sv}":
            return Variant(sig, [_record(x) for x in value], False)
        if sig == "aay":
            return Variant(sig, [bytes(x) for x in value], False)
        if sig is not None:
            return Variant(sig, list(value), False)
        return Variant("av", [guess_variant(x) for x in value], False)
    if isinstance(value, bool):
        return Variant("b", bool(value), False)
    if isinstance(value, int):
        return guess_variant(int(value))
    if isinstance(value, float):
        return Variant("d", float(value), False)
    if isinstance(value, str):
        return Variant("s", str(value), False)
    raise _WireError(f"cannot send a {type(value).__name__} (no D-Bus type for it)")


def from_wire(value: Any) -> Any:
    """Unwrap every Variant inside ``value``, recursively."""
    kind = type(value)
    if kind is Variant:
        return from_wire(value.value)
    if kind is dict:
        return {key: from_wire(item) for key, item in value.items()}
    if kind is list:
        return [from_wire(item) for item in value]
    if kind is tuple:  # structs
        return tuple(from_wire(item) for item in value)
    return value


def _no_bool(value):
    return not isinstance(value, bool)


_TOP_CHECKS: dict[str, tuple[tuple[type, ...], Callable[[Any], bool] | None]] = {
    "s": ((str,), None),
    "o": ((str,), None),
    "g": ((str,), None),
    "b": ((bool,), None),
    "d": ((int, float), _no_bool),
    **{t: ((int,), _no_bool) for t in "ynqiuxt"},
}


def _compile_encoder(sig: SignatureType) -> Callable[[Any], Any]:
    """Check the outer Python type of a value and wrap the variants it holds."""
    token = sig.token
    if token in _TOP_CHECKS:
        types, extra = _TOP_CHECKS[token]

        def check(value):
            if not isinstance(value, types) or (extra is not None and not extra(value)):
                raise _WireError(f"expected {types[-1].__name__}, got {type(value).__name__}")
            return value

        return check
    if token == "v":
        return guess_variant
    if token == "a":
        child = sig.children[0]
        if child.token == "y":

            def check_bytes(value):
                if not isinstance(value, (bytes, bytearray, memoryview)):
                    raise _WireError(f"expected bytes, got {type(value).__name__}")
                return bytes(value)

            return check_bytes
        if child.token == "{":
            key_enc = _compile_encoder(child.children[0])
            value_type = child.children[1]
            value_enc = _compile_encoder(value_type)
            drop_none = value_type.token == "v"

            def encode_dict(value):
                if not isinstance(value, Mapping):
                    raise _WireError(f"expected dict, got {type(value).__name__}")
                return {
                    key_enc(k): value_enc(v)
                    for k, v in value.items()
                    if not (drop_none and v is None)
                }

            return encode_dict
        elem_enc = _compile_encoder(child)

        def encode_list(value):
            if not isinstance(value, (list, tuple)):
                raise _WireError(f"expected list, got {type(value).__name__}")
            return [elem_enc(v) for v in value]

        return encode_list
    if token == "(":
        encoders = [_compile_encoder(c) for c in sig.children]

        def encode_struct(value):
            if not isinstance(value, (list, tuple)) or len(value) != len(encoders):
                raise _WireError(f"expected a {len(encoders)}-item tuple")
            return [enc(v) for enc, v in zip(encoders, value, strict=True)]

        return encode_struct
    raise _WireError(f"unsupported D-Bus type {sig.signature!r}")


# ---------------------------------------------------------------------------- members


def _doc_of(element: ET.Element) -> str:
    for annotation in element.findall("annotation"):
        if annotation.get("name") == DOC_ANNOTATION:
            return annotation.get("value", "")
    return ""


@dataclass
class MethodInfo:
    """A daemon method as seen in the introspection data."""

    name: str
    snake_name: str
    interface: str
    arg_names: tuple[str, ...]
    arg_signatures: tuple[str, ...]
    in_signature: str
    out_signature: str
    doc: str
    arg_docs: tuple[str, ...] = ()
    out_doc: str = ""

    def __post_init__(self):
        self._encoders = [
            _compile_encoder(get_signature_tree(sig).types[0]) for sig in self.arg_signatures
        ]
        self._unwrap = "v" in self.out_signature

    def encode(self, args: tuple) -> list:
        if len(args) != len(self.arg_names):
            raise errors.InvalidArgument(
                f"{self.name} takes {len(self.arg_names)} argument(s) "
                f"({', '.join(self.arg_names) or 'none'}), got {len(args)}"
            )
        body = []
        for encoder, arg_name, sig, value in zip(
            self._encoders, self.arg_names, self.arg_signatures, args, strict=True
        ):
            try:
                body.append(encoder(value))
            except (_WireError, TypeError, AttributeError, ValueError) as e:
                raise errors.InvalidArgument(
                    f"{self.name}: argument {arg_name!r} ({sig}): {e}"
                ) from None
        return body

    def find_bad_argument(self, body: list) -> str:
        """Name the argument dbus-fast could not marshal (only used after a failure)."""
        for arg_name, sig, value in zip(self.arg_names, self.arg_signatures, body, strict=True):
            try:
                get_signature_tree(sig).verify([value])
            except Exception as e:
                return f"{self.name}: argument {arg_name!r} ({sig}): {e}"
        return f"{self.name}: arguments do not match {self.in_signature!r}"

    @property
    def signature_text(self) -> str:
        args = ", ".join(
            f"{n}: {s}" for n, s in zip(self.arg_names, self.arg_signatures, strict=True)
        )
        return f"{self.snake_name}({args}) -> {self.out_signature or 'None'}"


@dataclass
class SignalInfo:
    name: str
    snake_name: str
    interface: str
    arg_names: tuple[str, ...]
    signature: str
    doc: str


def parse_introspection(xml: str) -> tuple[dict[str, MethodInfo], dict[str, SignalInfo]]:
    """Methods and signals of the bridge's interfaces, keyed by CamelCase name."""
    root = ET.fromstring(xml)
    methods: dict[str, MethodInfo] = {}
    signals: dict[str, SignalInfo] = {}
    for iface in root.findall("interface"):
        iface_name = iface.get("name", "")
        if not iface_name.startswith(INTERFACE_PREFIX):
            continue
        for elt in iface.findall("method"):
            ins = [a for a in elt.findall("arg") if a.get("direction", "in") == "in"]
            outs = [a for a in elt.findall("arg") if a.get("direction") == "out"]
            name = elt.get("name", "")
            methods[name] = MethodInfo(
                name=name,
                snake_name=camel_to_snake(name),
                interface=iface_name,
                arg_names=tuple(a.get("name", f"arg{i}") for i, a in enumerate(ins)),
                arg_signatures=tuple(a.get("type", "") for a in ins),
                in_signature="".join(a.get("type", "") for a in ins),
                out_signature="".join(a.get("type", "") for a in outs),
                doc=_doc_of(elt),
                arg_docs=tuple(_doc_of(a) for a in ins),
                out_doc=_doc_of(outs[0]) if outs else "",
            )
        for elt in iface.findall("signal"):
            args = elt.findall("arg")
            name = elt.get("name", "")
            signals[name] = SignalInfo(
                name=name,
                snake_name=camel_to_snake(name),
                interface=iface_name,
                arg_names=tuple(a.get("name", f"arg{i}") for i, a in enumerate(args)),
                signature="".join(a.get("type", "") for a in args),
                doc=_doc_of(elt),
            )
    return methods, signals


# ---------------------------------------------------------------------------- client


def _bus_for(bus_address: str | None) -> MessageBus:
    if bus_address is None:
        # the same variables that override the daemon's [bridge] bus / bus_address
        bus_address = os.environ.get("SAT_BRIDGE_BUS") or "session"
        if bus_address == "address":
            bus_address = os.environ.get("SAT_BRIDGE_BUS_ADDRESS") or "session"
    if bus_address == "session":
        return MessageBus(bus_type=BusType.SESSION)
    if bus_address == "system":
        return MessageBus(bus_type=BusType.SYSTEM)
    return MessageBus(bus_address=bus_address)


class DBusBridgeClient:
    """The daemon's API as Python coroutines. Build it with :meth:`connect`."""

    def __init__(self, bus: MessageBus, bus_name: str = BUS_NAME, timeout: float | None = None):
        self.bus = bus
        self.bus_name = bus_name
        #: seconds before a call fails with Timeout (None: wait as long as the bus lets us)
        self.timeout = timeout
        self._methods: dict[str, MethodInfo] = {}
        self._snake: dict[str, str] = {}
        self._signals: dict[str, SignalInfo] = {}
        self._signal_snake: dict[str, str] = {}
        self._callbacks: dict[str, list[Callable]] = {}
        self._bound: dict[str, Callable] = {}
        self._owner: str | None = None
        self._refreshing: asyncio.Future | None = None
        self._tasks: set[asyncio.Task] = set()
        self._state_callbacks: list[Callable[[bool], Any]] = []
        #: bumped each time the daemon's name changes owner (a stale "back" is not told)
        self._owner_generation = 0
        bus.add_message_handler(self._on_message)

    # ------------------------------------------------------------------ connection

    @classmethod
    async def connect(
        cls,
        bus_address: str | None = None,
        wait: float | None = None,
        bus_name: str = BUS_NAME,
        timeout: float | None = None,
    ) -> DBusBridgeClient:
        """Connect to the daemon and learn its API.

        :param bus_address: a D-Bus address, "session" or "system"; None means the
            ``SAT_BRIDGE_BUS`` environment variable, else the session bus
        :param wait: seconds to keep retrying until the bus and the daemon's name appear;
            None or 0 tries once
        :param timeout: default time limit for each call, in seconds
        :raises BridgeUnavailable: the bus or the daemon cannot be reached
        """
        deadline = time.monotonic() + (wait or 0)
        delay = 0.02
        bus = None
        while True:
            try:
                if bus is None or not bus.connected:
                    bus = await _bus_for(bus_address).connect()
                reply = await bus.call(
                    Message(
                        destination=_DBUS,
                        path="/org/freedesktop/DBus",
                        interface=_DBUS,
                        member="GetNameOwner",
                        signature="s",
                        body=[bus_name],
                    )
                )
                if reply.message_type is MessageType.METHOD_RETURN:
                    break
                problem = f"{bus_name} is not on the bus (is the daemon running?)"
            except Exception as e:  # no socket, refused, auth failure, connection lost
                problem = f"cannot reach the D-Bus bus {bus_address or 'session'!r}: {e}"
                if bus is not None:
                    with contextlib.suppress(Exception):
                        bus.disconnect()
                bus = None
            if time.monotonic() >= deadline:
                if bus is not None:
                    bus.disconnect()
                raise errors.BridgeUnavailable(problem)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        client = cls(bus, bus_name, timeout)
        client._owner = reply.body[0]
        try:
            await client._watch_owner()
            await client.refresh()
        except BaseException:
            bus.disconnect()
            raise
        client._spawn(client._watch_bus())
        return client

    async def _watch_bus(self) -> None:
        """The bus itself went away (dbus-daemon stopped): the daemon is out of reach."""
        try:
            # shielded: cancelling this watcher must not cancel the bus's own future
            await asyncio.shield(self.bus.wait_for_disconnect())
        except Exception as e:
            log.info("D-Bus connection lost: %s", e)
        if self._owner is not None:
            self._owner = None
            self._tell_state(False)

    async def close(self) -> None:
        """Disconnect from the bus."""
        self._state_callbacks.clear()
        for task in list(self._tasks):
            task.cancel()
        if self.bus.connected:
            self.bus.disconnect()
            try:
                await self.bus.wait_for_disconnect()
            except Exception:  # already gone
                pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def _bus_call(self, member: str, signature: str = "", body: list | None = None):
        reply = await self.bus.call(
            Message(
                destination=_DBUS,
                path="/org/freedesktop/DBus",
                interface=_DBUS,
                member=member,
                signature=signature,
                body=body or [],
            )
        )
        if reply.message_type is MessageType.ERROR:
            raise errors.from_error_name(reply.error_name, _error_text(reply))
        return reply.body

    async def _watch_owner(self) -> None:
        await self._bus_call(
            "AddMatch",
            "s",
            [
                f"type='signal',sender='{_DBUS}',interface='{_DBUS}',"
                f"member='NameOwnerChanged',arg0='{self.bus_name}'"
            ],
        )

    async def refresh(self) -> None:
        """Introspect the daemon again (new plugin methods, daemon restarted)."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            reply = await self._raw_call(
                Message(
                    destination=self.bus_name,
                    path=OBJECT_PATH,
                    interface="org.freedesktop.DBus.Introspectable",
                    member="Introspect",
                )
            )
            methods, signals = parse_introspection(reply.body[0])
            self._methods = methods
            self._snake = {m.snake_name: name for name, m in methods.items()}
            self._signals = signals
            self._signal_snake = {s.snake_name: name for name, s in signals.items()}
            self._bound.clear()
            self._refreshing.set_result(None)
        except BaseException as e:
            self._refreshing.set_exception(e)
            self._refreshing.exception()  # mark retrieved
            raise
        finally:
            self._refreshing = None

    # ------------------------------------------------------------------ calls

    @property
    def methods(self) -> dict[str, MethodInfo]:
        """The daemon's methods, by snake_case name."""
        return {m.snake_name: m for m in self._methods.values()}

    @property
    def signals(self) -> dict[str, SignalInfo]:
        """The daemon's signals, by snake_case name."""
        return {s.snake_name: s for s in self._signals.values()}

    def _find(self, name: str) -> MethodInfo | None:
        info = self._methods.get(name)
        if info is None:
            camel = self._snake.get(name)
            if camel is not None:
                info = self._methods[camel]
        return info

    async def _raw_call(self, msg: Message) -> Message:
        if not self.bus.connected:
            raise errors.BridgeUnavailable("the D-Bus connection is closed")
        try:
            if self.timeout is None:
                reply = await self.bus.call(msg)
            else:
                reply = await asyncio.wait_for(self.bus.call(msg), self.timeout)
        except TimeoutError:
            raise errors.Timeout(f"{msg.member}: no reply within {self.timeout} s") from None
        except errors.BridgeError:
            raise
        except Exception as e:
            if not self.bus.connected:
                raise errors.BridgeUnavailable(f"D-Bus connection lost: {e}") from e
            raise
        if reply is None:
            raise errors.BridgeUnavailable("no reply (connection closed)")
        if reply.message_type is MessageType.ERROR:
            raise errors.from_error_name(reply.error_name, _error_text(reply))
        return reply

    async def call(self, name: str, *args) -> Any:
        """Call daemon method ``name`` (CamelCase or snake_case) with plain ``args``."""
        info = self._find(name)
        if info is None:
            await self.refresh()
            info = self._find(name)
            if info is None:
                raise errors.UnknownMethod(f"the daemon has no method {name!r}")
        body = info.encode(args)
        msg = Message(
            destination=self.bus_name,
            path=OBJECT_PATH,
            interface=info.interface,
            member=info.name,
            signature=info.in_signature,
            body=body,
        )
        try:
            reply = await self._raw_call(msg)
        except errors.BridgeError:
            raise
        except Exception:
            # marshalling failed: a value deep inside an argument has the wrong type
            raise errors.InvalidArgument(info.find_bad_argument(body)) from None
        if not reply.body:
            return None
        if info._unwrap:
            return from_wire(reply.body[0])
        return reply.body[0]

    def __getattr__(self, name: str) -> Callable:
        if name.startswith("_"):
            raise AttributeError(name)
        bound = self._bound.get(name)
        if bound is None:
            info = self._find(name)

            async def bound(*args):
                return await self.call(name, *args)

            bound.__name__ = bound.__qualname__ = name
            if info is not None:
                bound.__doc__ = f"{info.signature_text}\n\n{info.doc}"
                self._bound[name] = bound
        return bound

    def __dir__(self):
        return [*super().__dir__(), *(m.snake_name for m in self._methods.values())]

    # ------------------------------------------------------------------ signals

    def _signal_name(self, name: str) -> str:
        if name in self._signals:
            return name
        return self._signal_snake.get(name) or snake_to_camel(name)

    def on(self, signal: str, callback: Callable) -> Callable:
        """Call ``callback(*args)`` each time the daemon emits ``signal``.

        ``signal`` is CamelCase or snake_case; the callback gets plain Python arguments and
        may be a coroutine function. Returns ``callback`` (so it can be used as decorator
        argument and given back to :meth:`off`).
        """
        member = self._signal_name(signal)
        callbacks = self._callbacks.setdefault(member, [])
        if not callbacks:
            self._send_match("AddMatch", member)
        callbacks.append(callback)
        return callback

    def off(self, signal: str, callback: Callable) -> None:
        """Stop calling ``callback`` for ``signal``."""
        member = self._signal_name(signal)
        callbacks = self._callbacks.get(member, [])
        if callback in callbacks:
            callbacks.remove(callback)
            if not callbacks:
                del self._callbacks[member]
                self._send_match("RemoveMatch", member)

    def _send_match(self, action: str, member: str) -> None:
        # sent without waiting: the bus handles our messages in order, so a call made
        # after on() cannot trigger a signal the bus would not route to us
        if not self.bus.connected:
            return
        rule = f"type='signal',sender='{self.bus_name}',path='{OBJECT_PATH}',member='{member}'"
        self.bus.send(
            Message(
                destination=_DBUS,
                path="/org/freedesktop/DBus",
                interface=_DBUS,
                member=action,
                signature="s",
                body=[rule],
            )
        )

    def _on_message(self, msg: Message):
        if msg.message_type is not MessageType.SIGNAL:
            return None
        if msg.path == OBJECT_PATH and msg.interface.startswith(INTERFACE_PREFIX):
            if msg.sender != self._owner:
                return None
            callbacks = self._callbacks.get(msg.member)
            if callbacks:
                args = from_wire(msg.body)
                for callback in list(callbacks):
                    self._run_callback(callback, args, msg.member)
            return None
        if msg.member == "NameOwnerChanged" and msg.sender == _DBUS and msg.interface == _DBUS:
            name, old, new = msg.body
            if name == self.bus_name:
                self._owner = new or None
                self._owner_generation += 1
                if old:
                    self._tell_state(False)
                if new:
                    self._spawn(self._daemon_back(self._owner_generation))
        return None

    # ------------------------------------------------------------------ daemon state

    @property
    def daemon_available(self) -> bool:
        """The daemon's bus name has an owner (it runs)."""
        return self._owner is not None and self.bus.connected

    def on_daemon_state(self, callback: Callable[[bool], Any]) -> Callable[[bool], Any]:
        """Call ``callback(False)`` when the daemon leaves the bus (stopped, crashed) and
        ``callback(True)`` when it is back and its API was read again. Returns ``callback``."""
        self._state_callbacks.append(callback)
        return callback

    def off_daemon_state(self, callback: Callable[[bool], Any]) -> None:
        if callback in self._state_callbacks:
            self._state_callbacks.remove(callback)

    def _tell_state(self, available: bool) -> None:
        for callback in list(self._state_callbacks):
            self._run_callback(callback, [available], "daemon state")

    async def _daemon_back(self, generation: int) -> None:
        await self._refresh_quietly()
        if generation == self._owner_generation and self._owner is not None:
            self._tell_state(True)

    def _run_callback(self, callback: Callable, args: list, member: str) -> None:
        try:
            result = callback(*args)
        except Exception:
            log.exception("callback for signal %s failed", member)
            return
        if inspect.isawaitable(result):
            self._spawn(result, member)

    def _spawn(self, awaitable, what: str = "") -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bridge client task failed", exc_info=task.exception())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except errors.BridgeError as e:
            log.warning("could not introspect the restarted daemon: %s", e)


def _error_text(reply: Message) -> str:
    if reply.body and isinstance(reply.body[0], str):
        return reply.body[0]
    return ""
