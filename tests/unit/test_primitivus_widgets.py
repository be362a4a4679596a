"""Primitivus widgets rendered to urwid text canvases (no terminal), on a fake bridge."""

from __future__ import annotations

import asyncio
import time

import pytest
import urwid

from sat_frontends.primitivus import config as config_mod
from sat_frontends.primitivus.app import PrimitivusApp
from sat_frontends.primitivus.config import Config
from sat_frontends.primitivus.keys import KeyMap, normalise_key
from sat_frontends.primitivus.palette import PALETTE, nick_attr
from sat_frontends.primitivus.widgets import (
    ChatView,
    ContactsView,
    InputLine,
    MessageWidget,
    RenderOptions,
    StatusBar,
    Tab,
    TabBar,
)
from sat_frontends.quick_frontend import nick_colours
from sat_frontends.quick_frontend.chat import CHAT, Conversation
from sat_frontends.quick_frontend.completion import Completer
from sat_frontends.quick_frontend.contact_list import ContactList
from sat_frontends.quick_frontend.testing import FakeBridge, message_record
from tests.support.dbus import asyncio_test

ALICE = "alice@example.org"
BOB = "bob@example.org"
OPTIONS = RenderOptions("%H:%M")
T0 = time.mktime((2026, 11, 23, 12, 34, 0, 0, 0, -1))


def lines(widget, size) -> list[str]:
    canvas = widget.render(size, focus=True)
    return [row.decode("utf-8") for row in canvas.text]


def attr_of(widget, size, text: str, focus: bool = True):
    """The attribute of the first character of ``text`` in the rendered canvas."""
    canvas = widget.render(size, focus=focus)
    for row in canvas.content():
        line = b""
        for attr, _cs, chunk in row:
            if text.encode() in line + chunk:
                start = (line + chunk).index(text.encode())
                if start >= len(line):
                    # urwid 5 stacks the attributes of containers: the innermost is the text's
                    return attr.layers[0] if isinstance(attr, urwid.util.LayeredAttr) else attr
            line += chunk
    raise AssertionError(f"{text!r} not rendered")


def width(text: str) -> int:
    return urwid.calc_width(text, 0, len(text))


def conv_with(*records) -> Conversation:
    conv = Conversation("alice", BOB, CHAT, own_jid=ALICE, name_of=lambda j: "Bob")
    for record in records:
        conv.add(record)
    return conv


# --------------------------------------------------------------------------- messages


def test_message_line_time_nick_body_and_hanging_indent():
    conv = conv_with(
        message_record(
            f"{BOB}/pc", ALICE, "hello there, this line is long enough to wrap", timestamp=T0
        )
    )
    widget = MessageWidget(conv.messages[0], OPTIONS)
    assert lines(widget, (30,)) == [
        "12:34 Bob> hello there, this  ",
        "           line is long enough",
        "           to wrap            ",
    ]
    assert attr_of(widget, (30,), "12:34") == "time"
    assert attr_of(widget, (30,), "Bob") == nick_attr("Bob")
    assert nick_attr("Bob") == f"nick{nick_colours.xterm_index('Bob')}"


def test_me_info_edited_receipts_reactions_retracted():
    conv = conv_with(
        message_record(f"{BOB}/pc", ALICE, "/me waves", uid="a", timestamp=T0),
        message_record(f"{ALICE}/pc", BOB, "hi", uid="b", outgoing=True, timestamp=T0),
    )
    me, mine = conv.messages
    assert lines(MessageWidget(me, OPTIONS), (30,))[0].rstrip() == "12:34 * Bob waves"
    widget = MessageWidget(mine, OPTIONS)
    assert lines(widget, (30,))[0].rstrip() == "12:34 alice> hi"
    conv.apply_update("b", "receipt", {"delivery": "received"})
    assert widget.refresh()
    assert lines(widget, (30,))[0].rstrip() == "12:34 alice> hi ✓"
    conv.apply_update("b", "marker", {"marker": "displayed"})
    widget.refresh()
    assert lines(widget, (30,))[0].rstrip() == "12:34 alice> hi ✓✓"
    assert attr_of(widget, (30,), "✓✓") == "receipt_read"
    conv.apply_update("b", "correction", {"body": "hello"})
    conv.apply_update("b", "reactions", {"reactions": {"👍": [BOB, "carol@x"], "❤": [BOB]}})
    widget.refresh()
    assert [line.rstrip() for line in lines(widget, (40,))] == [
        "12:34 alice> hello (edited) ✓✓",
        "              👍 2   ❤",
    ]
    conv.apply_update("b", "retraction", {})
    widget.refresh()
    assert lines(widget, (40,))[0].rstrip() == "12:34 alice> message retracted ✓✓"
    info = conv.add_info("something happened", timestamp=T0)
    assert lines(MessageWidget(info, OPTIONS), (40,))[0].rstrip() == "12:34 -!- something happened"


