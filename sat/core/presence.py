"""RFC 6121 basics: roster retrieval and pushes, our presence, contacts' presence.

On a fresh session (not a resumed one) the roster is fetched, then the initial
presence goes out through the ``presence_send`` hooks (so plugins add entity
capabilities and the like). Roster pushes are only accepted from our own
account (RFC 6121 2.1.6); anything else is ignored.
"""

from __future__ import annotations

import logging

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish

from sat.core import errors

log = logging.getLogger(__name__)

NS_ROSTER = "jabber:iq:roster"
SHOWS = ("", "away", "chat", "dnd", "xa")


def parse_roster_item(item: domish.Element) -> dict | None:
    try:
        entity = jabber_jid.JID(item["jid"]).userhost()
    except (KeyError, jabber_jid.InvalidFormat):
        return None
    return {
        "jid": entity,
        "name": item.getAttribute("name", ""),
        "subscription": item.getAttribute("subscription", "none"),
        "ask": item.getAttribute("ask", ""),
        "groups": sorted({str(g) for g in item.elements() if g.name == "group" and str(g)}),
    }


class PresenceHandling:
    def __init__(self, host):
        self.host = host

    def attach(self, client) -> None:
        client.roster = {}
        client.presences = {}
        client.own_presence = {"show": "", "statuses": {}, "priority": 0}

        def on_stream(xs):
            xs.addObserver("/presence", lambda elt: self._on_presence(client, elt))
            xs.addObserver(
                f"/iq[@type='set']/query[@xmlns='{NS_ROSTER}']",
                lambda elt: self._on_roster_push(client, elt),
            )

        client.factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, on_stream)

    async def session_started(self, client) -> None:
        try:
            await self.fetch_roster(client)
        except Exception as e:
            log.warning("[%s] roster retrieval failed: %s", client.profile, e)
        await self.send_presence(client)

    async def fetch_roster(self, client) -> None:
        iq = xmlstream.IQ(client.xmlstream, "get")
        iq.addElement((NS_ROSTER, "query"))
        result = await iq.send()
        query = next((c for c in result.elements() if c.name == "query"), None)
        roster = {}
        for item in query.elements() if query is not None else ():
            parsed = parse_roster_item(item)
            if parsed is not None:
                roster[parsed["jid"]] = parsed
        client.roster = roster
        for contact in roster.values():
            self.host.bridge.emit("ContactNew", client.profile, contact["jid"], contact)

    def _on_roster_push(self, client, iq: domish.Element) -> None:
        sender = iq.getAttribute("from")
        if sender not in (None, client.jid.userhost(), client.jid.full()):
            log.warning("[%s] roster push from %s ignored", client.profile, sender)
            return
        iq.handled = True
        reply = xmlstream.toResponse(iq, "result")
        client.send(reply)
        query = next((c for c in iq.elements() if c.name == "query"), None)
        for item in query.elements() if query is not None else ():
            parsed = parse_roster_item(item)
            if parsed is None:
                continue
            if parsed["subscription"] == "remove":
                client.roster.pop(parsed["jid"], None)
                self.host.bridge.emit("ContactDeleted", client.profile, parsed["jid"])
            else:
                client.roster[parsed["jid"]] = parsed
                self.host.bridge.emit("ContactNew", client.profile, parsed["jid"], parsed)

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
        elt = domish.Element((None, "presence"))
        if state["show"]:
            elt.addElement("show", content=state["show"])
        for lang, text in state["statuses"].items():
            status = elt.addElement("status", content=text)
            if lang and lang != "default":
                status[(xmlstream.NS_XML, "lang")] = lang
        if state["priority"]:
            elt.addElement("priority", content=str(state["priority"]))
        if await self.host.hooks.run("presence_send", client, elt):
            client.send(elt)

    def _on_presence(self, client, elt: domish.Element) -> None:
        try:
            entity = jabber_jid.JID(elt["from"])
        except (KeyError, jabber_jid.InvalidFormat):
            return
        ptype = elt.getAttribute("type", "available")
        if ptype not in ("available", "unavailable"):
            # subscription handling belongs to the IM features: tell frontends, change nothing
            self.host.bridge.emit("SubscriptionEvent", client.profile, entity.full(), ptype)
            return
        show = ""
        statuses = {}
        priority = 0
        for child in elt.elements():
            if child.name == "show" and str(child) in SHOWS:
                show = str(child)
            elif child.name == "status":
                lang = child.getAttribute((xmlstream.NS_XML, "lang")) or "default"
                statuses[lang] = str(child)[:2000]
            elif child.name == "priority":
                try:
                    priority = max(-128, min(127, int(str(child))))
                except ValueError:
                    pass
        if ptype == "unavailable":
            client.presences.pop(entity.full(), None)
            show = "unavailable"
        else:
            client.presences[entity.full()] = {
                "show": show,
                "priority": priority,
                "statuses": statuses,
            }
        defer.ensureDeferred(self.host.hooks.run("presence_received", client, elt))
        self.host.bridge.emit(
            "PresenceUpdate", client.profile, entity.full(), show, priority, statuses
        )
