"""XEP-0092: Software Version.

We answer ``jabber:iq:version`` requests with our name ("Salut à Toi") and
version; the operating system is only told when ``[xep_0092] show_os`` is
true (it is off by default: it helps attackers more than contacts). Other
entities' versions are asked with :meth:`VersionPlugin.get_version`.
"""

from __future__ import annotations

import logging
import platform

from twisted.words.protocols.jabber.xmlstream import toResponse
from twisted.words.xish import domish
from wokkel import disco, iwokkel
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core import wokkel_compat  # noqa: F401  (sat/__init__ loads it before wokkel)
from sat.core.plugin import Plugin
from sat.memory.config import register_option, register_section

log = logging.getLogger(__name__)

NS_VERSION = "jabber:iq:version"
VERSION_REQUEST = f"/iq[@type='get']/query[@xmlns='{NS_VERSION}']"
SOFTWARE_NAME = "Salut à Toi"

register_section("xep_0092", "Software version (XEP-0092) answers to other entities.")
register_option(
    "xep_0092",
    "show_os",
    "bool",
    False,
    "Include the operating system (e.g. `Linux 6.1`) when answering software version "
    "requests; off by default, for privacy.",
)


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def os_description() -> str:
    system = platform.system() or "unknown"
    release = platform.release()
    return f"{system} {release}".strip()


@implementer(iwokkel.IDisco)
class VersionHandler(XMPPHandler):
    def __init__(self, plugin: VersionPlugin):
        super().__init__()
        self.plugin = plugin

    def connectionInitialized(self):
        self.xmlstream.addObserver(VERSION_REQUEST, self.on_version_request)

    def on_version_request(self, iq):
        if iq.handled:
            return
        iq.handled = True
        response = toResponse(iq, "result")
        query = response.addElement((NS_VERSION, "query"))
        name, version, os_ = self.plugin.own_version()
        query.addElement("name", content=name)
        query.addElement("version", content=version)
        if os_:
            query.addElement("os", content=os_)
        self.xmlstream.send(response)

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if nodeIdentifier:
            return []
        return [disco.DiscoFeature(NS_VERSION)]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


class VersionPlugin(Plugin):
    name = "XEP-0092"
    label = "Software Version"
    xeps = ("XEP-0092",)
    dependencies = ("XEP-0030",)
    description = "Answers and sends software version requests."

    def __init__(self, host):
        super().__init__(host)
        show_os = False
        config = getattr(host, "config", None)
        if config is not None:
            try:
                show_os = _as_bool(config.get("xep_0092", "show_os"))
            except Exception:
                show_os = False
        self.show_os = show_os
        bridge = getattr(host, "bridge", None)
        if bridge is not None:
            bridge.add_method(
                "SoftwareVersionGet",
                self._bridge_version_get,
                args=[
                    ("profile", "s", "profile to send the request from"),
                    ("jid", "s", "entity to ask (a full JID for a client); empty: the server"),
                ],
                out=("a{sv}", "name, version and os; a key is absent when not told"),
                doc="Software name, version and operating system of an entity (XEP-0092).",
                interface="plugin",
            )

    def get_handler(self, client):
        return VersionHandler(self)

    def own_version(self) -> tuple[str, str, str | None]:
        """(name, version, os or None) we tell others."""
        version = str(getattr(self.host, "version", "") or "unknown")
        return SOFTWARE_NAME, version, os_description() if self.show_os else None

    async def get_version(self, client, jid=None) -> tuple[str | None, str | None, str | None]:
        """(name, version, os) of ``jid`` (None: our server); None for what is not told."""
        disco_plugin = self.host.plugins["XEP-0030"]
        query = domish.Element((NS_VERSION, "query"))
        iq = await disco_plugin.send_iq(client, jid, query, what="software version request")
        result = next(iq.elements(NS_VERSION, "query"), None)
        values = {}
        for key in ("name", "version", "os"):
            elt = None if result is None else next(result.elements(NS_VERSION, key), None)
            text = str(elt).strip() if elt is not None else ""
            values[key] = text or None
        return values["name"], values["version"], values["os"]

    async def _bridge_version_get(self, profile: str, jid: str) -> dict:
        client = self.host.get_client(profile)
        name, version, os_ = await self.get_version(client, jid or None)
        result = {}
        for key, value in (("name", name), ("version", version), ("os", os_)):
            if value is not None:
                result[key] = value
        return result


PLUGIN = VersionPlugin
