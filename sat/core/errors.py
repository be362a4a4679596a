"""Exceptions shared by the whole backend.

Every error a caller may see derives from :class:`SatError`. Each class has a
``dbus_name`` suffix so the bridge can turn it into a named D-Bus error
(``org.salutatoi.SAT.Error.<name>``) carrying the human message; anything
else that escapes to the bridge becomes ``Internal``.
"""


class SatError(Exception):
    """Base of all expected backend errors."""

    dbus_name = "Internal"

    def __init__(self, message: str = "", **details):
        super().__init__(message or self.__class__.__doc__.strip().splitlines()[0])
        self.details = details

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InternalError(SatError):
    """An unexpected internal error."""

    dbus_name = "Internal"


class NotFound(SatError):
    """The requested item does not exist."""

    dbus_name = "NotFound"


class AlreadyExists(SatError):
    """The item already exists."""

    dbus_name = "AlreadyExists"


class PermissionDenied(SatError):
    """The operation is not allowed."""

    dbus_name = "PermissionDenied"


class InvalidArgument(SatError):
    """An argument has a wrong type or value."""

    dbus_name = "InvalidArgument"


class Timeout(SatError):
    """The operation took too long."""

    dbus_name = "Timeout"


class NotConnected(SatError):
    """The profile is not connected."""

    dbus_name = "NotConnected"


class ConfigError(SatError):
    """A configuration value is invalid."""

    dbus_name = "ConfigError"


class StorageError(SatError):
    """The storage failed (disk full, corruption, ...)."""

    dbus_name = "StorageError"


class PluginError(SatError):
    """A plugin failed to load or is missing."""

    dbus_name = "PluginError"


# --- connection failures: each has its own name so a user sees what went wrong


class ConnectionFailed(SatError):
    """The connection to the XMPP server failed."""

    dbus_name = "ConnectionFailed"


class AuthenticationFailed(ConnectionFailed):
    """The server refused the credentials (wrong JID or password)."""

    dbus_name = "AuthenticationFailed"


class HostNotFound(ConnectionFailed):
    """The XMPP server's host name could not be resolved."""

    dbus_name = "HostNotFound"


class ConnectionRefused(ConnectionFailed):
    """Nothing listens on the server's port (connection refused or unreachable)."""

    dbus_name = "ConnectionRefused"


class CertificateError(ConnectionFailed):
    """The server's TLS certificate could not be verified."""

    dbus_name = "CertificateError"


class TLSRequired(ConnectionFailed):
    """The server does not offer TLS, which this profile requires."""

    dbus_name = "TLSRequired"
