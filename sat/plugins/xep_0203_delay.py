"""XEP-0203: Delayed Delivery.

A received message carrying ``<delay xmlns='urn:xmpp:delay' stamp=… from=…/>``
(offline storage, a room's history, a message resent after a disconnection)
keeps its original time: ``data["timestamp"]`` becomes the stamp,
``data["received_timestamp"]`` stays the time it reached us, and
``data["extra"]`` gets ``delay`` (the stamp, epoch seconds) and ``delay_from``.

Whom to believe: the ``from`` of a delay names who delayed the stanza (the
XEP: "the entity that originally sent the stanza or that delayed its delivery,
e.g. the room"), so the stamp is used only when ``from`` is one of

* our server or our own account (offline storage),
* the room, for a groupchat message,
* the sender itself (its bare or full JID) or its server,

or when ``from`` is absent (it is only RECOMMENDED). A delay claimed by any
other entity is ignored. Nothing proves who wrote the element, so the stamp is
also bounded: never later than the reception time (a contact cannot pin a
message at the bottom of the history), never before 1990; a bad stamp leaves
the reception time. When several delays are present (the XEP allows one),
the most trustworthy one wins: the room, then our server/account, then the
sender.
"""

from __future__ import annotations

import calendar
import logging
import re

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from sat.core.messages import full_jid, parse_jid
from sat.core.plugin import Plugin

log = logging.getLogger(__name__)

NS_DELAY = "urn:xmpp:delay"
#: after XEP-0359 (which runs first), before the plugins using the timestamp
PRIORITY = 900
#: 1990-01-01T00:00:00Z: older stamps are nonsense
MIN_STAMP = 631152000.0
#: seconds a stamp may be ahead of our clock (clock skew) before it is clamped
MAX_SKEW = 5.0
MAX_REASON_LENGTH = 200

_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
)


def parse_datetime(text: str | None) -> float | None:
    """A XEP-0082 DateTime (``2002-09-10T23:08:25[.123](Z|±hh:mm)``) as epoch seconds."""
    if not text or len(text) > 64:
        return None
    match = _DATETIME.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = float(match.group(7)) if match.group(7) else 0.0
    zone = match.group(8)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        return None
    try:
        epoch = calendar.timegm((year, month, day, hour, minute, min(second, 59), 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            return None
        epoch -= sign * (hours * 3600 + minutes * 60)
    return epoch + fraction


def _bare(value: str | None) -> tuple[str, str] | None:
    """(bare, full) of a JID string, None if invalid."""
    try:
        parsed = parse_jid(value)
    except (jabber_jid.InvalidFormat, TypeError):
        return None
    return parsed.userhost(), parsed.full()


class DelayPlugin(Plugin):
    name = "XEP-0203"
    label = "Delayed Delivery"
    xeps = ("XEP-0203",)
    recommendations = ("XEP-0359",)
    description = "Keeps the original time of delayed messages (offline storage, room history)."

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add("message_received", self._on_received, PRIORITY, namespaces=[NS_DELAY])

    def trust_rank(self, client, data: dict, delay_from: str | None) -> int | None:
        """Lower is more trusted; None: a delay claimed by an unrelated entity."""
        if delay_from is None:
            return 3
        parsed = _bare(delay_from)
        if parsed is None:
            return None
        bare, full = parsed
        own = client.jid
        if data["type"] == "groupchat" and bare == data["source"] and full == bare:
            return 0
        if full in (own.host, own.userhost()):
            return 1
        sender = data["source"]
        sender_full = full_jid(sender, data["source_resource"])
        sender_host = sender.rpartition("@")[2]
        if full in (sender, sender_full, sender_host):
            return 2
        return None

    def _on_received(self, client, elt: domish.Element, data: dict) -> None:
        if "delay" in data["extra"]:
            return  # an earlier stage (MAM's <forwarded/>) already set the time
        best = None
        for child in elt.elements():
            if child.name != "delay" or child.uri != NS_DELAY:
                continue
            delay_from = child.getAttribute("from")
            rank = self.trust_rank(client, data, delay_from)
            if rank is None:
                log.info(
                    "[%s] delay claimed by %r in a message from %s ignored",
                    client.profile,
                    delay_from,
                    elt.getAttribute("from"),
                )
                continue
            stamp = parse_datetime(child.getAttribute("stamp"))
            if stamp is None:
                log.info(
                    "[%s] invalid delay stamp %r from %s ignored",
                    client.profile,
                    (child.getAttribute("stamp") or "")[:64],
                    elt.getAttribute("from"),
                )
                continue
            if best is None or rank < best[0]:
                best = (rank, stamp, delay_from, str(child).strip()[:MAX_REASON_LENGTH])
        if best is None:
            return
        _rank, stamp, delay_from, reason = best
        received = data.get("received_timestamp") or data["timestamp"]
        if stamp < MIN_STAMP:
            log.info("[%s] delay stamp before 1990 ignored", client.profile)
            return
        if stamp > received:
            if stamp > received + MAX_SKEW:
                log.info(
                    "[%s] delay stamp %.0f s in the future clamped to the reception time",
                    client.profile,
                    stamp - received,
                )
            stamp = received
        data["timestamp"] = stamp
        extra = data["extra"]
        extra["delay"] = stamp
        if delay_from:
            extra["delay_from"] = delay_from
        if reason:
            extra["delay_reason"] = reason


PLUGIN = DelayPlugin
