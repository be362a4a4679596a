"""The models shared by the frontends (sat_frontends.quick_frontend), on a fake bridge."""

from __future__ import annotations

import itertools
import time

import pytest

from sat_frontends.quick_frontend import nick_colours, styling
from sat_frontends.quick_frontend.chat import (
    CHAT,
    GROUP,
    PRIVATE,
    Conversation,
    conversation_key,
)
from sat_frontends.quick_frontend.commands import Commands, Context
from sat_frontends.quick_frontend.completion import Completer
from sat_frontends.quick_frontend.contact_list import ContactList
from sat_frontends.quick_frontend.features import Features, MissingFeature
from sat_frontends.quick_frontend.host import QuickApp
from sat_frontends.quick_frontend.input_history import InputHistory
from sat_frontends.quick_frontend.notifications import Notifications
from sat_frontends.quick_frontend.progress import ProgressTracker
from sat_frontends.quick_frontend.testing import FakeBridge, message_record
from tests.support.dbus import asyncio_test

ALICE = "alice@example.org"
BOB = "bob@example.org"
ROOM = "room@conference.example.org"

# --------------------------------------------------------------------------- XEP-0392

# XEP-0392 test vectors: text, angle, (r, g, b) without / with red-green / with blue correction
VECTORS = [
    ("Romeo", 327.255249, (0.865, 0.000, 0.686), (0.865, 0.000, 0.686), (0.000, 0.535, 0.350)),
    (
        "juliet@capulet.lit",
        209.410400,
        (0.000, 0.515, 0.573),
        (0.742, 0.359, 0.000),
        (0.742, 0.359, 0.000),
    ),
    ("😺", 331.199341, (0.872, 0.000, 0.659), (0.872, 0.000, 0.659), (0.000, 0.533, 0.373)),
    ("council", 359.994507, (0.918, 0.000, 0.394), (0.918, 0.000, 0.394), (0.000, 0.524, 0.485)),
    ("Board", 171.430664, (0.000, 0.527, 0.457), (0.904, 0.000, 0.494), (0.000, 0.527, 0.457)),
]

# the XEP's 216 "web safe" palette mapping vectors: text -> (best hue, rgb) per correction
PALETTE_VECTORS = {
    "Romeo": ((327, (1.0, 0.0, 0.8)), (327, (1.0, 0.0, 0.8)), (147, (0.4, 0.8, 0.6))),
    "juliet@capulet.lit": ((226, (0.0, 0.8, 1.0)), (30, (1.0, 0.6, 0.4)), (30, (1.0, 0.6, 0.4))),
    "😺": ((331, (1.0, 0.4, 0.8)), (331, (1.0, 0.4, 0.8)), (153, (0.2, 0.8, 0.6))),
    "council": ((359, (0.8, 0.2, 0.4)), (359, (0.8, 0.2, 0.4)), (192, (0.0, 0.8, 0.8))),
    "Board": ((161, (0.0, 1.0, 0.8)), (353, (0.4, 0.0, 0.2)), (161, (0.0, 1.0, 0.8))),
}


@pytest.mark.parametrize("text,angle,rgb,rgb_rg,rgb_b", VECTORS)
def test_xep0392_vectors(text, angle, rgb, rgb_rg, rgb_b):
    assert nick_colours.angle(text) == pytest.approx(angle, abs=1e-6)
    for cvd, expected in (("none", rgb), ("redgreen", rgb_rg), ("blue", rgb_b)):
        assert [round(c, 3) for c in nick_colours.rgb(text, cvd)] == list(expected), cvd


def test_xep0392_palette_mapping_vectors():
    steps = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    palette = nick_colours.hue_palette({c: c for c in itertools.product(steps, steps, steps)})
    hue_of = {colour: hue for hue, colour in palette.items()}
    for text, expected in PALETTE_VECTORS.items():
        for cvd, (best_hue, colour) in zip(("none", "redgreen", "blue"), expected, strict=True):
            got = nick_colours.palette_index(
                nick_colours.corrected(nick_colours.angle(text), cvd), palette
            )
            assert got == colour, (text, cvd)
            assert hue_of[got] == best_hue


def test_xterm_colours_are_stable_cube_colours():
    index = nick_colours.xterm_index("Romeo")
    assert 16 <= index <= 231
    assert nick_colours.xterm_index("Romeo") == index
    r, g, b = nick_colours.xterm_cube_rgb(index)
    assert not (r == g == b)  # never a gray
    # the cube colour chosen has the hue closest to the nick's among cube colours
    hue = nick_colours.rgb_to_hsluv(r, g, b)[0]
    assert abs((hue - nick_colours.angle("Romeo") + 180) % 360 - 180) < 15
    assert nick_colours.hsluv_to_rgb(0, 0, 100) == (1.0, 1.0, 1.0)
    assert nick_colours.hex_colour("Romeo") == "#dd00af"


# --------------------------------------------------------------------------- XEP-0393


def test_styling_spans():
    assert styling.parse("plain text") == []
    assert styling.parse("*bold* and _it_") == [("strong", 0, 6), ("emphasis", 11, 15)]
    assert styling.parse("a*b*c") == []  # opening directive must follow a space
    assert styling.parse("* not bold*") == []  # nor be followed by one
    assert styling.parse("**") == []  # never empty
    assert styling.parse("`*x*`") == [("pre", 0, 5)]  # nothing styled in pre
    assert styling.parse("*a _b_ c*") == [("strong", 0, 9), ("emphasis", 3, 6)]
    body = "> quoted *x*\nnormal\n```\n*raw*\n```\nafter ~s~"
    spans = styling.parse(body)
    assert ("quote", 0, 12) in spans
    assert ("strong", 9, 12) in spans
    assert ("pre_block", 20, 33) in spans
    assert not any(kind == "strong" and start > 20 and end <= 33 for kind, start, end in spans)
    assert ("strike", body.index("~s~"), len(body)) in spans
    # spans never cross lines
    assert styling.parse("*a\nb*") == []


