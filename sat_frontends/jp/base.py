"""The framework every ``jp`` command uses: exit codes, errors, output, the bridge context.

Kept light on purpose: importing this module costs almost nothing. The D-Bus client
(dbus-fast, asyncio) is only imported when a command actually talks to the daemon, and
``json`` only when something is printed as JSON.

A command is an ``async def handler(ctx: Context) -> int | None`` set on its argparse
sub-parser with ``parser.set_defaults(func=handler)``; it calls the daemon with
:meth:`Context.call`, prints with :meth:`Context.out`, and fails by raising
:class:`JpError` (or by letting a bridge error escape: :func:`error_to_exit` maps it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

# ---------------------------------------------------------------------------- exit codes


class Exit:
    """Exit codes of ``jp`` (stable: scripts rely on them)."""

    OK = 0
    ERROR = 1  # any other failure (daemon internal error, storage error...)
    USAGE = 2  # bad arguments (jp's own checks or the daemon's InvalidArgument)
    NOT_FOUND = 3  # no such profile, contact, message, parameter, entity...
    NOT_CONNECTED = 4  # the profile is not connected to its XMPP server
    TIMEOUT = 5  # nothing (or no answer) within the time limit
    UNREACHABLE = 6  # the D-Bus bus or the daemon cannot be reached
    PERMISSION = 7  # permission denied (e.g. wrong profile password)
    CONNECTION = 8  # the XMPP connection failed (authentication, host, refused, certificate)
    EXISTS = 9  # it already exists
    UNAVAILABLE = 10  # the daemon does not offer this feature (plugin not loaded, older daemon)
    INTERRUPTED = 130  # interrupted (Ctrl-C)


#: (code, label, meaning) in the order shown by ``jp --help`` and doc/jp.md
EXIT_CODES: tuple[tuple[int, str, str], ...] = (
    (Exit.OK, "ok", "success"),
    (Exit.ERROR, "error", "other failure (daemon internal error, storage error...)"),
    (Exit.USAGE, "bad arguments", "bad arguments or option values (jp's or the daemon's checks)"),
    (Exit.NOT_FOUND, "not found", "no such profile, contact, message, parameter, entity..."),
    (Exit.NOT_CONNECTED, "not connected", "the profile is not connected (jp profile connect)"),
    (Exit.TIMEOUT, "timeout", "no answer or nothing happened within --timeout"),
    (Exit.UNREACHABLE, "daemon unreachable", "the bus or the daemon cannot be reached"),
    (Exit.PERMISSION, "permission denied", "permission denied (e.g. wrong profile password)"),
    (Exit.CONNECTION, "connection failed", "XMPP connection failed (auth, host, certificate)"),
    (Exit.EXISTS, "already exists", "it already exists"),
    (Exit.UNAVAILABLE, "unavailable", "the daemon does not offer this (plugin not loaded?)"),
    (Exit.INTERRUPTED, "interrupted", "interrupted (Ctrl-C)"),
)
LABELS = {code: label for code, label, _ in EXIT_CODES}


def exit_codes_text() -> str:
    lines = ["exit codes:"]
    lines += [f"  {code:<4}{meaning}" for code, _, meaning in EXIT_CODES]
    return "\n".join(lines)


class JpError(Exception):
    """A failure to report on one line of stderr, with its exit code."""

    def __init__(self, code: int, message: str, label: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.label = label or LABELS.get(code, "error")


def one_line(text: str) -> str:
    """``text`` on a single line (a D-Bus message may hold newlines)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


#: errors the plugins name themselves (their D-Bus name does not tell their kind)
_NAMED_ERRORS = {
    "MucNickConflict": Exit.EXISTS,
    "MucPasswordRequired": Exit.PERMISSION,
    "MucBanned": Exit.PERMISSION,
    "MucMembersOnly": Exit.PERMISSION,
    "MucCreationRestricted": Exit.PERMISSION,
    "MucRoomNotFound": Exit.NOT_FOUND,
    "MucNotJoined": Exit.NOT_FOUND,
    "MucNickNotAcceptable": Exit.USAGE,
}


