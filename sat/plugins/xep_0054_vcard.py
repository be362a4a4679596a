"""XEP-0054: vcard-temp.

``VCardGet(profile, jid) -> a{sv}`` gives an entity's vCard as a flat record:

- text fields: ``FN``, ``NICKNAME``, ``FAMILY``, ``GIVEN``, ``MIDDLE``, ``PREFIX``, ``SUFFIX``
  (the parts of ``N``), ``BDAY``, ``URL``, ``NOTE``, ``DESC``, ``TITLE``, ``ROLE``, ``ORG``
  (``ORG/ORGNAME``), ``JABBERID``;
- lists of strings: ``EMAIL`` (``USERID`` of each ``EMAIL``), ``TEL`` (``NUMBER`` of each ``TEL``);
- the photo, when there is one: ``PHOTO_TYPE``, ``PHOTO_HASH`` (SHA-1 of the image, hex) or
  ``PHOTO_URL`` (``EXTVAL``). The image itself goes through the avatar cache (``AvatarGet``).

Answers are cached in storage (``kv`` namespace ``vcard``) for ``[xep_0054] cache_ttl``
seconds; the cache is also what ``VCardGet`` gives while the profile is offline, and it is
dropped when a contact announces a new photo (XEP-0153).

``VCardSet(profile, fields)`` changes our own vCard: the current one is fetched, the given
fields replaced (an empty string or list removes them) and everything else (photo,
addresses, unknown elements) kept, so setting a nickname never erases the avatar.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from sat.core import (
    errors,
    wokkel_compat,  # noqa: F401  (sat/__init__ loads it before wokkel)
)
from sat.core.plugin import Plugin
from sat.memory.config import register_option, register_section

log = logging.getLogger(__name__)

NS_VCARD = "vcard-temp"
KV_NAMESPACE = "vcard"
DEFAULT_TTL = 86400
#: text fields: record key -> element name (direct child of <vCard/>)
TEXT_FIELDS = {
    "FN": "FN",
    "NICKNAME": "NICKNAME",
    "BDAY": "BDAY",
    "URL": "URL",
    "NOTE": "NOTE",
    "DESC": "DESC",
    "TITLE": "TITLE",
    "ROLE": "ROLE",
    "JABBERID": "JABBERID",
}
N_PARTS = ("FAMILY", "GIVEN", "MIDDLE", "PREFIX", "SUFFIX")
LIST_FIELDS = {"EMAIL": "USERID", "TEL": "NUMBER"}
SETTABLE = set(TEXT_FIELDS) | set(N_PARTS) | set(LIST_FIELDS) | {"ORG"}
MAX_FIELD_LENGTH = 10_000
MAX_LIST_ITEMS = 20
#: the photo of a vCard bigger than this (decoded) is ignored
MAX_PHOTO_BYTES = 1_048_576

register_section("xep_0054", "vCards (XEP-0054 vcard-temp).")
register_option(
    "xep_0054",
    "cache_ttl",
    "int",
    DEFAULT_TTL,
    "Seconds a contact's vCard is served from the cache before being asked again.",
    min=0,
)


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_FIELD_LENGTH else text[:MAX_FIELD_LENGTH]


def _child(elt: domish.Element, name: str) -> domish.Element | None:
    return next((c for c in elt.elements() if c.name == name), None)


def photo_of(vcard: domish.Element | None) -> tuple[str, str, str] | None:
    """(type, base64 text, external URL) of a vCard's PHOTO, or None."""
    if vcard is None:
        return None
    photo = _child(vcard, "PHOTO")
    if photo is None:
        return None
    type_elt, binval, extval = (
        _child(photo, "TYPE"),
        _child(photo, "BINVAL"),
        _child(photo, "EXTVAL"),
    )
    return (
        str(type_elt).strip() if type_elt is not None else "",
        "".join(str(binval).split()) if binval is not None else "",
        str(extval).strip() if extval is not None else "",
    )


