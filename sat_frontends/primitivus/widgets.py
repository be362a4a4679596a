"""Primitivus widgets: messages, conversation view, contact list, tab bar, status bar, input.

They render models of :mod:`sat_frontends.quick_frontend` and never talk to the bridge: the
application (:mod:`.app`) wires them. Each widget renders at any size (urwid asks for the
size at every draw, so a terminal resize just works) and uses urwid's text layout, which
measures wide (CJK, emoji) and combining characters with ``wcwidth``.

Lists are lazy where they can be long: :class:`ContactsView` builds a row widget only when
the ListBox shows it (a 5,000-contact roster costs one sort and ~25 small widgets per draw),
:class:`ChatView` builds one widget per loaded message and rebuilds only the messages that
changed (corrections, receipts, reactions).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import urwid

from sat_frontends.primitivus.keys import KeyMap
from sat_frontends.primitivus.palette import nick_attr, style_attr
from sat_frontends.quick_frontend import styling
from sat_frontends.quick_frontend.chat import Conversation, Message
from sat_frontends.quick_frontend.completion import Completer
from sat_frontends.quick_frontend.contact_list import Contact, ContactList, Room, Row
from sat_frontends.quick_frontend.input_history import InputHistory

__all__ = [
    "RenderOptions",
    "MessageWidget",
    "ChatView",
    "ContactsView",
    "OccupantsView",
    "TabBar",
    "StatusBar",
    "InputLine",
    "ProgressPanel",
    "SelectableText",
    "PRESENCE_CHARS",
]

#: presence indicator by show value
PRESENCE_CHARS = {
    "": "●",
    "chat": "●",
    "away": "◐",
    "xa": "○",
    "dnd": "⊘",
    "unavailable": "·",
}
CHAT_STATE_CHARS = {"composing": "✎", "paused": "…"}
#: every attribute of a contact list row, highlighted when the row has the focus
FOCUS_MAP = {
    attr: "contact_focus"
    for attr in (
        None,
        "default",
        "header",
        "time",
        "room",
        "contact",
        "offline",
        "blocked",
        "bar_strong",
        *(f"show_{s}" for s in ("", "chat", "away", "xa", "dnd", "unavailable")),
    )
}
NICK_MAX = 15
ROLE_PREFIX = {"moderator": "@", "participant": "", "visitor": "-", "none": ""}
AFFILIATION_PREFIX = {"owner": "~", "admin": "&"}


@dataclass
class RenderOptions:
    timestamp_format: str = "%H:%M"
    nick_colours: bool = True
    cvd: str = "none"

    def time_text(self, timestamp: float) -> str:
        return time.strftime(self.timestamp_format, time.localtime(timestamp))


class SelectableText(urwid.Text):
    """A Text that can take the focus (list entries); keys go back to its container."""

    _selectable = True

    def keypress(self, size, key):
        return key


# ----------------------------------------------------------------------------- messages


def body_markup(message: Message) -> list:
    """The body of ``message`` as urwid markup, XEP-0393 styles applied."""
    if message.retracted:
        info = message.extra.get("retracted")
        if isinstance(info, dict) and info.get("moderated"):
            reason = info.get("reason")
            return [
                ("retracted", "message removed by a moderator" + (f": {reason}" if reason else ""))
            ]
        return [("retracted", "message retracted")]
    markup = []
    if message.reply is not None:
        nick, text = message.reply
        markup.append(("edited", f"↪ {nick}: {text}\n"))
    for styles, text in styling.segments(message.body, message.styling):
        markup.append((style_attr(styles), text))
    return markup or [("default", "")]


def decorations(message: Message) -> list:
    """Markers after the body: edited, delivery receipt, read marker, error."""
    out = []
    if message.edited and not message.retracted:
        out.append(("edited", " (edited)"))
    if message.outgoing:
        if message.delivery == "received":
            out.append(("receipt", " ✓"))
        elif message.delivery == "displayed":
            out.append(("receipt_read", " ✓✓"))
        elif message.delivery == "error":
            out.append(("receipt_error", " ✗ " + (message.error or "not delivered")))
    if message.reactions:
        chips = []
        for emoji, who in sorted(message.reactions.items(), key=lambda kv: -len(kv[1])):
            chips.append(("reaction", f" {emoji} {len(who)} " if len(who) > 1 else f" {emoji} "))
            chips.append(" ")
        out.append("\n")
        out.extend(chips[:-1])
    return out


class HangingLayout(urwid.StandardTextLayout):
    """Text layout whose continuation lines start under the body, not under the time.

    The first ``chars`` characters (``width`` columns: time and nick) are the prefix; the rest
    is laid out by urwid's standard layout (wide and combining characters measured with
    wcwidth) in the columns left, and every line after the first starts with blank columns.
    One Text per message, instead of columns of widgets: cheaper to build and to draw.
    """

    def __init__(self, chars: int, width: int):
        super().__init__()
        self.chars = chars
        self.prefix_width = width

    @staticmethod
    def _shift(segment: tuple, n: int) -> tuple:
        if len(segment) == 3:
            sc, start, end = segment
            return (sc, start + n, end + n if isinstance(end, int) else end)
        sc, offset = segment
        return (sc, None if offset is None else offset + n)

    def layout(self, text, width, align, wrap):
        n, w = self.chars, self.prefix_width
        if width < w + 8 or n > len(text):
            return super().layout(text, width, align, wrap)
        body = super().layout(text[n:], width - w, align, wrap)
        shift = self._shift
        out = []
        for index, line in enumerate(body):
            head = (w, 0, n) if index == 0 else (w, None)
            out.append([head, *(shift(segment, n) for segment in line)])
        return out or [[(w, 0, n)]]


class MessageWidget(urwid.WidgetWrap):
    """One message: ``time nick> body`` (continuation lines under the body), ``* nick action``."""

    def __init__(self, message: Message, options: RenderOptions, own_nick: str = ""):
        self.message = message
        self.options = options
        self.own_nick = own_nick
        self._version = message.version
        super().__init__(self._build())

    def refresh(self) -> bool:
        """Rebuild if the message changed since; True if it did."""
        if self.message.version == self._version:
            return False
        self._version = self.message.version
        self._w = self._build()
        return True

    def _nick(self) -> tuple[str, str]:
        m = self.message
        nick = m.nick or "?"
        if len(nick) > NICK_MAX:
            nick = nick[: NICK_MAX - 1] + "…"
        if m.outgoing:
            attr = "nick_own"
        else:
            attr = nick_attr(m.nick, self.options.cvd, self.options.nick_colours)
        return nick, attr

    @staticmethod
    def _text(prefix: list, rest: list) -> urwid.Text:
        chars = sum(len(text) for _attr, text in prefix)
        plain = "".join(text for _attr, text in prefix)
        layout = HangingLayout(chars, urwid.calc_width(plain, 0, len(plain)))
        return urwid.Text([*prefix, *rest], layout=layout)

    def _build(self) -> urwid.Widget:
        m = self.message
        stamp = self.options.time_text(m.timestamp) + " "
        time_attr = "mention" if m.mention else "time"
        if m.kind == "info":
            level = m.extra.get("level", "info")
            attr = {"error": "error", "warning": "warning"}.get(level, "info")
            return self._text([(time_attr, stamp), (attr, "-!- ")], [(attr, m.body)])
        if m.subject is not None and not m.body:
            return self._text(
                [(time_attr, stamp), ("info", "-!- ")], [("info", f"subject: {m.subject}")]
            )
        nick, nick_attr_name = self._nick()
        if m.kind == "me":
            return self._text(
                [(time_attr, stamp), ("me", "* ")],
                [(nick_attr_name, nick), ("me", " "), *body_markup(m), *decorations(m)],
            )
        return self._text(
            [(time_attr, stamp), (nick_attr_name, nick), ("time", "> ")],
            [*body_markup(m), *decorations(m)],
        )


class DaySeparator(urwid.Text):
    def __init__(self, timestamp: float):
        day = time.strftime("%A %d %B %Y", time.localtime(timestamp))
        super().__init__(("info", f"─── {day} ───"), align="center")


def _day(timestamp: float) -> tuple:
    t = time.localtime(timestamp)
    return (t.tm_year, t.tm_yday)


class ChatView(urwid.WidgetWrap):
    """The messages of a conversation, newest at the bottom, older ones loaded on demand.

    When the top of the list is on screen and older messages may exist, ``on_need_history``
    is called (once at a time): the conversation loads a page and emits ``prepend``.
    """

    def __init__(
        self,
        conv: Conversation,
        options: RenderOptions,
        on_need_history: Callable[[Conversation], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ):
        self.conv = conv
        self.options = options
        self.on_need_history = on_need_history
        self.on_change = on_change or (lambda: None)
        self.top_marker = urwid.Text("", align="center")
        self.walker = urwid.SimpleFocusListWalker([self.top_marker])
        self.listbox = urwid.ListBox(self.walker)
        self._widgets: dict[int, MessageWidget] = {}
        self._update_marker()
        self._fill(conv.messages)
        super().__init__(self.listbox)
        self._handlers = [
            ("append", self._on_append),
            ("prepend", self._on_prepend),
            ("reset", self._on_reset),
            ("update", self._on_update),
            ("state", self._on_state),
        ]
        for event, handler in self._handlers:
            conv.events.on(event, handler)

    def detach(self) -> None:
        for event, handler in self._handlers:
            self.conv.events.off(event, handler)

    # ------------------------------------------------------------------ building

    def _make(self, message: Message) -> MessageWidget:
        widget = MessageWidget(message, self.options, self.conv.own_nick)
        self._widgets[id(message)] = widget
        return widget

    def _build(self, messages: list[Message], previous: Message | None) -> list[urwid.Widget]:
        out: list[urwid.Widget] = []
        for message in messages:
            if previous is not None and _day(previous.timestamp) != _day(message.timestamp):
                out.append(DaySeparator(message.timestamp))
            out.append(self._make(message))
            previous = message
        return out

    def _fill(self, messages: list[Message]) -> None:
        self._widgets.clear()
        self.walker[:] = [self.top_marker, *self._build(messages, None)]
        self.walker.set_focus(len(self.walker) - 1)

    def _update_marker(self) -> None:
        conv = self.conv
        if conv.loading:
            text = "… loading older messages …"
        elif conv.history_complete:
            text = (
                "── beginning of the conversation ──" if conv.messages else "── no messages yet ──"
            )
        else:
            text = "↑ PgUp: older messages"
        self.top_marker.set_text(("info", text))

    @property
    def at_bottom(self) -> bool:
        return self.walker.focus >= len(self.walker) - 1

    # ------------------------------------------------------------------ model events

    def _on_append(self, message: Message) -> None:
        follow = self.at_bottom
        messages = self.conv.messages
        if messages and messages[-1] is message:
            last = messages[-2] if len(messages) >= 2 else None
        else:
            last = messages[-1] if messages else None
        self.walker.extend(self._build([message], last))
        if follow:
            self.walker.set_focus(len(self.walker) - 1)
        self.on_change()

    def _on_prepend(self, messages: list[Message]) -> None:
        focus_widget = self.walker[self.walker.focus] if len(self.walker) > 1 else None
        rest = self.conv.messages[len(messages) :]
        widgets = self._build(messages, None)
        if rest and _day(messages[-1].timestamp) != _day(rest[0].timestamp):
            widgets.append(DaySeparator(rest[0].timestamp))
        self.walker[1:1] = widgets
        if focus_widget is not None and focus_widget is not self.top_marker:
            self.walker.set_focus(self.walker.index(focus_widget))
        else:
            # the message that was at the top goes to the bottom: the loaded page shows above
            self.listbox.set_focus(min(len(widgets) + 1, len(self.walker) - 1), coming_from="below")
        self._update_marker()
        self.on_change()

    def _on_reset(self) -> None:
        self._fill(self.conv.messages)
        self._update_marker()
        self.on_change()

    def _on_update(self, message: Message) -> None:
        widget = self._widgets.get(id(message))
        if widget is not None and widget.refresh():
            self.on_change()

    def _on_state(self) -> None:
        self._update_marker()
        self.on_change()

    # ------------------------------------------------------------------ scrolling

    def scroll(self, size, key: str) -> None:
        if key == "scroll_top":
            self.walker.set_focus(0)
        elif key == "scroll_bottom":
            self.walker.set_focus(len(self.walker) - 1)
        else:
            self.listbox.keypress(size, "page up" if key == "scroll_up" else "page down")

    def render(self, size, focus=False):
        canvas = super().render(size, focus)
        conv = self.conv
        if (
            self.on_need_history is not None
            and not conv.history_complete
            and not conv.loading
            and "top" in self.listbox.ends_visible(size)
        ):
            self.on_need_history(conv)
        return canvas

    def text_lines(self, size) -> list[str]:
        """The rendered text (for tests)."""
        return [line.decode("utf-8") for line in self.render(size).text]


# ----------------------------------------------------------------------------- contacts


class RowsWalker(urwid.ListWalker):
    """Rows of one or several contact lists, widgets made only when shown."""

    def __init__(self, options: RenderOptions):
        self.options = options
        self.lists: list[ContactList] = []
        self.rows: list[tuple[ContactList, Row | None]] = []
        self.focus = 0
        self._versions: tuple = ()
        self._filled = False
        #: the view should show the rows above the focus (set at the first fill)
        self.place_focus = False
        self._cache: dict[tuple, tuple[tuple, urwid.Widget]] = {}

    def set_lists(self, lists: list[ContactList]) -> None:
        self.lists = list(lists)
        self._versions = ()
        self.sync()

    def sync(self) -> bool:
        """Re-read the models if they changed; True if they did."""
        versions = tuple((id(cl), cl.version) for cl in self.lists)
        if versions == self._versions:
            return False
        focused = self.focused_row()
        key = None if focused is None else (focused[0].profile, focused[1] and focused[1].key)
        rows: list[tuple[ContactList, Row | None]] = []
        several = len(self.lists) > 1
        for cl in self.lists:
            if several:
                rows.append((cl, None))
            rows.extend((cl, row) for row in cl.rows())
        self.rows = rows
        first_fill = not self._filled and bool(rows)
        self._filled = self._filled or bool(rows)
        self._versions = versions
        if key is not None and not first_fill:
            for index, (cl, row) in enumerate(rows):
                if cl.profile == key[0] and (row.key if row else None) == key[1]:
                    self.focus = index
                    break
        elif first_fill:
            # first fill: focus the first contact or room, not a header (shown above it)
            self.focus = next(
                (i for i, (_cl, r) in enumerate(rows) if r is not None and r.kind != "header"), 0
            )
            self.place_focus = True
        self.focus = max(0, min(self.focus, len(rows) - 1))
        if len(self._cache) > 4 * max(64, len(rows)):
            self._cache.clear()
        self._modified()
        return True

    def focused_row(self) -> tuple[ContactList, Row | None] | None:
        if 0 <= self.focus < len(self.rows):
            return self.rows[self.focus]
        return None

    # ListWalker interface
    def __getitem__(self, position: int) -> urwid.Widget:
        if not isinstance(position, int) or not 0 <= position < len(self.rows):
            raise IndexError(position)
        cl, row = self.rows[position]
        return self._widget(cl, row)

    def __len__(self) -> int:
        return len(self.rows)

    def __length_hint__(self) -> int:
        return len(self.rows)

    def next_position(self, position: int) -> int:
        if position + 1 >= len(self.rows):
            raise IndexError(position)
        return position + 1

    def prev_position(self, position: int) -> int:
        if position <= 0:
            raise IndexError(position)
        return position - 1

    def set_focus(self, position: int) -> None:
        if not 0 <= position < len(self.rows):
            raise IndexError(position)
        self.focus = position
        self._modified()

    def positions(self, reverse: bool = False):
        return range(len(self.rows) - 1, -1, -1) if reverse else range(len(self.rows))

    # widgets
    def _widget(self, cl: ContactList, row: Row | None) -> urwid.Widget:
        if row is None:
            stamp: tuple = ("profile", cl.profile, len(cl))
            key = (cl.profile, "profile", "")
        elif row.kind == "header":
            stamp = ("header", row.count, row.online, row.key in cl.collapsed)
            key = (cl.profile, "header", row.key)
        elif row.kind == "room":
            room: Room = row.item
            stamp = ("room", room.display_name, room.unread, room.mentions, len(room.occupants))
            key = (cl.profile, "room", row.key)
        else:
            c: Contact = row.item
            stamp = (
                "contact",
                c.display_name,
                c.show,
                c.unread,
                c.chat_state,
                c.blocked,
                c.in_roster,
            )
            key = (cl.profile, "contact", row.key)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        widget = urwid.AttrMap(
            SelectableText(self._markup(cl, row), wrap="ellipsis"), None, FOCUS_MAP
        )
        self._cache[key] = (stamp, widget)
        return widget

    @staticmethod
    def _markup(cl: ContactList, row: Row | None) -> list:
        if row is None:
            return [("bar_strong", f" {cl.profile} ")]
        if row.kind == "header":
            arrow = "▸" if row.key in cl.collapsed else "▾"
            return [("header", f"{arrow} {row.key} "), ("time", f"{row.online}/{row.count}")]
        if row.kind == "room":
            room: Room = row.item
            markup: list = [("room", "# "), ("room", room.display_name)]
            if room.unread:
                markup.append(("unread", f" {room.unread}{'!' if room.mentions else ''} "))
            return markup
        contact: Contact = row.item
        show = contact.show
        markup = [(f"show_{show}", PRESENCE_CHARS.get(show, "●") + " ")]
        name_attr = "blocked" if contact.blocked else ("contact" if contact.online else "offline")
        markup.append((name_attr, contact.display_name))
        state = CHAT_STATE_CHARS.get(contact.chat_state)
        if state:
            markup.append(("show_", " " + state))
        if contact.unread:
            markup.append(("unread", f" {contact.unread} "))
        return markup


class ContactsView(urwid.WidgetWrap):
    """Contact lists of the open profiles, with a room section; Enter opens a chat.

    :meth:`sync` (called before each draw) re-reads the models when their version changed.
    """

    def __init__(
        self,
        options: RenderOptions,
        keymap: KeyMap,
        on_open: Callable[[str, str, str], None] | None = None,
    ):
        self.keymap = keymap
        self.on_open = on_open or (lambda profile, kind, jid: None)
        self.walker = RowsWalker(options)
        self.listbox = urwid.ListBox(self.walker)
        super().__init__(urwid.AttrMap(self.listbox, "default"))

    def set_lists(self, lists: list[ContactList]) -> None:
        self.walker.set_lists(lists)
        self._invalidate()

    def sync(self) -> None:
        was_empty = not self.walker.rows
        if self.walker.sync() and was_empty != (not self.walker.rows):
            self._invalidate()

    def render(self, size, focus=False):
        walker = self.walker
        walker.sync()
        if not walker.rows:
            return urwid.Filler(urwid.Text(("time", "no contacts"), align="center"), "top").render(
                size, focus
            )
        if walker.place_focus:
            walker.place_focus = False
            self.listbox.change_focus(
                size, walker.focus, offset_inset=min(walker.focus, size[1] - 1)
            )
        return super().render(size, focus)

    def keypress(self, size, key):
        self.walker.sync()
        action = self.keymap.action(key, "list")
        focused = self.walker.focused_row()
        if key == "enter" and focused is not None:
            cl, row = focused
            if row is not None and row.kind in ("contact", "room"):
                self.on_open(cl.profile, row.kind, row.key)
                return None
            if row is not None and row.kind == "header":
                cl.toggle_group(row.key)
                return None
        if action == "toggle_group" and focused is not None and focused[1] is not None:
            cl, row = focused
            if row.kind == "header":
                cl.toggle_group(row.key)
                return None
        return super().keypress(size, key)

    def mouse_event(self, size, event, button, col, row, focus):
        handled = super().mouse_event(size, event, button, col, row, focus)
        if event == "mouse press" and button == 1:
            focused = self.walker.focused_row()
            if focused is not None and focused[1] is not None:
                cl, r = focused
                if r.kind in ("contact", "room"):
                    self.on_open(cl.profile, r.kind, r.key)
                elif r.kind == "header":
                    cl.toggle_group(r.key)
            return True
        return handled


class OccupantsView(urwid.WidgetWrap):
    """Nicks of a room's occupants, moderators first, XEP-0392 colours (:meth:`sync` before draws)."""

    def __init__(self, room_getter: Callable[[], Room | None], options: RenderOptions):
        self.room_getter = room_getter
        self.options = options
        self.walker = urwid.SimpleListWalker([])
        self._stamp: tuple | None = None
        super().__init__(urwid.ListBox(self.walker))

    def sync(self) -> None:
        room = self.room_getter()
        occupants = list(room.occupants.values()) if room else []
        stamp = tuple((o.nick, o.role, o.affiliation, o.show) for o in occupants)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        order = {"moderator": 0, "participant": 1, "visitor": 2, "none": 3}
        occupants.sort(key=lambda o: (order.get(o.role, 3), o.nick.casefold()))
        rows = [urwid.Text(("header", f"{len(occupants)} here"), wrap="ellipsis")]
        for o in occupants:
            prefix = AFFILIATION_PREFIX.get(o.affiliation) or ROLE_PREFIX.get(o.role, "")
            attr = nick_attr(o.nick, self.options.cvd, self.options.nick_colours)
            show = PRESENCE_CHARS.get(o.show or "", "●")
            rows.append(
                urwid.Text(
                    [(f"show_{o.show or ''}", show), ("time", prefix or " "), (attr, o.nick)],
                    wrap="ellipsis",
                )
            )
        self.walker[:] = rows

    def render(self, size, focus=False):
        self.sync()
        return super().render(size, focus)