def test_styling_segments():
    body = "x *y* z"
    segments = styling.segments(body, styling.parse(body))
    assert segments == [
        (frozenset(), "x "),
        (frozenset({"strong"}), "*y*"),
        (frozenset(), " z"),
    ]
    assert "".join(t for _s, t in segments) == body


# --------------------------------------------------------------------------- conversations


def test_conversation_keys():
    incoming = message_record(f"{BOB}/pc", ALICE, "hi")
    assert conversation_key(incoming) == (BOB, CHAT)
    outgoing = message_record(f"{ALICE}/me", BOB, "hi", outgoing=True)
    assert conversation_key(outgoing) == (BOB, CHAT)
    room_msg = message_record(f"{ROOM}/bobby", f"{ALICE}/me", "hi", type="groupchat")
    assert conversation_key(room_msg, {ROOM}) == (ROOM, GROUP)
    reflection = message_record(f"{ROOM}/me", f"{ALICE}/me", "hi", outgoing=True, type="groupchat")
    assert conversation_key(reflection, {ROOM}) == (ROOM, GROUP)
    private = message_record(f"{ROOM}/bobby", f"{ALICE}/me", "psst")
    assert conversation_key(private, {ROOM}) == (f"{ROOM}/bobby", PRIVATE)


def test_reply_linked_after_its_target_arrived():
    conv = Conversation("alice", BOB, CHAT, own_jid=ALICE, name_of=lambda j: "Bob")
    reply = conv.add(message_record(f"{BOB}/pc", ALICE, "yes, that one", uid="r1"))
    assert reply.reply is None
    # the daemon links it once the message it answers is stored (not shown yet: nothing)
    assert conv.apply_update("r1", "reply", {"reply_to": "t1"}) is None
    conv.add(message_record(f"{BOB}/pc", ALICE, "which one?\nsecond line", uid="t1"))
    assert conv.apply_update("r1", "reply", {"reply_to": "t1"}) is reply
    assert reply.reply == ("Bob", "which one?") and reply.extra["reply_to"] == "t1"


def test_conversation_messages_and_updates():
    conv = Conversation("alice", BOB, CHAT, own_jid=ALICE, name_of=lambda j: "Bob")
    appended = []
    updated = []
    conv.events.on("append", appended.append)
    conv.events.on("update", updated.append)
    m1 = conv.add(message_record(f"{BOB}/pc", ALICE, "hello *you*", uid="u1"))
    assert m1.nick == "Bob" and m1.styling == [("strong", 6, 11)]
    assert conv.add(message_record(f"{BOB}/pc", ALICE, "hello *you*", uid="u1")) is None
    mine = conv.add(message_record(f"{ALICE}/me", BOB, "/me waves", outgoing=True, uid="u2"))
    assert mine.kind == "me" and mine.body == "waves" and mine.delivery == "sent"
    assert appended == [m1, mine]
    # receipt then read marker
    conv.apply_update("u2", "receipt", {"delivery": "received"})
    assert mine.delivery == "received"
    conv.apply_update("u2", "marker", {"marker": "displayed", "marked_up_to": "u2"})
    assert mine.delivery == "displayed"
    conv.apply_update("u2", "receipt", {"delivery": "received"})
    assert mine.delivery == "displayed"  # never goes back
    # a marker we sent about their message does not touch delivery
    assert conv.apply_update("u1", "marker", {"marker_sent": "displayed"}) is m1
    assert m1.delivery == "" and m1.extra["marker_sent"] == "displayed"
    # correction, reactions, retraction
    conv.apply_update("u1", "correction", {"body": "hello _there_"})
    assert m1.body == "hello _there_" and m1.edited and m1.styling == [("emphasis", 6, 13)]
    conv.apply_update("u1", "reactions", {"reactions": {"👍": [ALICE, "carol@x"]}})
    assert m1.reactions == {"👍": [ALICE, "carol@x"]}
    conv.apply_update("u2", "retraction", {})
    assert mine.retracted and mine.body == ""
    assert updated.count(m1) == 3 and mine.version == 3
    assert conv.apply_update("unknown", "receipt", {}) is None
    # a correction sent as a new message replacing an old one
    conv.add(message_record(f"{BOB}/pc", ALICE, "fixed", uid="u3", extra={"replace": "u1"}))
    assert m1.body == "fixed" and "u3" not in conv.by_uid
    # a message the daemon deleted (an early correction folded into its original)
    resets = []
    conv.events.on("reset", lambda: resets.append(True))
    early = conv.add(message_record(f"{BOB}/pc", ALICE, "early fix", uid="u4"))
    assert conv.apply_update("u4", "deleted", {"deleted": True, "merged_into": "u1"}) is early
    assert early not in conv.messages and conv.find("u4") is None and resets == [True]


def test_conversation_styling_from_the_daemon_wins():
    conv = Conversation("alice", BOB, CHAT)
    extra = {"styling": [{"type": "pre-block", "start": 0, "end": 3}]}
    m = conv.add(message_record(f"{BOB}/pc", ALICE, "*a*", extra=extra))
    assert m.styling == [("pre_block", 0, 3)]
    m = conv.add(message_record(f"{BOB}/pc", ALICE, "*a*", extra={"styling": []}))
    assert m.styling == []  # the plugin said: nothing (e.g. <unstyled/>)


