"""Questions the daemon asks the user, answered by whichever frontend is there.

``await host.actions.ask(profile, data, timeout, default)`` emits ``ActionNew``
and returns the first answer given with ``ActionAnswer``, or ``default`` once
``timeout`` seconds have passed: a frontend that never answers (or no frontend
at all) never blocks the daemon. Pending questions can be listed, so a
frontend started later still sees them.
"""

from __future__ import annotations

import time
import uuid

from twisted.internet import defer

from sat.core import errors


class Actions:
    def __init__(self, host, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.host = host
        self._reactor = reactor
        #: id -> (profile, data, default, deadline, deferred, timer)
        self._pending: dict[str, tuple] = {}

    def ask(self, profile: str, data: dict, timeout: float, default: str) -> defer.Deferred:
        """Ask the user; fires with the answer (str), or ``default`` after ``timeout`` s."""
        if timeout <= 0:
            raise errors.InvalidArgument("an action needs a positive timeout")
        action_id = uuid.uuid4().hex
        d = defer.Deferred()
        timer = self._reactor.callLater(timeout, self._expire, action_id)
        self._pending[action_id] = (profile, dict(data), default, time.time() + timeout, d, timer)
        self.host.bridge.emit("ActionNew", profile, action_id, dict(data), float(timeout), default)
        return d

    def answer(self, profile: str, action_id: str, answer: str) -> None:
        entry = self._pending.get(action_id)
        if entry is None or entry[0] != profile:
            raise errors.NotFound(f"no pending action {action_id!r} for profile {profile!r}")
        del self._pending[action_id]
        entry[5].cancel()
        entry[4].callback(answer)

    def pending(self, profile: str) -> list[dict]:
        now = time.time()
        return [
            {"id": aid, "data": e[1], "default": e[2], "remaining": max(0.0, e[3] - now)}
            for aid, e in self._pending.items()
            if e[0] == profile
        ]

    def _expire(self, action_id: str) -> None:
        entry = self._pending.pop(action_id, None)
        if entry is not None:
            self.host.bridge.emit("ActionExpired", entry[0], action_id, entry[2])
            entry[4].callback(entry[2])
