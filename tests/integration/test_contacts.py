"""Contacts through the real daemon and Prosody: roster, subscriptions, presence, blocking,
vCards and avatars; then the same with slixmpp as the other party.

Prosody's test config loads ``roster`` (with versioning), ``blocklist``, ``pep``, ``vcard4`` and
``vcard_legacy`` (which converts between vcard-temp and PEP avatars: XEP-0398).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from sat_frontends.bridge import errors as bridge_errors
from sat_frontends.bridge.dbus_client import DBusBridgeClient
from tests.support.dbus import asyncio_test

SIGNALS = (
    "ContactNew",
    "ContactDeleted",
    "SubscriptionEvent",
    "PresenceUpdate",
    "MessageNew",
    "BlockingChanged",
    "AvatarUpdated",
)


def png(seed: int, size: int = 8) -> bytes:
    def chunk(tag, data):
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + bytes([seed % 256, (seed * 7) % 256, 90]) * size for _ in range(size))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class Signals:
    """Records the daemon's signals; ``wait`` polls for one matching a predicate."""

    def __init__(self, bridge: DBusBridgeClient):
        self.events: list[tuple[str, tuple]] = []
        for name in SIGNALS:
            bridge.on(name, lambda *args, n=name: self.events.append((n, args)))

    def matching(self, name: str, pred: Callable[..., bool] = lambda *a: True) -> list[tuple]:
        return [args for n, args in self.events if n == name and pred(*args)]

    async def wait(self, name: str, pred: Callable[..., bool] = lambda *a: True, timeout=15.0):
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(name, pred)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                recent = [e for e in self.events if e[0] == name][-10:]
                raise AssertionError(f"no matching {name} signal within {timeout} s; got {recent}")
            await asyncio.sleep(0.05)


async def until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.05)


async def setup(daemon, prosody, *accounts):
    bridge = await DBusBridgeClient.connect(daemon.bus_address, wait=10, timeout=30)
    signals = Signals(bridge)
    for name, account in accounts:
        await bridge.profile_create(
            name,
            account.jid,
            account.password,
            "",
            {"host": "127.0.0.1", "port": prosody.c2s_port},
        )
        assert await bridge.profile_connect(name, "")
    return bridge, signals


def online(signals: Signals, profile: str, bare: str):
    """Predicate args for a PresenceUpdate telling ``bare`` is available to ``profile``."""
    return lambda p, entity, show, *rest: (
        p == profile and entity.split("/")[0] == bare and show != "unavailable"
    )


async def befriend(bridge, signals, a: tuple[str, str], b: tuple[str, str]):
    """Mutual subscription between profiles a and b, each (profile, bare JID)."""
    (pa, ja), (pb, jb) = a, b
    await bridge.call("SubscriptionSend", pa, jb, "subscribe")
    await signals.wait("SubscriptionEvent", lambda p, e, t, x: (p, e, t) == (pb, ja, "subscribe"))
    await bridge.call("SubscriptionSend", pb, ja, "subscribed")
    await bridge.call("SubscriptionSend", pb, ja, "subscribe")
    await signals.wait("SubscriptionEvent", lambda p, e, t, x: (p, e, t) == (pa, jb, "subscribe"))
    await bridge.call("SubscriptionSend", pa, jb, "subscribed")
    await signals.wait("PresenceUpdate", online(signals, pa, jb))
    await signals.wait("PresenceUpdate", online(signals, pb, ja))


# ------------------------------------------------------------------ daemon <-> daemon


