"""Group chat through the real daemon (D-Bus) and Prosody's ``conference.localhost``.

Two or three profiles share rooms: talk, nick change, subject, kick, configuration,
passwords, invitations, bookmarks with autojoin (XEP-0402 and the XEP-0048 fallback),
rejoin after a fresh reconnection, self-ping; and slixmpp (its XEP-0045 plugin) as an
independent occupant: it sends, we receive; we send, it receives.
"""

from __future__ import annotations

import asyncio

import pytest

from sat_frontends.bridge import errors as bridge_errors
from tests.support.bridge_helpers import MUC_SIGNALS, history, in_room, open_session, room_jid
from tests.support.dbus import asyncio_test
from tests.support.slix_peer import SlixPeer
from tests.support.waiting import eventually

SIGNALS = ("MessageNew", "Connected", *MUC_SIGNALS)


async def setup(daemon, server, accounts: dict):
    """A bridge client recording the group chat signals, and ``accounts`` connected."""
    return await open_session(daemon, server, accounts, SIGNALS)


PERSISTENT = {"muc#roomconfig_persistentroom": True}


@asyncio_test(timeout=90)
async def test_two_profiles_talk_nick_subject_config_kick(sat_daemon, prosody, make_account):
    a, b = make_account("m-alice"), make_account("m-bob")
    bridge, rec = await setup(sat_daemon, prosody, {"alice": a, "bob": b})
    room = room_jid(prosody)
    try:
        info = await bridge.muc_join("alice", room, "alice", {"config": PERSISTENT})
        assert info["created"] and info["role"] == "moderator" and info["affiliation"] == "owner"
        assert info["mam"], "Prosody's rooms have MUC MAM (muc_mam)"
        info = await bridge.muc_join("bob", room, "bob", {})
        assert not info["created"] and info["nick"] == "bob"
        assert {o["nick"] for o in info["occupants"]} == {"alice", "bob"}
        await rec.wait(
            "MucOccupantUpdate",
            lambda p, r, o: (
                p == "alice" and r == room and o["nick"] == "bob" and o["state"] == "joined"
            ),
        )
        rooms = await bridge.muc_rooms_joined("alice")
        assert [r["room"] for r in rooms] == [room]

        # alice talks: bob receives, alice stores the room's reflection once
        uid = await bridge.message_send("alice", room, "Bonjour à tous", {"type": "groupchat"})
        received = await rec.new("bob", in_room(room, "alice"))
        assert received["body"] == "Bonjour à tous" and not received["outgoing"]
        reflected = await rec.new("alice", in_room(room, "alice"))
        assert reflected["uid"] == uid and reflected["outgoing"]
        await bridge.message_send("bob", room, "Salut Alice", {"type": "groupchat"})
        await rec.new("alice", in_room(room, "bob", "Salut Alice"))
        await asyncio.sleep(0.3)
        history = await bridge.history_get("alice", room, 50, {})
        assert [(m["source_resource"], m["body"]) for m in history] == [
            ("alice", "Bonjour à tous"),
            ("bob", "Salut Alice"),
        ]
        assert history[0]["uid"] == uid and history[0]["type"] == "groupchat"

        # nick change
        assert await bridge.muc_nick_set("bob", room, "bobby") == "bobby"
        await rec.wait(
            "MucOccupantUpdate",
            lambda p, r, o: p == "alice" and o["state"] == "nick" and o["nick"] == "bobby",
        )
        occupants = await bridge.muc_occupants_get("alice", room)
        assert {o["nick"] for o in occupants} == {"alice", "bobby"}
        with pytest.raises(bridge_errors.BridgeError) as conflict:
            await bridge.muc_nick_set("bob", room, "alice")
        assert conflict.value.name == "MucNickConflict"

        # subject
        await bridge.muc_subject_set("alice", room, "Ordre du jour")
        await rec.wait(
            "MucSubject",
            lambda p, r, s, by: p == "bob" and r == room and s == "Ordre du jour" and by == "alice",
        )

        # configuration form round trip
        form = await bridge.muc_config_get("alice", room)
        fields = {f["var"]: f for f in form["fields"]}
        assert form["form_type"] == "http://jabber.org/protocol/muc#roomconfig"
        assert fields["muc#roomconfig_persistentroom"]["values"] == ["1"]
        await bridge.muc_config_set("alice", room, {"muc#roomconfig_roomname": "Salle test"})
        form = await bridge.muc_config_get("alice", room)
        fields = {f["var"]: f for f in form["fields"]}
        assert fields["muc#roomconfig_roomname"]["values"] == ["Salle test"]
        with pytest.raises(bridge_errors.PermissionDenied):
            await bridge.muc_config_get("bob", room)

        # kick by the moderator
        with pytest.raises(bridge_errors.PermissionDenied):
            await bridge.muc_kick("bob", room, "alice", "")
        await bridge.muc_kick("alice", room, "bobby", "Dehors")
        (_p, _r, details) = await rec.wait("MucRoomLeft", lambda p, r, d: p == "bob")
        assert details["reason"] == "kicked" and details.get("message") == "Dehors"
        await rec.wait(
            "MucOccupantUpdate",
            lambda p, r, o: p == "alice" and o["nick"] == "bobby" and o["state"] == "left",
        )
        assert await bridge.muc_rooms_joined("bob") == []
        with pytest.raises(bridge_errors.PermissionDenied) as refused:
            await bridge.message_send("bob", room, "still here?", {"type": "groupchat"})
        assert "not in room" in refused.value.message

        await bridge.muc_leave("alice", room, "bye")
        await rec.wait("MucRoomLeft", lambda p, r, d: p == "alice" and d["reason"] == "left")
    finally:
        await bridge.close()


