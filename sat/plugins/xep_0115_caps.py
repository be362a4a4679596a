"""XEP-0115: Entity Capabilities.

Outgoing
    Every available presence we send gets
    ``<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://salut-a-toi.org'
    ver='...'/>``, ``ver`` being computed from our own disco#info; our disco
    responder answers disco#info on ``node#ver`` with the same information.

Incoming
    For a ``<c/>`` with an unknown ``ver``, we ask the sender for disco#info on
    ``node#ver``. With a supported hash, the answer is checked (well-formed,
    hash recomputed); only when it verifies is it cached by hash, in memory
    and in ``host.storage`` (``disco_cache_set``), so any other entity
    announcing the same ``ver`` needs no request. An answer that does not
    verify (or uses a hash we do not support) is kept for that JID only.
    Legacy caps (no ``hash`` attribute) are ignored; a malformed ``<c/>`` is
    logged and ignored.

:func:`compute_ver` implements the verification string of XEP-0115 section 5.1.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import data_form, disco, iwokkel
from wokkel.generic import parseXml
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core import wokkel_compat  # noqa: F401  (sat/__init__ loads it before wokkel)
from sat.core.plugin import Plugin
from sat.plugins.xep_0030_disco import SharedCall

log = logging.getLogger(__name__)

NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = disco.NS_DISCO_INFO
NS_X_DATA = data_form.NS_X_DATA
NS_XML = "http://www.w3.org/XML/1998/namespace"
#: our caps node: identifies the software
CAPS_NODE = "https://salut-a-toi.org"
DEFAULT_ALGO = "sha-1"
#: IANA hash function textual names we verify; others are accepted for the JID only
HASH_ALGOS = {
    "sha-1": "sha1",
    "sha-224": "sha224",
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}
#: a ver or node longer than this is not worth a request
_MAX_ATTR_LEN = 1024


class IllFormed(ValueError):
    """A disco#info answer that XEP-0115 section 5.4 says must not be processed."""


# --- verification string (XEP-0115 section 5.1) -------------------------------

IdentityTuple = tuple[str, str, str, str]  # category, type, lang, name
FormTuple = tuple[str, list[tuple[str, list[str]]]]  # FORM_TYPE, [(var, [values])]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, jabber_jid.JID):
        return value.full()
    return str(value)


def _norm_identity(identity: Any) -> IdentityTuple:
    if isinstance(identity, tuple | list):
        parts = [_text(p) for p in identity]
        if len(parts) == 4:
            return (parts[0], parts[1], parts[2], parts[3])
        if len(parts) == 3:  # category, type, name
            return (parts[0], parts[1], "", parts[2])
        if len(parts) == 2:
            return (parts[0], parts[1], "", "")
        raise ValueError(f"identity must have 2 to 4 parts, not {identity!r}")
    return (
        _text(identity.category),
        _text(identity.type),
        _text(getattr(identity, "lang", "")),
        _text(identity.name),
    )


def _norm_identities(identities: Any) -> list[IdentityTuple]:
    if isinstance(identities, Mapping):  # wokkel DiscoInfo.identities: {(cat, type): name}
        return [(_text(c), _text(t), "", _text(n)) for (c, t), n in identities.items()]
    return [_norm_identity(i) for i in identities]


def _form_from_element(x_elt: domish.Element) -> FormTuple | None:
    """(FORM_TYPE, fields) of an ``<x/>``; None if it has no hidden FORM_TYPE (ignored)."""
    form_type_values: list[str] | None = None
    form_type_hidden = False
    fields: list[tuple[str, list[str]]] = []
    for field in x_elt.elements(NS_X_DATA, "field"):
        var = field.getAttribute("var")
        values = [str(v) for v in field.elements(NS_X_DATA, "value")]
        if var == "FORM_TYPE":
            if form_type_values is not None:
                raise IllFormed("a form has two FORM_TYPE fields")
            form_type_values = values
            form_type_hidden = field.getAttribute("type") == "hidden"
        elif var is not None:
            fields.append((var, values))
    if form_type_values is None or not form_type_values:
        return None
    if len(set(form_type_values)) > 1:
        raise IllFormed("FORM_TYPE field with several different values")
    if not form_type_hidden:
        return None
    return (form_type_values[0], fields)