@asyncio_test(timeout=120)
async def test_subscription_roster_edit_and_cache(sat_daemon, prosody, make_account):
    a, b = make_account("c-alice"), make_account("c-bob")
    bridge, signals = await setup(sat_daemon, prosody, ("alice", a), ("bob", b))
    try:
        # alice adds bob, then asks for his presence
        await bridge.roster_add("alice", b.jid, "Bob", ["Friends", "Verona"])
        contact = await signals.wait("ContactNew", lambda p, j, attrs: (p, j) == ("alice", b.jid))
        assert contact[2]["name"] == "Bob" and sorted(contact[2]["groups"]) == ["Friends", "Verona"]
        await bridge.subscription_send("alice", b.jid, "subscribe")
        request = await signals.wait(
            "SubscriptionEvent", lambda p, e, t, x: (p, e, t) == ("bob", a.jid, "subscribe")
        )
        assert not request[3].get("auto_accepted")
        # never accepted by itself: the request waits for bob
        await asyncio.sleep(0.5)
        assert [r["jid"] for r in await bridge.subscription_requests_get("bob")] == [a.jid]
        assert not signals.matching("PresenceUpdate", online(signals, "alice", b.jid))
        assert signals.matching(
            "ContactNew",
            lambda p, j, attrs: (p, j) == ("alice", b.jid) and attrs["ask"] == "subscribe",
        )
        # bob approves: alice sees his presence
        await bridge.subscription_send("bob", a.jid, "subscribed")
        await signals.wait(
            "SubscriptionEvent", lambda p, e, t, x: (p, e, t) == ("alice", b.jid, "subscribed")
        )
        await signals.wait("PresenceUpdate", online(signals, "alice", b.jid))
        assert await bridge.subscription_requests_get("bob") == []
        # and the other way round
        await bridge.subscription_send("bob", a.jid, "subscribe")
        await signals.wait(
            "SubscriptionEvent", lambda p, e, t, x: (p, e, t) == ("alice", b.jid, "subscribe")
        )
        await bridge.subscription_send("alice", b.jid, "subscribed")
        await signals.wait("PresenceUpdate", online(signals, "bob", a.jid))
        await signals.wait(
            "ContactNew",
            lambda p, j, attrs: (p, j) == ("alice", b.jid) and attrs["subscription"] == "both",
        )
        # presence per resource with show / status / priority
        await bridge.presence_set("bob", "away", {"default": "gone fishing"}, 7)
        update = await signals.wait(
            "PresenceUpdate",
            lambda p, e, show, prio, st: p == "alice" and e.startswith(b.jid) and show == "away",
        )
        assert update[3] == 7 and update[4] == {"default": "gone fishing"}
        best = await bridge.presence_get("alice", b.jid)
        assert best["show"] == "away" and best["priority"] == 7
        statuses = await bridge.presence_statuses_get("alice")
        assert any(s["jid"] == b.jid and s["show"] == "away" for s in statuses)

        # roster edit
        await bridge.roster_update("alice", b.jid, "Robert", ["Work"])
        await signals.wait(
            "ContactNew",
            lambda p, j, attrs: (p, j) == ("alice", b.jid) and attrs["name"] == "Robert",
        )
        with pytest.raises(bridge_errors.NotFound):
            await bridge.roster_update("alice", "nobody@localhost", "x", [])

        # the roster is cached: available offline, and a reconnection uses roster versioning
        await bridge.profile_disconnect("alice")
        offline = await bridge.roster_get("alice")
        assert [(c["jid"], c["name"], c["groups"]) for c in offline] == [
            (b.jid, "Robert", ["Work"])
        ]
        await bridge.profile_connect("alice", "")
        await until(
            lambda: "roster unchanged (version" in sat_daemon.log_path.read_text(),
            what="a versioned roster request answered 'unchanged'",
        )
        assert [c["jid"] for c in await bridge.roster_get("alice")] == [b.jid]

        # removal cancels both subscriptions
        await bridge.roster_remove("alice", b.jid)
        await signals.wait("ContactDeleted", lambda p, j: (p, j) == ("alice", b.jid))
        await signals.wait(
            "ContactNew",
            lambda p, j, attrs: (p, j) == ("bob", a.jid) and attrs["subscription"] == "none",
        )
        assert await bridge.roster_get("alice") == []
    finally:
        await bridge.close()


@asyncio_test(timeout=120)
async def test_deny_and_block(sat_daemon, prosody, make_account):
    a, b = make_account("b-alice"), make_account("b-bob")
    bridge, signals = await setup(sat_daemon, prosody, ("alice", a), ("bob", b))
    try:
        # a denied request gives no presence
        await bridge.subscription_send("alice", b.jid, "subscribe")
        await signals.wait("SubscriptionEvent", lambda p, e, t, x: (p, t) == ("bob", "subscribe"))
        await bridge.subscription_send("bob", a.jid, "unsubscribed")
        await signals.wait(
            "SubscriptionEvent", lambda p, e, t, x: (p, e, t) == ("alice", b.jid, "unsubscribed")
        )

        assert await bridge.blocking_list("bob") == []
        await bridge.block("bob", [a.jid])
        changed = await signals.wait("BlockingChanged", lambda p, added, removed: p == "bob")
        assert changed[1:] == ([a.jid], [])
        assert await bridge.blocking_list("bob") == [a.jid]
        await bridge.message_send("alice", b.jid, "you should not see this", {})
        await bridge.message_send("bob", a.jid, "nor this", {})
        await asyncio.sleep(1.5)
        assert not signals.matching("MessageNew", lambda p, m: p == "bob" and not m["outgoing"])
        assert not signals.matching("MessageNew", lambda p, m: p == "alice" and not m["outgoing"])

        await bridge.unblock("bob", [a.jid])
        await signals.wait(
            "BlockingChanged", lambda p, added, removed: p == "bob" and removed == [a.jid]
        )
        assert await bridge.blocking_list("bob") == []
        await bridge.message_send("alice", b.jid, "and now?", {})
        received = await signals.wait("MessageNew", lambda p, m: p == "bob" and not m["outgoing"])
        assert received[1]["body"] == "and now?"
        with pytest.raises(bridge_errors.InvalidArgument):
            await bridge.block("bob", ["not a jid@@"])
    finally:
        await bridge.close()


