"""Group chat through the real daemon (D-Bus) and Prosody's ``conference.localhost``.

Two or three profiles share rooms: talk, nick change, subject, kick, configuration,
passwords, invitations, bookmarks with autojoin (XEP-0402 and the XEP-0048 fallback),
rejoin after a fresh reconnection, self-ping; and slixmpp (its XEP-0045 plugin) as an
independent occupant: it sends, we receive; we send, it receives.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from sat_frontends.bridge import errors as bridge_errors
from sat_frontends.bridge.dbus_client import DBusBridgeClient
from tests.support.daemon import SatDaemon
from tests.support.dbus import asyncio_test, dbus_bus  # noqa: F401  (fixture)

SIGNALS = (
    "MessageNew",
    "MucMessageError",
    "MucRoomJoined",
    "MucRoomLeft",
    "MucOccupantUpdate",
    "MucSubject",
    "MucInvitation",
    "BookmarkUpdate",
    "BookmarkRemoved",
    "Connected",
)


@pytest.fixture
def daemon(tmp_path, dbus_bus, prosody):  # noqa: F811
    d = SatDaemon(tmp_path / "daemon", dbus_bus.address, prosody.ca_cert_path)
    d.start()
    yield d
    if d.process is not None:
        d.stop()


class Recorder:
    """Every signal of interest, with a way to wait for one."""

    def __init__(self, bridge: DBusBridgeClient):
        self.events: list[tuple[str, tuple]] = []
        self._waiters: list[tuple[str, Callable, asyncio.Future]] = []
        for name in SIGNALS:
            bridge.on(name, self._make(name))

    def _make(self, name):
        def record(*args):
            self.events.append((name, args))
            for waiter in list(self._waiters):
                wanted, predicate, future = waiter
                if wanted == name and not future.done() and predicate(*args):
                    future.set_result(args)
                    self._waiters.remove(waiter)

        return record

    def seen(self, name, predicate=lambda *a: True) -> list[tuple]:
        return [args for n, args in self.events if n == name and predicate(*args)]

    async def wait(self, name, predicate=lambda *a: True, timeout=10.0) -> tuple:
        for n, args in self.events:
            if n == name and predicate(*args):
                return args
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((name, predicate, future))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AssertionError(f"no {name} signal matching after {timeout} s") from None

    def clear(self):
        self.events.clear()


async def setup(daemon, server, accounts: dict) -> tuple[DBusBridgeClient, Recorder]:
    bridge = await DBusBridgeClient.connect(daemon.bus_address, wait=10, timeout=30)
    recorder = Recorder(bridge)
    for name, account in accounts.items():
        await bridge.profile_create(
            name,
            account.jid,
            account.password,
            "",
            {"host": "127.0.0.1", "port": server.c2s_port},
        )
        await bridge.profile_connect(name, "")
    return bridge, recorder


def room_name(prosody, prefix="room") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@{prosody.muc_domain}"


def groupchat_from(profile, room, nick=None, body=None):
    def predicate(p, message):
        return (
            p == profile
            and message.get("type") == "groupchat"
            and message.get("from", "").startswith(room + "/")
            and (nick is None or message.get("source_resource") == nick)
            and (body is None or message.get("body") == body)
        )

    return predicate


PERSISTENT = {"muc#roomconfig_persistentroom": True}


@asyncio_test(timeout=90)
async def test_two_profiles_talk_nick_subject_config_kick(daemon, prosody, make_account):
    a, b = make_account("m-alice"), make_account("m-bob")
    bridge, rec = await setup(daemon, prosody, {"alice": a, "bob": b})
    room = room_name(prosody)
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
        (_p, received) = await rec.wait("MessageNew", groupchat_from("bob", room, "alice"))
        assert received["body"] == "Bonjour à tous" and not received["outgoing"]
        (_p, reflected) = await rec.wait("MessageNew", groupchat_from("alice", room, "alice"))
        assert reflected["uid"] == uid and reflected["outgoing"]
        await bridge.message_send("bob", room, "Salut Alice", {"type": "groupchat"})
        await rec.wait("MessageNew", groupchat_from("alice", room, "bob", "Salut Alice"))
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
async def test_moderation_affiliations_ban_destroy(daemon, prosody, make_account):
    a, b = make_account("o-alice"), make_account("o-bob")
    bridge, rec = await setup(daemon, prosody, {"alice": a, "bob": b})
    room = room_name(prosody, "mod")
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
async def test_room_history_comes_from_mam(daemon, prosody, make_account):
    a, b = make_account("h-alice"), make_account("h-bob")
    bridge, rec = await setup(daemon, prosody, {"alice": a, "bob": b})
    room = room_name(prosody, "hist")
    try:
        await bridge.muc_join("alice", room, "alice", {"config": PERSISTENT})
        for i in range(3):
            await bridge.message_send("alice", room, f"before {i}", {"type": "groupchat"})
        await rec.wait("MessageNew", groupchat_from("alice", room, "alice", "before 2"))
        info = await bridge.muc_join("bob", room, "bob", {})
        assert info["mam"]

        async def bob_history(count):
            deadline = time.monotonic() + 10
            while True:
                rows = await bridge.history_get("bob", room, 100, {})
                if len(rows) >= count or time.monotonic() > deadline:
                    return rows
                await asyncio.sleep(0.1)

        rows = await bob_history(3)
        assert [m["body"] for m in rows] == ["before 0", "before 1", "before 2"]
        assert all(m["source_resource"] == "alice" and m["stanza_id"] for m in rows)
        await bridge.muc_leave("bob", room, "")
        await bridge.message_send("alice", room, "while away", {"type": "groupchat"})
        await rec.wait("MessageNew", groupchat_from("alice", room, "alice", "while away"))
        await bridge.muc_join("bob", room, "bob", {})
        await bridge.message_send("alice", room, "live", {"type": "groupchat"})
        await rec.wait("MessageNew", groupchat_from("bob", room, "alice", "live"))
        rows = await bob_history(5)
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
async def test_password_invitation_and_nick_conflict(daemon, prosody, make_account):
    a, b, c = make_account("i-alice"), make_account("i-bob"), make_account("i-carol")
    bridge, rec = await setup(daemon, prosody, {"alice": a, "bob": b, "carol": c})
    room = room_name(prosody, "secret")
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
async def test_bookmarks_autojoin_after_reconnection(daemon, prosody, make_account):
    a = make_account("b-alice")
    bridge, rec = await setup(daemon, prosody, {"alice": a})
    room = room_name(prosody, "bm")
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
async def test_legacy_bookmarks_without_compat(tmp_path, dbus_bus, make_prosody):  # noqa: F811
    """A server without XEP-0402 compat: XEP-0048 in private PEP, autojoin still works."""
    server = make_prosody(
        extra_global={
            "modules_disabled": ["s2s", "s2s_auth_certs", "dialback", "s2s_bidi", "bookmarks"]
        }
    )
    a = server.register("legacy", "legacy-pass")
    d = SatDaemon(tmp_path / "daemon", dbus_bus.address, server.ca_cert_path)
    d.start()
    try:
        bridge, rec = await setup(d, server, {"alice": a})
        room = f"legacy-{uuid.uuid4().hex[:6]}@{server.muc_domain}"
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
    finally:
        d.stop()


@asyncio_test(timeout=120)
async def test_rejoin_after_server_restart_and_self_ping(
    tmp_path,
    dbus_bus,  # noqa: F811
    fresh_prosody,
    make_account,
):
    server = fresh_prosody
    a = make_account("r-alice", server=server)
    d = SatDaemon(tmp_path / "daemon", dbus_bus.address, server.ca_cert_path)
    d.start()
    try:
        bridge, rec = await setup(d, server, {"alice": a})
        room = f"restart-{uuid.uuid4().hex[:6]}@{server.muc_domain}"
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
            (_p, message) = await rec.wait("MessageNew", groupchat_from("alice", room, "ali"))
            assert message["uid"] == uid
        finally:
            await bridge.close()
    finally:
        d.stop()


# --- slixmpp as another occupant ------------------------------------------------------------


class SlixOccupant:
    """A slixmpp client (xep_0045 plugin) on its own loop in a thread."""

    def __init__(self, server, user: str, password: str):
        self.server = server
        self.user = user
        self.password = password
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.messages: list[dict] = []
        self.xmpp = None

    def _run(self, coro) -> asyncio.Future:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def connect(self):
        await self._run(self._connect())

    async def _connect(self):
        import slixmpp

        xmpp = slixmpp.ClientXMPP(f"{self.user}@{self.server.domain}/slix", self.password)
        xmpp.enable_direct_tls = False
        xmpp.ca_certs = self.server.ca_cert_path
        xmpp.register_plugin("xep_0030")
        xmpp.register_plugin("xep_0045")
        xmpp.add_event_handler("groupchat_message", self._on_groupchat)
        started = asyncio.ensure_future(xmpp.wait_until("session_start", timeout=10))
        xmpp.connect(self.server.host, self.server.c2s_port)
        await started
        xmpp.send_presence()
        self.xmpp = xmpp

    def _on_groupchat(self, msg):
        self.messages.append(
            {"room": msg["from"].bare, "nick": msg["mucnick"], "body": msg["body"]}
        )

    async def join(self, room: str, nick: str):
        async def run():
            await self.xmpp.plugin["xep_0045"].join_muc_wait(room, nick, maxstanzas=0, timeout=10)

        await self._run(run())

    async def send(self, room: str, body: str):
        async def run():
            self.xmpp.send_message(mto=room, mbody=body, mtype="groupchat")

        await self._run(run())

    async def wait_message(self, predicate: Callable[[dict], bool], timeout=10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.messages):
                if predicate(message):
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(f"slixmpp did not receive the message: {self.messages}")

    async def close(self):
        if self.thread is None:
            return
        if self.xmpp is not None:
            xmpp, self.xmpp = self.xmpp, None

            async def disconnect():
                disconnected = asyncio.ensure_future(xmpp.wait_until("disconnected", timeout=5))
                xmpp.disconnect(wait=1.0)
                try:
                    await disconnected
                except Exception:
                    pass
                # slixmpp cancels this task when collected: finish it while the loop lives
                task = getattr(xmpp, "_run_out_filters", None)
                if task is not None and not task.done():
                    task.cancel()
                    try:
                        await task
                    except BaseException:
                        pass

            try:
                await self._run(disconnect())
            except Exception:
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.thread = None
        self.loop.close()


@asyncio_test(timeout=90)
async def test_slixmpp_occupant_interop(daemon, prosody, make_account):
    a, s = make_account("x-alice"), make_account("x-slix")
    bridge, rec = await setup(daemon, prosody, {"alice": a})
    room = room_name(prosody, "interop")
    slix = SlixOccupant(prosody, s.user, s.password)
    try:
        await bridge.muc_join("alice", room, "alice", {})
        await slix.connect()
        await slix.join(room, "slixy")
        (_p, _r, occupant) = await rec.wait(
            "MucOccupantUpdate", lambda p, r, o: o["nick"] == "slixy" and o["state"] == "joined"
        )
        assert occupant["role"] == "participant"

        # slixmpp sends, we receive
        await slix.send(room, "Hello from slixmpp ✓")
        (_p, message) = await rec.wait("MessageNew", groupchat_from("alice", room, "slixy"))
        assert message["body"] == "Hello from slixmpp ✓" and not message["outgoing"]

        # we send, slixmpp receives with our nick
        await bridge.message_send("alice", room, "Hello slixmpp, ça va ?", {"type": "groupchat"})
        got = await slix.wait_message(lambda m: m["body"] == "Hello slixmpp, ça va ?")
        assert got == {"room": room, "nick": "alice", "body": "Hello slixmpp, ça va ?"}

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
