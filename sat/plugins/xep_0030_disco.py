"""XEP-0030: Service Discovery.

Responder
    A :class:`SatDiscoHandler` (wokkel's ``DiscoHandler``) is attached to every
    profile's stream. It answers ``disco#info`` / ``disco#items`` with what all
    the ``IDisco`` handlers of that stream declare, without duplicates, plus our
    own identity ``client/pc`` "Salut à Toi".

Requester
    :meth:`DiscoPlugin.info`, :meth:`DiscoPlugin.items`,
    :meth:`DiscoPlugin.has_feature`, :meth:`DiscoPlugin.find_service` and
    :meth:`DiscoPlugin.find_features` are ``async def`` methods meant to be run
    from Twisted coroutines (``defer.ensureDeferred``). ``info`` results are
    cached per (jid, node) for the session (the cache is dropped when the
    stream is lost); for a full JID whose entity capabilities (XEP-0115) are
    known, the answer comes from the caps cache without a round trip.

    Errors become :mod:`sat.core.errors` exceptions: a remote stanza error is
    ``NotFound`` / ``PermissionDenied`` / ``InvalidArgument`` / ``Timeout`` /
    ``SatError`` (its ``details["condition"]`` holds the XMPP condition), an
    unanswered request is ``Timeout``, a lost stream is ``NotConnected``.

    :meth:`DiscoPlugin.send_iq` is the IQ helper the plugins built on discovery
    (XEP-0092, XEP-0199...) use, with the same error mapping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.internet import error as internet_error
from twisted.python import failure
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.protocols.jabber import xmlstream as jabber_xmlstream
from twisted.words.xish import domish
from wokkel import data_form, disco, generic, iwokkel
from zope.interface import implementer

from sat.core import (
    errors,
    wokkel_compat,  # noqa: F401  (sat/__init__ loads it before wokkel)
)
from sat.core.messages import parse_jid as cached_jid
from sat.core.plugin import Plugin
from sat.memory.config import register_option, register_section

log = logging.getLogger(__name__)

NS_DISCO_INFO = disco.NS_DISCO_INFO
NS_DISCO_ITEMS = disco.NS_DISCO_ITEMS
NS_XML = "http://www.w3.org/XML/1998/namespace"

IDENTITY_CATEGORY = "client"
IDENTITY_TYPE = "pc"
IDENTITY_NAME = "Salut à Toi"

DEFAULT_TIMEOUT = 30.0

register_section("xep_0030", "Service discovery (XEP-0030).")
register_option(
    "xep_0030",
    "timeout",
    "float",
    DEFAULT_TIMEOUT,
    "Seconds to wait for the answer to a service discovery (or other plugin) request "
    "before giving up with a timeout error.",
    min=1,
)

#: XMPP stanza error conditions -> (error class, human explanation)
_CONDITIONS: dict[str, tuple[type[errors.SatError], str]] = {
    "item-not-found": (errors.NotFound, "no such item"),
    "service-unavailable": (errors.NotFound, "service unavailable"),
    "feature-not-implemented": (errors.NotFound, "feature not implemented"),
    "recipient-unavailable": (errors.NotFound, "recipient unavailable"),
    "remote-server-not-found": (errors.NotFound, "remote server not found"),
    "gone": (errors.NotFound, "the entity is gone"),
    "forbidden": (errors.PermissionDenied, "forbidden"),
    "not-authorized": (errors.PermissionDenied, "not authorized"),
    "not-allowed": (errors.PermissionDenied, "not allowed"),
    "registration-required": (errors.PermissionDenied, "registration required"),
    "subscription-required": (errors.PermissionDenied, "subscription required"),
    "policy-violation": (errors.PermissionDenied, "policy violation"),
    "bad-request": (errors.InvalidArgument, "bad request"),
    "jid-malformed": (errors.InvalidArgument, "malformed JID"),
    "not-acceptable": (errors.InvalidArgument, "not acceptable"),
    "remote-server-timeout": (errors.Timeout, "the remote server did not answer in time"),
}


# --- data helpers ---------------------------------------------------------------


class Identity(disco.DiscoIdentity):
    """A disco identity that keeps its ``xml:lang`` (wokkel's drops it)."""

    def __init__(self, category, idType, name=None, lang=None):
        super().__init__(category, idType, name)
        self.lang = lang or ""

    def toElement(self):
        element = super().toElement()
        if self.lang:
            element[(NS_XML, "lang")] = self.lang
        return element

    def key(self) -> tuple[str, str, str, str]:
        return (self.category or "", self.type or "", self.lang or "", self.name or "")

    def __repr__(self):
        return f"Identity({self.category!r}, {self.type!r}, {self.name!r}, lang={self.lang!r})"


def identity_key(identity: Any) -> tuple[str, str, str, str]:
    """(category, type, lang, name) of a wokkel/our identity, missing parts as ''."""
    return (
        identity.category or "",
        identity.type or "",
        getattr(identity, "lang", "") or "",
        identity.name or "",
    )


def parse_info(query_elt: domish.Element | None) -> disco.DiscoInfo:
    """Parse a disco#info ``<query/>`` keeping every identity and its ``xml:lang``.

    Iterating the result yields all identities (as :class:`Identity`),
    features and forms in document order; ``info.identities`` and
    ``info.extensions`` are wokkel's dict views (one entry per key).
    """
    info = disco.DiscoInfo()
    if query_elt is None:
        return info
    info.nodeIdentifier = query_elt.getAttribute("node", "")
    for child in query_elt.elements():
        if child.uri == NS_DISCO_INFO and child.name == "identity":
            info.append(
                Identity(
                    child.getAttribute("category", ""),
                    child.getAttribute("type", ""),
                    child.getAttribute("name"),
                    child.getAttribute((NS_XML, "lang")),
                )
            )
        elif child.uri == NS_DISCO_INFO and child.name == "feature":
            var = child.getAttribute("var")
            if var:
                info.append(disco.DiscoFeature(var))
        elif child.uri == data_form.NS_X_DATA and child.name == "x":
            try:
                info.append(data_form.Form.fromElement(child))
            except Exception as e:
                log.debug("ignoring invalid data form in disco#info: %s", e)
    return info


def parse_items(query_elt: domish.Element | None) -> disco.DiscoItems:
    """Parse a disco#items ``<query/>``; items with an invalid JID are dropped."""
    items = disco.DiscoItems()
    if query_elt is None:
        return items
    items.nodeIdentifier = query_elt.getAttribute("node", "")
    for child in query_elt.elements(NS_DISCO_ITEMS, "item"):
        item = disco.DiscoItem.fromElement(child)
        if item.entity is None:
            log.debug("ignoring disco item with invalid JID %r", child.getAttribute("jid"))
            continue
        items.append(item)
    return items


def _value_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, jabber_jid.JID):
        return value.full()
    return str(value)


