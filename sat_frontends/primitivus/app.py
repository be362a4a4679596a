"""The Primitivus application: screen layout, windows, keys, and the glue to the models.

Event loop
    The bridge client (:mod:`sat_frontends.bridge.dbus_client`) is asyncio code, so the UI
    runs on urwid's :class:`urwid.AsyncioEventLoop` wrapping the running asyncio loop: one
    loop, no thread, no Twisted in the frontend (the house plan names urwid's Twisted loop
    because the daemon is Twisted; a frontend only needs what its bridge client needs, and
    dbus-fast is asyncio). urwid redraws by itself after a key press or an alarm, not after
    a D-Bus signal: every model change coming from the network goes through
    :meth:`PrimitivusApp.request_redraw`, which schedules one ``draw_screen`` on the next loop
    iteration (bursts of signals, say a roster's presences at login, cost one draw per
    :attr:`PrimitivusApp.MIN_FRAME` seconds, not one per signal).

Layout (80×24 and up)::

    1:console 2:bob 3:#room(4)                      <- windows (Alt+number, Ctrl+N/P)
    ┌contacts──────┐│ title: name, presence / subject, typing
    │▾ Friends 1/2 ││ 12:01 bob> hello
    │● bob       2 ││ 12:02 me> *hi* ✓
    │· carol       ││
    [alice ● online] Act: 3 | 2 new | last notice    <- status bar
    > input line (grows with Alt+Enter)

Commands run by :class:`~sat_frontends.quick_frontend.commands.Commands`; this class is their
``ctx.ui``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

import urwid

from sat_frontends.bridge import errors as bridge_errors
from sat_frontends.primitivus.config import Config, config_files
from sat_frontends.primitivus.forms import FormWindow, QuestionWindow
from sat_frontends.primitivus.keys import KeyMap
from sat_frontends.primitivus.palette import PALETTE
from sat_frontends.primitivus.widgets import (
    PRESENCE_CHARS,
    ContactsView,
    InputLine,
    ProgressPanel,
    RenderOptions,
    StatusBar,
    Tab,
    TabBar,
)
from sat_frontends.primitivus.windows import (
    SHOW_NAMES,
    ChatWindow,
    HelpWindow,
    ProfileManager,
    SearchWindow,
    Window,
)
from sat_frontends.quick_frontend import jid as jidlib
from sat_frontends.quick_frontend.chat import CHAT, GROUP, PRIVATE, Conversation
from sat_frontends.quick_frontend.commands import Commands, Context
from sat_frontends.quick_frontend.completion import Completer
from sat_frontends.quick_frontend.forms import DataForm
from sat_frontends.quick_frontend.host import QuickApp
from sat_frontends.quick_frontend.questions import ANSWERED, Question

log = logging.getLogger(__name__)

__all__ = ["PrimitivusApp", "MainFrame"]

#: seconds without a key before "paused" is sent after "composing"
PAUSED_AFTER = 5.0


class MainFrame(urwid.Frame):
    """Tab bar, contacts + window, status + input; global keys are handled here first."""

    def __init__(self, app: PrimitivusApp, **kwargs):
        self.app = app
        super().__init__(**kwargs)

    def keypress(self, size, key):
        app = self.app
        if key in ("focus in", "focus out"):
            # the terminal reports whether it has the user's attention (focus reporting)
            app.qa.focused = key == "focus in"
            if app.qa.focused and app.window.conv is not None:
                app.qa.set_visible([app.window.conv])
            return None
        if isinstance(key, str):
            action = app.keymap.action(key)
            if action is not None and app.global_action(action, size):
                return None
            if key == "esc" and app.escape():
                return None
        result = super().keypress(size, key)
        if (
            result is not None
            and self.focus_position == "body"
            and isinstance(result, str)
            and len(result) == 1
            and result.isprintable()
        ):
            # typing while in the contact list goes to the input line
            app.focus_input()
            return app.input.keypress((max(1, size[0]),), result)
        return result

    def mouse_event(self, size, event, button, col, row, focus):
        if row == 0 and event == "mouse press" and button == 1:
            number = self.app.tabbar.tab_at(col)
            if number is not None:
                self.app.switch_window(number)
                return True
        handled = super().mouse_event(size, event, button, col, row, focus)
        if event == "mouse press" and button == 1 and self.focus_position == "body":
            body = self.app.columns
            if body.focus_position != 0:
                self.app.focus_input()
        return handled


class ClickableTabBar(TabBar):
    def __init__(self, tabs_getter):
        super().__init__(tabs_getter)
        self._extents: list[tuple[int, int, int]] = []

    def markup(self, width):
        out = super().markup(width)
        extents = []
        col = 0
        tabs = {f" {t.number}:": t.number for t in self.tabs_getter()}
        for item in out:
            label = item[1] if isinstance(item, tuple) else item
            w = urwid.calc_width(label, 0, len(label))
            for prefix, number in tabs.items():
                if label.startswith(prefix):
                    extents.append((col, col + w, number))
            col += w
        self._extents = extents
        return out

    def tab_at(self, col: int) -> int | None:
        for start, end, number in self._extents:
            if start <= col < end:
                return number
        return None


class PrimitivusApp:
    #: the screen is redrawn at most this often under a flood of signals (seconds); a draw
    #: after a quiet moment happens at once (on the next loop iteration)
    MIN_FRAME = 1 / 60
    #: seconds a notice stays in the status bar
    NOTICE_TIME = 8.0

    def __init__(self, bridge, config: Config | None = None, config_file: str | None = None):
        self.bridge = bridge
        self.config = config or Config()
        self.config_file = config_file
        self.keymap = KeyMap(self.config.keys)
        self.qa = QuickApp(bridge, history_page=self.config.history_page)
        self.qa.send_markers = self.config.markers
        self.commands = Commands()
        self.options = RenderOptions(
            self.config.timestamp_format, self.config.nick_colours, self.config.cvd
        )
        self.windows: list[Window] = []
        self.current = 0
        self.current_profile: str | None = None
        self.loop: urwid.MainLoop | None = None
        self.show_contacts = self.config.show_contacts
        self._redraw_pending = False
        self._last_draw = 0.0
        self._draw_cost = 0.0
        self._notice: tuple[str, str, float] = ("", "info", 0.0)
        self._quit: asyncio.Future | None = None
        self._typing: dict[tuple[str, str], str] = {}
        self._typing_timer: asyncio.TimerHandle | None = None
        self._ticker: asyncio.TimerHandle | None = None
        #: called after each network-triggered draw (benchmarks, tests)
        self.draw_hooks: list[Callable[[], None]] = []

        # widgets
        self.console_window = ChatWindow(
            self, self.qa.console, self.options, self._need_history, self.request_redraw
        )
        self.windows.append(self.console_window)
        self.tabbar = ClickableTabBar(self._tabs)
        self.contacts = ContactsView(self.options, self.keymap, self._open_from_contacts)
        self.body = urwid.WidgetPlaceholder(self.console_window)
        self.columns = urwid.Columns([])
        self._layout_columns()
        self.progress = ProgressPanel(self.qa.progress)
        self.status = StatusBar(self._status_markup)
        self.completer = Completer(self._candidates, self.commands.arg_kinds())
        self.input = InputLine(
            self.keymap, self.completer, self._submit, self._on_typing, self._input_action
        )
        self.footer = urwid.Pile([self.status, self.input])
        self.frame = MainFrame(
            self, body=self.columns, header=self.tabbar, footer=self.footer, focus_part="footer"
        )
        self.manager = ProfileManager(self)
        self.top = urwid.WidgetPlaceholder(self.manager)

        events = self.qa.events
        events.on("conversation_new", self._on_conversation_new)
        events.on("message", lambda conv, message: self.request_redraw())
        events.on("contacts", lambda session: self.request_redraw())
        events.on("session_new", self._on_sessions)
        events.on("session_closed", self._on_sessions)
        events.on("session_ready", self._on_session_ready)
        events.on("connection", lambda session: self.request_redraw())
        events.on("info", self._on_info)
        events.on("action", self._on_question)
        events.on("action_done", self._on_question_done)
        events.on("daemon", self._on_daemon)
        self.qa.notifications.events.on("new", self._on_notification)
        self.qa.notifications.events.on("changed", self.request_redraw)
        self.qa.progress.events.on("changed", self._on_progress)
        for warning in self.keymap.warnings + self.config.warnings:
            self.qa.info(warning, "warning")

    # ------------------------------------------------------------------ layout

    def _layout_columns(self) -> None:
        items = []
        if self.show_contacts:
            items.append((self.contacts, self.columns.options("given", self.config.contacts_width)))
            items.append(
                (urwid.AttrMap(urwid.SolidFill("│"), "time"), self.columns.options("given", 1))
            )
        items.append((self.body, self.columns.options()))
        self.columns.contents = items
        self.columns.focus_position = len(items) - 1

    @property
    def window(self) -> Window:
        return self.windows[self.current]

    def _tabs(self) -> list[Tab]:
        return [
            Tab(i + 1, w.title, w.unread, w.mention, i == self.current)
            for i, w in enumerate(self.windows)
        ]

    def _status_markup(self, width: int) -> list:
        markup: list = []
        if not self.qa.daemon_available:
            markup.append(("status_error", "[daemon disconnected] "))
        for session in self.qa.sessions.values():
            if session.connected:
                show = session.show
                markup.append(("status", f"[{session.profile} "))
                markup.append(("status", PRESENCE_CHARS.get(show, "●") + " "))
                markup.append(("status", SHOW_NAMES.get(show, show) + "] "))
            elif session.reconnecting:
                markup.append(("status_alert", f"[{session.profile}: reconnecting…] "))
            else:
                markup.append(("status_alert", f"[{session.profile}: offline] "))
        if not self.qa.sessions:
            markup.append(("status", "[not logged in: F4] "))
        active = [
            f"{i + 1}{'!' if w.mention else ''}"
            for i, w in enumerate(self.windows)
            if w.unread and i != self.current
        ]
        if active:
            markup.append(("status_alert", "Act: " + ",".join(active) + " "))
        questions = len(self.qa.pending_questions())
        if questions:
            plural = "s" if questions > 1 else ""
            markup.append(("status_alert", f"? {questions} question{plural} (/questions) "))
        total = self.qa.notifications.total
        if total:
            markup.append(("status_alert", f"| {total} new "))
        text, level, since = self._notice
        if text and time.monotonic() - since < self.NOTICE_TIME:
            attr = "status_error" if level == "error" else "status"
            markup.append((attr, "| " + text.replace("\n", " ")))
        return markup

    # ------------------------------------------------------------------ redraw

    def request_redraw(self, *args) -> None:
        """Draw the screen soon (network callbacks do not trigger urwid's own redraw)."""
        if self.loop is None or self._redraw_pending:
            return
        self._redraw_pending = True
        loop = asyncio.get_event_loop()
        # under a flood (draws back to back) keep drawing to at most half of the time,
        # and at most MIN_FRAME apart; otherwise draw on the next iteration
        since = time.monotonic() - self._last_draw
        wait = min(self.MIN_FRAME, self._draw_cost) - since if since < self.MIN_FRAME else 0
        if wait > 0:
            loop.call_later(wait, self._redraw)
        else:
            loop.call_soon(self._redraw)

    def _redraw(self) -> None:
        self._redraw_pending = False
        if self.loop is None:
            return
        start = time.monotonic()
        try:
            if self.loop.screen.started:
                self.before_draw()
                self.loop.draw_screen()
        except Exception:
            log.exception("drawing failed")
        self._last_draw = time.monotonic()
        self._draw_cost = self._last_draw - start
        for hook in list(self.draw_hooks):
            hook()

    def before_draw(self) -> None:
        """Bring the widgets drawn from the models up to date (urwid reuses cached canvases)."""
        self.contacts.sync()
        window = self.window
        if isinstance(window, ChatWindow):
            window.sync()

    # ------------------------------------------------------------------ windows

    def window_for(self, conv: Conversation) -> ChatWindow | None:
        for window in self.windows:
            if isinstance(window, ChatWindow) and window.conv is conv:
                return window
        return None

    def add_window(self, window: Window, focus: bool = True) -> None:
        self.windows.append(window)
        if focus:
            self.switch_window(len(self.windows))
        self.request_redraw()

    def switch_window(self, number: int) -> None:
        """Go to window ``number`` (1-based, as shown)."""
        if not 1 <= number <= len(self.windows):
            self.notice(f"no window {number}")
            return
        self.current = number - 1
        window = self.window
        self.body.original_widget = window
        conv = window.conv
        if conv is not None and conv.kind != "console":
            self.current_profile = conv.profile
        self.qa.set_visible([conv] if conv is not None else [])
        self.input.set_prompt(window.prompt())
        if isinstance(window, FormWindow | QuestionWindow):
            # their buttons and fields take the keys
            self.focus_window()
        elif self.frame.focus_position == "body" and self.columns.focus_position != 0:
            self.focus_input()
        self.request_redraw()

    def close_window(self, window: Window | None = None) -> None:
        window = window or self.window
        if window is self.console_window:
            self.notice("the console stays open (Ctrl+Q quits)")
            return
        index = self.windows.index(window)
        conv = window.conv
        if conv is not None and conv.kind == GROUP:
            session = self.qa.sessions.get(conv.profile)
            if session is not None and conv.jid in session.contacts.rooms:
                self.qa.spawn(self.qa.leave(conv), f"leaving {conv.jid}")
        if conv is not None:
            self.qa.close_conversation(conv)
        window.close()
        current = self.window
        del self.windows[index]
        if window is current:
            self.switch_window(min(index, len(self.windows) - 1) + 1 if index else 1)
        else:
            # a window in the background: the one on screen stays
            self.current = self.windows.index(current)
            self.request_redraw()

    def open_conversation(self, conv: Conversation) -> None:
        window = self.window_for(conv)
        if window is None:
            window = self._make_chat_window(conv)
            self.windows.append(window)
        self.switch_window(self.windows.index(window) + 1)
        self.focus_input()

    def _make_chat_window(self, conv: Conversation) -> ChatWindow:
        return ChatWindow(self, conv, self.options, self._need_history, self.request_redraw)

    def _on_conversation_new(self, conv: Conversation, by_user: bool) -> None:
        if self.window_for(conv) is None:
            self.windows.append(self._make_chat_window(conv))
        self.request_redraw()

    def _need_history(self, conv: Conversation) -> None:
        if conv.loading or conv.history_complete:
            return
        self.qa.spawn(self.qa.load_history(conv), "loading history")

    def focus_input(self) -> None:
        self.frame.focus_position = "footer"
        self.footer.focus_position = len(self.footer.contents) - 1

    def focus_contacts(self) -> None:
        if not self.show_contacts:
            self.show_contacts = True
            self._layout_columns()
        self.frame.focus_position = "body"
        self.columns.focus_position = 0

    def focus_window(self) -> None:
        """Give the keys to the current window (help, search results: arrows, Enter)."""
        self.frame.focus_position = "body"
        self.columns.focus_position = len(self.columns.contents) - 1

    def escape(self) -> bool:
        if isinstance(self.window, FormWindow):
            self.window.cancel()
            return True
        if isinstance(self.window, HelpWindow | SearchWindow):
            self.close_window()
            self.focus_input()
            return True
        if self.frame.focus_position == "body":
            self.focus_input()
            return True
        return False

    def _open_from_contacts(self, profile: str, kind: str, jid: str) -> None:
        if profile not in self.qa.sessions:
            return
        conv = self.qa.conversation(profile, jid, GROUP if kind == "room" else None)
        self.open_conversation(conv)

    # ------------------------------------------------------------------ actions

    def body_size(self, size) -> tuple[int, int]:
        maxcol, maxrow = size
        rows = maxrow - 1 - self.footer.rows((maxcol,))
        cols = maxcol - (self.config.contacts_width + 1 if self.show_contacts else 0)
        return max(1, cols), max(1, rows)

    def global_action(self, action: str, size) -> bool:
        if action == "help":
            self.show_help(None)
        elif action == "quit":
            self.quit()
        elif action == "next_window":
            self.switch_window((self.current + 1) % len(self.windows) + 1)
        elif action == "prev_window":
            self.switch_window((self.current - 1) % len(self.windows) + 1)
        elif action == "next_active":
            self.next_active()
        elif action == "close_window":
            self.close_window()
        elif action.startswith("window_"):
            self.switch_window(int(action.split("_")[1]))
        elif action == "toggle_contacts":
            self.show_contacts = not self.show_contacts
            self._layout_columns()
            if not self.show_contacts:
                self.focus_input()
        elif action == "focus_contacts":
            if self.frame.focus_position == "body":
                self.focus_input()
            else:
                self.focus_contacts()
        elif action == "profiles":
            self.show_profiles()
        elif action == "toggle_offline":
            show = not self.config.show_offline
            self.config.show_offline = show
            for session in self.qa.sessions.values():
                session.contacts.set_show_offline(show)
            self.notice("offline contacts " + ("shown" if show else "hidden"))
        elif action == "toggle_occupants":
            if isinstance(self.window, ChatWindow):
                self.window.toggle_occupants(self.body_size(size)[0])
        elif action == "search":
            self.input.set_text_and_end("/search ")
            self.focus_input()
        elif action.startswith("scroll_"):
            self.window.scroll(self.body_size(size), action)
        elif action == "redraw":
            if self.loop is not None:
                self.loop.screen.clear()
        else:
            return False
        return True

    def next_active(self) -> None:
        order = self.windows[self.current + 1 :] + self.windows[: self.current + 1]
        mentioned = [w for w in order if w.mention and w.unread]
        candidates = mentioned or [w for w in order if w.unread]
        if candidates:
            self.switch_window(self.windows.index(candidates[0]) + 1)
        else:
            self.notice("no unread messages")

    def _input_action(self, action: str) -> bool:
        if action == "edit_last":
            self._submit("/correct")  # puts the last message in the input line
            return True
        return False

    def notice(self, text: str, level: str = "info") -> None:
        self._notice = (text, level, time.monotonic())
        self.request_redraw()

    # ------------------------------------------------------------------ input

    def _submit(self, text: str) -> None:
        window = self.window
        if Commands.is_command(text):
            self.qa.spawn(self._run_command(text), "")
            return
        if text.startswith("//"):
            text = text[1:]
        conv = window.conv
        if conv is None or conv.kind == "console":
            self.notice(
                "this window is not a conversation: open a contact (F3) or /msg jid", "error"
            )
            return
        self._typing.pop((conv.profile, conv.jid), None)
        self.qa.spawn(self._send(conv, text), "")

    async def _send(self, conv: Conversation, text: str) -> None:
        try:
            await self.qa.send(conv, text)
        except Exception as e:
            message = getattr(e, "message", None) or str(e)
            conv.add_info(f"not sent: {message}").extra["level"] = "error"
            self.request_redraw()

    def command_context(self) -> Context:
        conv = self.window.conv
        if conv is not None and conv.kind == "console":
            conv = None
        profile = conv.profile if conv is not None else self.current_profile
        return Context(self.qa, conv, profile, self)

    async def _run_command(self, line: str) -> None:
        ctx = self.command_context()
        window = self.window
        await self.commands.run(line, ctx)
        target = window.conv if window in self.windows and window.conv is not None else None
        for text, level in ctx.output:
            if target is not None:
                target.add_info(text).extra["level"] = level
            else:
                self.qa.console.add_info(text).extra["level"] = level
            if level == "error":
                self.notice(text, "error")
        self.request_redraw()

    def _on_typing(self) -> None:
        if not self.config.chat_states:
            return
        conv = self.window.conv
        if conv is None or conv.kind not in (CHAT, PRIVATE, GROUP):
            return
        key = (conv.profile, conv.jid)
        if self.input.edit_text.startswith("/"):
            return
        if self._typing.get(key) != "composing":
            self._typing[key] = "composing"
            self.qa.spawn(self.qa.send_chat_state(conv, "composing"), "")
        if self._typing_timer is not None:
            self._typing_timer.cancel()
        self._typing_timer = asyncio.get_event_loop().call_later(PAUSED_AFTER, self._paused, conv)

    def _paused(self, conv: Conversation) -> None:
        key = (conv.profile, conv.jid)
        if self._typing.get(key) == "composing":
            self._typing[key] = "paused"
            self.qa.spawn(self.qa.send_chat_state(conv, "paused"), "")

    def _candidates(self, kind: str) -> list[str]:
        conv = self.window.conv
        profile = (
            conv.profile if conv is not None and conv.kind != "console" else self.current_profile
        )
        session = self.qa.sessions.get(profile) if profile else None
        if kind == "command":
            names = set(self.commands.names())
            for command in self.commands.commands.values():
                names.update(command.aliases)
            return sorted(names)
        if kind == "profile":
            return sorted(self.qa.sessions)
        if kind == "room":
            return sorted(session.contacts.rooms) if session else []
        if kind == "jid":
            if session is None:
                return []
            return sorted(session.contacts.contacts, key=str.casefold)
        # nicks
        if conv is None or session is None:
            return []
        if conv.kind == GROUP:
            room = session.contacts.rooms.get(conv.jid)
            recent: list[str] = []
            for message in reversed(conv.messages[-200:]):
                if message.nick and not message.outgoing and message.nick not in recent:
                    recent.append(message.nick)
            others = room.nicks() if room else []
            names = [n for n in recent if not room or n in room.occupants] + others
            return [n for n in names if n != conv.own_nick]
        if conv.kind == PRIVATE:
            return [jidlib.resource(conv.jid)]
        contact = session.contacts.get(conv.jid)
        return [contact.display_name] if contact else [jidlib.node(conv.jid)]

    # ------------------------------------------------------------------ CommandUI

    def show_help(self, topic: str | None) -> None:
        files = [str(p) for p in config_files(self.config_file)]
        info = [
            "Options: section [primitivus], key bindings: section [primitivus_keys] "
            "(action = key, key…), in these files (later ones win):",
            *(f"  {p}" for p in files),
            "  and environment variables SAT_PRIMITIVUS_<OPTION>. See doc/primitivus.md.",
            "Read: " + (", ".join(self.config.sources) or "none (defaults)"),
        ]
        topic_lines = self.commands.help_lines(topic) if topic else None
        for window in self.windows:
            if isinstance(window, HelpWindow):
                self.close_window(window)
                break
        window = HelpWindow(self.keymap, self.commands.help_lines(), info, topic_lines)
        self.add_window(window)
        self.focus_window()

    def show_search(self, profile: str, query: str, results: list, scope: str) -> None:
        window = SearchWindow(self, profile, query, results, scope, self.options, self._open_jid)
        self.add_window(window)
        self.focus_window()

    def show_form(self, title: str, form: DataForm, on_submit, conv=None) -> None:
        """Edit ``form`` in a window (``/config``); see :class:`FormWindow`."""
        for window in self.windows:
            if isinstance(window, FormWindow) and conv is not None and window.conv_origin is conv:
                self.close_window(window)
                break
        tab = "config:" + (f"#{jidlib.node(conv.jid)}" if conv is not None else "form")
        window = FormWindow(self, title, form, on_submit, conv, tab)
        self.add_window(window)
        self.focus_window()

    def form_done(self, window: FormWindow, result: str | None) -> None:
        """A form was saved (``result``: what to tell) or cancelled (None)."""
        origin = window.conv_origin
        if window in self.windows:
            self.close_window(window)
        text = result if result is not None else "not saved"
        if origin is not None:
            origin.add_info(text)
            back = self.window_for(origin)
            if back is not None:
                self.switch_window(self.windows.index(back) + 1)
        else:
            self.qa.info(text)
        self.focus_input()
        self.notice(text)

    # ------------------------------------------------------------------ questions

    def _question_window(self, question: Question) -> QuestionWindow | None:
        for window in self.windows:
            if isinstance(window, QuestionWindow) and window.question is question:
                return window
        return None

    def _on_question(self, session, question: Question) -> None:
        # a tab that does not take the keys: the user answers when they want
        if self._question_window(question) is None:
            self.windows.append(QuestionWindow(self, question))
        number = len(self.windows)
        self.notice(f"the daemon asks: {question.text} (window {number}, Alt+A)", "warning")
        self._tick()

    def _on_question_done(self, question: Question) -> None:
        window = self._question_window(question)
        if question.state == ANSWERED:
            text = f"{question.text}: answered “{question.label_of(question.answer)}”"
        else:
            text = f"{question.text}: {question.status_text()}"
        self.qa.info(f"[{question.profile}] {text}")
        self.notice(text, "info" if question.state == ANSWERED else "warning")
        if window is None:
            return
        if window is self.window and question.state != ANSWERED:
            window.done()  # the user sees it: marked expired, closed by them
            self.focus_window()
        else:
            self.close_window(window)
        self.request_redraw()

    def show_questions(self, profile: str | None = None) -> None:
        first = None
        for question in self.qa.pending_questions(profile):
            window = self._question_window(question)
            if window is None:
                window = QuestionWindow(self, question)
                self.windows.append(window)
            first = first or window
        if first is not None:
            self.switch_window(self.windows.index(first) + 1)

    def answer_question(self, question: Question, answer: str) -> None:
        self.qa.spawn(self._answer(question, answer), "answering the daemon")

    async def _answer(self, question: Question, answer: str) -> None:
        if not await self.qa.answer_question(question, answer):
            self.notice("this question is no longer asked (answered elsewhere or expired)")

    def _tick(self) -> None:
        """Redraw every second while a question counts down on screen."""
        if self._ticker is not None or self.loop is None:
            return
        if not any(isinstance(w, QuestionWindow) and w.question.pending for w in self.windows):
            return

        def tick():
            self._ticker = None
            if isinstance(self.window, QuestionWindow):
                self.request_redraw()
            self._tick()

        self._ticker = asyncio.get_event_loop().call_later(1.0, tick)

    # ------------------------------------------------------------------ daemon

    def _on_daemon(self, available: bool) -> None:
        if available:
            self.notice("the daemon is back")
            if self.top.original_widget is self.manager:
                self.qa.spawn(self._show_manager(), "profiles")
        self._on_sessions(None)

    def _open_jid(self, profile: str, jid: str) -> None:
        if profile in self.qa.sessions and jid:
            self.open_conversation(self.qa.conversation(profile, jid))

    def clear_window(self) -> None:
        conv = self.window.conv
        if conv is not None:
            conv.clear()
            conv.history_complete = True
            self.request_redraw()

    def set_input(self, text: str) -> None:
        self.input.set_text_and_end(text)
        self.focus_input()

    def show_profiles(self) -> None:
        self.qa.spawn(self._show_manager(), "profiles")

    def quit(self) -> None:
        if self._quit is not None and not self._quit.done():
            self._quit.set_result(None)

    # ------------------------------------------------------------------ profiles

    async def _show_manager(self) -> None:
        profiles = await self.qa.profiles_list()
        default = self.current_profile or await self.qa.profile_default()
        self.manager.set_profiles(profiles, set(self.qa.sessions), default)
        self.top.original_widget = self.manager
        self.request_redraw()

    def close_profile_manager(self) -> None:
        if self.qa.sessions:
            self.top.original_widget = self.frame
            self.request_redraw()
        else:
            self.manager.say("log in with a profile first (or Ctrl+Q to quit)", "warning")
            self.request_redraw()

    def login_from_manager(self, name: str, password: str) -> None:
        self.qa.spawn(self.login(name, password), "")

    async def login(self, name: str, password: str = "") -> bool:
        manager = self.manager
        manager.busy = True
        manager.say(f"connecting {name}…")
        self.request_redraw()
        try:
            session = await self.qa.login(name, password)
        except bridge_errors.PermissionDenied:
            manager.say(
                f"{name} is protected: type its password in “Profile password”, then Enter on "
                "the profile again",
                "warning",
            )
            manager.pile.focus_position = 4
            return False
        except bridge_errors.BridgeError as e:
            manager.say(f"{name}: {e.message or e.name} ({e.name})", "error")
            return False
        except Exception as e:
            log.exception("login failed")
            manager.say(f"{name}: {e}", "error")
            return False
        finally:
            manager.busy = False
            self.request_redraw()
        manager.say("")
        manager.password.edit.set_edit_text("")
        self.current_profile = name
        self.qa.info(f"logged in as {name} ({session.jid})")
        self.top.original_widget = self.frame
        if not any(isinstance(w, ChatWindow) and w.conv.kind != "console" for w in self.windows):
            self.qa.info("↑↓ and Enter in the contact list open a chat; Esc comes back here")
            self.focus_contacts()
        else:
            self.focus_input()
        self.request_redraw()
        return True

    def create_from_manager(self, name, jid, password, profile_password, options) -> None:
        self.qa.spawn(self._create(name, jid, password, profile_password, options), "")

    async def _create(self, name, jid, password, profile_password, options) -> None:
        try:
            await self.qa.profile_create(name, jid, password, profile_password, options)
        except bridge_errors.BridgeError as e:
            self.manager.say(f"not created: {e.message or e.name}", "error")
            self.request_redraw()
            return
        self.manager.say(f"profile {name} created: logging in…")
        await self._show_manager()
        await self.login(name, profile_password)

    def _on_sessions(self, session) -> None:
        self.contacts.set_lists([s.contacts for s in self.qa.sessions.values()])
        for s in self.qa.sessions.values():
            s.contacts.set_show_offline(self.config.show_offline)
        self.request_redraw()

    def _on_session_ready(self, session) -> None:
        self.contacts.walker.sync()
        self.request_redraw()

    def _on_info(self, text: str, level: str) -> None:
        if level in ("warning", "error"):
            self.notice(text, level)
        self.request_redraw()

    def _on_notification(self, notification) -> None:
        if self.config.bell and self.loop is not None:
            try:
                self.loop.screen.write("\a")
                self.loop.screen.flush()
            except Exception:
                pass
        self.request_redraw()

    def _on_progress(self, job) -> None:
        if self.progress.sync():
            contents = [(self.status, ("pack", None)), (self.input, ("pack", None))]
            if not self.progress.empty:
                contents.insert(0, (self.progress, ("pack", None)))
            focus_input = self.frame.focus_position == "footer"
            self.footer.contents = contents
            self.footer.focus_position = len(contents) - 1
            if focus_input:
                self.focus_input()
            if job.ended is not None:
                asyncio.get_event_loop().call_later(
                    self.qa.progress.LINGER + 0.1, lambda: self._on_progress(job)
                )
        self.request_redraw()

    # ------------------------------------------------------------------ running

    def make_loop(self, screen=None) -> urwid.MainLoop:
        event_loop = urwid.AsyncioEventLoop(loop=asyncio.get_event_loop())
        # registered before the main loop's own idle callback (which draws): runs first
        event_loop.enter_idle(self.before_draw)
        self.loop = urwid.MainLoop(
            self.top,
            palette=PALETTE,
            screen=screen,
            event_loop=event_loop,
            handle_mouse=self.config.mouse,
            unhandled_input=self._unhandled,
        )
        return self.loop

    def _unhandled(self, key) -> bool:
        return False

    async def run(
        self, profile: str | None = None, profile_password: str = "", screen=None
    ) -> None:
        """Show the UI until the user quits (profiles stay connected in the daemon)."""
        self._quit = asyncio.get_running_loop().create_future()
        await self.qa.start()
        loop = self.make_loop(screen)
        loop.start()
        _free_ctrl_q(loop.screen)
        aio = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                aio.add_signal_handler(sig, self.quit)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        previous_handler = aio.get_exception_handler()

        def on_error(loop, context):
            # the terminal went away (closed input without SIGHUP): quit instead of lingering
            if isinstance(context.get("exception"), urwid.display.common.InputClosedError):
                log.info("terminal input closed: quitting")
                self.quit()
                return
            if previous_handler is not None:
                previous_handler(loop, context)
            else:
                loop.default_exception_handler(context)

        aio.set_exception_handler(on_error)
        try:
            await self._show_manager()
            profile = profile or self.config.profile
            if profile:
                await self.login(profile, profile_password)
            self.request_redraw()
            await self._quit
        finally:
            aio.set_exception_handler(previous_handler)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                try:
                    aio.remove_signal_handler(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
            await self.qa.stop()
            try:
                loop.stop()
            finally:
                self.loop = None


def _free_ctrl_q(screen) -> None:
    """Turn off XON/XOFF flow control so that Ctrl+Q and Ctrl+S reach the application.

    The screen saved the terminal's settings before starting and restores them when it stops.
    """
    try:
        import termios

        fd = screen._term_input_file.fileno()
        attrs = termios.tcgetattr(fd)
        attrs[0] &= ~termios.IXON
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except Exception as e:  # not a terminal, or another platform
        log.debug("flow control left as is: %s", e)