@asyncio_test(timeout=120)
async def test_vcard_and_avatar_between_profiles(sat_daemon, prosody, make_account, tmp_path):
    a, b = make_account("v-alice"), make_account("v-bob")
    bridge, signals = await setup(sat_daemon, prosody, ("alice", a), ("bob", b))
    try:
        await befriend(bridge, signals, ("alice", a.jid), ("bob", b.jid))
        fields = {
            "FN": "Alice Liddell",
            "NICKNAME": "alice",
            "EMAIL": ["alice@example.org"],
            "URL": "https://example.org/alice",
            "NOTE": "Down the rabbit hole",
            "BDAY": "1852-05-04",
        }
        await bridge.call("VCardSet", "alice", fields)
        own = await bridge.call("VCardGet", "alice", "")
        for key, value in fields.items():
            assert own[key] == value, key
        seen = await bridge.call("VCardGet", "bob", a.jid)
        assert seen["FN"] == "Alice Liddell" and seen["NICKNAME"] == "alice"
        assert seen["EMAIL"] == ["alice@example.org"]

        image = png(seed=42, size=16)
        avatar_id = hashlib.sha1(image).hexdigest()
        file_path = tmp_path / "alice.png"
        file_path.write_bytes(image)
        assert await bridge.avatar_set("alice", str(file_path)) == avatar_id
        update = await signals.wait(
            "AvatarUpdated", lambda p, j, path: (p, j) == ("bob", a.jid) and path
        )
        cached = sat_daemon.data_dir / "avatars" / avatar_id
        assert update[2] == str(cached)
        assert cached.read_bytes() == image
        assert await bridge.avatar_get("bob", a.jid) == str(cached)
        assert await bridge.avatar_get("alice", "") == str(cached)
        # setting the nickname afterwards keeps the avatar
        await bridge.call("VCardSet", "alice", {"NICKNAME": "Alice L."})
        seen = await bridge.call("VCardGet", "alice", "")
        assert seen["NICKNAME"] == "Alice L." and seen["PHOTO_HASH"] == avatar_id
        # bad files are refused
        text_file = tmp_path / "notes.txt"
        text_file.write_text("not an image")
        with pytest.raises(bridge_errors.InvalidArgument):
            await bridge.avatar_set("alice", str(text_file))
        # the cache survives a restart of the daemon
        await bridge.close()
        sat_daemon.stop()
        sat_daemon.start()
        bridge = await DBusBridgeClient.connect(sat_daemon.bus_address, wait=10, timeout=30)
        assert await bridge.avatar_get("bob", a.jid) == str(cached)
        assert (await bridge.call("VCardGet", "bob", a.jid))["FN"] == "Alice Liddell"
    finally:
        await bridge.close()


# ------------------------------------------------------------------ slixmpp as the other party


class SlixPeer:
    """A slixmpp client on its own event loop in a thread; ``run`` schedules coroutines there."""

    def __init__(self, server, account):
        self.server = server
        self.account = account
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="slix")
        self.requests: list[str] = []
        self.subscribed: list[str] = []
        self.presences: list[tuple[str, str]] = []
        self.xmpp = None

    async def run(self, coro_factory, timeout: float = 20.0):
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(coro_factory(), timeout), self.loop
        )
        return await asyncio.wrap_future(future)

    async def start(self):
        self.thread.start()
        await self.run(self._connect)

    async def _connect(self):
        import slixmpp

        xmpp = slixmpp.ClientXMPP(self.account.jid + "/slix", self.account.password)
        xmpp.enable_direct_tls = False
        xmpp.enable_starttls = True
        xmpp.enable_plaintext = False
        xmpp.ca_certs = self.server.ca_cert_path
        for plugin in ("xep_0030", "xep_0054", "xep_0060", "xep_0084", "xep_0163"):
            xmpp.register_plugin(plugin)
        xmpp.auto_authorize = None  # subscription requests are answered by the test
        xmpp.auto_subscribe = False
        xmpp.add_event_handler(
            "roster_subscription_request", lambda p: self.requests.append(p["from"].bare)
        )
        xmpp.add_event_handler(
            "presence_subscribed", lambda p: self.subscribed.append(p["from"].bare)
        )
        xmpp.add_event_handler(
            "presence_available", lambda p: self.presences.append((p["from"].bare, p["show"]))
        )
        self.xmpp = xmpp
        started = asyncio.ensure_future(xmpp.wait_until("session_start", timeout=15))
        xmpp.connect(self.server.host, self.server.c2s_port)
        await started
        await xmpp.get_roster()
        xmpp.send_presence()

    async def stop(self):
        if self.xmpp is not None:
            with contextlib.suppress(Exception):
                await self.run(lambda: self.xmpp.disconnect(wait=1.0), timeout=5)

        def cancel_all():
            for task in asyncio.all_tasks(self.loop):
                task.cancel()

        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(cancel_all)
            await asyncio.sleep(0.3)  # let the cancelled tasks finish on their loop
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        # let slixmpp's objects go while their loop is still open, then close it
        self.xmpp = None
        gc.collect()
        if not self.thread.is_alive():
            self.loop.close()


