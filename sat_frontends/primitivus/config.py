"""Primitivus options, read from the same ``sat.conf`` files as the daemon.

Files, later ones winning: ``/etc/sat/sat.conf``, ``$XDG_CONFIG_HOME/sat/sat.conf`` (by default
``~/.config/sat/sat.conf``), then the file given with ``--config``; environment variables
``SAT_PRIMITIVUS_<OPTION>`` override them. Two sections are read (the daemon ignores them):

``[primitivus]``
    see :data:`OPTIONS` (name, type, default, meaning);
``[primitivus_keys]``
    ``action = key, key…`` (see :mod:`.keys` for the actions).

The frontend does not import the daemon's configuration module (a frontend never imports
``sat``); it reads the same INI files with :mod:`configparser`.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Config", "OPTIONS", "load", "config_files"]

#: name -> (type, default, help)
OPTIONS: dict[str, tuple[type, object, str]] = {
    "profile": (str, "", "profile to log in at start (empty: show the profile manager)"),
    "mouse": (bool, False, "use the mouse (click a contact or a tab, wheel to scroll)"),
    "contacts_width": (int, 24, "width of the contact list, in columns"),
    "show_contacts": (bool, True, "show the contact list at start (F2 toggles it)"),
    "show_offline": (bool, True, "list offline contacts (F5 toggles it)"),
    "occupants_width": (int, 16, "width of a room's occupant list"),
    "show_occupants": (
        str,
        "auto",
        "room occupants list: auto (when the conversation is ≥72 columns wide), yes, no",
    ),
    "bell": (bool, True, "ring the terminal bell for a private message or a mention"),
    "nick_colours": (bool, True, "colour nicks (XEP-0392)"),
    "cvd": (str, "none", "colour vision deficiency correction: none, redgreen or blue"),
    "timestamp_format": (str, "%H:%M", "strftime format of message times"),
    "history_page": (int, 50, "messages loaded at a time when scrolling back"),
    "chat_states": (bool, True, "tell contacts when you are typing (XEP-0085)"),
    "markers": (bool, True, "tell contacts you read their messages (XEP-0333)"),
}

_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


@dataclass
class Config:
    profile: str = ""
    mouse: bool = False
    contacts_width: int = 24
    show_contacts: bool = True
    show_offline: bool = True
    occupants_width: int = 16
    show_occupants: str = "auto"
    bell: bool = True
    nick_colours: bool = True
    cvd: str = "none"
    timestamp_format: str = "%H:%M"
    history_page: int = 50
    chat_states: bool = True
    markers: bool = True
    keys: dict[str, list[str]] = field(default_factory=dict)
    #: files read, in order
    sources: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def config_files(extra: str | os.PathLike | None = None, env=None) -> list[Path]:
    env = os.environ if env is None else env
    xdg = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    files = [Path("/etc/sat/sat.conf"), Path(xdg) / "sat" / "sat.conf"]
    if extra:
        files.append(Path(extra))
    return files


def _convert(name: str, kind: type, raw: str):
    text = raw.strip()
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"expected yes/no, got {raw!r}")
    if kind is int:
        return int(text)
    return text


def load(extra: str | os.PathLike | None = None, env=None) -> Config:
    env = os.environ if env is None else env
    config = Config()
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00none")
    for path in config_files(extra, env):
        if not path.is_file():
            if extra and path == Path(extra):
                config.warnings.append(f"{path}: no such file")
            continue
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f, str(path))
            config.sources.append(str(path))
        except (OSError, configparser.Error) as e:
            config.warnings.append(f"{path}: {e}")
    values: dict[str, tuple[str, str]] = {}
    if parser.has_section("primitivus"):
        for name, raw in parser.items("primitivus"):
            values[name] = (raw, "[primitivus] " + name)
    for name in OPTIONS:
        var = f"SAT_PRIMITIVUS_{name.upper()}"
        if var in env:
            values[name] = (env[var], var)
    for name, (raw, where) in values.items():
        if name not in OPTIONS:
            config.warnings.append(f"{where}: unknown option, ignored")
            continue
        kind = OPTIONS[name][0]
        try:
            setattr(config, name, _convert(name, kind, raw))
        except ValueError as e:
            config.warnings.append(f"{where}: {e}; default kept")
    if config.cvd not in ("none", "redgreen", "blue"):
        config.warnings.append(f"[primitivus] cvd: {config.cvd!r} is not none/redgreen/blue")
        config.cvd = "none"
    if config.show_occupants not in ("auto", "yes", "no"):
        config.show_occupants = "auto"
    config.contacts_width = max(10, min(60, config.contacts_width))
    config.history_page = max(10, min(500, config.history_page))
    if parser.has_section("primitivus_keys"):
        for action, raw in parser.items("primitivus_keys"):
            config.keys[action] = [k for k in raw.split(",") if k.strip()]
    return config
