"""Crossing between Twisted Deferreds and asyncio on the shared loop.

The daemon runs Twisted on the asyncio reactor, so both worlds share one
loop. These helpers make the crossing explicit at the few places it happens.
"""

import asyncio
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from twisted.internet import defer


def loop() -> asyncio.AbstractEventLoop:
    """The asyncio loop the reactor runs on."""
    from twisted.internet import reactor

    return getattr(reactor, "_asyncioEventloop", None) or asyncio.get_event_loop()


def as_deferred(awaitable: Awaitable) -> defer.Deferred:
    """Run a coroutine (or any awaitable) on the loop and return a Deferred of its result."""
    return defer.Deferred.fromFuture(asyncio.ensure_future(awaitable, loop=loop()))


def as_future(value: Any) -> asyncio.Future:
    """Turn a Deferred (or a plain value) into an asyncio Future usable with ``await``."""
    if isinstance(value, defer.Deferred):
        return value.asFuture(loop())
    fut = loop().create_future()
    fut.set_result(value)
    return fut


async def maybe_await(value: Any) -> Any:
    """Await ``value`` whether it is a Deferred, a coroutine, or a plain value."""
    if isinstance(value, defer.Deferred):
        return await value.asFuture(loop())
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


def deferred_function(func: Callable[..., Awaitable]) -> Callable[..., defer.Deferred]:
    """Decorate an ``async def`` so Twisted callers get a Deferred."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        return as_deferred(func(*args, **kwargs))

    return wrapper
