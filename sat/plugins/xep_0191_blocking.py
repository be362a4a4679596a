"""XEP-0191: Blocking Command.

When our server advertises ``urn:xmpp:blocking`` (disco#info of the server),
the block list is retrieved at each fresh session (before the initial
presence, so the server sends us its pushes) and kept in sync with the
server's pushes (``<block/>`` / ``<unblock/>`` sets, only accepted from our own
account). Every change is signalled with ``BlockingChanged``.

Bridge: ``BlockingList(profile) -> as``, ``Block(profile, jids)``,
``Unblock(profile, jids)``, ``BlockingClear(profile)`` (unblock everybody).
When the server does not support the protocol they fail with ``NotFound``.
"""

from __future__ import annotations

import logging

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish
from wokkel.subprotocols import XMPPHandler

from sat.core import (
    errors,
    wokkel_compat,  # noqa: F401  (sat/__init__ loads it before wokkel)
)
from sat.core.plugin import Plugin

log = logging.getLogger(__name__)

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
#: more JIDs than this in one list or command is refused / truncated
MAX_ITEMS = 10_000
PUSH_XPATHS = tuple(f"/iq[@type='set']/{c}[@xmlns='{NS_BLOCKING}']" for c in ("block", "unblock"))


def normalise_jid(value: str) -> str:
    """A JID as the server compares it (domain, bare or full); InvalidArgument if invalid."""
    if not isinstance(value, str) or not value.strip():
        raise errors.InvalidArgument("an empty JID cannot be blocked or unblocked")
    try:
        return jabber_jid.JID(value.strip()).full()
    except jabber_jid.InvalidFormat:
        raise errors.InvalidArgument(f"{value!r} is not a valid JID") from None


def parse_items(elt: domish.Element) -> list[str]:
    """The JIDs of the ``<item/>`` children of a blocklist/block/unblock element."""
    jids: list[str] = []
    for item in elt.elements(NS_BLOCKING, "item"):
        try:
            jid = normalise_jid(item.getAttribute("jid", ""))
        except errors.InvalidArgument:
            log.debug("ignoring invalid blocking item %r", item.getAttribute("jid"))
            continue
        if jid not in jids:
            jids.append(jid)
        if len(jids) >= MAX_ITEMS:
            break
    return jids


class BlockingHandler(XMPPHandler):
    def __init__(self, plugin: BlockingPlugin, client):
        super().__init__()
        self.plugin = plugin
        self.client = client

    def connectionInitialized(self):
        for xpath in PUSH_XPATHS:
            self.xmlstream.addObserver(xpath, self.plugin.on_push, client=self.client)