def _norm_form(form: Any) -> FormTuple | None:
    if isinstance(form, domish.Element):
        return _form_from_element(form)
    if isinstance(form, data_form.Form):
        if not form.formNamespace:  # no hidden FORM_TYPE: ignored by the algorithm
            return None
        return (
            _text(form.formNamespace),
            [
                (field.var, [_text(v) for v in field.values])
                for field in form.fieldList
                if field.var and field.var != "FORM_TYPE"
            ],
        )
    form_type, fields = form
    if isinstance(fields, Mapping):
        fields = fields.items()
    result = []
    for var, values in fields:
        if var == "FORM_TYPE":
            continue
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            values = [values]
        result.append((_text(var), [_text(v) for v in values]))
    return (_text(form_type), result)


def _norm_forms(forms: Any) -> list[FormTuple]:
    if isinstance(forms, Mapping):  # {FORM_TYPE: {var: values}} or wokkel's extensions
        forms = [
            f if isinstance(f, data_form.Form | domish.Element) else (k, f)
            for k, f in forms.items()
        ]
    result = []
    for form in forms:
        normed = _norm_form(form)
        if normed is not None:
            result.append(normed)
    return result


def caps_input_from_info(info: disco.DiscoInfo) -> tuple[list, list, list]:
    """(identities, features, forms) of a wokkel DiscoInfo (iterating its items, so
    identities keep their ``lang`` when the info was parsed by XEP-0030's ``parse_info``)."""
    identities, features, forms = [], [], []
    for item in info:
        if isinstance(item, disco.DiscoIdentity):
            identities.append(_norm_identity(item))
        elif isinstance(item, disco.DiscoFeature):
            features.append(str(item))
        elif isinstance(item, data_form.Form):
            forms.append(item)
    return identities, features, _norm_forms(forms)


def caps_input_from_element(query_elt: domish.Element) -> tuple[list, list, list]:
    """(identities, features, forms) of a disco#info ``<query/>``, checked per section 5.4.

    Raises :class:`IllFormed` for repeated identities/features/FORM_TYPEs or a
    FORM_TYPE with several different values; forms without a hidden FORM_TYPE
    are left out.
    """
    identities: list[IdentityTuple] = []
    features: list[str] = []
    forms: list[FormTuple] = []
    for child in query_elt.elements():
        if child.uri == NS_DISCO_INFO and child.name == "identity":
            category = child.getAttribute("category")
            type_ = child.getAttribute("type")
            if not category or not type_:
                raise IllFormed("identity without category or type")
            identity = (
                category,
                type_,
                child.getAttribute((NS_XML, "lang"), ""),
                child.getAttribute("name", ""),
            )
            if identity in identities:
                raise IllFormed(f"identity {'/'.join(identity)} appears twice")
            identities.append(identity)
        elif child.uri == NS_DISCO_INFO and child.name == "feature":
            var = child.getAttribute("var")
            if not var:
                raise IllFormed("feature without var")
            if var in features:
                raise IllFormed(f"feature {var} appears twice")
            features.append(var)
        elif child.uri == NS_X_DATA and child.name == "x":
            form = _form_from_element(child)
            if form is None:
                continue
            if any(f[0] == form[0] for f in forms):
                raise IllFormed(f"two forms with FORM_TYPE {form[0]}")
            forms.append(form)
    return identities, features, forms


def _octets(value: str) -> bytes:
    # "i;octet" collation: compare the UTF-8 octets
    return value.encode("utf-8")


