"""Primitivus windows (the numbered tabs) and full-screen views.

- :class:`ChatWindow`: a conversation (1:1, room, private) or the console; a title line
  (name, presence or subject, who is typing) above the messages, and the occupants of a room
  on the right when there is room for them;
- :class:`SearchWindow`: results of a history search;
- :class:`HelpWindow`: key bindings, commands, where the configuration lives;
- :class:`ProfileManager`: choose a profile and log in, or create one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import urwid

from sat_frontends.primitivus.keys import KeyMap
from sat_frontends.primitivus.palette import nick_attr
from sat_frontends.primitivus.widgets import (
    PRESENCE_CHARS,
    ChatView,
    OccupantsView,
    RenderOptions,
    SelectableText,
)
from sat_frontends.quick_frontend import jid as jidlib
from sat_frontends.quick_frontend.chat import CHAT, GROUP, PRIVATE, Conversation

__all__ = ["Window", "ChatWindow", "SearchWindow", "HelpWindow", "ProfileManager"]

#: a room shows its occupants (show_occupants = auto) from this conversation width on: a
#: 100-column terminal with the contact list, or 80 columns without it
AUTO_OCCUPANTS_WIDTH = 72

SHOW_NAMES = {
    "": "online",
    "chat": "free for chat",
    "away": "away",
    "xa": "not available",
    "dnd": "do not disturb",
    "unavailable": "offline",
}


class Window(urwid.WidgetWrap):
    """A numbered window of the tab bar."""

    kind = "window"
    conv: Conversation | None = None

    @property
    def title(self) -> str:
        return self.kind

    @property
    def unread(self) -> int:
        return 0

    @property
    def mention(self) -> bool:
        return False

    def scroll(self, size, action: str) -> None:
        pass

    def close(self) -> None:
        pass

    def prompt(self) -> str:
        return "> "


class ChatWindow(Window):
    kind = "chat"

    def __init__(
        self,
        app,
        conv: Conversation,
        options: RenderOptions,
        on_need_history: Callable[[Conversation], None],
        on_change: Callable[[], None],
    ):
        self.app = app
        self.conv = conv
        self.options = options
        self.view = ChatView(conv, options, on_need_history, on_change)
        self.header = urwid.Text("", wrap="ellipsis")
        self.show_occupants: bool | None = None  # None: automatic (terminal width)
        self.occupants = OccupantsView(self._room, options)
        self.columns = urwid.Columns([self.view])
        self._occupants_shown = False
        self._header_markup: list | None = None
        body = urwid.Frame(self.columns, header=urwid.AttrMap(self.header, "title"))
        super().__init__(body)

    def _room(self):
        session = self.app.qa.sessions.get(self.conv.profile)
        return session.contacts.rooms.get(self.conv.jid) if session else None

    @property
    def title(self) -> str:
        if self.conv.kind == "console":
            return "console"
        title = self.conv.title
        if self.conv.kind == GROUP:
            title = "#" + title
        if len(self.app.qa.sessions) > 1:
            title = f"{self.conv.profile}:{title}"
        return title

    @property
    def unread(self) -> int:
        return self.conv.unread

    @property
    def mention(self) -> bool:
        return bool(self.conv.mentions) or (self.conv.kind != GROUP and self.conv.unread > 0)

    def prompt(self) -> str:
        conv = self.conv
        if conv.kind == GROUP:
            return f"{conv.own_nick or '?'}> "
        if conv.kind == "console":
            return "/> "
        return "> "

    def header_markup(self) -> list:
        conv = self.conv
        if conv.kind == "console":
            return [("title", " Console "), ("title_dim", "  /help for commands, F1 for keys")]
        session = self.app.qa.sessions.get(conv.profile)
        markup: list = []
        if conv.kind == GROUP:
            room = self._room()
            markup.append(("title", f" #{jidlib.node(conv.jid)} "))
            if room is None:
                markup.append(("title_dim", "(not joined) "))
            else:
                markup.append(("title_dim", f"[{len(room.occupants)}] "))
            if conv.subject:
                markup.append(("title_dim", conv.subject.replace("\n", " ")))
            typing = [n for n, s in conv.occupant_states.items() if s == "composing"]
            if typing:
                markup.append(("typing", f"  {', '.join(typing[:3])} typing…"))
        else:
            contact = session.contacts.get(conv.jid) if session and conv.kind == CHAT else None
            markup.append(("title", f" {conv.title} "))
            if conv.kind == CHAT:
                markup.append(("title_dim", f"<{conv.jid}> "))
            if contact is not None:
                show = contact.show
                status = contact.status
                markup.append(("title_dim", SHOW_NAMES.get(show, show)))
                if status:
                    markup.append(("title_dim", f": {status.splitlines()[0]}"))
                if contact.blocked:
                    markup.append(("title_dim", " [blocked]"))
            state = conv.chat_state
            if state == "composing":
                markup.append(("typing", "  typing…"))
            elif state == "paused":
                markup.append(("typing", "  stopped typing"))
        if session is not None and not session.connected:
            markup.append(("title_dim", "  (disconnected)"))
        return markup

    def _want_occupants(self, width: int) -> bool:
        if self.conv.kind != GROUP:
            return False
        if self.show_occupants is not None:
            return self.show_occupants
        setting = self.app.config.show_occupants
        if setting == "yes":
            return True
        if setting == "no":
            return False
        return width >= AUTO_OCCUPANTS_WIDTH

    def toggle_occupants(self, width: int) -> None:
        self.show_occupants = not self._want_occupants(width)
        self._invalidate()

    def sync(self) -> None:
        """Follow the models (title line, occupants); called before each draw."""
        markup = self.header_markup()
        if markup != self._header_markup:
            self._header_markup = markup
            self.header.set_text(markup)
        if self._occupants_shown:
            self.occupants.sync()

    def render(self, size, focus=False):
        maxcol = size[0]
        want = self._want_occupants(maxcol)
        if want != self._occupants_shown:
            self._occupants_shown = want
            width = self.app.config.occupants_width
            if want:
                self.columns.contents = [
                    (self.view, self.columns.options()),
                    (
                        urwid.AttrMap(
                            urwid.LineBox(
                                self.occupants,
                                tlcorner="│",
                                tline="",
                                lline="│",
                                blcorner="│",
                                bline="",
                                trcorner="",
                                rline="",
                                brcorner="",
                            ),
                            "default",
                        ),
                        self.columns.options("given", width + 1),
                    ),
                ]
            else:
                self.columns.contents = [(self.view, self.columns.options())]
        self.sync()
        return super().render(size, focus)

    def scroll(self, size, action: str) -> None:
        maxcol, maxrow = size
        self.view.scroll((maxcol, max(1, maxrow - 1)), action)

    def close(self) -> None:
        self.view.detach()


class SearchWindow(Window):
    kind = "search"

    def __init__(
        self,
        app,
        profile: str,
        query: str,
        results: list,
        scope: str,
        options: RenderOptions,
        on_open: Callable[[str, str], None],
    ):
        self.app = app
        self.profile = profile
        self.query = query
        self.results = results
        self.options = options
        self.on_open = on_open
        header = urwid.Text(
            [
                ("title", f" Search: {query} "),
                (
                    "title_dim",
                    f"— {len(results)} result{'s' if len(results) != 1 else ''} in {scope}"
                    "  (Enter: open the conversation, Esc: close)",
                ),
            ],
            wrap="ellipsis",
        )
        rows = [self._row(r) for r in results] or [urwid.Text(("info", "nothing found"))]
        self.walker = urwid.SimpleFocusListWalker(rows)
        self.listbox = urwid.ListBox(self.walker)
        super().__init__(urwid.Frame(self.listbox, header=urwid.AttrMap(header, "title")))

    @property
    def title(self) -> str:
        return f"search:{self.query[:12]}"

    def _row(self, record: dict) -> urwid.Widget:
        stamp = time.strftime("%d/%m/%y %H:%M", time.localtime(record.get("timestamp", 0)))
        outgoing = record.get("outgoing")
        other = record.get("dest") if outgoing else record.get("source")
        if record.get("type") == "groupchat":
            who = record.get("source_resource") or "?"
            where = "#" + jidlib.node(record.get("source", ""))
        else:
            who = "me" if outgoing else jidlib.node(other or "") or other
            where = other or ""
        snippet = record.get("snippet") or record.get("body") or ""
        markup: list = [
            ("time", stamp + " "),
            ("room", where + " "),
            (nick_attr(who, self.options.cvd, self.options.nick_colours), who),
            ("time", "> "),
        ]
        for i, part in enumerate(re.split(r"\[([^\]]*)\]", snippet.replace("\n", " "))):
            if part:
                markup.append(("search_match" if i % 2 else "default", part))
        widget = urwid.AttrMap(
            SelectableText(markup), None, {None: "focus", "default": "focus", "time": "focus"}
        )
        widget.record = record
        return widget

    def keypress(self, size, key):
        if key == "enter" and self.results:
            widget = self.walker.get_focus()[0]
            record = getattr(widget, "record", None)
            if record is not None:
                if record.get("type") == "groupchat":
                    jid = record.get("source", "")
                else:
                    jid = record.get("dest") if record.get("outgoing") else record.get("source")
                self.on_open(self.profile, jid or "")
                return None
        return super().keypress(size, key)

    def scroll(self, size, action: str) -> None:
        key = {"scroll_up": "page up", "scroll_down": "page down"}.get(action)
        if key:
            self.listbox.keypress((size[0], max(1, size[1] - 1)), key)


class HelpWindow(Window):
    kind = "help"

    def __init__(
        self,
        keymap: KeyMap,
        command_lines: list[str],
        config_info: list[str],
        topic_lines: list[str] | None = None,
    ):
        lines: list = []
        if topic_lines:
            lines.extend(urwid.Text(line) for line in topic_lines)
            lines.append(urwid.Divider())
        lines.append(urwid.Text(("header", "Keys")))
        for keys, _action, text in keymap.describe():
            lines.append(urwid.Columns([(22, urwid.Text(("help_key", keys))), urwid.Text(text)]))
        lines.append(urwid.Divider())
        lines.append(urwid.Text(("header", "Commands")))
        lines.extend(urwid.Text(line) for line in command_lines)
        lines.append(urwid.Divider())
        lines.append(urwid.Text(("header", "Configuration")))
        lines.extend(urwid.Text(line) for line in config_info)
        self.walker = urwid.SimpleFocusListWalker(lines)
        self.listbox = urwid.ListBox(self.walker)
        header = urwid.Text(
            [("title", " Help "), ("title_dim", " PgUp/PgDn to scroll, Esc or Alt+W closes")]
        )
        super().__init__(urwid.Frame(self.listbox, header=urwid.AttrMap(header, "title")))

    @property
    def title(self) -> str:
        return "help"

    def scroll(self, size, action: str) -> None:
        key = {"scroll_up": "page up", "scroll_down": "page down"}.get(action)
        if key:
            self.listbox.keypress((size[0], max(1, size[1] - 1)), key)


# ----------------------------------------------------------------------------- profiles


class _Field(urwid.WidgetWrap):
    def __init__(self, label: str, mask: str | None = None, value: str = ""):
        self.edit = urwid.Edit("", value, mask=mask)
        super().__init__(
            urwid.Columns(
                [(18, urwid.Text(label)), urwid.AttrMap(self.edit, "field", "field_focus")]
            )
        )

    @property
    def value(self) -> str:
        return self.edit.edit_text.strip()


class ProfileManager(urwid.WidgetWrap):
    """Log in with a profile (Enter), or create one; works at 80×24."""

    def __init__(self, app):
        self.app = app
        self.message = urwid.Text("")
        self.password = _Field("Profile password", mask="*")
        self.profiles_walker = urwid.SimpleFocusListWalker([])
        self.profiles_box = urwid.BoxAdapter(urwid.ListBox(self.profiles_walker), 6)
        self.new_name = _Field("Profile name")
        self.new_jid = _Field("JID (user@server)")
        self.new_password = _Field("XMPP password", mask="*")
        self.new_profile_password = _Field("Profile password", mask="*")
        self.new_host = _Field("Server (optional)")
        self.new_port = _Field("Port (optional)")
        create = urwid.AttrMap(
            urwid.Button("Create the profile", self._create), "button", "button_focus"
        )
        cancel = urwid.AttrMap(
            urwid.Button("Back to the chats", self._back), "button", "button_focus"
        )
        self.back_button = cancel
        self.pile = urwid.Pile(
            [
                urwid.Text(("header", "Salut à Toi — Primitivus"), align="center"),
                urwid.Divider(),
                urwid.Text("Profiles (Enter logs in; a logged-in profile is marked ●):"),
                self.profiles_box,
                self.password,
                urwid.Divider(),
                urwid.Text("New profile, for an existing XMPP account:"),
                self.new_name,
                self.new_jid,
                self.new_password,
                self.new_profile_password,
                self.new_host,
                self.new_port,
                urwid.Columns([create, cancel], dividechars=2),
                urwid.Divider(),
                self.message,
            ]
        )
        body = urwid.Filler(urwid.Padding(self.pile, left=2, right=2), valign="top")
        super().__init__(urwid.AttrMap(body, "default"))
        self.busy = False

    def set_profiles(self, profiles: list[str], logged_in: set[str], default: str = "") -> None:
        rows = []
        for name in profiles:
            mark = "● " if name in logged_in else "  "
            button = urwid.Button(mark + name, self._login, name)
            rows.append(urwid.AttrMap(button, "button", "button_focus"))
        if not rows:
            rows.append(urwid.Text(("info", "  (none yet: create one below)")))
        self.profiles_walker[:] = rows
        if default in profiles:
            self.profiles_walker.set_focus(profiles.index(default))
        self.pile.focus_position = 3 if profiles else 7

    def say(self, text: str, level: str = "info") -> None:
        attr = {"error": "error", "warning": "warning"}.get(level, "info")
        self.message.set_text((attr, text))

    def _login(self, button, name: str) -> None:
        if self.busy:
            return
        self.app.login_from_manager(name, self.password.edit.edit_text)

    def _create(self, button) -> None:
        if self.busy:
            return
        options = {}
        if self.new_host.value:
            options["host"] = self.new_host.value
        if self.new_port.value:
            try:
                options["port"] = int(self.new_port.value)
            except ValueError:
                self.say("the port must be a number", "error")
                return
        if (
            not self.new_name.value
            or not self.new_jid.value
            or not self.new_password.edit.edit_text
        ):
            self.say("a profile needs a name, a JID and the account's password", "error")
            return
        self.app.create_from_manager(
            self.new_name.value,
            self.new_jid.value,
            self.new_password.edit.edit_text,
            self.new_profile_password.edit.edit_text,
            options,
        )

    def _back(self, button) -> None:
        self.app.close_profile_manager()

    def keypress(self, size, key):
        if key == "esc":
            self.app.close_profile_manager()
            return None
        if key == "tab":
            key = "down"
        elif key == "shift tab":
            key = "up"
        return super().keypress(size, key)


def presence_label(show: str) -> str:
    return PRESENCE_CHARS.get(show, "●") + " " + SHOW_NAMES.get(show, show)


__all__ += ["presence_label", "CHAT", "PRIVATE"]
