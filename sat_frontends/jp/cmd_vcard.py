"""``jp vcard``: read anyone's vCard, change ours (XEP-0054 vcard-temp).

Bridge members: ``VCardGet`` (cached by the daemon; read from its cache while the profile
is offline), ``VCardSet`` (changes the fields given, keeps the others).
"""

from __future__ import annotations

from sat_frontends.jp.base import Context, Exit, Group, JpError, record_text

#: fields holding a list of values
LIST_FIELDS = ("EMAIL", "TEL")
#: the order fields are shown in
ORDER = (
    "FN", "NICKNAME", "PREFIX", "GIVEN", "MIDDLE", "FAMILY", "SUFFIX", "BDAY", "EMAIL", "TEL",
    "URL", "ORG", "TITLE", "ROLE", "JABBERID", "DESC", "NOTE",
    "PHOTO_TYPE", "PHOTO_HASH", "PHOTO_URL",
)  # fmt: skip


def _text(fields: dict) -> str:
    keys = [k for k in ORDER if k in fields] + sorted(k for k in fields if k not in ORDER)
    return record_text(fields, keys) or "(empty vCard)"


async def get(ctx: Context):
    fields = await ctx.call("VCardGet", await ctx.profile(), ctx.args.jid or "")
    ctx.out(fields, _text)


def _fields(ctx: Context) -> dict:
    a = ctx.args
    if a.assignments == ["-"]:
        import json

        try:
            data = json.loads(ctx.read_stdin("vCard (a JSON object)"))
        except ValueError as e:
            raise JpError(Exit.USAGE, f"the vCard on standard input is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise JpError(Exit.USAGE, "the vCard on standard input must be a JSON object")
        # what VCardGet returns may come back as it is: the photo is set with jp avatar set
        return {k.upper(): v for k, v in data.items() if not k.upper().startswith("PHOTO_")}
    fields: dict = {}
    for pair in a.assignments:
        key, sep, value = pair.partition("=")
        key = key.strip().upper()
        if not sep or not key:
            raise JpError(Exit.USAGE, f"{pair!r}: expected FIELD=VALUE (or '-' for JSON)")
        if key in LIST_FIELDS:
            values = fields.setdefault(key, [])
            if value:
                values.append(value)
        elif key in fields:
            raise JpError(Exit.USAGE, f"{key} given twice (only EMAIL and TEL take several)")
        else:
            fields[key] = value
    return fields


async def set_(ctx: Context):
    fields = _fields(ctx)
    if not fields:
        raise JpError(Exit.USAGE, "nothing to change")
    await ctx.call("VCardSet", await ctx.profile(), fields)
    ctx.out(fields, "")


def build(parser) -> None:
    g = Group(parser)
    p = g.command("get", get, "show a vCard (ours by default)")
    p.add_argument(
        "jid", nargs="?", help="entity: bare JID, or a room occupant's full JID (default: us)"
    )
    p = g.command(
        "set",
        set_,
        "change fields of our vCard (the others are kept; an empty value removes a field)",
        epilog="FIELD: FN, NICKNAME, GIVEN, FAMILY, MIDDLE, PREFIX, SUFFIX, BDAY, URL, NOTE, "
        "DESC, TITLE, ROLE, ORG, JABBERID, EMAIL and TEL (repeat them for several values).\n"
        "The photo is the avatar: jp avatar set FILE.\n"
        "examples:\n  jp vcard set FN='Alice Liddell' NICKNAME=alice EMAIL=a@example.org\n"
        "  jp vcard get -j | jq '.NOTE = \"back on Monday\"' | jp vcard set -",
    )
    p.add_argument(
        "assignments",
        nargs="+",
        metavar="FIELD=VALUE",
        help="fields to change, or '-' to read a JSON object on stdin (as vcard get -j prints)",
    )
