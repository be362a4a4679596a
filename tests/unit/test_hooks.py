"""Hook points (:mod:`sat.core.hooks`): order, STOP, errors, namespace filters, and the
synchronous path the receive loop relies on."""

from __future__ import annotations

import logging

import pytest
from twisted.internet import defer

from sat.core import hooks
from sat.core.hooks import STOP, Hooks

POINT = "message_received"


def run(hooks_, *args, namespaces=None):
    """Run a point to the end (no reactor needed: everything here fires at once)."""
    d = defer.ensureDeferred(hooks_.run(POINT, *args, namespaces=namespaces))
    results = []
    d.addBoth(results.append)
    assert results, "the chain did not finish"
    if isinstance(results[0], Exception):
        raise results[0]
    return results[0]


def test_priority_order_and_stop():
    h, calls = Hooks(), []
    h.add(POINT, lambda: calls.append("low"), priority=-5)
    h.add(POINT, lambda: calls.append("high"), priority=10)
    h.add(POINT, lambda: calls.append("mid"))
    assert h.start(POINT) is True
    assert calls == ["high", "mid", "low"]

    calls.clear()
    h.add(POINT, lambda: STOP, priority=1)
    assert h.start(POINT) is False
    assert calls == ["high"]


def test_a_failing_callback_is_logged_and_the_chain_goes_on(caplog):
    h, calls = Hooks(), []
    h.add(POINT, lambda: 1 / 0, priority=1)
    h.add(POINT, lambda: calls.append("after"))
    with caplog.at_level(logging.ERROR, logger=hooks.__name__):
        assert h.start(POINT) is True
    assert calls == ["after"]
    assert "ZeroDivisionError" in caplog.text


def test_namespace_filters_skip_unconcerned_callbacks():
    h, calls = Hooks(), []
    h.add(POINT, lambda: calls.append("receipts"), namespaces=["urn:xmpp:receipts"])
    h.add(POINT, lambda: calls.append("any"))
    h.add(POINT, lambda: calls.append("sid"), namespaces=["urn:xmpp:sid:0", "urn:x"])
    assert h.start(POINT, namespaces={"jabber:client"}) is True
    assert calls == ["any"]
    calls.clear()
    h.start(POINT, namespaces={"jabber:client", "urn:x"})
    assert calls == ["any", "sid"]
    calls.clear()
    # without the stanza's namespaces (other points, old callers), every callback runs
    h.start(POINT)
    assert calls == ["receipts", "any", "sid"]


def test_synchronous_until_a_callback_returns_an_awaitable():
    h, calls = Hooks(), []
    pending = defer.Deferred()

    async def waits():
        calls.append("async start")
        await pending
        calls.append("async end")

    h.add(POINT, lambda: calls.append("first"), priority=3)
    h.add(POINT, waits, priority=2)
    h.add(POINT, lambda: calls.append("last"), priority=1)
    h.add(POINT, lambda: calls.append("other ns"), namespaces=["urn:other"])
    started = h.start(POINT, namespaces=set())
    assert started is not True and started is not False
    assert calls == ["first"]  # a coroutine starts when awaited
    d = defer.ensureDeferred(started)
    assert calls == ["first", "async start"]
    assert not d.called
    pending.callback(None)
    assert d.called and d.result is True
    assert calls == ["first", "async start", "async end", "last"]


@pytest.mark.parametrize("stop_in", ["awaited", "later sync", "later async"])
def test_stop_after_the_chain_went_asynchronous(stop_in):
    h, calls = Hooks(), []

    async def first():
        calls.append("first")
        return STOP if stop_in == "awaited" else None

    async def later_async():
        return STOP

    h.add(POINT, first, priority=5)
    if stop_in == "later sync":
        h.add(POINT, lambda: STOP, priority=4)
    elif stop_in == "later async":
        h.add(POINT, later_async, priority=4)
    h.add(POINT, lambda: calls.append("never"), priority=1)
    assert run(h) is False
    assert calls == ["first"]


def test_a_failing_awaitable_is_logged_and_the_chain_goes_on(caplog):
    h, calls = Hooks(), []

    async def broken():
        raise RuntimeError("boom")

    h.add(POINT, broken, priority=2)
    h.add(POINT, lambda: calls.append("after"), priority=1)
    with caplog.at_level(logging.ERROR, logger=hooks.__name__):
        assert run(h) is True
    assert calls == ["after"]
    assert "boom" in caplog.text


def test_remove_and_unknown_points():
    h, calls = Hooks(), []

    def callback():
        calls.append("x")

    h.add(POINT, callback)
    h.remove(POINT, callback)
    assert h.start(POINT) is True and calls == []
    with pytest.raises(ValueError):
        h.add("no_such_point", callback)