def test_room_messages_mentions_and_own_nick():
    conv = Conversation("alice", ROOM, GROUP)
    conv.own_nick = "alice"
    m = conv.add(message_record(f"{ROOM}/bob", ALICE, "hey Alice, look", type="groupchat"))
    assert m.nick == "bob" and m.mention and not m.outgoing
    m = conv.add(message_record(f"{ROOM}/bob", ALICE, "malice is not a mention", type="groupchat"))
    assert not m.mention
    m = conv.add(message_record(f"{ROOM}/alice", ALICE, "mine", outgoing=True, type="groupchat"))
    assert m.outgoing and m.nick == "alice"


@asyncio_test
async def test_history_pages_load_on_demand():
    bridge = FakeBridge()
    now = time.time()
    bridge.history["alice"] = [
        message_record(f"{BOB}/pc", ALICE, f"line {i}", uid=f"h{i}", timestamp=now - 100 + i)
        for i in range(75)
    ]
    conv = Conversation("alice", BOB, CHAT)
    conv.PAGE = 30
    events = []
    conv.events.on("prepend", lambda msgs: events.append(len(msgs)))
    # a live message arrived before the history was loaded: not duplicated
    conv.add(dict(bridge.history["alice"][-1]))
    assert await conv.load_history(bridge) == 29
    assert [m.body for m in conv.messages][-2:] == ["line 73", "line 74"]
    assert await conv.load_history(bridge) == 30
    assert not conv.history_complete
    assert await conv.load_history(bridge) == 15
    assert conv.history_complete
    assert await conv.load_history(bridge) == 0
    assert [m.body for m in conv.messages] == [f"line {i}" for i in range(75)]
    assert events == [29, 30, 15]
    calls = bridge.called("HistoryGet")
    assert calls[1][3] == {"before_uid": "h45"}


# --------------------------------------------------------------------------- contacts


def test_contact_list_rows_presence_and_unread():
    cl = ContactList("alice")
    cl.set_roster(
        [
            {"jid": BOB, "name": "Bob", "groups": ["Friends", "Work"]},
            {"jid": "carol@example.org", "name": "", "groups": ["Friends"]},
            {"jid": "dave@example.org", "name": "Dave", "groups": []},
        ]
    )
    version = cl.version
    assert cl.presence_update(f"{BOB}/pc", "away", 5, {"default": "lunch"}) == BOB
    assert cl.version > version
    bob = cl.get(BOB)
    assert bob.show == "away" and bob.status == "lunch"
    cl.presence_update(f"{BOB}/phone", "", 10, {})
    assert bob.show == ""  # the higher priority resource wins
    cl.presence_update(f"{BOB}/phone", "unavailable", 0, {})
    assert bob.show == "away"
    # a presence from outside the roster (a room occupant) creates no contact
    cl.presence_update("stranger@example.org/x", "", 0, {})
    assert cl.get("stranger@example.org") is None
    rows = cl.rows()
    assert [(r.kind, r.key) for r in rows] == [
        ("header", "Friends"),
        ("contact", BOB),  # online first
        ("contact", "carol@example.org"),
        ("header", "Work"),
        ("contact", BOB),
        ("header", "Contacts"),
        ("contact", "dave@example.org"),
    ]
    assert rows[0].online == 1 and rows[0].count == 2
    assert cl.rows() is rows  # cached until something changes
    cl.set_show_offline(False)
    assert [r.key for r in cl.rows() if r.kind == "contact"] == [BOB, BOB]
    cl.set_show_offline(True)
    cl.toggle_group("Friends")
    assert ("contact", "carol@example.org") not in [(r.kind, r.key) for r in cl.rows()]
    cl.set_unread(BOB, 3)
    assert bob.unread == 3
    cl.room_joined(ROOM, nick="alice", subject="hello")
    cl.occupant_update(ROOM, "bob", {"role": "moderator", "show": ""})
    assert cl.rows()[0].kind == "header" and cl.rows()[1].kind == "room"
    cl.occupant_update(ROOM, "bob", {"left": True, "new_nick": "robert"})
    assert cl.rooms[ROOM].nicks() == ["robert"]
    cl.remove_contact("dave@example.org")
    assert cl.get("dave@example.org") is None


# --------------------------------------------------------------------------- the app


def make_bridge() -> FakeBridge:
    bridge = FakeBridge()
    bridge.profiles["alice"] = {"jid": ALICE, "password": ""}
    bridge.profiles["other"] = {"jid": "other@example.org", "password": "secret"}
    bridge.rosters["alice"] = [{"jid": BOB, "name": "Bob", "groups": ["Friends"]}]
    return bridge


@asyncio_test
async def test_app_login_messages_unread_and_notifications():
    bridge = make_bridge()
    app = QuickApp(bridge)
    await app.start()
    seen = []
    app.events.on("conversation_new", lambda conv, by_user: seen.append((conv.jid, by_user)))
    session = await app.login("alice")
    assert session.jid == ALICE and session.ready
    assert session.contacts.get(BOB).display_name == "Bob"
    # a signal for a profile not opened here is ignored
    bridge.emit("MessageNew", "other", message_record(f"{BOB}/pc", "other@example.org", "x"))
    assert ("other", BOB) not in app.conversations
    # a message from bob: conversation created, unread, notification
    bridge.emit("MessageNew", "alice", message_record(f"{BOB}/pc", ALICE, "hi alice"))
    conv = app.get_conversation("alice", BOB)
    assert seen == [(BOB, False)]
    assert conv.unread == 1 and session.contacts.get(BOB).unread == 1
    assert app.notifications.total == 1
    # displayed: read
    app.set_visible([conv])
    assert conv.unread == 0 and app.notifications.total == 0
    bridge.emit("MessageNew", "alice", message_record(f"{BOB}/pc", ALICE, "again"))
    assert conv.unread == 0 and app.notifications.total == 0
    # sending goes through MessageSend and comes back as MessageNew
    await app.send(conv, "hello bob")
    assert bridge.sent[-1] == ("alice", BOB, "hello bob", {"type": "chat"})
    assert conv.messages[-1].outgoing and conv.messages[-1].body == "hello bob"
    # chat states
    bridge.emit("ChatStateReceived", "alice", f"{BOB}/pc", "composing")
    assert conv.chat_state == "composing"
    assert session.contacts.get(BOB).chat_state == "composing"
    # receipts by MessageUpdate
    uid = conv.messages[-1].uid
    bridge.emit("MessageUpdate", "alice", uid, "receipt", {"delivery": "received"})
    assert conv.messages[-1].delivery == "received"
    # disconnection clears presences and says so
    bridge.emit("PresenceUpdate", "alice", f"{BOB}/pc", "", 0, {})
    bridge.emit("Disconnected", "alice", "network down", True)
    assert not session.connected and session.reconnecting
    assert not session.contacts.get(BOB).online
    assert "network down" in app.console.messages[-1].body


