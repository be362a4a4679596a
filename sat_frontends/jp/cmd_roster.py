"""``jp roster``: list, add, remove, subscribe / approve / deny / unsubscribe, requests,
block, unblock, blocked.

Bridge members: ``RosterGet``, ``RosterAdd``, ``RosterRemove``, ``SubscriptionSend``,
``SubscriptionRequestsGet`` (core), ``Block``, ``Unblock``, ``BlockingClear``,
``BlockingList`` (XEP-0191).
"""

from __future__ import annotations

from sat_frontends.jp.base import Context, Exit, Group, JpError, format_time, scalar_text


def _roster_text(items) -> str:
    lines = []
    for item in sorted(items, key=lambda i: str(i.get("jid", ""))):
        name = item.get("name") or ""
        groups = scalar_text(item.get("groups") or [])
        line = str(item.get("jid", "?"))
        if name:
            line += f" ({name})"
        line += f"  [{item.get('subscription', 'none')}]"
        if groups:
            line += f"  {groups}"
        lines.append(line)
    return "\n".join(lines)


async def list_(ctx: Context):
    items = await ctx.call("RosterGet", await ctx.profile())
    if ctx.args.group:
        items = [i for i in items if ctx.args.group in (i.get("groups") or [])]
    ctx.out(items, _roster_text)


async def add(ctx: Context):
    a = ctx.args
    await ctx.call("RosterAdd", await ctx.profile(), a.jid, a.name or "", a.group or [])
    if a.subscribe:
        await ctx.call("SubscriptionSend", await ctx.profile(), a.jid, "subscribe")
    ctx.out({"jid": a.jid, "added": True, "subscribe": a.subscribe}, "")


async def remove(ctx: Context):
    await ctx.call("RosterRemove", await ctx.profile(), ctx.args.jid)
    ctx.out({"jid": ctx.args.jid, "removed": True}, "")


def _subscription(kind: str):
    async def handler(ctx: Context):
        await ctx.call("SubscriptionSend", await ctx.profile(), ctx.args.jid, kind)
        ctx.out({"jid": ctx.args.jid, "sent": kind}, "")

    handler.__name__ = kind
    return handler


async def requests(ctx: Context):
    items = await ctx.call("SubscriptionRequestsGet", await ctx.profile())
    ctx.out(
        items,
        lambda data: "\n".join(
            f"{format_time(r.get('timestamp'))} {r.get('jid', '?')}"
            + (f" ({r['nick']})" if r.get("nick") else "")
            + (f"  {r['status']}" if r.get("status") else "")
            for r in data
        ),
    )


async def block(ctx: Context):
    await ctx.call("Block", await ctx.profile(), ctx.args.jids)
    ctx.out({"blocked": ctx.args.jids}, "")


async def unblock(ctx: Context):
    a = ctx.args
    if a.all:
        if a.jids:
            raise JpError(Exit.USAGE, "give the JIDs to unblock or --all, not both")
        await ctx.call("BlockingClear", await ctx.profile())
    elif a.jids:
        await ctx.call("Unblock", await ctx.profile(), a.jids)
    else:
        raise JpError(Exit.USAGE, "give the JIDs to unblock, or --all")
    ctx.out({"unblocked": "all" if a.all else a.jids}, "")


async def blocked(ctx: Context):
    jids = await ctx.call("BlockingList", await ctx.profile())
    ctx.out(sorted(jids), lambda data: "\n".join(data))


def build(parser) -> None:
    g = Group(parser)
    p = g.command("list", list_, "show the contact list", aliases=["ls"])
    p.add_argument("-g", "--group", help="only the contacts of this group")

    p = g.command("add", add, "add or update a contact")
    p.add_argument("jid", help="contact JID")
    p.add_argument("-n", "--name", help="name to show")
    p.add_argument("-g", "--group", action="append", help="group (repeatable)")
    p.add_argument("-s", "--subscribe", action="store_true", help="also ask for their presence")

    p = g.command("remove", remove, "remove a contact (cancels subscriptions)", aliases=["rm"])
    p.add_argument("jid", help="contact JID")

    for name, kind, text in (
        ("subscribe", "subscribe", "ask to see a contact's presence"),
        ("approve", "subscribed", "let a contact see our presence"),
        ("deny", "unsubscribed", "refuse or revoke a contact's presence subscription"),
        ("unsubscribe", "unsubscribe", "stop seeing a contact's presence"),
    ):
        p = g.command(name, _subscription(kind), text)
        p.add_argument("jid", help="contact JID")

    g.command(
        "requests",
        requests,
        "subscription requests waiting for an answer (approve or deny them)",
    )

    p = g.command("block", block, "block JIDs (XEP-0191)")
    p.add_argument("jids", nargs="+", metavar="JID", help="JID or domain to block")
    p = g.command("unblock", unblock, "unblock JIDs")
    p.add_argument("jids", nargs="*", metavar="JID", help="JID or domain to unblock")
    p.add_argument("--all", action="store_true", help="unblock everybody")
    g.command("blocked", blocked, "list blocked JIDs (not found: the server cannot block)")
