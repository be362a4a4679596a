"""Waiting until a condition holds, for tests: one asyncio version, one blocking version.

- ``await eventually(check, timeout=10, what="...")`` in ``async`` tests (``@asyncio_test``):
  ``check`` may be a plain function or return an awaitable (a bridge call...);
- ``poll(check, what="...", timeout=20)`` in plain tests (each check may run a subprocess).

Both call ``check()`` until it returns something true, return that value, and fail with an
``AssertionError`` naming ``what`` when ``timeout`` seconds have passed.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    check: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.05,
) -> Any:
    """Call ``check()`` (awaiting its result if needed) until it is true; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(interval)


def poll(
    check: Callable[[], Any],
    what: str = "condition",
    timeout: float = 20.0,
    interval: float = 0.1,
) -> Any:
    """Call ``check()`` until it returns something true, sleeping (blocking) in between."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        time.sleep(interval)