@asyncio_test(timeout=90)
async def test_moderation_affiliations_ban_destroy(sat_daemon, prosody, make_account):
    a, b = make_account("o-alice"), make_account("o-bob")
    bridge, rec = await setup(sat_daemon, prosody, {"alice": a, "bob": b})
    room = room_jid(prosody, "mod")
    try:
        assert prosody.muc_domain in await bridge.muc_services_get("alice")
        await bridge.muc_join("alice", room, "alice", {"config": PERSISTENT})
        await bridge.muc_join("bob", room, "bob", {})
        await bridge.muc_affiliation_set("alice", room, "bob", "member", "welcome")
        members = await bridge.muc_affiliations_get("alice", room, "member")
        assert [m["jid"] for m in members] == [b.jid]
        await rec.wait(
            "MucOccupantUpdate",
            lambda p, r, o: p == "bob" and o["self"] and o["affiliation"] == "member",
        )
        # a visitor cannot talk: the room refuses, we are told
        await bridge.muc_role_set("alice", room, "bob", "visitor", "")
        await rec.wait(
            "MucOccupantUpdate", lambda p, r, o: p == "bob" and o["self"] and o["role"] == "visitor"
        )
        uid = await bridge.message_send("bob", room, "can I speak?", {"type": "groupchat"})
        (_p, _r, error_uid, error) = await rec.wait("MucMessageError", lambda p, *a: p == "bob")
        assert error_uid == uid and error.startswith("forbidden")
        with pytest.raises(bridge_errors.PermissionDenied):
            await bridge.muc_ban("bob", room, a.jid, "")
        # ban: bob is out and cannot come back
        await bridge.muc_ban("alice", room, "bob", "enough")
        (_p, _r, details) = await rec.wait("MucRoomLeft", lambda p, r, d: p == "bob")
        assert details["reason"] == "banned"
        outcasts = await bridge.muc_affiliations_get("alice", room, "outcast")
        assert [o["jid"] for o in outcasts] == [b.jid]
        with pytest.raises(bridge_errors.BridgeError) as banned:
            await bridge.muc_join("bob", room, "bob", {})
        assert banned.value.name == "MucBanned"
        # the owner destroys the room
        await bridge.muc_room_destroy("alice", room, "closing", "")
        (_p, _r, details) = await rec.wait("MucRoomLeft", lambda p, r, d: p == "alice")
        assert details["reason"] == "destroyed" and details.get("message") == "closing"
    finally:
        await bridge.close()