class BlockingPlugin(Plugin):
    name = "XEP-0191"
    label = "Blocking Command"
    xeps = ("XEP-0191",)
    dependencies = ("XEP-0030",)
    description = "Blocks and unblocks contacts with the server's block list."

    def __init__(self, host):
        super().__init__(host)
        #: profile -> set of blocked JIDs (None: not retrieved / not supported)
        self._lists: dict[str, list[str] | None] = {}
        self._register_bridge()

    @property
    def _disco(self):
        return self.host.plugins["XEP-0030"]

    def get_handler(self, client):
        return BlockingHandler(self, client)

    async def profile_connected(self, client) -> None:
        self._lists[client.profile] = None
        try:
            if not await self._disco.has_feature(client, NS_BLOCKING):
                log.info("[%s] the server does not support blocking (XEP-0191)", client.profile)
                return
            await self.fetch(client)
        except Exception as e:
            log.warning("[%s] cannot retrieve the block list: %s", client.profile, e)

    def profile_disconnected(self, client) -> None:
        self._lists.pop(client.profile, None)

    # --- protocol ------------------------------------------------------------------

    async def supported(self, client) -> bool:
        return await self._disco.has_feature(client, NS_BLOCKING)

    async def _require(self, client) -> None:
        if not await self.supported(client):
            raise errors.NotFound(
                f"the server of {client.jid.userhost()} does not support blocking (XEP-0191)"
            )

    async def fetch(self, client) -> list[str]:
        """Retrieve the block list (this also subscribes us to its pushes)."""
        await self._require(client)
        iq = await self._disco.send_iq(
            client,
            client.jid.userhost(),  # our account (Prosody refuses it addressed to the domain)
            domish.Element((NS_BLOCKING, "blocklist")),
            what="block list request",
        )
        blocklist = next(iq.elements(NS_BLOCKING, "blocklist"), None)
        jids = parse_items(blocklist) if blocklist is not None else []
        old = self._lists.get(client.profile) or []
        self._lists[client.profile] = jids
        added = [j for j in jids if j not in old]
        removed = [j for j in old if j not in jids]
        if added or removed:
            self.host.bridge.emit("BlockingChanged", client.profile, added, removed)
        return list(jids)

    async def get_list(self, client) -> list[str]:
        current = self._lists.get(client.profile)
        if current is None:
            return await self.fetch(client)
        return list(current)

    async def _command(self, client, command: str, jids: list[str]) -> None:
        await self._require(client)
        elt = domish.Element((NS_BLOCKING, command))
        for jid in jids:
            elt.addElement("item")["jid"] = jid
        await self._disco.send_iq(
            client, client.jid.userhost(), elt, what=f"{command} request", iq_type="set"
        )
        # the server pushes the change to every interested resource, us included; the push
        # updates the list (and signals)

    def _check_jids(self, jids) -> list[str]:
        if not jids:
            raise errors.InvalidArgument("no JID given")
        if len(jids) > MAX_ITEMS:
            raise errors.InvalidArgument(f"more than {MAX_ITEMS} JIDs at once")
        clean = []
        for jid in jids:
            jid = normalise_jid(jid)
            if jid not in clean:
                clean.append(jid)
        return clean

    async def block(self, client, jids) -> None:
        clean = self._check_jids(jids)
        own = client.jid.userhost()
        if own in clean or client.jid.host in clean:
            raise errors.InvalidArgument("our own account or server cannot be blocked")
        await self._command(client, "block", clean)

    async def unblock(self, client, jids) -> None:
        await self._command(client, "unblock", self._check_jids(jids))

    async def unblock_all(self, client) -> None:
        await self._command(client, "unblock", [])

    def on_push(self, iq: domish.Element, client) -> None:
        if iq.handled:
            return
        sender = iq.getAttribute("from")
        if sender is not None:
            try:
                sender_jid = jabber_jid.JID(sender)
            except jabber_jid.InvalidFormat:
                sender_jid = None
            if sender_jid is None or sender_jid.full() != client.jid.userhost():
                log.warning("[%s] block list push from %s ignored", client.profile, sender)
                return
        command = next(
            (c for c in iq.elements() if c.uri == NS_BLOCKING and c.name in ("block", "unblock")),
            None,
        )
        if command is None:
            return
        iq.handled = True
        client.send(xmlstream.toResponse(iq, "result"))
        current = self._lists.get(client.profile)
        if current is None:
            # not retrieved yet: ask for the whole list instead
            d = defer.ensureDeferred(self.fetch(client))
            d.addErrback(lambda f: log.warning("block list refresh failed: %s", f.value))
            return
        jids = parse_items(command)
        if command.name == "block":
            if not jids:
                log.warning("[%s] empty block push ignored", client.profile)
                return
            added = [j for j in jids if j not in current][: max(0, MAX_ITEMS - len(current))]
            current.extend(added)
            removed: list[str] = []
        else:
            if jids:
                removed = [j for j in jids if j in current]
            else:  # unblock without items: everybody is unblocked
                removed = list(current)
            current[:] = [j for j in current if j not in removed]
            added = []
        if added or removed:
            self.host.bridge.emit("BlockingChanged", client.profile, added, removed)

    # --- bridge ---------------------------------------------------------------------

    def _register_bridge(self) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is None:
            return
        P = ("profile", "s", "profile name (empty: the default profile)")

        async def client_of(profile):
            resolve = getattr(getattr(self.host, "profiles", None), "resolve", None)
            if resolve is not None:
                profile = await resolve(profile)
            return self.host.get_client(profile)

        async def blocking_list(profile):
            return await self.get_list(await client_of(profile))

        async def block(profile, jids):
            await self.block(await client_of(profile), jids)

        async def unblock(profile, jids):
            await self.unblock(await client_of(profile), jids)

        async def clear(profile):
            await self.unblock_all(await client_of(profile))

        bridge.add_method(
            "BlockingList",
            blocking_list,
            args=[P],
            out=("as", "blocked JIDs (domains, bare or full JIDs)"),
            doc="The block list (XEP-0191); NotFound if the server does not support blocking",
            interface="plugin",
        )
        bridge.add_method(
            "Block",
            block,
            args=[P, ("jids", "as", "JIDs to block (domain, bare or full JIDs)")],
            doc="Block entities: the server drops what they send us and what we send them "
            "(XEP-0191); BlockingChanged follows",
            interface="plugin",
        )
        bridge.add_method(
            "Unblock",
            unblock,
            args=[P, ("jids", "as", "JIDs to unblock (at least one)")],
            doc="Unblock entities (XEP-0191); BlockingChanged follows",
            interface="plugin",
        )
        bridge.add_method(
            "BlockingClear",
            clear,
            args=[P],
            doc="Unblock everybody (XEP-0191); BlockingChanged follows",
            interface="plugin",
        )
        bridge.add_signal(
            "BlockingChanged",
            args=[
                P,
                ("blocked", "as", "JIDs newly blocked"),
                ("unblocked", "as", "JIDs newly unblocked"),
            ],
            doc="The block list changed (from this or another client of the account)",
            interface="plugin",
        )


PLUGIN = BlockingPlugin
