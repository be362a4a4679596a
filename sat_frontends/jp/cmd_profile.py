"""``jp profile``: create, delete, list, default, connect, disconnect, info, status."""

from __future__ import annotations

import sys

from sat_frontends.jp.base import Context, Exit, Group, JpError


async def list_(ctx: Context):
    profiles = await ctx.call("ProfilesList")
    ctx.out(profiles, lambda data: "\n".join(data))


async def create(ctx: Context):
    a = ctx.args
    xmpp_password = ctx.secret(a.xmpp_password, "XMPP password", allow_empty=False)
    profile_password = (
        ctx.secret(a.profile_password, "profile password")
        if (a.profile_password is not None)
        else ""
    )
    options: dict = {}
    if a.host:
        options["host"] = a.host
    if a.port:
        options["port"] = a.port
    if a.direct_tls:
        options["direct_tls"] = True
    if a.autoconnect:
        options["autoconnect"] = True
    if a.resource:
        options["resource"] = a.resource
    await ctx.call("ProfileCreate", a.name, a.jid, xmpp_password, profile_password, options)
    if a.default:
        await ctx.call("ProfileDefaultSet", a.name)
    connected = None
    if a.connect:
        connected = await ctx.call("ProfileConnect", a.name, profile_password)
    result = {"name": a.name, "jid": a.jid}
    if a.connect:
        result["connected"] = True
    ctx.out(
        result,
        f"profile {a.name} created" + (" and connected" if connected is not None else ""),
    )


async def delete(ctx: Context):
    a = ctx.args
    ctx.confirm(f"delete profile {a.name!r} with its whole history", a.yes)
    await ctx.call("ProfileDelete", a.name)
    ctx.out({"name": a.name, "deleted": True}, f"profile {a.name} deleted")


async def default(ctx: Context):
    a = ctx.args
    if a.name:
        await ctx.call("ProfileDefaultSet", a.name)
        ctx.out({"default": a.name}, f"default profile: {a.name}")
        return
    name = await ctx.call("ProfileDefaultGet")
    if not name:
        raise JpError(Exit.NOT_FOUND, "no default profile set")
    ctx.out({"default": name}, name)


async def connect(ctx: Context):
    a = ctx.args
    profile = await ctx.profile()
    password = (
        ctx.secret(a.profile_password, "profile password")
        if (a.profile_password is not None)
        else ""
    )
    from sat_frontends.bridge import errors

    try:
        fresh = await ctx.call("ProfileConnect", profile, password)
    except errors.PermissionDenied:
        if a.profile_password is not None or not sys.stdin.isatty():
            raise
        password = ctx.secret(None, f"password of profile {profile}")
        fresh = await ctx.call("ProfileConnect", profile, password)
    ctx.out(
        {"profile": profile, "connected": True, "already": not fresh},
        f"{profile}: " + ("connected" if fresh else "already connected"),
    )


async def disconnect(ctx: Context):
    profile = await ctx.profile()
    await ctx.call("ProfileDisconnect", profile)
    ctx.out({"profile": profile, "connected": False}, f"{profile}: disconnected")


async def info(ctx: Context):
    data = await ctx.call("ProfileInfoGet", await ctx.profile())
    ctx.out(data)


async def status(ctx: Context):
    profile = await ctx.profile()
    connected = await ctx.call("ProfileIsConnected", profile)
    ctx.out(
        {"profile": profile, "connected": connected},
        f"{profile}: {'connected' if connected else 'disconnected'}",
    )
    return Exit.OK if connected else Exit.NOT_CONNECTED


def build(parser) -> None:
    g = Group(parser)
    g.command("list", list_, "list the profiles", aliases=["ls"])

    p = g.command(
        "create",
        create,
        "create a profile for an existing XMPP account",
        epilog="Passwords given as '-' are read from stdin, one line each (XMPP password "
        "first); without the option, jp asks on a terminal.",
    )
    p.add_argument("name", help="new profile name")
    p.add_argument("jid", help="XMPP account (user@domain)")
    p.add_argument("-x", "--xmpp-password", metavar="PASSWORD", help="XMPP password, '-': stdin")
    p.add_argument(
        "-P",
        "--profile-password",
        metavar="PASSWORD",
        help="password protecting the profile's secrets ('-': stdin; default: none)",
    )
    p.add_argument("--host", help="server host to connect to (default: the JID's domain)")
    p.add_argument("--port", type=int, help="server port (default: 5222, 5223 with direct TLS)")
    p.add_argument("--direct-tls", action="store_true", help="TLS from the first byte")
    p.add_argument("--resource", help="XMPP resource")
    p.add_argument("--autoconnect", action="store_true", help="connect when the daemon starts")
    p.add_argument("-d", "--default", action="store_true", help="make it the default profile")
    p.add_argument("-c", "--connect", action="store_true", help="connect it right away")

    p = g.command("delete", delete, "delete a profile with its history", aliases=["rm"])
    p.add_argument("name", help="profile to delete")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    p = g.command("default", default, "show the default profile, or set it")
    p.add_argument("name", nargs="?", help="new default profile")

    p = g.command("connect", connect, "connect a profile to its XMPP server", timeout=60.0)
    p.add_argument(
        "-P",
        "--profile-password",
        metavar="PASSWORD",
        help="the profile's password ('-': stdin; asked on a terminal if needed)",
    )
    g.command("disconnect", disconnect, "disconnect a profile")
    g.command("info", info, "state of a profile's session")
    g.command(
        "status",
        status,
        "whether a profile is connected (exit code 0 if it is, 4 if not)",
    )
