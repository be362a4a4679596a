"""XEP-0048 bookmarks (``storage:bookmarks``), kept in private PEP or private XML storage.

The fallback of the bookmarks plugin (``XEP-0402``) for servers that do not announce
``urn:xmpp:bookmarks:1#compat``. All bookmarks live in one ``<storage/>`` element:

* ``pep``: one item (id ``current``) of the private PEP node ``storage:bookmarks``
  (XEP-0048 §3.3, through :mod:`xep_0223_private_pep`);
* ``private``: XEP-0049 private XML storage (``jabber:iq:private``), for servers
  without PEP publish-options.

Changing one bookmark reads the storage, changes it and writes it back; URL
bookmarks and unknown elements of the storage are kept as they were. Bookmarks are
plain dicts: ``room``, ``name``, ``nick``, ``autojoin`` (bool), ``password`` (or None).
"""

from __future__ import annotations

import logging

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from sat.core import (
    errors,
    wokkel_compat,  # noqa: F401  (sat/__init__ loads it before wokkel)
)
from sat.core.plugin import Plugin

log = logging.getLogger(__name__)

NS_BOOKMARKS = "storage:bookmarks"
NS_PRIVATE = "jabber:iq:private"
PEP_NODE = NS_BOOKMARKS
PEP_ITEM = "current"
BACKENDS = ("pep", "private")
MAX_TEXT = 1_000


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true")


def parse_storage(storage: domish.Element | None) -> tuple[dict[str, dict], list[domish.Element]]:
    """({room: bookmark}, other children kept as they are) of a ``<storage/>`` element."""
    bookmarks: dict[str, dict] = {}
    others: list[domish.Element] = []
    if storage is None:
        return bookmarks, others
    for child in storage.elements():
        if child.name != "conference" or child.uri != NS_BOOKMARKS:
            others.append(child)
            continue
        try:
            room = jabber_jid.JID((child.getAttribute("jid") or "").strip())
        except (jabber_jid.InvalidFormat, UnicodeError, ValueError):
            log.info("bookmark with an invalid room JID ignored")
            continue
        if not room.user or room.resource:
            log.info("bookmark of %r (not a room JID) ignored", room.full()[:100])
            continue
        nick = password = None
        for sub in child.elements():
            if sub.name == "nick" and sub.uri == NS_BOOKMARKS:
                nick = str(sub)[:MAX_TEXT]
            elif sub.name == "password" and sub.uri == NS_BOOKMARKS:
                password = str(sub)[:MAX_TEXT]
        bookmarks[room.userhost()] = {
            "room": room.userhost(),
            "name": (child.getAttribute("name") or "")[:MAX_TEXT],
            "nick": nick or "",
            "autojoin": _bool(child.getAttribute("autojoin")),
            "password": password or None,
        }
    return bookmarks, others


def build_storage(bookmarks: dict[str, dict], others: list[domish.Element]) -> domish.Element:
    storage = domish.Element((NS_BOOKMARKS, "storage"))
    for bookmark in bookmarks.values():
        conference = storage.addElement("conference")
        conference["jid"] = bookmark["room"]
        if bookmark.get("name"):
            conference["name"] = bookmark["name"]
        conference["autojoin"] = "true" if bookmark.get("autojoin") else "false"
        if bookmark.get("nick"):
            conference.addElement("nick", content=bookmark["nick"])
        if bookmark.get("password"):
            conference.addElement("password", content=bookmark["password"])
    for other in others:
        storage.addChild(other)
    return storage


class LegacyBookmarksPlugin(Plugin):
    name = "XEP-0048"
    label = "Bookmarks (legacy storage)"
    xeps = ("XEP-0048", "XEP-0049")
    dependencies = ("XEP-0030", "XEP-0223")
    description = "Room bookmarks in one storage:bookmarks element (private PEP or private XML)."

    @property
    def pep(self):
        return self.host.plugins["XEP-0223"]

    async def read(self, client, backend: str) -> tuple[dict[str, dict], list[domish.Element]]:
        if backend == "pep":
            items = await self.pep.retrieve(client, PEP_NODE)
            storage = None
            for item_id, payload in items:
                if (
                    payload is not None
                    and payload.name == "storage"
                    and payload.uri == NS_BOOKMARKS
                    and (storage is None or item_id == PEP_ITEM)
                ):
                    storage = payload
            return parse_storage(storage)
        if backend == "private":
            query = domish.Element((NS_PRIVATE, "query"))
            query.addElement((NS_BOOKMARKS, "storage"))
            disco = self.host.plugins["XEP-0030"]
            try:
                iq = await disco.send_iq(
                    client, client.jid.userhostJID(), query, what="private storage request"
                )
            except errors.NotFound:
                return {}, []
            answer = next(iq.elements(NS_PRIVATE, "query"), None)
            storage = None
            if answer is not None:
                storage = next(answer.elements(NS_BOOKMARKS, "storage"), None)
            return parse_storage(storage)
        raise errors.InvalidArgument(f"unknown bookmarks backend {backend!r}")

    async def write(
        self, client, backend: str, bookmarks: dict[str, dict], others: list[domish.Element]
    ) -> None:
        storage = build_storage(bookmarks, others)
        if backend == "pep":
            await self.pep.publish(client, PEP_NODE, PEP_ITEM, storage)
            return
        if backend == "private":
            query = domish.Element((NS_PRIVATE, "query"))
            query.addChild(storage)
            disco = self.host.plugins["XEP-0030"]
            await disco.send_iq(
                client, client.jid.userhostJID(), query, what="private storage", iq_type="set"
            )
            return
        raise errors.InvalidArgument(f"unknown bookmarks backend {backend!r}")

    async def load(self, client, backend: str) -> dict[str, dict]:
        """{room: bookmark} stored with ``backend`` ("pep" or "private")."""
        bookmarks, _others = await self.read(client, backend)
        return bookmarks

    async def update(self, client, backend: str, room: str, bookmark: dict | None) -> None:
        """Set (or remove, with None) the bookmark of ``room``; other entries are kept."""
        bookmarks, others = await self.read(client, backend)
        if bookmark is None:
            if room not in bookmarks:
                raise errors.NotFound(f"no bookmark for {room}")
            del bookmarks[room]
        else:
            bookmarks[room] = bookmark
        await self.write(client, backend, bookmarks, others)


PLUGIN = LegacyBookmarksPlugin