def test_styling_is_rendered_with_attributes():
    conv = conv_with(message_record(f"{BOB}/pc", ALICE, "a *bold* _it_ ~del~ `c`", timestamp=T0))
    widget = MessageWidget(conv.messages[0], OPTIONS)
    assert lines(widget, (40,))[0].rstrip() == "12:34 Bob> a *bold* _it_ ~del~ `c`"
    assert attr_of(widget, (40,), "*bold*") == "sty_strong"
    assert attr_of(widget, (40,), "_it_") == "sty_emphasis"
    assert attr_of(widget, (40,), "~del~") == "sty_strike"
    assert attr_of(widget, (40,), "`c`") == "sty_pre"
    # spans given by the daemon's styling plugin are used as they are
    conv = conv_with(
        message_record(
            f"{BOB}/pc",
            ALICE,
            "> quote",
            timestamp=T0,
            extra={"styling": [{"type": "quote", "start": 0, "end": 7}]},
        )
    )
    assert attr_of(MessageWidget(conv.messages[0], OPTIONS), (40,), "> quote") == "sty_quote"
    # every attribute used exists in the palette
    names = {entry[0] for entry in PALETTE}
    assert {"sty_strong", "sty_emphasis", "sty_strike", "sty_pre", "sty_quote"} <= names
    assert nick_attr("Romeo") in names


def test_wide_and_combining_characters_keep_the_columns():
    body = "日本語のテキスト e\u0301te\u0301 😺 fin"
    conv = conv_with(message_record(f"{BOB}/pc", ALICE, body, timestamp=T0))
    widget = MessageWidget(conv.messages[0], OPTIONS)
    for cols in (16, 20, 25, 33, 80):
        rendered = lines(widget, (cols,))
        for line in rendered:
            assert width(line) == cols, (cols, line)
        text = "".join(rendered).replace(" ", "")
        # nothing lost nor split: every wide character and accent is there once
        assert text == "12:34Bob>" + body.replace(" ", "")
        assert "e\u0301" in "".join(rendered)
        if cols >= 25:  # continuation lines start under the body
            assert all(line.startswith(" " * len("12:34 Bob> ")) for line in rendered[1:])


# --------------------------------------------------------------------------- conversation view


def test_chat_view_follows_new_messages_and_asks_for_history():
    asked = []
    conv = conv_with(
        *[message_record(f"{BOB}/pc", ALICE, f"m{i}", timestamp=T0 + i) for i in range(30)]
    )
    view = ChatView(conv, OPTIONS, asked.append)
    shown = lines(view, (30, 6))
    assert shown[-1].startswith("12:34 Bob> m29")
    assert not asked  # the top is not on screen
    conv.add(message_record(f"{BOB}/pc", ALICE, "new one", timestamp=T0 + 70))
    assert lines(view, (30, 6))[-1].startswith("12:35 Bob> new one")
    view.scroll((30, 6), "scroll_top")
    top = lines(view, (30, 6))
    assert "PgUp: older" in top[0]
    assert asked == [conv]
    # older messages arrive: the view keeps its place and the marker says what is left
    conv.history_complete = True
    older = [
        message_record(f"{BOB}/pc", ALICE, f"old{i}", timestamp=T0 - 200000 + i) for i in range(3)
    ]
    conv.messages[:0] = [conv.make_message(r) for r in older]
    conv.events.emit("prepend", conv.messages[:3])
    rendered = lines(view, (40, 8))
    joined = "\n".join(rendered)
    assert "old0" in joined or "old2" in joined
    view.scroll((40, 8), "scroll_top")
    joined = "\n".join(lines(view, (40, 8)))
    assert "beginning of the conversation" in joined
    assert "───" in joined  # a day separator between the two days


# --------------------------------------------------------------------------- contact list


def roster(n: int) -> list[dict]:
    return [
        {"jid": f"user{i:05d}@example.org", "name": f"User {i:05d}", "groups": [f"Group {i % 7}"]}
        for i in range(n)
    ]


