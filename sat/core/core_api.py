"""The core part of the bridge API, declared once (D-Bus interface ``org.salutatoi.SAT.core``).

Plugins declare their own members when they load. Every member carries its
documentation: it ends up in the D-Bus introspection data. Secrets go in,
never out: no getter returns a password.
"""

from __future__ import annotations

from sat.core import errors

P = ("profile", "s", "profile name (empty: the default profile)")


def register(host) -> None:  # noqa: C901 - a flat list of declarations
    b = host.bridge

    def method(name, handler, args=(), out=None, doc=""):
        b.add_method(name, handler, args=args, out=out, doc=doc, interface="core")

    def signal(name, args, doc):
        b.add_signal(name, args=args, doc=doc, interface="core")

    # --- daemon -------------------------------------------------------------------
    method("VersionGet", lambda: host.version, out=("s", "daemon version"), doc="Daemon version")
    method("IsReady", lambda: host.ready, out=("b", "true once started"), doc="Daemon readiness")
    method(
        "HealthGet",
        lambda: host.plugin_loader.health_report(),
        out=("aa{sv}", "one record per plugin module: name, loaded, disabled, error, xeps"),
        doc="Plugins and their load status, with the reason of every failure",
    )
    method(
        "ParamsList",
        lambda: [d.as_dict() for d in host.params.definitions()],
        out=("aa{sv}", "category, name, type, default, doc, scope"),
        doc="Every parameter a frontend can read or set, with its type and documentation",
    )

    # --- profiles --------------------------------------------------------------
    async def profile_create(name, jid, xmpp_password, profile_password, options):
        await host.profiles.create(name, profile_password)
        try:
            await host.params.set("connection", "jid", jid, name)
            await host.params.set("connection", "password", xmpp_password, name)
            for key, value in (options or {}).items():
                await host.params.set("connection", key, value, name)
        except Exception:
            await host.profiles.delete(name)
            raise

    method(
        "ProfileCreate",
        profile_create,
        args=(
            ("name", "s", "new profile name"),
            ("jid", "s", "XMPP account (user@domain)"),
            ("xmpp_password", "s", "XMPP account password (stored encrypted)"),
            ("profile_password", "s", "password protecting the profile's secrets; may be empty"),
            ("options", "a{sv}", "connection parameters: host, port, direct_tls, autoconnect"),
        ),
        doc="Create a profile for an existing XMPP account",
    )

    async def profile_delete(name):
        if name in host.clients:
            await host.disconnect(name)
        await host.profiles.delete(name)

    method(
        "ProfileDelete",
        profile_delete,
        args=(("name", "s", "profile to delete"),),
        doc="Delete a profile with its history and settings (disconnects it first)",
    )
    method("ProfilesList", host.profiles.list, out=("as", "profile names"), doc="List profiles")
    method(
        "ProfileDefaultGet",
        host.profiles.get_default,
        out=("s", "default profile, or ''"),
        doc="Name of the default profile",
    )
    method(
        "ProfileDefaultSet",
        host.profiles.set_default,
        args=(("name", "s", "profile"),),
        doc="Choose the default profile",
    )

    async def profile_connect(profile, profile_password):
        profile = await host.profiles.resolve(profile)
        return await host.connect(profile, profile_password)

    method(
        "ProfileConnect",
        profile_connect,
        args=(P, ("profile_password", "s", "the profile's password")),
        out=("b", "false if it was already connected"),
        doc="Connect a profile to its XMPP server; fails with a named error saying why",
    )

    async def profile_disconnect(profile):
        await host.disconnect(await host.profiles.resolve(profile))

    method("ProfileDisconnect", profile_disconnect, args=(P,), doc="Disconnect a profile")

    async def profile_is_connected(profile):
        return host.is_connected(await host.profiles.resolve(profile))

    method(
        "ProfileIsConnected",
        profile_is_connected,
        args=(P,),
        out=("b", "connected"),
        doc="Whether the profile's stream is up",
    )

    async def profile_info(profile):
        profile = await host.profiles.resolve(profile)
        client = host.clients.get(profile)
        info = {
            "name": profile,
            "jid": await host.params.get("connection", "jid", profile),
            "connected": host.is_connected(profile),
            "unlocked": host.profiles.is_unlocked(profile),
        }
        if client is not None:
            info["full_jid"] = client.jid.full()
            info["reconnections"] = client.reconnections
            info["sm_resumptions"] = client.sm.resumed_total
            info["sm_enabled"] = client.sm.enabled
            if client.last_error is not None:
                info["last_error"] = client.last_error.message
        return info

    method(
        "ProfileInfoGet",
        profile_info,
        args=(P,),
        out=("a{sv}", "name, jid, connected..."),
        doc="State of a profile's session (stream management, reconnections, last error)",
    )

    # --- parameters --------------------------------------------------------------
    async def param_get(category, name, profile):
        definition = host.params.definition(category, name)
        if definition.secret:
            return ""
        owner = await host.profiles.resolve(profile) if definition.scope == "profile" else None
        return definition.encode(await host.params.get(category, name, owner))

    method(
        "ParamGet",
        param_get,
        args=(("category", "s", "parameter category"), ("name", "s", "parameter name"), P),
        out=("s", "value as text; always empty for secrets"),
        doc="Read a parameter",
    )

    async def param_set(category, name, value, profile):
        definition = host.params.definition(category, name)
        owner = await host.profiles.resolve(profile) if definition.scope == "profile" else None
        await host.params.set(category, name, value, owner)

    method(
        "ParamSet",
        param_set,
        args=(
            ("category", "s", "parameter category"),
            ("name", "s", "parameter name"),
            ("value", "s", "new value as text"),
            P,
        ),
        doc="Change a parameter (validated against its type)",
    )

    # --- roster and presence --------------------------------------------------------
    async def roster_get(profile):
        return await host.presence.roster_get(await host.profiles.resolve(profile))

    method(
        "RosterGet",
        roster_get,
        args=(P,),
        out=("aa{sv}", "jid, name, groups, subscription, ask, approved"),
        doc="The profile's contact list (the stored copy while the profile is not connected)",
    )

    async def presence_set(profile, show, statuses, priority):
        client = host.get_client(await host.profiles.resolve(profile))
        await host.presence.send_presence(client, show, statuses, priority)

    method(
        "PresenceSet",
        presence_set,
        args=(
            P,
            ("show", "s", "'' (available), away, chat, dnd or xa"),
            ("statuses", "a{ss}", "status text by language ('default' for none)"),
            ("priority", "i", "priority -128..127"),
        ),
        doc="Set our presence",
    )

    async def presence_statuses(profile):
        client = host.get_client(await host.profiles.resolve(profile))
        return [{"entity": e, **p} for e, p in client.presences.items()]

    method(
        "PresenceStatusesGet",
        presence_statuses,
        args=(P,),
        out=("aa{sv}", "entity (full JID), jid, resource, show, priority, statuses, timestamp"),
        doc="Last known presence of every available contact resource",
    )

    # --- messages and history -----------------------------------------------------------
    async def message_send(profile, to, body, extra):
        return await host.messages.send(await host.profiles.resolve(profile), to, body, extra)

    method(
        "MessageSend",
        message_send,
        args=(
            P,
            ("to", "s", "recipient JID"),
            ("body", "s", "message text"),
            (
                "extra",
                "a{sv}",
                "options: type (chat, normal, groupchat); reply_to (uid of the message "
                "answered, XEP-0461; reply_fallback false: no quote for older clients)",
            ),
        ),
        out=("s", "uid of the stored message"),
        doc="Send a message; it is queued while the profile is reconnecting",
    )

    async def history_get(profile, with_jid, limit, filters):
        profile = await host.profiles.resolve(profile)
        if limit <= 0 or limit > 10_000:
            raise errors.InvalidArgument("limit must be within 1..10000")
        allowed = {"before", "after", "before_uid", "after_uid", "msg_type"}
        unknown = set(filters) - allowed
        if unknown:
            raise errors.InvalidArgument(f"unknown history filters: {', '.join(sorted(unknown))}")
        rows = await host.storage.history_get(
            profile, with_jid=with_jid or None, limit=limit, **filters
        )
        from sat.core.messages import signal_data

        return [signal_data(r) for r in rows]

    method(
        "HistoryGet",
        history_get,
        args=(
            P,
            ("with_jid", "s", "contact or room bare JID; empty: all"),
            ("limit", "i", "maximum number of messages (1..10000)"),
            ("filters", "a{sv}", "before/after (timestamps), before_uid/after_uid, msg_type"),
        ),
        out=("aa{sv}", "messages in chronological order"),
        doc="Stored messages, paged by time or by uid",
    )

    async def history_search(profile, query, filters, limit):
        profile = await host.profiles.resolve(profile)
        if limit <= 0 or limit > 1000:
            raise errors.InvalidArgument("limit must be within 1..1000")
        allowed = {"with_jid", "sender", "start", "end", "msg_type", "offset"}
        unknown = set(filters) - allowed
        if unknown:
            raise errors.InvalidArgument(f"unknown search filters: {', '.join(sorted(unknown))}")
        rows = await host.storage.history_search(profile, query, limit=limit, **filters)
        from sat.core.messages import signal_data

        return [signal_data(r) for r in rows]

    method(
        "HistorySearch",
        history_search,
        args=(
            P,
            ("query", "s", "words to find (accents and case ignored; word* for a prefix)"),
            ("filters", "a{sv}", "with_jid, sender, start, end (timestamps), msg_type, offset"),
            ("limit", "i", "maximum number of results (1..1000)"),
        ),
        out=("aa{sv}", "messages, best match first, each with a highlighted 'snippet'"),
        doc="Full-text search over the whole history",
    )

    # --- questions to the user -------------------------------------------------------
    async def action_answer(profile, action_id, answer):
        host.actions.answer(await host.profiles.resolve(profile), action_id, answer)

    method(
        "ActionAnswer",
        action_answer,
        args=(P, ("id", "s", "action id from ActionNew"), ("answer", "s", "the user's answer")),
        doc="Answer a question the daemon asked with ActionNew (first answer wins)",
    )

    async def actions_pending(profile):
        return host.actions.pending(await host.profiles.resolve(profile))

    method(
        "ActionsPendingGet",
        actions_pending,
        args=(P,),
        out=("aa{sv}", "id, data, default, remaining seconds"),
        doc="Questions still waiting for an answer (for frontends started later)",
    )

    # --- signals ------------------------------------------------------------------------
    signal("Ready", (("version", "s", "daemon version"),), "The daemon finished starting")
    signal(
        "Connected",
        (P, ("jid", "s", "full JID bound"), ("resumed", "b", "XEP-0198 resumption")),
        "A profile's stream is up (also after a reconnection)",
    )
    signal(
        "Disconnected",
        (P, ("reason", "s", "why"), ("reconnecting", "b", "the daemon is reconnecting by itself")),
        "A profile's stream went down",
    )
    signal(
        "PresenceUpdate",
        (
            P,
            ("entity", "s", "full JID"),
            ("show", "s", "'', away, chat, dnd, xa or unavailable"),
            ("priority", "i", "priority"),
            ("statuses", "a{ss}", "status by language"),
        ),
        "A contact's presence changed",
    )
    signal(
        "SubscriptionEvent",
        (
            P,
            ("entity", "s", "bare JID of the contact"),
            ("type", "s", "subscribe (a request), subscribed, unsubscribe or unsubscribed"),
            ("extra", "a{sv}", "status and nick when given; auto_accepted (b) when answered"),
        ),
        "A presence subscription request or answer arrived (requests wait for SubscriptionSend)",
    )
    signal(
        "MessageNew",
        (P, ("message", "a{sv}", "uid, from, to, type, body, timestamp, extra")),
        "A message was received or sent (every frontend sees both)",
    )
    signal(
        "MessageUpdate",
        (
            P,
            ("uid", "s", "uid of the stored message that changed"),
            (
                "type",
                "s",
                "what changed: receipt, marker, correction, retraction, reaction, error, "
                "reply (a reply stored before the message it answers is now linked to it; "
                "data: reply_to, that message's uid), "
                "deleted (the message is gone from the history: a correction that came "
                "before its original, folded into it; data: merged_into)",
            ),
            ("data", "a{sv}", "the new values (keys merged into the message's extra)"),
        ),
        "A stored message changed (delivered, displayed, corrected, retracted, reacted to)",
    )
    signal(
        "ContactNew",
        (P, ("jid", "s", "contact"), ("attrs", "a{sv}", "name, groups, ...")),
        "A contact was added or changed in the roster",
    )
    signal("ContactDeleted", (P, ("jid", "s", "contact")), "A contact was removed from the roster")
    signal(
        "ProgressStarted",
        (P, ("id", "s", "job id"), ("metadata", "a{sv}", "what it is")),
        "A long job started",
    )
    signal(
        "ProgressUpdated",
        (
            P,
            ("id", "s", "job id"),
            ("position", "x", "done"),
            ("size", "x", "total, -1 if unknown"),
        ),
        "A long job advanced",
    )
    signal(
        "ProgressFinished",
        (P, ("id", "s", "job id"), ("metadata", "a{sv}", "result")),
        "A long job finished",
    )
    signal(
        "ProgressError",
        (P, ("id", "s", "job id"), ("error", "s", "what went wrong")),
        "A long job failed",
    )
    signal(
        "ActionNew",
        (
            P,
            ("id", "s", "action id"),
            (
                "data",
                "a{sv}",
                "what is asked: type (s, e.g. subscription, confirm), title (s), message (s, "
                "the question), choices (as, the answers offered; else free text), form "
                "(a{sv}, a data form record: fields... answered with its values as JSON)",
            ),
            ("timeout", "d", "seconds before the default answer is taken"),
            ("default", "s", "answer used when nobody answers"),
        ),
        "The daemon asks the user something; a frontend that never answers never blocks it",
    )
    signal(
        "ActionExpired",
        (P, ("id", "s", "action id"), ("default", "s", "the answer that was taken")),
        "Nobody answered a question in time: its default answer was used",
    )
