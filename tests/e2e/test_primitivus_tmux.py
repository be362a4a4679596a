"""Primitivus driven in tmux (80×24) against the real daemon on a private bus and the test Prosody.

A bridge client in the test plays the other side (bob): it checks what Primitivus sends and
sends what Primitivus must show. The screen is read with ``tmux capture-pane``.
"""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest

from sat_frontends.bridge.dbus_client import DBusBridgeClient
from tests.e2e.conftest import primitivus_command
from tests.support.daemon import REPO_ROOT
from tests.support.dbus import asyncio_test


def options(server):
    return {"host": "127.0.0.1", "port": server.c2s_port}


async def setup_profiles(daemon, prosody, make_account, roster=True):
    """alice (for Primitivus) and bob (for the test's bridge client), bob in alice's roster."""
    a, b = make_account("prim-alice"), make_account("prim-bob")
    bridge = await DBusBridgeClient.connect(daemon.bus_address, wait=10, timeout=30)
    await bridge.profile_create("alice", a.jid, a.password, "", options(prosody))
    await bridge.profile_create("bob", b.jid, b.password, "", options(prosody))
    await bridge.profile_connect("bob", "")
    if roster:
        # put bob in alice's roster, then let Primitivus make the real login
        await bridge.profile_connect("alice", "")
        await bridge.roster_add("alice", b.jid, "Bob", ["Friends"])
        for _ in range(50):
            if any(item["jid"] == b.jid for item in await bridge.roster_get("alice")):
                break
            await asyncio.sleep(0.1)
        await bridge.profile_disconnect("alice")
    return a, b, bridge


def bob_receives(bridge, predicate):
    """A future set with the first MessageNew of bob matching ``predicate``."""
    future = asyncio.get_running_loop().create_future()

    def on_message(profile, message):
        if profile == "bob" and not message.get("outgoing") and predicate(message):
            if not future.done():
                future.set_result(message)

    bridge.on("MessageNew", on_message)
    return future


def start_primitivus(tmux, daemon, tmp_path, *args, width=80, height=24):
    command, env = primitivus_command(daemon.bus_address, tmp_path, *args)
    tmux.start(command, width, height, env, cwd=REPO_ROOT)
    return tmp_path / "primitivus.log"


async def login_alice(tmux):
    await tmux.await_text("Profiles (Enter logs in", timeout=20)
    screen = await tmux.await_text(re.compile(r"<\s+alice\s+>"), timeout=10)
    assert "bob" in screen
    # the default (first) profile has the focus: Enter logs it in
    tmux.send("Enter")
    return await tmux.await_text("logged in as alice", timeout=20)


@asyncio_test(timeout=150)
async def test_login_chat_both_ways_and_resize(sat_daemon, prosody, make_account, tmux, tmp_path):
    a, b, bridge = await setup_profiles(sat_daemon, prosody, make_account)
    try:
        start_primitivus(tmux, sat_daemon, tmp_path)
        assert tmux.size() == (80, 24)
        screen = await login_alice(tmux)
        assert "[alice ● online]" in screen
        # the contact list has the focus, on bob: Enter opens the chat
        screen = await tmux.await_text("Bob")
        assert "Friends" in screen
        tmux.send("Enter")
        await tmux.await_text(f"<{b.jid}>")
        # type a message (styled, with wide and combining characters): bob receives it
        text = f"Salut *Bob* ça va ? 日本語 e\u0301 {uuid.uuid4().hex[:6]}"
        received = bob_receives(bridge, lambda m: m.get("body") == text)
        tmux.type(text)
        tmux.send("Enter")
        message = await asyncio.wait_for(received, 15)
        assert message["from"].startswith(a.jid)
        screen = await tmux.await_text("Salut *Bob* ça va ?")
        assert "日本語" in screen
        # bob answers: it appears on alice's screen
        answer = f"Très bien, merci ! {uuid.uuid4().hex[:6]}"
        await bridge.message_send("bob", a.jid, answer, {})
        screen = await tmux.await_text(answer, timeout=15)
        assert re.search(r"\d\d:\d\d Bob> Très bien", screen), screen
        # a multi-line message (Alt+Enter) stays one message
        received = bob_receives(bridge, lambda m: "line two" in (m.get("body") or ""))
        tmux.type("line one")
        tmux.send("M-Enter")
        tmux.type("line two")
        tmux.send("Enter")
        message = await asyncio.wait_for(received, 15)
        assert message["body"] == "line one\nline two"
        # resize: larger, smaller, back; the UI follows and does not crash
        for width, height in ((120, 40), (60, 18), (80, 24)):
            tmux.resize(width, height)
            await asyncio.sleep(0.5)
            assert tmux.size() == (width, height)
            screen = await tmux.await_text("[alice")
            lines = screen.rstrip("\n").split("\n")
            assert len(lines) <= height
            assert not tmux.pane_dead(), screen
        assert answer in tmux.screen()
        # F1 shows the key bindings; Esc closes the help
        tmux.send("F1")
        screen = await tmux.await_text("Keys")
        assert "Ctrl+Q" in screen
        tmux.send("Escape")
        await tmux.await_text(answer)
        # Ctrl+Q quits cleanly (alice stays connected in the daemon)
        tmux.send("C-q")
        await tmux.await_text("[exited with status 0]", timeout=15)
        assert await bridge.profile_is_connected("alice")
    finally:
        await bridge.close()