@asyncio_test(timeout=90)
async def test_room_history_comes_from_mam(sat_daemon, prosody, make_account):
    a, b = make_account("h-alice"), make_account("h-bob")
    bridge, rec = await setup(sat_daemon, prosody, {"alice": a, "bob": b})
    room = room_jid(prosody, "hist")
    try:
        await bridge.muc_join("alice", room, "alice", {"config": PERSISTENT})
        for i in range(3):
            await bridge.message_send("alice", room, f"before {i}", {"type": "groupchat"})
        await rec.new("alice", in_room(room, "alice", "before 2"))
        info = await bridge.muc_join("bob", room, "bob", {})
        assert info["mam"]

        async def bob_history(count):
            rows = await history(bridge, "bob", room)
            return rows if len(rows) >= count else None

        rows = await eventually(lambda: bob_history(3), what="3 messages in bob's history")
        assert [m["body"] for m in rows] == ["before 0", "before 1", "before 2"]
        assert all(m["source_resource"] == "alice" and m["stanza_id"] for m in rows)
        await bridge.muc_leave("bob", room, "")
        await bridge.message_send("alice", room, "while away", {"type": "groupchat"})
        await rec.new("alice", in_room(room, "alice", "while away"))
        await bridge.muc_join("bob", room, "bob", {})
        await bridge.message_send("alice", room, "live", {"type": "groupchat"})
        await rec.new("bob", in_room(room, "alice", "live"))
        await eventually(lambda: bob_history(5), what="5 messages in bob's history")
        await asyncio.sleep(0.5)
        rows = await bridge.history_get("bob", room, 100, {})
        assert [m["body"] for m in rows] == [
            "before 0",
            "before 1",
            "before 2",
            "while away",
            "live",
        ]
    finally:
        await bridge.close()


@asyncio_test(timeout=90)
async def test_occupants_are_not_contacts(sat_daemon, prosody, make_account):
    """Room presences reach the occupant signals only: no PresenceUpdate, nothing in the
    contacts' presences, no ghost after leaving."""
    a, b = make_account("pr-alice"), make_account("pr-bob")
    bridge, rec = await open_session(
        sat_daemon, prosody, {"alice": a, "bob": b}, (*SIGNALS, "PresenceUpdate")
    )
    room = room_jid(prosody, "pres")

    def room_presences():
        return [e for e in rec.of("PresenceUpdate") if e[1].split("/")[0] == room]

    try:
        await bridge.muc_join("alice", room, "alice", {})
        await bridge.muc_join("bob", room, "bob", {})
        await rec.wait(
            "MucOccupantUpdate",
            lambda p, r, o: p == "alice" and o["nick"] == "bob" and o["state"] == "joined",
        )
        await bridge.presence_set("bob", "away", {"default": "brb"}, 0)
        await rec.wait(
            "MucOccupantUpdate",
            lambda p, r, o: p == "alice" and o["nick"] == "bob" and o.get("show") == "away",
        )
        for profile in ("alice", "bob"):
            statuses = await bridge.presence_statuses_get(profile)
            assert not [s for s in statuses if s["entity"].startswith(room)], statuses
        await bridge.muc_leave("bob", room, "")
        await rec.wait(
            "MucOccupantUpdate",
            lambda p, r, o: p == "alice" and o["nick"] == "bob" and o["state"] == "left",
        )
        await bridge.muc_leave("alice", room, "")
        await rec.wait("MucRoomLeft", lambda p, r, d: p == "alice" and r == room)
        await asyncio.sleep(0.3)
        assert room_presences() == []
        for profile in ("alice", "bob"):
            statuses = await bridge.presence_statuses_get(profile)
            assert not [s for s in statuses if s["entity"].startswith(room)], statuses
            gone = await bridge.presence_get(profile, f"{room}/bob")
            assert gone["show"] == "unavailable" and "statuses" not in gone
    finally:
        await bridge.close()


