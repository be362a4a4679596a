"""Editing messages after the fact through the real daemon, D-Bus and Prosody.

- two profiles of the daemon: a correction, reactions, a reply and a retraction make the
  round trip, visible in both histories (and the full-text index) and as ``MessageUpdate``
  signals; a profile cannot correct or retract the other's message;
- interoperability with slixmpp (an independent implementation) as the other party: it
  corrects, retracts, reacts to and replies to messages and we apply them; we correct,
  retract and react, and it receives the XEP payloads referring to its ids;
- hostile stanzas from a slixmpp client (correcting or retracting our message, forged
  moderation notices, garbage reactions) change nothing and the daemon stays up.

slixmpp runs on the test's own asyncio loop (the one the Twisted asyncio reactor drives),
like the D-Bus client.
"""

from __future__ import annotations

import asyncio

import pytest

from sat_frontends.bridge import errors as bridge_errors
from tests.support.bridge_helpers import (
    ProgressWatcher,
    SignalRecorder,
    add_profile,
    find_message,
    history,
    in_room,
    open_bridge,
    room_jid,
    search_uids,
)
from tests.support.dbus import asyncio_test
from tests.support.slix_peer import SlixPeer

TIMEOUT = 10
NS_LMC = "urn:xmpp:message-correct:0"
NS_RETRACT = "urn:xmpp:message-retract:1"
NS_REACTIONS = "urn:xmpp:reactions:0"
NS_REPLY = "urn:xmpp:reply:0"
NS_MODERATE = "urn:xmpp:message-moderate:1"
EDITING_PLUGINS = ("XEP-0308", "XEP-0424", "XEP-0444", "XEP-0461")
SIGNALS = ("MessageNew", "MessageUpdate")
SLIX_PLUGINS = ("xep_0030", "xep_0359", "xep_0308", "xep_0424", "xep_0428", "xep_0444", "xep_0461")
#: what slixmpp receives, as one queue (body-less messages do not make "message" events)
MESSAGES = ("message", "reactions")


def slix_peer(server, account, resource="slix", rooms=False) -> SlixPeer:
    """slixmpp with the editing XEPs (and MUC if ``rooms``) on the test's loop."""
    return SlixPeer(
        server,
        account,
        resource,
        plugins=SLIX_PLUGINS + (("xep_0045",) if rooms else ()),
        record=MESSAGES + (("groupchat_message",) if rooms else ()),
    )


