"""``jp``: the command-line client of the SàT daemon, for people and for scripts.

Start-up is kept short: only the group named on the command line is imported and
built, and the D-Bus client (dbus-fast, asyncio) is imported only by commands that
talk to the daemon.
"""

from __future__ import annotations

import importlib
import os
import sys

from sat_frontends.jp.base import (
    Context,
    Exit,
    HelpFormatter,
    JpError,
    Parser,
    common_options,
    error_to_exit,
    exit_codes_text,
    one_line,
)

#: group name -> (module in sat_frontends.jp, one-line help, aliases).
#: A new group (blog, file, encryption...) is one line here plus its cmd_*.py module.
GROUPS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "profile": ("cmd_profile", "profiles: create, delete, list, default, connect, info", ()),
    "roster": ("cmd_roster", "contact list: list, add, remove, subscribe, block", ()),
    "presence": ("cmd_presence", "our presence and our contacts'", ()),
    "message": (
        "cmd_message",
        "messages: send, history, search, wait, listen, correct, retract, react, sync",
        ("msg",),
    ),
    "muc": ("cmd_muc", "group chats: join, leave, list, occupants, invite, config, kick", ()),
    "bookmarks": ("cmd_bookmarks", "group chat bookmarks: list, add, remove", ()),
    "vcard": ("cmd_vcard", "vCards: show anyone's, change ours", ()),
    "avatar": ("cmd_avatar", "avatars: find anyone's, publish ours", ()),
    "info": ("cmd_info", "disco, software version, ping, daemon health", ()),
    "param": ("cmd_param", "parameters: list, get, set", ()),
    "debug": ("cmd_debug", "call any bridge method, monitor signals", ()),
    "completion": ("completion", "print the bash or zsh completion script", ()),
}
ALIASES = {alias: name for name, (_, _, aliases) in GROUPS.items() for alias in aliases}

DESCRIPTION = """\
Command-line client of the Salut à Toi daemon: everything the daemon does, scriptable.
Every command takes -p/--profile (else the default profile), --output text|json
and --timeout; these options may also come before the group."""

EPILOG_TEXT = """\
examples:
  jp profile create alice alice@example.org --xmpp-password - <<< 'secret'
  jp profile connect -p alice
  echo "Hello Bob" | jp message send bob@example.org
  jp message wait --from bob@example.org --timeout 60 -j | jq -r .body
  jp message search -j "café" | jq -r '.[].snippet'
  jp muc join room@conference.example.org -n alice
  jp message send room@conference.example.org "Hello all"
  jp debug bridge call VersionGet

environment:
  SAT_BRIDGE_BUS  the daemon's bus: session, system, an address, or 'address' to
                  use $SAT_BRIDGE_BUS_ADDRESS (as the daemon does); default: session
  JP_DEBUG        set to 1 to get a traceback on unexpected errors

"""

_VALUE_OPTIONS = {"-p", "--profile", "-o", "--output", "--timeout", "--bus"}


def find_group(argv: list[str]) -> str | None:
    """The group named on the command line (skipping the options before it)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg in _VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return ALIASES.get(arg, arg)
    return None


def version() -> str:
    from sat_frontends.jp import __version__

    return __version__


def build_parser(load: set[str] | None = None) -> Parser:
    """The argument parser; only the groups in ``load`` get their sub-commands
    (None: all of them, as the completion generator needs)."""
    parser = Parser(
        prog="jp",
        description=DESCRIPTION,
        epilog=EPILOG_TEXT + exit_codes_text(),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"jp {version()}")
    common_options(parser, top=True)
    sub = parser.add_subparsers(title="groups", metavar="GROUP", dest="group", parser_class=Parser)
    for name, (module_name, help_text, aliases) in GROUPS.items():
        group_parser = sub.add_parser(
            name,
            help=help_text,
            aliases=list(aliases),
            description=help_text[:1].upper() + help_text[1:] + ".",
            formatter_class=HelpFormatter,
            epilog=exit_codes_text() if name != "completion" else None,
        )
        if load is None or name in load:
            module = importlib.import_module(f"sat_frontends.jp.{module_name}")
            module.build(group_parser)
    return parser


def _report(err: JpError) -> int:
    sys.stderr.write(f"jp: {err.label}: {one_line(err.message)}\n")
    sys.stderr.flush()
    return err.code


async def _run(args) -> int:
    import asyncio

    ctx = Context(args)
    timeout = args.effective_timeout
    try:
        if timeout:
            try:
                result = await asyncio.wait_for(args.func(ctx), timeout)
            except TimeoutError:
                raise JpError(Exit.TIMEOUT, f"nothing within {timeout:g} s (--timeout)") from None
        else:
            result = await args.func(ctx)
    finally:
        await ctx.close()
    return Exit.OK if result is None else int(result)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    group = find_group(argv)
    try:
        parser = build_parser({group} if group in GROUPS else set())
        if not argv:
            parser.print_help()
            return Exit.USAGE
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            raise JpError(Exit.USAGE, "no group given (see 'jp --help')")
    except JpError as err:
        return _report(err)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else Exit.OK
    if args.timeout is not None:
        args.effective_timeout = args.timeout or None
    else:
        args.effective_timeout = getattr(args, "default_timeout", 30.0)
    try:
        import asyncio

        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return Exit.INTERRUPTED
    except BrokenPipeError:
        # the reader went away (jp ... | head): not an error of ours
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return Exit.OK
    except Exception as exc:
        if os.environ.get("JP_DEBUG") and not isinstance(exc, JpError):
            import traceback

            traceback.print_exc()
        err = error_to_exit(exc)
        if err.label == "error" and not os.environ.get("JP_DEBUG"):
            err.message += " (JP_DEBUG=1 shows the traceback)"
        return _report(err)


if __name__ == "__main__":
    sys.exit(main())