@asyncio_test(timeout=90)
async def test_password_invitation_and_nick_conflict(sat_daemon, prosody, make_account):
    a, b, c = make_account("i-alice"), make_account("i-bob"), make_account("i-carol")
    bridge, rec = await setup(sat_daemon, prosody, {"alice": a, "bob": b, "carol": c})
    room = room_jid(prosody, "secret")
    try:
        await bridge.muc_join(
            "alice",
            room,
            "alice",
            {
                # Prosody protects the room as soon as it has a secret
                "config": {"muc#roomconfig_roomsecret": "sésame"}
            },
        )
        with pytest.raises(bridge_errors.BridgeError) as refused:
            await bridge.muc_join("bob", room, "bob", {})
        assert refused.value.name == "MucPasswordRequired", refused.value
        assert "password" in refused.value.message

        await bridge.muc_invite("alice", room, b.jid, "Viens !")
        (_p, inv_room, inviter, reason, password) = await rec.wait(
            "MucInvitation", lambda p, *a: p == "bob"
        )
        assert (inv_room, reason, password) == (room, "Viens !", "sésame")
        assert inviter.startswith(a.jid)
        await asyncio.sleep(0.3)
        assert await bridge.muc_rooms_joined("bob") == []  # never joined automatically
        info = await bridge.muc_join("bob", room, "bob", {"password": password})
        assert info["state"] == "joined"

        # carol wants "alice": an error when asked, a suffix otherwise
        with pytest.raises(bridge_errors.BridgeError) as conflict:
            await bridge.muc_join(
                "carol", room, "alice", {"password": "sésame", "nick_conflict": "error"}
            )
        assert conflict.value.name == "MucNickConflict"
        info = await bridge.muc_join("carol", room, "alice", {"password": "sésame"})
        assert info["nick"] == "alice_"
    finally:
        await bridge.close()


@asyncio_test(timeout=120)
async def test_bookmarks_autojoin_after_reconnection(sat_daemon, prosody, make_account):
    a = make_account("b-alice")
    bridge, rec = await setup(sat_daemon, prosody, {"alice": a})
    room = room_jid(prosody, "bm")
    try:
        await bridge.muc_join("alice", room, "ali", {"config": PERSISTENT})
        await bridge.muc_leave("alice", room, "")
        assert await bridge.bookmarks_list("alice") == []
        rec.clear()
        await bridge.bookmark_set("alice", room, "Mes amis", "ali", True, "")
        # the server notifies the change (XEP-0402 §4): autojoin means we join
        await rec.wait("MucRoomJoined", lambda p, r, i: p == "alice" and r == room)
        (bookmark,) = await bridge.bookmarks_list("alice")
        assert bookmark == {
            "room": room,
            "name": "Mes amis",
            "nick": "ali",
            "autojoin": True,
            "has_password": False,
        }
        rec.clear()
        await bridge.profile_disconnect("alice")
        await bridge.profile_connect("alice", "")
        (_p, _r, info) = await rec.wait("MucRoomJoined", lambda p, r, i: r == room, timeout=15)
        assert info["nick"] == "ali"
        assert [r["room"] for r in await bridge.muc_rooms_joined("alice")] == [room]

        # switching autojoin off leaves the room; removing the bookmark works
        await bridge.bookmark_set("alice", room, "Mes amis", "ali", False, "")
        await rec.wait("MucRoomLeft", lambda p, r, d: r == room)
        await bridge.bookmark_remove("alice", room)
        assert await bridge.bookmarks_list("alice") == []
        with pytest.raises(bridge_errors.NotFound):
            await bridge.bookmark_remove("alice", room)
    finally:
        await bridge.close()


@asyncio_test(timeout=120)
async def test_legacy_bookmarks_without_compat(make_prosody, make_sat_daemon):
    """A server without XEP-0402 compat: XEP-0048 in private PEP, autojoin still works."""
    server = make_prosody(
        extra_global={
            "modules_disabled": ["s2s", "s2s_auth_certs", "dialback", "s2s_bidi", "bookmarks"]
        }
    )
    a = server.register("legacy", "legacy-pass")
    d = make_sat_daemon(server)
    bridge, rec = await setup(d, server, {"alice": a})
    room = room_jid(server, "legacy")
    try:
        await bridge.muc_join("alice", room, "ali", {"config": PERSISTENT})
        await bridge.bookmark_set("alice", room, "Old style", "ali", True, "pw")
        (bookmark,) = await bridge.bookmarks_list("alice")
        assert bookmark["has_password"] and bookmark["autojoin"]
        rec.clear()
        await bridge.profile_disconnect("alice")
        await bridge.profile_connect("alice", "")
        await rec.wait("MucRoomJoined", lambda p, r, i: r == room, timeout=15)
        (bookmark,) = await bridge.bookmarks_list("alice")
        assert bookmark["name"] == "Old style"
    finally:
        await bridge.close()
    log = d.log_path.read_text()
    assert "bookmark(s) (pep)" in log


