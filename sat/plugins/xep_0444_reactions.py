"""XEP-0444: Message Reactions (``urn:xmpp:reactions:0``).

Sending
    ``MessageReactionsSet(profile, uid, reactions)``: the XEP's semantics — the list is
    the *whole* set of our reactions to that message, replacing the previous one (an
    empty list removes them all). Each reaction must be one emoji (see
    :func:`is_emoji`), at most :data:`MAX_REACTIONS`, duplicates dropped. The message
    is referred to by the room's stanza-id in a room (a group chat message without
    one cannot be reacted to, as the XEP says), else by its origin-id or ``id``. A
    room (or contact) advertising ``urn:xmpp:reactions:0:restrictions`` (XEP-0128
    form: ``max_reactions_per_user``, ``allowlist``) has them checked before sending.
    A 1:1 reaction is applied at once (reverted if the contact rejects it with a
    ``not-acceptable`` error, as the XEP requires); a group chat one when the room
    reflects it.

Receiving
    ``<reactions id=…>`` from a party of the conversation (1:1) or an occupant of the
    room is aggregated per sender: ``extra["reactions_by"]`` = ``{sender key: {"jid",
    "reactions", "timestamp"}}`` (the key is the occupant-id in a room that announces
    XEP-0421, else the real JID when known, else the bare JID or room/nick) and the
    summary frontends show, ``extra["reactions"]`` = ``{emoji: [sender JIDs]}``; then
    ``MessageUpdate(profile, uid, "reaction", {"reactions": …})``. Rules: one
    ``<reactions/>`` per message (else ignored), reactions that are not one emoji (or
    too long) are dropped with a log line, duplicates ignored, at most
    :data:`MAX_REACTIONS` kept; an update older than the one we have from that
    sender (a delayed message) is ignored; reactions to retracted messages are ignored.
    Reactions to a message we do not have yet are kept (see
    :class:`sat.plugins._pending_references.PendingReferences`: bounded, saved across
    restarts) and applied, with the usual ``MessageUpdate``, when it is stored.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections import OrderedDict

from twisted.internet import defer
from twisted.words.xish import domish

from sat.core import errors, hooks
from sat.plugins._editing import (
    EARLY_PRIORITY,
    NS_HINTS,
    Author,
    EditingPlugin,
    FeaturesHandler,
    children,
    valid_id,
)

log = logging.getLogger(__name__)

NS_REACTIONS = "urn:xmpp:reactions:0"
NS_RESTRICTIONS = "urn:xmpp:reactions:0:restrictions"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
#: reactions kept per sender and message
MAX_REACTIONS = 20
#: code points in one reaction (the longest emoji ZWJ sequences have about 10)
MAX_REACTION_CODEPOINTS = 16
#: <reaction/> elements looked at in one message
MAX_ELEMENTS = 100
#: sent reactions remembered to revert them on an error answer
PENDING_KEPT = 200

_ZWJ = 0x200D
_VS15 = 0xFE0E
_VS16 = 0xFE0F
_KEYCAP = 0x20E3
_TAG_CANCEL = 0xE007F

# Extended_Pictographic (Unicode emoji data), condensed to ranges
_PICTOGRAPHIC = (
    (0x00A9, 0x00A9),
    (0x00AE, 0x00AE),
    (0x203C, 0x203C),
    (0x2049, 0x2049),
    (0x2122, 0x2122),
    (0x2139, 0x2139),
    (0x2194, 0x2199),
    (0x21A9, 0x21AA),
    (0x231A, 0x231B),
    (0x2328, 0x2328),
    (0x2388, 0x2388),
    (0x23CF, 0x23CF),
    (0x23E9, 0x23F3),
    (0x23F8, 0x23FA),
    (0x24C2, 0x24C2),
    (0x25AA, 0x25AB),
    (0x25B6, 0x25B6),
    (0x25C0, 0x25C0),
    (0x25FB, 0x25FE),
    (0x2600, 0x27BF),
    (0x2934, 0x2935),
    (0x2B05, 0x2B07),
    (0x2B1B, 0x2B1C),
    (0x2B50, 0x2B50),
    (0x2B55, 0x2B55),
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x3297, 0x3297),
    (0x3299, 0x3299),
    (0x1F000, 0x1F0FF),
    (0x1F10D, 0x1F10F),
    (0x1F12F, 0x1F12F),
    (0x1F16C, 0x1F171),
    (0x1F17E, 0x1F17F),
    (0x1F18E, 0x1F18E),
    (0x1F191, 0x1F19A),
    (0x1F1AD, 0x1F1E5),
    (0x1F201, 0x1F20F),
    (0x1F21A, 0x1F21A),
    (0x1F22F, 0x1F22F),
    (0x1F232, 0x1F23A),
    (0x1F23C, 0x1F23F),
    (0x1F249, 0x1F3FA),
    (0x1F400, 0x1F53D),
    (0x1F546, 0x1F64F),
    (0x1F680, 0x1F6FF),
    (0x1F774, 0x1F77F),
    (0x1F7D5, 0x1F7FF),
    (0x1F80C, 0x1F80F),
    (0x1F848, 0x1F84F),
    (0x1F85A, 0x1F85F),
    (0x1F888, 0x1F88F),
    (0x1F8AE, 0x1F8FF),
    (0x1F90C, 0x1F93A),
    (0x1F93C, 0x1F945),
    (0x1F947, 0x1FAFF),
    (0x1FC00, 0x1FFFD),
)


def _pictographic(cp: int) -> bool:
    return any(low <= cp <= high for low, high in _PICTOGRAPHIC)


def _regional(cp: int) -> bool:
    return 0x1F1E6 <= cp <= 0x1F1FF


def _skin_tone(cp: int) -> bool:
    return 0x1F3FB <= cp <= 0x1F3FF


def _tag(cp: int) -> bool:
    return 0xE0020 <= cp <= 0xE007E


def _element(cps: list[int], i: int) -> int:
    """Index after the emoji element starting at ``i``, or -1 if there is none."""
    n = len(cps)
    cp = cps[i]
    if _regional(cp):  # a flag: two regional indicators
        return i + 2 if i + 1 < n and _regional(cps[i + 1]) else -1
    if cp < 0x80 and (chr(cp).isdigit() or chr(cp) in "#*"):  # keycap: 1️⃣
        j = i + 1
        if j < n and cps[j] == _VS16:
            j += 1
        return j + 1 if j < n and cps[j] == _KEYCAP else -1
    if not (_pictographic(cp) or _skin_tone(cp)):
        return -1
    j = i + 1
    if j < n and cps[j] in (_VS15, _VS16):
        j += 1
    if j < n and _skin_tone(cps[j]):
        j += 1
    if j < n and _tag(cps[j]):  # subdivision flags: 🏴 + tags + cancel tag
        while j < n and _tag(cps[j]):
            j += 1
        if j >= n or cps[j] != _TAG_CANCEL:
            return -1
        j += 1
    return j


def is_emoji(text) -> bool:
    """True if ``text`` is one emoji (one RGI-like sequence: a pictograph with its
    variation selector / skin tone, a flag, a keycap, or such elements joined by ZWJ)."""
    if not isinstance(text, str) or not text:
        return False
    cps = [ord(c) for c in text]
    if len(cps) > MAX_REACTION_CODEPOINTS:
        return False
    i = _element(cps, 0)
    while 0 < i < len(cps):
        if cps[i] != _ZWJ or i + 1 >= len(cps):
            return False
        i = _element(cps, i + 1)
    if i != len(cps):
        return False
    # a lone text-style symbol (©, ™, ↔ ...) is fine only with the emoji presentation
    if len(cps) == 1 and cps[0] < 0x2300 and unicodedata.category(text) != "So":
        return False
    return True


def clean_reactions(values) -> tuple[list[str], list[str]]:
    """(kept reactions, refused ones): emojis only, duplicates dropped, order kept."""
    kept: list[str] = []
    refused: list[str] = []
    for value in values:
        if is_emoji(value):
            if value not in kept:
                kept.append(value)
        else:
            refused.append(value)
    return kept, refused


def summarize(reactions_by: dict) -> dict:
    """{emoji: [sender JIDs]} from the per-sender reactions."""
    summary: dict[str, list[str]] = {}
    for entry in reactions_by.values():
        for reaction in entry.get("reactions", ()):
            senders = summary.setdefault(reaction, [])
            if entry.get("jid") not in senders:
                senders.append(entry.get("jid", ""))
    return summary


class ReactionsPlugin(EditingPlugin):
    name = "XEP-0444"
    label = "Message Reactions"
    xeps = ("XEP-0444",)
    description = "Emoji reactions to messages, aggregated per sender."
    features = (NS_REACTIONS,)
    pending_kinds = ("reaction",)

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add(
            "message_received", self._on_received, EARLY_PRIORITY, namespaces=[NS_REACTIONS]
        )
        #: (profile, id of a reactions message we sent) -> (uid, our previous reactions)
        self._sent: OrderedDict[tuple[str, str], tuple[str, list[str]]] = OrderedDict()
        self._add_method(
            "MessageReactionsSet",
            self._bridge_set,
            args=[
                ("profile", "s", "profile (empty: the default profile)"),
                ("uid", "s", "uid of the message reacted to"),
                ("reactions", "as", "all our reactions to it (emojis); empty: none any more"),
            ],
            doc="Set our reactions to a message (XEP-0444): the list replaces our previous "
            "reactions. extra.reactions ({emoji: [senders]}) and the MessageUpdate signal "
            "(type reaction) follow (in a room, once the room reflects them).",
        )

    def get_handler(self, client):
        return ReactionsHandler(self, client)

    async def _bridge_set(self, profile: str, uid: str, reactions: list[str]) -> None:
        client = await self._client(profile)
        await self.set_reactions(client, uid, reactions)

    # --- sending --------------------------------------------------------------------------

    async def restrictions(self, client, entity: str) -> tuple[int | None, list[str] | None]:
        """(max reactions per user, allowlist) announced by ``entity``, (None, None) if none."""
        disco_plugin = self.host.plugins.get("XEP-0030")
        if disco_plugin is None:
            return None, None
        try:
            info = await disco_plugin.info(client, entity)
        except Exception as e:
            log.debug("[%s] no disco#info from %s: %s", client.profile, entity, e)
            return None, None
        form = (getattr(info, "extensions", None) or {}).get(NS_RESTRICTIONS)
        if form is None:
            return None, None
        maximum = allowlist = None
        field = form.fields.get("max_reactions_per_user")
        if field is not None and field.values:
            try:
                maximum = max(0, int(str(field.values[0])))
            except ValueError:
                maximum = None
        field = form.fields.get("allowlist")
        if field is not None and field.values:
            allowlist = [str(v) for v in field.values]
        return maximum, allowlist

    async def set_reactions(self, client, uid: str, reactions) -> None:
        if isinstance(reactions, str) or not all(isinstance(r, str) for r in reactions):
            raise errors.InvalidArgument("reactions must be a list of strings")
        kept, refused = clean_reactions(reactions)
        if refused:
            raise errors.InvalidArgument(
                f"not one emoji each: {', '.join(repr(r[:20]) for r in refused[:5])}"
            )
        if len(kept) > MAX_REACTIONS:
            raise errors.InvalidArgument(f"at most {MAX_REACTIONS} reactions per message")
        row = await self.get_message(client, uid)
        if (row.get("extra") or {}).get("retracted"):
            raise errors.PermissionDenied("a retracted message cannot be reacted to")
        peer, groupchat = self.conversation(client, row)
        ref = self.reference_for(row, "stable")
        if not ref:
            raise errors.InvalidArgument(
                "this message cannot be reacted to: no stanza-id from the room (XEP-0444)"
            )
        await self.check_peer(client, row, NS_REACTIONS, "message reactions")
        if groupchat:
            maximum, allowlist = await self.restrictions(client, peer)
            if maximum is not None and len(kept) > maximum:
                raise errors.InvalidArgument(f"{peer} accepts at most {maximum} reaction(s)")
            if allowlist is not None:
                outside = [r for r in kept if r not in allowlist]
                if outside:
                    raise errors.InvalidArgument(
                        f"{peer} only accepts these reactions: {' '.join(allowlist)}"
                    )

        def build(elt: domish.Element) -> None:
            container = elt.addElement((NS_REACTIONS, "reactions"))
            container["id"] = ref
            for reaction in kept:
                container.addElement("reaction", content=reaction)
            elt.addElement((NS_HINTS, "store"))

        own = self.own_author(client, row)
        previous = self._own_reactions(row, own)
        elt, data = await self.send_payload(client, row, build, extra={"receipt": False})
        if not groupchat:
            self._sent[(client.profile, elt["id"])] = (row["uid"], previous)
            while len(self._sent) > PENDING_KEPT:
                self._sent.popitem(last=False)
            await self.apply(client, row, own, kept, data["timestamp"])

    def own_author(self, client, row: dict) -> Author:
        return Author(bare=client.jid.userhost(), outgoing=True)

    @staticmethod
    def _own_reactions(row: dict, author: Author) -> list[str]:
        entry = ((row.get("extra") or {}).get("reactions_by") or {}).get(author.key) or {}
        return list(entry.get("reactions") or [])

    def on_error(self, client, elt: domish.Element) -> None:
        """A reactions message we sent was refused: put our previous reactions back."""
        key = (client.profile, elt.getAttribute("id") or "")
        if key not in self._sent:
            return
        error = next((c for c in elt.elements() if c.name == "error"), None)
        conditions = [c.name for c in error.elements() if c.uri == NS_STANZAS] if error else []
        if "not-acceptable" not in conditions:
            # e.g. the contact is offline: the reactions may still reach it (archive)
            log.info(
                "[%s] error answer to our reactions (%s): kept",
                client.profile,
                ", ".join(conditions) or "no condition",
            )
            return
        uid, previous = self._sent.pop(key)
        log.info("[%s] our reactions to %s were refused: reverted", client.profile, uid)

        async def revert():
            row = await self.host.storage.history_find(client.profile, uid=uid)
            if row is not None:
                await self.apply(client, row, self.own_author(client, row), previous, time.time())

        defer.ensureDeferred(revert()).addErrback(
            lambda f: log.error("[%s] reverting reactions failed: %s", client.profile, f.value)
        )

    # --- receiving ------------------------------------------------------------------------

    async def _on_received(self, client, elt: domish.Element, data: dict):
        containers = children(elt, NS_REACTIONS, "reactions")
        if not containers:
            return None
        profile = client.profile
        sender = elt.getAttribute("from") or data["source"]
        if len(containers) > 1:
            log.warning("[%s] message with several <reactions/> from %s ignored", profile, sender)
            return hooks.STOP
        ref = containers[0].getAttribute("id")
        if not valid_id(ref):
            log.warning("[%s] reactions with an invalid id from %s ignored", profile, sender)
            return hooks.STOP
        author = self.author_of(client, elt, data)
        if author is None:
            return hooks.STOP
        kept = self._parse(containers[0], profile, sender)
        if kept is None:
            return hooks.STOP  # nothing valid: not a removal of the previous reactions
        peer, groupchat = self.conversation(client, data)
        target = await self.find_referenced(client, ref, peer, groupchat)
        if target is None:
            # an empty set too: it replaces the same sender's earlier pending reactions
            pending = self.keep_pending(client, "reaction", ref, data, author, {"reactions": kept})
            log.info(
                "[%s] reactions from %s to unknown message %s %s",
                profile,
                sender,
                ref,
                "kept until that message arrives" if pending else "ignored",
            )
            return hooks.STOP
        if (target.get("extra") or {}).get("retracted"):
            log.info("[%s] reactions from %s to a retracted message ignored", profile, sender)
            return hooks.STOP
        await self.apply(client, target, author, kept, data["timestamp"])
        return hooks.STOP

    def _parse(self, container: domish.Element, profile: str, sender: str) -> list[str] | None:
        """The valid reactions of a ``<reactions/>`` (empty: none any more), None if it only
        had invalid ones."""
        values = []
        for element in container.elements():
            if element.name != "reaction" or element.uri != NS_REACTIONS:
                continue
            if len(values) >= MAX_ELEMENTS:
                break
            values.append(str(element))
        kept, refused = clean_reactions(values)
        if refused:
            log.info(
                "[%s] %d invalid reaction(s) from %s ignored (not one emoji each)",
                profile,
                len(refused),
                sender,
            )
        if len(kept) > MAX_REACTIONS:
            log.info("[%s] only the first %d reactions of %s kept", profile, MAX_REACTIONS, sender)
            kept = kept[:MAX_REACTIONS]
        if refused and not kept and values:
            return None
        return kept

    # --- reactions received before their message --------------------------------------------

    async def pending_apply(self, client, row: dict, entry: dict) -> None:
        if (row.get("extra") or {}).get("retracted"):
            log.info(
                "[%s] reactions received before message %s dropped: it is retracted",
                client.profile,
                row["uid"],
            )
            return
        reactions = [r for r in entry["data"].get("reactions") or () if is_emoji(r)]
        await self.apply(
            client, row, self.pending_author(entry), reactions[:MAX_REACTIONS], entry["timestamp"]
        )

    async def apply(
        self, client, target: dict, author: Author, reactions: list[str], timestamp: float
    ) -> None:
        """Replace ``author``'s reactions to ``target`` by ``reactions``."""
        extra = target.get("extra") or {}
        by = dict(extra.get("reactions_by") or {})
        key = author.key
        previous = by.get(key)
        if previous is not None and previous.get("timestamp", 0) > timestamp:
            log.debug("[%s] older reactions of %s ignored", client.profile, author.jid)
            return
        if reactions:
            by[key] = {"jid": author.jid, "reactions": list(reactions), "timestamp": timestamp}
        elif previous is None:
            return
        else:
            del by[key]
        summary = summarize(by)
        await self.update_row(
            client,
            target,
            "reaction",
            {"reactions_by": by or None, "reactions": summary or None},
            signal={"reactions": summary},
        )


class ReactionsHandler(FeaturesHandler):
    """Advertises the feature; watches error answers to our reactions."""

    def __init__(self, plugin: ReactionsPlugin, client):
        super().__init__(plugin.features)
        self.plugin = plugin
        self.client = client

    def connectionInitialized(self):
        self.xmlstream.addObserver("/message[@type='error']", self._on_error)

    def _on_error(self, elt: domish.Element) -> None:
        try:
            self.plugin.on_error(self.client, elt)
        except Exception:
            log.exception("[%s] reaction error handling failed", self.client.profile)


PLUGIN = ReactionsPlugin
