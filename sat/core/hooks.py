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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from twisted.internet import defer

log = logging.getLogger(__name__)

STOP = object()

#: documented hook points; running an unknown one is a programming error
POINTS = {
    "presence_send": "(client, presence_elt): before our presence goes out (add <c/>, <x/>...)",
    "message_send": "(client, message_elt, data): before a message goes out",
    "message_received": "(client, message_elt, data): a message arrived, before storing",
    "message_stored": "(client, data, new): a received message is stored (new) or was "
    "already (duplicate); synchronous callbacks, for what must wait until the message is "
    "safe (a delivery receipt). No stanza: keeping it alive until the storage answered cost "
    "~40 µs per message of garbage collection (bench/pipeline_probe.py)",
    "presence_received": "(client, presence_elt): a presence arrived",
    "stream_ready": "(client): stream authenticated, bound and ready (also after resumption)",
}


@dataclass(order=True)
class _Entry:
    sort_key: tuple
    callback: Callable = field(compare=False)
    #: run only for stanzas with a direct child in one of these namespaces (None: always)
    namespaces: frozenset | None = field(default=None, compare=False)


class Hooks:
    """The hook points and their callbacks.

    Every received message runs the ``message_received`` chain, so the chain is cheap to
    run: callbacks that only care about one extension declare its namespaces and are
    skipped for stanzas without it, and the chain stays synchronous (no coroutine, no
    Deferred) until a callback actually returns something to wait for.
    """

    def __init__(self):
        self._hooks: dict[str, tuple[_Entry, ...]] = {p: () for p in POINTS}
        self._counter = 0

    def add(
        self,
        point: str,
        callback: Callable,
        priority: int = 0,
        namespaces: Iterable[str] | None = None,
    ) -> None:
        """Register ``callback`` at ``point``; higher ``priority`` runs first.

        ``namespaces``: the callback only matters for stanzas carrying a direct child in one
        of these namespaces (e.g. receipts); it is skipped for the others when the point is
        run with the stanza's ``namespaces`` (``message_received`` is).
        """
        if point not in self._hooks:
            raise ValueError(f"unknown hook point {point!r}")
        self._counter += 1
        wanted = frozenset(namespaces) if namespaces is not None else None
        entry = _Entry((-priority, self._counter), callback, wanted)
        self._hooks[point] = tuple(sorted((*self._hooks[point], entry)))

    def remove(self, point: str, callback: Callable) -> None:
        self._hooks[point] = tuple(e for e in self._hooks[point] if e.callback != callback)

    def has(self, point: str) -> bool:
        """Whether any callback is registered at ``point``."""
        return bool(self._hooks[point])

    def run_sync(self, point: str, *args) -> bool:
        """Run a point whose callbacks are all synchronous; False if one stopped the chain."""
        for entry in self._hooks[point]:
            try:
                if entry.callback(*args) is STOP:
                    return False
            except Exception:
                log.exception("hook %s callback %r failed", point, entry.callback)
        return True

    async def run(self, point: str, *args, namespaces: frozenset | set | None = None) -> bool:
        """Run a point, awaiting async callbacks; False if one stopped the chain."""
        result = self.start(point, *args, namespaces=namespaces)
        if result is True or result is False:
            return result
        return await result

    def start(self, point: str, *args, namespaces: frozenset | set | None = None):
        """Run a point synchronously as far as its callbacks allow.

        Returns True/False (False: a callback stopped the chain) when every callback
        returned a plain value, else an awaitable of that bool: the rest of the chain runs
        once the first callback's awaitable is done. ``namespaces``: those of the stanza's
        direct children, to skip the callbacks registered for other namespaces.
        """
        return self._run_from(point, self._hooks[point], 0, args, namespaces)

    def _run_from(self, point: str, entries: tuple, first: int, args: tuple, namespaces):
        """The chain from ``entries[first]`` on: synchronous until a callback returns an
        awaitable, then the rest follows it (:meth:`_finish`)."""
        for index in range(first, len(entries)):
            entry = entries[index]
            wanted = entry.namespaces
            if wanted is not None and namespaces is not None and wanted.isdisjoint(namespaces):
                continue
            try:
                result = entry.callback(*args)
            except Exception:
                log.exception("hook %s callback %r failed", point, entry.callback)
                continue
            if result is None:
                continue
            if result is STOP:
                return False
            if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
                return self._finish(point, entries, index, result, args, namespaces)
        return True

    async def _finish(self, point, entries, index, pending, args, namespaces) -> bool:
        """Wait for the callback at ``index``, then run the rest of the chain."""
        try:
            result = await pending
        except Exception:
            log.exception("hook %s callback %r failed", point, entries[index].callback)
            result = None
        if result is STOP:
            return False
        rest = self._run_from(point, entries, index + 1, args, namespaces)
        if rest is True or rest is False:
            return rest
        return await rest