@asyncio_test(timeout=120)
async def test_rejoin_after_server_restart_and_self_ping(
    fresh_prosody, make_account, make_sat_daemon
):
    server = fresh_prosody
    a = make_account("r-alice", server=server)
    d = make_sat_daemon(server)
    bridge, rec = await setup(d, server, {"alice": a})
    room = room_jid(server, "restart")
    try:
        await bridge.muc_join("alice", room, "ali", {"config": PERSISTENT})
        assert await bridge.muc_self_ping("alice", room) == "joined"

        # the room silently forgets us: the self-ping notices and we join again
        server.admin(
            f'> local room = prosody.hosts["{server.muc_domain}"].modules.muc'
            f'.get_room_from_jid("{room}"); '
            f'local occupant = room:get_occupant_by_nick("{room}/ali"); '
            "occupant.role = nil; room:save_occupant(occupant)"
        )
        rec.clear()
        assert await bridge.muc_self_ping("alice", room) == "rejoined"
        await rec.wait("MucRoomJoined", lambda p, r, i: r == room and i["rejoined"])

        # a server restart: no stream resumption, a fresh session rejoins the room
        rec.clear()
        await asyncio.get_running_loop().run_in_executor(None, server.restart)
        await rec.wait("Connected", lambda p, jid, resumed: not resumed, timeout=20)
        (_p, _r, info) = await rec.wait("MucRoomJoined", lambda p, r, i: r == room, timeout=20)
        assert info["rejoined"] and info["nick"] == "ali"
        uid = await bridge.message_send("alice", room, "back", {"type": "groupchat"})
        message = await rec.new("alice", in_room(room, "ali"))
        assert message["uid"] == uid
    finally:
        await bridge.close()


# --- slixmpp as another occupant ------------------------------------------------------------


@asyncio_test(timeout=90)
async def test_slixmpp_occupant_interop(sat_daemon, prosody, make_account):
    a, s = make_account("x-alice"), make_account("x-slix")
    bridge, rec = await setup(sat_daemon, prosody, {"alice": a})
    room = room_jid(prosody, "interop")
    # on its own loop in a thread: everything touching slix.xmpp goes through slix.run
    slix = SlixPeer(
        prosody, s, plugins=("xep_0030", "xep_0045"), record=("groupchat_message",), own_loop=True
    )
    try:
        await bridge.muc_join("alice", room, "alice", {})
        await slix.connect(timeout=10)
        await slix.join_room(room, "slixy")
        (_p, _r, occupant) = await rec.wait(
            "MucOccupantUpdate", lambda p, r, o: o["nick"] == "slixy" and o["state"] == "joined"
        )
        assert occupant["role"] == "participant"

        # slixmpp sends, we receive
        await slix.send_message(room, "Hello from slixmpp ✓", "groupchat")
        message = await rec.new("alice", in_room(room, "slixy"))
        assert message["body"] == "Hello from slixmpp ✓" and not message["outgoing"]

        # we send, slixmpp receives with our nick
        await bridge.message_send("alice", room, "Hello slixmpp, ça va ?", {"type": "groupchat"})
        got = await slix.wait_event(
            "groupchat_message", lambda m: m["body"] == "Hello slixmpp, ça va ?"
        )
        assert {"room": got["from"].bare, "nick": got["mucnick"], "body": got["body"]} == {
            "room": room,
            "nick": "alice",
            "body": "Hello slixmpp, ça va ?",
        }

        # slixmpp leaves: we see it
        await slix.close()
        await rec.wait(
            "MucOccupantUpdate", lambda p, r, o: o["nick"] == "slixy" and o["state"] == "left"
        )
        history = await bridge.history_get("alice", room, 10, {})
        assert [(m["source_resource"], m["outgoing"]) for m in history] == [
            ("slixy", False),
            ("alice", True),
        ]
    finally:
        await slix.close()
        await bridge.close()
