"""IRC-like commands for text frontends (``/join``, ``/msg``, ``/correct``...).

:class:`Commands` parses a line typed in an input field and runs the command against the
:class:`~.host.QuickApp`, in the context of the current window (:class:`Context`: its
conversation and profile). Commands that need the frontend itself (help, search results,
windows) call methods of ``ctx.ui`` (see :class:`CommandUI`). A command whose bridge member is
missing (plugin not loaded) fails with :class:`~.features.MissingFeature`, a sentence saying
so. Any failure is shown to the user; nothing here raises to the UI loop.

Each command declares its usage, one line of help and the kind of its first argument (for
tab completion: ``jid``, ``room``, ``nick``, ``profile``, ``command``).

Room administration (XEP-0045): ``/kick``, ``/ban``, ``/role``, ``/affiliation``, ``/config``
and ``/destroy`` act on the room of the current window; what the room refuses (not a
moderator, not an owner) comes back as one sentence saying who may do it.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sat_frontends.bridge import errors as bridge_errors
from sat_frontends.quick_frontend import jid as jidlib
from sat_frontends.quick_frontend.chat import CHAT, GROUP, PRIVATE, Conversation
from sat_frontends.quick_frontend.features import MissingFeature, arity
from sat_frontends.quick_frontend.forms import DataForm, FormError

log = logging.getLogger(__name__)

__all__ = ["Command", "CommandError", "CommandUI", "Commands", "Context", "SHOWS"]

SHOWS = {"available": "", "online": "", "chat": "chat", "away": "away", "xa": "xa", "dnd": "dnd"}
ROLES = ("moderator", "participant", "visitor", "none")
AFFILIATIONS = ("owner", "admin", "member", "outcast", "none")


class CommandError(Exception):
    """A command was misused or failed; the text is for the user."""


class CommandUI(Protocol):
    """What a frontend offers to commands (every method may be a no-op)."""

    def show_help(self, topic: str | None) -> None: ...
    def show_search(self, profile: str, query: str, results: list, scope: str) -> None: ...
    def open_conversation(self, conv: Conversation) -> None: ...
    def close_window(self) -> None: ...
    def clear_window(self) -> None: ...
    def switch_window(self, number: int) -> None: ...
    def show_profiles(self) -> None: ...
    def show_form(
        self,
        title: str,
        form: DataForm,
        on_submit: Callable[[dict], Awaitable[str | None]],
        conv: Conversation | None = None,
    ) -> None: ...
    def show_questions(self, profile: str | None) -> None: ...
    def set_input(self, text: str) -> None: ...
    def quit(self) -> None: ...


@dataclass
class Context:
    app: Any
    conv: Conversation | None = None
    profile: str | None = None
    ui: Any = None
    #: lines to show the user (the frontend displays them after the command)
    output: list[tuple[str, str]] = field(default_factory=list)

    def say(self, text: str, level: str = "info") -> None:
        self.output.append((text, level))

    def need_profile(self) -> str:
        if self.profile and self.profile in self.app.sessions:
            return self.profile
        if len(self.app.sessions) == 1:
            return next(iter(self.app.sessions))
        if not self.app.sessions:
            raise CommandError("no profile is connected (F4 or /profiles to log in)")
        raise CommandError("several profiles are open: run this from one of their windows")

    def need_conv(self, *kinds: str) -> Conversation:
        conv = self.conv
        if conv is None or conv.kind not in (kinds or (CHAT, GROUP, PRIVATE)):
            what = {GROUP: "a room", CHAT: "a chat", PRIVATE: "a private chat"}
            wanted = " or ".join(what[k] for k in kinds) if kinds else "a conversation"
            raise CommandError(f"this command works in {wanted} window")
        return conv


@dataclass
class Command:
    name: str
    handler: Callable[[Context, str], Awaitable[None]]
    usage: str
    help: str
    arg: str = ""
    aliases: tuple[str, ...] = ()


class Commands:
    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}
        self._aliases: dict[str, str] = {}
        for cmd in _builtin():
            self.add(cmd)

    def add(self, command: Command) -> None:
        self.commands[command.name] = command
        for alias in command.aliases:
            self._aliases[alias] = command.name

    def names(self) -> list[str]:
        return sorted(self.commands)

    def get(self, name: str) -> Command | None:
        name = name.lower()
        return self.commands.get(self._aliases.get(name, name))

    def arg_kinds(self) -> dict[str, str]:
        kinds = {}
        for command in self.commands.values():
            if command.arg:
                kinds[command.name] = command.arg
                for alias in command.aliases:
                    kinds[alias] = command.arg
        return kinds

    @staticmethod
    def is_command(line: str) -> bool:
        """A line starting with one '/' (``//text`` sends ``/text``)."""
        return line.startswith("/") and not line.startswith("//") and len(line) > 1

    @staticmethod
    def split(line: str) -> tuple[str, str]:
        body = line[1:]
        name, _, rest = body.partition(" ")
        if "\n" in name:
            name, _, more = name.partition("\n")
            rest = more + (" " + rest if rest else "")
        return name.lower(), rest.strip(" ")

    async def run(self, line: str, ctx: Context) -> bool:
        """Run a command line; False if the command is unknown."""
        name, rest = self.split(line)
        command = self.get(name)
        if command is None:
            close = [n for n in self.names() if n.startswith(name[:2])]
            hint = f" (did you mean /{close[0]}?)" if close else ""
            ctx.say(f"unknown command /{name}{hint}: /help lists them", "error")
            return False
        try:
            await command.handler(ctx, rest)
        except CommandError as e:
            ctx.say(str(e), "error")
        except MissingFeature as e:
            ctx.say(f"/{command.name}: {e}", "error")
        except Exception as e:
            message = getattr(e, "message", None) or str(e) or type(e).__name__
            ctx.say(f"/{command.name} failed: {message}", "error")
        return True

    def help_lines(self, name: str | None = None) -> list[str]:
        if name:
            command = self.get(name.lstrip("/"))
            if command is None:
                return [f"no command /{name}"]
            lines = [f"/{command.name} {command.usage}".rstrip(), f"  {command.help}"]
            if command.aliases:
                lines.append("  aliases: " + ", ".join(f"/{a}" for a in command.aliases))
            return lines
        return [
            f"/{c.name} {c.usage}".rstrip().ljust(30) + f" {c.help}"
            for c in sorted(self.commands.values(), key=lambda c: c.name)
        ]


# ----------------------------------------------------------------------------- helpers


def _words(rest: str) -> list[str]:
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


def _last_own(ctx: Context, conv: Conversation):
    for message in reversed(conv.messages):
        if message.outgoing and message.uid and not message.retracted:
            return message
    raise CommandError("you have not sent any message here yet")


def _last_other(conv: Conversation):
    for message in reversed(conv.messages):
        if not message.outgoing and message.uid and message.kind != "info":
            return message
    raise CommandError("no message to react to")


async def _room_jid(ctx: Context, profile: str, name: str) -> str:
    if "@" in name:
        return name
    service = ""
    try:
        if ctx.app.features.has_member("MucServicesGet"):
            services = await ctx.app.bridge.call("MucServicesGet", profile)
            service = services[0] if services else ""
    except Exception as e:
        log.debug("no MUC service found: %s", e)
    if not service:
        own = ctx.app.sessions[profile].jid
        service = f"conference.{jidlib.domain(own)}"
    return f"{name}@{service}"


def _room_of(ctx: Context, conv: Conversation):
    session = ctx.app.sessions.get(conv.profile)
    room = session.contacts.rooms.get(conv.jid) if session else None
    if room is None:
        raise CommandError("you are not in this room (/join it first)")
    return room


def _need_occupant(ctx: Context, conv: Conversation, nick: str):
    room = _room_of(ctx, conv)
    if nick not in room.occupants:
        # a nick typed with another case is still found
        same = [n for n in room.occupants if n.casefold() == nick.casefold()]
        if len(same) == 1:
            return same[0]
        raise CommandError(f"no occupant {nick!r} in this room (/occupants lists them)")
    return nick


def _refused(error: Exception, what: str, who_may: str) -> Exception:
    """A clear sentence for what the room (or the daemon) refused."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    if isinstance(error, bridge_errors.PermissionDenied):
        return CommandError(f"you may not {what}: {who_may} only ({message})")
    if isinstance(error, bridge_errors.NotFound | bridge_errors.InvalidArgument):
        return CommandError(f"cannot {what}: {message}")
    if isinstance(error, bridge_errors.NotConnected):
        return CommandError(f"cannot {what}: not connected ({message})")
    return error


async def _admin_call(ctx: Context, what: str, who_may: str, feature: str, *args) -> None:
    try:
        await ctx.app.features.call(feature, *args)
    except (MissingFeature, CommandError):
        raise
    except bridge_errors.BridgeError as e:
        raise _refused(e, what, who_may) from None


# ----------------------------------------------------------------------------- commands


async def cmd_help(ctx: Context, rest: str) -> None:
    if ctx.ui is not None and hasattr(ctx.ui, "show_help"):
        ctx.ui.show_help(rest.strip() or None)
    else:
        for line in Commands().help_lines(rest.strip() or None):
            ctx.say(line)


async def cmd_join(ctx: Context, rest: str) -> None:
    words = _words(rest)
    if not words:
        raise CommandError("usage: /join room[@service][/nick] [password]")
    profile = ctx.need_profile()
    target = words[0]
    password = words[1] if len(words) > 1 else ""
    room = await _room_jid(ctx, profile, jidlib.bare(target))
    nick = jidlib.resource(target)
    existing = ctx.app.get_conversation(profile, room)
    ctx.say(f"joining {room}…")
    conv = await ctx.app.join(profile, room, nick, password)
    if conv is not None and ctx.ui is not None:
        ctx.ui.open_conversation(conv)
    if existing is None and conv is not None:
        ctx.output.clear()


async def cmd_part(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv()
    if conv.kind == GROUP:
        await ctx.app.leave(conv, rest)
    if ctx.ui is not None:
        ctx.ui.close_window()


async def cmd_close(ctx: Context, rest: str) -> None:
    if ctx.ui is not None:
        ctx.ui.close_window()


async def cmd_nick(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv(GROUP)
    nick = rest.strip()
    if not nick:
        ctx.say(f"your nick in this room is {conv.own_nick or '?'}")
        return
    new = await ctx.app.features.call("muc_nick", conv.profile, conv.jid, nick)
    if new:
        conv.own_nick = new


async def cmd_me(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv()
    if not rest.strip():
        raise CommandError("usage: /me does something")
    await ctx.app.send(conv, "/me " + rest)


async def cmd_msg(ctx: Context, rest: str) -> None:
    target, _, text = rest.partition(" ")
    if not target:
        raise CommandError("usage: /msg jid [message]")
    profile = ctx.need_profile()
    session = ctx.app.sessions[profile]
    # a nick of the current room means a private message to that occupant
    if ctx.conv is not None and ctx.conv.kind == GROUP and "@" not in target:
        room = session.contacts.rooms.get(ctx.conv.jid)
        if room is not None and target in room.occupants:
            target = f"{ctx.conv.jid}/{target}"
    if not jidlib.is_valid(target):
        raise CommandError(f"{target!r} is not a valid JID")
    conv = ctx.app.conversation(profile, target, by_user=True)
    if ctx.ui is not None:
        ctx.ui.open_conversation(conv)
    if text.strip():
        await ctx.app.send(conv, text)


async def cmd_invite(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv(GROUP)
    who, _, reason = rest.partition(" ")
    if not who:
        raise CommandError("usage: /invite jid [reason]")
    await ctx.app.features.call("muc_invite", conv.profile, conv.jid, who, reason.strip())
    ctx.say(f"{who} invited")


async def cmd_topic(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv(GROUP)
    if not rest.strip():
        ctx.say(f"subject: {conv.subject or '(none)'}")
        return
    await ctx.app.features.call("muc_subject", conv.profile, conv.jid, rest.strip())


async def cmd_search(ctx: Context, rest: str) -> None:
    words = rest.split()
    everywhere = False
    if words and words[0] in ("-a", "-all", "--all"):
        everywhere = True
        words = words[1:]
    query = " ".join(words)
    if not query:
        raise CommandError("usage: /search [-all] words (word* for a prefix)")
    profile = ctx.need_profile()
    filters: dict = {}
    scope = "all conversations"
    if not everywhere and ctx.conv is not None and ctx.conv.kind in (CHAT, GROUP, PRIVATE):
        filters["with_jid"] = jidlib.bare(ctx.conv.jid)
        scope = ctx.conv.title
    await ctx.app.features.require("history_search")
    results = await ctx.app.bridge.history_search(profile, query, filters, 200)
    if ctx.ui is not None and hasattr(ctx.ui, "show_search"):
        ctx.ui.show_search(profile, query, results, scope)
    else:
        for r in results:
            ctx.say(f"{r.get('from', '')}: {r.get('snippet') or r.get('body', '')}")


async def cmd_correct(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv()
    last = _last_own(ctx, conv)
    if not rest.strip():
        if ctx.ui is not None:
            body = ("/me " + last.body) if last.kind == "me" else last.body
            ctx.ui.set_input(f"/correct {body}")
        return
    member = await ctx.app.features.require("correct")
    args = [conv.profile, last.uid, rest]
    if (arity(ctx.app.bridge, member) or 4) >= 4:
        args.append({})
    await ctx.app.bridge.call(member, *args)


async def cmd_retract(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv()
    last = _last_own(ctx, conv)
    member = await ctx.app.features.require("retract")
    args = [conv.profile, last.uid]
    if (arity(ctx.app.bridge, member) or 3) >= 3:
        args.append({"reason": rest.strip()} if rest.strip() else {})
    await ctx.app.bridge.call(member, *args)


async def cmd_react(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv()
    target = _last_other(conv)
    emojis = rest.split()
    if not emojis:
        raise CommandError("usage: /react emoji… (your whole set of reactions; /react - clears)")
    if emojis == ["-"]:
        emojis = []
    member = await ctx.app.features.require("react")
    await ctx.app.bridge.call(member, conv.profile, target.uid, emojis)


async def cmd_block(ctx: Context, rest: str) -> None:
    jids = rest.split()
    if not jids:
        conv = ctx.need_conv(CHAT, PRIVATE)
        jids = [conv.jid]
    profile = ctx.need_profile()
    await ctx.app.features.call("block", profile, jids)
    ctx.say("blocked: " + ", ".join(jids))


async def cmd_unblock(ctx: Context, rest: str) -> None:
    jids = rest.split()
    if not jids:
        conv = ctx.need_conv(CHAT, PRIVATE)
        jids = [conv.jid]
    profile = ctx.need_profile()
    await ctx.app.features.call("unblock", profile, jids)
    ctx.say("unblocked: " + ", ".join(jids))


async def cmd_accept(ctx: Context, rest: str) -> None:
    jid = rest.strip() or (ctx.conv.jid if ctx.conv is not None and ctx.conv.kind == CHAT else "")
    if not jid:
        raise CommandError("usage: /accept jid")
    profile = ctx.need_profile()
    await ctx.app.features.call("subscription_send", profile, jid, "subscribed")
    contact = ctx.app.sessions[profile].contacts.get(jid)
    if contact is None or contact.subscription in ("none", "from"):
        await ctx.app.features.call("subscription_send", profile, jid, "subscribe")
    ctx.say(f"{jid} can now see your presence")


async def cmd_deny(ctx: Context, rest: str) -> None:
    jid = rest.strip()
    if not jid:
        raise CommandError("usage: /deny jid")
    profile = ctx.need_profile()
    await ctx.app.features.call("subscription_send", profile, jid, "unsubscribed")
    ctx.say(f"{jid} will not see your presence")


async def cmd_add(ctx: Context, rest: str) -> None:
    words = _words(rest)
    if not words:
        raise CommandError("usage: /add jid [name] [group…]")
    jid, name, groups = words[0], (words[1] if len(words) > 1 else ""), words[2:]
    if not jidlib.is_valid(jid):
        raise CommandError(f"{jid!r} is not a valid JID")
    profile = ctx.need_profile()
    await ctx.app.features.call("roster_add", profile, jid, name, groups)
    await ctx.app.features.call("subscription_send", profile, jid, "subscribe")
    ctx.say(f"{jid} added; a subscription request was sent")


async def cmd_status(ctx: Context, rest: str) -> None:
    words = rest.split(" ", 1)
    show_word = words[0].lower() if words and words[0] else "available"
    if show_word not in SHOWS:
        raise CommandError("usage: /status available|chat|away|xa|dnd [message]")
    text = words[1] if len(words) > 1 else ""
    profiles = [ctx.profile] if ctx.profile in ctx.app.sessions else list(ctx.app.sessions)
    if not profiles:
        raise CommandError("no profile is connected")
    for profile in profiles:
        statuses = {"default": text} if text else {}
        await ctx.app.bridge.presence_set(profile, SHOWS[show_word], statuses, 0)
        session = ctx.app.sessions[profile]
        session.show, session.status = SHOWS[show_word], text
    ctx.app.events.emit("connection", ctx.app.sessions[profiles[0]])


async def cmd_clear(ctx: Context, rest: str) -> None:
    if ctx.ui is not None:
        ctx.ui.clear_window()


async def cmd_win(ctx: Context, rest: str) -> None:
    try:
        number = int(rest.strip())
    except ValueError:
        raise CommandError("usage: /win number") from None
    if ctx.ui is not None:
        ctx.ui.switch_window(number)


async def cmd_profiles(ctx: Context, rest: str) -> None:
    if ctx.ui is not None:
        ctx.ui.show_profiles()


async def cmd_disconnect(ctx: Context, rest: str) -> None:
    profile = rest.strip() or ctx.need_profile()
    await ctx.app.logout(profile)
    ctx.say(f"{profile} disconnected")


async def cmd_quit(ctx: Context, rest: str) -> None:
    if ctx.ui is not None:
        ctx.ui.quit()


async def cmd_occupants(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv(GROUP)
    session = ctx.app.sessions.get(conv.profile)
    room = session.contacts.rooms.get(conv.jid) if session else None
    if room is None:
        raise CommandError("you are not in this room")
    nicks = room.nicks()
    ctx.say(f"{len(nicks)} occupants: " + ", ".join(nicks))


async def cmd_kick(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv(GROUP)
    nick, _, reason = rest.strip().partition(" ")
    if not nick:
        raise CommandError("usage: /kick nick [reason]")
    nick = _need_occupant(ctx, conv, nick)
    await _admin_call(
        ctx,
        f"kick {nick}",
        "moderators",
        "muc_kick",
        conv.profile,
        conv.jid,
        nick,
        reason.strip(),
    )
    ctx.say(f"{nick} kicked" + (f" ({reason.strip()})" if reason.strip() else ""))


async def cmd_ban(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv(GROUP)
    who, _, reason = rest.strip().partition(" ")
    if not who:
        raise CommandError("usage: /ban nick|jid [reason]")
    room = _room_of(ctx, conv)
    if "@" not in who:
        who = _need_occupant(ctx, conv, who)
        occupant = room.occupants[who]
        if not occupant.jid:
            raise CommandError(
                f"the room does not show {who}'s JID to you: /ban their bare JID instead"
            )
    elif not jidlib.is_valid(who):
        raise CommandError(f"{who!r} is not a valid JID")
    await _admin_call(
        ctx,
        f"ban {who}",
        "admins and owners",
        "muc_ban",
        conv.profile,
        conv.jid,
        who,
        reason.strip(),
    )
    ctx.say(f"{who} banned" + (f" ({reason.strip()})" if reason.strip() else ""))


async def cmd_role(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv(GROUP)
    words = rest.split(None, 2)
    if len(words) < 2 or words[1].lower() not in ROLES:
        raise CommandError(f"usage: /role nick {'|'.join(ROLES)} [reason]")
    nick = _need_occupant(ctx, conv, words[0])
    role = words[1].lower()
    reason = words[2].strip() if len(words) > 2 else ""
    await _admin_call(
        ctx,
        f"make {nick} {role}",
        "moderators (admins and owners for moderator)",
        "muc_role_set",
        conv.profile,
        conv.jid,
        nick,
        role,
        reason,
    )
    ctx.say(f"{nick} is now {role}" if role != "none" else f"{nick} kicked")


async def _list_affiliations(ctx: Context, conv: Conversation, which: list[str]) -> None:
    for affiliation in which:
        try:
            entries = await ctx.app.features.call(
                "muc_affiliations_get", conv.profile, conv.jid, affiliation
            )
        except (MissingFeature, CommandError):
            raise
        except bridge_errors.BridgeError as e:
            raise _refused(e, f"list the {affiliation}s", "admins and owners") from None
        names = ", ".join(
            e.get("jid", "") + (f" ({e['nick']})" if e.get("nick") else "") for e in entries
        )
        ctx.say(f"{affiliation}s ({len(entries)}): {names or '-'}")


async def cmd_affiliation(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv(GROUP)
    words = rest.split(None, 2)
    listable = [a for a in AFFILIATIONS if a != "none"]
    if not words:
        await _list_affiliations(ctx, conv, listable)
        return
    if len(words) == 1 and words[0].lower() in listable:
        await _list_affiliations(ctx, conv, [words[0].lower()])
        return
    if len(words) < 2 or words[1].lower() not in AFFILIATIONS:
        raise CommandError(f"usage: /affiliation [nick|jid {'|'.join(AFFILIATIONS)} [reason]]")
    who = words[0]
    affiliation = words[1].lower()
    reason = words[2].strip() if len(words) > 2 else ""
    if "@" not in who:
        who = _need_occupant(ctx, conv, who)
        if not _room_of(ctx, conv).occupants[who].jid:
            raise CommandError(
                f"the room does not show {who}'s JID to you: give their bare JID instead"
            )
    elif not jidlib.is_valid(who):
        raise CommandError(f"{who!r} is not a valid JID")
    await _admin_call(
        ctx,
        f"make {who} {affiliation}",
        "admins and owners (owners for owner and admin)",
        "muc_affiliation_set",
        conv.profile,
        conv.jid,
        who,
        affiliation,
        reason,
    )
    ctx.say(f"{who} is now {affiliation}" if affiliation != "none" else f"{who}: no affiliation")


async def cmd_config(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv(GROUP)
    _room_of(ctx, conv)
    profile, room = conv.profile, conv.jid
    try:
        record = await ctx.app.features.call("muc_config_get", profile, room)
    except (MissingFeature, CommandError):
        raise
    except bridge_errors.BridgeError as e:
        raise _refused(e, "configure this room", "owners") from None
    form = DataForm.from_record(record or {})
    if not form.editable_fields():
        raise CommandError("the room sent a configuration form without any field")

    async def submit(values: dict) -> str:
        try:
            changes = form.changes(values)
        except FormError as e:
            raise CommandError(str(e)) from None
        if not changes:
            return "nothing changed"
        try:
            await ctx.app.features.call("muc_config_set", profile, room, changes)
        except (MissingFeature, CommandError):
            raise
        except bridge_errors.BridgeError as e:
            raise _refused(e, "configure this room", "owners") from None
        names = ", ".join(form.get(var).title for var in changes)
        return f"room configuration saved ({names})"

    words = _words(rest)
    if words:
        # /config field value: one field, without the form
        field = form.get(words[0])
        if field is None or not field.editable:
            raise CommandError(f"no field {words[0]!r} in the room's configuration")
        if len(words) == 1:
            ctx.say(f"{field.title} [{field.var}]: {field.display() or '(empty)'}")
            return
        try:
            value = field.parse(" ".join(words[1:]))
        except FormError as e:
            raise CommandError(str(e)) from None
        ctx.say(await submit({field.var: value}))
        return
    if ctx.ui is not None and hasattr(ctx.ui, "show_form"):
        title = f"Configuration of {room}"
        ctx.ui.show_form(title, form, submit, conv)
        return
    for field in form.editable_fields():
        ctx.say(f"{field.title} [{field.var}]: {field.display() or '(empty)'}")


async def cmd_destroy(ctx: Context, rest: str) -> None:
    conv = ctx.need_conv(GROUP)
    _room_of(ctx, conv)
    reason = rest.strip()
    await _admin_call(
        ctx, "destroy this room", "owners", "muc_destroy", conv.profile, conv.jid, reason, ""
    )
    ctx.say("room destroyed" + (f" ({reason})" if reason else ""))


async def cmd_questions(ctx: Context, rest: str) -> None:
    profile = ctx.profile if ctx.profile in ctx.app.sessions else None
    questions = ctx.app.pending_questions(profile)
    if not questions:
        ctx.say("the daemon asks nothing")
        return
    if ctx.ui is not None and hasattr(ctx.ui, "show_questions"):
        ctx.ui.show_questions(profile)
        return
    for question in questions:
        ctx.say(f"[{question.profile}] {question.text} ({question.status_text()})")


def _builtin() -> list[Command]:
    return [
        Command("help", cmd_help, "[command]", "list commands and key bindings", "command"),
        Command(
            "join", cmd_join, "room[@service][/nick] [password]", "join a room", "room", ("j",)
        ),
        Command(
            "part", cmd_part, "[message]", "leave the room (or close the chat)", "", ("leave",)
        ),
        Command("close", cmd_close, "", "close the current window", "", ("wc",)),
        Command("nick", cmd_nick, "[new nick]", "show or change your nick in the room", "nick"),
        Command("me", cmd_me, "action", "send an action (* you do something)", ""),
        Command(
            "msg",
            cmd_msg,
            "jid|nick [message]",
            "open a chat (and send a message)",
            "jid",
            ("query",),
        ),
        Command("invite", cmd_invite, "jid [reason]", "invite someone to this room", "jid"),
        Command(
            "topic", cmd_topic, "[subject]", "show or set the room's subject", "", ("subject",)
        ),
        Command(
            "search", cmd_search, "[-all] words", "search the history (here, or everywhere)", ""
        ),
        Command(
            "correct", cmd_correct, "[new text]", "correct your last message (alone: edit it)", ""
        ),
        Command("retract", cmd_retract, "[reason]", "retract (delete) your last message", ""),
        Command("react", cmd_react, "emoji…", "react to the last message of the others", ""),
        Command("block", cmd_block, "[jid…]", "block (this contact or) the JIDs given", "jid"),
        Command("unblock", cmd_unblock, "[jid…]", "unblock JIDs", "jid"),
        Command("accept", cmd_accept, "jid", "accept a presence subscription request", "jid"),
        Command("deny", cmd_deny, "jid", "deny a presence subscription request", "jid"),
        Command(
            "add", cmd_add, "jid [name] [group…]", "add a contact and ask for its presence", "jid"
        ),
        Command(
            "status", cmd_status, "[available|chat|away|xa|dnd] [message]", "set your presence", ""
        ),
        Command("occupants", cmd_occupants, "", "list the room's occupants", "", ("names",)),
        Command("kick", cmd_kick, "nick [reason]", "kick an occupant (moderators)", "nick"),
        Command("ban", cmd_ban, "nick|jid [reason]", "ban someone from the room (admins)", "nick"),
        Command(
            "role",
            cmd_role,
            "nick moderator|participant|visitor|none [reason]",
            "change an occupant's role (moderators)",
            "nick",
        ),
        Command(
            "affiliation",
            cmd_affiliation,
            "[nick|jid owner|admin|member|outcast|none [reason]]",
            "change someone's affiliation (alone: list them)",
            "nick",
            ("affiliations", "affil"),
        ),
        Command(
            "config",
            cmd_config,
            "[field [value]]",
            "edit the room's configuration (owners)",
            "",
            ("configure",),
        ),
        Command(
            "destroy",
            cmd_destroy,
            "[reason]",
            "destroy the room (owners)",
            "",
            ("destroy_room",),
        ),
        Command(
            "questions",
            cmd_questions,
            "",
            "show the daemon's pending questions",
            "",
            ("actions",),
        ),
        Command("clear", cmd_clear, "", "clear the window", ""),
        Command("win", cmd_win, "number", "go to window number", "", ("w",)),
        Command(
            "profiles", cmd_profiles, "", "open the profile manager (log in more profiles)", ""
        ),
        Command("disconnect", cmd_disconnect, "[profile]", "disconnect a profile", "profile"),
        Command(
            "quit",
            cmd_quit,
            "",
            "leave Primitivus (profiles stay connected in the daemon)",
            "",
            ("exit",),
        ),
    ]
