"""The frontend's view of the daemon: :class:`QuickApp`.

A frontend builds one ``QuickApp`` on a bridge client, calls :meth:`QuickApp.start` (which
subscribes to the bridge signals) and :meth:`QuickApp.login` for each profile the user opens.
Signals of profiles that were not opened in this frontend are ignored (another frontend of the
same daemon may use them).

The app keeps, per profile, a :class:`~.contact_list.ContactList` and the conversations
(:class:`~.chat.Conversation`, keyed by ``(profile, jid)``), plus the shared
:class:`~.notifications.Notifications` and :class:`~.progress.ProgressTracker`. It tells the UI
what changed through ``app.events``:

===========================  ==============================================================
``session_new(session)``     a profile was opened (contacts may still be loading)
``session_ready(session)``   its roster, presences and rooms are loaded
``session_closed(session)``  logged out
``connection(session)``      connected / disconnected (see ``session.connected``)
``contacts(session)``        its contact list changed (roster, presence, unread, rooms)
``conversation_new(conv, by_user)``  a conversation was created (by the user, or by a message)
``conversation_closed(conv)``
``message(conv, message)``   a message was added to a conversation (also ``conv.events``)
``info(text, level)``        something to tell the user (level: info, warning, error)
``subscription(session, jid, type, extra)``
``invitation(session, room, sender, reason, password)``
``action(session, question)``  the daemon asks something (:class:`~.questions.Question`)
``action_done(question)``    a question was answered, expired or is no longer asked
``daemon(available)``        the daemon left the bus (False) / is back and reloaded (True)
===========================  ==============================================================

When the daemon goes away (stopped, crashed: its bus name loses its owner), every session is
marked disconnected and pending questions are dropped; when it is back, the profiles that were
open are logged in again (with the profile password given at login, kept in memory), their
contacts, presences, rooms and questions are read again and the rooms that were joined here
are joined again.

The conversation itself emits finer events (see :mod:`.chat`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sat_frontends.quick_frontend import jid as jidlib
from sat_frontends.quick_frontend.chat import (
    CHAT,
    GROUP,
    PRIVATE,
    Conversation,
    conversation_key,
)
from sat_frontends.quick_frontend.contact_list import ContactList
from sat_frontends.quick_frontend.events import Events
from sat_frontends.quick_frontend.features import Features, MissingFeature
from sat_frontends.quick_frontend.notifications import Notifications
from sat_frontends.quick_frontend.progress import ProgressTracker
from sat_frontends.quick_frontend.questions import ANSWERED, EXPIRED, GONE, Question

log = logging.getLogger(__name__)

__all__ = ["QuickApp", "ProfileSession", "CONSOLE"]

#: key of the console conversation (frontend messages, not a chat)
CONSOLE = "console"


@dataclass(eq=False)
class ProfileSession:
    profile: str
    jid: str = ""
    full_jid: str = ""
    connected: bool = False
    #: the daemon is reconnecting by itself
    reconnecting: bool = False
    ready: bool = False
    contacts: ContactList = field(default_factory=ContactList)
    blocked: set = field(default_factory=set)
    #: our presence
    show: str = ""
    status: str = ""
    #: the profile password given at login (to log in again after a daemon restart)
    password: str = field(default="", repr=False)
    #: rooms joined here, room -> nick (joined again after a daemon restart)
    wanted_rooms: dict = field(default_factory=dict)

    @property
    def nick(self) -> str:
        return jidlib.node(self.jid) or self.profile


class QuickApp:
    """Models of every open profile, kept up to date from the bridge signals."""

    #: (signal, handler method name)
    SIGNALS = (
        ("Connected", "_on_connected"),
        ("Disconnected", "_on_disconnected"),
        ("PresenceUpdate", "_on_presence"),
        ("SubscriptionEvent", "_on_subscription"),
        ("MessageNew", "_on_message_new"),
        ("MessageUpdate", "_on_message_update"),
        ("ContactNew", "_on_contact_new"),
        ("ContactDeleted", "_on_contact_deleted"),
        ("ProgressStarted", "_on_progress_started"),
        ("ProgressUpdated", "_on_progress_updated"),
        ("ProgressFinished", "_on_progress_finished"),
        ("ProgressError", "_on_progress_error"),
        ("ActionNew", "_on_action"),
        ("ActionExpired", "_on_action_expired"),
        # plugins (handlers for signals the daemon does not have are simply never called)
        ("MucRoomJoined", "_on_muc_joined"),
        ("MucRoomLeft", "_on_muc_left"),
        ("MucOccupantUpdate", "_on_muc_occupant"),
        ("MucSubject", "_on_muc_subject"),
        ("MucMessageError", "_on_muc_message_error"),
        ("MucInvitation", "_on_muc_invitation"),
        ("ChatStateReceived", "_on_chat_state"),
        ("BlockingChanged", "_on_blocking_changed"),
    )

    def __init__(self, bridge: Any, history_page: int = 50):
        self.bridge = bridge
        self.features = Features(bridge)
        self.history_page = history_page
        self.sessions: dict[str, ProfileSession] = {}
        self.conversations: dict[tuple[str, str], Conversation] = {}
        self.notifications = Notifications()
        self.progress = ProgressTracker()
        self.events = Events()
        self.console = Conversation("", CONSOLE, kind=CONSOLE)
        #: questions of the daemon, by (profile, action id)
        self.questions: dict[tuple[str, str], Question] = {}
        #: the daemon is on the bus (False between its disappearance and its return)
        self.daemon_available = True
        #: conversations on screen: their messages are read as they come
        self.visible: set[tuple[str, str]] = set()
        #: the terminal/window has the user's attention (focus events, when known)
        self.focused = True
        #: tell contacts what we read (XEP-0333 "displayed" markers)
        self.send_markers = True
        self._handlers: list[tuple[str, Any]] = []
        self._tasks: set[asyncio.Task] = set()
        self._started = False

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Subscribe to the bridge signals (once)."""
        if self._started:
            return
        self._started = True
        for signal, name in self.SIGNALS:
            handler = self._guard(signal, getattr(self, name))
            self.bridge.on(signal, handler)
            self._handlers.append((signal, handler))
        watch = getattr(self.bridge, "on_daemon_state", None)
        if callable(watch):
            watch(self._on_daemon_state)

    async def stop(self) -> None:
        for signal, handler in self._handlers:
            try:
                self.bridge.off(signal, handler)
            except Exception:
                pass
        self._handlers.clear()
        unwatch = getattr(self.bridge, "off_daemon_state", None)
        if callable(unwatch):
            unwatch(self._on_daemon_state)
        self._started = False
        for task in list(self._tasks):
            task.cancel()

    def _guard(self, signal: str, handler):
        def guarded(*args):
            try:
                return handler(*args)
            except Exception:
                log.exception("handling %s%r failed", signal, args[:3])

        guarded.__name__ = handler.__name__
        return guarded

    def spawn(self, coro, what: str = "") -> asyncio.Task:
        """Run ``coro`` in the background; a failure is reported with ``info``."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task):
            self._tasks.discard(t)
            if t.cancelled():
                return
            error = t.exception()
            if error is not None:
                self.report(error, what)

        task.add_done_callback(done)
        return task

    def report(self, error: BaseException, what: str = "") -> None:
        text = str(error) if isinstance(error, MissingFeature) else _error_text(error)
        self.info(f"{what}: {text}" if what else text, "error")

    def info(self, text: str, level: str = "info") -> None:
        """Tell the user something (console, and the UI decides where else)."""
        if level != "debug":
            message = self.console.add_info(text)
            message.extra["level"] = level
        self.events.emit("info", text, level)

    # ------------------------------------------------------------------ profiles

    async def profiles_list(self) -> list[str]:
        return list(await self.bridge.profiles_list())

    async def profile_default(self) -> str:
        try:
            return await self.bridge.profile_default_get()
        except Exception:
            return ""

    async def profile_create(
        self,
        name: str,
        jid: str,
        password: str,
        profile_password: str = "",
        options: dict | None = None,
    ) -> None:
        await self.bridge.profile_create(name, jid, password, profile_password, options or {})

    async def login(self, profile: str, profile_password: str = "") -> ProfileSession:
        """Connect ``profile`` (if needed) and load its contacts, presences and rooms."""
        session = self.sessions.get(profile)
        created = session is None
        if created:
            session = ProfileSession(profile, contacts=ContactList(profile))
            # follow the profile's signals from now on (presences arrive during the connection)
            self.sessions[profile] = session
            self.events.emit("session_new", session)
        try:
            await self.bridge.profile_connect(profile, profile_password)
        except BaseException:
            if created and not session.connected:
                del self.sessions[profile]
                self.events.emit("session_closed", session)
            raise
        session.connected = True
        session.password = profile_password
        await self._load(session)
        return session

    async def _load(self, session: ProfileSession) -> None:
        profile = session.profile
        try:
            info = await self.bridge.profile_info_get(profile)
            session.jid = info.get("jid", "") or session.jid
            session.full_jid = info.get("full_jid", "") or session.full_jid
            session.connected = bool(info.get("connected", True))
        except Exception as e:
            log.warning("profile info of %s: %s", profile, e)
        roster = await self.bridge.roster_get(profile)
        session.contacts.set_roster(roster)
        try:
            presences = await self.bridge.presence_statuses_get(profile)
        except Exception as e:
            log.info("presences of %s: %s", profile, e)
            presences = []
        for p in presences:
            session.contacts.presence_update(
                p.get("entity", ""), p.get("show", ""), p.get("priority", 0), p.get("statuses", {})
            )
        for conv in self.conversations.values():
            if conv.profile == profile:
                conv.own_jid = session.jid
        await self._load_rooms(session)
        await self._load_blocking(session)
        await self._load_questions(session)
        session.ready = True
        self.events.emit("contacts", session)
        self.events.emit("session_ready", session)

    async def _load_rooms(self, session: ProfileSession) -> None:
        if not self.features.has("muc_joined"):
            return
        try:
            rooms = await self.features.call("muc_joined", session.profile)
        except Exception as e:
            log.info("rooms of %s: %s", session.profile, e)
            return
        for info in rooms:
            self._room_info(session, info.get("room", ""), info, by_user=False)

    async def _load_questions(self, session: ProfileSession) -> None:
        """Questions asked before this frontend was there (or while it was away)."""
        if not self.features.has("actions_pending"):
            return
        try:
            pending = await self.features.call("actions_pending", session.profile)
        except Exception as e:
            log.debug("pending questions of %s: %s", session.profile, e)
            return
        for entry in pending:
            action_id = entry.get("id", "")
            if action_id and (session.profile, action_id) not in self.questions:
                self._on_action(
                    session.profile,
                    action_id,
                    entry.get("data") or {},
                    float(entry.get("remaining", 0.0)),
                    entry.get("default", ""),
                )

    async def _load_blocking(self, session: ProfileSession) -> None:
        if not self.features.has("blocking_list"):
            return
        try:
            blocked = await self.features.call("blocking_list", session.profile)
        except Exception as e:
            log.debug("block list of %s: %s", session.profile, e)
            return
        session.blocked = set(blocked)
        session.contacts.set_blocked(blocked, True)

    async def logout(self, profile: str) -> None:
        session = self.sessions.pop(profile, None)
        if session is None:
            return
        try:
            await self.bridge.profile_disconnect(profile)
        finally:
            self.notifications.clear_profile(profile)
            self.events.emit("session_closed", session)

    def session(self, profile: str) -> ProfileSession:
        try:
            return self.sessions[profile]
        except KeyError:
            raise KeyError(f"profile {profile!r} is not open") from None

    # ------------------------------------------------------------------ conversations

    def name_of(self, profile: str, jid: str) -> str:
        session = self.sessions.get(profile)
        contact = session.contacts.get(jid) if session else None
        if contact is not None:
            return contact.display_name
        return jidlib.node(jid) or jid

    def get_conversation(self, profile: str, key: str) -> Conversation | None:
        return self.conversations.get((profile, key))

    def conversation(
        self, profile: str, jid: str, kind: str | None = None, by_user: bool = True
    ) -> Conversation:
        """The conversation of ``profile`` with ``jid``, created when needed."""
        session = self.session(profile)
        if kind is None:
            bare = jidlib.bare(jid)
            if session.contacts.is_room(bare):
                kind = PRIVATE if jidlib.resource(jid) else GROUP
            else:
                kind = CHAT
        key = jid if kind == PRIVATE else jidlib.bare(jid)
        conv = self.conversations.get((profile, key))
        if conv is None:
            conv = Conversation(
                profile,
                key,
                kind,
                own_jid=session.jid,
                name_of=lambda j, p=profile: self.name_of(p, j),
            )
            conv.PAGE = self.history_page
            room = session.contacts.rooms.get(jidlib.bare(key))
            if room is not None:
                conv.own_nick = room.nick
                conv.subject = room.subject
            self.conversations[(profile, key)] = conv
            self.events.emit("conversation_new", conv, by_user)
        elif conv.closed:
            conv.closed = False
            self.events.emit("conversation_new", conv, by_user)
        return conv

    def close_conversation(self, conv: Conversation) -> None:
        conv.closed = True
        self.visible.discard((conv.profile, conv.jid))
        self.events.emit("conversation_closed", conv)

    async def load_history(self, conv: Conversation, limit: int | None = None) -> int:
        if conv.kind == CONSOLE:
            conv.history_complete = True
            return 0
        return await conv.load_history(self.bridge, limit)

    def set_visible(self, convs) -> None:
        """The conversations now on screen: their unread counts are cleared."""
        self.visible = {(c.profile, c.jid) for c in convs if c is not None}
        for conv in convs:
            if conv is not None:
                self.mark_read(conv)

    def mark_read(self, conv: Conversation) -> None:
        if conv.kind == CONSOLE:
            return
        changed = conv.unread or conv.mentions
        conv.unread = conv.mentions = 0
        self.notifications.clear(conv.profile, conv.jid)
        session = self.sessions.get(conv.profile)
        if session is not None and changed:
            session.contacts.set_unread(conv.jid, 0)
            self.events.emit("contacts", session)
        if changed:
            conv.events.emit("state")
        last = next((m for m in reversed(conv.messages) if m.uid and not m.outgoing), None)
        if (
            last is not None
            and self.focused
            and self.send_markers
            and not last.extra.get("marker_sent")
            and self.features.has("marker_send")
        ):
            last.extra["marker_sent"] = "displayed"
            self.spawn(self.features.call("marker_send", conv.profile, last.uid, "displayed"), "")

    async def send(self, conv: Conversation, text: str, extra: dict | None = None) -> str:
        """Send ``text`` in ``conv`` (a room gets a groupchat message)."""
        if conv.kind == CONSOLE:
            raise ValueError("this is not a conversation: open a chat first")
        options = {"type": "groupchat" if conv.kind == GROUP else "chat"}
        options.update(extra or {})
        return await self.bridge.message_send(conv.profile, conv.jid, text, options)

    async def send_chat_state(self, conv: Conversation, state: str) -> None:
        if conv.kind == CONSOLE or not self.features.has("chat_state"):
            return
        session = self.sessions.get(conv.profile)
        if session is None or not session.connected:
            return
        try:
            await self.features.call("chat_state", conv.profile, conv.jid, state)
        except Exception as e:
            log.debug("chat state not sent: %s", e)

    def own_messages(self, conv: Conversation):
        return [m for m in conv.messages if m.outgoing and m.uid and not m.retracted]

    # ------------------------------------------------------------------ rooms

    def _room_info(
        self, session: ProfileSession, room_jid: str, info: dict, by_user: bool
    ) -> Conversation | None:
        if not room_jid:
            return None
        room = session.contacts.room_joined(
            room_jid,
            nick=info.get("nick", ""),
            subject=info.get("subject", ""),
            name=info.get("name", ""),
        )
        session.wanted_rooms[room.jid] = room.nick
        for occupant in info.get("occupants") or ():
            nick = occupant.get("nick")
            if nick:
                session.contacts.occupant_update(room_jid, nick, occupant)
        conv = self.conversation(session.profile, room.jid, GROUP, by_user=by_user)
        conv.own_nick = room.nick
        if room.subject:
            conv.set_subject(room.subject)
        conv.events.emit("state")
        self.events.emit("contacts", session)
        return conv

    async def join(
        self, profile: str, room: str, nick: str = "", password: str = ""
    ) -> Conversation:
        session = self.session(profile)
        options = {"password": password} if password else {}
        info = await self.features.call("muc_join", profile, room, nick or session.nick, options)
        room_jid = info.get("room") or jidlib.bare(room)
        conv = self._room_info(session, room_jid, info, by_user=True)
        if conv is not None and not info.get("occupants") and self.features.has("muc_occupants"):
            self.spawn(self._refresh_occupants(session, room_jid))
        return conv

    async def _refresh_occupants(self, session: ProfileSession, room_jid: str) -> None:
        occupants = await self.features.call("muc_occupants", session.profile, room_jid)
        for occupant in occupants:
            if occupant.get("nick"):
                session.contacts.occupant_update(room_jid, occupant["nick"], occupant)
        self.events.emit("contacts", session)

    async def leave(self, conv: Conversation, status: str = "") -> None:
        await self.features.call("muc_leave", conv.profile, conv.jid, status)

    # ------------------------------------------------------------------ signal handlers

    def _session_of(self, profile: str) -> ProfileSession | None:
        return self.sessions.get(profile)

    def _on_connected(self, profile, jid="", resumed=False, *rest):
        session = self._session_of(profile)
        if session is None:
            return
        was = session.connected
        session.connected = True
        session.reconnecting = False
        if jid:
            session.full_jid = jid
            session.jid = jidlib.bare(jid)
        self.events.emit("connection", session)
        if was or resumed:
            return
        # a reconnection (not resumed): roster and presences may have changed
        if session.ready:
            self.spawn(self._load(session), f"reloading {profile}")

    def _on_disconnected(self, profile, reason="", reconnecting=False, *rest):
        session = self._session_of(profile)
        if session is None:
            return
        session.connected = False
        session.reconnecting = bool(reconnecting)
        session.contacts.clear_presences()
        text = f"{profile} disconnected" + (f": {reason}" if reason else "")
        if reconnecting:
            text += " (reconnecting)"
        self.info(text, "warning")
        self.events.emit("connection", session)
        self.events.emit("contacts", session)

    def _on_presence(self, profile, entity, show, priority=0, statuses=None, *rest):
        session = self._session_of(profile)
        if session is None:
            return
        if jidlib.bare(entity) == session.jid and jidlib.resource(entity):
            return  # our own other resources
        session.contacts.presence_update(entity, show, priority, statuses or {})
        self.events.emit("contacts", session)

    def _on_subscription(self, profile, entity, sub_type, extra=None, *rest):
        session = self._session_of(profile)
        if session is None:
            return
        extra = extra or {}
        if sub_type == "subscribe" and not extra.get("auto_accepted"):
            self.notifications.add(profile, "", "subscription", f"{entity} asks for your presence")
            self.info(
                f"[{profile}] {entity} wants to see your presence: /accept {entity} or "
                f"/deny {entity}"
            )
        elif sub_type == "subscribed":
            self.info(f"[{profile}] {entity} accepted your subscription request")
        elif sub_type == "unsubscribed":
            self.info(f"[{profile}] {entity} denied or cancelled your subscription")
        self.events.emit("subscription", session, entity, sub_type, extra)

    def _on_message_new(self, profile, data, *rest):
        session = self._session_of(profile)
        if session is None:
            return
        if data.get("type") == "headline" and not data.get("body"):
            return
        rooms = session.contacts.rooms.keys()
        key, kind = conversation_key(data, rooms)
        if not key:
            return
        if kind == CHAT and key == session.jid and not data.get("outgoing"):
            # a message from another of our own resources to ourselves
            key = jidlib.bare(data.get("dest") or data.get("to", "")) or key
        existed = (profile, key) in self.conversations
        conv = self.conversation(profile, key, kind, by_user=False)
        if not existed and not conv.history_loaded:
            # the history will be loaded when displayed; this message will be deduplicated
            pass
        message = conv.add(data)
        if message is None:
            return
        if not message.outgoing and message.kind != "info":
            self._unread(session, conv, message)
        if message.outgoing and kind == CHAT:
            contact = session.contacts.get(key)
            if contact is not None:
                contact.chat_state = ""
        if not message.outgoing and kind in (CHAT, PRIVATE):
            conv.chat_state = "active" if conv.chat_state in ("composing", "paused") else ""
        self.events.emit("message", conv, message)

    def _unread(self, session: ProfileSession, conv: Conversation, message) -> None:
        visible = (conv.profile, conv.jid) in self.visible and self.focused
        if visible:
            self.mark_read(conv)
            return
        conv.unread += 1
        if message.mention:
            conv.mentions += 1
        session.contacts.set_unread(conv.jid, conv.unread)
        if conv.kind != GROUP or message.mention:
            who = message.nick or conv.title
            preview = message.body if len(message.body) <= 60 else message.body[:59] + "…"
            kind = "mention" if message.mention else "message"
            self.notifications.add(conv.profile, conv.jid, kind, f"{who}: {preview}")
        conv.events.emit("state")
        self.events.emit("contacts", session)

    def _find_message(self, profile: str, uid: str):
        for (p, _key), conv in self.conversations.items():
            if p == profile:
                message = conv.find(uid)
                if message is not None:
                    return conv, message
        return None, None

    def _on_message_update(self, profile, uid, update_type, data=None, *rest):
        if self._session_of(profile) is None:
            return
        conv, message = self._find_message(profile, uid)
        if conv is None:
            return
        conv.apply_update(message.uid or uid, update_type, data or {})

    def _on_contact_new(self, profile, jid, attrs=None, *rest):
        session = self._session_of(profile)
        if session is None:
            return
        session.contacts.update_contact(jid, attrs or {})
        self.events.emit("contacts", session)

    def _on_contact_deleted(self, profile, jid, *rest):
        session = self._session_of(profile)
        if session is None:
            return
        session.contacts.remove_contact(jid)
        self.events.emit("contacts", session)

    def _on_progress_started(self, profile, job_id, metadata=None, *rest):
        if self._session_of(profile) is not None:
            self.progress.started(profile, job_id, metadata or {})

    def _on_progress_updated(self, profile, job_id, position=0, size=-1, *rest):
        if self._session_of(profile) is not None:
            self.progress.updated(profile, job_id, position, size)

    def _on_progress_finished(self, profile, job_id, metadata=None, *rest):
        if self._session_of(profile) is not None:
            job = self.progress.finished(profile, job_id, metadata or {})
            self.info(f"{job.label}: done", "debug")

    def _on_progress_error(self, profile, job_id, error="", *rest):
        if self._session_of(profile) is not None:
            job = self.progress.failed(profile, job_id, error)
            self.info(f"{job.label} failed: {error}", "error")

    # --- questions (ActionNew)

    def _on_action(self, profile, action_id, data=None, timeout=0.0, default="", *rest):
        session = self._session_of(profile)
        if session is None or (profile, action_id) in self.questions:
            return
        question = Question(profile, action_id, data or {}, float(timeout or 0.0), default)
        self.questions[(profile, action_id)] = question
        self.notifications.add(profile, "", "action", question.text)
        self.info(
            f"[{profile}] the daemon asks: {question.text} "
            f"(default answer in {int(question.timeout)} s: {default or 'none'})"
        )
        if question.timeout > 0:
            # ActionExpired may be missed (daemon gone): the question ends here too
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                loop.call_later(question.timeout + 2.0, self._expire_locally, question)
        self.events.emit("action", session, question)

    def _on_action_expired(self, profile, action_id, default="", *rest):
        question = self.questions.get((profile, action_id))
        if question is not None and question.pending:
            self._question_done(question, EXPIRED, default)

    def _expire_locally(self, question: Question) -> None:
        if question.pending:
            self._question_done(question, EXPIRED, question.default)

    def _question_done(self, question: Question, state: str, answer: str = "") -> None:
        question.state = state
        question.answer = answer
        self.questions.pop((question.profile, question.id), None)
        self.notifications.clear(question.profile, "")
        self.events.emit("action_done", question)

    def pending_questions(self, profile: str | None = None) -> list[Question]:
        return [q for q in self.questions.values() if q.pending and profile in (None, q.profile)]

    async def answer_question(self, question: Question, answer: str) -> bool:
        """Give ``answer`` to the daemon; False if the question was no longer asked."""
        from sat_frontends.bridge import errors as bridge_errors

        if not question.pending:
            return False
        try:
            await self.features.call("action_answer", question.profile, question.id, answer)
        except bridge_errors.NotFound:
            # answered by another frontend, or expired on the daemon's side
            self._question_done(question, GONE)
            return False
        self._question_done(question, ANSWERED, answer)
        return True

    # --- the daemon itself

    def _on_daemon_state(self, available: bool) -> None:
        if not available:
            if not self.daemon_available:
                return
            self.daemon_available = False
            self.features.invalidate()
            for question in list(self.questions.values()):
                self._question_done(question, GONE)
            for session in self.sessions.values():
                session.connected = False
                session.reconnecting = False
                session.ready = False
                for room in list(session.contacts.rooms):
                    session.contacts.room_left(room)
                session.contacts.clear_presences()
                for conv in self.conversations.values():
                    if conv.profile == session.profile and conv.kind == GROUP:
                        conv.events.emit("state")
                self.events.emit("connection", session)
                self.events.emit("contacts", session)
            self.info("daemon disconnected: waiting for it to come back", "error")
            self.events.emit("daemon", False)
        else:
            self.spawn(self._daemon_back(), "reloading after the daemon's restart")

    async def _daemon_back(self) -> None:
        self.daemon_available = True
        self.features.invalidate()
        if self.sessions:
            self.info("the daemon is back: reloading profiles, contacts and rooms")
        for session in list(self.sessions.values()):
            try:
                await self.bridge.profile_connect(session.profile, session.password)
                session.connected = True
                await self._load(session)
            except Exception as e:
                self.report(e, f"{session.profile} could not be logged in again")
                self.events.emit("connection", session)
                continue
            self.events.emit("connection", session)
            await self._rejoin_rooms(session)
        self.events.emit("daemon", True)

    async def _rejoin_rooms(self, session: ProfileSession) -> None:
        for room, nick in list(session.wanted_rooms.items()):
            if room in session.contacts.rooms:
                continue
            conv = self.conversations.get((session.profile, room))
            if conv is not None and conv.closed:
                session.wanted_rooms.pop(room, None)
                continue
            try:
                await self.join(session.profile, room, nick)
            except Exception as e:
                self.report(e, f"joining {room} again")

    # --- plugins

    def _on_muc_joined(self, profile, room, info=None, *rest):
        session = self._session_of(profile)
        if session is None:
            return
        conv = self._room_info(session, room, info or {}, by_user=False)
        if conv is not None and info and info.get("rejoined"):
            conv.add_info("rejoined the room")

    def _on_muc_left(self, profile, room, details=None, *rest):
        session = self._session_of(profile)
        if session is None:
            return
        details = details or {}
        session.contacts.room_left(room)
        if details.get("reason", "left") != "disconnected" and not details.get("rejoining"):
            session.wanted_rooms.pop(jidlib.bare(room), None)
        conv = self.conversations.get((profile, jidlib.bare(room)))
        reason = details.get("reason", "left")
        if conv is not None:
            text = "you left the room" if reason == "left" else f"you are out of the room: {reason}"
            if details.get("message"):
                text += f" ({details['message']})"
            conv.add_info(text)
            conv.events.emit("state")
        self.events.emit("contacts", session)

    def _on_muc_occupant(self, profile, room, occupant=None, *rest):
        session = self._session_of(profile)
        if session is None or not occupant:
            return
        nick = occupant.get("nick", "")
        state = occupant.get("state", "updated")
        data = dict(occupant)
        if state == "left":
            data["left"] = True
        elif state == "nick":
            old = occupant.get("old_nick", "")
            if old:
                session.contacts.occupant_update(room, old, {"left": True, "new_nick": nick})
        session.contacts.occupant_update(room, nick, data)
        conv = self.conversations.get((profile, jidlib.bare(room)))
        if conv is not None and jidlib.bare(room) in session.contacts.rooms:
            # (joins and leaves while (re)joining the room are its initial occupants: not told)
            if occupant.get("self") and state == "nick":
                conv.own_nick = nick
                r = session.contacts.rooms.get(jidlib.bare(room))
                if r is not None:
                    r.nick = nick
            if state == "joined" and not occupant.get("self"):
                conv.add_info(f"{nick} joined")
            elif state == "left":
                reason = occupant.get("reason") or ""
                conv.add_info(f"{nick} left" + (f" ({reason})" if reason else ""))
            elif state == "nick":
                conv.add_info(f"{occupant.get('old_nick', '?')} is now known as {nick}")
            conv.events.emit("state")
        self.events.emit("contacts", session)

    def _on_muc_subject(self, profile, room, subject="", by="", *rest):
        session = self._session_of(profile)
        if session is None:
            return
        r = session.contacts.rooms.get(jidlib.bare(room))
        if r is not None:
            r.subject = subject
        conv = self.conversations.get((profile, jidlib.bare(room)))
        if conv is not None:
            if conv.subject != subject and (by or conv.subject):
                conv.add_info(f"{by or 'the room'} set the subject: {subject}")
            conv.set_subject(subject)

    def _on_muc_message_error(self, profile, room, uid="", error="", *rest):
        conv = self.conversations.get((profile, jidlib.bare(room)))
        if conv is None:
            return
        if uid:
            conv.apply_update(uid, "error", {"error": error})
        conv.add_info(f"the room refused a message: {error}")

    def _on_muc_invitation(self, profile, room, sender="", reason="", password="", *rest):
        session = self._session_of(profile)
        if session is None:
            return
        text = f"{sender} invites you to {room}" + (f": {reason}" if reason else "")
        self.notifications.add(profile, "", "invitation", text)
        self.info(f"[{profile}] {text} (/join {room})")
        self.events.emit("invitation", session, room, sender, reason, password)

    def _on_chat_state(self, profile, entity, state, *rest):
        session = self._session_of(profile)
        if session is None:
            return
        bare = jidlib.bare(entity)
        if bare in session.contacts.rooms:
            conv = self.conversations.get((profile, bare))
            if conv is not None:
                conv.set_chat_state(state, jidlib.resource(entity))
            return
        contact = session.contacts.get(bare)
        if contact is not None:
            contact.chat_state = state
        conv = self.conversations.get((profile, bare))
        if conv is not None:
            conv.set_chat_state(state)

    def _on_blocking_changed(self, profile, blocked=(), unblocked=(), *rest):
        session = self._session_of(profile)
        if session is None:
            return
        session.blocked |= set(blocked)
        session.blocked -= set(unblocked)
        session.contacts.set_blocked(blocked, True)
        session.contacts.set_blocked(unblocked, False)
        self.events.emit("contacts", session)


def _error_text(error: BaseException) -> str:
    message = getattr(error, "message", None)
    name = getattr(error, "name", None)
    if message and name:
        return f"{message} ({name})"
    return str(error) or type(error).__name__