def form_to_dict(form: data_form.Form) -> dict:
    fields = {}
    for field in form.fieldList:
        if field.var:
            fields[field.var] = [_value_str(v) for v in field.values]
    return {"form_type": form.formNamespace or "", "fields": fields}


def info_to_dict(
    info: disco.DiscoInfo, entity: jabber_jid.JID | None = None, node: str = ""
) -> dict:
    """Plain (bridge friendly) view of a DiscoInfo."""
    identities = []
    features = []
    extensions = []
    for item in info:
        if isinstance(item, disco.DiscoIdentity):
            category, type_, lang, name = identity_key(item)
            identities.append({"category": category, "type": type_, "lang": lang, "name": name})
        elif isinstance(item, disco.DiscoFeature):
            features.append(str(item))
        elif isinstance(item, data_form.Form):
            extensions.append(form_to_dict(item))
    return {
        "jid": entity.full() if entity is not None else "",
        "node": node,
        "identities": identities,
        "features": sorted(set(features)),
        "extensions": extensions,
    }


def items_to_list(items: disco.DiscoItems) -> list[dict]:
    return [
        {
            "jid": item.entity.full() if item.entity is not None else "",
            "node": item.nodeIdentifier or "",
            "name": item.name or "",
        }
        for item in items
    ]


