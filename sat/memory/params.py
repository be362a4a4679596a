"""Typed, documented parameters (settings) stored per profile or globally.

Config (``sat.conf``) is for the administrator; *parameters* are what a user
changes from a frontend (``ParamGet``/``ParamSet`` on the bridge): the account
JID, connection overrides, plugin preferences. Each parameter is declared once
here or by a plugin with :meth:`Params.declare`, with a type, a default and a
doc string; values are validated on the way in and typed on the way out.

Parameters of type ``password`` are secrets: they are encrypted with the
profile's personal key (see :mod:`sat.memory.crypto`) and no getter returns
them (``ParamGet`` answers with an empty string).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.words.protocols.jabber import jid as jabber_jid

from sat.core import errors

TYPES = ("string", "int", "bool", "jid", "password", "choice")
#: what :meth:`Params.peek` returns for a setting not yet read from the database
UNKNOWN = object()


@dataclass(frozen=True)
class ParamDef:
    category: str
    name: str
    type: str
    default: object
    doc: str
    #: "profile": one value per profile; "general": one value for the daemon
    scope: str = "profile"
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None

    @property
    def secret(self) -> bool:
        return self.type == "password"

    def as_dict(self) -> dict:
        d = {
            "category": self.category,
            "name": self.name,
            "type": self.type,
            "default": "" if self.secret else self.encode(self.default),
            "doc": self.doc,
            "scope": self.scope,
        }
        if self.choices:
            d["choices"] = list(self.choices)
        return d

    def parse(self, raw: str):
        """Typed value from its stored text form; raises InvalidArgument."""
        t = self.type
        if t == "int":
            try:
                value = int(raw)
            except (TypeError, ValueError):
                raise errors.InvalidArgument(
                    f"parameter {self.category}/{self.name}: expected an integer, got {raw!r}"
                ) from None
            if self.minimum is not None and value < self.minimum:
                raise errors.InvalidArgument(
                    f"parameter {self.category}/{self.name}: must be ≥ {self.minimum}"
                )
            if self.maximum is not None and value > self.maximum:
                raise errors.InvalidArgument(
                    f"parameter {self.category}/{self.name}: must be ≤ {self.maximum}"
                )
            return value
        if t == "bool":
            low = str(raw).strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise errors.InvalidArgument(
                f"parameter {self.category}/{self.name}: expected true or false, got {raw!r}"
            )
        if t == "jid":
            raw = str(raw).strip()
            if not raw:
                return ""
            try:
                parsed = jabber_jid.JID(raw)
            except Exception:
                raise errors.InvalidArgument(
                    f"parameter {self.category}/{self.name}: {raw!r} is not a valid JID"
                ) from None
            return parsed.full()
        if t == "choice":
            if raw not in self.choices:
                raise errors.InvalidArgument(
                    f"parameter {self.category}/{self.name}: expected one of "
                    f"{', '.join(self.choices)}, got {raw!r}"
                )
            return raw
        return str(raw)

    def encode(self, value) -> str:
        if self.type == "bool":
            return "true" if value else "false"
        return "" if value is None else str(value)


class Params:
    """Registry of parameter definitions plus typed access to stored values."""

    def __init__(self, storage, profiles=None):
        self.storage = storage
        self.profiles = profiles
        self._defs: dict[tuple[str, str], ParamDef] = {}
        for d in CORE_PARAMS:
            self.declare(d)

    def declare(self, definition: ParamDef) -> None:
        key = (definition.category, definition.name)
        existing = self._defs.get(key)
        if existing is not None and existing != definition:
            raise errors.InvalidArgument(f"parameter {key[0]}/{key[1]} declared twice")
        if definition.type not in TYPES:
            raise errors.InvalidArgument(f"unknown parameter type {definition.type!r}")
        self._defs[key] = definition

    def definition(self, category: str, name: str) -> ParamDef:
        try:
            return self._defs[(category, name)]
        except KeyError:
            raise errors.NotFound(f"no parameter {category}/{name}") from None

    def definitions(self) -> list[ParamDef]:
        return sorted(self._defs.values(), key=lambda d: (d.category, d.name))

    def _profile_for(self, definition: ParamDef, profile: str | None) -> str | None:
        if definition.scope == "general":
            return None
        if not profile:
            raise errors.InvalidArgument(
                f"parameter {definition.category}/{definition.name} belongs to a profile"
            )
        return profile

    async def get(self, category: str, name: str, profile: str | None = None):
        """Typed value (the default when unset). Secrets are never returned here."""
        definition = self.definition(category, name)
        if definition.secret:
            raise errors.PermissionDenied(
                f"parameter {category}/{name} is a secret and cannot be read"
            )
        owner = self._profile_for(definition, profile)
        raw = await self.storage.param_get(category, name, owner)
        if raw is None:
            return definition.default
        return definition.parse(raw)

    def peek(self, category: str, name: str, profile: str | None = None):
        """Typed value if known without reading the database, else :data:`UNKNOWN`.

        For hooks run on every message: they take this synchronous path and fall back to
        :meth:`get` only the first time (the storage keeps read settings in memory).
        """
        definition = self.definition(category, name)
        if definition.secret:
            raise errors.PermissionDenied(
                f"parameter {category}/{name} is a secret and cannot be read"
            )
        owner = self._profile_for(definition, profile)
        cached = getattr(self.storage, "param_cached", None)
        if cached is None:
            return UNKNOWN
        found, raw = cached(category, name, owner)
        if not found:
            return UNKNOWN
        return definition.default if raw is None else definition.parse(raw)

    async def set(self, category: str, name: str, value, profile: str | None = None) -> None:
        definition = self.definition(category, name)
        owner = self._profile_for(definition, profile)
        text = value if isinstance(value, str) else definition.encode(value)
        if definition.secret:
            if self.profiles is None:
                raise errors.InternalError("no profile manager to store secrets")
            await self.profiles.set_secret(owner, f"param:{category}/{name}", text)
            return
        typed = definition.parse(text)
        await self.storage.param_set(category, name, definition.encode(typed), owner)

    async def get_secret(self, category: str, name: str, profile: str) -> str:
        """Decrypted secret value, for the daemon's own use only (never over the bridge)."""
        definition = self.definition(category, name)
        if not definition.secret:
            raise errors.InvalidArgument(f"parameter {category}/{name} is not a secret")
        return await self.profiles.get_secret(profile, f"param:{category}/{name}")


CORE_PARAMS = (
    ParamDef("connection", "jid", "jid", "", "XMPP account address (user@domain) of the profile"),
    ParamDef("connection", "password", "password", "", "XMPP account password (stored encrypted)"),
    ParamDef(
        "connection",
        "host",
        "string",
        "",
        "Server host to connect to; empty: the JID's domain (advanced, e.g. for tests or "
        "a server without DNS records)",
    ),
    ParamDef(
        "connection",
        "port",
        "int",
        0,
        "Server port; 0: 5222, or 5223 with direct TLS",
        "profile",
        minimum=0,
        maximum=65535,
    ),
    ParamDef(
        "connection",
        "direct_tls",
        "bool",
        False,
        "Connect with TLS from the first byte (XEP-0368) instead of STARTTLS",
    ),
    ParamDef(
        "connection",
        "autoconnect",
        "bool",
        False,
        "Connect this profile when the daemon starts (only for profiles without a profile "
        "password, whose secrets can be opened unattended)",
    ),
    ParamDef("connection", "resource", "string", "", "XMPP resource; empty: the config default"),
)
