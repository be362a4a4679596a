"""``jp avatar``: where anyone's avatar is cached, publish ours (XEP-0084, with the vCard
fallback XEP-0153).

Bridge members: ``AvatarGet`` (path of the image in the daemon's cache), ``AvatarSet``
(publish an image file; the daemon reads it: jp sends its absolute path).
"""

from __future__ import annotations

import os

from sat_frontends.jp.base import Context, Exit, Group, JpError


async def get(ctx: Context):
    a = ctx.args
    path = await ctx.call("AvatarGet", await ctx.profile(), a.jid or "")
    if not path:
        raise JpError(Exit.NOT_FOUND, f"no avatar known for {a.jid or 'us'}")
    ctx.out({"jid": a.jid or "", "path": path}, path)


async def set_(ctx: Context):
    path = os.path.abspath(os.path.expanduser(ctx.args.file))
    if not os.path.isfile(path):
        raise JpError(Exit.NOT_FOUND, f"no such file: {ctx.args.file}")
    avatar_id = await ctx.call("AvatarSet", await ctx.profile(), path)
    ctx.out({"id": avatar_id, "file": path}, "")


def build(parser) -> None:
    g = Group(parser)
    p = g.command(
        "get",
        get,
        "print the path of an avatar in the daemon's cache (exit 3 if none is known)",
        epilog='example:\n  cp "$(jp avatar get bob@example.org)" bob-avatar',
    )
    p.add_argument(
        "jid", nargs="?", help="contact: bare JID, or a room occupant's full JID (default: us)"
    )
    p = g.command("set", set_, "publish our avatar (a PNG image; JPEG, GIF or WebP without PEP)")
    p.add_argument("file", help="image file")
