"""Message delivery and state features through the real daemon, D-Bus and Prosody.

- two profiles: receipts come back, displayed markers update the sender's history,
  chat states are negotiated and signalled, origin-id / stanza-id are stored;
- carbons between two resources (two profiles) of one account, private messages
  not copied, a receipt reaching the copy of a message sent by the other resource;
- interoperability with slixmpp (an independent implementation) as the other party:
  it asks for a receipt and gets one, it acknowledges ours, it sends chat states;
  hostile stanzas from it (forged carbons, garbage receipts) change nothing.

slixmpp runs on the test's own asyncio loop (the one the Twisted asyncio reactor
drives), like the D-Bus client.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from tests.support.bridge_helpers import (
    MESSAGE_SIGNALS,
    SignalRecorder,
    create_profile,
    history,
    open_bridge,
)
from tests.support.dbus import asyncio_test
from tests.support.slix_peer import SlixPeer, befriend_accounts

NS_RECEIPTS = "urn:xmpp:receipts"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_CLIENT = "jabber:client"
SIGNALS = (*MESSAGE_SIGNALS, "PresenceUpdate")


def slix_peer(server, account, plugins=("xep_0030", "xep_0184")) -> SlixPeer:
    """slixmpp as ``account``/slix on the test's loop, recording messages and receipts."""
    return SlixPeer(server, account, plugins=plugins, record=("message", "receipt_received"))


# --- two daemon profiles ----------------------------------------------------------------


@asyncio_test(timeout=90)
async def test_receipts_markers_and_chat_states_between_two_profiles(
    sat_daemon, prosody, make_account
):
    a, b = make_account("rcpt-alice"), make_account("rcpt-bob")
    await befriend_accounts(prosody, a, b)
    bridge = await open_bridge(sat_daemon)
    signals = SignalRecorder(bridge, SIGNALS)
    try:
        await create_profile(bridge, "alice", a, prosody)
        await create_profile(bridge, "bob", b, prosody)
        await bridge.profile_connect("alice", "")
        await bridge.profile_connect("bob", "")
        # each saw the other's initial presence: both sessions are fully set up
        await signals.presence("alice", b.jid)
        await signals.presence("bob", a.jid)

        uid = await bridge.message_send("alice", b.jid, "Did *you* get this?", {})
        _, received = await signals.wait(
            "MessageNew", lambda p, m: p == "bob" and m.get("body") == "Did *you* get this?"
        )
        assert received["extra"]["markable"] is True
        assert received["extra"]["styling"] == [{"type": "strong", "start": 4, "end": 9}]
        assert received["origin_id"] == uid  # our origin-id made it through
        # Prosody's archive stamped it, and the daemon trusts its own server's stamp
        assert received["stanza_id_by"] == b.jid and received["stanza_id"]

        # the receipt comes back to alice
        _, _, kind, data = await signals.wait(
            "MessageUpdate", lambda p, u, k, d: p == "alice" and u == uid and k == "receipt"
        )
        assert data["delivery"] == "received"
        (sent,) = await history(bridge, "alice", b.jid)
        assert sent["uid"] == uid and sent["extra"]["delivery"] == "received"
        assert sent["extra"]["receipt_requested"] is True

        # chat states: alice's message said <active/>, so bob may tell he is typing
        assert await bridge.chat_state_send("bob", a.jid, "composing") is True
        assert await bridge.chat_state_send("bob", a.jid, "composing") is False  # no repeat
        await signals.wait(
            "ChatStateReceived",
            lambda p, f, s: p == "alice" and f.startswith(b.jid) and s == "composing",
        )

        # bob answers, then reads alice's messages: markers update alice's history
        uid2 = await bridge.message_send("alice", b.jid, "second", {})
        _, second = await signals.wait(
            "MessageNew", lambda p, m: p == "bob" and m.get("body") == "second"
        )
        assert await bridge.marker_send("bob", second["uid"], "displayed") is True
        assert await bridge.marker_send("bob", second["uid"], "displayed") is False
        for marked in (uid, uid2):
            await signals.wait(
                "MessageUpdate",
                lambda p, u, k, d, m=marked: p == "alice" and u == m and k == "marker",
            )
        alice_side = await history(bridge, "alice", b.jid)
        assert [m["extra"].get("marker") for m in alice_side] == ["displayed", "displayed"]
        bob_side = await history(bridge, "bob", a.jid)
        assert [m["extra"].get("marker_sent") for m in bob_side] == ["displayed", "displayed"]
        # state-only messages and acks were not stored
        assert len(bob_side) == 2 and len(alice_side) == 2
    finally:
        await bridge.close()


