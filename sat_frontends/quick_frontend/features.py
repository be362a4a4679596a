"""Optional bridge members, found under whichever name the daemon's plugins gave them.

The core API (profiles, messages, roster, presence, history) is always there; group chat,
corrections, reactions, chat states, blocking... come with plugins that may be missing, older
or newer. A frontend asks for a *feature* (``"muc_join"``), this module finds the daemon's
member for it (``MucJoin``, or ``MUCJoin`` for an older naming) and, when there is none,
raises :class:`MissingFeature` whose text says what is missing in words a user understands.

The list of members is read from the bridge client (``client.methods``: the daemon's
introspection data) and read again once when a feature looks missing (a plugin may have loaded
since), so nothing needs restarting when a plugin appears.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["FEATURES", "Features", "MissingFeature"]

#: feature -> (human description, candidate member names in order of preference)
FEATURES: dict[str, tuple[str, tuple[str, ...]]] = {
    # group chat (XEP-0045)
    "muc_join": ("joining group chats (XEP-0045 plugin)", ("MucJoin", "MUCJoin")),
    "muc_leave": ("leaving group chats (XEP-0045 plugin)", ("MucLeave", "MUCLeave")),
    "muc_nick": ("changing nickname in rooms (XEP-0045 plugin)", ("MucNickSet", "MUCNickSet")),
    "muc_subject": (
        "changing a room's subject (XEP-0045 plugin)",
        ("MucSubjectSet", "MUCSubjectSet"),
    ),
    "muc_occupants": (
        "listing room occupants (XEP-0045 plugin)",
        ("MucOccupantsGet", "MUCOccupantsGet"),
    ),
    "muc_joined": (
        "listing joined rooms (XEP-0045 plugin)",
        ("MucRoomsJoined", "MucJoinedGet", "MUCJoinedGet", "MUCRoomsJoined", "MucJoinedList"),
    ),
    "muc_invite": ("room invitations (XEP-0045 plugin)", ("MucInvite", "MUCInvite")),
    "muc_kick": ("kicking room occupants (XEP-0045 plugin)", ("MucKick", "MUCKick")),
    "muc_ban": ("banning from rooms (XEP-0045 plugin)", ("MucBan", "MUCBan")),
    "muc_role_set": ("changing occupants' roles (XEP-0045 plugin)", ("MucRoleSet",)),
    "muc_affiliation_set": (
        "changing affiliations with rooms (XEP-0045 plugin)",
        ("MucAffiliationSet",),
    ),
    "muc_affiliations_get": (
        "listing rooms' affiliations (XEP-0045 plugin)",
        ("MucAffiliationsGet",),
    ),
    "muc_config_get": ("room configuration (XEP-0045 plugin)", ("MucConfigGet",)),
    "muc_config_set": ("room configuration (XEP-0045 plugin)", ("MucConfigSet",)),
    "muc_destroy": ("destroying rooms (XEP-0045 plugin)", ("MucRoomDestroy", "MucDestroy")),
    # message editing and delivery
    "correct": ("message correction (XEP-0308 plugin)", ("MessageCorrect",)),
    "retract": ("message retraction (XEP-0424 plugin)", ("MessageRetract",)),
    "react": (
        "reactions (XEP-0444 plugin)",
        ("MessageReactionsSet", "MessageReact", "MessageReactionSet"),
    ),
    "chat_state": ("chat states (XEP-0085 plugin)", ("ChatStateSend",)),
    "marker_send": ("read markers (XEP-0333 plugin)", ("MessageMarkDisplayed", "MarkerSend")),
    # roster and blocking
    "roster_add": ("adding contacts", ("RosterAdd",)),
    "roster_remove": ("removing contacts", ("RosterRemove",)),
    "subscription_send": ("presence subscriptions", ("SubscriptionSend",)),
    "block": ("blocking (XEP-0191 plugin)", ("Block",)),
    "unblock": ("unblocking (XEP-0191 plugin)", ("Unblock",)),
    "blocking_list": ("the block list (XEP-0191 plugin)", ("BlockingList",)),
    # questions of the daemon
    "action_answer": ("answering the daemon's questions", ("ActionAnswer",)),
    "actions_pending": ("listing the daemon's questions", ("ActionsPendingGet",)),
    # history
    "history_search": ("history search", ("HistorySearch",)),
    "mam_sync": ("server archive synchronisation (XEP-0313 plugin)", ("MamCatchUp",)),
}


class MissingFeature(Exception):
    """The daemon offers no bridge member for a feature (its plugin is not loaded)."""

    def __init__(self, feature: str, description: str, candidates: tuple[str, ...]):
        self.feature = feature
        self.description = description
        self.candidates = candidates
        super().__init__(
            f"the daemon does not offer {description} "
            f"(no bridge member {' or '.join(candidates)}: is the plugin loaded?)"
        )


class Features:
    """Resolve features to the daemon's bridge members."""

    #: seconds before a missing feature triggers another introspection
    REFRESH_DELAY = 5.0

    #: seconds the list of members is reused before being read from the client again
    CACHE_TIME = 2.0

    def __init__(self, bridge: Any):
        self.bridge = bridge
        self._last_refresh = 0.0
        self._cache: tuple[float, set[str]] | None = None

    def _members(self) -> set[str]:
        now = time.monotonic()
        if self._cache is not None and now - self._cache[0] < self.CACHE_TIME:
            return self._cache[1]
        methods = getattr(self.bridge, "methods", None) or {}
        names = set()
        for snake, info in methods.items():
            names.add(getattr(info, "name", None) or snake)
        self._cache = (now, names)
        return names

    def member(self, feature: str) -> str | None:
        """The CamelCase member providing ``feature``, or None."""
        try:
            _description, candidates = FEATURES[feature]
        except KeyError:
            raise ValueError(f"unknown feature {feature!r}") from None
        members = self._members()
        for name in candidates:
            if name in members:
                return name
        return None

    def invalidate(self) -> None:
        """Forget the cached list of members."""
        self._cache = None

    def has(self, feature: str) -> bool:
        return self.member(feature) is not None

    def has_member(self, name: str) -> bool:
        return name in self._members()

    async def refresh(self) -> None:
        refresh = getattr(self.bridge, "refresh", None)
        if refresh is None:
            return
        self._last_refresh = time.monotonic()
        try:
            await refresh()
        except Exception as e:  # the bridge client reports it elsewhere
            log.debug("bridge refresh failed: %s", e)
        self._cache = None

    async def require(self, feature: str) -> str:
        """The member for ``feature``; introspects again once before giving up."""
        name = self.member(feature)
        if name is None:
            # what the client learnt since (a plugin declared later), then the daemon itself
            self.invalidate()
            name = self.member(feature)
        if name is None and time.monotonic() - self._last_refresh > self.REFRESH_DELAY:
            await self.refresh()
            name = self.member(feature)
        if name is None:
            description, candidates = FEATURES[feature]
            raise MissingFeature(feature, description, candidates)
        return name

    async def call(self, feature: str, *args) -> Any:
        """Call the member providing ``feature`` (MissingFeature if none)."""
        name = await self.require(feature)
        return await self.bridge.call(name, *args)

    def summary(self) -> dict[str, str | None]:
        """feature -> member name or None (for /help and diagnostics)."""
        return {feature: self.member(feature) for feature in FEATURES}


def arity(bridge: Any, member: str) -> int | None:
    """Number of arguments of a bridge member (None if unknown)."""
    methods = getattr(bridge, "methods", None) or {}
    for snake, info in methods.items():
        if (getattr(info, "name", None) or snake) == member:
            names = getattr(info, "arg_names", None)
            if names is None:
                args = getattr(info, "args", None)
                return len(args) if args is not None else None
            return len(names)
    return None
