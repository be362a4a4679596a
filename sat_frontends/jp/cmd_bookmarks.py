"""``jp bookmarks``: list, add, remove (XEP-0402 stored on the server, private; XEP-0048 on
older servers).

Bridge members: ``BookmarksList``, ``BookmarkSet`` (the whole bookmark: jp keeps the
values not given from the existing one), ``BookmarkRemove``.
"""

from __future__ import annotations

from sat_frontends.jp.base import Context, Group


def _text(items) -> str:
    lines = []
    for b in sorted(items, key=lambda b: str(b.get("room", ""))):
        line = str(b.get("room", "?"))
        if b.get("name"):
            line += f" ({b['name']})"
        if b.get("nick"):
            line += f"  nick={b['nick']}"
        if b.get("autojoin"):
            line += "  autojoin"
        if b.get("has_password"):
            line += "  password"
        lines.append(line)
    return "\n".join(lines)


async def list_(ctx: Context):
    ctx.out(await ctx.call("BookmarksList", await ctx.profile()), _text)


async def add(ctx: Context):
    a = ctx.args
    profile = await ctx.profile()
    current: dict = {}
    if a.name is None or a.nick is None or a.autojoin is None:
        # an update keeps what is not given
        room = a.room.lower()
        for bookmark in await ctx.call("BookmarksList", profile):
            if str(bookmark.get("room", "")).lower() == room:
                current = bookmark
                break
    name = a.name if a.name is not None else current.get("name", "")
    nick = a.nick if a.nick is not None else current.get("nick", "")
    autojoin = a.autojoin if a.autojoin is not None else bool(current.get("autojoin", False))
    await ctx.call("BookmarkSet", profile, a.room, name, nick, autojoin, a.password or "")
    ctx.out({"room": a.room, "name": name, "nick": nick, "autojoin": autojoin}, "")


async def remove(ctx: Context):
    await ctx.call("BookmarkRemove", await ctx.profile(), ctx.args.room)
    ctx.out({"room": ctx.args.room, "removed": True}, "")


def build(parser) -> None:
    g = Group(parser)
    g.command("list", list_, "list the bookmarked rooms", aliases=["ls"])
    p = g.command(
        "add",
        add,
        "bookmark a room, or update its bookmark (what is not given is kept)",
        epilog="With --autojoin the daemon joins the room at once, and on every connection.",
    )
    p.add_argument("room", help="room JID")
    p.add_argument("-n", "--name", help="name to show ('' for none)")
    p.add_argument("--nick", help="nickname to use in the room ('' for the default)")
    p.add_argument("--password", help="room password (default: keep the stored one)")
    p.add_argument(
        "-a",
        "--autojoin",
        action="store_true",
        default=None,
        help="join it now and on every connection",
    )
    p.add_argument(
        "--no-autojoin", dest="autojoin", action="store_false", help="stop joining it by itself"
    )
    p = g.command("remove", remove, "remove a bookmark", aliases=["rm"])
    p.add_argument("room", help="room JID")
