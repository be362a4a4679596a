"""Exceptions a frontend gets from the bridge, whichever client it uses (D-Bus or in-process).

Every error is a :class:`BridgeError` with ``.name`` (short, e.g. ``"NotFound"``) and
``.message`` (human readable, from the daemon). Known names have their own subclass, so a
frontend writes ``except NotFound:``; an unknown name still gives a BridgeError whose
``.name`` tells what it was. The backend's D-Bus errors are ``org.salutatoi.SAT.Error.<name>``;
a few standard D-Bus errors are mapped too (unknown method, daemon not running, time-out,
access denied).
"""

from __future__ import annotations

__all__ = [
    "BridgeError",
    "Internal",
    "NotFound",
    "UnknownMethod",
    "AlreadyExists",
    "PermissionDenied",
    "InvalidArgument",
    "Timeout",
    "NotConnected",
    "ConfigError",
    "StorageError",
    "PluginError",
    "ConnectionFailed",
    "AuthenticationFailed",
    "HostNotFound",
    "ConnectionRefused",
    "CertificateError",
    "TLSRequired",
    "BridgeUnavailable",
    "error_class",
    "from_error_name",
    "ERROR_PREFIX",
]

ERROR_PREFIX = "org.salutatoi.SAT.Error."


class BridgeError(Exception):
    """An error reported through the bridge."""

    #: short error name; subclasses set it, the base class keeps the one it was given
    name = "Error"

    def __init__(self, message: str = "", name: str | None = None, dbus_name: str | None = None):
        super().__init__(message)
        if name is not None:
            self.name = name
        self.message = message
        #: full D-Bus error name when it came over D-Bus
        self.dbus_name = dbus_name or ERROR_PREFIX + self.name

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name


class Internal(BridgeError):
    """The daemon hit an unexpected error (its log has the details)."""

    name = "Internal"


class NotFound(BridgeError):
    name = "NotFound"


class UnknownMethod(NotFound):
    """The daemon has no such method (maybe the plugin providing it is not loaded)."""

    name = "UnknownMethod"


class AlreadyExists(BridgeError):
    name = "AlreadyExists"


class PermissionDenied(BridgeError):
    name = "PermissionDenied"


class InvalidArgument(BridgeError):
    name = "InvalidArgument"


class Timeout(BridgeError):
    name = "Timeout"


class NotConnected(BridgeError):
    """The profile is not connected to its XMPP server."""

    name = "NotConnected"


class ConfigError(BridgeError):
    name = "ConfigError"


class StorageError(BridgeError):
    name = "StorageError"


class PluginError(BridgeError):
    name = "PluginError"


class ConnectionFailed(BridgeError):
    name = "ConnectionFailed"


class AuthenticationFailed(ConnectionFailed):
    name = "AuthenticationFailed"


class HostNotFound(ConnectionFailed):
    name = "HostNotFound"


class ConnectionRefused(ConnectionFailed):
    name = "ConnectionRefused"


class CertificateError(ConnectionFailed):
    name = "CertificateError"


class TLSRequired(ConnectionFailed):
    name = "TLSRequired"


class BridgeUnavailable(BridgeError):
    """The daemon cannot be reached (not running, bus gone, connection lost)."""

    name = "BridgeUnavailable"


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


_BY_NAME: dict[str, type[BridgeError]] = {c.name: c for c in _all_subclasses(BridgeError)}

# standard D-Bus errors worth a specific class
_FREEDESKTOP = {
    "org.freedesktop.DBus.Error.UnknownMethod": UnknownMethod,
    "org.freedesktop.DBus.Error.UnknownObject": UnknownMethod,
    "org.freedesktop.DBus.Error.UnknownInterface": UnknownMethod,
    "org.freedesktop.DBus.Error.ServiceUnknown": BridgeUnavailable,
    "org.freedesktop.DBus.Error.NameHasNoOwner": BridgeUnavailable,
    "org.freedesktop.DBus.Error.Disconnected": BridgeUnavailable,
    "org.freedesktop.DBus.Error.NoServer": BridgeUnavailable,
    "org.freedesktop.DBus.Error.NoReply": Timeout,
    "org.freedesktop.DBus.Error.Timeout": Timeout,
    "org.freedesktop.DBus.Error.TimedOut": Timeout,
    "org.freedesktop.DBus.Error.AccessDenied": PermissionDenied,
    "org.freedesktop.DBus.Error.AuthFailed": PermissionDenied,
    "org.freedesktop.DBus.Error.InvalidArgs": InvalidArgument,
    "org.freedesktop.DBus.Error.InvalidSignature": InvalidArgument,
}


def error_class(name: str) -> type[BridgeError]:
    """The class for short error ``name`` (BridgeError itself when unknown)."""
    return _BY_NAME.get(name, BridgeError)


def from_error_name(error_name: str, message: str = "") -> BridgeError:
    """Build the exception for a full D-Bus error name (or a short backend name)."""
    if error_name.startswith(ERROR_PREFIX):
        short = error_name[len(ERROR_PREFIX) :]
        return error_class(short)(message, short, error_name)
    cls = _FREEDESKTOP.get(error_name)
    if cls is not None:
        return cls(message, cls.name, error_name)
    if "." not in error_name:
        return error_class(error_name)(message, error_name)
    return BridgeError(message, error_name.rsplit(".", 1)[-1], error_name)