@asyncio_test(timeout=120)
async def test_two_profiles_edit_round_trip(sat_daemon, prosody, make_account):
    a, b = make_account("e-alice"), make_account("e-bob")
    bridge = await open_bridge(sat_daemon)
    try:
        health = {p["name"]: p for p in await bridge.health_get()}
        for name in EDITING_PLUGINS:
            assert health[name]["loaded"], health[name]
        signals = SignalRecorder(bridge, SIGNALS)
        a_full = await add_profile(bridge, "alice", a, prosody)
        b_full = await add_profile(bridge, "bob", b, prosody)

        # --- correction
        a_uid = await bridge.message_send("alice", b_full, "Lets meet at the libary", {})
        received = await signals.new("bob", lambda m: m["body"] == "Lets meet at the libary")
        b_uid = received["uid"]
        await bridge.message_correct("alice", a_uid, "Let's meet at the library")
        _p, _u, _t, data = await signals.update("bob", b_uid, "correction")
        assert data["body"] == "Let's meet at the library"
        assert data["edits"][0]["body"] == "Lets meet at the libary"
        await signals.update("alice", a_uid, "correction")
        for profile, uid, peer in (("alice", a_uid, b.jid), ("bob", b_uid, a.jid)):
            message = await find_message(bridge, profile, peer, uid)
            assert message["body"] == "Let's meet at the library"
            assert message["extra"]["edits"][0]["body"] == "Lets meet at the libary"
            assert await search_uids(bridge, profile, "libary") == []
            assert await search_uids(bridge, profile, "library") == [uid]
            assert len(await history(bridge, profile, peer)) == 1

        # bob cannot correct nor retract alice's message
        with pytest.raises(bridge_errors.PermissionDenied):
            await bridge.message_correct("bob", b_uid, "I never said that")
        with pytest.raises(bridge_errors.PermissionDenied):
            await bridge.message_retract("bob", b_uid)

        # --- reactions
        await bridge.message_reactions_set("bob", b_uid, ["👍", "📚"])
        _p, _u, _t, data = await signals.update("alice", a_uid, "reaction")
        assert data["reactions"] == {"👍": [b.jid], "📚": [b.jid]}
        await bridge.message_reactions_set("alice", a_uid, ["👍"])
        await signals.wait(
            "MessageUpdate",
            lambda p, u, t, d: (
                p == "bob"
                and u == b_uid
                and t == "reaction"
                and d["reactions"].get("👍") == [b.jid, a.jid]
            ),
        )
        await bridge.message_reactions_set("bob", b_uid, [])
        await signals.wait(
            "MessageUpdate",
            lambda p, u, t, d: (
                p == "alice"
                and u == a_uid
                and t == "reaction"
                and d["reactions"] == {"👍": [a.jid]}
            ),
        )
        with pytest.raises(bridge_errors.InvalidArgument):
            await bridge.message_reactions_set("bob", b_uid, ["not an emoji"])
        assert (await find_message(bridge, "alice", b.jid, a_uid))["extra"]["reactions"] == {
            "👍": [a.jid]
        }

        # --- reply
        r_uid = await bridge.message_send("bob", a_full, "See you there", {"reply_to": b_uid})
        reply = await signals.new("alice", lambda m: m.get("extra", {}).get("reply_to"))
        assert reply["extra"]["reply_to"] == a_uid
        assert reply["body"] == "See you there"  # the fallback quote is not kept
        sent = await find_message(bridge, "bob", a.jid, r_uid)
        assert sent["body"] == "See you there" and sent["extra"]["reply_to"] == b_uid

        # --- retraction
        await bridge.message_retract("alice", a_uid)
        _p, _u, _t, data = await signals.update("bob", b_uid, "retraction")
        assert data["retracted"]["by"] == a.jid
        await signals.update("alice", a_uid, "retraction")
        for profile, uid, peer in (("alice", a_uid, b.jid), ("bob", b_uid, a.jid)):
            message = await find_message(bridge, profile, peer, uid)
            assert "body" not in message  # a tombstone
            assert message["extra"]["retracted"]["by"] == a.jid
            assert "edits" not in message["extra"]
            assert await search_uids(bridge, profile, "library") == []
        # the fallback body of the retraction was not stored as a message
        assert len(await history(bridge, "bob", a.jid)) == 2
        assert await bridge.is_ready()
    finally:
        await bridge.close()