# ----------------------------------------------------------------------------- bars


@dataclass
class Tab:
    number: int
    title: str
    unread: int = 0
    mention: bool = False
    active: bool = False


class TabBar(urwid.Widget):
    """One line of numbered windows; the current one highlighted, activity marked."""

    #: drawn from the models at each render (urwid must not reuse an old canvas)
    no_cache = ["render"]

    _sizing = frozenset([urwid.Sizing.FLOW])

    def __init__(self, tabs_getter: Callable[[], list[Tab]]):
        super().__init__()
        self.tabs_getter = tabs_getter

    def rows(self, size, focus=False):
        return 1

    def markup(self, width: int) -> list:
        tabs = self.tabs_getter()
        pieces = []
        for tab in tabs:
            label = f" {tab.number}:{tab.title}"
            if tab.unread:
                label += f"({tab.unread})"
            label += " "
            attr = (
                "tab_active"
                if tab.active
                else "tab_mention"
                if tab.mention
                else "tab_activity"
                if tab.unread
                else "tab"
            )
            pieces.append((attr, label, urwid.calc_width(label, 0, len(label))))
        # drop tabs on the left until the active one fits
        active = next((i for i, t in enumerate(tabs) if t.active), 0)
        start = 0
        while start < active and sum(p[2] for p in pieces[start : active + 1]) + 1 > width:
            start += 1
        out: list = [("tab", "«")] if start else []
        out.extend((attr, label) for attr, label, _w in pieces[start:])
        return out or [("tab", "")]

    def render(self, size, focus=False):
        (maxcol,) = size
        text = urwid.Text(self.markup(maxcol), wrap="clip")
        canvas = urwid.AttrMap(text, "tab").render((maxcol,))
        return canvas


