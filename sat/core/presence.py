"""RFC 6121: roster (with versioning and a cache), subscriptions and presence.

Roster
    The roster and its version (``ver``) are kept in storage (``kv`` namespace
    ``roster``), so frontends get the contact list before the connection
    completes (``RosterGet`` works offline) and a reconnection to a server
    advertising roster versioning (``urn:xmpp:features:rosterver``) sends the
    cached ``ver`` and gets either the whole roster or an empty result followed
    by pushes. A fresh (not resumed) session fetches the roster, then sends the
    initial presence through the ``presence_send`` hooks (so plugins add entity
    capabilities, avatar hashes...).

    Roster pushes are only accepted from our own account (RFC 6121 2.1.6: no
    ``from`` or our bare JID); anything else is ignored with a log line. The
    roster is changed with ``RosterAdd`` / ``RosterUpdate`` / ``RosterRemove``:
    the server answers and pushes the new item, which updates the roster and
    emits ``ContactNew`` / ``ContactDeleted``.

Subscriptions
    ``SubscriptionSend(profile, jid, type)`` sends ``subscribe`` (ask),
    ``subscribed`` (approve, or pre-approve when the server advertises
    ``urn:xmpp:features:pre-approval``), ``unsubscribe`` (stop receiving their
    presence) or ``unsubscribed`` (deny a request or cancel their subscription).
    Incoming requests are kept (``SubscriptionRequestsGet``) and signalled with
    ``SubscriptionEvent``; they are never accepted automatically unless the
    ``roster/auto_accept_subscriptions`` parameter says so.

Presence
    The last presence of every available resource (show, statuses by language,
    priority, timestamp) is kept; an ``unavailable`` from a bare JID drops all
    its resources. ``PresenceDirectedSend`` sends directed presence (RFC 6121
    4.6). Nothing a contact sends may crash the daemon: malformed presences
    are ignored.

    A presence a plugin observer (running before this one) marked with a
    ``claimed_by`` attribute (the plugin's name) is not a contact's: the
    XEP-0045 plugin claims the available/unavailable presences of the rooms it
    is in (occupants, reported with its own signals). Those change neither
    ``client.presences`` nor the last unavailable statuses and emit no
    ``PresenceUpdate``; the ``presence_received`` hooks still run. Presences
    from a room we are not in, and errors, are handled as any other.
"""

from __future__ import annotations

import logging
import time

from twisted.internet import defer
from twisted.internet import error as internet_error
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish
from wokkel import generic

from sat.core import errors
from sat.core.messages import parse_jid
from sat.memory.params import ParamDef

log = logging.getLogger(__name__)

NS_ROSTER = "jabber:iq:roster"
NS_ROSTERVER = "urn:xmpp:features:rosterver"
NS_PREAPPROVAL = "urn:xmpp:features:pre-approval"
NS_NICK = "http://jabber.org/protocol/nick"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_XML = "http://www.w3.org/XML/1998/namespace"
SHOWS = ("", "away", "chat", "dnd", "xa")
SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")
ROSTER_SUBSCRIPTIONS = ("none", "to", "from", "both")
#: kv namespace/key of the roster cache
KV_NAMESPACE = "roster"
KV_KEY = "cache"
#: limits on what we accept from the network or a frontend
MAX_NAME_LENGTH = 1023
MAX_GROUPS = 100
MAX_STATUS_LENGTH = 2000
MAX_PENDING_REQUESTS = 1000
MAX_ROSTER_ITEMS = 50_000
#: seconds to wait for the server's answer to a roster request
ROSTER_TIMEOUT = 60.0

AUTO_ACCEPT_CHOICES = ("never", "contacts", "always")
PARAMS = (
    ParamDef(
        "roster",
        "auto_accept_subscriptions",
        "choice",
        "never",
        "Accept presence subscription requests without asking: 'never' (default: each request "
        "is signalled and waits for an answer), 'contacts' (only from contacts we are "
        "subscribed to or already asked), 'always'",
        choices=AUTO_ACCEPT_CHOICES,
    ),
)