def verification_string(identities: Any, features: Any = None, forms: Any = None) -> str:
    """The string S of XEP-0115 section 5.1 (before hashing).

    ``identities`` is an iterable of (category, type, lang, name) tuples (or
    (category, type, name)), of wokkel identities, a ``{(category, type): name}``
    mapping, or a whole wokkel ``DiscoInfo`` (then ``features``/``forms`` come
    from it). ``forms`` holds wokkel ``Form``\\ s, ``<x/>`` elements,
    ``(FORM_TYPE, {var: values})`` pairs or a ``{FORM_TYPE: {var: values}}`` mapping.
    Values are used as they are: no escaping, and a literal "&lt;" stays four
    characters.
    """
    if isinstance(identities, disco.DiscoInfo):
        info_ids, info_features, info_forms = caps_input_from_info(identities)
        identities = info_ids
        features = info_features if features is None else features
        forms = info_forms if forms is None else _norm_forms(forms)
    else:
        identities = _norm_identities(identities)
        forms = _norm_forms(forms or ())
    features = [_text(f) for f in (features or ())]

    parts: list[str] = []
    for category, type_, lang, name in sorted(
        identities, key=lambda i: (_octets(i[0]), _octets(i[1]), _octets(i[2]), _octets(i[3]))
    ):
        parts.append(f"{category}/{type_}/{lang}/{name}<")
    for feature in sorted(features, key=_octets):
        parts.append(f"{feature}<")
    for form_type, fields in sorted(forms, key=lambda f: _octets(f[0])):
        parts.append(f"{form_type}<")
        for var, values in sorted(fields, key=lambda f: _octets(f[0])):
            parts.append(f"{var}<")
            for value in sorted(values, key=_octets):
                parts.append(f"{value}<")
    return "".join(parts)