@asyncio_test(timeout=120)
async def test_slixmpp_interop_corrections_and_friends(sat_daemon, prosody, make_account):
    a, s = make_account("e-alice"), make_account("e-slix")
    bridge = await open_bridge(sat_daemon)
    slix = slix_peer(prosody, s)
    try:
        signals = SignalRecorder(bridge, SIGNALS)
        a_full = await add_profile(bridge, "alice", a, prosody)
        await slix.connect(timeout=10)

        # our client advertises what it supports (what slixmpp would check first)
        info = await slix.xmpp.plugin["xep_0030"].get_info(jid=a_full, timeout=TIMEOUT)
        features = set(info["disco_info"]["features"])
        assert {NS_LMC, NS_RETRACT, NS_REACTIONS, NS_REPLY} <= features

        # --- slixmpp corrects its message: we apply it
        original = slix.xmpp.make_message(mto=a_full, mbody="Helo from slixmpp", mtype="chat")
        original.send()
        assert original["id"], "slixmpp gives ids with xep_0308 loaded"
        received = await signals.new("alice", lambda m: m["body"] == "Helo from slixmpp")
        uid = received["uid"]
        assert received["extra"]["message_id"] == original["id"]
        slix.xmpp.plugin["xep_0308"].correct_message(original, "Hello from slixmpp")
        _p, _u, _t, data = await signals.update("alice", uid, "correction")
        assert data["body"] == "Hello from slixmpp"
        message = await find_message(bridge, "alice", s.jid, uid)
        assert message["body"] == "Hello from slixmpp"
        assert message["extra"]["edits"][0]["body"] == "Helo from slixmpp"
        assert len(await history(bridge, "alice", s.jid)) == 1

        # --- it reacts to and replies to our message; we correct ours: it gets <replace/>
        a_uid = await bridge.message_send("alice", slix.jid, "Nice too meet you", {})
        ours = await slix.next_event(MESSAGES, lambda m: m["body"] == "Nice too meet you")
        assert ours["id"] == a_uid
        slix.xmpp.plugin["xep_0444"].send_reactions(a_full, ours["id"], ["🎉"])
        _p, _u, _t, data = await signals.update("alice", a_uid, "reaction")
        assert data["reactions"] == {"🎉": [s.jid]}
        await bridge.message_correct("alice", a_uid, "Nice to meet you")
        correction = await slix.next_event(
            MESSAGES, lambda m: m.xml.find(f"{{{NS_LMC}}}replace") is not None
        )
        assert correction["replace"]["id"] == a_uid
        assert correction["body"] == "Nice to meet you"
        assert correction["id"] != a_uid
        slix.xmpp.plugin["xep_0461"].send_reply(
            a_full,
            a_uid,
            fallback="Nice to meet you",
            mto=a_full,
            mbody="Likewise",
            mtype="chat",
        )
        reply = await signals.new("alice", lambda m: m.get("extra", {}).get("reply_to"))
        assert reply["extra"]["reply_to"] == a_uid
        assert reply["body"].strip() == "Likewise"

        # --- we retract and react: slixmpp gets the payloads with its/our ids
        await bridge.message_reactions_set("alice", uid, ["👌"])
        reaction = await slix.next_event(
            MESSAGES, lambda m: m.xml.find(f"{{{NS_REACTIONS}}}reactions") is not None
        )
        assert reaction["reactions"]["id"] == original["id"]
        assert reaction["reactions"].get_values() == {"👌"}
        await bridge.message_retract("alice", a_uid)
        retraction = await slix.next_event(
            MESSAGES, lambda m: m.xml.find(f"{{{NS_RETRACT}}}retract") is not None
        )
        assert retraction["retract"]["id"] == a_uid

        # --- slixmpp retracts its message
        slix.xmpp.plugin["xep_0424"].send_retraction(a_full, original["id"])
        await signals.update("alice", uid, "retraction")
        assert "body" not in await find_message(bridge, "alice", s.jid, uid)
        assert await search_uids(bridge, "alice", "slixmpp") == []
    finally:
        await slix.close()
        await bridge.close()


@asyncio_test(timeout=120)
async def test_hostile_edits_from_slixmpp_change_nothing(sat_daemon, prosody, make_account):
    a, m = make_account("e-alice"), make_account("e-mallory")
    bridge = await open_bridge(sat_daemon)
    mallory = slix_peer(prosody, m, "evil")
    try:
        signals = SignalRecorder(bridge, SIGNALS)
        a_full = await add_profile(bridge, "alice", a, prosody)
        await mallory.connect(timeout=10)
        a_uid = await bridge.message_send("alice", mallory.jid, "I agree to nothing", {})
        await mallory.next_event(MESSAGES, lambda msg: msg["id"] == a_uid)
        before = await history(bridge, "alice", m.jid)
        to = a_full
        raw = [
            # correcting our message
            f"<message to='{to}' type='chat' id='h1'><body>I agree to everything</body>"
            f"<replace xmlns='{NS_LMC}' id='{a_uid}'/></message>",
            # retracting our message
            f"<message to='{to}' type='chat' id='h2'><retract xmlns='{NS_RETRACT}' "
            f"id='{a_uid}'/><body>/me retracted a previous message</body></message>",
            # a forged moderation notice
            f"<message to='{to}' type='groupchat' id='h3'><retract xmlns='{NS_RETRACT}' "
            f"id='{a_uid}'><moderated xmlns='{NS_MODERATE}' by='{m.jid}'/></retract></message>",
            # garbage reactions: several containers, then non-emoji and huge values
            f"<message to='{to}' type='chat' id='h4'>"
            f"<reactions xmlns='{NS_REACTIONS}' id='{a_uid}'><reaction>👍</reaction></reactions>"
            f"<reactions xmlns='{NS_REACTIONS}' id='{a_uid}'><reaction>👎</reaction></reactions>"
            "</message>",
            f"<message to='{to}' type='chat' id='h5'><reactions xmlns='{NS_REACTIONS}' "
            f"id='{a_uid}'><reaction>{'A' * 5000}</reaction><reaction>&lt;b&gt;</reaction>"
            "</reactions></message>",
            # a reply with a fallback range past the body
            f"<message to='{to}' type='chat' id='h6'><body>short</body>"
            f"<reply xmlns='{NS_REPLY}' id='{'x' * 9000}'/>"
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>"
            "<body start='-5' end='999999'/></fallback></message>",
            # a correction with an absurd id
            f"<message to='{to}' type='chat' id='h7'><body>x</body>"
            f"<replace xmlns='{NS_LMC}' id='{'y' * 9000}'/></message>",
        ]
        for xml in raw:
            mallory.xmpp.send_raw(xml)
        # a normal message after them: once it is stored, all the above were processed
        mallory.xmpp.send_message(mto=a_full, mbody="last one", mtype="chat")
        await signals.new("alice", lambda msg: msg["body"] == "last one")
        await asyncio.sleep(0.3)  # messages are processed concurrently: let the others end
        ours = await find_message(bridge, "alice", m.jid, a_uid)
        assert ours == before[0]
        assert signals.of("MessageUpdate", "alice") == []
        bodies = [msg.get("body") for msg in await history(bridge, "alice", m.jid)]
        assert "I agree to everything" not in bodies
        assert "/me retracted a previous message" not in bodies
        assert bodies[-1] == "last one"
        assert await bridge.is_ready()
        assert await bridge.profile_is_connected("alice")
    finally:
        await mallory.close()
        await bridge.close()