_CONDITIONS = {
    "item-not-found": errors.NotFound,
    "service-unavailable": errors.NotFound,
    "feature-not-implemented": errors.NotFound,
    "forbidden": errors.PermissionDenied,
    "not-allowed": errors.PermissionDenied,
    "not-authorized": errors.PermissionDenied,
    "policy-violation": errors.PermissionDenied,
    "bad-request": errors.InvalidArgument,
    "not-acceptable": errors.InvalidArgument,
    "jid-malformed": errors.InvalidArgument,
    "remote-server-timeout": errors.Timeout,
}


# --- helpers ------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


def parse_roster_item(item: domish.Element) -> dict | None:
    """A roster ``<item/>`` as a plain dict; None when unusable (bad JID...)."""
    if item.name != "item":
        return None
    try:
        entity = jabber_jid.JID(item["jid"])
    except (KeyError, jabber_jid.InvalidFormat):
        return None
    subscription = item.getAttribute("subscription", "none")
    if subscription not in ROSTER_SUBSCRIPTIONS + ("remove",):
        subscription = "none"
    groups = set()
    for child in item.elements():
        if child.name == "group" and str(child).strip() and len(groups) < MAX_GROUPS:
            groups.add(_clip(str(child), MAX_NAME_LENGTH))
    return {
        "jid": entity.userhost(),
        "name": _clip(item.getAttribute("name", "") or "", MAX_NAME_LENGTH),
        "subscription": subscription,
        "ask": "subscribe" if item.getAttribute("ask") == "subscribe" else "",
        "approved": item.getAttribute("approved") in ("true", "1"),
        "groups": sorted(groups),
    }


def _bare(entity: str) -> str:
    try:
        return jabber_jid.JID(entity).userhost()
    except jabber_jid.InvalidFormat:
        raise errors.InvalidArgument(f"{entity!r} is not a valid JID") from None


def _first_text(elt: domish.Element, name: str, uri: str | None = None) -> str:
    for child in elt.elements():
        if child.name == name and (uri is None or child.uri == uri):
            return _clip(str(child), MAX_STATUS_LENGTH)
    return ""


def map_iq_failure(exc: BaseException, what: str) -> BaseException:
    """Turn a failed roster/presence IQ into a SatError naming the XMPP condition."""
    if isinstance(exc, errors.SatError):
        return exc
    if isinstance(exc, jabber_error.StanzaError):
        condition = exc.condition or "undefined-condition"
        cls = _CONDITIONS.get(condition, errors.SatError)
        message = f"{what} failed: {condition}"
        if exc.text:
            message += f": {exc.text}"
        return cls(message, condition=condition)
    if isinstance(exc, xmlstream.TimeoutError | defer.TimeoutError):
        return errors.Timeout(f"the server did not answer the {what}")
    if isinstance(exc, internet_error.ConnectionDone | internet_error.ConnectionLost):
        return errors.NotConnected(f"the connection was lost during the {what}")
    return exc


class _IQ(generic.Request):
    """An IQ request to our own account carrying one payload."""

    def __init__(self, iq_type: str, payload: domish.Element, timeout: float | None):
        super().__init__(recipient=None, stanzaType=iq_type)
        self.payload = payload
        self.timeout = timeout

    def toElement(self):
        element = super().toElement()
        element.addChild(self.payload)
        return element


# --- the handling ----------------------------------------------------------------------