def error_to_exit(exc: BaseException) -> JpError:
    """Map a bridge error (sat_frontends.bridge.errors) or a JpError to a JpError."""
    if isinstance(exc, JpError):
        return exc
    from sat_frontends.bridge import errors as e

    message = getattr(exc, "message", "") or str(exc)
    name = getattr(exc, "name", type(exc).__name__)
    table: tuple[tuple[type, int], ...] = (
        (e.UnknownMethod, Exit.UNAVAILABLE),
        (e.NotFound, Exit.NOT_FOUND),
        (e.InvalidArgument, Exit.USAGE),
        (e.NotConnected, Exit.NOT_CONNECTED),
        (e.Timeout, Exit.TIMEOUT),
        (e.BridgeUnavailable, Exit.UNREACHABLE),
        (e.PermissionDenied, Exit.PERMISSION),
        (e.ConnectionFailed, Exit.CONNECTION),
        (e.AlreadyExists, Exit.EXISTS),
    )
    code = _NAMED_ERRORS.get(name)
    if code is not None:
        return JpError(code, message or name, f"{LABELS[code]} ({name})")
    for cls, code in table:
        if isinstance(exc, cls):
            label = LABELS[code]
            if code == Exit.NOT_CONNECTED:
                message = (message or name) + " (connect it first: jp profile connect -p PROFILE)"
            if code == Exit.CONNECTION and name != "ConnectionFailed":
                label = f"{label} ({name})"
            return JpError(code, message or name, label)
    if isinstance(exc, e.BridgeError):
        return JpError(Exit.ERROR, message or name, f"daemon error ({name})")
    return JpError(Exit.ERROR, f"{type(exc).__name__}: {exc}", "error")


def unavailable(member: str) -> JpError:
    return JpError(Exit.UNAVAILABLE, f"the daemon does not offer {member} (plugin not loaded?)")


# ---------------------------------------------------------------------------- argparse


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        raise JpError(Exit.USAGE, f"{one_line(message)} (see '{self.prog} --help')")


# argparse looks up a translation catalogue (several stat() calls) for every message it
# builds, i.e. for every option declared: ~1,200 look-ups and most of the parser's build
# time. Python ships no catalogue for argparse, so its messages are the English text:
# skip the look-ups in this process.
argparse._ = lambda message: message  # type: ignore[attr-defined]
argparse.ngettext = lambda singular, plural, n: singular if n == 1 else plural  # type: ignore

_width: list[int] = []


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog, indent_increment=2, max_help_position=30, width=None):
        if width is None:
            # argparse builds a formatter for every declared option: ask the terminal once
            if not _width:
                import shutil

                _width.append(shutil.get_terminal_size().columns - 2)
            width = _width[0]
        super().__init__(prog, indent_increment, max_help_position, width)