@asyncio_test(timeout=150)
async def test_room_corrections_reactions_replies_retractions(sat_daemon, prosody, make_account):
    a, b, m = make_account("r-alice"), make_account("r-bob"), make_account("r-mallory")
    room = room_jid(prosody, "edit")
    bridge = await open_bridge(sat_daemon)
    mallory = slix_peer(prosody, m, "evil", rooms=True)
    try:
        signals = SignalRecorder(bridge, SIGNALS)
        await add_profile(bridge, "alice", a, prosody)
        await add_profile(bridge, "bob", b, prosody)
        info = await bridge.muc_join("alice", room, "alice", {})
        assert info["role"] == "moderator"
        await bridge.muc_join("bob", room, "bob", {})
        await mallory.connect(timeout=10)
        await mallory.join_room(room, "mallory")

        # --- alice corrects her message: applied when the room reflects it, for both
        a_uid = await bridge.message_send("alice", room, "Meeting at 10", {"type": "groupchat"})
        b_msg = await signals.new("bob", in_room(room, "alice"))
        b_uid = b_msg["uid"]
        assert b_msg["extra"].get("occupant_id"), "Prosody rooms announce XEP-0421"
        seen = await mallory.next_event("groupchat_message", lambda m: m["body"] == "Meeting at 10")
        await signals.new("alice", lambda msg: msg["uid"] == a_uid)
        await bridge.message_correct("alice", a_uid, "Meeting at 11")
        await signals.update("alice", a_uid, "correction")
        await signals.update("bob", b_uid, "correction")
        for profile, uid in (("alice", a_uid), ("bob", b_uid)):
            message = await find_message(bridge, profile, room, uid)
            assert message["body"] == "Meeting at 11"
            assert message["extra"]["edits"][0]["body"] == "Meeting at 10"

        # --- an occupant correcting / retracting someone else's message, forging moderation
        stanza_id = (await find_message(bridge, "bob", room, b_uid))["stanza_id"]
        for xml in (
            f"<message to='{room}' type='groupchat' id='h1'><body>Meeting cancelled</body>"
            f"<replace xmlns='{NS_LMC}' id='{seen['id']}'/></message>",
            f"<message to='{room}' type='groupchat' id='h2'><body>/me retracted</body>"
            f"<retract xmlns='{NS_RETRACT}' id='{stanza_id}'/></message>",
            f"<message to='{room}' type='groupchat' id='h3'><body>moderated</body>"
            f"<retract xmlns='{NS_RETRACT}' id='{stanza_id}'><moderated xmlns='{NS_MODERATE}' "
            f"by='{room}/mallory'/></retract></message>",
        ):
            mallory.xmpp.send_raw(xml)
        mallory.xmpp.send_message(mto=room, mbody="mallory was here", mtype="groupchat")
        await signals.new("bob", lambda msg: msg.get("body") == "mallory was here")
        await asyncio.sleep(0.3)
        for profile, uid in (("alice", a_uid), ("bob", b_uid)):
            message = await find_message(bridge, profile, room, uid)
            assert message["body"] == "Meeting at 11" and "retracted" not in message["extra"]
            assert len(message["extra"]["edits"]) == 1
        assert not [
            e
            for e in signals.of("MessageUpdate")
            if e[1] in (a_uid, b_uid) and e[2] != "correction"
        ]

        # --- moderation: bob is no moderator; Prosody 0.12 rooms do not offer it at all
        with pytest.raises(bridge_errors.PermissionDenied, match="moderator"):
            await bridge.message_moderate("bob", room, b_uid, "no")
        with pytest.raises(bridge_errors.PermissionDenied, match="moderation"):
            await bridge.message_moderate("alice", room, a_uid, "test")

        # --- reactions (room stanza-id) and a reply
        await bridge.message_reactions_set("bob", b_uid, ["👍"])
        _p, _u, _t, data = await signals.update("alice", a_uid, "reaction")
        assert data["reactions"] == {"👍": [f"{room}/bob"]}
        await signals.update("bob", b_uid, "reaction")  # bob's own, once reflected
        r_uid = await bridge.message_send(
            "bob", room, "Works for me", {"type": "groupchat", "reply_to": b_uid}
        )
        reply = await signals.new("alice", in_room(room, "bob", "Works for me"))
        assert reply["extra"]["reply_to"] == a_uid
        await signals.new("bob", lambda msg: msg["uid"] == r_uid)
        assert (await find_message(bridge, "bob", room, r_uid))["extra"]["reply_to"] == b_uid

        # --- alice retracts her message
        await bridge.message_retract("alice", a_uid)
        await signals.update("alice", a_uid, "retraction")
        _p, _u, _t, data = await signals.update("bob", b_uid, "retraction")
        assert data["retracted"]["by"] == f"{room}/alice"
        for profile, uid in (("alice", a_uid), ("bob", b_uid)):
            message = await find_message(bridge, profile, room, uid)
            assert "body" not in message and message["extra"]["retracted"]
            assert await search_uids(bridge, profile, "Meeting") == []
    finally:
        await mallory.close()
        await bridge.close()


