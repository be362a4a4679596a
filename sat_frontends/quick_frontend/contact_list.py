"""A profile's contact list: roster items, their presence, unread counts, and joined rooms.

Fed by ``RosterGet`` / ``ContactNew`` / ``ContactDeleted`` / ``PresenceUpdate`` (and the MUC
signals for rooms). The UI reads :meth:`ContactList.rows`, a flat list of headers and entries
ready to display, cached until something changes (``version`` tells a view whether its copy is
stale), so opening or redrawing a list of thousands of contacts costs one sort, once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from sat_frontends.quick_frontend import jid as jidlib

__all__ = [
    "SHOW_ORDER",
    "Contact",
    "ContactList",
    "Occupant",
    "Room",
    "Row",
    "best_show",
    "NO_GROUP",
]

#: display order of presence values, most available first
SHOW_ORDER = {"chat": 0, "": 1, "away": 2, "xa": 3, "dnd": 4, "unavailable": 5}
#: name of the pseudo group of contacts without a group
NO_GROUP = "Contacts"


@dataclass(slots=True)
class Resource:
    show: str = ""
    priority: int = 0
    statuses: dict = field(default_factory=dict)


def best_show(resources: dict[str, Resource]) -> tuple[str, str]:
    """(show, status text) of the most available resource; ('unavailable', '') if none."""
    if not resources:
        return "unavailable", ""
    best = min(resources.values(), key=lambda r: (-r.priority, SHOW_ORDER.get(r.show, 5)))
    statuses = best.statuses or {}
    status = statuses.get("default") or next(iter(statuses.values()), "")
    return best.show, status


@dataclass(slots=True, eq=False)
class Contact:
    jid: str
    name: str = ""
    groups: tuple[str, ...] = ()
    subscription: str = "none"
    ask: str = ""
    in_roster: bool = True
    resources: dict[str, Resource] = field(default_factory=dict)
    unread: int = 0
    #: last chat state received (XEP-0085): active, composing, paused, inactive, gone
    chat_state: str = ""
    blocked: bool = False
    _sort_name: str = ""

    @property
    def display_name(self) -> str:
        return self.name or jidlib.node(self.jid) or self.jid

    @property
    def show(self) -> str:
        return best_show(self.resources)[0]

    @property
    def status(self) -> str:
        return best_show(self.resources)[1]

    @property
    def online(self) -> bool:
        return bool(self.resources)


@dataclass(slots=True, eq=False)
class Occupant:
    nick: str
    jid: str = ""
    role: str = "participant"
    affiliation: str = "none"
    show: str = ""
    chat_state: str = ""


@dataclass(slots=True, eq=False)
class Room:
    jid: str
    nick: str = ""
    subject: str = ""
    name: str = ""
    occupants: dict[str, Occupant] = field(default_factory=dict)
    joined: bool = True
    unread: int = 0
    mentions: int = 0

    @property
    def display_name(self) -> str:
        return self.name or jidlib.node(self.jid) or self.jid

    def nicks(self) -> list[str]:
        return sorted(self.occupants, key=str.casefold)


class Row(NamedTuple):
    """One line of the contact list view.

    ``kind`` is ``"header"`` (a section: rooms, a group; ``key`` is its name, ``count`` and
    ``online`` its sizes), ``"room"`` or ``"contact"`` (``item`` is the Room/Contact).
    """

    kind: str
    key: str
    item: object = None
    count: int = 0
    online: int = 0


class ContactList:
    def __init__(self, profile: str = ""):
        self.profile = profile
        self.contacts: dict[str, Contact] = {}
        self.rooms: dict[str, Room] = {}
        #: bumped on every change: views compare it with the version they drew
        self.version = 0
        self.show_offline = True
        self.collapsed: set[str] = set()
        self._rows: list[Row] | None = None
        self._rows_key: tuple | None = None

    # ------------------------------------------------------------------ changes

    def _changed(self) -> None:
        self.version += 1
        self._rows = None

    def set_roster(self, items: Iterable[dict]) -> None:
        """Replace the roster with ``items`` (RosterGet records); presences are kept."""
        old = self.contacts
        contacts: dict[str, Contact] = {}
        apply = self._apply
        for item in items:
            jid = item.get("jid")
            if not jid:
                continue
            if "/" in jid:
                jid = jidlib.bare(jid)
            contact = old.get(jid)
            if contact is None:
                # the common case at login, kept cheap: thousands of contacts
                name = item.get("name") or ""
                groups = item.get("groups") or ()
                if len(groups) > 1:
                    groups = tuple(sorted({g for g in groups if g}))
                else:
                    groups = tuple(g for g in groups if g)
                display = name or (jid.split("@", 1)[0] if "@" in jid else jid)
                contact = Contact(
                    jid,
                    name,
                    groups,
                    item.get("subscription") or "none",
                    item.get("ask") or "",
                    True,
                    {},
                    0,
                    "",
                    False,
                    display.casefold(),
                )
            else:
                apply(contact, item)
            contacts[jid] = contact
        # contacts outside the roster we talk to (or who talk to us) stay, flagged
        for jid, contact in old.items():
            if jid not in contacts and (contact.resources or contact.unread):
                contact.in_roster = False
                contacts[jid] = contact
        self.contacts = contacts
        self._changed()

    @staticmethod
    def _apply(contact: Contact, attrs: dict) -> None:
        if "name" in attrs:
            contact.name = attrs.get("name") or ""
        if "groups" in attrs:
            contact.groups = tuple(sorted({g for g in attrs.get("groups") or () if g}))
        if "subscription" in attrs:
            contact.subscription = attrs.get("subscription") or "none"
        if "ask" in attrs:
            contact.ask = attrs.get("ask") or ""
        contact.in_roster = True
        contact._sort_name = contact.display_name.casefold()

    def update_contact(self, jid: str, attrs: dict) -> Contact:
        jid = jidlib.bare(jid)
        contact = self.contacts.get(jid)
        if contact is None:
            contact = self.contacts[jid] = Contact(jid)
        self._apply(contact, attrs)
        self._changed()
        return contact

    def remove_contact(self, jid: str) -> None:
        jid = jidlib.bare(jid)
        contact = self.contacts.get(jid)
        if contact is None:
            return
        if contact.resources or contact.unread:
            contact.in_roster = False
            contact.groups = ()
        else:
            del self.contacts[jid]
        self._changed()

    def get(self, jid: str) -> Contact | None:
        return self.contacts.get(jidlib.bare(jid))

    def ensure(self, jid: str) -> Contact:
        """The contact for ``jid``, created (outside the roster) if unknown."""
        jid = jidlib.bare(jid)
        contact = self.contacts.get(jid)
        if contact is None:
            contact = self.contacts[jid] = Contact(jid, in_roster=False)
            contact._sort_name = contact.display_name.casefold()
            self._changed()
        return contact

    def presence_update(self, entity: str, show: str, priority: int, statuses: dict) -> str:
        """Apply a PresenceUpdate; returns the bare JID it concerns."""
        bare = jidlib.bare(entity)
        res = jidlib.resource(entity)
        room = self.rooms.get(bare)
        if room is not None and res:
            occupant = room.occupants.get(res)
            if show == "unavailable":
                room.occupants.pop(res, None)
            elif occupant is not None:
                occupant.show = show
            self._changed()
            return bare
        contact = self.contacts.get(bare)
        if contact is None:
            # not a contact (a room's occupant before the room is known, a directed
            # presence...): nothing to show in the contact list
            return bare
        if show == "unavailable":
            if res:
                contact.resources.pop(res, None)
            else:
                contact.resources.clear()
        else:
            contact.resources[res] = Resource(show, priority, dict(statuses or {}))
        self._changed()
        return bare

    def clear_presences(self) -> None:
        for contact in self.contacts.values():
            contact.resources.clear()
        self._changed()

    def set_unread(self, jid: str, count: int) -> None:
        jid = jidlib.bare(jid) if jid not in self.rooms else jid
        room = self.rooms.get(jid)
        target = room if room is not None else self.contacts.get(jid)
        if target is not None and target.unread != count:
            target.unread = count
            self._changed()

    def set_blocked(self, jids: Iterable[str], blocked: bool) -> None:
        for jid in jids:
            contact = self.contacts.get(jidlib.bare(jid))
            if contact is not None:
                contact.blocked = blocked
        self._changed()

    # ------------------------------------------------------------------ rooms

    def room_joined(self, room_jid: str, nick: str = "", subject: str = "", name: str = "") -> Room:
        room_jid = jidlib.bare(room_jid)
        room = self.rooms.get(room_jid)
        if room is None:
            room = self.rooms[room_jid] = Room(room_jid)
            stray = self.contacts.get(room_jid)
            if stray is not None and not stray.in_roster:
                del self.contacts[room_jid]
        room.joined = True
        if nick:
            room.nick = nick
        if subject:
            room.subject = subject
        if name:
            room.name = name
        self._changed()
        return room

    def room_left(self, room_jid: str) -> None:
        room = self.rooms.pop(jidlib.bare(room_jid), None)
        if room is not None:
            self._changed()

    def occupant_update(self, room_jid: str, nick: str, data: dict) -> Occupant | None:
        room = self.rooms.get(jidlib.bare(room_jid))
        if room is None:
            return None
        if data.get("show") == "unavailable" or data.get("left") or data.get("gone"):
            occupant = room.occupants.pop(nick, None)
            new_nick = data.get("new_nick")
            if occupant is not None and new_nick:
                occupant.nick = new_nick
                room.occupants[new_nick] = occupant
                if nick == room.nick:
                    room.nick = new_nick
            self._changed()
            return occupant
        occupant = room.occupants.get(nick)
        if occupant is None:
            occupant = room.occupants[nick] = Occupant(nick)
        for key in ("jid", "role", "affiliation", "show"):
            if data.get(key) is not None:
                setattr(occupant, key, data[key])
        self._changed()
        return occupant

    def is_room(self, jid: str) -> bool:
        return jidlib.bare(jid) in self.rooms

    # ------------------------------------------------------------------ view

    def toggle_group(self, group: str) -> None:
        if group in self.collapsed:
            self.collapsed.discard(group)
        else:
            self.collapsed.add(group)
        self._changed()

    def set_show_offline(self, show: bool) -> None:
        if self.show_offline != show:
            self.show_offline = show
            self._changed()

    def rows(self) -> list[Row]:
        """Rooms, then groups with their contacts (online first, then by name)."""
        if self._rows is not None:
            return self._rows
        rows: list[Row] = []
        if self.rooms:
            rooms = sorted(self.rooms.values(), key=lambda r: r.display_name.casefold())
            rows.append(Row("header", "Rooms", count=len(rooms), online=len(rooms)))
            if "Rooms" not in self.collapsed:
                rows.extend(Row("room", r.jid, r) for r in rooms)
        by_group: dict[str, list[Contact]] = {}
        no_group = (NO_GROUP,)
        for contact in self.contacts.values():
            if not contact.in_roster and not contact.resources and not contact.unread:
                continue
            for group in contact.groups or no_group:
                members = by_group.get(group)
                if members is None:
                    by_group[group] = [contact]
                else:
                    members.append(contact)
        show_offline = self.show_offline
        append = rows.append
        for group in sorted(by_group, key=lambda g: (g == NO_GROUP, g.casefold())):
            members = by_group[group]
            members.sort(key=_contact_sort_key)
            online = sum(1 for c in members if c.resources)
            append(Row("header", group, None, len(members), online))
            if group in self.collapsed:
                continue
            for contact in members:
                if show_offline or contact.resources or contact.unread:
                    append(Row("contact", contact.jid, contact))
        self._rows = rows
        return rows

    def __len__(self) -> int:
        return len(self.contacts)


def _contact_sort_key(contact: Contact):
    return (not contact.resources, contact._sort_name)
