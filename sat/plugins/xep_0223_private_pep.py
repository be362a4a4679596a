"""XEP-0223: Persistent Storage of Private Data via PubSub (private PEP nodes).

A helper for plugins keeping private data on the user's own PEP service (bookmarks):

* :meth:`PrivatePEPPlugin.is_supported` — the account announces a PEP service
  (identity ``pubsub/pep``) with ``publish-options`` (XEP-0223 §3): without it, a
  node could be created with the default (presence) access model and leak the data.
* :meth:`PrivatePEPPlugin.publish` — publishes with the publish-options
  ``pubsub#persist_items=true`` and ``pubsub#access_model=whitelist`` (plus any
  given, e.g. ``pubsub#max_items``). If the node exists with another configuration
  the server answers ``precondition-not-met``: the node is then reconfigured (we
  own it) and the publication tried once more.
* :meth:`PrivatePEPPlugin.retrieve` — items of a node (``[]`` when it does not exist),
  :meth:`PrivatePEPPlugin.retract` — with ``notify`` so other clients learn it.

Errors are :mod:`sat.core.errors` (see XEP-0030's ``send_iq``).
"""

from __future__ import annotations

import logging

from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import generic

from sat.core import (
    errors,
    wokkel_compat,  # noqa: F401  (sat/__init__ loads it before wokkel)
)
from sat.core.plugin import Plugin
from sat.plugins.xep_0030_disco import map_request_failure

log = logging.getLogger(__name__)

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_OWNER = NS_PUBSUB + "#owner"
NS_PUBSUB_ERRORS = NS_PUBSUB + "#errors"
NS_PUBSUB_EVENT = NS_PUBSUB + "#event"
NS_X_DATA = "jabber:x:data"
FEATURE_PUBLISH_OPTIONS = NS_PUBSUB + "#publish-options"
FORM_PUBLISH_OPTIONS = NS_PUBSUB + "#publish-options"
FORM_NODE_CONFIG = NS_PUBSUB + "#node_config"

#: the options XEP-0223 requires for private data
PRIVATE_OPTIONS = {"pubsub#persist_items": "true", "pubsub#access_model": "whitelist"}


def options_form(form_type: str, options: dict) -> domish.Element:
    x = domish.Element((NS_X_DATA, "x"))
    x["type"] = "submit"
    field = x.addElement("field")
    field["var"] = "FORM_TYPE"
    field["type"] = "hidden"
    field.addElement("value", content=form_type)
    for var, value in options.items():
        field = x.addElement("field")
        field["var"] = var
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if isinstance(v, bool):
                v = "true" if v else "false"
            field.addElement("value", content=str(v))
    return x


class _Request(generic.Request):
    """An IQ to our own account carrying one payload."""

    def __init__(self, recipient, payload: domish.Element, timeout, iq_type: str):
        super().__init__(recipient=recipient, stanzaType=iq_type)
        self.payload = payload
        self.timeout = timeout

    def toElement(self):
        element = super().toElement()
        element.addChild(self.payload)
        return element


def _child(elt: domish.Element | None, uri: str, name: str) -> domish.Element | None:
    if elt is None:
        return None
    return next((c for c in elt.elements() if c.uri == uri and c.name == name), None)


