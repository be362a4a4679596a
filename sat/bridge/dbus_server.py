"""The bridge served over D-Bus (dbus-fast, on the asyncio loop shared with Twisted).

Why a low-level message handler rather than dbus-fast's ``ServiceInterface`` classes: the
API is only known at run time (plugins declare methods after start-up), and dbus-fast
builds its dispatch and introspection from decorated methods with annotated signatures at
class-creation time. Generating classes on the fly would need ``exec``-like tricks and
would still leave the docs out of its introspection XML, the error naming to patch and
Deferreds unsupported. One ``bus.add_message_handler`` callback instead looks the member up
in the contract, checks the signature, runs the handler and replies — synchronously when
the handler returned a plain value (no task, no future: as cheap as the decorated path),
from a Deferred callback when it is slow. Introspection XML comes from the contract, so
docs (``org.freedesktop.DBus.DocString`` and ``org.gtk.GDBus.DocString`` annotations) are
served to busctl, gdbus or D-Feet and to our own client.

Replies:

- a SatError -> ``org.salutatoi.SAT.Error.<dbus_name>`` carrying its message;
- any other exception -> ``org.salutatoi.SAT.Error.Internal`` (logged with traceback);
- a call whose signature differs from the declaration ->
  ``org.salutatoi.SAT.Error.InvalidArgument`` naming what was expected;
- an undeclared member -> ``org.freedesktop.DBus.Error.UnknownMethod``.

Usage (from asyncio code; from Twisted code wrap it with
``sat.tools.async_glue.as_deferred``)::

    server = await start(bridge, bus="session")   # or "system", or a D-Bus address
    ...
    await server.stop()
"""

from __future__ import annotations

import array
import logging
import socket
from typing import Any

from dbus_fast import BusType, Message, MessageType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.aio.message_bus import _MessageWriter
from dbus_fast.constants import ErrorType, MessageFlag
from twisted.internet import defer
from twisted.python.failure import Failure

from sat.bridge.contract import (
    BUS_NAME,
    ERROR_PREFIX,
    INTERFACES,
    OBJECT_PATH,
    Bridge,
    Method,
    Signal,
    dbus_error_of,
)
from sat.core import errors

__all__ = ["DBusServer", "start", "BusNameTaken"]

log = logging.getLogger(__name__)

_METHOD_CALL = MessageType.METHOD_CALL
_METHOD_RETURN = MessageType.METHOD_RETURN
_NO_REPLY = MessageFlag.NO_REPLY_EXPECTED.value
_INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
_PEER = "org.freedesktop.DBus.Peer"
_OUR_INTERFACES = frozenset(INTERFACES.values())
_INVALID_ARGUMENT = ERROR_PREFIX + errors.InvalidArgument.dbus_name
_INTERNAL = ERROR_PREFIX + errors.InternalError.dbus_name
_DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)


class BusNameTaken(errors.AlreadyExists):
    """Another process already owns the daemon's bus name (is a daemon already running?)."""


def _parent_nodes(path: str) -> dict[str, str]:
    """{"/": "org", "/org": "salutatoi", ...}: the child each ancestor of ``path`` shows."""
    parts = path.strip("/").split("/")
    return {"/" + "/".join(parts[:i]): parts[i] for i in range(len(parts))}


def _ignore_result(future) -> None:
    if not future.cancelled():
        future.exception()


def _error_name(error: errors.SatError) -> str:
    name = getattr(error, "dbus_name", "") or "Internal"
    return ERROR_PREFIX + name


