"""``jp muc``: group chats (XEP-0045): join, leave, list, occupants, invite, config, subject,
nick, kick, ban, role, affiliation(s), destroy, services, ping.

Bridge members (arguments: :mod:`sat_frontends.jp.members`): ``MucJoin``, ``MucLeave``,
``MucRoomsJoined``, ``MucOccupantsGet``, ``MucInvite`` (XEP-0249), ``MucConfigGet``,
``MucConfigSet``, ``MucSubjectSet``, ``MucNickSet``, ``MucKick``, ``MucBan``, ``MucRoleSet``,
``MucAffiliationSet``, ``MucAffiliationsGet``, ``MucRoomDestroy``, ``MucServicesGet``,
``MucSelfPing`` (XEP-0410).
"""

from __future__ import annotations

from sat_frontends.jp.base import Context, Exit, Group, JpError

ROLES = ("moderator", "participant", "visitor", "none")
AFFILIATIONS = ("owner", "admin", "member", "outcast", "none")
LISTED_AFFILIATIONS = ("owner", "admin", "member", "outcast")


def _parse_assignments(pairs: list[str]) -> dict:
    """``FIELD=VALUE`` words as a record: ``true``/``false`` as booleans, a repeated field
    as a list."""
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


def _listed_affiliation(text: str) -> str:
    # not argparse's choices: they break nargs="*" when nothing is given (Python < 3.12)
    if text not in LISTED_AFFILIATIONS:
        import argparse

        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(LISTED_AFFILIATIONS)})"
        )
    return text


def _join_text(info: dict) -> str:
    text = f"joined {info.get('room', '?')} as {info.get('nick', '?')}"
    if info.get("created"):
        text += " (new room)"
    count = len(info.get("occupants") or ()) or info.get("occupants_count")
    if count:
        text += f", {count} occupant(s)"
    return text


async def join(ctx: Context):
    a = ctx.args
    options: dict = {}
    if a.password:
        options["password"] = a.password
    if a.history is not None:
        options["history"] = a.history
    if a.strict_nick:
        options["nick_conflict"] = "error"
    if a.config:
        options["config"] = _parse_assignments(a.config)
    info = await ctx.call("MucJoin", await ctx.profile(), a.room, a.nick or "", options)
    ctx.out(info, _join_text)


async def leave(ctx: Context):
    a = ctx.args
    await ctx.call("MucLeave", await ctx.profile(), a.room, a.status or "")
    ctx.out({"room": a.room, "left": True}, "")


def _rooms_text(rooms) -> str:
    lines = []
    for r in sorted(rooms, key=lambda r: str(r.get("room", ""))):
        line = f"{r.get('room', '?')}  {r.get('nick', '')}  {r.get('role', '')}/"
        line += f"{r.get('affiliation', '')}"
        if r.get("state") and r["state"] != "joined":
            line += f"  ({r['state']})"
        if r.get("occupants_count") is not None:
            line += f"  {r['occupants_count']} occupant(s)"
        if r.get("subject"):
            line += f"  {r['subject']}"
        lines.append(line)
    return "\n".join(lines)


async def list_(ctx: Context):
    ctx.out(await ctx.call("MucRoomsJoined", await ctx.profile()), _rooms_text)


def _occupants_text(items) -> str:
    lines = []
    for o in sorted(items, key=lambda o: str(o.get("nick", "")).lower()):
        line = f"{o.get('nick', '?')}  {o.get('role', '')}/{o.get('affiliation', '')}"
        if o.get("show"):
            line += f"  [{o['show']}]"
        if o.get("jid"):
            line += f"  {o['jid']}"
        if o.get("status"):
            line += f"  {o['status']}"
        lines.append(line)
    return "\n".join(lines)


async def occupants(ctx: Context):
    items = await ctx.call("MucOccupantsGet", await ctx.profile(), ctx.args.room)
    ctx.out(items, _occupants_text)


async def invite(ctx: Context):
    a = ctx.args
    await ctx.call("MucInvite", await ctx.profile(), a.room, a.jid, a.reason or "")
    ctx.out({"room": a.room, "invited": a.jid}, "")