@asyncio_test
async def test_app_rooms_from_signals():
    bridge = make_bridge()
    bridge.handle("MucRoomsJoined", lambda profile: [])
    app = QuickApp(bridge)
    await app.start()
    session = await app.login("alice")
    bridge.emit(
        "MucRoomJoined",
        "alice",
        ROOM,
        {
            "room": ROOM,
            "nick": "alice",
            "subject": "Welcome",
            "occupants": [
                {"nick": "alice", "role": "participant"},
                {"nick": "bob", "role": "moderator"},
            ],
        },
    )
    conv = app.get_conversation("alice", ROOM)
    assert conv.kind == GROUP and conv.own_nick == "alice" and conv.subject == "Welcome"
    assert session.contacts.rooms[ROOM].nicks() == ["alice", "bob"]
    bridge.emit("MucOccupantUpdate", "alice", ROOM, {"nick": "carol", "state": "joined"})
    assert "carol joined" in conv.messages[-1].body
    bridge.emit(
        "MucOccupantUpdate", "alice", ROOM, {"nick": "robert", "old_nick": "bob", "state": "nick"}
    )
    assert session.contacts.rooms[ROOM].nicks() == ["alice", "carol", "robert"]
    bridge.emit("MucSubject", "alice", ROOM, "New topic", "robert")
    assert conv.subject == "New topic"
    # a mention in a room notifies, other room messages only count as unread
    bridge.emit(
        "MessageNew", "alice", message_record(f"{ROOM}/carol", ALICE, "hi", type="groupchat")
    )
    assert conv.unread == 1 and app.notifications.total == 0
    bridge.emit(
        "MessageNew",
        "alice",
        message_record(f"{ROOM}/carol", ALICE, "alice: ping", type="groupchat"),
    )
    assert conv.mentions == 1 and app.notifications.total == 1
    await app.send(conv, "hello room")
    assert bridge.sent[-1][3] == {"type": "groupchat"}
    bridge.emit("MucRoomLeft", "alice", ROOM, {"reason": "kicked", "message": "bye"})
    assert ROOM not in session.contacts.rooms
    assert "kicked" in conv.messages[-1].body


@asyncio_test
async def test_login_errors_leave_no_session():
    from sat_frontends.bridge import errors

    bridge = make_bridge()
    app = QuickApp(bridge)
    await app.start()
    with pytest.raises(errors.PermissionDenied):
        await app.login("other", "wrong")
    assert "other" not in app.sessions
    assert (await app.login("other", "secret")).jid == "other@example.org"


# --------------------------------------------------------------------------- features & commands


@asyncio_test
async def test_features_find_members_and_say_what_is_missing():
    bridge = make_bridge()
    features = Features(bridge)
    assert not features.has("muc_join")
    with pytest.raises(MissingFeature) as info:
        await features.call("muc_join", "alice", ROOM, "", {})
    assert "joining group chats" in str(info.value) and "MucJoin" in str(info.value)
    bridge.handle("MUCJoin", lambda profile, room, nick, options: {"room": room})
    # a plugin declared later is found at the next use (no restart)
    assert await features.require("muc_join") == "MUCJoin"  # an older naming is found too
    bridge.handle("MucJoin", lambda profile, room, nick, options: {"room": room, "nick": nick})
    features.invalidate()
    assert features.member("muc_join") == "MucJoin"
    assert features.has("muc_join")


async def run(app, line, conv=None, ui=None):
    ctx = Context(app, conv, "alice", ui)
    await app_commands.run(line, ctx)
    return ctx.output


app_commands = Commands()


class FakeUI:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, args))


@asyncio_test
async def test_commands():
    bridge = make_bridge()
    app = QuickApp(bridge)
    await app.start()
    await app.login("alice")
    ui = FakeUI()
    # /msg opens the conversation and sends
    assert await run(app, f"/msg {BOB} hello there", ui=ui) == []
    conv = app.get_conversation("alice", BOB)
    assert ui.calls[0] == ("open_conversation", (conv,))
    assert bridge.sent[-1][:3] == ("alice", BOB, "hello there")
    # /me
    await run(app, "/me waves", conv)
    assert bridge.sent[-1][2] == "/me waves"
    # a missing plugin is said clearly
    out = await run(app, f"/join {ROOM}", conv)
    assert out[-1][1] == "error" and "XEP-0045" in out[-1][0]
    out = await run(app, "/correct fixed", conv)
    assert "message correction" in out[0][0]
    # with the plugin
    bridge.handle(
        "MessageCorrect",
        lambda profile, uid, body, extra: "new",
        ("profile", "uid", "body", "extra"),
    )
    assert await run(app, "/correct fixed", conv) == []
    own_uid = conv.messages[-1].uid
    assert bridge.called("MessageCorrect")[-1] == ("alice", own_uid, "fixed", {})
    # /correct alone puts the last message in the input line
    await run(app, "/correct", conv, ui)
    assert ui.calls[-1] == ("set_input", ("/correct /me waves",))
    bridge.handle(
        "MucJoin", lambda profile, room, nick, options: {"room": room, "nick": nick or "alice"}
    )
    assert await run(app, "/join room", conv, ui) == []
    assert bridge.called("MucJoin")[-1][:3] == ("alice", "room@conference.example.org", "alice")
    room_conv = app.get_conversation("alice", "room@conference.example.org")
    assert room_conv.kind == GROUP and ui.calls[-1] == ("open_conversation", (room_conv,))
    # commands needing a room say so
    out = await run(app, "/topic x", conv)
    assert "works in a room" in out[0][0]
    # unknown command
    out = await run(app, "/frobnicate", conv)
    assert "unknown command /frobnicate" in out[0][0]
    # /search without the UI lists the results
    out = await run(app, "/search hello", conv)
    assert any("hello there" in text for text, _level in out)
    # /block without the plugin, then with it
    out = await run(app, "/block", conv)
    assert "XEP-0191" in out[0][0]
    bridge.handle("Block", lambda profile, jids: None)
    assert (await run(app, "/block", conv))[0][0] == f"blocked: {BOB}"