def dedupe_info_items(items: Iterable[Any]) -> list[Any]:
    """Drop repeated identities, features and same-FORM_TYPE forms (first one wins)."""
    seen: set = set()
    result = []
    for item in items:
        if isinstance(item, disco.DiscoIdentity):
            key = ("identity",) + identity_key(item)
        elif isinstance(item, disco.DiscoFeature):
            key = ("feature", str(item))
        elif isinstance(item, data_form.Form):
            key = ("form", item.formNamespace)
        else:
            key = ("other", id(item))
        if key in seen:
            continue
        seen.add(key)
        result.append(item)
    return result


def info_from_items(items: Iterable[Any], node: str = "") -> disco.DiscoInfo:
    info = disco.DiscoInfo()
    info.nodeIdentifier = node
    for item in items:
        info.append(item)
    return info


class SharedCall:
    """One running operation (a Deferred) several callers may wait for.

    :meth:`wait` gives each caller its own Deferred with the same result; the
    operation's own Deferred is consumed (no unhandled-error noise).
    """

    def __init__(self, d: defer.Deferred, on_done: Callable[[], None] | None = None):
        self._waiters: list[defer.Deferred] = []
        self.done = False
        self._result: Any = None
        self._on_done = on_done
        d.addBoth(self._fire)

    def _fire(self, result):
        self.done = True
        self._result = result
        if self._on_done is not None:
            self._on_done()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._pass(waiter, result)
        return None

    @staticmethod
    def _pass(waiter: defer.Deferred, result):
        if isinstance(result, failure.Failure):
            waiter.errback(result)
        else:
            waiter.callback(result)

    def wait(self) -> defer.Deferred:
        waiter = defer.Deferred()
        if self.done:
            self._pass(waiter, self._result)
        else:
            self._waiters.append(waiter)
        return waiter


class _IQGet(generic.Request):
    """An IQ request carrying one payload element."""

    def __init__(self, recipient, payload: domish.Element, timeout: float | None, iq_type="get"):
        super().__init__(recipient=recipient, stanzaType=iq_type)
        self.payload = payload
        self.timeout = timeout

    def toElement(self):
        element = super().toElement()
        element.addChild(self.payload)
        return element


def map_request_failure(exc: BaseException, entity, what: str, timeout: float | None):
    """Turn what a failed IQ request raised into a SatError (others unchanged)."""
    target = entity.full() if entity is not None else "the server"
    if isinstance(exc, errors.SatError):
        return exc
    if isinstance(exc, jabber_error.StanzaError):
        condition = exc.condition or "undefined-condition"
        cls, explanation = _CONDITIONS.get(condition, (errors.SatError, condition))
        message = f"{what} to {target} failed: {explanation} ({condition})"
        if exc.text:
            message += f": {exc.text}"
        return cls(message, condition=condition, jid=target, text=exc.text or "")
    if isinstance(exc, jabber_xmlstream.TimeoutError | defer.TimeoutError):
        delay = f" within {timeout:g} s" if timeout else ""
        return errors.Timeout(f"{target} did not answer the {what}{delay}", jid=target)
    if isinstance(exc, internet_error.ConnectionDone | internet_error.ConnectionLost):
        return errors.NotConnected(
            f"the connection was lost before {target} answered the {what}", jid=target
        )
    return exc


# --- responder ------------------------------------------------------------------


