"""``jp message``: send, history, search, wait, listen, correct, retract, react, moderate,
state, mark, sync, archive.

Bridge members: ``MessageSend``, ``HistoryGet``, ``HistorySearch`` and the ``MessageNew``
signal (core); ``MessageCorrect`` (XEP-0308), ``MessageRetract`` (XEP-0424),
``MessageReactionsSet`` (XEP-0444), ``MessageModerate`` (XEP-0425), ``ChatStateSend``
(XEP-0085), ``MarkerSend`` (XEP-0333), ``MamCatchUp`` and ``MamQuery`` (XEP-0313, with the
``Progress*`` signals of id ``mam:<profile>:<archive>``); ``MucRoomsJoined`` to send to a
room as ``groupchat`` when no type is given.
"""

from __future__ import annotations

import argparse
import os

from sat_frontends.jp.base import (
    Context,
    Exit,
    Group,
    JpError,
    message_line,
    parse_time,
    positive_int,
)

MESSAGE_TYPES = ("chat", "normal", "groupchat", "headline")
CHAT_STATES = ("active", "composing", "paused", "inactive", "gone")
MARKERS = ("displayed", "received", "acknowledged")


def _text(ctx: Context, words: list[str] | None, what: str = "message") -> str:
    if words:
        text = " ".join(words)
    else:
        text = ctx.read_stdin(what)
        if text.endswith("\n"):
            text = text[:-1]
    if not text.strip():
        raise JpError(Exit.USAGE, f"the {what} is empty")
    return text


def _lines(messages, snippet=False) -> str:
    return "\n".join(message_line(m, snippet) for m in messages)


async def _in_room(ctx: Context, profile: str, jid: str) -> bool:
    """Whether ``jid`` is a room we are in (no group chat plugin: False)."""
    if "/" in jid:
        return False  # a full JID: a private message to an occupant is a chat
    try:
        rooms = await ctx.call("MucRoomsJoined", profile)
    except JpError as e:
        if e.code == Exit.UNAVAILABLE:
            return False
        raise
    bare = jid.lower()
    return any(str(r.get("room", "")).lower() == bare for r in rooms)


async def send(ctx: Context):
    a = ctx.args
    body = _text(ctx, a.text)
    profile = await ctx.profile()
    extra: dict = {}
    mtype = a.type
    if mtype is None and await _in_room(ctx, profile, a.to):
        mtype = "groupchat"
    if mtype:
        extra["type"] = mtype
    if a.reply_to:
        extra["reply_to"] = a.reply_to
    uid = await ctx.call("MessageSend", profile, a.to, body, extra)
    ctx.out({"uid": uid}, uid if a.print_uid else "")


async def history(ctx: Context):
    a = ctx.args
    filters: dict = {}
    if a.before is not None:
        filters["before"] = a.before
    if a.after is not None:
        filters["after"] = a.after
    if a.before_uid:
        filters["before_uid"] = a.before_uid
    if a.after_uid:
        filters["after_uid"] = a.after_uid
    if a.type:
        filters["msg_type"] = a.type
    messages = await ctx.call("HistoryGet", await ctx.profile(), a.with_jid or "", a.limit, filters)
    ctx.out(messages, _lines)


async def search(ctx: Context):
    a = ctx.args
    filters: dict = {}
    if a.with_jid:
        filters["with_jid"] = a.with_jid
    if a.sender:
        filters["sender"] = a.sender
    if a.since is not None:
        filters["start"] = a.since
    if a.until is not None:
        filters["end"] = a.until
    if a.type:
        filters["msg_type"] = a.type
    if a.offset:
        filters["offset"] = a.offset
    query = " ".join(a.query)
    results = await ctx.call("HistorySearch", await ctx.profile(), query, filters, a.limit)
    ctx.out(results, lambda data: _lines(data, snippet=True))


# ---------------------------------------------------------------------------- wait / listen


def _matcher(a):
    """A predicate on MessageNew records from the filter options."""
    pattern = None
    if a.match:
        import re

        try:
            pattern = re.compile(a.match)
        except re.error as e:
            raise JpError(Exit.USAGE, f"--match: bad regular expression: {e}") from None
    senders = [s.lower() for s in a.sender or ()]
    direction = a.direction

    def match(msg: dict) -> bool:
        outgoing = bool(msg.get("outgoing"))
        if direction == "in" and outgoing or direction == "out" and not outgoing:
            return False
        if a.type and msg.get("type") not in a.type:
            return False
        if senders:
            full = str(msg.get("from", "")).lower()
            bare = full.split("/", 1)[0]
            if full not in senders and bare not in senders:
                return False
        if a.with_jid:
            peers = {str(msg.get(k, "")).split("/", 1)[0].lower() for k in ("from", "to")}
            if a.with_jid.split("/", 1)[0].lower() not in peers:
                return False
        if pattern is not None and not pattern.search(str(msg.get("body") or "")):
            return False
        return True

    return match