@asyncio_test(timeout=120)
async def test_references_before_their_message_wait_for_it(sat_daemon, prosody, make_account):
    """A reaction, a retraction and a correction that arrive before the message they name
    are kept and applied when it arrives; a retraction naming a message of someone else
    (our own, sent from another of our clients) is still refused then."""
    a, s = make_account("p-alice"), make_account("p-slix")
    bridge = await open_bridge(sat_daemon)
    slix = slix_peer(prosody, s)
    other = SlixPeer(prosody, a, "other", plugins=("xep_0030",), record=("presence_available",))
    try:
        signals = SignalRecorder(bridge, SIGNALS)
        await other.connect(timeout=10)
        a_full = await add_profile(bridge, "alice", a, prosody)
        await slix.connect(timeout=10)
        # the daemon's initial presence goes out once its plugins are set (carbons enabled)
        await other.wait_event("presence_available", lambda p: str(p["from"]) == a_full)
        early = [
            f"<message to='{a_full}' type='chat' id='x1'><reactions xmlns='{NS_REACTIONS}' "
            "id='early-1'><reaction>🎉</reaction></reactions><store xmlns='urn:xmpp:hints'/>"
            "</message>",
            f"<message to='{a_full}' type='chat' id='x2'><retract xmlns='{NS_RETRACT}' "
            "id='early-2'/><body>/me retracted a previous message</body></message>",
            f"<message to='{a_full}' type='chat' id='x4'><retract xmlns='{NS_RETRACT}' "
            "id='early-4'/><body>/me retracted a previous message</body></message>",
            f"<message to='{a_full}' type='chat' id='x3'><body>Corrected text</body>"
            f"<replace xmlns='{NS_LMC}' id='early-3'/></message>",
        ]
        for xml in early:
            await slix.send_raw(xml)
        # the correction of an unknown message is stored on its own meanwhile (once it is,
        # the references sent before it are kept)
        standalone = await signals.new("alice", lambda m: m.get("body") == "Corrected text")
        assert standalone["extra"]["replace_id"] == "early-3"
        assert signals.of("MessageUpdate", "alice") == []

        # our own client writes to slixmpp with id early-4: a carbon reaches the daemon
        await other.send_raw(
            f"<message to='{s.jid}' type='chat' id='early-4'><body>Mine, not yours</body></message>"
        )
        mine = await signals.new("alice", lambda m: m.get("body") == "Mine, not yours")
        assert mine["outgoing"] and mine["extra"].get("carbon") == "sent"
        for n, body in ((1, "Party tonight"), (2, "Oops, wrong chat"), (3, "Wrnog txet")):
            await slix.send_raw(
                f"<message to='{a_full}' type='chat' id='early-{n}'><body>{body}</body></message>"
            )
        party = await signals.new("alice", lambda m: m.get("body") == "Party tonight")
        oops = await signals.new("alice", lambda m: m.get("body") == "Oops, wrong chat")
        typo = await signals.new("alice", lambda m: m.get("body") == "Wrnog txet")
        _p, _u, _t, data = await signals.update("alice", party["uid"], "reaction")
        assert data["reactions"] == {"🎉": [s.jid]}
        await signals.update("alice", oops["uid"], "retraction")
        _p, _u, _t, data = await signals.update("alice", typo["uid"], "correction")
        assert data["body"] == "Corrected text"
        await signals.update("alice", standalone["uid"], "deleted")

        rows = {m["uid"]: m for m in await history(bridge, "alice", s.jid)}
        assert rows[party["uid"]]["extra"]["reactions"] == {"🎉": [s.jid]}
        assert "body" not in rows[oops["uid"]] and rows[oops["uid"]]["extra"]["retracted"]
        assert rows[typo["uid"]]["body"] == "Corrected text"
        assert rows[typo["uid"]]["extra"]["edits"][0]["body"] == "Wrnog txet"
        assert standalone["uid"] not in rows
        assert await search_uids(bridge, "alice", "wrong") == []
        # our message (the carbon) kept its text: slixmpp could not retract it
        assert rows[mine["uid"]]["body"] == "Mine, not yours"
        assert "retracted" not in rows[mine["uid"]]["extra"]
        assert not [e for e in signals.of("MessageUpdate", "alice") if e[1] == mine["uid"]]
        assert await bridge.is_ready()
    finally:
        await other.close()
        await slix.close()
        await bridge.close()