class DBusServer:
    """Serve one :class:`~sat.bridge.contract.Bridge` on a D-Bus connection."""

    def __init__(self, bridge: Bridge, bus: str = "session", bus_name: str = BUS_NAME):
        self.bridge = bridge
        self.bus_spec = bus
        self.bus_name = bus_name
        self.bus: MessageBus | None = None
        self._parents = _parent_nodes(OBJECT_PATH)
        self._pending: set[defer.Deferred] = set()

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> DBusServer:
        """Connect, install the dispatcher and own the bus name.

        :raises BusNameTaken: another process owns the name
        """
        if self.bus_spec == "session":
            bus = MessageBus(bus_type=BusType.SESSION)
        elif self.bus_spec == "system":
            bus = MessageBus(bus_type=BusType.SYSTEM)
        else:
            bus = MessageBus(bus_address=self.bus_spec)
        await bus.connect()
        _make_writer_patient(bus)
        bus.add_message_handler(self._on_message)
        self.bus = bus
        self.bridge.attach(self)
        try:
            reply = await bus.request_name(self.bus_name, NameFlag.DO_NOT_QUEUE)
        except Exception:
            await self.stop()
            raise
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            await self.stop()
            raise BusNameTaken(f"{self.bus_name} is already owned on this bus ({reply.name})")
        log.info("bridge serving %s on %s as %s", self.bus_name, self.bus_spec, bus.unique_name)
        return self

    async def stop(self) -> None:
        """Leave the bus; calls still in progress get no reply."""
        self.bridge.detach(self)
        bus, self.bus = self.bus, None
        if bus is None:
            return
        bus.remove_message_handler(self._on_message)
        bus.disconnect()
        try:
            await bus.wait_for_disconnect()
        except Exception:  # the bus may already be gone: nothing left to clean up
            pass

    async def wait_for_disconnect(self) -> None:
        """Return when the bus connection is lost (dbus-daemon gone) or :meth:`stop` ran."""
        if self.bus is not None:
            try:
                await self.bus.wait_for_disconnect()
            except Exception as e:
                log.warning("bridge: D-Bus connection lost: %s", e)

    @property
    def unique_name(self) -> str | None:
        return self.bus.unique_name if self.bus else None

    @property
    def connected(self) -> bool:
        return self.bus is not None and self.bus.connected

    # ------------------------------------------------------------------ contract events

    def bridge_changed(self, member: Method | Signal) -> None:
        # the contract rebuilds its XML lazily: nothing to cache here
        log.debug("bridge: %s declared while serving", member.name)

    def bridge_signal(self, signal: Signal, wire_args: list) -> None:
        bus = self.bus
        if bus is None or not bus.connected:
            return
        self._consume(
            bus.send(
                Message(
                    message_type=MessageType.SIGNAL,
                    path=OBJECT_PATH,
                    interface=signal.interface_name,
                    member=signal.name,
                    signature=signal.signature,
                    body=wire_args,
                )
            )
        )

    @staticmethod
    def _consume(future) -> None:
        # bus.send returns a future failing only when the connection breaks: the loss is
        # reported by wait_for_disconnect, no need for "exception never retrieved" noise
        future.add_done_callback(_ignore_result)

    # ------------------------------------------------------------------ dispatch

    def _on_message(self, msg: Message) -> Any:
        """dbus-fast message handler: return True when the call is handled here."""
        if msg.message_type is not _METHOD_CALL:
            return None
        if msg.path != OBJECT_PATH:
            child = self._parents.get(msg.path)
            if (
                child is not None
                and msg.interface in (None, _INTROSPECTABLE)
                and (msg.member == "Introspect")
            ):
                xml = f'{_DOCTYPE}<node>\n  <node name="{child}"/>\n</node>\n'
                self._send(msg, Message.new_method_return(msg, "s", [xml]))
                return True
            return None
        interface = msg.interface
        if interface is not None and interface not in _OUR_INTERFACES:
            if interface == _INTROSPECTABLE and msg.member == "Introspect":
                if msg.signature:
                    return self._reply_error(msg, _INVALID_ARGUMENT, "Introspect takes no argument")
                xml = self.bridge.introspection_xml()
                self._send(msg, Message.new_method_return(msg, "s", [xml]))
                return True
            # Peer (Ping, GetMachineId) is answered by dbus-fast itself
            return None
        method = self.bridge._methods.get(msg.member)
        if method is None and interface is None and not msg.signature:
            # standard members called without their interface (allowed by the spec)
            if msg.member == "Introspect":
                xml = self.bridge.introspection_xml()
                self._send(msg, Message.new_method_return(msg, "s", [xml]))
                return True
            if msg.member == "Ping":
                self._send(msg, Message.new_method_return(msg))
                return True
        if method is None or (interface is not None and method.interface_name != interface):
            return self._reply_error(
                msg,
                ErrorType.UNKNOWN_METHOD.value,
                f"no method {msg.member!r} on {interface or 'the bridge object'}",
            )
        if msg.signature != method.in_signature:
            args = ", ".join(f"{a.name}: {a.signature}" for a in method.args) or "none"
            return self._reply_error(
                msg,
                _INVALID_ARGUMENT,
                f"{method.name} expects signature {method.in_signature!r} ({args}), "
                f"got {msg.signature!r}",
            )
        try:
            result = method.run(msg.body)
        except Exception as e:
            return self._reply_exception(e, msg, method)
        if isinstance(result, defer.Deferred):
            self._pending.add(result)
            result.addCallbacks(
                self._reply_result,
                self._reply_exception,
                callbackArgs=(msg, method),
                errbackArgs=(msg, method),
            )
            result.addBoth(self._forget, result)
            return True
        self._reply_result(result, msg, method)
        return True

    def _forget(self, _, d: defer.Deferred) -> None:
        self._pending.discard(d)

    def _reply_result(self, result: Any, msg: Message, method: Method) -> None:
        if msg.flags.value & _NO_REPLY:
            return
        try:
            body = method.result_to_wire(result)
        except Exception as e:
            self._reply_exception(e, msg, method)
            return
        reply = Message(
            message_type=_METHOD_RETURN,
            reply_serial=msg.serial,
            destination=msg.sender,
            signature=method.out_signature,
            body=body,
        )
        try:
            self._send(msg, reply)
        except Exception as e:  # the body did not marshal: a bug in the handler's result
            self._reply_exception(e, msg, method)

    def _reply_exception(self, exc: BaseException | Failure, msg: Message, method: Method) -> bool:
        error = dbus_error_of(exc, method.name)
        return self._reply_error(msg, _error_name(error), error.message)

    def _reply_error(self, msg: Message, name: str, text: str) -> bool:
        if not msg.flags.value & _NO_REPLY:
            self._send(msg, Message.new_error(msg, name, text))
        return True

    def _send(self, msg: Message, reply: Message) -> None:
        bus = self.bus
        if bus is None or not bus.connected:
            return
        try:
            self._consume(bus.send(reply))
        except Exception:
            if reply.message_type is MessageType.ERROR:
                log.exception("could not send error reply to %s", msg.member)
                return
            raise