class PresenceHandling:
    def __init__(self, host):
        self.host = host
        params = getattr(host, "params", None)
        if params is not None:
            for definition in PARAMS:
                params.declare(definition)
        if getattr(host, "bridge", None) is not None:
            self._register_bridge()

    # --- per client state ----------------------------------------------------------

    def attach(self, client) -> None:
        client.roster = {}
        client.roster_ver = None
        client.roster_loaded = False
        client.roster_saving = None
        client.roster_dirty = False
        client.presences = {}
        client.last_unavailable = {}
        client.subscription_requests = {}
        client.own_presence = {"show": "", "statuses": {}, "priority": 0}
        #: the initial presence of the current session went out
        client.presence_sent = False

        def on_stream(xs):
            xs.addObserver("/presence", lambda elt: self._on_presence(client, elt))
            xs.addObserver(
                f"/iq[@type='set']/query[@xmlns='{NS_ROSTER}']",
                lambda elt: self._on_roster_push(client, elt),
            )

        client.factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, on_stream)

    async def session_started(self, client) -> None:
        """A fresh session (not a resumption): roster, then initial presence."""
        client.presence_sent = False
        self._forget_presences(client)
        client.subscription_requests.clear()
        try:
            await self.fetch_roster(client)
        except Exception as e:
            log.warning("[%s] roster retrieval failed: %s", client.profile, e)
        await self.send_presence(client)

    # --- roster cache --------------------------------------------------------------------

    async def load_cache(self, client) -> None:
        """Fill ``client.roster`` from storage (once per client)."""
        if client.roster_loaded:
            return
        cached = await self._read_cache(client.profile)
        if client.roster_loaded:  # loaded meanwhile
            return
        client.roster = cached["items"]
        client.roster_ver = cached["ver"]
        client.roster_loaded = True

    async def _read_cache(self, profile: str) -> dict:
        try:
            value = await self.host.storage.kv_get(KV_NAMESPACE, KV_KEY, None, profile)
        except Exception as e:
            log.warning("[%s] cannot read the roster cache: %s", profile, e)
            value = None
        items: dict[str, dict] = {}
        ver = None
        if isinstance(value, dict):
            ver = value.get("ver") if isinstance(value.get("ver"), str) else None
            for item in value.get("items") or ():
                if isinstance(item, dict) and isinstance(item.get("jid"), str):
                    items[item["jid"]] = {
                        "jid": item["jid"],
                        "name": str(item.get("name", "")),
                        "subscription": str(item.get("subscription", "none")),
                        "ask": str(item.get("ask", "")),
                        "approved": bool(item.get("approved", False)),
                        "groups": [str(g) for g in item.get("groups") or ()],
                    }
        return {"ver": ver, "items": items}

    def _schedule_save(self, client) -> None:
        """Write the roster and its version to storage; writes are coalesced."""
        if not client.roster_loaded:
            # a partial roster must never replace the stored one
            return
        client.roster_dirty = True
        if client.roster_saving is not None:
            return
        client.roster_saving = True  # the loop resets it when done, maybe at once
        d = defer.ensureDeferred(self._save_loop(client))
        if not d.called:
            client.roster_saving = d

    async def _save_loop(self, client) -> None:
        try:
            while client.roster_dirty:
                client.roster_dirty = False
                snapshot = {
                    "ver": client.roster_ver,
                    "items": sorted(client.roster.values(), key=lambda i: i["jid"]),
                }
                await self.host.storage.kv_set(KV_NAMESPACE, KV_KEY, snapshot, client.profile)
        except Exception as e:
            log.error("[%s] cannot store the roster cache: %s", client.profile, e)
        finally:
            client.roster_saving = None

    async def roster_get(self, profile: str) -> list[dict]:
        """The contact list: the live one when connected, else the stored one."""
        client = self.host.clients.get(profile)
        if client is not None and client.roster_loaded:
            return list(client.roster.values())
        return list((await self._read_cache(profile))["items"].values())

    # --- roster retrieval and pushes --------------------------------------------------

    @staticmethod
    def stream_feature(client, uri: str, name: str) -> bool:
        features = getattr(client.xmlstream, "features", None) or {}
        return (uri, name) in features

    async def _iq(self, client, iq_type: str, payload: domish.Element, what: str):
        try:
            return await client.request(_IQ(iq_type, payload, ROSTER_TIMEOUT))
        except Exception as e:
            mapped = map_iq_failure(e, what)
            if mapped is e:
                raise
            raise mapped from None

    async def fetch_roster(self, client) -> None:
        await self.load_cache(client)
        versioning = self.stream_feature(client, NS_ROSTERVER, "ver")
        query = domish.Element((NS_ROSTER, "query"))
        if versioning:
            query["ver"] = (client.roster_ver or "") if client.roster else ""
        result = await self._iq(client, "get", query, "roster request")
        # no await from here on: pushes that follow the result must apply after it
        answer = next(result.elements(NS_ROSTER, "query"), None)
        if answer is None:
            if versioning and client.roster_ver is not None:
                log.debug("[%s] roster unchanged (version %s)", client.profile, client.roster_ver)
                return
            answer = domish.Element((NS_ROSTER, "query"))
        roster: dict[str, dict] = {}
        for item in answer.elements():
            parsed = parse_roster_item(item)
            if parsed is None or parsed["subscription"] == "remove":
                continue
            if len(roster) >= MAX_ROSTER_ITEMS:
                log.warning("[%s] roster truncated to %d items", client.profile, len(roster))
                break
            roster[parsed["jid"]] = parsed
        old = client.roster
        client.roster = roster
        client.roster_ver = answer.getAttribute("ver") if versioning else None
        self._schedule_save(client)
        for entity, item in roster.items():
            if old.get(entity) != item:
                self.host.bridge.emit("ContactNew", client.profile, entity, item)
        for entity in old:
            if entity not in roster:
                self.host.bridge.emit("ContactDeleted", client.profile, entity)

    def _is_own_account(self, client, sender: str | None) -> bool:
        if sender is None:
            return True
        try:
            entity = parse_jid(sender)
        except jabber_jid.InvalidFormat:
            return False
        return entity.resource is None and entity.userhost() == client.jid.userhost()

    def _on_roster_push(self, client, iq: domish.Element) -> None:
        sender = iq.getAttribute("from")
        if not self._is_own_account(client, sender):
            log.warning("[%s] roster push from %s ignored", client.profile, sender)
            return
        iq.handled = True
        client.send(xmlstream.toResponse(iq, "result"))
        query = next(iq.elements(NS_ROSTER, "query"), None)
        if query is None:
            return
        items = [p for p in (parse_roster_item(i) for i in query.elements()) if p is not None]
        if len(items) != 1:
            log.warning(
                "[%s] roster push with %d items (exactly one expected): ignored",
                client.profile,
                len(items),
            )
            return
        parsed = items[0]
        if parsed["jid"] == client.jid.userhost():
            log.info("[%s] roster push about our own account ignored", client.profile)
            return
        if parsed["subscription"] == "remove":
            removed = client.roster.pop(parsed["jid"], None)
            if removed is not None:
                self.host.bridge.emit("ContactDeleted", client.profile, parsed["jid"])
        else:
            if parsed["jid"] not in client.roster and len(client.roster) >= MAX_ROSTER_ITEMS:
                log.warning("[%s] roster full: push ignored", client.profile)
                return
            client.roster[parsed["jid"]] = parsed
            self.host.bridge.emit("ContactNew", client.profile, parsed["jid"], parsed)
        ver = query.getAttribute("ver")
        if ver is not None:
            client.roster_ver = ver
        self._schedule_save(client)

    # --- roster edition ---------------------------------------------------------------

    def _check_contact(self, client, jid: str) -> str:
        if not isinstance(jid, str) or not jid:
            raise errors.InvalidArgument("a contact JID is required")
        entity = _bare(jid)
        if entity == client.jid.userhost():
            raise errors.InvalidArgument("our own account cannot be a contact")
        return entity

    @staticmethod
    def _check_name_groups(name: str, groups) -> tuple[str, list[str]]:
        name = (name or "").strip()
        if len(name) > MAX_NAME_LENGTH:
            raise errors.InvalidArgument(f"contact name longer than {MAX_NAME_LENGTH} characters")
        clean: list[str] = []
        for group in groups or ():
            if not isinstance(group, str) or not group.strip():
                raise errors.InvalidArgument("group names must not be empty")
            group = group.strip()
            if len(group) > MAX_NAME_LENGTH:
                raise errors.InvalidArgument(f"group name longer than {MAX_NAME_LENGTH} characters")
            if group not in clean:
                clean.append(group)
        if len(clean) > MAX_GROUPS:
            raise errors.InvalidArgument(f"more than {MAX_GROUPS} groups")
        return name, clean

    async def roster_set(
        self, client, jid: str, name: str = "", groups=(), must_exist: bool = False
    ) -> None:
        """Add or update a roster item (name and groups); the server's push updates us."""
        entity = self._check_contact(client, jid)
        name, groups = self._check_name_groups(name, groups)
        if must_exist and entity not in client.roster:
            raise errors.NotFound(f"{entity} is not in the roster")
        query = domish.Element((NS_ROSTER, "query"))
        item = query.addElement("item")
        item["jid"] = entity
        if name:
            item["name"] = name
        for group in groups:
            item.addElement("group", content=group)
        await self._iq(client, "set", query, f"roster update of {entity}")

    async def roster_remove(self, client, jid: str) -> None:
        """Remove a contact (the server also cancels both subscriptions)."""
        entity = self._check_contact(client, jid)
        query = domish.Element((NS_ROSTER, "query"))
        item = query.addElement("item")
        item["jid"] = entity
        item["subscription"] = "remove"
        await self._iq(client, "set", query, f"roster removal of {entity}")

    # --- subscriptions ------------------------------------------------------------------

    async def subscription_send(self, client, jid: str, ptype: str, status: str = "") -> None:
        """Send a subscription presence (RFC 6121 3): subscribe, subscribed, unsubscribe(d)."""
        if ptype not in SUBSCRIPTION_TYPES:
            raise errors.InvalidArgument(
                f"subscription type must be one of {', '.join(SUBSCRIPTION_TYPES)}"
            )
        entity = self._check_contact(client, jid)
        if ptype == "subscribed" and entity not in client.subscription_requests:
            item = client.roster.get(entity)
            if item is None or item["subscription"] not in ("from", "both"):
                # nothing to approve: this is a pre-approval (RFC 6121 3.4)
                if not self.stream_feature(client, NS_PREAPPROVAL, "sub"):
                    raise errors.NotFound(
                        f"no pending subscription request from {entity}, and the server does "
                        "not support subscription pre-approval"
                    )
        elt = domish.Element((None, "presence"))
        elt["to"] = entity
        elt["type"] = ptype
        if status:
            elt.addElement("status", content=_clip(status, MAX_STATUS_LENGTH))
        client.send(elt)
        if ptype in ("subscribed", "unsubscribed"):
            client.subscription_requests.pop(entity, None)

    def subscription_requests(self, client) -> list[dict]:
        return [dict(r) for r in client.subscription_requests.values()]

    def _on_subscription(self, client, entity: jabber_jid.JID, ptype: str, elt) -> None:
        bare = entity.userhost()
        if bare == client.jid.userhost():
            log.debug("[%s] subscription presence from our own account ignored", client.profile)
            return
        extra = {}
        status = _first_text(elt, "status")
        if status:
            extra["status"] = status
        nick = _first_text(elt, "nick", NS_NICK)
        if nick:
            extra["nick"] = nick
        if ptype == "subscribe":
            d = defer.ensureDeferred(self._on_subscribe_request(client, bare, extra))
            d.addErrback(
                lambda f: log.error(
                    "[%s] subscription request handling failed: %s", client.profile, f.value
                )
            )
            return
        if ptype == "unsubscribe":
            # the contact withdrew its request (or its subscription)
            client.subscription_requests.pop(bare, None)
        self.host.bridge.emit("SubscriptionEvent", client.profile, bare, ptype, extra)

    async def _should_auto_accept(self, client, bare: str) -> bool:
        try:
            mode = await self.host.params.get("roster", "auto_accept_subscriptions", client.profile)
        except Exception as e:
            log.warning("[%s] cannot read the auto-accept parameter: %s", client.profile, e)
            return False
        if mode == "always":
            return True
        if mode == "contacts":
            item = client.roster.get(bare)
            return item is not None and (
                item["subscription"] in ("to", "both") or item["ask"] == "subscribe"
            )
        return False

    async def _on_subscribe_request(self, client, bare: str, extra: dict) -> None:
        item = client.roster.get(bare)
        if item is not None and item["subscription"] in ("from", "both"):
            # already approved (the server normally answers by itself): confirm again
            log.debug("[%s] %s already has our presence: approving again", client.profile, bare)
            await self.subscription_send_quiet(client, bare, "subscribed")
            return
        if await self._should_auto_accept(client, bare):
            log.info(
                "[%s] subscription request from %s accepted automatically", client.profile, bare
            )
            await self.subscription_send_quiet(client, bare, "subscribed")
            self.host.bridge.emit(
                "SubscriptionEvent",
                client.profile,
                bare,
                "subscribe",
                {**extra, "auto_accepted": True},
            )
            return
        requests = client.subscription_requests
        if bare not in requests and len(requests) >= MAX_PENDING_REQUESTS:
            log.warning(
                "[%s] too many pending subscription requests: the one from %s is ignored",
                client.profile,
                bare,
            )
            return
        requests[bare] = {"jid": bare, "timestamp": time.time(), **extra}
        self.host.bridge.emit("SubscriptionEvent", client.profile, bare, "subscribe", extra)

    async def subscription_send_quiet(self, client, bare: str, ptype: str) -> None:
        elt = domish.Element((None, "presence"))
        elt["to"] = bare
        elt["type"] = ptype
        client.send(elt)
        client.subscription_requests.pop(bare, None)

    # --- our presence ---------------------------------------------------------------------

    async def send_presence(
        self, client, show: str | None = None, statuses=None, priority: int | None = None
    ) -> None:
        state = client.own_presence
        if show is not None:
            if show not in SHOWS:
                raise errors.InvalidArgument(f"invalid presence show {show!r}")
            state["show"] = show
        if statuses is not None:
            state["statuses"] = dict(statuses)
        if priority is not None:
            if not -128 <= priority <= 127:
                raise errors.InvalidArgument("presence priority must be within -128..127")
            state["priority"] = priority
        elt = self._build_presence(state["show"], state["statuses"], state["priority"])
        if await self.host.hooks.run("presence_send", client, elt):
            client.send(elt)
            client.presence_sent = True

    @staticmethod
    def _build_presence(show: str, statuses: dict, priority: int = 0) -> domish.Element:
        elt = domish.Element((None, "presence"))
        if show:
            elt.addElement("show", content=show)
        for lang, text in statuses.items():
            status = elt.addElement("status", content=_clip(text, MAX_STATUS_LENGTH))
            if lang and lang != "default":
                status[(NS_XML, "lang")] = lang
        if priority:
            elt.addElement("priority", content=str(priority))
        return elt

    async def send_directed_presence(
        self, client, to: str, ptype: str = "", show: str = "", statuses=None
    ) -> None:
        """Directed presence (RFC 6121 4.6): available or unavailable, to one entity."""
        if ptype not in ("", "available", "unavailable"):
            raise errors.InvalidArgument("directed presence type must be '' or 'unavailable'")
        try:
            target = jabber_jid.JID(to)
        except (jabber_jid.InvalidFormat, TypeError):
            raise errors.InvalidArgument(f"{to!r} is not a valid JID") from None
        if show not in SHOWS:
            raise errors.InvalidArgument(f"invalid presence show {show!r}")
        unavailable = ptype == "unavailable"
        elt = self._build_presence("" if unavailable else show, dict(statuses or {}))
        elt["to"] = target.full()
        if unavailable:
            elt["type"] = "unavailable"
            client.send(elt)
            return
        if await self.host.hooks.run("presence_send", client, elt):
            client.send(elt)

    # --- contacts' presence ----------------------------------------------------------------

    def _forget_presences(self, client) -> None:
        """A fresh session: every presence we knew is stale (the server sends them again)."""
        known, client.presences = client.presences, {}
        for entity in known:
            self.host.bridge.emit("PresenceUpdate", client.profile, entity, "unavailable", 0, {})

    def _drop_resource(self, client, entity: str, statuses: dict) -> bool:
        if client.presences.pop(entity, None) is None:
            return False
        self.host.bridge.emit("PresenceUpdate", client.profile, entity, "unavailable", 0, statuses)
        return True

    def _on_presence(self, client, elt: domish.Element) -> None:
        try:
            self._handle_presence(client, elt)
        except Exception:
            log.exception("[%s] presence handling failed: %s", client.profile, elt.toXml()[:500])

    def _handle_presence(self, client, elt: domish.Element) -> None:
        try:
            entity = parse_jid(elt["from"])
        except (KeyError, jabber_jid.InvalidFormat):
            log.debug("[%s] presence without a valid sender ignored", client.profile)
            return
        ptype = elt.getAttribute("type") or "available"
        if ptype in SUBSCRIPTION_TYPES:
            self._on_subscription(client, entity, ptype, elt)
            return
        if ptype == "probe":
            log.debug("[%s] presence probe from %s ignored", client.profile, entity.full())
            return
        if ptype not in ("available", "unavailable", "error"):
            log.info("[%s] presence of unknown type %r ignored", client.profile, ptype)
            return
        own_resource = entity == client.jid
        claimed = getattr(elt, "claimed_by", None)
        if claimed and ptype != "error":
            # a plugin took it over: not a contact's resource (a room occupant: XEP-0045)
            log.debug("[%s] presence from %s left to %s", client.profile, entity.full(), claimed)
        elif ptype == "error":
            log.info("[%s] presence error from %s", client.profile, entity.full())
            if not own_resource:
                self._drop_resource(client, entity.full(), {})
        elif ptype == "unavailable":
            statuses = self._parse_statuses(elt)
            if not own_resource:
                bare = entity.userhost()
                client.last_unavailable[bare] = {"statuses": statuses, "timestamp": time.time()}
                if entity.resource is None:
                    # from the bare JID: every resource is gone
                    for full in [e for e in client.presences if _bare_of(e) == bare]:
                        self._drop_resource(client, full, statuses)
                    self.host.bridge.emit(
                        "PresenceUpdate", client.profile, bare, "unavailable", 0, statuses
                    )
                elif not self._drop_resource(client, entity.full(), statuses):
                    self.host.bridge.emit(
                        "PresenceUpdate",
                        client.profile,
                        entity.full(),
                        "unavailable",
                        0,
                        statuses,
                    )
        elif not own_resource:
            show, statuses, priority = self._parse_available(elt)
            client.presences[entity.full()] = {
                "jid": entity.userhost(),
                "resource": entity.resource or "",
                "show": show,
                "priority": priority,
                "statuses": statuses,
                "timestamp": time.time(),
            }
            self.host.bridge.emit(
                "PresenceUpdate", client.profile, entity.full(), show, priority, statuses
            )
        d = defer.ensureDeferred(self.host.hooks.run("presence_received", client, elt))
        d.addErrback(lambda f: log.error("presence_received hooks failed: %s", f.value))

    @staticmethod
    def _parse_statuses(elt: domish.Element) -> dict:
        statuses = {}
        for child in elt.elements():
            if child.name == "status" and len(statuses) < 20:
                lang = child.getAttribute((NS_XML, "lang")) or "default"
                statuses[_clip(lang, 35)] = _clip(str(child), MAX_STATUS_LENGTH)
        return statuses

    def _parse_available(self, elt: domish.Element) -> tuple[str, dict, int]:
        show = ""
        priority = 0
        for child in elt.elements():
            if child.name == "show" and str(child) in SHOWS:
                show = str(child)
            elif child.name == "priority":
                try:
                    priority = max(-128, min(127, int(str(child).strip())))
                except ValueError:
                    pass
        return show, self._parse_statuses(elt), priority

    def presence_statuses(self, client) -> list[dict]:
        """Every available contact resource (and our other resources)."""
        return [{"entity": e, **p} for e, p in client.presences.items()]

    def presence_of(self, client, jid: str) -> dict:
        """The presence of a full JID, or the most available resource of a bare JID."""
        try:
            entity = jabber_jid.JID(jid)
        except (jabber_jid.InvalidFormat, TypeError):
            raise errors.InvalidArgument(f"{jid!r} is not a valid JID") from None
        if entity.resource is not None:
            found = client.presences.get(entity.full())
            candidates = [(entity.full(), found)] if found else []
        else:
            bare = entity.userhost()
            candidates = [(e, p) for e, p in client.presences.items() if p["jid"] == bare]
        if not candidates:
            last = client.last_unavailable.get(entity.userhost(), {})
            return {"entity": entity.full(), "show": "unavailable", **last}
        rank = {"chat": 0, "": 1, "away": 2, "xa": 3, "dnd": 4}
        full, best = min(
            candidates, key=lambda ep: (-ep[1]["priority"], rank.get(ep[1]["show"], 5), ep[0])
        )
        return {"entity": full, **best}

    # --- bridge ---------------------------------------------------------------------------

    def _register_bridge(self) -> None:
        host = self.host
        P = ("profile", "s", "profile name (empty: the default profile)")

        def method(name, handler, args=(), out=None, doc=""):
            host.bridge.add_method(name, handler, args=args, out=out, doc=doc, interface="core")

        async def client_of(profile):
            return host.get_client(await host.profiles.resolve(profile))

        async def roster_add(profile, jid, name, groups):
            await self.roster_set(await client_of(profile), jid, name, groups)

        method(
            "RosterAdd",
            roster_add,
            args=(
                P,
                ("jid", "s", "contact's bare JID"),
                ("name", "s", "name to show; empty: none"),
                ("groups", "as", "groups the contact belongs to"),
            ),
            doc="Add a contact to the roster (no subscription is sent: see SubscriptionSend); "
            "ContactNew follows when the server confirms",
        )

        async def roster_update(profile, jid, name, groups):
            await self.roster_set(await client_of(profile), jid, name, groups, must_exist=True)

        method(
            "RosterUpdate",
            roster_update,
            args=(
                P,
                ("jid", "s", "contact's bare JID"),
                ("name", "s", "new name; empty: none"),
                ("groups", "as", "new list of groups (replaces the old one)"),
            ),
            doc="Change a contact's name and groups (NotFound if not in the roster)",
        )

        async def roster_remove(profile, jid):
            await self.roster_remove(await client_of(profile), jid)

        method(
            "RosterRemove",
            roster_remove,
            args=(P, ("jid", "s", "contact's bare JID")),
            doc="Remove a contact from the roster; subscriptions both ways are cancelled by the "
            "server; ContactDeleted follows",
        )

        async def subscription_send(profile, jid, ptype):
            await self.subscription_send(await client_of(profile), jid, ptype)

        method(
            "SubscriptionSend",
            subscription_send,
            args=(
                P,
                ("jid", "s", "contact's bare JID"),
                (
                    "type",
                    "s",
                    "subscribe (ask for their presence), subscribed (approve a request, or "
                    "pre-approve when the server supports it), unsubscribe (stop receiving "
                    "their presence), unsubscribed (deny a request or cancel theirs)",
                ),
            ),
            doc="Send a presence subscription request or answer (RFC 6121 section 3)",
        )

        async def subscription_requests(profile):
            return self.subscription_requests(await client_of(profile))

        method(
            "SubscriptionRequestsGet",
            subscription_requests,
            args=(P,),
            out=("aa{sv}", "jid, timestamp, and status / nick when given"),
            doc="Subscription requests waiting for an answer (approve with SubscriptionSend "
            "'subscribed', deny with 'unsubscribed')",
        )

        async def presence_get(profile, jid):
            return self.presence_of(await client_of(profile), jid)

        method(
            "PresenceGet",
            presence_get,
            args=(P, ("jid", "s", "bare JID (its most available resource) or full JID")),
            out=(
                "a{sv}",
                "entity, jid, resource, show ('unavailable' when offline), priority, statuses, "
                "timestamp",
            ),
            doc="Presence of a contact",
        )

        async def directed_send(profile, to, ptype, show, statuses):
            await self.send_directed_presence(await client_of(profile), to, ptype, show, statuses)

        method(
            "PresenceDirectedSend",
            directed_send,
            args=(
                P,
                ("to", "s", "recipient JID"),
                ("type", "s", "'' (available) or 'unavailable'"),
                ("show", "s", "'', away, chat, dnd or xa"),
                ("statuses", "a{ss}", "status text by language ('default' for none)"),
            ),
            doc="Send directed presence to one entity (RFC 6121 4.6)",
        )


def _bare_of(full: str) -> str:
    return full.split("/", 1)[0]