def _form_text(form: dict) -> str:
    lines = []
    if form.get("title"):
        lines.append(form["title"])
    lines += [str(i) for i in form.get("instructions") or ()]
    for f in form.get("fields") or ():
        if f.get("type") in ("hidden", "fixed") or not f.get("var"):
            continue
        values = f.get("values") or []
        line = f"{f['var']} = {', '.join(values)}"
        hints = [f.get("type", "")]
        options = [o.get("value", "") for o in f.get("options") or ()]
        if options:
            hints.append("one of: " + ", ".join(options))
        line += f"    # {f.get('label') or ''} [{'; '.join(h for h in hints if h)}]"
        lines.append(line)
    return "\n".join(lines)


async def config(ctx: Context):
    a = ctx.args
    if a.values:
        values = _parse_assignments(a.values)
        await ctx.call("MucConfigSet", await ctx.profile(), a.room, values)
        ctx.out({"room": a.room, "values": values}, "")
        return
    form = await ctx.call("MucConfigGet", await ctx.profile(), a.room)
    ctx.out(form, _form_text)


async def subject(ctx: Context):
    a = ctx.args
    text = " ".join(a.subject)
    await ctx.call("MucSubjectSet", await ctx.profile(), a.room, text)
    ctx.out({"room": a.room, "subject": text}, "")


async def nick(ctx: Context):
    a = ctx.args
    used = await ctx.call("MucNickSet", await ctx.profile(), a.room, a.nick)
    ctx.out({"room": a.room, "nick": used or a.nick}, "")


async def kick(ctx: Context):
    a = ctx.args
    await ctx.call("MucKick", await ctx.profile(), a.room, a.nick, a.reason or "")
    ctx.out({"room": a.room, "kicked": a.nick}, "")


async def ban(ctx: Context):
    a = ctx.args
    await ctx.call("MucBan", await ctx.profile(), a.room, a.who, a.reason or "")
    ctx.out({"room": a.room, "banned": a.who}, "")


async def role(ctx: Context):
    a = ctx.args
    await ctx.call("MucRoleSet", await ctx.profile(), a.room, a.nick, a.role, a.reason or "")
    ctx.out({"room": a.room, "nick": a.nick, "role": a.role}, "")


async def affiliation(ctx: Context):
    a = ctx.args
    await ctx.call(
        "MucAffiliationSet", await ctx.profile(), a.room, a.who, a.affiliation, a.reason or ""
    )
    ctx.out({"room": a.room, "who": a.who, "affiliation": a.affiliation}, "")


async def affiliations(ctx: Context):
    a = ctx.args
    profile = await ctx.profile()
    found: list[dict] = []
    for name in a.affiliations or LISTED_AFFILIATIONS:
        found += await ctx.call("MucAffiliationsGet", profile, a.room, name)
    ctx.out(
        found,
        lambda data: "\n".join(
            f"{e.get('affiliation', '?'):<8} {e.get('jid', '?')}"
            + (f"  ({e['nick']})" if e.get("nick") else "")
            for e in data
        ),
    )


async def destroy(ctx: Context):
    a = ctx.args
    ctx.confirm(f"Destroy room {a.room} for everybody?", a.yes)
    await ctx.call("MucRoomDestroy", await ctx.profile(), a.room, a.reason or "", a.alternate or "")
    ctx.out({"room": a.room, "destroyed": True}, "")


async def services(ctx: Context):
    found = await ctx.call("MucServicesGet", await ctx.profile())
    ctx.out(found, lambda data: "\n".join(data))


async def ping(ctx: Context):
    a = ctx.args
    state = await ctx.call("MucSelfPing", await ctx.profile(), a.room)
    ctx.out({"room": a.room, "state": state}, f"{a.room}: {state}")
    return Exit.OK if state in ("joined", "rejoined") else Exit.NOT_CONNECTED