def test_contacts_view_rows_presence_unread_and_open():
    opened = []
    cl = ContactList("alice")
    cl.set_roster(
        [
            {"jid": BOB, "name": "Bob", "groups": ["Friends"]},
            {"jid": "carol@example.org", "name": "Carol", "groups": ["Friends"]},
        ]
    )
    cl.presence_update(f"{BOB}/pc", "away", 0, {})
    view = ContactsView(OPTIONS, KeyMap(), lambda *a: opened.append(a))
    view.set_lists([cl])
    assert [line.rstrip() for line in lines(view, (20, 4))] == [
        "▾ Friends 1/2",
        "◐ Bob",
        "· Carol",
        "",
    ]
    assert attr_of(view, (20, 4), "◐", focus=False) == "show_away"
    assert attr_of(view, (20, 4), "Bob") == "contact_focus"  # the focused row is highlighted
    cl.set_unread(BOB, 3)
    cl.get(BOB).chat_state = "composing"
    cl._changed()
    assert lines(view, (20, 4))[1].rstrip() == "◐ Bob ✎ 3"
    # the first contact has the focus (not the header): Enter opens it
    view.keypress((20, 4), "enter")
    assert opened == [("alice", "contact", BOB)]
    view.keypress((20, 4), "down")
    view.keypress((20, 4), "enter")
    assert opened[-1] == ("alice", "contact", "carol@example.org")
    # long names are cut with an ellipsis, never wrapped
    cl.update_contact(BOB, {"name": "Bartholomew the Magnificent", "groups": ["Friends"]})
    assert lines(view, (12, 4))[1] == "◐ Bartholom…"


def test_contacts_view_builds_only_visible_rows():
    cl = ContactList("alice")
    cl.set_roster(roster(5000))
    view = ContactsView(OPTIONS, KeyMap())
    view.set_lists([cl])
    shown = lines(view, (24, 22))
    assert shown[0].startswith("▾ Group 0 0/715")
    assert len(view.walker.rows) == 5007
    assert len(view.walker._cache) <= 30  # widgets only for what was drawn


# --------------------------------------------------------------------------- bars and input


def test_tab_bar_and_status_bar():
    tabs = [Tab(1, "console"), Tab(2, "Bob", unread=2, mention=True), Tab(3, "#room", active=True)]
    bar = TabBar(lambda: tabs)
    assert lines(bar, (40,))[0].rstrip() == " 1:console  2:Bob(2)  3:#room"
    assert attr_of(bar, (40,), "3:#room") == "tab_active"
    assert attr_of(bar, (40,), "2:Bob(2)") == "tab_mention"
    # narrow: tabs on the left are dropped so that the current one shows
    narrow = lines(bar, (12,))[0]
    assert narrow.startswith("«") and "3:#room" in narrow
    status = StatusBar(lambda w: [("status", "[alice ● online] "), ("status_alert", "Act: 2!")])
    assert lines(status, (30,))[0].rstrip() == "[alice ● online] Act: 2!"


def test_input_line_send_newline_history_completion_paste():
    sent = []
    completer = Completer(lambda kind: {"nick": ["bobby"], "command": ["join"]}.get(kind, []))
    line = InputLine(KeyMap(), completer, sent.append)
    size = (30,)
    for key in "hi":
        line.keypress(size, key)
    line.keypress(size, "meta enter")
    for key in "there":
        line.keypress(size, key)
    assert lines(line, size)[:2] == [
        "> hi                          ",
        "there                         ",
    ]
    line.keypress(size, "enter")
    assert sent == ["hi\nthere"] and line.edit_text == ""
    for key in "bo":
        line.keypress(size, key)
    line.keypress(size, "tab")
    assert line.edit_text == "bobby: "
    line.set_edit_text("")
    line.keypress(size, "up")
    assert line.edit_text == "hi\nthere"
    line.keypress(size, "down")
    assert line.edit_text == ""
    # bracketed paste: Enter inside a paste is a new line, not a send
    for key in ["begin paste", "a", "enter", "b", "end paste"]:
        line.keypress(size, key)
    assert line.edit_text == "a\nb" and len(sent) == 1


# --------------------------------------------------------------------------- keys and config