def test_command_parsing_and_help():
    commands = Commands()
    assert Commands.is_command("/join x") and not Commands.is_command("//not a command")
    assert not Commands.is_command("hello")
    assert Commands.split("/msg bob hello world") == ("msg", "bob hello world")
    for name in (
        "join",
        "part",
        "nick",
        "me",
        "msg",
        "invite",
        "topic",
        "search",
        "correct",
        "block",
        "help",
    ):
        assert commands.get(name) is not None, name
    assert commands.get("j") is commands.get("join")
    assert "room[@service]" in commands.help_lines("join")[0]
    assert commands.arg_kinds()["msg"] == "jid"


# --------------------------------------------------------------------------- input helpers


def test_completion():
    nicks = ["bobby", "Bob", "carol"]
    provider = {"command": ["help", "join", "me", "msg"], "nick": nicks, "jid": [BOB, "x@y"]}
    completer = Completer(lambda kind: provider.get(kind, []), {"msg": "jid"})
    assert completer.complete("/jo", 3) == ("/join ", 6)
    text, pos = completer.complete("bo", 2)
    assert (text, pos) == ("bobby: ", 7)
    text, pos = completer.complete(text, pos)  # Tab again: next candidate
    assert (text, pos) == ("Bob: ", 5)
    text, pos = completer.complete(text, pos)
    assert text == "bobby: "  # cycles
    completer.reset()
    assert completer.complete("hi ca", 5) == ("hi carol ", 9)
    completer.reset()
    assert completer.complete("/msg bo", 7) == (f"/msg {BOB} ", len(f"/msg {BOB} "))
    completer.reset()
    assert completer.complete("nothing zz", 10) == ("nothing zz", 10)


def test_input_history():
    history = InputHistory()
    history.add("one")
    history.add("two")
    history.add("two")
    assert history.previous("draft") == "two"
    assert history.previous("two") == "one"
    assert history.previous("one") is None
    assert history.next() == "two"
    assert history.next() == "draft"
    assert history.next() is None


def test_notifications_and_progress():
    notifications = Notifications()
    rung = []
    notifications.events.on("new", rung.append)
    notifications.add("alice", BOB, "message", "hi")
    notifications.add("alice", BOB, "message", "hi again")
    notifications.add("alice", ROOM, "mention", "alice!")
    assert notifications.total == 3 and notifications.count("alice", BOB) == 2
    notifications.clear("alice", BOB)
    assert notifications.total == 1 and len(rung) == 3
    progress = ProgressTracker()
    job = progress.started("alice", "j1", {"name": "file.txt"})
    progress.updated("alice", "j1", 50, 200)
    assert job.fraction == 0.25 and job.label == "file.txt"
    progress.finished("alice", "j1", {})
    assert job.fraction == 1.0 and progress.active()
    progress.prune(time.monotonic() + 60)
    assert not progress.jobs


# --------------------------------------------------------------------------- room administration

ROOM_FORM = {
    "type": "form",
    "form_type": "http://jabber.org/protocol/muc#roomconfig",
    "title": "Configuration for room",
    "instructions": ["Complete this form to modify the configuration of your room."],
    "fields": [
        {"var": "FORM_TYPE", "type": "hidden", "values": ["muc#roomconfig"]},
        {"var": "muc#roomconfig_roomname", "type": "text-single", "label": "Title"},
        {
            "var": "muc#roomconfig_roomdesc",
            "type": "text-multi",
            "label": "Description",
            "values": ["line one", "line two"],
        },
        {
            "var": "muc#roomconfig_persistentroom",
            "type": "boolean",
            "label": "Persistent",
            "values": ["0"],
        },
        {
            "var": "muc#roomconfig_whois",
            "type": "list-single",
            "label": "Who may discover real JIDs?",
            "values": ["moderators"],
            "options": [
                {"value": "moderators", "label": "Moderators only"},
                {"value": "anyone", "label": "Anyone"},
            ],
        },
        {
            "var": "muc#roomconfig_presencebroadcast",
            "type": "list-multi",
            "label": "Roles whose presence is broadcast",
            "values": ["moderator", "participant"],
            "options": [
                {"value": "moderator", "label": "Moderator"},
                {"value": "participant", "label": "Participant"},
                {"value": "visitor", "label": "Visitor"},
            ],
        },
        {"var": "muc#roomconfig_roomsecret", "type": "text-private", "label": "Password"},
        {
            "var": "muc#roomconfig_lang",
            "type": "text-single",
            "label": "Language",
            "required": True,
            "values": ["en"],
        },
        {"type": "fixed", "values": ["Some fixed text"]},
    ],
}