@implementer(iwokkel.IDisco)
class SatDiscoHandler(disco.DiscoHandler):
    """Answers disco requests with the union of the stream's IDisco handlers."""

    def __init__(self, plugin: DiscoPlugin, client):
        super().__init__()
        self.plugin = plugin
        self.client = client

    def _siblings(self):
        return self.parent if self.parent is not None else self.client

    def info(self, requestor, target, nodeIdentifier):
        dl = [
            defer.maybeDeferred(handler.getDiscoInfo, requestor, target, nodeIdentifier)
            for handler in self._siblings()
            if iwokkel.IDisco.providedBy(handler)
        ]
        d = self._gatherResults(dl)
        d.addCallback(dedupe_info_items)
        return d

    def items(self, requestor, target, nodeIdentifier):
        dl = [
            defer.maybeDeferred(handler.getDiscoItems, requestor, target, nodeIdentifier)
            for handler in self._siblings()
            if iwokkel.IDisco.providedBy(handler)
        ]
        return self._gatherResults(dl)

    # our own IDisco part: the client identity and the disco features
    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier:
            return []
        return [
            Identity(IDENTITY_CATEGORY, IDENTITY_TYPE, IDENTITY_NAME),
            disco.DiscoFeature(NS_DISCO_INFO),
            disco.DiscoFeature(NS_DISCO_ITEMS),
        ]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.plugin.clear_cache(self.client)


# --- plugin ---------------------------------------------------------------------


