"""XEP-0359: Unique and Stable Stanza IDs.

The contract other plugins (corrections, retractions, reactions, markers, MAM)
rely on; this plugin's hooks run first (priority :data:`PRIORITY`):

Sending
    every message going through the pipeline carries
    ``<origin-id xmlns='urn:xmpp:sid:0' id=…/>`` equal to its ``id`` attribute
    and to ``data["uid"]``; ``data["origin_id"]`` is set.

Receiving
    ``data["origin_id"]`` is the ``<origin-id/>`` of the sender (only unique per
    sender: storage deduplicates on (source, origin_id));
    ``data["stanza_id"]`` / ``data["stanza_id_by"]`` come from a
    ``<stanza-id/>`` only when it can be trusted:

    * a 1:1 message (any type but groupchat): ``by`` is our own bare JID (our
      server's archive) and our account advertises ``urn:xmpp:sid:0``;
    * a groupchat message: ``by`` is the room (the bare JID the message comes
      from) and the room advertises ``urn:xmpp:sid:0``.

    Anyone can put a ``<stanza-id/>`` in a message; only an entity that
    announces the feature promises to strip forged ones with its own ``by``
    (XEP-0359 security considerations), so without the announcement the
    element is ignored. Values already set by an earlier stage (MAM sets the
    archive id itself) are kept.

    ``data["extra"]["message_id"]`` keeps the stanza's ``id`` attribute (what
    XEP-0184 receipts, XEP-0308 corrections and XEP-0333 markers refer to).
"""

from __future__ import annotations

import logging

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import disco, iwokkel
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core.messages import parse_jid
from sat.core.plugin import Plugin

log = logging.getLogger(__name__)

NS_SID = "urn:xmpp:sid:0"
#: hook priority: before every other message plugin (XEP-0280 unwraps copies before, at
#: 2000, and runs the inner message through the hooks again)
PRIORITY = 1100
#: longest id we keep (ids are opaque strings; a huge one is refused, not truncated)
MAX_ID_LENGTH = 256


def valid_id(value: str | None) -> bool:
    return bool(value) and len(value) <= MAX_ID_LENGTH and value.strip() == value


def _sid_children(elt: domish.Element, name: str):
    for child in elt.elements():
        if child.name == name and child.uri == NS_SID:
            yield child


def origin_id_of(elt: domish.Element) -> str | None:
    """The ``<origin-id/>`` of a message, None if absent or unusable."""
    for child in _sid_children(elt, "origin-id"):
        value = child.getAttribute("id")
        return value if valid_id(value) else None
    return None


def stanza_ids_of(elt: domish.Element) -> list[tuple[str, str]]:
    """Every well-formed ``<stanza-id/>`` as (id, normalised bare ``by``)."""
    found = []
    for child in _sid_children(elt, "stanza-id"):
        value, by = child.getAttribute("id"), child.getAttribute("by")
        if not valid_id(value) or not by:
            continue
        try:
            by_jid = parse_jid(by)
        except (jabber_jid.InvalidFormat, TypeError):
            continue
        if by_jid.resource:
            continue
        found.append((value, by_jid.userhost()))
    return found


@implementer(iwokkel.IDisco)
class UniqueIdsHandler(XMPPHandler):
    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        return [] if nodeIdentifier else [disco.DiscoFeature(NS_SID)]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


class UniqueIdsPlugin(Plugin):
    name = "XEP-0359"
    label = "Unique and Stable Stanza IDs"
    xeps = ("XEP-0359",)
    dependencies = ("XEP-0030",)
    description = "origin-id on sent messages, trusted stanza-id on received ones (dedup keys)."

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add("message_send", self._on_send, PRIORITY)
        # every message has an id to note; only those with a <stanza-id/> or an <origin-id/>
        # need the rest
        host.hooks.add("message_received", self._note_message_id, PRIORITY)
        host.hooks.add("message_received", self._on_received, PRIORITY, namespaces=[NS_SID])

    def get_handler(self, client):
        return UniqueIdsHandler()

    async def profile_connected(self, client) -> None:
        # learn early whether our archive stamps stanza-ids (the first message waits otherwise)
        try:
            await self.supports_sid(client, client.jid.userhost())
        except Exception as e:
            log.debug("[%s] stanza-id support of our account unknown: %s", client.profile, e)

    # --- sending -------------------------------------------------------------------

    def _on_send(self, client, elt: domish.Element, data: dict) -> None:
        msg_id = elt.getAttribute("id") or data.get("uid")
        if not msg_id:
            return
        if not elt.hasAttribute("id"):
            elt["id"] = msg_id
        for child in list(_sid_children(elt, "origin-id")):
            elt.children.remove(child)
        origin = elt.addElement((NS_SID, "origin-id"))
        origin["id"] = msg_id
        data["origin_id"] = msg_id

    # --- receiving -----------------------------------------------------------------

    async def supports_sid(self, client, entity: str) -> bool:
        """True if ``entity`` announces ``urn:xmpp:sid:0`` (disco, cached per session)."""
        disco_plugin = self.host.plugins.get("XEP-0030")
        if disco_plugin is None:
            return False
        try:
            return await disco_plugin.has_feature(client, NS_SID, entity)
        except Exception as e:
            log.info("[%s] cannot tell if %s stamps stanza-ids: %s", client.profile, entity, e)
            return False

    @staticmethod
    def _note_message_id(client, elt: domish.Element, data: dict) -> None:
        extra = data["extra"]
        msg_id = elt.getAttribute("id")
        if "message_id" not in extra and valid_id(msg_id):
            extra["message_id"] = msg_id

    def _on_received(self, client, elt: domish.Element, data: dict):
        # synchronous unless there is a stanza-id to check (a coroutine per message showed
        # in the receive loop)
        if data.get("origin_id") is None:
            data["origin_id"] = origin_id_of(elt)
        if data.get("stanza_id") is not None:
            return
        candidates = stanza_ids_of(elt)
        if not candidates:
            return
        if data["type"] == "groupchat":
            trusted_by = data["source"]
        else:
            trusted_by = client.jid.userhost()
        matching = [sid for sid, by in candidates if by == trusted_by]
        if len(matching) != 1:
            if matching:
                log.warning(
                    "[%s] %d stanza-ids by %s in one message from %s: all ignored",
                    client.profile,
                    len(matching),
                    trusted_by,
                    elt.getAttribute("from"),
                )
            return
        disco_plugin = self.host.plugins.get("XEP-0030")
        if disco_plugin is not None:
            # the usual case: our server's (or the room's) features are cached since login
            known = disco_plugin.cached_feature(client, NS_SID, trusted_by)
            if known is not None:
                self._accept_stanza_id(client, data, trusted_by, matching[0], known)
                return None
        return self._check_stanza_id(client, data, trusted_by, matching[0])

    async def _check_stanza_id(self, client, data: dict, trusted_by: str, stanza_id: str):
        supported = await self.supports_sid(client, trusted_by)
        self._accept_stanza_id(client, data, trusted_by, stanza_id, supported)

    @staticmethod
    def _accept_stanza_id(client, data: dict, trusted_by: str, stanza_id: str, supported: bool):
        if not supported:
            log.info(
                "[%s] stanza-id by %s ignored: %s does not announce %s",
                client.profile,
                trusted_by,
                trusted_by,
                NS_SID,
            )
            return
        data["stanza_id"] = stanza_id
        data["stanza_id_by"] = trusted_by


PLUGIN = UniqueIdsPlugin