# --- carbons ------------------------------------------------------------------------------


@asyncio_test(timeout=90)
async def test_carbons_between_two_resources_of_one_account(sat_daemon, prosody, make_account):
    c, d = make_account("carb-me"), make_account("carb-friend")
    await befriend_accounts(prosody, c, d)
    bridge = await open_bridge(sat_daemon)
    signals = SignalRecorder(bridge, SIGNALS)
    try:
        await create_profile(bridge, "pc", c, prosody, resource="pc")
        await create_profile(bridge, "phone", c, prosody, resource="phone")
        await create_profile(bridge, "friend", d, prosody)
        for profile in ("pc", "phone", "friend"):
            await bridge.profile_connect(profile, "")
        # initial presences go out once the plugins (carbons enabled) are done
        await signals.presence("phone", f"{c.jid}/pc")
        await signals.presence("pc", f"{c.jid}/phone")
        await signals.presence("friend", f"{c.jid}/pc")
        await signals.presence("friend", f"{c.jid}/phone")
        await signals.presence("pc", d.jid)

        # a message to the phone only: the pc gets a received copy
        await bridge.message_send("friend", f"{c.jid}/phone", "to your phone", {})
        _, copy = await signals.wait(
            "MessageNew", lambda p, m: p == "pc" and m.get("body") == "to your phone"
        )
        assert copy["extra"]["carbon"] == "received" and not copy["outgoing"]
        assert copy["from"].startswith(d.jid)

        # the phone writes: the pc stores it as outgoing, from the phone
        uid = await bridge.message_send("phone", d.jid, "from my phone", {})
        _, sent = await signals.wait(
            "MessageNew", lambda p, m: p == "pc" and m.get("body") == "from my phone"
        )
        assert sent["outgoing"] and sent["extra"]["carbon"] == "sent"
        assert sent["from"] == f"{c.jid}/phone" and sent["origin_id"] == uid
        # the friend's receipt reaches the pc's copy too (found by origin-id)
        await signals.wait(
            "MessageUpdate",
            lambda p, u, k, data: p == "pc" and u == sent["uid"] and k == "receipt",
        )
        await signals.wait(
            "MessageUpdate", lambda p, u, k, data: p == "phone" and u == uid and k == "receipt"
        )

        # a private message is not copied
        await bridge.message_send("phone", d.jid, "private one", {"private": True})
        await bridge.message_send("phone", d.jid, "public one", {})
        await signals.wait("MessageNew", lambda p, m: p == "pc" and m.get("body") == "public one")
        await signals.wait(
            "MessageNew", lambda p, m: p == "friend" and m.get("body") == "private one"
        )
        bodies = [m["body"] for m in await history(bridge, "pc", d.jid)]
        assert bodies == ["to your phone", "from my phone", "public one"]
    finally:
        await bridge.close()


# --- slixmpp as the other party -------------------------------------------------------------