def compute_ver(
    identities: Any, features: Any = None, forms: Any = None, algo: str = DEFAULT_ALGO
) -> str:
    """The XEP-0115 ``ver`` (base64 of the hash of :func:`verification_string`)."""
    try:
        hash_name = HASH_ALGOS[algo.lower()]
    except KeyError:
        raise ValueError(f"unsupported caps hash algorithm {algo!r}") from None
    s = verification_string(identities, features, forms)
    digest = hashlib.new(hash_name, s.encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


# --- plugin -----------------------------------------------------------------------


@dataclass
class EntityCaps:
    """What a JID announced and what we learnt from it."""

    hash: str
    node: str
    ver: str
    info: disco.DiscoInfo | None = None
    verified: bool = False
    lookup: Any = None  # running lookup (SharedCall) or None


@implementer(iwokkel.IDisco)
class CapsHandler(XMPPHandler):
    """Declares the caps feature and answers disco#info on our ``node#ver``."""

    def __init__(self, plugin: CapsPlugin, client):
        super().__init__()
        self.plugin = plugin
        self.client = client

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if not nodeIdentifier:
            return [disco.DiscoFeature(NS_CAPS)]
        if not nodeIdentifier.startswith(CAPS_NODE + "#"):
            return []
        asked_ver = nodeIdentifier[len(CAPS_NODE) + 1 :]
        d = self.plugin.own_info(self.client)

        def answer(info_ver):
            info, ver = info_ver
            # a ver we do not (or no longer) announce: item-not-found
            return list(info) if ver == asked_ver else []

        d.addCallback(answer)
        return d

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


class CapsPlugin(Plugin):
    name = "XEP-0115"
    label = "Entity Capabilities"
    xeps = ("XEP-0115",)
    dependencies = ("XEP-0030",)
    description = "Announces our capabilities in presence and caches those of others by hash."

    def __init__(self, host):
        super().__init__(host)
        #: verified ver -> DiscoInfo, shared by all profiles
        self._ver_cache: dict[str, disco.DiscoInfo] = {}
        #: profile -> {full jid: EntityCaps}
        self._entities: dict[str, dict[str, EntityCaps]] = {}
        #: ver -> running verified lookup
        self._running: dict[str, Any] = {}
        host.hooks.add("presence_send", self._on_presence_send, 0)
        host.hooks.add("presence_received", self._on_presence_received, 0)

    @property
    def _disco(self):
        return self.host.plugins["XEP-0030"]

    def get_handler(self, client):
        return CapsHandler(self, client)

    async def profile_connected(self, client) -> None:
        # a fresh session (not a resumed one): the server sends every presence again
        self.forget_profile(client)

    def profile_disconnected(self, client) -> None:
        self.forget_profile(client)

    def forget_profile(self, client) -> None:
        """Forget what the contacts of this profile announced (the hash cache stays)."""
        self._entities.pop(client.profile, None)

    # --- our own caps --------------------------------------------------------------

    def own_info(self, client) -> defer.Deferred:
        """Deferred (DiscoInfo, ver) of our own disco#info; fires at once in practice."""
        d = self._disco.get_own_info(client)

        def got(info):
            ver = compute_ver(info, algo=DEFAULT_ALGO)
            self._ver_cache.setdefault(ver, info)
            return info, ver

        d.addCallback(got)
        return d

    def own_ver(self, client) -> defer.Deferred:
        d = self.own_info(client)
        d.addCallback(lambda info_ver: info_ver[1])
        return d

    def _on_presence_send(self, client, presence_elt):
        if presence_elt.getAttribute("type") not in (None, ""):
            return None
        if any(True for _ in presence_elt.elements(NS_CAPS, "c")):
            return None
        done = []

        def add_caps(ver):
            c_elt = presence_elt.addElement((NS_CAPS, "c"))
            c_elt["hash"] = DEFAULT_ALGO
            c_elt["node"] = CAPS_NODE
            c_elt["ver"] = ver
            done.append(True)

        def failed(f):
            log.error("cannot compute our entity capabilities: %s", f.getTraceback())
            done.append(False)

        d = self.own_ver(client)
        d.addCallbacks(add_caps, failed)
        # synchronous when every disco handler is (run_sync callers get the <c/> too)
        return None if done else d

    # --- others' caps --------------------------------------------------------------

    def _on_presence_received(self, client, presence_elt):
        try:
            self._handle_presence(client, presence_elt)
        except Exception:
            log.warning(
                "ignoring entity capabilities of an unexpected presence: %s",
                _short_xml(presence_elt),
                exc_info=True,
            )
        return None

    def _handle_presence(self, client, presence_elt) -> None:
        sender = presence_elt.getAttribute("from")
        if not sender:
            return
        try:
            entity = jabber_jid.JID(sender)
        except jabber_jid.InvalidFormat:
            return
        entities = self._entities.setdefault(client.profile, {})
        ptype = presence_elt.getAttribute("type")
        if ptype == "unavailable":
            entities.pop(entity.full(), None)
            return
        if ptype not in (None, ""):
            return
        c_elt = next(
            (c for c in presence_elt.elements(NS_CAPS, "c") if c.getAttribute("hash")), None
        )
        if c_elt is None:
            # nothing, or only legacy caps (no hash): ignored
            return
        hash_ = c_elt.getAttribute("hash", "").strip().lower()
        node = c_elt.getAttribute("node", "")
        ver = c_elt.getAttribute("ver", "")
        if not node or not ver or len(ver) > _MAX_ATTR_LEN or len(node) > _MAX_ATTR_LEN:
            log.debug("ignoring malformed caps from %s: %s", entity.full(), c_elt.toXml())
            return
        known = entities.get(entity.full())
        if known is not None and (known.hash, known.node, known.ver) == (hash_, node, ver):
            return
        caps = EntityCaps(hash_, node, ver)
        entities[entity.full()] = caps
        if hash_ in HASH_ALGOS and ver in self._ver_cache:
            caps.info = self._ver_cache[ver]
            caps.verified = True
            return

        d = defer.ensureDeferred(self._lookup(client, entity, caps))
        d.addErrback(self._lookup_failed, entity, caps)
        caps.lookup = SharedCall(d)
        if caps.lookup.done:
            caps.lookup = None

    def _lookup_failed(self, f, entity, caps: EntityCaps):
        log.info(
            "could not get the capabilities (%s#%s) of %s: %s",
            caps.node,
            caps.ver,
            entity.full(),
            f.getErrorMessage(),
        )

    async def _stored_info(self, ver: str, algo: str) -> disco.DiscoInfo | None:
        storage = getattr(self.host, "storage", None)
        if storage is None:
            return None
        try:
            xml = await storage.disco_cache_get(ver)
        except Exception:
            log.exception("cannot read the caps cache")
            return None
        if not xml:
            return None
        try:
            query = parseXml(xml)
            computed = compute_ver(*caps_input_from_element(query), algo=algo)
        except Exception as e:
            log.warning("unreadable caps cache entry for %s: %s", ver, e)
            return None
        if computed != ver:
            log.warning("caps cache entry for %s does not match its hash: ignored", ver)
            return None
        return self._disco.parse_info(query)

    async def _lookup(self, client, entity: jabber_jid.JID, caps: EntityCaps) -> None:
        ver, algo = caps.ver, caps.hash
        supported = algo in HASH_ALGOS
        if supported:
            info = self._ver_cache.get(ver) or await self._stored_info(ver, algo)
            if info is None:
                running = self._running.get(ver)
                if running is not None:
                    # another entity announced the same ver: use its answer if it verified
                    try:
                        await running.wait()
                    except Exception:
                        pass
                    info = self._ver_cache.get(ver)
            if info is not None:
                self._ver_cache[ver] = info
                caps.info, caps.verified = info, True
                return

            d = defer.ensureDeferred(self._query_and_verify(client, entity, caps))
            shared = SharedCall(d, lambda: self._running.pop(ver, None))
            if not shared.done:
                self._running[ver] = shared
            await shared.wait()
        else:
            await self._query_and_verify(client, entity, caps)

    async def _query_and_verify(self, client, entity, caps: EntityCaps) -> None:
        ver, algo = caps.ver, caps.hash
        query = await self._disco.info_element(client, entity, f"{caps.node}#{ver}")
        info = self._disco.parse_info(query)
        caps.info = info
        if algo not in HASH_ALGOS:
            log.info(
                "caps of %s use the unsupported hash %r: kept for this JID only",
                entity.full(),
                algo,
            )
            return
        try:
            computed = compute_ver(*caps_input_from_element(query), algo=algo)
        except IllFormed as e:
            log.warning(
                "ill-formed disco#info from %s for caps %s (%s): kept for this JID only",
                entity.full(),
                ver,
                e,
            )
            return
        if computed != ver:
            log.warning(
                "caps hash mismatch from %s: announced %s, computed %s: not cached",
                entity.full(),
                ver,
                computed,
            )
            return
        caps.verified = True
        self._ver_cache[ver] = info
        storage = getattr(self.host, "storage", None)
        if storage is not None:
            try:
                await storage.disco_cache_set(ver, query.toXml())
            except Exception:
                log.exception("cannot store caps %s", ver)

    async def get_caps_info(self, client, jid) -> disco.DiscoInfo | None:
        """The disco#info announced by ``jid``'s caps, or None if unknown.

        Waits for a lookup in progress; never sends a request itself.
        """
        if not isinstance(jid, jabber_jid.JID):
            try:
                jid = jabber_jid.JID(str(jid))
            except jabber_jid.InvalidFormat:
                return None
        caps = self._entities.get(client.profile, {}).get(jid.full())
        if caps is None:
            return None
        if caps.info is None and caps.lookup is not None:
            try:
                await caps.lookup.wait()
            except Exception:
                return None
        return caps.info

    def get_caps(self, client, jid) -> EntityCaps | None:
        """What ``jid`` announced (hash, node, ver, verified...), or None."""
        key = jid.full() if isinstance(jid, jabber_jid.JID) else str(jid)
        return self._entities.get(client.profile, {}).get(key)


def _short_xml(elt) -> str:
    try:
        xml = elt.toXml()
    except Exception:
        return repr(elt)
    return xml if len(xml) < 500 else xml[:500] + "…"


PLUGIN = CapsPlugin
