"""Colours and text attributes (urwid palette), with XEP-0392 nick colours.

Each entry works on monochrome, 16 and 256-colour terminals (urwid picks the high-colour
spec when the terminal has 256 colours). Nick colours are palette entries ``nick16`` to
``nick231``, one per colour of the 256-colour cube: :func:`nick_attr` maps a nick to its
XEP-0392 colour (hue from SHA-1, HSLuv, nearest cube hue) and, on 16-colour terminals, to a
basic colour of the same hue.
"""

from __future__ import annotations

import functools
import itertools

from sat_frontends.quick_frontend import nick_colours

__all__ = ["PALETTE", "nick_attr", "style_attr", "palette", "INLINE_STYLES"]

# (name, fg 16, bg 16, mono, fg 256, bg 256)
BASE = [
    ("default", "default", "default"),
    ("bar", "light gray", "dark blue", "standout"),
    ("bar_strong", "white,bold", "dark blue", "standout,bold"),
    ("tab", "light gray", "dark blue", "standout"),
    ("tab_active", "black,bold", "light gray", "bold"),
    ("tab_activity", "white,bold", "dark blue", "standout,bold"),
    ("tab_mention", "yellow,bold", "dark blue", "standout,bold,underline"),
    ("status", "light gray", "dark blue", "standout"),
    ("status_alert", "yellow,bold", "dark blue", "standout,bold"),
    ("status_error", "light red,bold", "dark blue", "standout,bold"),
    ("title", "white,bold", "dark gray", "standout,bold"),
    ("title_dim", "light gray", "dark gray", "standout"),
    ("time", "dark gray", "default", ""),
    ("info", "dark cyan", "default", ""),
    ("error", "light red", "default", "bold"),
    ("warning", "yellow", "default", "bold"),
    ("nick_own", "white,bold", "default", "bold"),
    ("nick_plain", "default,bold", "default", "bold"),
    ("me", "light magenta", "default", ""),
    ("mention", "yellow,bold", "default", "bold,underline"),
    ("edited", "dark gray", "default", ""),
    ("retracted", "dark gray,italics", "default", ""),
    ("receipt", "dark green", "default", ""),
    ("receipt_read", "light green", "default", "bold"),
    ("receipt_error", "light red,bold", "default", "bold"),
    ("reaction", "light gray", "dark gray", "standout"),
    ("directive", "dark gray", "default", ""),
    ("header", "yellow,bold", "default", "bold"),
    ("contact", "default", "default", ""),
    ("contact_focus", "black", "light gray", "standout"),
    ("show_", "light green", "default", ""),
    ("show_chat", "light green,bold", "default", "bold"),
    ("show_away", "yellow", "default", ""),
    ("show_xa", "brown", "default", ""),
    ("show_dnd", "light red", "default", ""),
    ("show_unavailable", "dark gray", "default", ""),
    ("offline", "dark gray", "default", ""),
    ("unread", "white,bold", "dark red", "standout,bold"),
    ("room", "light cyan", "default", ""),
    ("blocked", "dark red", "default", "underline"),
    ("typing", "light green", "dark gray", "standout"),
    ("input", "default", "default", ""),
    ("prompt", "light cyan,bold", "default", "bold"),
    ("progress_normal", "white", "dark gray", "standout"),
    ("progress_complete", "black", "dark green", "bold"),
    ("progress_smooth", "dark green", "dark gray", ""),
    ("search_match", "black", "yellow", "standout"),
    ("focus", "black", "light gray", "standout"),
    ("button", "white", "dark blue", "standout"),
    ("button_focus", "black,bold", "light gray", "bold"),
    ("field", "white", "dark gray", "underline"),
    ("field_focus", "black", "light gray", "standout"),
    ("help_key", "light cyan,bold", "default", "bold"),
]

#: inline XEP-0393 styles that combine (pre and pre_block do not: nothing styles inside them)
INLINE_STYLES = ("strong", "emphasis", "strike", "quote")
_STYLE_SPEC = {
    "strong": "bold",
    "emphasis": "italics",
    "strike": "strikethrough",
}


def _style_entries() -> list[tuple]:
    entries = [
        ("sty_pre", "light cyan", "default", "", "h152", "default"),
        ("sty_quote_pre", "dark green", "default", "", "h108", "default"),
    ]
    for n in range(1, len(INLINE_STYLES) + 1):
        for combo in itertools.combinations(INLINE_STYLES, n):
            fg = "dark green" if "quote" in combo else "default"
            fg256 = "h108" if "quote" in combo else "default"
            mods = [_STYLE_SPEC[s] for s in combo if s in _STYLE_SPEC]
            spec = ",".join([fg, *mods])
            spec256 = ",".join([fg256, *mods])
            mono = ",".join(m for m in mods if m) or ""
            entries.append(("sty_" + "+".join(combo), spec, "default", mono, spec256, "default"))
    return entries


def _nick_entries() -> list[tuple]:
    entries = []
    for index in range(16, 232):
        r, g, b = nick_colours.xterm_cube_rgb(index)
        hue = nick_colours.rgb_to_hsluv(r, g, b)[0]
        basic = "light red"
        for limit, name in nick_colours.BASIC_BY_HUE:
            if hue < limit:
                basic = name
                break
        entries.append(
            (f"nick{index}", f"{basic},bold", "default", "bold", f"h{index},bold", "default")
        )
    return entries


def palette() -> list[tuple]:
    return list(BASE) + _style_entries() + _nick_entries()


PALETTE = palette()


@functools.lru_cache(maxsize=8192)
def nick_attr(nick: str, cvd: str = "none", enabled: bool = True) -> str:
    """Palette entry for ``nick`` (XEP-0392 colour)."""
    if not enabled or not nick:
        return "nick_plain"
    return f"nick{nick_colours.xterm_index(nick, cvd)}"


@functools.lru_cache(maxsize=64)
def style_attr(styles: frozenset) -> str:
    """Palette entry for a set of XEP-0393 styles."""
    if not styles:
        return "default"
    if "pre" in styles or "pre_block" in styles:
        return "sty_quote_pre" if "quote" in styles else "sty_pre"
    inline = [s for s in INLINE_STYLES if s in styles]
    return "sty_" + "+".join(inline) if inline else "default"
