"""Notifications: what needs the user's attention, counted per conversation.

A conversation the user is not looking at gets its unread messages counted here; a
*notification* is the subset that should ring: a 1:1 message, a mention of our nick in a room,
a subscription request, a question from the daemon, a failure. The UI shows the total in its
status bar, rings the terminal bell (or pops a desktop notification) on :data:`Events` ``new``
and clears a conversation's count when it is displayed.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from sat_frontends.quick_frontend.events import Events

__all__ = ["Notification", "Notifications"]


@dataclass(slots=True)
class Notification:
    profile: str
    #: conversation key (bare JID, room or room/nick) or '' for a general one
    key: str
    #: message, mention, subscription, action, error, info
    kind: str
    text: str
    timestamp: float = field(default_factory=time.time)


class Notifications:
    #: how many past notifications are kept (for a notifications view)
    KEEP = 200

    def __init__(self) -> None:
        self.events = Events()
        self.history: deque[Notification] = deque(maxlen=self.KEEP)
        self._pending: dict[tuple[str, str], int] = {}

    def add(self, profile: str, key: str, kind: str, text: str) -> Notification:
        notification = Notification(profile, key, kind, text)
        self.history.append(notification)
        self._pending[(profile, key)] = self._pending.get((profile, key), 0) + 1
        self.events.emit("new", notification)
        self.events.emit("changed")
        return notification

    def count(self, profile: str | None = None, key: str | None = None) -> int:
        if profile is None:
            return sum(self._pending.values())
        if key is None:
            return sum(n for (p, _k), n in self._pending.items() if p == profile)
        return self._pending.get((profile, key), 0)

    @property
    def total(self) -> int:
        return self.count()

    def pending(self) -> list[tuple[str, str, int]]:
        """(profile, key, count) of every conversation with pending notifications."""
        return [(p, k, n) for (p, k), n in self._pending.items() if n]

    def clear(self, profile: str, key: str) -> None:
        if self._pending.pop((profile, key), None):
            self.events.emit("changed")

    def clear_profile(self, profile: str) -> None:
        keys = [k for k in self._pending if k[0] == profile]
        for k in keys:
            del self._pending[k]
        if keys:
            self.events.emit("changed")