def common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """Options accepted before the group (``jp -p bob message ...``) and after the command.

    On sub-commands the defaults are suppressed, so a value given at the top stays.
    """
    d = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "-p",
        "--profile",
        metavar="PROFILE",
        help="profile to use (default: the daemon's default profile)",
        **({"default": ""} if top else d),
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        help="output format (default: text; json is stable for scripts and jq)",
        **({"default": "text"} if top else d),
    )
    parser.add_argument(
        "-j",
        "--json",
        dest="output",
        action="store_const",
        const="json",
        help="same as --output json",
        **d,
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="give up after this many seconds (exit code 5); 0: no limit "
        "(default: 30, no limit for wait/listen/monitor)",
        **({"default": None} if top else d),
    )
    parser.add_argument(
        "--bus",
        metavar="ADDRESS",
        help="D-Bus address of the daemon's bus: 'session', 'system' or an address "
        "(default: $SAT_BRIDGE_BUS, else the session bus)",
        **({"default": None} if top else d),
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError("a time limit cannot be negative")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


class Group:
    """Helper a ``cmd_*`` module uses to declare its sub-commands."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser
        self.sub = parser.add_subparsers(
            title="commands", metavar="COMMAND", dest="command", parser_class=Parser
        )
        self.sub.required = True

    def command(
        self,
        name: str,
        handler: Callable,
        help: str,
        description: str | None = None,
        aliases: Iterable[str] = (),
        timeout: float | None = 30.0,
        epilog: str | None = None,
    ) -> argparse.ArgumentParser:
        parser = self.sub.add_parser(
            name,
            help=help,
            description=description or help[:1].upper() + help[1:] + ".",
            aliases=list(aliases),
            formatter_class=HelpFormatter,
            epilog=epilog,
        )
        common_options(parser, top=False)
        parser.set_defaults(func=handler, default_timeout=timeout)
        return parser

    def group(self, name: str, help: str, description: str | None = None) -> Group:
        parser = self.sub.add_parser(
            name,
            help=help,
            description=description or help[:1].upper() + help[1:] + ".",
            formatter_class=HelpFormatter,
        )
        return Group(parser)


# ---------------------------------------------------------------------------- time


def format_time(timestamp: Any) -> str:
    import time

    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(timestamp)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "????-??-?? ??:??:??"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str) -> float:
    """A point in time: epoch seconds, ISO 8601 (local time if no offset), or a duration
    ago such as ``90s``, ``30m``, ``2h``, ``7d``, ``1w``; 'now', 'today', 'yesterday'."""
    import time

    raw = text.strip()
    low = raw.lower()
    now = time.time()
    if low == "now":
        return now
    if low in ("today", "yesterday"):
        lt = time.localtime(now)
        midnight = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))
        return midnight - (86400 if low == "yesterday" else 0)
    if low[-1:] in _UNITS and low[:-1].replace(".", "", 1).isdigit():
        return now - float(low[:-1]) * _UNITS[low[-1]]
    try:
        return float(raw)
    except ValueError:
        pass
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (use 2026-11-03, 2026-11-03T10:00, an epoch timestamp, "
            "or a duration ago like 2h or 7d)"
        ) from None
    return moment.timestamp()


# ---------------------------------------------------------------------------- output


def _json_default(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        import base64

        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def to_json(data: Any, pretty: bool = False) -> str:
    import json

    return json.dumps(
        data,
        ensure_ascii=False,
        default=_json_default,
        indent=2 if pretty else None,
        sort_keys=isinstance(data, dict) and pretty,
    )


def scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return ", ".join(scalar_text(v) for v in value)
        return to_json(value)
    if isinstance(value, dict):
        return to_json(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return str(value)


def record_text(record: dict, keys: Iterable[str] | None = None, indent: str = "") -> str:
    """``key: value`` lines (keys aligned)."""
    keys = list(keys) if keys is not None else list(record)
    keys = [k for k in keys if k in record]
    if not keys:
        return ""
    width = max(len(k) for k in keys)
    return "\n".join(f"{indent}{k + ':':<{width + 1}} {scalar_text(record[k])}" for k in keys)


def generic_text(data: Any) -> str:
    """Any bridge value as readable text."""
    if data is None:
        return ""
    if isinstance(data, dict):
        return record_text(data)
    if isinstance(data, (list, tuple)):
        if data and all(isinstance(x, dict) for x in data):
            return "\n\n".join(record_text(x) for x in data)
        return "\n".join(scalar_text(x) for x in data)
    return scalar_text(data)


def message_line(msg: dict, snippet: bool = False) -> str:
    """One message as ``DATE TIME FROM > TO: BODY`` (continuation lines indented)."""
    extra = msg.get("extra") or {}
    if not isinstance(extra, dict):
        extra = {}
    body = msg.get("snippet") if snippet and msg.get("snippet") else msg.get("body")
    if body is None:
        if extra.get("retracted"):
            body = "[retracted]"
        else:
            body = f"[subject] {msg['subject']}" if msg.get("subject") else ""
    mtype = msg.get("type", "chat")
    tag = "" if mtype in ("chat", "") else f" ({mtype})"
    head = (
        f"{format_time(msg.get('timestamp'))} {msg.get('from', '?')} > {msg.get('to', '?')}{tag}:"
    )
    lines = str(body).split("\n")
    notes = ""
    if extra.get("edits") and not extra.get("retracted"):
        notes += " (edited)"
    reactions = extra.get("reactions")
    if isinstance(reactions, dict) and reactions:
        counts = {e: len(s) if isinstance(s, (list, tuple)) else 1 for e, s in reactions.items()}
        notes += " [" + " ".join(f"{e}{n if n > 1 else ''}" for e, n in counts.items()) + "]"
    lines[-1] += notes
    return head + " " + lines[0] + "".join("\n    " + line for line in lines[1:])


# ---------------------------------------------------------------------------- progress


class ProgressBar:
    """A one-line progress bar on stderr, drawn only when stdout and stderr are terminals."""

    def __init__(self, label: str = "", stream=None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = sys.stdout.isatty() and self.stream.isatty()
        self.enabled = enabled
        self.label = label
        self._last = ""

    def update(self, position: int, size: int = -1) -> None:
        if not self.enabled:
            return
        try:
            width = max(10, min(40, os.get_terminal_size(self.stream.fileno()).columns - 40))
        except (OSError, ValueError, AttributeError):
            width = 30
        if size and size > 0:
            ratio = max(0.0, min(1.0, position / size))
            done = int(ratio * width)
            text = (
                f"{self.label} [{'#' * done}{'.' * (width - done)}] {ratio:4.0%} {position}/{size}"
            )
        else:
            text = f"{self.label} {position}…"
        if text != self._last:
            self._last = text
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._last = ""


# ---------------------------------------------------------------------------- context


class Context:
    """What a command handler gets: its parsed arguments, the daemon, output helpers."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.bridge = None
        self._profile: str | None = None

    # ------------------------------------------------------------------ daemon

    @property
    def call_timeout(self) -> float | None:
        timeout = getattr(self.args, "effective_timeout", None)
        return timeout or None

    async def connect(self):
        if self.bridge is None:
            from sat_frontends.bridge.dbus_client import DBusBridgeClient

            # the client's own rule (SAT_BRIDGE_BUS, "address" meaning SAT_BRIDGE_BUS_ADDRESS),
            # resolved here so that errors name the bus actually tried
            address = self.args.bus or os.environ.get("SAT_BRIDGE_BUS") or None
            if address == "address":
                address = os.environ.get("SAT_BRIDGE_BUS_ADDRESS") or None
            self.bridge = await DBusBridgeClient.connect(address, timeout=self.call_timeout)
        return self.bridge

    def method_info(self, name: str):
        """The daemon's description of method ``name`` (CamelCase or snake_case), or None;
        after :meth:`connect`."""
        from sat_frontends.bridge.dbus_client import camel_to_snake

        methods = self.bridge.methods if self.bridge is not None else {}
        return methods.get(name) or methods.get(camel_to_snake(name))

    async def call(self, member: str, *args) -> Any:
        """Call daemon method ``member`` (CamelCase, declared in :mod:`.members`).

        A member the daemon lacks is an "unavailable" error (code 10); one it declares with
        other argument types than jp sends, or another return type than jp reads, is a
        "version mismatch" (code 1) rather than a wrong call."""
        from sat_frontends.jp.members import MEMBERS, describe, parse

        spec = MEMBERS.get(member)
        if spec is None:  # a bug of jp: every member it calls is declared there
            raise JpError(Exit.ERROR, f"jp calls {member}, which is not in jp/members.py")
        names, types, out = parse(spec)
        if len(args) != len(names):
            raise JpError(Exit.ERROR, f"jp sends {len(args)} argument(s) to {member}: {spec}")
        bridge = await self.connect()
        from sat_frontends.bridge import errors

        info = self.method_info(member)
        if info is not None and (
            tuple(info.arg_signatures) != types or (out is not None and info.out_signature != out)
        ):
            raise JpError(
                Exit.ERROR,
                f"jp and the daemon disagree on {member}: the daemon takes "
                f"({describe(info.arg_names, info.arg_signatures)}) -> "
                f"{info.out_signature or 'nothing'}, jp sends ({describe(names, types)})"
                + (f" and reads {out}" if out else "")
                + "; update jp or the daemon",
                "version mismatch",
            )
        try:
            return await bridge.call(member, *args)
        except errors.UnknownMethod:
            raise unavailable(member) from None

    def on_daemon_gone(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(reason)`` once if the daemon leaves the bus or the bus connection
        is lost (for commands that wait on signals); returns a function that stops watching."""
        from sat_frontends.bridge.dbus_client import BUS_NAME

        bridge = self.bridge
        bus = bridge.bus
        fired = []

        def fire(reason: str) -> None:
            if not fired:
                fired.append(reason)
                callback(reason)

        def on_message(msg):
            if (
                msg.member == "NameOwnerChanged"
                and msg.sender == "org.freedesktop.DBus"
                and msg.body
                and msg.body[0] == BUS_NAME
                and not msg.body[2]
            ):
                fire("the daemon left the bus (stopped?)")
            return None

        bus.add_message_handler(on_message)

        import asyncio

        # never cancel a task awaiting dbus-fast's disconnect future: it would cancel that
        # shared future too; this one ends with the connection (our close() included)
        watcher = asyncio.ensure_future(bus.wait_for_disconnect())
        watching = [True]

        def disconnected(task) -> None:
            if not task.cancelled():
                task.exception()  # retrieved, whatever it is
            if watching[0]:
                fire("the D-Bus connection was lost")

        watcher.add_done_callback(disconnected)

        def stop() -> None:
            watching[0] = False
            try:
                bus.remove_message_handler(on_message)
            except (ValueError, AttributeError):
                pass

        return stop

    async def close(self) -> None:
        if self.bridge is not None:
            bridge, self.bridge = self.bridge, None
            import asyncio

            try:
                await bridge.close()
            except (Exception, asyncio.CancelledError):
                pass

    # ------------------------------------------------------------------ profile

    @property
    def profile_arg(self) -> str:
        """The profile as given (``''``: the daemon resolves its default profile)."""
        return self.args.profile or ""

    async def profile(self) -> str:
        """The actual profile name (the default profile when none is given)."""
        if self._profile is None:
            name = self.profile_arg
            if not name:
                name = await self.call("ProfileDefaultGet")
                if not name:
                    raise JpError(
                        Exit.NOT_FOUND,
                        "no profile given and no default profile set (use -p PROFILE)",
                    )
            self._profile = name
        return self._profile

    # ------------------------------------------------------------------ output

    @property
    def json(self) -> bool:
        return self.args.output == "json"

    def out(self, data: Any, text: Callable[[Any], str] | str | None = None) -> None:
        """Print ``data``: as JSON with ``--output json``, else with ``text`` (a function
        of data, or a ready string), else with a generic formatting."""
        if self.json:
            line = to_json(data, pretty=sys.stdout.isatty())
        elif callable(text):
            line = text(data)
        elif text is not None:
            line = text
        else:
            line = generic_text(data)
        if line:
            sys.stdout.write(line + "\n")

    def out_line(self, data: Any, text: str) -> None:
        """One item of a stream (listen, monitor): a JSON line or a text line, flushed."""
        sys.stdout.write((to_json(data) if self.json else text) + "\n")
        sys.stdout.flush()

    @staticmethod
    def info(text: str) -> None:
        """A note for a person (stderr, only on a terminal)."""
        if sys.stderr.isatty():
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    # ------------------------------------------------------------------ input

    @staticmethod
    def read_stdin(what: str) -> str:
        if sys.stdin is None:
            raise JpError(Exit.USAGE, f"no {what} given and no standard input")
        if sys.stdin.isatty():
            sys.stderr.write(f"Type the {what}, then Ctrl-D:\n")
            sys.stderr.flush()
        try:
            return sys.stdin.read()
        except UnicodeDecodeError:
            raise JpError(Exit.USAGE, f"the {what} on standard input is not valid UTF-8") from None

    @staticmethod
    def secret(value: str | None, what: str, allow_empty: bool = True) -> str:
        """A secret from an option: the value itself, ``-`` for the first line of stdin,
        or a prompt when stdin is a terminal (None given)."""
        if value == "-":
            line = sys.stdin.readline()
            return line[:-1] if line.endswith("\n") else line
        if value is not None:
            return value
        if sys.stdin is not None and sys.stdin.isatty():
            import getpass

            return getpass.getpass(f"{what}: ")
        if allow_empty:
            return ""
        raise JpError(Exit.USAGE, f"no {what} given (use the option, or '-' to read it from stdin)")

    @staticmethod
    def confirm(question: str, yes: bool) -> None:
        if yes:
            return
        if sys.stdin is None or not sys.stdin.isatty():
            raise JpError(Exit.USAGE, f"{question} — add --yes to confirm without a terminal")
        sys.stderr.write(f"{question} [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes", "o", "oui"):
            raise JpError(Exit.ERROR, "cancelled", "cancelled")

    # ------------------------------------------------------------------ waiting

    async def wait_forever(self, stop) -> None:
        """Wait until ``stop`` (an asyncio.Event) is set, or SIGINT/SIGTERM."""
        import asyncio
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.remove_signal_handler(sig)
                except (NotImplementedError, RuntimeError):
                    pass

    async def with_progress(self, profile: str, run, match: Callable[[str], bool], label: str):
        """Await ``run()`` (a coroutine: a daemon call that returns when the job is done)
        while drawing a bar, on a terminal, from the ``ProgressUpdated`` signals of
        ``profile`` whose id ``match`` accepts. The call's own error is the command's; if
        the daemon leaves the bus meanwhile, that is code 6 (not a time-out)."""
        import asyncio

        bridge = await self.connect()
        bar = ProgressBar(label)

        def updated(prof, pid, position, size):
            if prof == profile and match(pid):
                bar.update(position, size)

        bridge.on("ProgressUpdated", updated)
        loop = asyncio.get_running_loop()
        gone: asyncio.Future = loop.create_future()

        def daemon_gone(reason: str) -> None:
            if not gone.done():
                gone.set_exception(JpError(Exit.UNREACHABLE, reason))

        unwatch = self.on_daemon_gone(daemon_gone)
        task = asyncio.ensure_future(run())
        try:
            await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            return gone.result()  # raises
        finally:
            unwatch()
            if not task.done():
                task.cancel()
            if gone.done() and not gone.cancelled():
                gone.exception()  # retrieved: no "never retrieved" warning
            else:
                gone.cancel()
            bar.finish()
            bridge.off("ProgressUpdated", updated)
