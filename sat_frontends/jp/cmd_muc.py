"""``jp muc``: join, leave, list, occupants, invite, config, subject, nick."""

from __future__ import annotations

from sat_frontends.jp.base import Context, Exit, Group, JpError, record_text

# members coming with the group chat plugin (XEP-0045); jp says so when they are missing
JOIN = "MUCJoin"  # (profile, room, nick, options a{sv}: password) -> a{sv} room info
LEAVE = "MUCLeave"  # (profile, room, reason)
JOINED = "MUCJoinedGet"  # (profile) -> aa{sv}: room, nick, subject...
OCCUPANTS = "MUCOccupantsGet"  # (profile, room) -> aa{sv}: nick, jid, role, affiliation
INVITE = "MUCInvite"  # (profile, room, jid, reason)
CONFIG_GET = "MUCConfigGet"  # (profile, room) -> aa{sv}: fields var, type, label, value(s)
CONFIG_SET = "MUCConfigSet"  # (profile, room, values a{sv})
SUBJECT = "MUCSubjectSet"  # (profile, room, subject)
NICK = "MUCNickSet"  # (profile, room, nick)


async def join(ctx: Context):
    a = ctx.args
    options = {"password": a.password} if a.password else {}
    info = await ctx.call(JOIN, await ctx.profile(), a.room, a.nick or "", options)
    ctx.out(
        info or {"room": a.room},
        lambda d: f"joined {d.get('room', a.room)}" + (f" as {d['nick']}" if d.get("nick") else ""),
    )


async def leave(ctx: Context):
    a = ctx.args
    await ctx.call(LEAVE, await ctx.profile(), a.room, a.reason or "")
    ctx.out({"room": a.room, "left": True}, "")


async def list_(ctx: Context):
    rooms = await ctx.call(JOINED, await ctx.profile())
    ctx.out(
        rooms,
        lambda data: "\n".join(
            f"{r.get('room', '?')}  {r.get('nick', '')}"
            + (f"  {r['subject']}" if r.get("subject") else "")
            for r in data
        ),
    )


async def occupants(ctx: Context):
    items = await ctx.call(OCCUPANTS, await ctx.profile(), ctx.args.room)
    ctx.out(
        items,
        lambda data: "\n".join(
            f"{o.get('nick', '?')}  {o.get('role', '')}/{o.get('affiliation', '')}"
            + (f"  {o['jid']}" if o.get("jid") else "")
            for o in sorted(data, key=lambda o: str(o.get("nick", "")).lower())
        ),
    )


async def invite(ctx: Context):
    a = ctx.args
    await ctx.call(INVITE, await ctx.profile(), a.room, a.jid, a.reason or "")
    ctx.out({"room": a.room, "invited": a.jid}, "")


def _parse_assignments(pairs: list[str]) -> dict:
    values: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise JpError(Exit.USAGE, f"{pair!r}: expected FIELD=VALUE")
        low = value.lower()
        if low in ("true", "false"):
            values[key] = low == "true"
        elif key in values:  # repeated: a list
            prev = values[key]
            values[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            values[key] = value
    return values


async def config(ctx: Context):
    a = ctx.args
    if a.values:
        await ctx.call(CONFIG_SET, await ctx.profile(), a.room, _parse_assignments(a.values))
        ctx.out({"room": a.room, "configured": True}, "")
        return
    fields = await ctx.call(CONFIG_GET, await ctx.profile(), a.room)
    ctx.out(fields, lambda data: "\n\n".join(record_text(f) for f in data))


async def subject(ctx: Context):
    a = ctx.args
    await ctx.call(SUBJECT, await ctx.profile(), a.room, " ".join(a.subject))
    ctx.out({"room": a.room, "subject": " ".join(a.subject)}, "")


async def nick(ctx: Context):
    a = ctx.args
    await ctx.call(NICK, await ctx.profile(), a.room, a.nick)
    ctx.out({"room": a.room, "nick": a.nick}, "")


def build(parser) -> None:
    g = Group(parser)
    p = g.command("join", join, "join a room", timeout=60.0)
    p.add_argument("room", help="room JID (room@conference.example.org)")
    p.add_argument("-n", "--nick", help="nickname (default: from the profile)")
    p.add_argument("--password", help="room password")

    p = g.command("leave", leave, "leave a room")
    p.add_argument("room", help="room JID")
    p.add_argument("-r", "--reason", help="message for the occupants")

    g.command("list", list_, "rooms we are in", aliases=["ls"])

    p = g.command("occupants", occupants, "who is in a room, with roles and affiliations")
    p.add_argument("room", help="room JID")

    p = g.command("invite", invite, "invite someone to a room (XEP-0249)")
    p.add_argument("room", help="room JID")
    p.add_argument("jid", help="who to invite")
    p.add_argument("-r", "--reason", help="invitation text")

    p = g.command(
        "config",
        config,
        "show a room's configuration, or change it with FIELD=VALUE pairs",
        epilog="example:\n  jp muc config room@conference.example.org "
        "muc#roomconfig_persistentroom=true",
    )
    p.add_argument("room", help="room JID")
    p.add_argument("values", nargs="*", metavar="FIELD=VALUE", help="fields to change")

    p = g.command("subject", subject, "change a room's subject")
    p.add_argument("room", help="room JID")
    p.add_argument("subject", nargs="+", help="new subject")

    p = g.command("nick", nick, "change our nickname in a room")
    p.add_argument("room", help="room JID")
    p.add_argument("nick", help="new nickname")