@asyncio_test(timeout=150)
async def test_join_room_and_talk(sat_daemon, prosody, make_account, tmux, tmp_path):
    a, b, bridge = await setup_profiles(sat_daemon, prosody, make_account, roster=False)
    try:
        if not any(m.name == "MucJoin" for m in bridge.methods.values()):
            pytest.skip("the daemon has no MUC plugin (MucJoin): /join cannot work")
        room = f"e2e-{uuid.uuid4().hex[:8]}@{prosody.muc_domain}"
        await bridge.muc_join("bob", room, "bobby", {})
        start_primitivus(tmux, sat_daemon, tmp_path)
        await login_alice(tmux)
        tmux.send("Escape")
        await asyncio.sleep(0.3)  # a lone Esc, not Alt+the next key
        tmux.type(f"/join {room}")
        tmux.send("Enter")
        node = room.split("@")[0]
        await tmux.await_text(f"#{node}", timeout=20)
        # bob and alice are in the room (no occupant column at 80 columns: /occupants)
        await tmux.await_text(f"#{node} [2]", timeout=10)
        tmux.type("/occupants")
        tmux.send("Enter")
        await tmux.await_text("2 occupants: ", timeout=10)
        screen = tmux.screen()
        assert "bobby" in screen
        # alice talks in the room: bob gets it
        text = f"hello room {uuid.uuid4().hex[:6]}"
        received = bob_receives(
            bridge, lambda m: m.get("type") == "groupchat" and m.get("body") == text
        )
        tmux.type(text)
        tmux.send("Enter")
        message = await asyncio.wait_for(received, 15)
        assert message["source_resource"] != "bobby"
        await tmux.await_text(text)
        # bob talks in the room: alice sees it, with bob's nick
        answer = f"welcome {uuid.uuid4().hex[:6]}"
        await bridge.message_send("bob", room, answer, {"type": "groupchat"})
        screen = await tmux.await_text(answer, timeout=15)
        assert "bobby> " + answer in screen, screen
        # tab completion of a nick at the start of the line
        tmux.type("bo")
        tmux.send("Tab")
        await tmux.await_text("> bobby:")
        tmux.send("C-u")
        # the room's owner (bob) sets the subject: it shows in alice's title line
        await bridge.muc_subject_set("bob", room, "e2e subject")
        await tmux.await_text(f"#{node} [2] e2e subject", timeout=10)
        # alice may not: /topic says why
        tmux.type("/topic mine")
        tmux.send("Enter")
        await tmux.await_text("(forbidden)", timeout=10)
        # /part leaves the room and closes its window
        tmux.type("/part")
        tmux.send("Enter")
        for _ in range(100):
            occupants = await bridge.muc_occupants_get("bob", room)
            if len(occupants) == 1:
                break
            await asyncio.sleep(0.1)
        assert [o["nick"] for o in occupants] == ["bobby"]
        assert not tmux.pane_dead()
    finally:
        await bridge.close()