def test_data_form_values_changes_and_checks():
    from sat_frontends.quick_frontend.forms import DataForm, FormError

    form = DataForm.from_record(ROOM_FORM)
    assert form.title == "Configuration for room" and len(form.instructions) == 1
    editable = [f.var for f in form.editable_fields()]
    assert "FORM_TYPE" not in editable and "" not in editable and len(editable) == 7
    values = {f.var: f.value for f in form.editable_fields()}
    assert values["muc#roomconfig_roomname"] == ""
    assert values["muc#roomconfig_roomdesc"] == ["line one", "line two"]
    assert values["muc#roomconfig_persistentroom"] is False
    assert values["muc#roomconfig_whois"] == "moderators"
    assert values["muc#roomconfig_presencebroadcast"] == ["moderator", "participant"]
    # nothing changed: nothing to send
    assert form.changes(values) == {}
    # only what changed is sent, typed for the bridge
    values.update(
        {
            "muc#roomconfig_roomname": "Coffee",
            "muc#roomconfig_persistentroom": True,
            "muc#roomconfig_presencebroadcast": ["moderator"],
            "muc#roomconfig_roomdesc": ["line one", "line 2", ""],
        }
    )
    assert form.changes(values) == {
        "muc#roomconfig_roomname": "Coffee",
        "muc#roomconfig_persistentroom": True,
        "muc#roomconfig_presencebroadcast": ["moderator"],
        "muc#roomconfig_roomdesc": ["line one", "line 2"],
    }
    # fields found by var, label or the end of the var
    assert form.get("Title").var == "muc#roomconfig_roomname"
    assert form.get("roomname").var == "muc#roomconfig_roomname"
    assert form.get("persistentroom").parse("yes") is True
    assert form.get("whois").parse("Anyone") == "anyone"  # a label is understood
    assert form.get("presencebroadcast").parse("moderator, visitor") == ["moderator", "visitor"]
    assert form.get("whois").display() == "Moderators only"
    assert form.get("nothing") is None
    # what the form cannot take is refused, naming the field
    with pytest.raises(FormError, match="Who may discover real JIDs"):
        form.changes({"muc#roomconfig_whois": "everybody"})
    with pytest.raises(FormError, match="Language is required"):
        form.changes({"muc#roomconfig_lang": "  "})
    with pytest.raises(FormError, match="yes or no"):
        form.get("persistentroom").parse("perhaps")
    with pytest.raises(FormError, match="no field"):
        form.changes({"bogus": "1"})


def room_app_bridge():
    bridge = make_bridge()
    bridge.handle("MucRoomsJoined", lambda profile: [])
    return bridge


async def room_app(bridge, occupants=None):
    app = QuickApp(bridge)
    await app.start()
    await app.login("alice")
    bridge.emit(
        "MucRoomJoined",
        "alice",
        ROOM,
        {
            "room": ROOM,
            "nick": "alice",
            "occupants": occupants
            or [
                {"nick": "alice", "role": "moderator", "affiliation": "owner"},
                {"nick": "bob", "role": "participant"},
                {"nick": "carol", "role": "participant", "jid": "carol@example.org/x"},
            ],
        },
    )
    return app, app.get_conversation("alice", ROOM)


@asyncio_test
async def test_room_admin_commands():
    from sat_frontends.bridge import errors

    bridge = room_app_bridge()
    app, room = await room_app(bridge)
    chat = app.conversation("alice", BOB)
    # without the plugin's members: said in one sentence
    out = await run(app, "/kick bob", room)
    assert out[-1][1] == "error" and "kicking room occupants (XEP-0045 plugin)" in out[-1][0]
    for name in ("MucKick", "MucRoleSet"):
        bridge.handle(
            name,
            lambda *args: None,
            ("profile", "room", "nick", "x", "y")[: 4 if name == "MucKick" else 5],
        )
    bridge.handle("MucBan", lambda profile, room, who, reason: None)
    bridge.handle("MucAffiliationSet", lambda profile, room, who, affiliation, reason: None)
    bridge.handle("MucRoomDestroy", lambda profile, room, reason, alternate: None)
    bridge.handle(
        "MucAffiliationsGet",
        lambda profile, room, affiliation: (
            [{"jid": "alice@example.org", "affiliation": "owner"}] if affiliation == "owner" else []
        ),
    )
    # outside a room window, with missing or wrong arguments, unknown nicks: clear errors
    out = await run(app, "/kick bob", chat)
    assert out == [("this command works in a room window", "error")]
    assert (await run(app, "/kick", room))[0][0] == "usage: /kick nick [reason]"
    out = await run(app, "/kick dave", room)
    assert out == [("no occupant 'dave' in this room (/occupants lists them)", "error")]
    assert (
        "usage: /role nick moderator|participant|visitor|none"
        in (await run(app, "/role bob king", room))[0][0]
    )
    assert "usage: /affiliation" in (await run(app, "/affiliation bob@x.org boss", room))[0][0]
    assert not bridge.called("MucKick") and not bridge.called("MucRoleSet")
    # the commands call the daemon with the room of the window
    assert await run(app, "/kick bob too much noise", room) == [
        ("bob kicked (too much noise)", "info")
    ]
    assert bridge.called("MucKick")[-1] == ("alice", ROOM, "bob", "too much noise")
    await run(app, "/kick BOB", room)  # the nick's case does not matter
    assert bridge.called("MucKick")[-1] == ("alice", ROOM, "bob", "")
    await run(app, "/role bob visitor be quiet", room)
    assert bridge.called("MucRoleSet")[-1] == ("alice", ROOM, "bob", "visitor", "be quiet")
    # a ban needs a JID: a nick whose JID the room hides is refused, a visible one goes
    out = await run(app, "/ban bob", room)
    assert "does not show bob's JID" in out[0][0] and not bridge.called("MucBan")
    await run(app, "/ban carol spam", room)
    assert bridge.called("MucBan")[-1] == ("alice", ROOM, "carol", "spam")
    await run(app, "/ban mallory@evil.example", room)
    assert bridge.called("MucBan")[-1] == ("alice", ROOM, "mallory@evil.example", "")
    assert "not a valid JID" in (await run(app, "/ban @@", room))[0][0]
    await run(app, "/affil dave@example.org member", room)  # Poezio's alias style
    assert bridge.called("MucAffiliationSet")[-1] == (
        "alice",
        ROOM,
        "dave@example.org",
        "member",
        "",
    )
    out = await run(app, "/affiliation", room)
    assert ("owners (1): alice@example.org", "info") in out and ("members (0): -", "info") in out
    await run(app, "/destroy we are done", room)
    assert bridge.called("MucRoomDestroy")[-1] == ("alice", ROOM, "we are done", "")

    # the room refuses: the user is told who may do it, never a traceback
    def refuse(*args):
        raise errors.PermissionDenied("none role change to room failed: not allowed (forbidden)")

    bridge.handle("MucKick", refuse, ("profile", "room", "nick", "reason"))
    out = await run(app, "/kick bob", room)
    assert out == [
        (
            "you may not kick bob: moderators only "
            "(none role change to room failed: not allowed (forbidden))",
            "error",
        )
    ]
    bridge.handle("MucRoomDestroy", refuse, ("profile", "room", "reason", "alternate"))
    assert "you may not destroy this room: owners only" in (await run(app, "/destroy", room))[0][0]
    # once out of the room, the commands say so
    bridge.emit("MucRoomLeft", "alice", ROOM, {"reason": "kicked"})
    out = await run(app, "/kick bob", room)
    assert out == [("you are not in this room (/join it first)", "error")]


