"""The bridge contract: the backend's API (methods and signals), declared once at run time.

The core and the plugins declare what they offer on a single :class:`Bridge`::

    bridge.add_method(
        "ProfileCreate", self.profile_create,
        args=[("profile", "s", "name of the new profile"),
              ("password", "s", "password protecting the profile")],
        out=("s", "the name actually used"),
        doc="Create a profile.", interface="core")
    bridge.add_signal("MessageNew", args=[("profile", "s", "..."), ("data", "a{sv}", "...")],
                      doc="A message was received or sent.", interface="core")
    bridge.emit("MessageNew", "alice", {"from": "bob@example.org", "body": "hi"})

Everything else is derived from these declarations: the D-Bus server's dispatch table and
introspection XML (:mod:`sat.bridge.dbus_server`), the D-Bus client's methods (built from the
introspection) and the in-process client (:mod:`sat_frontends.bridge.inprocess`).

Handlers take and return plain Python values (see :mod:`sat.bridge.types`); they may be
plain functions, return a Twisted Deferred, or be ``async def`` coroutines written
Twisted-style (awaiting Deferreds), which are driven with ``defer.ensureDeferred``.
Arguments are checked against their signature before a handler runs: a bad one raises
:class:`sat.core.errors.InvalidArgument` naming it. Expected failures are
:class:`~sat.core.errors.SatError` subclasses; anything else escaping a handler is logged
with its traceback and turned into :class:`~sat.core.errors.InternalError`.

Declaring is allowed at any time, also after a server started (plugins load late): the
attached servers are told and refresh their introspection data.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from twisted.internet import defer
from twisted.python.failure import Failure

from sat.bridge import types as bt
from sat.core import errors

__all__ = [
    "BUS_NAME",
    "OBJECT_PATH",
    "INTERFACES",
    "ERROR_PREFIX",
    "Arg",
    "Method",
    "Signal",
    "Bridge",
    "BridgeListener",
    "UnknownMethod",
    "dbus_error_of",
]

log = logging.getLogger(__name__)

BUS_NAME = "org.salutatoi.SAT"
OBJECT_PATH = "/org/salutatoi/SAT/bridge"
INTERFACE_PREFIX = "org.salutatoi.SAT."
INTERFACES = {"core": "org.salutatoi.SAT.core", "plugin": "org.salutatoi.SAT.plugin"}
ERROR_PREFIX = "org.salutatoi.SAT.Error."
INTERFACE_DOCS = {
    "core": "The SàT daemon's core API: profiles, connection, roster, messages, history.",
    "plugin": "API added by the daemon's plugins (XEPs and features).",
}

DOC_ANNOTATIONS = ("org.freedesktop.DBus.DocString", "org.gtk.GDBus.DocString")
_ARG_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class UnknownMethod(errors.NotFound):
    """No such bridge method."""

    dbus_name = "UnknownMethod"


@dataclass(frozen=True)
class Arg:
    """One argument (or the return value) of a member."""

    name: str
    signature: str
    doc: str
    to_wire: Callable[[Any], Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Method:
    """A declared method. ``interface`` is the short name ("core" or "plugin")."""

    name: str
    snake_name: str
    handler: Callable = field(repr=False)
    args: tuple[Arg, ...]
    out: Arg | None
    doc: str
    interface: str
    in_signature: str
    out_signature: str
    #: the arguments hold a variant somewhere: wire values must be unwrapped
    unwrap_args: bool = field(repr=False)

    @property
    def interface_name(self) -> str:
        return INTERFACES[self.interface]

    def check_args(self, args: Sequence[Any]) -> list:
        """Check plain ``args`` against the signature; return their wire form.

        Raises InvalidArgument naming the faulty argument.
        """
        names = ", ".join(a.name for a in self.args) or "none"
        return _args_to_wire(self.name, f"argument(s) ({names})", self.args, args)

    def run(self, wire_args: Sequence[Any]) -> Any:
        """Call the handler with wire arguments (variants are unwrapped first).

        Returns the plain result or a Deferred of it; exceptions raised synchronously by the
        handler propagate.
        """
        if self.unwrap_args:
            wire_args = [bt.from_wire(value) for value in wire_args]
        result = self.handler(*wire_args)
        if inspect.iscoroutine(result):
            return defer.ensureDeferred(result)
        return result

    def result_to_wire(self, value: Any) -> list:
        """The D-Bus reply body for a handler's plain result.

        A result not matching the declared signature is a backend bug: InternalError.
        """
        if self.out is None:
            return []
        try:
            return [self.out.to_wire(value)]
        except bt.WireTypeError as e:
            raise errors.InternalError(
                f"{self.name} returned a value not matching {self.out_signature!r}: {e}"
            ) from None


def _args_to_wire(label: str, expected: str, decl: Sequence[Arg], values: Sequence[Any]) -> list:
    """Wire form of ``values`` checked against declared ``decl``; InvalidArgument otherwise."""
    if len(values) != len(decl):
        raise errors.InvalidArgument(f"{label} takes {len(decl)} {expected}, got {len(values)}")
    wire = []
    for arg, value in zip(decl, values, strict=True):
        try:
            wire.append(arg.to_wire(value))
        except bt.WireTypeError as e:
            raise errors.InvalidArgument(
                f"{label}: argument {arg.name!r} ({arg.signature}): {e}"
            ) from None
    return wire


@dataclass(frozen=True)
class Signal:
    """A declared signal."""

    name: str
    snake_name: str
    args: tuple[Arg, ...]
    doc: str
    interface: str
    signature: str

    @property
    def interface_name(self) -> str:
        return INTERFACES[self.interface]

    def check_args(self, args: Sequence[Any]) -> list:
        return _args_to_wire(f"signal {self.name}", "argument(s)", self.args, args)


class BridgeListener(Protocol):
    """What a server (D-Bus, in-process client...) attached to a Bridge receives."""

    def bridge_signal(self, signal: Signal, wire_args: list) -> None:
        """``signal`` was emitted; ``wire_args`` are checked, variants wrapped."""

    def bridge_changed(self, member: Method | Signal) -> None:
        """``member`` was declared after the listener was attached."""


def dbus_error_of(exc: BaseException | Failure, member: str = "") -> errors.SatError:
    """The SatError to report for ``exc``: itself, or InternalError (logged) for a bug."""
    if isinstance(exc, Failure):
        failure, exc = exc, exc.value
    else:
        failure = None
    if isinstance(exc, errors.SatError):
        return exc
    if failure is not None:
        log.error("bridge call %s failed:\n%s", member, failure.getTraceback())
    else:
        log.error("bridge call %s failed", member, exc_info=exc)
    return errors.InternalError(
        f"internal error in {member or 'the daemon'} ({type(exc).__name__})"
    )


def _clean_doc(doc: str) -> str:
    return inspect.cleandoc(doc) if doc else ""


class Bridge:
    """The registry of the backend's API. See the module docstring."""

    def __init__(self, require_docs: bool = True):
        #: refuse undocumented members and arguments (the introspection data is the reference
        #: documentation of the API)
        self.require_docs = require_docs
        self._methods: dict[str, Method] = {}
        self._signals: dict[str, Signal] = {}
        self._snake: dict[str, str] = {}
        self._signal_snake: dict[str, str] = {}
        self._listeners: list[BridgeListener] = []
        self._xml: str | None = None

    # ------------------------------------------------------------------ declaring

    @property
    def methods(self) -> MappingProxyType[str, Method]:
        """Declared methods by CamelCase name (read-only)."""
        return MappingProxyType(self._methods)

    @property
    def signals(self) -> MappingProxyType[str, Signal]:
        """Declared signals by CamelCase name (read-only)."""
        return MappingProxyType(self._signals)

    def _check_member(self, kind: str, name: str, doc: str, interface: str, taken: dict):
        if not isinstance(name, str) or not bt.CAMEL_NAME.match(name) or len(name) > 255:
            raise ValueError(f"{kind} name {name!r} must be CamelCase (e.g. ProfileCreate)")
        if name in taken:
            raise ValueError(f"{kind} {name!r} is already declared")
        if interface not in INTERFACES:
            raise ValueError(f"{kind} {name}: interface must be one of {sorted(INTERFACES)}")
        if self.require_docs and not doc.strip():
            raise ValueError(f"{kind} {name}: a doc string is required")

    def _make_args(self, member: str, args: Sequence[tuple[str, str, str]]) -> tuple[Arg, ...]:
        made = []
        seen = set()
        for spec in args:
            try:
                arg_name, signature, arg_doc = spec
            except (TypeError, ValueError):
                raise ValueError(
                    f"{member}: arguments are (name, signature, doc) tuples, got {spec!r}"
                ) from None
            if (
                not isinstance(arg_name, str)
                or not arg_name
                or arg_name[0].isdigit()
                or not set(arg_name) <= _ARG_NAME_CHARS
            ):
                raise ValueError(f"{member}: bad argument name {arg_name!r}")
            if arg_name in seen:
                raise ValueError(f"{member}: argument {arg_name!r} appears twice")
            seen.add(arg_name)
            made.append(self._make_arg(member, arg_name, signature, arg_doc))
        return tuple(made)

    def _make_arg(self, member: str, arg_name: str, signature: str, doc: str) -> Arg:
        try:
            sig_type = bt.parse_single_type(signature)
        except ValueError as e:
            raise ValueError(f"{member}: argument {arg_name!r}: {e}") from None
        doc = _clean_doc(doc or "")
        if self.require_docs and not doc:
            raise ValueError(f"{member}: argument {arg_name!r} needs a doc string")
        return Arg(arg_name, signature, doc, bt.compile_to_wire(sig_type))

    def add_method(
        self,
        name: str,
        handler: Callable,
        args: Sequence[tuple[str, str, str]] = (),
        out: tuple[str, str] | None = None,
        doc: str = "",
        interface: str = "plugin",
    ) -> None:
        """Declare a method.

        :param name: CamelCase D-Bus member name, subject first ("ProfileCreate")
        :param handler: called with the plain arguments, in order; may return a value, a
            Deferred, or be an ``async def`` awaiting Deferreds
        :param args: ``(name, dbus_signature, doc)`` per argument
        :param out: ``(dbus_signature, doc)`` of the return value, None if it returns nothing
        :param doc: what the method does (shown in the introspection data)
        :param interface: "core" or "plugin"
        :raises ValueError: bad name, signature or duplicate declaration
        """
        doc = _clean_doc(doc or "")
        self._check_member("method", name, doc, interface, self._methods)
        if not callable(handler):
            raise ValueError(f"method {name}: handler must be callable")
        snake = bt.camel_to_snake(name)
        if snake in self._snake:
            raise ValueError(
                f"method {name}: its snake_case name {snake!r} clashes with {self._snake[snake]}"
            )
        made_args = self._make_args(name, args)
        out_arg = None
        if out is not None:
            try:
                out_sig, out_doc = out
            except (TypeError, ValueError):
                raise ValueError(f"{name}: out is a (signature, doc) tuple, got {out!r}") from None
            out_arg = self._make_arg(name, "result", out_sig, out_doc)
        in_signature = "".join(a.signature for a in made_args)
        method = Method(
            name=name,
            snake_name=snake,
            handler=handler,
            args=made_args,
            out=out_arg,
            doc=doc,
            interface=interface,
            in_signature=in_signature,
            out_signature=out_arg.signature if out_arg else "",
            unwrap_args="v" in in_signature,
        )
        self._methods[name] = method
        self._snake[snake] = name
        self._changed(method)

    def add_signal(
        self,
        name: str,
        args: Sequence[tuple[str, str, str]] = (),
        doc: str = "",
        interface: str = "plugin",
    ) -> None:
        """Declare a signal: ``args`` are ``(name, dbus_signature, doc)`` tuples."""
        doc = _clean_doc(doc or "")
        self._check_member("signal", name, doc, interface, self._signals)
        snake = bt.camel_to_snake(name)
        if snake in self._signal_snake:
            raise ValueError(
                f"signal {name}: its snake_case name {snake!r} clashes with "
                f"{self._signal_snake[snake]}"
            )
        made_args = self._make_args(name, args)
        signal = Signal(
            name=name,
            snake_name=snake,
            args=made_args,
            doc=doc,
            interface=interface,
            signature="".join(a.signature for a in made_args),
        )
        self._signals[name] = signal
        self._signal_snake[snake] = name
        self._changed(signal)

    def find_method(self, name: str) -> Method | None:
        """The method named ``name`` (CamelCase or snake_case), or None."""
        method = self._methods.get(name)
        if method is None:
            camel = self._snake.get(name)
            if camel is not None:
                method = self._methods[camel]
        return method

    def find_signal(self, name: str) -> Signal | None:
        """The signal named ``name`` (CamelCase or snake_case), or None."""
        signal = self._signals.get(name)
        if signal is None:
            camel = self._signal_snake.get(name)
            if camel is not None:
                signal = self._signals[camel]
        return signal

    # ------------------------------------------------------------------ servers

    def attach(self, listener: BridgeListener) -> None:
        """Register a server/client to receive signals and declaration changes."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def detach(self, listener: BridgeListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _changed(self, member: Method | Signal) -> None:
        self._xml = None
        for listener in list(self._listeners):
            try:
                listener.bridge_changed(member)
            except Exception:
                log.exception("bridge listener %r failed on a new declaration", listener)

    def emit(self, name: str, *args) -> None:
        """Send signal ``name`` to every attached server.

        Raises ValueError for an undeclared signal and InvalidArgument for arguments that do
        not match the declaration (both are backend bugs, better seen at once).
        """
        signal = self._signals.get(name)
        if signal is None:
            raise ValueError(f"signal {name!r} is not declared")
        wire = signal.check_args(args)
        for listener in list(self._listeners):
            try:
                listener.bridge_signal(signal, wire)
            except Exception:
                log.exception("bridge listener %r failed to emit %s", listener, name)

    async def call(self, name: str, *args) -> Any:
        """Call method ``name`` (CamelCase or snake_case) with plain ``args``; return its result.

        This is an asyncio coroutine (it may be awaited from an asyncio task; from Twisted
        code, wrap it with ``sat.tools.async_glue.as_deferred``). Arguments and result go
        through the same conversion as over D-Bus. Raises SatError subclasses only.
        """
        method = self.find_method(name)
        if method is None:
            raise UnknownMethod(f"no bridge method {name!r}")
        wire = method.check_args(args)
        try:
            result = method.run(wire)
            if isinstance(result, defer.Deferred):
                result = await result.asFuture(asyncio.get_running_loop())
            elif inspect.isawaitable(result):
                result = await result
            body = method.result_to_wire(result)
        except Exception as e:
            raise dbus_error_of(e, method.name) from e
        return bt.from_wire(body[0]) if body else None

    # ------------------------------------------------------------------ introspection

    def introspection_xml(self) -> str:
        """Introspection XML of the bridge object, every member and argument documented."""
        if self._xml is None:
            self._xml = self._build_xml()
        return self._xml

    def _build_xml(self) -> str:
        node = ET.Element("node", name=OBJECT_PATH)
        iface = ET.SubElement(node, "interface", name="org.freedesktop.DBus.Introspectable")
        method = ET.SubElement(iface, "method", name="Introspect")
        ET.SubElement(method, "arg", name="xml_data", type="s", direction="out")
        iface = ET.SubElement(node, "interface", name="org.freedesktop.DBus.Peer")
        ET.SubElement(iface, "method", name="Ping")
        method = ET.SubElement(iface, "method", name="GetMachineId")
        ET.SubElement(method, "arg", name="machine_uuid", type="s", direction="out")

        for short, full in INTERFACES.items():
            iface = ET.SubElement(node, "interface", name=full)
            for member in sorted(self._methods.values(), key=lambda m: m.name):
                if member.interface != short:
                    continue
                elt = ET.SubElement(iface, "method", name=member.name)
                for arg in member.args:
                    _doc(
                        ET.SubElement(
                            elt, "arg", name=arg.name, type=arg.signature, direction="in"
                        ),
                        arg.doc,
                    )
                if member.out is not None:
                    _doc(
                        ET.SubElement(
                            elt, "arg", name="result", type=member.out.signature, direction="out"
                        ),
                        member.out.doc,
                    )
                _doc(elt, member.doc)
            for member in sorted(self._signals.values(), key=lambda s: s.name):
                if member.interface != short:
                    continue
                elt = ET.SubElement(iface, "signal", name=member.name)
                for arg in member.args:
                    _doc(ET.SubElement(elt, "arg", name=arg.name, type=arg.signature), arg.doc)
                _doc(elt, member.doc)
            _doc(iface, INTERFACE_DOCS[short])
        ET.indent(node)
        return (
            '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
            + ET.tostring(node, encoding="unicode")
            + "\n"
        )


def _doc(element: ET.Element, doc: str) -> ET.Element:
    if doc:
        for annotation in DOC_ANNOTATIONS:
            ET.SubElement(element, "annotation", name=annotation, value=doc)
    return element