class StatusBar(urwid.Widget):
    """Profiles and presence, windows with activity, notification counter, last message."""

    #: drawn from the models at each render (urwid must not reuse an old canvas)
    no_cache = ["render"]

    _sizing = frozenset([urwid.Sizing.FLOW])

    def __init__(self, markup_getter: Callable[[int], list]):
        super().__init__()
        self.markup_getter = markup_getter

    def rows(self, size, focus=False):
        return 1

    def render(self, size, focus=False):
        (maxcol,) = size
        text = urwid.Text(self.markup_getter(maxcol) or "", wrap="clip")
        return urwid.AttrMap(text, "status").render((maxcol,))


class ProgressPanel(urwid.WidgetWrap):
    """Progress bars of long jobs (hidden when none)."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.pile = urwid.Pile([])
        self._stamp: tuple | None = None
        super().__init__(self.pile)

    def sync(self) -> bool:
        jobs = self.tracker.active()
        stamp = tuple((j.id, j.position, j.size, j.state) for j in jobs)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        items = []
        for job in jobs[-3:]:
            fraction = job.fraction
            label = urwid.Text(("time", f"{job.label[:20]} "), wrap="clip")
            if job.state == "error":
                bar: urwid.Widget = urwid.Text(("error", f"failed: {job.error}"), wrap="clip")
            elif fraction is None:
                bar = urwid.Text(("info", f"{job.position} bytes…"), wrap="clip")
            else:
                bar = urwid.ProgressBar("progress_normal", "progress_complete", fraction * 100, 100)
            items.append((urwid.Columns([(22, label), bar]), ("pack", None)))
        self.pile.contents = items
        return True

    @property
    def empty(self) -> bool:
        return not self.pile.contents


# ----------------------------------------------------------------------------- input


class InputLine(urwid.Edit):
    """The input line: Enter sends, Alt+Enter adds a line, Tab completes, Up/Down recall.

    Bracketed paste is honoured: a pasted text with new lines stays one message.
    """

    def __init__(
        self,
        keymap: KeyMap,
        completer: Completer,
        on_submit: Callable[[str], None],
        on_typing: Callable[[], None] | None = None,
        on_action: Callable[[str], bool] | None = None,
    ):
        super().__init__(("prompt", "> "), "", multiline=True)
        # readline keys: Ctrl+A/E, Ctrl+U/K, Ctrl+W, Alt+B/F, Ctrl+D, Ctrl+Y, Ctrl+_ (undo)
        self._command_map = urwid.command_map.copy()
        self._command_map.bind_readline()
        self.keymap = keymap
        self.completer = completer
        self.history = InputHistory()
        self.on_submit = on_submit
        self.on_typing = on_typing or (lambda: None)
        self.on_action = on_action or (lambda action: False)
        self._pasting = False

    def set_prompt(self, text: str) -> None:
        self.set_caption(("prompt", text))

    def _on_first_line(self) -> bool:
        return "\n" not in self.edit_text[: self.edit_pos]

    def _on_last_line(self) -> bool:
        return "\n" not in self.edit_text[self.edit_pos :]

    def keypress(self, size, key):
        if key == "begin paste":
            self._pasting = True
            return None
        if key == "end paste":
            self._pasting = False
            return None
        if self._pasting and key == "enter":
            self.insert_text("\n")
            return None
        action = self.keymap.action(key, "input")
        if action != "complete":
            self.completer.reset()
        if action == "send":
            text = self.edit_text
            if not text.strip():
                return None
            self.history.add(text)
            self.set_edit_text("")
            self.on_submit(text)
            return None
        if action == "newline":
            self.insert_text("\n")
            return None
        if action == "complete":
            text, pos = self.completer.complete(self.edit_text, self.edit_pos)
            self.set_edit_text(text)
            self.set_edit_pos(pos)
            return None
        if action == "history_prev" and self._on_first_line():
            previous = self.history.previous(self.edit_text)
            if previous is not None:
                self.set_edit_text(previous)
                self.set_edit_pos(len(previous))
            return None
        if action == "history_next" and self._on_last_line():
            nxt = self.history.next()
            if nxt is not None:
                self.set_edit_text(nxt)
                self.set_edit_pos(len(nxt))
            return None
        if action is not None and self.on_action(action):
            return None
        before = self.edit_text
        result = super().keypress(size, key)
        if result is None and self.edit_text != before and self.edit_text:
            self.on_typing()
        return result

    def set_text_and_end(self, text: str) -> None:
        self.set_edit_text(text)
        self.set_edit_pos(len(text))