@asyncio_test(timeout=150)
async def test_slixmpp_subscription_vcard_and_avatar(sat_daemon, prosody, make_account, tmp_path):
    a, c = make_account("s-alice"), make_account("s-carol")
    bridge, signals = await setup(sat_daemon, prosody, ("alice", a))
    peer = SlixPeer(prosody, c)
    try:
        await peer.start()
        # we ask, slixmpp approves
        await bridge.subscription_send("alice", c.jid, "subscribe")
        await until(lambda: a.jid in peer.requests, what="slixmpp got our request")

        async def approve_and_ask():
            peer.xmpp.send_presence(pto=a.jid, ptype="subscribed")
            peer.xmpp.send_presence()
            peer.xmpp.send_presence(pto=a.jid, ptype="subscribe")

        await peer.run(approve_and_ask)
        await signals.wait(
            "SubscriptionEvent", lambda p, e, t, x: (p, e, t) == ("alice", c.jid, "subscribed")
        )
        await signals.wait("PresenceUpdate", online(signals, "alice", c.jid))
        # slixmpp asks, we approve
        await signals.wait(
            "SubscriptionEvent", lambda p, e, t, x: (p, e, t) == ("alice", c.jid, "subscribe")
        )
        await bridge.subscription_send("alice", c.jid, "subscribed")
        await until(lambda: a.jid in peer.subscribed, what="slixmpp approved")
        await until(
            lambda: any(j == a.jid for j, _ in peer.presences), what="slixmpp sees our presence"
        )

        # slixmpp publishes a vCard and a PEP avatar: we get both
        image = png(seed=7, size=12)
        carol_id = hashlib.sha1(image).hexdigest()

        async def publish():
            vcard = peer.xmpp.plugin["xep_0054"].make_vcard()
            vcard["FN"] = "Carol Slix"
            vcard["NICKNAME"] = "carol"
            await peer.xmpp.plugin["xep_0054"].publish_vcard(vcard)
            await peer.xmpp.plugin["xep_0084"].publish_avatar(image)
            await peer.xmpp.plugin["xep_0084"].publish_avatar_metadata(
                [{"id": carol_id, "type": "image/png", "bytes": len(image)}]
            )

        await peer.run(publish)
        update = await signals.wait(
            "AvatarUpdated", lambda p, j, path: (p, j) == ("alice", c.jid) and path
        )
        cached = sat_daemon.data_dir / "avatars" / carol_id
        assert update[2] == str(cached) and cached.read_bytes() == image
        assert await bridge.avatar_get("alice", c.jid) == str(cached)
        # (Prosody converts the PEP avatar to the vCard PHOTO, so the FN may come with it)
        seen = await bridge.call("VCardGet", "alice", c.jid)
        assert seen.get("PHOTO_HASH") == carol_id
        assert seen.get("FN") in ("Carol Slix", None)

        # we publish ours: slixmpp reads it from our vCard and from our PEP data node
        mine = png(seed=99, size=10)
        alice_id = hashlib.sha1(mine).hexdigest()
        file_path = tmp_path / "alice.png"
        file_path.write_bytes(mine)
        assert await bridge.avatar_set("alice", str(file_path)) == alice_id
        await bridge.call("VCardSet", "alice", {"FN": "Alice Daemon", "NICKNAME": "ally"})

        async def read_ours():
            iq = await peer.xmpp.plugin["xep_0054"].get_vcard(a.jid, cached=False)
            vcard = iq["vcard_temp"]
            item = await peer.xmpp.plugin["xep_0084"].retrieve_avatar(a.jid, alice_id)
            data = item["pubsub"]["items"]["item"]["payload"].text
            nick = vcard["NICKNAME"]  # slixmpp gives a list (vCard NICKNAME is a list)
            return str(vcard["FN"]), list(nick), vcard["PHOTO"]["BINVAL"], data

        fn, nick, binval, data_b64 = await peer.run(read_ours)
        assert (fn, nick) == ("Alice Daemon", ["ally"])
        assert hashlib.sha1(binval).hexdigest() == alice_id
        assert base64.b64decode(data_b64) == mine
    finally:
        await peer.stop()
        await bridge.close()