class PrivatePEPPlugin(Plugin):
    name = "XEP-0223"
    label = "Private PEP storage"
    xeps = ("XEP-0223",)
    dependencies = ("XEP-0030",)
    description = "Publish and read private data on the user's own PEP service."

    @property
    def disco(self):
        return self.host.plugins["XEP-0030"]

    async def is_supported(self, client) -> bool:
        """The account offers PEP with publish-options (so private nodes stay private)."""
        try:
            info = await self.disco.info(client, client.jid.userhostJID())
        except errors.SatError as e:
            log.info("[%s] no disco#info of our account: %s", client.profile, e)
            return False
        return ("pubsub", "pep") in info.identities and FEATURE_PUBLISH_OPTIONS in info.features

    async def _request(self, client, payload: domish.Element, what: str, iq_type: str):
        """Send an IQ to our own bare JID; StanzaError kept for the caller to inspect."""
        own = client.jid.userhostJID()
        request = _Request(own, payload, self.disco.timeout, iq_type)
        try:
            return await client.request(request)
        except jabber_error.StanzaError:
            raise
        except Exception as e:
            mapped = map_request_failure(e, own, what, self.disco.timeout)
            if mapped is e:
                raise
            raise mapped from None

    @staticmethod
    def _mapped(e: jabber_error.StanzaError, client, what: str) -> errors.SatError:
        return map_request_failure(e, client.jid.userhostJID(), what, None)

    async def publish(
        self,
        client,
        node: str,
        item_id: str | None,
        payload: domish.Element,
        extra_options: dict | None = None,
    ) -> None:
        """Publish ``payload`` as item ``item_id`` of our private node ``node``."""
        options = {**PRIVATE_OPTIONS, **(extra_options or {})}

        def build():
            pubsub = domish.Element((NS_PUBSUB, "pubsub"))
            publish = pubsub.addElement("publish")
            publish["node"] = node
            item = publish.addElement("item")
            if item_id:
                item["id"] = item_id
            item.addChild(payload)
            pubsub.addElement("publish-options").addChild(
                options_form(FORM_PUBLISH_OPTIONS, options)
            )
            return pubsub

        what = f"publication on {node}"
        try:
            await self._request(client, build(), what, "set")
            return
        except jabber_error.StanzaError as e:
            if e.appCondition is None or e.appCondition.name != "precondition-not-met":
                raise self._mapped(e, client, what) from None
        log.info("[%s] node %s has another configuration: reconfiguring it", client.profile, node)
        await self.configure(client, node, options)
        try:
            await self._request(client, build(), what, "set")
        except jabber_error.StanzaError as e:
            raise self._mapped(e, client, what) from None

    async def configure(self, client, node: str, options: dict) -> None:
        """Change the configuration of our node ``node`` (we own it)."""
        pubsub = domish.Element((NS_PUBSUB_OWNER, "pubsub"))
        configure = pubsub.addElement("configure")
        configure["node"] = node
        configure.addChild(options_form(FORM_NODE_CONFIG, options))
        what = f"configuration of {node}"
        try:
            await self._request(client, pubsub, what, "set")
        except jabber_error.StanzaError as e:
            raise self._mapped(e, client, what) from None

    async def retrieve(
        self, client, node: str, item_ids: list[str] | None = None
    ) -> list[tuple[str, domish.Element | None]]:
        """(item id, payload) of the items of our node ``node``; [] if it does not exist."""
        pubsub = domish.Element((NS_PUBSUB, "pubsub"))
        items = pubsub.addElement("items")
        items["node"] = node
        for item_id in item_ids or ():
            items.addElement("item")["id"] = item_id
        what = f"retrieval of {node}"
        try:
            iq = await self._request(client, pubsub, what, "get")
        except jabber_error.StanzaError as e:
            if e.condition == "item-not-found":
                return []
            raise self._mapped(e, client, what) from None
        result = []
        answer = _child(_child(iq, NS_PUBSUB, "pubsub"), NS_PUBSUB, "items")
        if answer is None:
            return result
        for item in answer.elements(NS_PUBSUB, "item"):
            payload = next(item.elements(), None)
            result.append((item.getAttribute("id") or "", payload))
        return result

    async def retract(self, client, node: str, item_id: str, notify: bool = True) -> None:
        pubsub = domish.Element((NS_PUBSUB, "pubsub"))
        retract = pubsub.addElement("retract")
        retract["node"] = node
        if notify:
            retract["notify"] = "true"
        retract.addElement("item")["id"] = item_id
        what = f"retraction from {node}"
        try:
            await self._request(client, pubsub, what, "set")
        except jabber_error.StanzaError as e:
            raise self._mapped(e, client, what) from None

    @staticmethod
    def parse_event(client, elt: domish.Element) -> tuple[str, list, list, bool] | None:
        """(node, [(id, payload)] published, [ids] retracted, purged) of a PEP event message.

        None unless the message is an event of our own PEP service (from our bare JID,
        or without ``from``).
        """
        sender = elt.getAttribute("from")
        if sender is not None:
            try:
                if jabber_jid.JID(sender) != client.jid.userhostJID():
                    return None
            except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
                return None
        event = _child(elt, NS_PUBSUB_EVENT, "event")
        if event is None:
            return None
        for child in event.elements():
            if child.uri != NS_PUBSUB_EVENT:
                continue
            node = child.getAttribute("node")
            if not node:
                continue
            if child.name in ("purge", "delete"):
                return node, [], [], True
            if child.name != "items":
                continue
            published = []
            retracted = []
            for entry in child.elements():
                if entry.uri != NS_PUBSUB_EVENT:
                    continue
                if entry.name == "item":
                    published.append((entry.getAttribute("id") or "", next(entry.elements(), None)))
                elif entry.name == "retract" and entry.getAttribute("id"):
                    retracted.append(entry["id"])
            return node, published, retracted, False
        return None


PLUGIN = PrivatePEPPlugin