@asyncio_test(timeout=150)
async def test_msg_command_history_and_search(sat_daemon, prosody, make_account, tmux, tmp_path):
    a, b, bridge = await setup_profiles(sat_daemon, prosody, make_account, roster=False)
    try:
        # history written before Primitivus starts: 70 messages from bob
        await bridge.profile_connect("alice", "")
        for i in range(70):
            await bridge.message_send("bob", a.jid, f"history line {i:02d}", {})
        for _ in range(100):
            if len(await bridge.history_get("alice", b.jid, 100, {})) >= 70:
                break
            await asyncio.sleep(0.1)
        start_primitivus(tmux, sat_daemon, tmp_path)
        await login_alice(tmux)
        tmux.send("Escape")
        await asyncio.sleep(0.3)  # a lone Esc, not Alt+the next key
        tmux.type(f"/msg {b.jid}")
        tmux.send("Enter")
        # the last page of history is shown; PgUp loads older messages
        await tmux.await_text("history line 69", timeout=15)
        for _ in range(12):
            tmux.send("PageUp")
            await asyncio.sleep(0.2)
            if "history line 00" in tmux.screen():
                break
        await tmux.await_text("history line 00", timeout=10)
        tmux.send("PageUp")
        await tmux.await_text("beginning of the conversation", timeout=10)
        # /search finds a message in the history
        tmux.type("/search line 42")
        tmux.send("Enter")
        screen = await tmux.await_text("Search: line 42", timeout=10)
        assert "history line 42" in screen or "[42]" in screen or "42" in screen
        tmux.send("Escape")
        assert not tmux.pane_dead()
    finally:
        await bridge.close()


def bob_update(bridge, update_type):
    """A future set with the first MessageUpdate of bob of that type: (uid, data)."""
    future = asyncio.get_running_loop().create_future()

    def on_update(profile, uid, kind, data):
        if profile == "bob" and kind == update_type and not future.done():
            future.set_result((uid, data))

    bridge.on("MessageUpdate", on_update)
    return future


@asyncio_test(timeout=150)
async def test_correction_reaction_retraction_and_typing(
    sat_daemon, prosody, make_account, tmux, tmp_path
):
    a, b, bridge = await setup_profiles(sat_daemon, prosody, make_account)
    try:
        needed = {"MessageCorrect", "MessageRetract", "MessageReactionsSet", "ChatStateSend"}
        missing = needed - {m.name for m in bridge.methods.values()}
        if missing:
            pytest.skip(f"the daemon lacks {', '.join(sorted(missing))}")
        start_primitivus(tmux, sat_daemon, tmp_path)
        await login_alice(tmux)
        tmux.send("Enter")  # chat with bob (focused in the contact list)
        await tmux.await_text(f"<{b.jid}>")
        received = bob_receives(bridge, lambda m: m.get("body") == "helo bob")
        tmux.type("helo bob")
        tmux.send("Enter")
        message = await asyncio.wait_for(received, 15)
        # /correct: bob's copy is corrected, alice sees the new text marked as edited
        corrected = bob_update(bridge, "correction")
        tmux.type("/correct hello bob")
        tmux.send("Enter")
        uid, data = await asyncio.wait_for(corrected, 15)
        assert uid == message["uid"] and data["body"] == "hello bob"
        await tmux.await_text("hello bob (edited)")
        # bob reacts to it: the reaction shows under alice's message
        await bridge.message_reactions_set("bob", message["uid"], ["👍"])
        await tmux.await_text("👍", timeout=15)
        # bob is typing: alice's title line says so
        await bridge.message_send("bob", a.jid, "a reply", {})
        await tmux.await_text("a reply")
        await bridge.chat_state_send("bob", a.jid, "composing")
        await tmux.await_text("typing…", timeout=15)
        # /retract: bob's copy becomes a tombstone, alice sees it retracted
        retracted = bob_update(bridge, "retraction")
        tmux.send("Up")  # input history: the last line typed comes back...
        await tmux.await_text("> /correct hello bob")
        tmux.send("C-u")  # ...and is cleared
        tmux.type("/retract")
        tmux.send("Enter")
        await asyncio.wait_for(retracted, 15)
        await tmux.await_text("message retracted")
        assert not tmux.pane_dead()
    finally:
        await bridge.close()


# --------------------------------------------------------------------------- room administration