def test_key_names_and_config_file(tmp_path):
    assert normalise_key("Alt+N") == "meta n"
    assert normalise_key("C-x") == "ctrl x"
    assert normalise_key("PgUp") == "page up"
    assert normalise_key("Ctrl+Alt+k") == "meta ctrl k"
    conf = tmp_path / "sat.conf"
    conf.write_text(
        "[primitivus]\nmouse = yes\ncontacts_width = 30\ncvd = blue\nbogus = 1\n"
        "[primitivus_keys]\nhelp = f1, Alt+H\nnext_window = ctrl o\nnot_an_action = x\n"
    )
    config = config_mod.load(conf, env={"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert config.mouse and config.contacts_width == 30 and config.cvd == "blue"
    assert any("bogus" in w for w in config.warnings)
    keymap = KeyMap(config.keys)
    assert keymap.action("meta h") == "help" and keymap.action("f1") == "help"
    assert keymap.action("ctrl o") == "next_window" and keymap.action("ctrl n") is None
    assert any("not_an_action" in w for w in keymap.warnings)
    assert ("F1, Alt+H", "help", "show the help (commands and key bindings)") in keymap.describe()
    env = {"XDG_CONFIG_HOME": str(tmp_path / "none"), "SAT_PRIMITIVUS_BELL": "no"}
    assert config_mod.load(None, env=env).bell is False


# --------------------------------------------------------------------------- the whole screen


def screen_text(app, size=(80, 24)) -> str:
    return "\n".join(lines(app.top, size))


def make_bridge() -> FakeBridge:
    bridge = FakeBridge()
    bridge.profiles["alice"] = {"jid": ALICE, "password": ""}
    bridge.rosters["alice"] = [{"jid": BOB, "name": "Bob", "groups": ["Friends"]}]
    bridge.history["alice"] = [
        message_record(f"{BOB}/pc", ALICE, f"old {i}", timestamp=time.time() - 500 + i)
        for i in range(5)
    ]
    return bridge


@asyncio_test
async def test_app_screen_login_chat_resize():
    bridge = make_bridge()
    app = PrimitivusApp(bridge, Config())
    await app.qa.start()
    await app._show_manager()
    text = screen_text(app)
    assert "Salut à Toi — Primitivus" in text and "alice" in text
    assert await app.login("alice")
    text = screen_text(app)
    assert "logged in as alice" in text and "▾ Friends 0/1" in text and "[alice ● online]" in text
    # Enter on bob (focused in the contact list) opens the chat; history shows
    app.frame.keypress((80, 24), "enter")
    for _ in range(20):
        await asyncio.sleep(0.01)
        text = screen_text(app)
        if "old 4" in text:
            break
    assert "2:Bob" in text and "Bob> old 4" in text and f"<{BOB}>" in text
    # typing sends
    for key in "hello *Bob*":
        app.frame.keypress((80, 24), key)
    app.frame.keypress((80, 24), "enter")
    await asyncio.sleep(0.01)
    assert bridge.sent[-1][:3] == ("alice", BOB, "hello *Bob*")
    assert "alice> hello *Bob*" in screen_text(app)
    # a message from bob in another window: activity in the tab and status bars
    app.switch_window(1)
    bridge.emit("MessageNew", "alice", message_record(f"{BOB}/pc", ALICE, "ping"))
    text = screen_text(app)
    assert "2:Bob(1)" in text and "Act: 2!" in text and "1 new" in text
    app.frame.keypress((80, 24), "meta a")
    text = screen_text(app)
    assert "Bob> ping" in text and "Act:" not in text
    # any size renders, from tiny to large, without error
    for size in ((20, 5), (40, 10), (80, 24), (132, 43), (200, 60)):
        rendered = lines(app.top, size)
        assert len(rendered) == size[1]
        assert all(width(line) == size[0] for line in rendered)
    # mouse (optional): a click on a tab switches to it, on a contact opens the chat
    app.switch_window(1)
    col = screen_text(app).splitlines()[0].index("2:Bob")
    assert app.frame.mouse_event((80, 24), "mouse press", 1, col + 1, 0, True)
    assert app.current == 1
    app.switch_window(1)
    app.frame.mouse_event((80, 24), "mouse press", 1, 3, 2, True)  # row 2: "· Bob"
    assert app.current == 1 and app.window.conv.jid == BOB
    # F1: help with the key bindings, Esc closes it
    app.frame.keypress((80, 24), "f1")
    text = screen_text(app)
    assert "Keys" in text and "Ctrl+Q" in text
    app.frame.keypress((80, 24), "esc")
    assert "Keys" not in screen_text(app)


@asyncio_test
async def test_command_output_and_missing_plugin_in_the_window():
    bridge = make_bridge()
    app = PrimitivusApp(bridge, Config())
    await app.qa.start()
    await app.login("alice")
    app.open_conversation(app.qa.conversation("alice", BOB))
    await app._run_command("/join room@conference.example.org")
    text = screen_text(app)
    assert "does not offer joining group chats" in text
    await app._run_command("/search old")
    text = screen_text(app)
    assert "Search: old" in text and "5 results" in text
    # the results have the keys: Down, Enter opens the conversation
    app.frame.keypress((80, 24), "down")
    app.frame.keypress((80, 24), "enter")
    assert isinstance(app.window.conv, Conversation) and app.window.conv.jid == BOB
    assert app.frame.focus_position == "footer"


@asyncio_test
async def test_two_profiles_share_the_contact_list():
    bridge = make_bridge()
    bridge.profiles["bob"] = {"jid": BOB, "password": ""}
    bridge.rosters["bob"] = [{"jid": ALICE, "name": "Alice", "groups": []}]
    app = PrimitivusApp(bridge, Config())
    await app.qa.start()
    await app.login("alice")
    await app.login("bob")
    text = screen_text(app)
    assert " alice " in text and " bob " in text and "Alice" in text and "Bob" in text
    bridge.emit("MessageNew", "bob", message_record(f"{ALICE}/pc", BOB, "hi bob"))
    window = app.window_for(app.qa.get_conversation("bob", ALICE))
    assert window.title == "bob:Alice"
    assert "bob:Alice(1)" in screen_text(app)


def test_palette_is_valid_for_every_colour_mode():
    from urwid.display.common import AttrSpec

    for entry in PALETTE:
        AttrSpec(entry[1], entry[2], 16)
        if len(entry) == 6:
            AttrSpec(entry[4], entry[5], 256)


@pytest.mark.parametrize("colours", [1, 16, 256])
def test_screen_accepts_the_palette(colours):
    screen = urwid.display.raw.Screen()
    screen.set_terminal_properties(colors=colours)
    screen.register_palette(PALETTE)


@asyncio_test
async def test_room_occupants_column_and_progress_bars():
    bridge = make_bridge()
    bridge.handle("MucRoomsJoined", lambda profile: [])
    app = PrimitivusApp(bridge, Config())
    await app.qa.start()
    await app.login("alice")
    room = "sat@conference.example.org"
    bridge.emit(
        "MucRoomJoined",
        "alice",
        room,
        {
            "room": room,
            "nick": "alice",
            "subject": "SàT dev",
            "occupants": [
                {"nick": "alice", "role": "participant"},
                {"nick": "goffi", "role": "moderator", "affiliation": "owner"},
            ],
        },
    )
    app.open_conversation(app.qa.get_conversation("alice", room))
    text = screen_text(app)
    assert "#sat [2] SàT dev" in text and "goffi" not in text  # 80 columns: no occupant list
    wide = screen_text(app, (120, 30))
    assert "2 here" in wide and "~goffi" in wide and " alice" in wide
    assert app.input.caption == "alice> "
    # long jobs show progress bars above the status line
    bridge.emit("ProgressStarted", "alice", "job1", {"name": "photo.jpg"})
    bridge.emit("ProgressUpdated", "alice", "job1", 450, 1000)
    text = screen_text(app)
    assert "photo.jpg" in text and "45 %" in text
    bridge.emit("ProgressFinished", "alice", "job1", {})
    assert "100 %" in screen_text(app)


# --------------------------------------------------------------------------- forms and questions

ROOM = "room@conference.example.org"
CONFIG_FORM = {
    "type": "form",
    "title": "Configuration for room",
    "instructions": ["Change what you like."],
    "fields": [
        {"var": "FORM_TYPE", "type": "hidden", "values": ["muc#roomconfig"]},
        {
            "var": "muc#roomconfig_roomname",
            "type": "text-single",
            "label": "Title",
            "values": ["Old"],
        },
        {
            "var": "muc#roomconfig_persistentroom",
            "type": "boolean",
            "label": "Persistent",
            "desc": "Kept when empty",
            "values": ["1"],
        },
        {
            "var": "muc#roomconfig_whois",
            "type": "list-single",
            "label": "Real JIDs",
            "values": ["moderators"],
            "options": [
                {"value": "moderators", "label": "Moderators only"},
                {"value": "anyone", "label": "Anyone"},
            ],
        },
        {
            "var": "muc#roomconfig_presencebroadcast",
            "type": "list-multi",
            "label": "Broadcast",
            "values": ["moderator"],
            "options": [
                {"value": "moderator", "label": "Moderator"},
                {"value": "visitor", "label": "Visitor"},
            ],
        },
        {
            "var": "muc#roomconfig_roomdesc",
            "type": "text-multi",
            "label": "Description",
            "values": ["one", "two"],
        },
        {
            "var": "muc#roomconfig_roomsecret",
            "type": "text-private",
            "label": "Password",
            "values": ["s3cret"],
        },
        {"type": "fixed", "values": ["A fixed note"]},
    ],
}


def test_form_widget_editors_and_values():
    from sat_frontends.primitivus.forms import FormWidget
    from sat_frontends.quick_frontend.forms import DataForm

    form = DataForm.from_record(CONFIG_FORM)
    widget = FormWidget(form)
    text = "\n".join(lines(widget, (60, 20)))
    # each field with its type's editor; hidden ones are not shown, fixed ones as text
    assert "FORM_TYPE" not in text and "A fixed note" in text and "Change what you like." in text
    assert "Title" in text and "Old" in text
    assert "Persistent" in text and "[X]" in text and "Kept when empty" in text
    assert "(X) Moderators only" in text and "( ) Anyone" in text
    assert "[X] Moderator" in text and "[ ] Visitor" in text
    assert "one" in text and "two" in text
    assert "s3cret" not in text and "******" in text  # text-private is masked
    assert widget.values() == {
        "muc#roomconfig_roomname": "Old",
        "muc#roomconfig_persistentroom": True,
        "muc#roomconfig_whois": "moderators",
        "muc#roomconfig_presencebroadcast": ["moderator"],
        "muc#roomconfig_roomdesc": ["one", "two"],
        "muc#roomconfig_roomsecret": "s3cret",
    }
    assert form.changes(widget.values()) == {}
    # the keys edit the fields: the first field has the focus, Tab goes to the next one
    size = (60, 20)
    for key in ["ctrl u", *"New name", "tab", " ", "tab", "down", " "]:
        widget.keypress(size, key)
    values = widget.values()
    assert values["muc#roomconfig_roomname"] == "New name"
    assert values["muc#roomconfig_persistentroom"] is False
    assert values["muc#roomconfig_whois"] == "anyone"
    widget.editor("presencebroadcast").set_value(["moderator", "visitor"])
    widget.editor("roomdesc").set_value(["one", "two", "three"])
    assert form.changes(widget.values()) == {
        "muc#roomconfig_roomname": "New name",
        "muc#roomconfig_persistentroom": False,
        "muc#roomconfig_whois": "anyone",
        "muc#roomconfig_presencebroadcast": ["moderator", "visitor"],
        "muc#roomconfig_roomdesc": ["one", "two", "three"],
    }


async def app_in_room(bridge):
    bridge.handle("MucRoomsJoined", lambda profile: [])
    app = PrimitivusApp(bridge, Config())
    await app.qa.start()
    await app.login("alice")
    bridge.emit(
        "MucRoomJoined",
        "alice",
        ROOM,
        {"room": ROOM, "nick": "alice", "occupants": [{"nick": "alice", "role": "moderator"}]},
    )
    room = app.qa.get_conversation("alice", ROOM)
    app.open_conversation(room)
    return app, room


async def settle():
    for _ in range(5):
        await asyncio.sleep(0.01)


@asyncio_test
async def test_config_window_save_cancel_and_refusal():
    from sat_frontends.bridge import errors

    bridge = make_bridge()
    saved = []
    bridge.handle("MucConfigGet", lambda profile, room: CONFIG_FORM)
    bridge.handle("MucConfigSet", lambda profile, room, values: saved.append(values))
    app, room = await app_in_room(bridge)
    size = (80, 24)
    await app._run_command("/config")
    text = screen_text(app)
    assert "3:config:#room" in text and "Configuration for room" in text and "Ctrl+S: save" in text
    assert app.frame.focus_position == "body"  # the form has the keys
    for key in ["ctrl u", *"Coffee"]:
        app.frame.keypress(size, key)
    app.frame.keypress(size, "ctrl s")
    await settle()
    assert saved == [{"muc#roomconfig_roomname": "Coffee"}]
    text = screen_text(app)
    assert "config:#room" not in text and "room configuration saved (Title)" in text
    assert app.window.conv is room and app.frame.focus_position == "footer"
    # Esc cancels: nothing sent
    await app._run_command("/config")
    app.frame.keypress(size, "x")
    app.frame.keypress(size, "esc")
    await settle()
    assert len(saved) == 1 and "not saved" in screen_text(app)

    # the room refuses the new configuration: said in the window, which stays open
    def refuse(profile, room, values):
        raise errors.PermissionDenied("room configuration failed: forbidden (forbidden)")

    bridge.handle("MucConfigSet", refuse)
    await app._run_command("/config")
    app.frame.keypress(size, "z")
    app.frame.keypress(size, "ctrl s")
    await settle()
    text = screen_text(app)
    assert "config:#room" in text and "you may not configure this room: owners only" in text


@asyncio_test
async def test_question_window_answer_expire_and_background():
    bridge = make_bridge()
    answers = []
    bridge.handle(
        "ActionAnswer", lambda profile, action_id, value: answers.append((action_id, value))
    )
    app, room = await app_in_room(bridge)
    size = (80, 24)
    bridge.emit(
        "ActionNew",
        "alice",
        "q1",
        {"title": "File offer", "message": "Accept photo.jpg?", "choices": ["accept", "refuse"]},
        60.0,
        "refuse",
    )
    text = screen_text(app)
    # a tab that stands out, the status bar counts it, the keys stay in the input line
    assert "3:?question(1)" in text and "? 1 question (/questions)" in text
    assert app.window.conv is room and app.frame.focus_position == "footer"
    app.frame.keypress(size, "meta a")
    text = screen_text(app)
    assert "File offer" in text and "Accept photo.jpg?" in text
    assert "< accept >" in text and "< refuse (default) >" in text and "s to answer" in text
    app.frame.keypress(size, "down")
    app.frame.keypress(size, "enter")  # "refuse"
    await settle()
    assert answers == [("q1", "refuse")]
    text = screen_text(app)
    assert "?question" not in text and "answered “refuse”" in text
    # on screen when the daemon takes the default: marked expired, closed by the user
    bridge.emit(
        "ActionNew", "alice", "q2", {"message": "Trust this device?", "type": "confirm"}, 60.0, "no"
    )
    app.show_questions()
    assert "< yes >" in screen_text(app)
    bridge.emit("ActionExpired", "alice", "q2", "no")
    text = screen_text(app)
    assert "?expired" in text and "expired: the daemon took the default answer (no)" in text
    assert "< yes >" not in text
    app.frame.keypress(size, "enter")  # Close
    assert "?expired" not in screen_text(app) and app.window.conv is room
    # in the background, an expired question's window goes away by itself
    bridge.emit("ActionNew", "alice", "q3", {"message": "Free text?"}, 60.0, "maybe")
    assert "?question" in screen_text(app)
    bridge.emit("ActionExpired", "alice", "q3", "maybe")
    text = screen_text(app)
    assert "?question" not in text and app.window.conv is room
    # a free text question: the default answer is offered, Enter sends it
    bridge.emit("ActionNew", "alice", "q4", {"message": "Your name?"}, 60.0, "Alice")
    await app._run_command("/questions")
    assert "Answer: Alice" in screen_text(app)
    for key in [" ", "L"]:
        app.frame.keypress(size, key)
    app.frame.keypress(size, "enter")
    await settle()
    assert answers[-1] == ("q4", "Alice L")


@asyncio_test
async def test_daemon_disconnected_then_back_on_screen():
    bridge = make_bridge()
    app, room = await app_in_room(bridge)
    bridge.handle("MucJoin", lambda profile, room, nick, options: {"room": room, "nick": nick})
    bridge.daemon_state(False)
    text = screen_text(app)
    assert "[daemon disconnected]" in text and "[alice: offline]" in text
    assert "| daemon disconnected: waiting" in text and "(not joined)" in text
    bridge.daemon_state(True)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if app.qa.sessions["alice"].ready:
            break
    text = screen_text(app)
    assert "[daemon disconnected]" not in text and "[alice ● online]" in text
    assert "the daemon is back" in text
    assert bridge.called("MucJoin")[-1][:2] == ("alice", ROOM)