class DiscoPlugin(Plugin):
    name = "XEP-0030"
    label = "Service Discovery"
    xeps = ("XEP-0030",)
    description = "Answers and sends service discovery requests (disco#info, disco#items)."

    def __init__(self, host):
        super().__init__(host)
        try:
            self.timeout = float(self.config("xep_0030", "timeout", DEFAULT_TIMEOUT))
        except (TypeError, ValueError):
            self.timeout = DEFAULT_TIMEOUT
        self._handlers: dict[str, SatDiscoHandler] = {}
        #: profile -> {(full jid, node): DiscoInfo}
        self._info_cache: dict[str, dict[tuple[str, str], disco.DiscoInfo]] = {}
        #: profile -> {(full jid, node): DiscoItems}
        self._items_cache: dict[str, dict[tuple[str, str], disco.DiscoItems]] = {}
        #: (profile, kind, full jid, node) -> running request
        self._running: dict[tuple[str, str, str, str], SharedCall] = {}
        self._register_bridge()

    def _register_bridge(self) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is None:
            return
        bridge.add_method(
            "DiscoInfoGet",
            self._bridge_info_get,
            args=[
                ("profile", "s", "profile to send the request from"),
                ("jid", "s", "entity to ask; empty: the profile's server"),
                ("node", "s", "node to ask about; empty: the entity itself"),
            ],
            out=(
                "a{sv}",
                "jid, node, identities (list of {category, type, lang, name}), features "
                "(sorted list of strings), extensions (list of {form_type, fields: {var: "
                "[values]}})",
            ),
            doc="Service discovery information (XEP-0030 disco#info) of an entity.",
            interface="plugin",
        )
        bridge.add_method(
            "DiscoItemsGet",
            self._bridge_items_get,
            args=[
                ("profile", "s", "profile to send the request from"),
                ("jid", "s", "entity to ask; empty: the profile's server"),
                ("node", "s", "node to list; empty: the entity's top level"),
            ],
            out=("aa{sv}", "items, each {jid, node, name}"),
            doc="Items (XEP-0030 disco#items) of an entity or node (always asked afresh).",
            interface="plugin",
        )

    # --- per profile ---------------------------------------------------------

    def get_handler(self, client):
        handler = SatDiscoHandler(self, client)
        self._handlers[client.profile] = handler
        return handler

    def profile_disconnected(self, client) -> None:
        self.clear_cache(client)

    def clear_cache(self, client) -> None:
        """Forget every cached disco answer of this profile."""
        self._info_cache.pop(client.profile, None)
        self._items_cache.pop(client.profile, None)

    # --- helpers other plugins use ---------------------------------------------

    def parse_jid(self, client, jid: str | jabber_jid.JID | None) -> jabber_jid.JID:
        """A JID from a str/JID; None or '' is the profile's server."""
        if jid is None or jid == "":
            own = client.jid
            return jabber_jid.JID(own.host if isinstance(own, jabber_jid.JID) else str(own))
        if isinstance(jid, jabber_jid.JID):
            return jid
        try:
            return cached_jid(str(jid))
        except jabber_jid.InvalidFormat as e:
            raise errors.InvalidArgument(f"invalid JID {jid!r}: {e}") from None

    parse_info = staticmethod(parse_info)
    parse_items = staticmethod(parse_items)
    info_to_dict = staticmethod(info_to_dict)

    async def send_iq(
        self,
        client,
        jid: str | jabber_jid.JID | None,
        payload: domish.Element,
        *,
        what: str | None = None,
        timeout: float | None = None,
        iq_type: str = "get",
    ) -> domish.Element:
        """Send ``<iq type=get>`` with ``payload`` to ``jid``; return the result ``<iq/>``.

        ``what`` names the request in error messages. Errors are mapped to
        :mod:`sat.core.errors` (see the module documentation).
        """
        entity = self.parse_jid(client, jid)
        what = what or f"{payload.name} request"
        timeout = self.timeout if timeout is None else timeout
        is_connected = getattr(client, "is_connected", None)
        connected = is_connected() if callable(is_connected) else client.xmlstream is not None
        if not connected:
            raise errors.NotConnected(
                f"profile {client.profile} is not connected: cannot send the {what}"
            )
        request = _IQGet(entity, payload, timeout, iq_type)
        try:
            return await client.request(request)
        except Exception as e:
            mapped = map_request_failure(e, entity, what, timeout)
            if mapped is e:
                raise
            raise mapped from None

    def get_own_info(self, client, node: str = "") -> defer.Deferred:
        """Our own disco#info (all handlers of the stream), as a Deferred of DiscoInfo.

        It fires at once when every handler answers synchronously (the usual case).
        """
        handler = self._handlers.get(client.profile)
        if handler is None or (handler.client is not client and handler.parent is not client):
            handler = SatDiscoHandler(self, client)
        own = client.jid
        d = handler.info(own, own, node)
        d.addCallback(info_from_items, node)
        return d

    # --- requester -------------------------------------------------------------

    def _share(self, key, factory: Callable[[], Any]) -> defer.Deferred:
        shared = self._running.get(key)
        if shared is None:
            d = defer.ensureDeferred(factory())
            shared = SharedCall(d, lambda: self._running.pop(key, None))
            if not shared.done:
                self._running[key] = shared
        return shared.wait()

    async def info_element(self, client, jid=None, node: str = "") -> domish.Element:
        """Ask ``jid`` for its disco#info and return the raw ``<query/>`` (no cache)."""
        entity = self.parse_jid(client, jid)
        query = domish.Element((NS_DISCO_INFO, "query"))
        if node:
            query["node"] = node
        iq = await self.send_iq(client, entity, query, what="disco#info request")
        result = next(iq.elements(NS_DISCO_INFO, "query"), None)
        if result is None:
            result = domish.Element((NS_DISCO_INFO, "query"))
            if node:
                result["node"] = node
        return result

    async def info(self, client, jid=None, node: str = "", use_cache: bool = True):
        """disco#info of ``jid`` (None: our server) and ``node``, as a wokkel DiscoInfo."""
        entity = self.parse_jid(client, jid)
        node = node or ""
        key = (entity.full(), node)
        cache = self._info_cache.setdefault(client.profile, {})
        if use_cache:
            if key in cache:
                return cache[key]
            if not node and entity.resource:
                caps = self.host.plugins.get("XEP-0115")
                if caps is not None:
                    try:
                        known = await caps.get_caps_info(client, entity)
                    except Exception:
                        log.exception("entity capabilities lookup failed for %s", entity.full())
                        known = None
                    if known is not None:
                        return known

        async def fetch():
            query = await self.info_element(client, entity, node)
            return parse_info(query)

        result = await self._share((client.profile, "info") + key, fetch)
        self._info_cache.setdefault(client.profile, {})[key] = result
        return result

    async def items(self, client, jid=None, node: str = "", use_cache: bool = True):
        """disco#items of ``jid`` (None: our server) and ``node``, as a wokkel DiscoItems."""
        entity = self.parse_jid(client, jid)
        node = node or ""
        key = (entity.full(), node)
        cache = self._items_cache.setdefault(client.profile, {})
        if use_cache and key in cache:
            return cache[key]

        async def fetch():
            query = domish.Element((NS_DISCO_ITEMS, "query"))
            if node:
                query["node"] = node
            iq = await self.send_iq(client, entity, query, what="disco#items request")
            return parse_items(next(iq.elements(NS_DISCO_ITEMS, "query"), None))

        result = await self._share((client.profile, "items") + key, fetch)
        self._items_cache.setdefault(client.profile, {})[key] = result
        return result

    def cached_feature(self, client, feature: str, jid=None) -> bool | None:
        """Whether ``jid`` (None: our server) advertises ``feature``, from the cache only:
        None when its disco#info was not fetched yet (then use :meth:`has_feature`)."""
        try:
            entity = self.parse_jid(client, jid)
        except errors.InvalidArgument:
            return None
        info = self._info_cache.get(client.profile, {}).get((entity.full(), ""))
        if info is None:
            return None
        return feature in info.features

    async def has_feature(self, client, feature: str, jid=None) -> bool:
        """True if ``jid`` (None: our server) advertises ``feature``.

        An entity answering with an error has no feature; a timeout or a lost
        connection is raised.
        """
        try:
            info = await self.info(client, jid)
        except errors.SatError as e:
            if "condition" in e.details:
                return False
            raise
        return feature in info.features

    async def _candidates(self, client, jid) -> list[jabber_jid.JID]:
        """``jid`` (None: our server) and the entities it lists in its items."""
        entity = self.parse_jid(client, jid)
        candidates = [entity]
        try:
            items = await self.items(client, entity)
        except errors.SatError as e:
            if "condition" not in e.details:
                raise
            log.info("cannot list the items of %s: %s", entity.full(), e)
            return candidates
        for item in items:
            if (
                item.entity is not None
                and not item.nodeIdentifier
                and item.entity not in candidates
            ):
                candidates.append(item.entity)
        return candidates

    async def _infos(self, client, entities: list[jabber_jid.JID]) -> list:
        async def one(entity):
            try:
                return await self.info(client, entity)
            except errors.SatError as e:
                log.debug("no disco#info from %s: %s", entity.full(), e)
                return None

        return await defer.gatherResults([defer.ensureDeferred(one(e)) for e in entities])

    async def find_service(
        self, client, category: str, type_: str, jid=None
    ) -> list[jabber_jid.JID]:
        """Entities (``jid`` — None: our server — and its items) having identity category/type_."""
        candidates = await self._candidates(client, jid)
        infos = await self._infos(client, candidates)
        return [
            entity
            for entity, info in zip(candidates, infos, strict=True)
            if info is not None and (category, type_) in info.identities
        ]

    async def find_features(
        self, client, features: Iterable[str], jid=None
    ) -> list[jabber_jid.JID]:
        """Entities (``jid`` — None: our server — and its items) offering all ``features``."""
        wanted = set(features)
        candidates = await self._candidates(client, jid)
        infos = await self._infos(client, candidates)
        return [
            entity
            for entity, info in zip(candidates, infos, strict=True)
            if info is not None and wanted <= info.features
        ]

    # --- bridge ------------------------------------------------------------------

    async def _bridge_info_get(self, profile: str, jid: str, node: str) -> dict:
        client = self.host.get_client(profile)
        entity = self.parse_jid(client, jid or None)
        info = await self.info(client, entity, node or "")
        return info_to_dict(info, entity, node or "")

    async def _bridge_items_get(self, profile: str, jid: str, node: str) -> list[dict]:
        client = self.host.get_client(profile)
        items = await self.items(client, jid or None, node or "", use_cache=False)
        return items_to_list(items)


PLUGIN = DiscoPlugin
