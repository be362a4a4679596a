"""Key bindings: actions, their default keys, and the user's overrides.

Every binding is an *action* with one or more keys in urwid's key names (``ctrl n``,
``meta 1`` for Alt+1, ``f1``, ``page up``, ``meta enter``...). The user changes them in the
``[primitivus_keys]`` section of ``sat.conf`` (see :mod:`.config` and ``doc/primitivus.md``)::

    [primitivus_keys]
    next_window = ctrl n, meta right
    help = f1, meta h

Keys are written as urwid names; ``alt``/``M-`` are accepted for ``meta`` and ``C-`` for
``ctrl``. ``/help`` and F1 list the bindings in effect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Action", "ACTIONS", "KeyMap", "normalise_key"]


@dataclass(frozen=True)
class Action:
    name: str
    keys: tuple[str, ...]
    help: str
    #: global (anywhere), input (the input line has focus), list (a list has focus)
    scope: str = "global"


ACTIONS: tuple[Action, ...] = (
    Action("help", ("f1",), "show the help (commands and key bindings)"),
    Action("quit", ("ctrl q",), "quit Primitivus (the daemon keeps your profiles connected)"),
    Action("next_window", ("ctrl n", "meta right"), "next window"),
    Action("prev_window", ("ctrl p", "meta left"), "previous window"),
    Action("next_active", ("meta a",), "go to the next window with unread messages"),
    Action("close_window", ("meta w",), "close the current window (leaves a room: /part)"),
    *(Action(f"window_{n}", (f"meta {n % 10}",), f"go to window {n}") for n in range(1, 11)),
    Action("toggle_contacts", ("f2",), "show or hide the contact list"),
    Action("focus_contacts", ("f3", "meta c"), "move to the contact list (Esc comes back)"),
    Action("profiles", ("f4",), "profile manager: log in another profile, create one"),
    Action("toggle_offline", ("f5",), "show or hide offline contacts"),
    Action("toggle_occupants", ("f6",), "show or hide the occupants of a room"),
    Action("search", ("ctrl f",), "search the history (types /search)"),
    Action("scroll_up", ("page up",), "scroll the conversation up (loads older messages)"),
    Action("scroll_down", ("page down",), "scroll the conversation down"),
    Action("scroll_top", ("meta home",), "go to the oldest loaded message"),
    Action("scroll_bottom", ("meta end",), "go to the newest message"),
    Action("redraw", ("ctrl l",), "redraw the screen"),
    Action("send", ("enter",), "send the message / run the command", "input"),
    Action("newline", ("meta enter",), "insert a new line (multi-line message)", "input"),
    Action("complete", ("tab",), "complete a nick, a command or a JID", "input"),
    Action("history_prev", ("up",), "previous input (in a one-line input)", "input"),
    Action("history_next", ("down",), "next input", "input"),
    Action("edit_last", ("meta up",), "correct your last message (types /correct)", "input"),
    Action("cancel", ("esc",), "back to the input line / close a view", "list"),
    Action("toggle_group", ("space",), "fold or unfold a group", "list"),
)

_ALIASES = {
    "pgup": "page up",
    "pageup": "page up",
    "pgdn": "page down",
    "pagedown": "page down",
    "return": "enter",
    "escape": "esc",
    "del": "delete",
    "bs": "backspace",
}


def normalise_key(text: str) -> str:
    """A key name as urwid spells it: ``Alt+n`` -> ``meta n``, ``C-x`` -> ``ctrl x``."""
    key = text.strip()
    if not key:
        raise ValueError("empty key")
    mods: set[str] = set()
    # emacs-like prefixes: C-x, M-x, C-M-x
    while re.match(r"^[CMAS]-.", key):
        mods.add({"C": "ctrl", "M": "meta", "A": "meta", "S": "shift"}[key[0]])
        key = key[2:]
    parts = [p for p in re.split(r"[ +]", key) if p] if len(key) > 1 else [key]
    names = {"alt": "meta", "meta": "meta", "ctrl": "ctrl", "control": "ctrl", "shift": "shift"}
    while len(parts) > 1 and parts[0].lower() in names:
        mods.add(names[parts.pop(0).lower()])
    last = " ".join(parts)
    if len(last) > 1:
        last = _ALIASES.get(last.lower(), last.lower())
    elif "shift" in mods and last.isalpha():
        mods.discard("shift")
        last = last.upper()
    elif mods:
        # terminals send Ctrl+N and Alt+N as lower case (shift is spelt explicitly)
        last = last.lower()
    order = {"shift": 0, "meta": 1, "ctrl": 2}
    return " ".join([*sorted(mods, key=order.__getitem__), last])


class KeyMap:
    def __init__(self, overrides: dict[str, list[str]] | None = None):
        self.actions = {a.name: a for a in ACTIONS}
        self.bindings: dict[str, list[str]] = {a.name: list(a.keys) for a in ACTIONS}
        #: problems found in the user's configuration (shown in the console)
        self.warnings: list[str] = []
        for name, keys in (overrides or {}).items():
            if name not in self.actions:
                self.warnings.append(f"[primitivus_keys] {name}: unknown action, ignored")
                continue
            try:
                self.bindings[name] = [normalise_key(k) for k in keys if k.strip()]
            except ValueError as e:
                self.warnings.append(f"[primitivus_keys] {name}: {e}")
        self._by_key: dict[tuple[str, str], str] = {}
        for name, keys in self.bindings.items():
            scope = self.actions[name].scope
            for key in keys:
                clash = self._by_key.get((scope, key))
                if clash is not None and clash != name:
                    self.warnings.append(
                        f"[primitivus_keys] {key!r} is bound to both {clash} and {name}; "
                        f"{name} wins"
                    )
                self._by_key[(scope, key)] = name

    def action(self, key: str, scope: str = "global") -> str | None:
        if not isinstance(key, str):
            return None
        return self._by_key.get((scope, key))

    def keys(self, action: str) -> list[str]:
        return self.bindings.get(action, [])

    def first(self, action: str) -> str:
        keys = self.keys(action)
        return keys[0] if keys else ""

    def describe(self) -> list[tuple[str, str, str]]:
        """(keys, action, help) for every action, for the help screen."""
        out = []
        for action in ACTIONS:
            if action.name.startswith("window_") and action.name != "window_1":
                continue
            keys = self.bindings[action.name]
            label = ", ".join(_pretty(k) for k in keys) or "(unbound)"
            help_text = action.help
            if action.name == "window_1":
                label = "Alt+1…Alt+0"
                help_text = "go to window 1…10"
            out.append((label, action.name, help_text))
        return out


def _pretty(key: str) -> str:
    parts = key.split(" ")
    names = {"meta": "Alt", "ctrl": "Ctrl", "shift": "Shift"}
    mods = [names.get(p, p) for p in parts if p in names]
    rest = " ".join(p for p in parts if p not in names)
    rest = (
        rest.upper()
        if re.fullmatch(r"f\d+", rest)
        else rest.title()
        if len(rest) > 1
        else rest.upper()
    )
    return "+".join([*mods, rest])
