"""``jp debug``: call any bridge method, list the bridge's members, monitor signals."""

from __future__ import annotations

from sat_frontends.jp.base import (
    Context,
    Exit,
    Group,
    JpError,
    format_time,
    positive_int,
    to_json,
)

_INTS = set("ynqiuxt")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def convert_arg(text: str, signature: str, name: str = "") -> object:
    """A command-line word as a value of D-Bus type ``signature``.

    Strings (s, o, g) are taken as they are; numbers and booleans are parsed; any other
    type (arrays, dicts, structs, variants) is JSON (a variant that is not JSON is a string).
    """
    what = f"argument {name!r} ({signature})" if name else f"argument ({signature})"
    if signature in ("s", "o", "g"):
        return text
    if signature == "b":
        low = text.lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise JpError(Exit.USAGE, f"{what}: expected true or false, got {text!r}")
    if signature in _INTS:
        try:
            return int(text, 0)
        except ValueError:
            raise JpError(Exit.USAGE, f"{what}: expected an integer, got {text!r}") from None
    if signature == "d":
        try:
            return float(text)
        except ValueError:
            raise JpError(Exit.USAGE, f"{what}: expected a number, got {text!r}") from None
    if signature == "ay":
        if text.startswith("["):
            import json

            try:
                return bytes(json.loads(text))
            except (ValueError, TypeError) as e:
                raise JpError(Exit.USAGE, f"{what}: {e}") from None
        return text.encode()
    import json

    try:
        value = json.loads(text)
    except ValueError as e:
        if signature == "v":
            return text
        raise JpError(Exit.USAGE, f"{what}: expected JSON, {e}") from None
    if signature == "a{ss}" and isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if signature.startswith("(") and isinstance(value, list):
        return tuple(value)
    return value


async def call(ctx: Context):
    a = ctx.args
    bridge = await ctx.connect()
    info = ctx.method_info(a.method)
    if info is None:
        await bridge.refresh()
        info = ctx.method_info(a.method)
    if info is None:
        raise JpError(
            Exit.UNAVAILABLE,
            f"the daemon has no method {a.method!r} (see: jp debug bridge list)",
            "not found",
        )
    if len(a.args) != len(info.arg_names):
        raise JpError(
            Exit.USAGE,
            f"{info.name} takes {len(info.arg_names)} argument(s) "
            f"({info.signature_text.split('(', 1)[1].split(') ->')[0]}), "
            f"got {len(a.args)}",
        )
    values = [
        convert_arg(text, sig, name)
        for text, sig, name in zip(a.args, info.arg_signatures, info.arg_names, strict=True)
    ]
    result = await bridge.call(info.name, *values)
    if ctx.json or not isinstance(result, str):
        if result is None and not ctx.json:
            return
        ctx.args.output = "json"
        ctx.out(result)
    else:
        ctx.out(result, result)


async def list_(ctx: Context):
    bridge = await ctx.connect()
    pattern = (ctx.args.pattern or "").lower()
    methods = sorted(bridge.methods.values(), key=lambda m: m.name)
    signals = sorted(bridge.signals.values(), key=lambda s: s.name)
    methods = [m for m in methods if pattern in m.name.lower() or pattern in m.snake_name]
    signals = [s for s in signals if pattern in s.name.lower() or pattern in s.snake_name]
    data = {
        "methods": [
            {
                "name": m.name,
                "interface": m.interface,
                "args": [
                    {"name": n, "type": t, "doc": d}
                    for n, t, d in zip(
                        m.arg_names,
                        m.arg_signatures,
                        m.arg_docs or ("",) * len(m.arg_names),
                        strict=False,
                    )
                ],
                "out": m.out_signature,
                "doc": m.doc,
            }
            for m in methods
        ],
        "signals": [
            {
                "name": s.name,
                "interface": s.interface,
                "args": list(s.arg_names),
                "signature": s.signature,
                "doc": s.doc,
            }
            for s in signals
        ],
    }

    def text(d):
        lines = []
        for m in d["methods"]:
            args = ", ".join(f"{x['name']}: {x['type']}" for x in m["args"])
            lines.append(f"{m['name']}({args}) -> {m['out'] or '()'}")
            if m["doc"] and ctx.args.verbose:
                lines.append(f"    {m['doc']}")
        for s in d["signals"]:
            lines.append(f"signal {s['name']}({', '.join(s['args'])}) [{s['signature']}]")
            if s["doc"] and ctx.args.verbose:
                lines.append(f"    {s['doc']}")
        return "\n".join(lines)

    ctx.out(data, text)