async def _listen(ctx: Context, count: int | None, duration: float | None, wait: bool) -> int:
    import asyncio

    a = ctx.args
    match = _matcher(a)
    profile = await ctx.profile()
    bridge = await ctx.connect()
    queue: asyncio.Queue = asyncio.Queue()
    stop = object()

    def on_message(prof, msg):
        if prof == profile:
            queue.put_nowait(msg)

    bridge.on("MessageNew", on_message)
    # a reply to a call made after subscribing proves the bus applies our match rule
    connected = await ctx.call("ProfileIsConnected", profile)
    if not connected and not a.disconnected_ok:
        raise JpError(
            Exit.NOT_CONNECTED,
            f"profile {profile} is not connected (jp profile connect -p {profile}, "
            "or --disconnected-ok to wait anyway)",
        )
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    ctx.info("Waiting for a message (Ctrl-C to stop)…" if wait else "Listening (Ctrl-C to stop)…")
    loop = asyncio.get_running_loop()
    interrupted = {"yes": False}

    def interrupt():
        interrupted["yes"] = True
        queue.put_nowait(stop)

    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, interrupt)
        except (NotImplementedError, RuntimeError):
            pass
    timer = loop.call_later(duration, queue.put_nowait, stop) if duration else None
    gone: list[str] = []

    def daemon_gone(reason: str) -> None:
        gone.append(reason)
        queue.put_nowait(stop)

    unwatch = ctx.on_daemon_gone(daemon_gone)
    seen = 0
    try:
        while count is None or seen < count:
            msg = await queue.get()
            if msg is stop:
                break
            if not match(msg):
                continue
            seen += 1
            if wait and count == 1:
                ctx.out(msg, message_line)
            else:
                ctx.out_line(msg, message_line(msg))
    finally:
        if timer is not None:
            timer.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        bridge.off("MessageNew", on_message)
        unwatch()
    if gone and not interrupted["yes"]:
        raise JpError(Exit.UNREACHABLE, gone[0])
    if wait and interrupted["yes"] and seen < (count or 1):
        return Exit.INTERRUPTED
    return Exit.OK


async def wait(ctx: Context):
    return await _listen(ctx, ctx.args.count, None, wait=True)


async def listen(ctx: Context):
    return await _listen(ctx, ctx.args.count, ctx.args.duration, wait=False)


# ---------------------------------------------------------------------------- editing


async def correct(ctx: Context):
    a = ctx.args
    body = _text(ctx, a.text, "corrected message")
    await ctx.call("MessageCorrect", await ctx.profile(), a.uid, body)
    ctx.out({"uid": a.uid, "body": body}, "")


async def retract(ctx: Context):
    a = ctx.args
    await ctx.call("MessageRetract", await ctx.profile(), a.uid)
    ctx.out({"uid": a.uid, "retracted": True}, "")


async def react(ctx: Context):
    a = ctx.args
    if a.clear and a.reactions:
        raise JpError(Exit.USAGE, "give reactions or --clear, not both")
    if not a.reactions and not a.clear:
        raise JpError(Exit.USAGE, "give at least one reaction, or --clear")
    reactions = [] if a.clear else a.reactions
    await ctx.call("MessageReactionsSet", await ctx.profile(), a.uid, reactions)
    ctx.out({"uid": a.uid, "reactions": reactions}, "")


async def moderate(ctx: Context):
    a = ctx.args
    await ctx.call("MessageModerate", await ctx.profile(), a.room, a.uid, a.reason or "")
    ctx.out({"room": a.room, "uid": a.uid, "moderated": True}, "")


async def state(ctx: Context):
    a = ctx.args
    sent = await ctx.call("ChatStateSend", await ctx.profile(), a.to, a.state)
    ctx.out(
        {"to": a.to, "state": a.state, "sent": sent},
        "" if sent else "not sent: the contact does not use chat states, or they are disabled",
    )