async def start(bridge: Bridge, bus: str = "session", bus_name: str = BUS_NAME) -> DBusServer:
    """Serve ``bridge`` on ``bus``: "session", "system" or a D-Bus address.

    The bus comes from the configuration (``[bridge] bus`` / ``bus_address``, which the
    environment can override as ``SAT_BRIDGE_BUS`` / ``SAT_BRIDGE_BUS_ADDRESS``).
    """
    return await DBusServer(bridge, bus, bus_name).start()


class _PatientWriter(_MessageWriter):
    """dbus-fast's writer, patient with a full socket and writing bursts in one go.

    * dbus-fast 5.2 treats ``BlockingIOError`` (EAGAIN: the socket buffer is full, which
      happens when the daemon emits a burst of signals faster than dbus-daemon reads them)
      as a fatal error and drops the whole bus connection: the daemon would stay up but
      deaf and mute. Here the unsent rest stays queued and writing resumes when the socket
      is writable again.
    * dbus-fast writes each message with its own ``send`` system call as soon as it is
      queued. Here messages queued during one turn of the event loop (a flood of incoming
      messages gives one ``MessageNew`` each) are written together at the end of the turn,
      in as few calls as the socket allows: the same bytes, in the same order.
    """

    #: most bytes joined into one write
    max_chunk = 256 * 1024
    _flush_scheduled = False
    _pending: list | None = None

    def schedule_write(self, msg=None, future=None) -> None:
        if not self.bus.unique_name:
            # still connecting (before Hello's answer): dbus-fast's own handling
            super().schedule_write(msg, future)
            return
        if msg is not None:
            self.buffer_message(msg, future)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.buf is not None:
            return  # waiting for the socket: the registered writer drains the queue
        self.write_callback(remove_writer=False)
        if self.buf is not None:
            self.loop.add_writer(self.fd, self.write_callback)

    def _next_buffer(self) -> bool:
        """Take the next queued bytes (several messages joined when no fd rides along)."""
        messages = self.messages
        if not messages:
            return False
        data, fds, fut = messages.popleft()
        futures = [fut]
        if not fds and messages and not messages[0][1]:
            parts = [data]
            size = len(data)
            while messages and not messages[0][1] and size < self.max_chunk:
                more, _fds, more_fut = messages.popleft()
                parts.append(more)
                size += len(more)
                futures.append(more_fut)
            data = b"".join(parts)
        self.buf, self.unix_fds, self.offset = memoryview(data), fds, 0
        self.fut = futures[-1]
        self._pending = futures
        return True

    def _done_buffer(self) -> None:
        self.buf = None
        for fut in self._pending or ():
            if fut is not None and not fut.done():
                fut.set_result(None)
        self._pending = None

    def write_callback(self, remove_writer: bool = True) -> None:
        try:
            while True:
                if self.buf is None and not self._next_buffer():
                    if remove_writer:
                        self.loop.remove_writer(self.fd)
                    return
                chunk = self.buf[self.offset :]
                if self.unix_fds and self.negotiate_unix_fd:
                    rights = [
                        (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", self.unix_fds))
                    ]
                    self.offset += self.sock.sendmsg([chunk], rights)
                    self.unix_fds = None
                else:
                    self.offset += self.sock.send(chunk)
                if self.offset < len(self.buf):
                    self.loop.add_writer(self.fd, self.write_callback)
                    return
                self._done_buffer()
        except BlockingIOError:
            self.loop.add_writer(self.fd, self.write_callback)
        except Exception as e:
            for fut in self._pending or (self.fut,):
                if fut is not None and not fut.done():
                    if self.bus._user_disconnect:
                        fut.set_result(None)
                    else:
                        fut.set_exception(e)
            self.bus._finalize(e)


def _make_writer_patient(bus: MessageBus) -> None:
    writer = getattr(bus, "_writer", None)
    if type(writer) is _MessageWriter:
        writer.__class__ = _PatientWriter
