"""Named hook points that plugins extend, run in priority order.

The core calls :meth:`Hooks.run` at fixed points (``presence_send``,
``message_send``, ``message_received``, ...); plugins register callbacks with
a priority (higher runs first). A callback may be sync or async; returning
:data:`STOP` stops the chain (e.g. a decryption failure turned into a notice).
An exception in one callback is logged and does not stop the others: nothing
a remote contact sends may crash the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer

log = logging.getLogger(__name__)

STOP = object()

#: documented hook points; running an unknown one is a programming error
POINTS = {
    "presence_send": "(client, presence_elt): before our presence goes out (add <c/>, <x/>...)",
    "message_send": "(client, message_elt, data): before a message goes out",
    "message_received": "(client, message_elt, data): a message arrived, before storing",
    "presence_received": "(client, presence_elt): a presence arrived",
    "stream_ready": "(client): stream authenticated, bound and ready (also after resumption)",
}


@dataclass(order=True)
class _Entry:
    sort_key: tuple
    callback: Callable


class Hooks:
    def __init__(self):
        self._hooks: dict[str, list[_Entry]] = {p: [] for p in POINTS}
        self._counter = 0

    def add(self, point: str, callback: Callable, priority: int = 0) -> None:
        if point not in self._hooks:
            raise ValueError(f"unknown hook point {point!r}")
        self._counter += 1
        self._hooks[point].append(_Entry((-priority, self._counter), callback))
        self._hooks[point].sort()

    def remove(self, point: str, callback: Callable) -> None:
        self._hooks[point] = [e for e in self._hooks[point] if e.callback != callback]

    def run_sync(self, point: str, *args) -> bool:
        """Run a point whose callbacks are all synchronous; False if one stopped the chain."""
        for entry in list(self._hooks[point]):
            try:
                if entry.callback(*args) is STOP:
                    return False
            except Exception:
                log.exception("hook %s callback %r failed", point, entry.callback)
        return True

    async def run(self, point: str, *args) -> bool:
        """Run a point, awaiting async callbacks; False if one stopped the chain."""
        for entry in tuple(self._hooks[point]):
            try:
                result = entry.callback(*args)
                if result is None:
                    # the common case (run for every message): skip the isinstance checks
                    continue
                if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
                    result = await result
                if result is STOP:
                    return False
            except Exception:
                log.exception("hook %s callback %r failed", point, entry.callback)
        return True