@asyncio_test(timeout=120)
async def test_catch_up_applies_early_references_and_resists_forged_tombstones(
    sat_daemon, prosody, make_account
):
    """While we are offline a contact sends a reaction before the message it names, and a
    ``<retracted/>`` (a tombstone's form) naming our message, with a store hint: our
    archive keeps both as they are. The catch-up applies the reaction once its message is
    stored; the forged tombstone cannot retract our message (it is not the archive's
    tombstone of it: another archive id, another sender)."""
    a, m = make_account("t-alice"), make_account("t-mallory")
    bridge = await open_bridge(sat_daemon)
    mallory = slix_peer(prosody, m, "evil")
    try:
        signals = SignalRecorder(bridge, SIGNALS)
        watcher = ProgressWatcher(bridge, f"mam:alice:{a.jid}")
        await add_profile(bridge, "alice", a, prosody)
        await watcher.wait()
        await mallory.connect(timeout=10)
        a_uid = await bridge.message_send("alice", m.jid, "I agree to nothing", {})
        await mallory.next_event(MESSAGES, lambda msg: msg["id"] == a_uid)
        await bridge.profile_disconnect("alice")

        hint = "<store xmlns='urn:xmpp:hints'/>"
        for xml in (
            f"<message to='{a.jid}' type='chat' id='re-1'><reactions xmlns='{NS_REACTIONS}' "
            f"id='later-1'><reaction>👍</reaction></reactions>{hint}</message>",
            f"<message to='{a.jid}' type='chat' id='{a_uid}'><retracted xmlns='{NS_RETRACT}' "
            f"id='forged' stamp='2020-01-01T00:00:00Z'/>{hint}</message>",
            f"<message to='{a.jid}' type='chat' id='later-1'><body>Late news</body></message>",
        ):
            await mallory.send_raw(xml)
        await asyncio.sleep(0.5)  # archived by the server

        watcher.reset()
        signals.clear()
        assert await bridge.profile_connect("alice", "")
        done = await watcher.wait()
        assert done["stored"] >= 1, done
        late = await signals.new("alice", lambda msg: msg.get("body") == "Late news")
        assert late["extra"].get("archived")
        _p, _u, _t, data = await signals.update("alice", late["uid"], "reaction")
        assert data["reactions"] == {"👍": [m.jid]}
        rows = {msg["uid"]: msg for msg in await history(bridge, "alice", m.jid)}
        assert rows[late["uid"]]["extra"]["reactions"] == {"👍": [m.jid]}
        assert rows[a_uid]["body"] == "I agree to nothing"
        assert "retracted" not in rows[a_uid]["extra"]
        assert not [e for e in signals.of("MessageUpdate", "alice") if e[1] == a_uid]
        assert await search_uids(bridge, "alice", "agree") == [a_uid]
        # what the archive holds of the forged one: a body-less placeholder, mallory's own
        (forged,) = [msg for msg in rows.values() if msg["extra"].get("retracted")]
        assert forged["from"].startswith(m.jid) and "body" not in forged
        assert await bridge.is_ready()
    finally:
        await mallory.close()
        await bridge.close()


