"""A minimal observer: models and the app tell the UI what changed.

Listeners are plain callables; one failing listener is logged and does not stop the others
(a UI bug must not stop the models from following the daemon).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["Events"]


class Events:
    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable]] = {}

    def on(self, event: str, callback: Callable) -> Callable:
        """Call ``callback(*args)`` whenever ``event`` is emitted; returns ``callback``."""
        self._listeners.setdefault(event, []).append(callback)
        return callback

    def off(self, event: str, callback: Callable) -> None:
        callbacks = self._listeners.get(event, [])
        if callback in callbacks:
            callbacks.remove(callback)

    def emit(self, event: str, *args) -> None:
        for callback in list(self._listeners.get(event, ())):
            try:
                callback(*args)
            except Exception:
                log.exception("listener of %r failed", event)

    def has_listeners(self, event: str) -> bool:
        return bool(self._listeners.get(event))
