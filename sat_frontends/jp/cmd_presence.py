"""``jp presence``: set ours, list our contacts', get one contact's.

Bridge members: ``PresenceSet``, ``PresenceStatusesGet``, ``PresenceGet`` (core).
"""

from __future__ import annotations

from sat_frontends.jp.base import Context, Exit, Group

SHOWS = ("available", "away", "chat", "dnd", "xa")


async def set_(ctx: Context):
    a = ctx.args
    show = "" if a.show == "available" else a.show
    statuses = {"default": a.status} if a.status else {}
    await ctx.call("PresenceSet", await ctx.profile(), show, statuses, a.priority)
    ctx.out({"show": a.show, "status": a.status or "", "priority": a.priority}, "")


def _presence_text(items) -> str:
    lines = []
    for item in sorted(items, key=lambda i: str(i.get("entity", ""))):
        statuses = item.get("statuses") or {}
        status = statuses.get("default") or next(iter(statuses.values()), "")
        line = f"{item.get('entity', '?')}  {item.get('show') or 'available'}"
        if item.get("priority"):
            line += f" ({item['priority']})"
        if status:
            line += f"  {status}"
        lines.append(line)
    return "\n".join(lines)


async def list_(ctx: Context):
    items = await ctx.call("PresenceStatusesGet", await ctx.profile())
    ctx.out(items, _presence_text)


async def get(ctx: Context):
    item = await ctx.call("PresenceGet", await ctx.profile(), ctx.args.jid)
    ctx.out(item, lambda d: _presence_text([d]))
    return Exit.OK if item.get("show") != "unavailable" else Exit.NOT_CONNECTED


def build(parser) -> None:
    g = Group(parser)
    p = g.command("set", set_, "set our presence")
    p.add_argument("show", nargs="?", choices=SHOWS, default="available", help="availability")
    p.add_argument("-s", "--status", help="status text")
    p.add_argument("--priority", type=int, default=0, help="priority -128..127 (default: 0)")
    g.command("list", list_, "presence of our available contacts", aliases=["ls"])
    p = g.command(
        "get", get, "presence of one contact (its most available resource; exit 4 if offline)"
    )
    p.add_argument("jid", help="bare JID (its most available resource) or full JID")