async def mark(ctx: Context):
    a = ctx.args
    sent = await ctx.call("MarkerSend", await ctx.profile(), a.uid, a.marker)
    ctx.out(
        {"uid": a.uid, "marker": a.marker, "sent": sent},
        ""
        if sent
        else "not sent: the message is not markable, markers are disabled, "
        "or a later message is already marked",
    )


def _sync_text(stats: dict) -> str:
    text = f"{stats.get('archive', 'archive')}: {stats.get('stored', 0)} new message(s)"
    details = [f"{stats.get('received', 0)} received"]
    if stats.get("duplicates"):
        details.append(f"{stats['duplicates']} already stored")
    if stats.get("pages") is not None:
        details.append(f"{stats['pages']} page(s)")
    if stats.get("seconds") is not None:
        details.append(f"{float(stats['seconds']):.1f} s")
    text += f" ({', '.join(details)})"
    if stats.get("complete") is False:
        text += "; incomplete: run it again"
    return text


async def sync(ctx: Context):
    profile = await ctx.profile()
    prefix = f"mam:{profile}:"
    stats = await ctx.with_progress(
        profile,
        lambda: ctx.call("MamCatchUp", profile),
        lambda pid: pid.startswith(prefix),
        "archive sync",
    )
    ctx.out(stats, _sync_text)


async def archive(ctx: Context):
    a = ctx.args
    filters: dict = {}
    if a.room:
        filters["archive"] = a.room
    if a.before_uid:
        filters["before_uid"] = a.before_uid
    if a.since is not None:
        filters["start"] = a.since
    if a.until is not None:
        filters["end"] = a.until
    messages = await ctx.call("MamQuery", await ctx.profile(), a.with_jid or "", filters, a.limit)
    ctx.out(messages, _lines)


# ---------------------------------------------------------------------------- parser


def _time_arg(text: str) -> float:
    return parse_time(text)


def _archive_limit(text: str) -> int:
    value = positive_int(text)
    if value > 1000:
        raise argparse.ArgumentTypeError("at most 1000 messages per page")
    return value


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--from",
        dest="sender",
        action="append",
        metavar="JID",
        help="only messages from this JID (bare or full; repeatable)",
    )
    p.add_argument("-w", "--with", dest="with_jid", metavar="JID", help="only this conversation")
    p.add_argument("--type", action="append", choices=MESSAGE_TYPES, help="only this type")
    p.add_argument("-m", "--match", metavar="REGEX", help="only bodies matching this expression")
    p.add_argument(
        "--direction",
        choices=("in", "out", "any"),
        default="in",
        help="received (default), sent, or both",
    )
    p.add_argument(
        "--ready-file",
        metavar="PATH",
        help="create this file once listening (a script may send its message then)",
    )
    p.add_argument(
        "--disconnected-ok",
        action="store_true",
        help="wait even if the profile is not connected yet",
    )