async def monitor(ctx: Context):
    import asyncio
    import time

    a = ctx.args
    bridge = await ctx.connect()
    known = bridge.signals  # snake -> SignalInfo
    by_name = {s.name: s for s in known.values()}
    wanted = []
    for name in a.signals or sorted(by_name):
        info = by_name.get(name) or known.get(name)
        if info is None:
            raise JpError(Exit.NOT_FOUND, f"the daemon has no signal {name!r}")
        wanted.append(info)
    profile = ctx.args.profile or ""
    queue: asyncio.Queue = asyncio.Queue()
    stop = object()

    def make(info):
        def callback(*args):
            queue.put_nowait((info, args, time.time()))

        return callback

    callbacks = [(info.name, make(info)) for info in wanted]
    for name, cb in callbacks:
        bridge.on(name, cb)
    await bridge.call("IsReady")  # our match rules are in place once this returns
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("ready\n")
    ctx.info(f"Monitoring {len(wanted)} signal(s) (Ctrl-C to stop)…")
    loop = asyncio.get_running_loop()
    timer = loop.call_later(a.duration, queue.put_nowait, stop) if a.duration else None
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, queue.put_nowait, stop)
        except (NotImplementedError, RuntimeError):
            pass
    gone: list[str] = []

    def daemon_gone(reason: str) -> None:
        gone.append(reason)
        queue.put_nowait(stop)

    unwatch = ctx.on_daemon_gone(daemon_gone)
    seen = 0
    try:
        while a.count is None or seen < a.count:
            item = await queue.get()
            if item is stop:
                break
            info, args, when = item
            named = dict(zip(info.arg_names, args, strict=False))
            if profile and named.get("profile", profile) != profile:
                continue
            seen += 1
            text = f"{format_time(when)[11:]} {info.name} " + " ".join(
                to_json(v) if not isinstance(v, str) else repr(v) for v in args
            )
            ctx.out_line({"signal": info.name, "time": when, "args": named}, text)
    finally:
        if timer is not None:
            timer.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        for name, cb in callbacks:
            bridge.off(name, cb)
        unwatch()
    if gone:
        raise JpError(Exit.UNREACHABLE, gone[0])
    return Exit.OK


def build(parser) -> None:
    g = Group(parser)
    bridge = g.group("bridge", "the daemon's API itself")
    p = bridge.command(
        "call",
        call,
        "call any bridge method; prints the result (JSON unless it is a string)",
        epilog="Arguments follow the method's D-Bus signature: strings as they are, numbers\n"
        "and booleans parsed, anything else as JSON.\nexamples:\n"
        "  jp debug bridge call VersionGet\n"
        "  jp debug bridge call HistoryGet alice bob@example.org 10 '{}'\n"
        "  jp debug bridge call ParamSet connection autoconnect true alice",
    )
    p.add_argument("method", help="method name (CamelCase or snake_case)")
    p.add_argument("args", nargs="*", metavar="ARG", help="arguments")
    p = bridge.command(
        "list", list_, "list the methods and signals the daemon offers", aliases=["ls"]
    )
    p.add_argument("pattern", nargs="?", help="only names containing this")
    p.add_argument("-v", "--verbose", action="store_true", help="with documentation")

    p = g.command(
        "monitor",
        monitor,
        "print the daemon's signals as they come (JSON Lines with -j) until Ctrl-C",
        timeout=None,
        epilog="With -p PROFILE, only the signals about that profile (and those about none).",
    )
    p.add_argument("signals", nargs="*", metavar="SIGNAL", help="only these (default: all)")
    p.add_argument("-c", "--count", type=positive_int, help="stop after N signals")
    p.add_argument("-d", "--duration", type=float, metavar="SECONDS", help="stop after this time")
    p.add_argument("--ready-file", metavar="PATH", help="create this file once monitoring")