@asyncio_test(timeout=120)
async def test_catch_up_links_a_reply_sent_before_its_message(sat_daemon, prosody, make_account):
    """While we are offline a contact's reply reaches our archive before the message it
    answers (sent later, with the id the reply names). The catch-up stores the reply as
    received (the target is not known yet), then links it once the message is stored:
    ``extra["reply_to"]`` and a ``MessageUpdate`` of type ``reply``."""
    a, b = make_account("p-alice"), make_account("p-bob")
    bridge = await open_bridge(sat_daemon)
    slix = slix_peer(prosody, b, "slix")
    try:
        signals = SignalRecorder(bridge, SIGNALS)
        watcher = ProgressWatcher(bridge, f"mam:alice:{a.jid}")
        await add_profile(bridge, "alice", a, prosody)
        await watcher.wait()
        await slix.connect(timeout=10)
        await bridge.profile_disconnect("alice")

        quote = "> Cake on Friday?\n"
        b_full = f"{b.jid}/slix"
        for xml in (
            f"<message to='{a.jid}' type='chat' id='early-reply'><body>{quote}Count me in"
            f"</body><reply xmlns='{NS_REPLY}' to='{b_full}' id='later-q'/>"
            f"<fallback xmlns='urn:xmpp:fallback:0' for='{NS_REPLY}'>"
            f"<body start='0' end='{len(quote)}'/></fallback></message>",
            f"<message to='{a.jid}' type='chat' id='later-q'><body>Cake on Friday?</body>"
            "</message>",
        ):
            await slix.send_raw(xml)
        await asyncio.sleep(0.5)  # archived by the server

        watcher.reset()
        signals.clear()
        assert await bridge.profile_connect("alice", "")
        done = await watcher.wait()
        assert done["stored"] >= 2, done
        reply = await signals.new("alice", lambda m: (m.get("body") or "").endswith("Count me in"))
        question = await signals.new("alice", lambda m: m.get("body") == "Cake on Friday?")
        assert reply["extra"].get("archived") and question["extra"].get("archived")
        assert reply["extra"]["reply_to_id"] == "later-q"
        _p, _u, _t, data = await signals.update("alice", reply["uid"], "reply")
        assert data == {"reply_to": question["uid"]}
        rows = {m["uid"]: m for m in await history(bridge, "alice", b.jid)}
        assert rows[reply["uid"]]["extra"]["reply_to"] == question["uid"]
        assert rows[reply["uid"]]["body"] == quote + "Count me in"  # stored as received
        assert "reply_to" not in rows[question["uid"]]["extra"]
        assert await bridge.is_ready()
    finally:
        await slix.close()
        await bridge.close()