def muc_events(bridge, signal, profile):
    """A queue of (room, details) of ``signal`` for ``profile``."""
    queue: asyncio.Queue = asyncio.Queue()

    def on_signal(p, room, details=None, *rest):
        if p == profile:
            queue.put_nowait((room, details or {}))

    bridge.on(signal, on_signal)
    return queue


async def type_command(tmux, line):
    tmux.send("C-u")
    tmux.type(line)
    tmux.send("Enter")


@asyncio_test(timeout=170)
async def test_room_moderation_kick_and_config(sat_daemon, prosody, make_account, tmux, tmp_path):
    a, b, bridge = await setup_profiles(sat_daemon, prosody, make_account, roster=False)
    try:
        if not any(m.name == "MucKick" for m in bridge.methods.values()):
            pytest.skip("the daemon has no MUC plugin (MucKick)")
        bobs_room = f"e2e-bob-{uuid.uuid4().hex[:8]}@{prosody.muc_domain}"
        await bridge.muc_join("bob", bobs_room, "bobby", {})
        start_primitivus(tmux, sat_daemon, tmp_path)
        await login_alice(tmux)
        tmux.send("Escape")
        await asyncio.sleep(0.3)  # a lone Esc, not Alt+the next key
        # outside a room, the room commands say where they work
        await type_command(tmux, "/kick bobby")
        await tmux.await_text("this command works in a room window", timeout=10)
        # in bob's room, alice is a participant: the room refuses, and she is told why
        await type_command(tmux, f"/join {bobs_room}")
        node = bobs_room.split("@")[0]
        await tmux.await_text(f"#{node} [2]", timeout=20)
        await type_command(tmux, "/kick nobody-here")
        await tmux.await_text("no occupant 'nobody-here' in this room", timeout=10)
        await type_command(tmux, "/kick bobby out")
        await tmux.await_text("you may not kick bobby: moderators only", timeout=15)
        await type_command(tmux, "/config")
        await tmux.await_text("you may not configure this room: owners only", timeout=15)
        assert len(await bridge.muc_occupants_get("bob", bobs_room)) == 2
        await type_command(tmux, "/part")
        await asyncio.sleep(0.5)

        # alice's own room: she is its owner
        room = f"e2e-alice-{uuid.uuid4().hex[:8]}@{prosody.muc_domain}"
        node = room.split("@")[0]
        await type_command(tmux, f"/join {room}")
        await tmux.await_text(f"#{node} [1]", timeout=20)
        left = muc_events(bridge, "MucRoomLeft", "bob")
        await bridge.muc_join("bob", room, "bobby", {})
        await tmux.await_text(f"#{node} [2]", timeout=15)
        await type_command(tmux, "/kick bobby flooding")
        gone_room, details = await asyncio.wait_for(left.get(), 15)
        assert gone_room == room and details["reason"] == "kicked", details
        await tmux.await_text("bobby kicked (flooding)", timeout=10)
        await tmux.await_text(f"#{node} [1]", timeout=10)

        # /config: the room's form in a window; the title is changed and saved
        await type_command(tmux, "/config")
        screen = await tmux.await_text("Ctrl+S: save", timeout=15)
        assert "config:#" in screen and "Title" in screen, screen
        new_name = f"Renamed {uuid.uuid4().hex[:6]}"
        tmux.send("C-u")  # the focus is on the first field: the title
        tmux.type(new_name)
        tmux.send("C-s")
        await tmux.await_text("room configuration saved", timeout=15)
        form = await bridge.muc_config_get("alice", room)
        (name_field,) = [f for f in form["fields"] if f["var"] == "muc#roomconfig_roomname"]
        assert name_field["values"] == [new_name]
        # Esc cancels the form: nothing is sent
        await type_command(tmux, "/config")
        await tmux.await_text("Ctrl+S: save", timeout=15)
        tmux.type(" not saved")
        tmux.send("Escape")
        await tmux.await_text("not saved", timeout=10)
        form = await bridge.muc_config_get("alice", room)
        (name_field,) = [f for f in form["fields"] if f["var"] == "muc#roomconfig_roomname"]
        assert name_field["values"] == [new_name]
        assert not tmux.pane_dead()
    finally:
        await bridge.close()


# --------------------------------------------------------------------------- daemon's questions