def build(parser) -> None:
    g = Group(parser)
    p = g.command(
        "send",
        send,
        "send a message (text from the arguments, else from stdin)",
        epilog="examples:\n  jp message send bob@example.org Hello Bob\n"
        "  fortune | jp message send -p alice bob@example.org",
    )
    p.add_argument("to", help="recipient JID, or a room's JID")
    p.add_argument("text", nargs="*", help="message text (default: read stdin)")
    p.add_argument(
        "--type",
        choices=MESSAGE_TYPES,
        help="message type (default: groupchat to a room we are in, else chat)",
    )
    p.add_argument("-r", "--reply-to", metavar="UID", help="answer this message (XEP-0461)")
    p.add_argument("-u", "--print-uid", action="store_true", help="print the message uid")

    p = g.command("history", history, "show stored messages, oldest first", aliases=["log"])
    p.add_argument("with_jid", nargs="?", metavar="JID", help="only this contact or room")
    p.add_argument(
        "-n", "--limit", type=positive_int, default=20, help="how many (default: 20, max 10000)"
    )
    p.add_argument("--before", type=_time_arg, metavar="WHEN", help="older than this time")
    p.add_argument("--after", type=_time_arg, metavar="WHEN", help="newer than this time")
    p.add_argument("--before-uid", metavar="UID", help="older than this message")
    p.add_argument("--after-uid", metavar="UID", help="newer than this message")
    p.add_argument("--type", choices=MESSAGE_TYPES, help="only this type")

    p = g.command(
        "search",
        search,
        "full-text search in the history (accents and case ignored)",
        epilog="WORDS: every word must match; word* matches a prefix.\n"
        "WHEN: 2026-11-03, 2026-11-03T10:00, an epoch timestamp, or a time ago: 2h, 7d.",
    )
    p.add_argument("query", nargs="+", metavar="WORDS", help="words to find")
    p.add_argument("-w", "--with", dest="with_jid", metavar="JID", help="only this conversation")
    p.add_argument("-f", "--from", dest="sender", metavar="JID", help="only by this sender")
    p.add_argument("--since", type=_time_arg, metavar="WHEN", help="not before this time")
    p.add_argument("--until", type=_time_arg, metavar="WHEN", help="not after this time")
    p.add_argument("--type", choices=MESSAGE_TYPES, help="only this type")
    p.add_argument(
        "-n", "--limit", type=positive_int, default=20, help="how many (default: 20, max 1000)"
    )
    p.add_argument("--offset", type=int, default=0, help="skip this many results (paging)")

    p = g.command(
        "wait",
        wait,
        "wait for the next new message, print it and exit",
        timeout=None,
        epilog="With --timeout, exit code 5 when nothing came in time.\n"
        "example:\n  jp message wait -p bob --from alice@example.org --timeout 60 -j | jq .body",
    )
    _filters(p)
    p.add_argument("-c", "--count", type=positive_int, default=1, help="wait for N messages")

    p = g.command(
        "listen",
        listen,
        "print new messages as they come (JSON Lines with -j) until Ctrl-C",
        timeout=None,
    )
    _filters(p)
    p.add_argument("-c", "--count", type=positive_int, help="stop after N messages")
    p.add_argument(
        "-d", "--duration", type=float, metavar="SECONDS", help="stop after this time (exit 0)"
    )

    p = g.command(
        "correct",
        correct,
        "correct our last message of a conversation (XEP-0308; text from args or stdin)",
    )
    p.add_argument("uid", help="uid of our last message in its conversation")
    p.add_argument("text", nargs="*", help="corrected text (default: read stdin)")

    p = g.command("retract", retract, "retract (unsend) one of our messages (XEP-0424)")
    p.add_argument("uid", help="uid of the message")

    p = g.command(
        "react",
        react,
        "set our reactions to a message (XEP-0444): they replace our previous ones",
    )
    p.add_argument("uid", help="uid of the message")
    p.add_argument("reactions", nargs="*", metavar="EMOJI", help="reactions (replace ours)")
    p.add_argument("--clear", action="store_true", help="remove our reactions")

    p = g.command(
        "moderate",
        moderate,
        "as a room moderator, retract an occupant's message (XEP-0425)",
    )
    p.add_argument("room", help="room JID")
    p.add_argument("uid", help="uid of the group chat message")
    p.add_argument("-r", "--reason", help="why (shown to the occupants)")

    p = g.command("state", state, "tell a contact or a room our chat state (XEP-0085)")
    p.add_argument("to", help="contact (bare or full JID) or room")
    p.add_argument("state", choices=CHAT_STATES, help="chat state")

    p = g.command(
        "mark",
        mark,
        "mark a received message, and the earlier ones, as displayed (XEP-0333)",
    )
    p.add_argument("uid", help="uid of a received message")
    p.add_argument(
        "-m", "--marker", choices=MARKERS, default="displayed", help="marker (default: displayed)"
    )

    g.command(
        "sync",
        sync,
        "catch up with the account's server archive now (MAM), progress bar on a terminal",
        timeout=None,
        epilog="The daemon also does it by itself on every connection (and rooms on join).\n"
        "Prints the counts: archive, received, stored (new), duplicates, pages, seconds...",
    )

    p = g.command(
        "archive",
        archive,
        "fetch a page of older messages from the server archive (MAM), store and show them",
        timeout=120.0,
        epilog="Without a position: the page just before the oldest stored message of the "
        "conversation.\nexample:\n  jp message archive --room room@conference.example.org "
        "-n 100 -j",
    )
    p.add_argument("with_jid", nargs="?", metavar="JID", help="only this contact")
    p.add_argument("--room", metavar="ROOM", help="a room's archive (default: the account's)")
    p.add_argument("--before-uid", metavar="UID", help="the page ends before this message")
    p.add_argument("--since", type=_time_arg, metavar="WHEN", help="not before this time")
    p.add_argument("--until", type=_time_arg, metavar="WHEN", help="not after this time")
    p.add_argument(
        "-n", "--limit", type=_archive_limit, default=50, help="how many (default: 50, max 1000)"
    )