@asyncio_test
async def test_config_command_form_and_shortcut():
    from sat_frontends.bridge import errors

    bridge = room_app_bridge()
    app, room = await room_app(bridge)
    saved = []
    bridge.handle("MucConfigGet", lambda profile, room: ROOM_FORM)
    bridge.handle("MucConfigSet", lambda profile, room, values: saved.append(values))
    # with a UI: the form is handed to it with a coroutine saving the changes
    ui = FakeUI()
    assert await run(app, "/config", room, ui) == []
    name, (title, form, submit, conv) = ui.calls[-1]
    assert name == "show_form" and conv is room and ROOM in title
    assert form.get("Title") is not None
    values = {f.var: f.value for f in form.editable_fields()}
    assert await submit(values) == "nothing changed" and saved == []
    values["muc#roomconfig_roomname"] = "Coffee room"
    values["muc#roomconfig_whois"] = "anyone"
    assert await submit(values) == "room configuration saved (Title, Who may discover real JIDs?)"
    assert saved[-1] == {"muc#roomconfig_roomname": "Coffee room", "muc#roomconfig_whois": "anyone"}
    values["muc#roomconfig_lang"] = ""
    with pytest.raises(Exception, match="Language is required"):
        await submit(values)
    # /config field value: one field without the form
    out = await run(app, '/config roomname "Tea room"', room)
    assert out == [("room configuration saved (Title)", "info")]
    assert saved[-1] == {"muc#roomconfig_roomname": "Tea room"}
    out = await run(app, "/config persistentroom yes", room)
    assert saved[-1] == {"muc#roomconfig_persistentroom": True}
    out = await run(app, "/config whois", room)
    assert out == [("Who may discover real JIDs? [muc#roomconfig_whois]: Moderators only", "info")]
    out = await run(app, "/config nosuchfield 1", room)
    assert out == [("no field 'nosuchfield' in the room's configuration", "error")]
    # without a UI, the fields are listed
    out = await run(app, "/config", room)
    assert ("Title [muc#roomconfig_roomname]: (empty)", "info") in out

    # not an owner
    def refuse(profile, room):
        raise errors.PermissionDenied("room configuration request failed: forbidden (forbidden)")

    bridge.handle("MucConfigGet", refuse)
    out = await run(app, "/config", room, ui)
    assert out[0][1] == "error" and out[0][0].startswith(
        "you may not configure this room: owners only"
    )


def test_new_commands_are_registered_with_help_and_completion():
    commands = Commands()
    for name, alias in (
        ("kick", None),
        ("ban", None),
        ("role", None),
        ("affiliation", "affil"),
        ("config", "configure"),
        ("destroy", "destroy_room"),
        ("questions", "actions"),
    ):
        command = commands.get(name)
        assert command is not None and command.help, name
        assert command.usage or name == "questions", name
        if alias:
            assert commands.get(alias) is command
    assert commands.help_lines("kick")[0] == "/kick nick [reason]"
    kinds = commands.arg_kinds()
    assert kinds["kick"] == kinds["ban"] == kinds["role"] == kinds["affil"] == "nick"


# --------------------------------------------------------------------------- daemon's questions


def test_question_records():
    from sat_frontends.quick_frontend.questions import Question

    q = Question(
        "alice", "a1", {"title": "File", "message": "Accept?", "choices": ["yes", "no"]}, 30, "no"
    )
    assert (q.title, q.text, q.choices, q.free_text) == (
        "File",
        "Accept?",
        [("yes", "yes"), ("no", "no")],
        False,
    )
    assert 29 < q.remaining() <= 30 and "then the default answer: no" in q.status_text()
    q = Question("alice", "a2", {"type": "confirm", "question": "Trust?"}, 10, "no")
    assert q.choices == [("yes", "yes"), ("no", "no")] and q.text == "Trust?"
    q = Question(
        "alice",
        "a3",
        {"type": "subscription", "from": BOB, "choices": [{"value": "a", "label": "Accept"}]},
        10,
        "",
    )
    assert q.text == f"a presence subscription request from {BOB}" and q.choices == [
        ("a", "Accept")
    ]
    q = Question("alice", "a4", {"title": "Only a title"}, 10, "x")
    assert q.text == "Only a title" and q.title == "" and q.free_text
    q = Question("alice", "a5", {"message": "Fill", "form": ROOM_FORM}, 10, "")
    assert q.form is not None and not q.choices and not q.free_text
    answer = q.form_answer({"muc#roomconfig_roomname": "x"})
    import json

    decoded = json.loads(answer)
    assert decoded["muc#roomconfig_roomname"] == "x" and decoded["muc#roomconfig_lang"] == "en"


