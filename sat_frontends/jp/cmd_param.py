"""``jp param``: list, get, set the daemon's parameters."""

from __future__ import annotations

from sat_frontends.jp.base import Context, Group, scalar_text


async def list_(ctx: Context):
    params = await ctx.call("ParamsList")
    if ctx.args.category:
        params = [p for p in params if p.get("category") == ctx.args.category]

    def text(data):
        lines = []
        for p in data:
            default = scalar_text(p.get("default", ""))
            head = f"{p.get('category')}/{p.get('name')} ({p.get('type')}, {p.get('scope', '')})"
            lines.append(f"{head} default={default!r}\n    {p.get('doc', '')}")
        return "\n".join(lines)

    ctx.out(params, text)


async def get(ctx: Context):
    a = ctx.args
    value = await ctx.call("ParamGet", a.category, a.name, ctx.profile_arg)
    ctx.out({"category": a.category, "name": a.name, "value": value}, value)


async def set_(ctx: Context):
    a = ctx.args
    await ctx.call("ParamSet", a.category, a.name, a.value, ctx.profile_arg)
    ctx.out({"category": a.category, "name": a.name, "value": a.value}, "")


def build(parser) -> None:
    g = Group(parser)
    p = g.command("list", list_, "every parameter with its type and documentation", aliases=["ls"])
    p.add_argument("category", nargs="?", help="only this category")
    p = g.command("get", get, "read a parameter (secrets read as empty)")
    p.add_argument("category", help="parameter category (e.g. connection)")
    p.add_argument("name", help="parameter name (e.g. autoconnect)")
    p = g.command("set", set_, "change a parameter (checked against its type)")
    p.add_argument("category", help="parameter category")
    p.add_argument("name", help="parameter name")
    p.add_argument("value", help="new value as text (true/false for booleans)")