@asyncio_test(timeout=150)
async def test_answering_the_daemons_questions(asker_daemon, prosody, make_account, tmux, tmp_path):
    a, b, bridge = await setup_profiles(asker_daemon, prosody, make_account, roster=False)
    try:
        start_primitivus(tmux, asker_daemon, tmp_path)
        await login_alice(tmux)
        tmux.send("Escape")
        await asyncio.sleep(0.3)
        # the daemon asks: a tab appears without taking the keys
        asked = asyncio.ensure_future(
            bridge.e2e_ask(
                "alice",
                {
                    "title": "File offer",
                    "message": "Accept photo.jpg?",
                    "choices": ["accept", "refuse"],
                },
                60.0,
                "refuse",
            )
        )
        screen = await tmux.await_text("?question", timeout=15)
        assert "? 1 question" in screen
        tmux.send("M-a")  # the next window needing attention
        screen = await tmux.await_text("refuse (default)", timeout=10)
        assert "Accept photo.jpg?" in screen and "s to answer" in screen
        tmux.send("Enter")  # the first choice has the focus
        assert await asyncio.wait_for(asked, 15) == "accept"
        await tmux.await_text("answered “accept”", timeout=10)
        assert "?question" not in tmux.screen()
        # nobody answers: the daemon takes the default and the dialog says it expired
        asked = asyncio.ensure_future(
            bridge.e2e_ask("alice", {"message": "Trust this device?", "type": "confirm"}, 3.0, "no")
        )
        await tmux.await_text("?question", timeout=15)
        tmux.send("M-a")
        await tmux.await_text("Trust this device?", timeout=10)
        assert await asyncio.wait_for(asked, 15) == "no"
        screen = await tmux.await_text("expired: the daemon took the default answer (no)", 10)
        assert "?expired" in screen
        tmux.send("Enter")  # "Close"
        await tmux.await_text(re.compile(r"^ 1:console\s*$", re.M), timeout=10)
        assert not tmux.pane_dead()
    finally:
        await bridge.close()


# --------------------------------------------------------------------------- daemon restart


@asyncio_test(timeout=170)
async def test_daemon_restart_reloads(sat_daemon, prosody, make_account, tmux, tmp_path):
    a, b, bridge = await setup_profiles(sat_daemon, prosody, make_account)
    try:
        has_muc = any(m.name == "MucJoin" for m in bridge.methods.values())
        start_primitivus(tmux, sat_daemon, tmp_path)
        await login_alice(tmux)
        tmux.send("Escape")
        await asyncio.sleep(0.3)
        room = f"e2e-restart-{uuid.uuid4().hex[:8]}@{prosody.muc_domain}"
        node = room.split("@")[0]
        if has_muc:
            await type_command(tmux, f"/join {room}")
            await tmux.await_text(f"#{node} [1]", timeout=20)
        # the daemon stops: Primitivus says so and does not crash
        await asyncio.to_thread(sat_daemon.stop)
        screen = await tmux.await_text("daemon disconnected", timeout=15)
        assert "[daemon disconnected]" in screen
        await asyncio.sleep(1)
        assert not tmux.pane_dead()
        # it comes back: the profile is logged in again, contacts and rooms reloaded
        await asyncio.to_thread(sat_daemon.start)
        screen = await tmux.await_text("[alice ● online]", timeout=30)
        for _ in range(100):
            screen = tmux.screen()
            if "[daemon disconnected]" not in screen:
                break
            await asyncio.sleep(0.1)
        assert "[daemon disconnected]" not in screen, screen
        assert await bridge.profile_is_connected("alice")
        if has_muc:
            for _ in range(100):
                joined = await bridge.muc_rooms_joined("alice")
                if any(r.get("room") == room for r in joined):
                    break
                await asyncio.sleep(0.2)
            assert any(r.get("room") == room for r in joined), joined
            await tmux.await_text(f"#{node} [1]", timeout=10)
        # signals flow again: a message from bob shows up, in bob's chat
        await bridge.profile_connect("bob", "")
        text = f"after the restart {uuid.uuid4().hex[:6]}"
        await bridge.message_send("bob", a.jid, text, {})
        await tmux.await_text("Bob(1)", timeout=20)
        await type_command(tmux, f"/msg {b.jid}")
        await tmux.await_text(text, timeout=15)
        assert not tmux.pane_dead()
    finally:
        await bridge.close()