@asyncio_test(timeout=90)
async def test_receipts_interoperate_with_slixmpp(sat_daemon, prosody, make_account):
    me, other = make_account("slx-me"), make_account("slx-other")
    await befriend_accounts(prosody, me, other)
    bridge = await open_bridge(sat_daemon)
    signals = SignalRecorder(bridge, SIGNALS)
    slix = slix_peer(prosody, other)
    try:
        await create_profile(bridge, "me", me, prosody)
        await bridge.profile_connect("me", "")
        await slix.connect(timeout=10, roster=True)
        await signals.presence("me", f"{other.jid}/slix")

        # slixmpp asks for a receipt: the daemon stores the message and answers
        message = slix.xmpp.make_message(mto=me.jid, mbody="receipt please", mtype="chat")
        message["request_receipt"] = True
        message_id = message["id"]
        message.send()
        receipt = await slix.next_event("receipt_received")
        assert receipt["receipt"] == message_id
        assert receipt["from"].bare == me.jid
        _, stored = await signals.wait(
            "MessageNew", lambda p, m: p == "me" and m.get("body") == "receipt please"
        )
        assert stored["extra"]["message_id"] == message_id
        assert stored["extra"]["receipt_sent"] is True
        # Prosody's stanza-id for our archive is kept (stanza-id by our bare JID)
        assert stored["stanza_id_by"] == me.jid and stored["stanza_id"]

        # we ask: slixmpp's xep_0184 acknowledges, our history shows it
        uid = await bridge.message_send("me", other.jid, "ack this", {})
        incoming = await slix.next_event("message", lambda m: m["body"] == "ack this")
        assert incoming["request_receipt"] and incoming["id"] == uid
        await signals.wait(
            "MessageUpdate", lambda p, u, k, d: p == "me" and u == uid and k == "receipt"
        )
        mine = await history(bridge, "me", other.jid)
        assert [m["extra"].get("delivery") for m in mine if m["outgoing"]] == ["received"]

        # chat states from slixmpp
        state = slix.xmpp.make_message(mto=me.jid, mtype="chat")
        state.append(ET.Element("{http://jabber.org/protocol/chatstates}composing"))
        state.send()
        await signals.wait(
            "ChatStateReceived",
            lambda p, f, s: p == "me" and f.startswith(other.jid) and s == "composing",
        )
    finally:
        await slix.close()
        await bridge.close()


@asyncio_test(timeout=90)
async def test_hostile_stanzas_from_slixmpp_change_nothing(sat_daemon, prosody, make_account):
    me, evil = make_account("hst-me"), make_account("hst-evil")
    await befriend_accounts(prosody, me, evil)  # even a contact cannot forge these
    bridge = await open_bridge(sat_daemon)
    signals = SignalRecorder(bridge, SIGNALS)
    slix = slix_peer(prosody, evil, plugins=())
    try:
        await create_profile(bridge, "me", me, prosody)
        await bridge.profile_connect("me", "")
        await slix.connect(timeout=10, roster=True)
        await signals.presence("me", f"{evil.jid}/slix")
        uid = await bridge.message_send("me", "victim@localhost", "to someone else", {})
        forged = (
            f"<message xmlns='{NS_CLIENT}' to='{me.jid}' type='chat' id='{uuid.uuid4().hex}'>"
            f"<sent xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>"
            f"<message xmlns='{NS_CLIENT}' from='{me.jid}/pc' to='victim@localhost' type='chat'>"
            "<body>I never wrote this</body></message></forwarded></sent></message>"
        )
        await slix.send_raw(forged)
        for receipt_id in (uid, "x" * 3000, ""):
            await slix.send_raw(
                f"<message xmlns='{NS_CLIENT}' to='{me.jid}' type='chat'>"
                f"<received xmlns='{NS_RECEIPTS}' id='{receipt_id}'/></message>"
            )
        await slix.send_raw(
            f"<message xmlns='{NS_CLIENT}' to='{me.jid}' type='chat'>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' by='{evil.jid}' id='fake'/>"
            "<body>with a made-up stanza-id</body></message>"
        )
        _, last = await signals.wait(
            "MessageNew", lambda p, m: p == "me" and m.get("body") == "with a made-up stanza-id"
        )
        # Prosody's own stamp (by our account) is the only stanza-id kept
        assert last["stanza_id_by"] == me.jid and last["stanza_id"] != "fake"
        bodies = [m["body"] for m in await bridge.history_get("me", "", 100, {})]
        assert bodies == ["to someone else", "with a made-up stanza-id"]
        assert signals.of("MessageUpdate") == []
        assert await bridge.is_ready()
    finally:
        await slix.close()
        await bridge.close()
