"""``jp bookmarks``: list, add, remove (XEP-0402, stored on the server)."""

from __future__ import annotations

from sat_frontends.jp.base import Context, Group

# members coming with the bookmarks plugin; jp says so when they are missing
LIST = "BookmarksList"  # (profile) -> aa{sv}: room, name, nick, autojoin
ADD = "BookmarkAdd"  # (profile, room, attrs a{sv}: name, nick, password, autojoin)
REMOVE = "BookmarkRemove"  # (profile, room)


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
        lines.append(line)
    return "\n".join(lines)


async def list_(ctx: Context):
    ctx.out(await ctx.call(LIST, await ctx.profile()), _text)


async def add(ctx: Context):
    a = ctx.args
    attrs: dict = {"autojoin": a.autojoin}
    for key in ("name", "nick", "password"):
        if getattr(a, key):
            attrs[key] = getattr(a, key)
    await ctx.call(ADD, await ctx.profile(), a.room, attrs)
    ctx.out({"room": a.room, **{k: v for k, v in attrs.items() if k != "password"}}, "")


async def remove(ctx: Context):
    await ctx.call(REMOVE, await ctx.profile(), ctx.args.room)
    ctx.out({"room": ctx.args.room, "removed": True}, "")


def build(parser) -> None:
    g = Group(parser)
    g.command("list", list_, "list the bookmarked rooms", aliases=["ls"])
    p = g.command("add", add, "bookmark a room (or update its bookmark)")
    p.add_argument("room", help="room JID")
    p.add_argument("-n", "--name", help="name to show")
    p.add_argument("--nick", help="nickname to use in the room")
    p.add_argument("--password", help="room password")
    p.add_argument("-a", "--autojoin", action="store_true", help="join it on connection")
    p = g.command("remove", remove, "remove a bookmark", aliases=["rm"])
    p.add_argument("room", help="room JID")
