"""``jp info``: service discovery, software version, ping, daemon health."""

from __future__ import annotations

from sat_frontends.jp.base import Context, Exit, Group, record_text, scalar_text


def _disco_text(data: dict) -> str:
    lines = [
        f"entity: {data.get('jid', '')}" + (f"  node: {data['node']}" if data.get("node") else "")
    ]
    identities = data.get("identities") or []
    if identities:
        lines.append("identities:")
        for ident in identities:
            name = f"  {ident['name']}" if ident.get("name") else ""
            lang = f" [{ident['lang']}]" if ident.get("lang") else ""
            lines.append(f"  {ident.get('category', '?')}/{ident.get('type', '?')}{name}{lang}")
    features = data.get("features") or []
    if features:
        lines.append("features:")
        lines += [f"  {f}" for f in features]
    for ext in data.get("extensions") or []:
        lines.append(f"extension {ext.get('form_type', '')}:")
        for var, values in (ext.get("fields") or {}).items():
            lines.append(f"  {var}: {scalar_text(values)}")
    return "\n".join(lines)


async def disco(ctx: Context):
    a = ctx.args
    data = await ctx.call("DiscoInfoGet", await ctx.profile(), a.jid or "", a.node or "")
    ctx.out(data, _disco_text)


async def items(ctx: Context):
    a = ctx.args
    data = await ctx.call("DiscoItemsGet", await ctx.profile(), a.jid or "", a.node or "")
    ctx.out(
        data,
        lambda d: "\n".join(
            str(i.get("jid", "?"))
            + (f"  node={i['node']}" if i.get("node") else "")
            + (f"  {i['name']}" if i.get("name") else "")
            for i in d
        ),
    )


async def version(ctx: Context):
    a = ctx.args
    data = await ctx.call("SoftwareVersionGet", await ctx.profile(), a.jid or "")
    ctx.out(data, lambda d: record_text(d, ("name", "version", "os")) or "(nothing told)")


async def ping(ctx: Context):
    a = ctx.args
    target = a.jid or "server"
    rtt = await ctx.call("Ping", await ctx.profile(), a.jid or "")
    ctx.out({"jid": a.jid or "", "rtt": rtt}, f"pong from {target} in {rtt * 1000:.1f} ms")


async def health(ctx: Context):
    version = await ctx.call("VersionGet")
    ready = await ctx.call("IsReady")
    plugins = await ctx.call("HealthGet")
    failed = [p for p in plugins if not p.get("loaded") and not p.get("disabled")]
    data = {"version": version, "ready": ready, "plugins": plugins, "ok": ready and not failed}

    def text(d):
        lines = [f"daemon {d['version']}: {'ready' if d['ready'] else 'starting'}"]
        for p in sorted(d["plugins"], key=lambda p: str(p.get("name", ""))):
            if p.get("loaded"):
                state = "loaded"
            elif p.get("disabled"):
                state = "disabled"
            else:
                state = f"FAILED: {p.get('error') or 'unknown error'}"
            lines.append(f"  {p.get('name', p.get('module', '?')):<12} {state}")
        return "\n".join(lines)

    ctx.out(data, text)
    return Exit.OK if data["ok"] else Exit.ERROR


def build(parser) -> None:
    g = Group(parser)
    p = g.command("disco", disco, "service discovery: identities and features of an entity")
    p.add_argument("jid", nargs="?", help="entity (default: our server)")
    p.add_argument("-n", "--node", help="node to ask about")
    p = g.command("items", items, "service discovery: items of an entity")
    p.add_argument("jid", nargs="?", help="entity (default: our server)")
    p.add_argument("-n", "--node", help="node to list")
    p = g.command("version", version, "software name and version of an entity (XEP-0092)")
    p.add_argument("jid", nargs="?", help="entity, a full JID for a client (default: our server)")
    p = g.command("ping", ping, "ping an entity (XEP-0199) and show the round trip")
    p.add_argument("jid", nargs="?", help="entity (default: our server)")
    g.command(
        "health",
        health,
        "daemon version and the load status of every plugin (exit 1 if one failed)",
    )
