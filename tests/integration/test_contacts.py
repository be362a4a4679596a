"""Contacts through the real daemon and Prosody: roster, subscriptions, presence, blocking,
vCards and avatars; then the same with slixmpp as the other party.

Prosody's test config loads ``roster`` (with versioning), ``blocklist``, ``pep``, ``vcard4`` and
``vcard_legacy`` (which converts between vcard-temp and PEP avatars: XEP-0398).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest

from sat_frontends.bridge import errors as bridge_errors
from tests.support.bridge_helpers import (
    CONTACT_SIGNALS,
    available,
    befriend_profiles,
    open_bridge,
    open_session,
)
from tests.support.dbus import asyncio_test
from tests.support.images import png
from tests.support.slix_peer import SlixPeer
from tests.support.waiting import eventually

SIGNALS = ("MessageNew", *CONTACT_SIGNALS)
TIMEOUT = 15.0


async def setup(daemon, server, accounts: dict):
    """A bridge client recording the contact signals, and ``accounts`` connected."""
    return await open_session(daemon, server, accounts, SIGNALS, timeout=TIMEOUT)


# ------------------------------------------------------------------ daemon <-> daemon


@asyncio_test(timeout=120)
async def test_subscription_roster_edit_and_cache(sat_daemon, prosody, make_account):
    a, b = make_account("c-alice"), make_account("c-bob")
    bridge, signals = await setup(sat_daemon, prosody, {"alice": a, "bob": b})
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
        assert not signals.matching("PresenceUpdate", available("alice", b.jid))
        assert signals.matching(
            "ContactNew",
            lambda p, j, attrs: (p, j) == ("alice", b.jid) and attrs["ask"] == "subscribe",
        )
        # bob approves: alice sees his presence
        await bridge.subscription_send("bob", a.jid, "subscribed")
        await signals.wait(
            "SubscriptionEvent", lambda p, e, t, x: (p, e, t) == ("alice", b.jid, "subscribed")
        )
        await signals.wait("PresenceUpdate", available("alice", b.jid))
        assert await bridge.subscription_requests_get("bob") == []
        # and the other way round
        await bridge.subscription_send("bob", a.jid, "subscribe")
        await signals.wait(
            "SubscriptionEvent", lambda p, e, t, x: (p, e, t) == ("alice", b.jid, "subscribe")
        )
        await bridge.subscription_send("alice", b.jid, "subscribed")
        await signals.wait("PresenceUpdate", available("bob", a.jid))
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
        await eventually(
            lambda: "roster unchanged (version" in sat_daemon.log_path.read_text(),
            TIMEOUT,
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
    bridge, signals = await setup(sat_daemon, prosody, {"alice": a, "bob": b})
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
    bridge, signals = await setup(sat_daemon, prosody, {"alice": a, "bob": b})
    try:
        await befriend_profiles(bridge, signals, ("alice", a.jid), ("bob", b.jid))
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
        bridge = await open_bridge(sat_daemon)
        assert await bridge.avatar_get("bob", a.jid) == str(cached)
        assert (await bridge.call("VCardGet", "bob", a.jid))["FN"] == "Alice Liddell"
    finally:
        await bridge.close()


# ------------------------------------------------------------------ slixmpp as the other party


@asyncio_test(timeout=150)
async def test_slixmpp_subscription_vcard_and_avatar(sat_daemon, prosody, make_account, tmp_path):
    a, c = make_account("s-alice"), make_account("s-carol")
    bridge, signals = await setup(sat_daemon, prosody, {"alice": a})
    # on its own loop in a thread: everything touching peer.xmpp goes through peer.run
    peer = SlixPeer(
        prosody,
        c,
        plugins=("xep_0030", "xep_0054", "xep_0060", "xep_0084", "xep_0163"),
        record=("roster_subscription_request", "presence_subscribed", "presence_available"),
        # subscription requests are answered by the test
        options={"auto_authorize": None, "auto_subscribe": False},
        own_loop=True,
    )
    try:
        await peer.connect(timeout=15, roster=True)
        # we ask, slixmpp approves
        await bridge.subscription_send("alice", c.jid, "subscribe")
        await peer.wait_event(
            "roster_subscription_request", lambda p: p["from"].bare == a.jid, TIMEOUT
        )

        async def approve_and_ask():
            peer.xmpp.send_presence(pto=a.jid, ptype="subscribed")
            peer.xmpp.send_presence()
            peer.xmpp.send_presence(pto=a.jid, ptype="subscribe")

        await peer.run(approve_and_ask)
        await signals.wait(
            "SubscriptionEvent", lambda p, e, t, x: (p, e, t) == ("alice", c.jid, "subscribed")
        )
        await signals.wait("PresenceUpdate", available("alice", c.jid))
        # slixmpp asks, we approve
        await signals.wait(
            "SubscriptionEvent", lambda p, e, t, x: (p, e, t) == ("alice", c.jid, "subscribe")
        )
        await bridge.subscription_send("alice", c.jid, "subscribed")
        await peer.wait_event("presence_subscribed", lambda p: p["from"].bare == a.jid, TIMEOUT)
        await peer.wait_event("presence_available", lambda p: p["from"].bare == a.jid, TIMEOUT)

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
        await peer.close()
        await bridge.close()