@asyncio_test
async def test_questions_answered_expired_and_pending_at_login():
    import asyncio

    from sat_frontends.bridge import errors

    bridge = make_bridge()
    answered = {}

    def answer(profile, action_id, value):
        if action_id not in ("a1", "old"):
            raise errors.NotFound(f"no pending action {action_id!r}")
        answered[action_id] = value

    bridge.handle("ActionAnswer", answer)
    bridge.handle(
        "ActionsPendingGet",
        lambda profile: [
            {"id": "old", "data": {"message": "Asked before"}, "default": "n", "remaining": 5.0}
        ],
    )
    app = QuickApp(bridge)
    await app.start()
    seen, done = [], []
    app.events.on("action", lambda session, q: seen.append(q))
    app.events.on("action_done", done.append)
    await app.login("alice")
    # a question asked before the login is there
    assert [q.id for q in seen] == ["old"] and seen[0].text == "Asked before"
    assert 4 < seen[0].remaining() <= 5
    bridge.emit(
        "ActionNew", "alice", "a1", {"message": "Accept?", "choices": ["yes", "no"]}, 30.0, "no"
    )
    bridge.emit("ActionNew", "other", "zz", {"message": "not ours"}, 30.0, "no")
    question = seen[-1]
    assert question.id == "a1" and app.notifications.total == 2
    assert "the daemon asks: Accept?" in app.console.messages[-1].body
    assert await app.answer_question(question, "yes")
    assert answered["a1"] == "yes" and question.state == "answered" and done == [question]
    assert not await app.answer_question(question, "again")  # answered once only
    # the daemon takes the default: the question expires
    bridge.emit("ActionNew", "alice", "a2", {"message": "Trust?"}, 30.0, "no")
    bridge.emit("ActionExpired", "alice", "a2", "no")
    assert done[-1].id == "a2" and done[-1].state == "expired" and done[-1].answer == "no"
    # answered by another frontend: the daemon does not know it any more
    bridge.emit("ActionNew", "alice", "a3", {"message": "Again?"}, 30.0, "no")
    assert not await app.answer_question(seen[-1], "yes")
    assert seen[-1].state == "gone"
    # a lost ActionExpired: the question still ends here after its time
    bridge.emit("ActionNew", "alice", "a4", {"message": "Quick?"}, 0.05, "no")
    await asyncio.sleep(2.2)
    assert seen[-1].state == "expired"
    assert [q.id for q in app.pending_questions()] == ["old"]


# --------------------------------------------------------------------------- daemon restart


@asyncio_test
async def test_daemon_disappears_and_comes_back():
    import asyncio

    bridge = make_bridge()
    joins = []

    def muc_join(profile, room, nick, options):
        joins.append((profile, room, nick))
        return {"room": room, "nick": nick, "occupants": [{"nick": nick}]}

    bridge.handle("MucRoomsJoined", lambda profile: [])
    bridge.handle("MucJoin", muc_join)
    bridge.handle("MucLeave", lambda profile, room, status: None)
    bridge.handle("ActionAnswer", lambda profile, action_id, value: None)
    app = QuickApp(bridge)
    await app.start()
    states = []
    app.events.on("daemon", states.append)
    session = await app.login("other", "secret")
    await app.join("other", ROOM, "me")
    other_room = "other@conference.example.org"
    await app.join("other", other_room, "me")
    await app.leave(app.get_conversation("other", other_room))
    bridge.emit("MucRoomLeft", "other", other_room, {"reason": "left"})
    bridge.emit("ActionNew", "other", "q1", {"message": "Accept?"}, 30.0, "no")
    question = app.pending_questions()[0]
    bridge.emit("PresenceUpdate", "other", f"{BOB}/pc", "", 0, {})
    # the daemon stops: rooms it said it left are kept to be joined again
    bridge.emit("MucRoomLeft", "other", ROOM, {"reason": "disconnected"})
    bridge.daemon_state(False)
    assert states == [False] and not app.daemon_available
    assert not session.connected and not session.contacts.rooms
    assert question.state == "gone" and not app.pending_questions()
    assert "daemon disconnected" in app.console.messages[-1].body
    # the daemon is back: the profile is logged in again (with its password), reloaded,
    # and the room joined again
    bridge.rosters["other"] = [{"jid": "new@example.org", "name": "New"}]
    connects = len(bridge.called("ProfileConnect"))
    bridge.daemon_state(True)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if states == [False, True]:
            break
    assert states == [False, True] and app.daemon_available
    assert bridge.called("ProfileConnect")[connects:] == [("other", "secret")]
    assert session.connected and session.ready
    assert session.contacts.get("new@example.org") is not None
    assert joins[-1] == ("other", ROOM, "me") and len(joins) == 3  # not the room left
    assert ROOM in session.contacts.rooms
    # a profile that cannot be logged in again is reported, the others go on
    bridge.daemon_state(False)
    bridge.profiles["other"]["password"] = "changed"
    bridge.daemon_state(True)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if states[-1] is True and len(states) == 4:
            break
    assert not session.connected
    assert any("could not be logged in again" in m.body for m in app.console.messages)