def build(parser) -> None:
    g = Group(parser)
    p = g.command(
        "join",
        join,
        "join a room (created if it does not exist)",
        timeout=60.0,
        epilog="examples:\n  jp muc join room@conference.example.org -n alice\n"
        "  jp muc join new@conference.example.org --config muc#roomconfig_persistentroom=true",
    )
    p.add_argument("room", help="room JID (room@conference.example.org)")
    p.add_argument("-n", "--nick", help="nickname (default: the account's user name)")
    p.add_argument("--password", help="room password")
    p.add_argument("--history", type=int, metavar="N", help="how many past messages the room sends")
    p.add_argument(
        "--strict-nick",
        action="store_true",
        help="fail if the nick is taken (default: add '_' to it)",
    )
    p.add_argument(
        "--config",
        action="append",
        metavar="FIELD=VALUE",
        help="configuration of a room this join creates (repeatable)",
    )

    p = g.command("leave", leave, "leave a room")
    p.add_argument("room", help="room JID")
    p.add_argument(
        "-s", "--status", "-r", "--reason", dest="status", help="goodbye message for the occupants"
    )

    g.command("list", list_, "rooms we are in", aliases=["ls"])

    p = g.command("occupants", occupants, "who is in a room, with roles and affiliations")
    p.add_argument("room", help="room JID (a room we are in)")

    p = g.command("invite", invite, "invite someone to a room (XEP-0249)")
    p.add_argument("room", help="room JID")
    p.add_argument("jid", help="who to invite")
    p.add_argument("-r", "--reason", help="invitation text")

    p = g.command(
        "config",
        config,
        "show a room's configuration, or change it with FIELD=VALUE pairs (owners)",
        epilog="VALUE: text, true/false for a boolean; repeat FIELD=VALUE for a list.\n"
        "example:\n  jp muc config room@conference.example.org "
        "muc#roomconfig_persistentroom=true 'muc#roomconfig_roomname=Our room'",
    )
    p.add_argument("room", help="room JID")
    p.add_argument("values", nargs="*", metavar="FIELD=VALUE", help="fields to change")

    p = g.command("subject", subject, "change a room's subject")
    p.add_argument("room", help="room JID")
    p.add_argument("subject", nargs="+", help="new subject")

    p = g.command("nick", nick, "change our nickname in a room")
    p.add_argument("room", help="room JID")
    p.add_argument("nick", help="new nickname")

    p = g.command("kick", kick, "kick an occupant out of a room (moderators)")
    p.add_argument("room", help="room JID")
    p.add_argument("nick", help="occupant's nickname")
    p.add_argument("-r", "--reason", help="why (shown to the occupants)")

    p = g.command("ban", ban, "ban someone from a room (admins, owners)")
    p.add_argument("room", help="room JID")
    p.add_argument("who", help="bare JID, or the nick of an occupant whose JID we see")
    p.add_argument("-r", "--reason", help="why (shown to the occupants)")

    p = g.command("role", role, "change an occupant's role (none: kick)")
    p.add_argument("room", help="room JID")
    p.add_argument("nick", help="occupant's nickname")
    p.add_argument("role", choices=ROLES, help="new role")
    p.add_argument("-r", "--reason", help="why")

    p = g.command("affiliation", affiliation, "change someone's affiliation with a room")
    p.add_argument("room", help="room JID")
    p.add_argument("who", help="bare JID, or the nick of an occupant whose JID we see")
    p.add_argument("affiliation", choices=AFFILIATIONS, help="new affiliation (outcast: ban)")
    p.add_argument("-r", "--reason", help="why")

    p = g.command(
        "affiliations", affiliations, "who is owner, admin, member or banned (admins, owners)"
    )
    p.add_argument("room", help="room JID")
    p.add_argument(
        "affiliations",
        nargs="*",
        metavar="AFFILIATION",
        type=_listed_affiliation,
        help="owner, admin, member, outcast (default: all four)",
    )

    p = g.command("destroy", destroy, "destroy a room (owners; --yes without a terminal)")
    p.add_argument("room", help="room JID")
    p.add_argument("-r", "--reason", help="why (shown to the occupants)")
    p.add_argument("--alternate", metavar="ROOM", help="room the occupants should go to")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    g.command("services", services, "group chat services of our server")

    p = g.command(
        "ping",
        ping,
        "check that we are still in a room, join again if not (XEP-0410; exit 4 if unreachable)",
    )
    p.add_argument("room", help="room JID")