def decode_photo(b64_text: str, max_bytes: int = MAX_PHOTO_BYTES) -> bytes | None:
    """Decode a BINVAL; None when invalid or bigger than ``max_bytes``."""
    if not b64_text or len(b64_text) > (max_bytes * 4) // 3 + 8:
        return None
    try:
        data = base64.b64decode(b64_text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if len(data) <= max_bytes else None


def parse_vcard(vcard: domish.Element | None) -> dict:
    """The flat record of a ``<vCard/>`` element (see the module documentation)."""
    fields: dict = {}
    if vcard is None:
        return fields
    for child in vcard.elements():
        name = child.name
        if name in TEXT_FIELDS.values():
            text = _clip(str(child))
            if text and name not in fields:
                fields[name] = text
        elif name == "N":
            for part in N_PARTS:
                sub = _child(child, part)
                if sub is not None and _clip(str(sub)) and part not in fields:
                    fields[part] = _clip(str(sub))
        elif name == "ORG":
            sub = _child(child, "ORGNAME")
            if sub is not None and _clip(str(sub)) and "ORG" not in fields:
                fields["ORG"] = _clip(str(sub))
        elif name in LIST_FIELDS:
            sub = _child(child, LIST_FIELDS[name])
            values = fields.setdefault(name, [])
            if sub is not None and _clip(str(sub)) and len(values) < MAX_LIST_ITEMS:
                values.append(_clip(str(sub)))
    for key in LIST_FIELDS:
        if key in fields and not fields[key]:
            del fields[key]
    photo = photo_of(vcard)
    if photo is not None:
        ptype, b64, url = photo
        if ptype:
            fields["PHOTO_TYPE"] = ptype[:100]
        data = decode_photo(b64)
        if data is not None:
            fields["PHOTO_HASH"] = hashlib.sha1(data).hexdigest()
        elif url:
            fields["PHOTO_URL"] = url[:MAX_FIELD_LENGTH]
    return fields


def check_fields(fields: dict) -> dict:
    """Validate what a frontend gives to VCardSet; InvalidArgument naming the faulty key."""
    if not isinstance(fields, dict):
        raise errors.InvalidArgument("vCard fields must be a record")
    clean = {}
    for key, value in fields.items():
        if key not in SETTABLE:
            raise errors.InvalidArgument(
                f"unknown or read-only vCard field {key!r} (settable: {', '.join(sorted(SETTABLE))})"
            )
        if key in LIST_FIELDS:
            if isinstance(value, str):
                value = [value] if value else []
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise errors.InvalidArgument(f"vCard field {key} must be a list of strings")
            if len(value) > MAX_LIST_ITEMS:
                raise errors.InvalidArgument(
                    f"vCard field {key}: more than {MAX_LIST_ITEMS} values"
                )
            value = [v.strip() for v in value if v.strip()]
            if any(len(v) > MAX_FIELD_LENGTH for v in value):
                raise errors.InvalidArgument(f"vCard field {key} too long")
        else:
            if not isinstance(value, str):
                raise errors.InvalidArgument(f"vCard field {key} must be a string")
            value = value.strip()
            if len(value) > MAX_FIELD_LENGTH:
                raise errors.InvalidArgument(f"vCard field {key} too long")
        clean[key] = value
    return clean


def update_vcard(current: domish.Element | None, fields: dict) -> domish.Element:
    """A new ``<vCard/>``: ``current`` with ``fields`` (already checked) replaced."""
    new = domish.Element((NS_VCARD, "vCard"))
    replaced_names = {TEXT_FIELDS[k] for k in fields if k in TEXT_FIELDS}
    replaced_names |= {k for k in fields if k in LIST_FIELDS}
    if "ORG" in fields:
        replaced_names.add("ORG")
    n_parts = {k: v for k, v in fields.items() if k in N_PARTS}
    old_n = None
    for child in current.elements() if current is not None else ():
        if child.name in replaced_names:
            continue
        if child.name == "N":
            old_n = child
            continue
        new.addChild(child)
    # N: keep the parts not given
    if old_n is not None or any(n_parts.values()):
        parts = {}
        if old_n is not None:
            for part in N_PARTS:
                sub = _child(old_n, part)
                if sub is not None and str(sub).strip():
                    parts[part] = str(sub).strip()
        parts.update(n_parts)
        if any(parts.values()):
            n_elt = new.addElement("N")
            for part in N_PARTS:
                if parts.get(part):
                    n_elt.addElement(part, content=parts[part])
    for key, value in fields.items():
        if key in TEXT_FIELDS and value:
            new.addElement(TEXT_FIELDS[key], content=value)
        elif key == "ORG" and value:
            new.addElement("ORG").addElement("ORGNAME", content=value)
        elif key == "EMAIL":
            for address in value:
                email = new.addElement("EMAIL")
                email.addElement("INTERNET")
                email.addElement("USERID", content=address)
        elif key == "TEL":
            for number in value:
                new.addElement("TEL").addElement("NUMBER", content=number)
    return new


class VCardPlugin(Plugin):
    name = "XEP-0054"
    label = "vcard-temp"
    xeps = ("XEP-0054",)
    dependencies = ("XEP-0030",)
    description = "Gets and sets vCards (vcard-temp), cached in storage."

    def __init__(self, host):
        super().__init__(host)
        try:
            self.cache_ttl = float(self.config("xep_0054", "cache_ttl", DEFAULT_TTL))
        except (TypeError, ValueError):
            self.cache_ttl = DEFAULT_TTL
        self._register_bridge()

    @property
    def _disco(self):
        return self.host.plugins["XEP-0030"]

    # --- protocol ---------------------------------------------------------------------

    def _target(self, client, jid) -> jabber_jid.JID | None:
        """None for our own account (no 'to'), else the entity (bare unless a full JID)."""
        if jid is None or jid == "":
            return None
        try:
            entity = jid if isinstance(jid, jabber_jid.JID) else jabber_jid.JID(str(jid))
        except jabber_jid.InvalidFormat:
            raise errors.InvalidArgument(f"invalid JID {jid!r}") from None
        if entity.userhost() == client.jid.userhost() and entity.resource is None:
            return None
        return entity

    async def get_vcard_element(self, client, jid=None) -> domish.Element | None:
        """Ask for the ``<vCard/>`` of ``jid`` (None: ours); None when there is none."""
        target = self._target(client, jid)
        try:
            iq = await self._disco.send_iq(
                client,
                target if target is not None else client.jid.userhost(),
                domish.Element((NS_VCARD, "vCard")),
                what="vCard request",
            )
        except errors.SatError as e:
            if e.details.get("condition") in ("item-not-found", "service-unavailable"):
                return None
            raise
        return next(iq.elements(NS_VCARD, "vCard"), None)

    async def set_vcard_element(self, client, vcard: domish.Element) -> None:
        await self._disco.send_iq(
            client, client.jid.userhost(), vcard, what="vCard update", iq_type="set"
        )

    # --- cache --------------------------------------------------------------------------

    @staticmethod
    def _key(client, jid) -> str:
        if not jid:
            return client.jid.userhost()
        entity = jabber_jid.JID(str(jid))
        return entity.full() if entity.resource else entity.userhost()

    async def _cache_get(self, profile: str, key: str) -> dict | None:
        try:
            value = await self.host.storage.kv_get(KV_NAMESPACE, key, None, profile)
        except Exception as e:
            log.warning("[%s] cannot read the vCard cache: %s", profile, e)
            return None
        return value if isinstance(value, dict) and isinstance(value.get("fields"), dict) else None

    async def _cache_set(self, profile: str, key: str, fields: dict) -> None:
        if "/" in key:
            return  # occupants of rooms: not worth keeping
        try:
            await self.host.storage.kv_set(
                KV_NAMESPACE, key, {"fields": fields, "timestamp": time.time()}, profile
            )
        except Exception as e:
            log.warning("[%s] cannot store the vCard of %s: %s", profile, key, e)

    async def invalidate(self, client, jid) -> None:
        """Mark the cached vCard of ``jid`` stale (its photo changed, say).

        It is asked again at the next ``get`` while connected; offline, the stale copy is
        still what we have.
        """
        key = self._key(client, jid)
        cached = await self._cache_get(client.profile, key)
        if cached is None or not cached.get("timestamp"):
            return
        try:
            await self.host.storage.kv_set(
                KV_NAMESPACE, key, {"fields": cached["fields"], "timestamp": 0}, client.profile
            )
        except Exception as e:
            log.debug("[%s] cannot mark the vCard of %s stale: %s", client.profile, key, e)

    async def get(self, client, jid=None, use_cache: bool = True) -> dict:
        """The vCard record of ``jid`` (None: ours), from the cache when fresh enough."""
        try:
            key = self._key(client, jid)
        except jabber_jid.InvalidFormat:
            raise errors.InvalidArgument(f"invalid JID {jid!r}") from None
        cached = await self._cache_get(client.profile, key) if use_cache else None
        if cached is not None and time.time() - cached.get("timestamp", 0) < self.cache_ttl:
            return cached["fields"]
        try:
            vcard = await self.get_vcard_element(client, jid)
        except (errors.Timeout, errors.NotConnected):
            if cached is not None:
                return cached["fields"]
            raise
        fields = parse_vcard(vcard)
        await self._cache_set(client.profile, key, fields)
        return fields

    async def set(self, client, fields: dict) -> dict:
        """Change fields of our vCard, keeping the others; returns the new record."""
        fields = check_fields(fields)
        current = await self.get_vcard_element(client, None)
        new = update_vcard(current, fields)
        await self.set_vcard_element(client, new)
        record = parse_vcard(new)
        await self._cache_set(client.profile, client.jid.userhost(), record)
        return record

    # --- bridge ---------------------------------------------------------------------------

    def _register_bridge(self) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is None:
            return
        P = ("profile", "s", "profile name (empty: the default profile)")

        resolve = self.resolve_profile

        async def vcard_get(profile, jid):
            profile = await resolve(profile)
            client = self.host.clients.get(profile)
            if client is None:
                # offline: what the cache holds
                try:
                    key = jabber_jid.JID(jid).userhost() if jid else None
                except jabber_jid.InvalidFormat:
                    raise errors.InvalidArgument(f"invalid JID {jid!r}") from None
                if key is None:
                    key = jabber_jid.JID(
                        await self.host.params.get("connection", "jid", profile)
                    ).userhost()
                cached = await self._cache_get(profile, key)
                if cached is None:
                    raise errors.NotConnected(f"profile {profile!r} is not connected")
                return cached["fields"]
            return await self.get(client, jid or None)

        async def vcard_set(profile, fields):
            await self.set(self.host.get_client(await resolve(profile)), fields)

        bridge.add_method(
            "VCardGet",
            vcard_get,
            args=[P, ("jid", "s", "entity (bare JID, or a room occupant's full JID); empty: us")],
            out=(
                "a{sv}",
                "FN, NICKNAME, FAMILY, GIVEN, MIDDLE, PREFIX, SUFFIX, BDAY, URL, NOTE, DESC, "
                "TITLE, ROLE, ORG, JABBERID (strings), EMAIL, TEL (lists of strings), "
                "PHOTO_TYPE, PHOTO_HASH or PHOTO_URL; absent keys are not set",
            ),
            doc="An entity's vCard (XEP-0054), from the cache when recent",
            interface="plugin",
        )
        bridge.add_method(
            "VCardSet",
            vcard_set,
            args=[
                P,
                (
                    "fields",
                    "a{sv}",
                    "fields to change (same keys as VCardGet, PHOTO_* excepted: use "
                    "AvatarSet); an empty value removes the field; others are kept",
                ),
            ],
            doc="Change our own vCard (XEP-0054)",
            interface="plugin",
        )


PLUGIN = VCardPlugin
