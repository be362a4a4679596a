"""The daemon's bridge members ``jp`` uses, with the arguments it sends and what it reads back.

One line per member: ``"name:type name:type -> out"`` (D-Bus types; no ``->`` when jp
ignores the result). They mirror the daemon's declarations (``add_method`` calls in
``sat/core/core_api.py``, ``sat/core/presence.py`` and ``sat/plugins/*.py``):

- :meth:`Context.call <sat_frontends.jp.base.Context.call>` refuses to send a call whose
  argument types differ from what the running daemon declares ("version mismatch", code 1),
  instead of sending a wrong call;
- the integration tests check every line against the real daemon's introspection data
  (argument names and types, return type), so a renamed or reordered argument is caught.

Importing this module costs a dict literal: it is only imported when a command calls the
daemon.
"""

from __future__ import annotations

MEMBERS: dict[str, str] = {
    # --- daemon ------------------------------------------------------------ core_api
    "VersionGet": "-> s",
    "IsReady": "-> b",
    "HealthGet": "-> aa{sv}",
    "ParamsList": "-> aa{sv}",
    "ParamGet": "category:s name:s profile:s -> s",
    "ParamSet": "category:s name:s value:s profile:s",
    # --- profiles
    "ProfileCreate": "name:s jid:s xmpp_password:s profile_password:s options:a{sv}",
    "ProfileDelete": "name:s",
    "ProfilesList": "-> as",
    "ProfileDefaultGet": "-> s",
    "ProfileDefaultSet": "name:s",
    "ProfileConnect": "profile:s profile_password:s -> b",
    "ProfileDisconnect": "profile:s",
    "ProfileIsConnected": "profile:s -> b",
    "ProfileInfoGet": "profile:s -> a{sv}",
    # --- roster and presence ---------------------------------------- core_api, presence
    "RosterGet": "profile:s -> aa{sv}",
    "RosterAdd": "profile:s jid:s name:s groups:as",
    "RosterRemove": "profile:s jid:s",
    "SubscriptionSend": "profile:s jid:s type:s",
    "SubscriptionRequestsGet": "profile:s -> aa{sv}",
    "PresenceSet": "profile:s show:s statuses:a{ss} priority:i",
    "PresenceStatusesGet": "profile:s -> aa{sv}",
    "PresenceGet": "profile:s jid:s -> a{sv}",
    # --- messages and history ------------------------------------------------ core_api
    "MessageSend": "profile:s to:s body:s extra:a{sv} -> s",
    "HistoryGet": "profile:s with_jid:s limit:i filters:a{sv} -> aa{sv}",
    "HistorySearch": "profile:s query:s filters:a{sv} limit:i -> aa{sv}",
    # --- service discovery, version, ping -------------------- xep_0030, xep_0092, xep_0199
    "DiscoInfoGet": "profile:s jid:s node:s -> a{sv}",
    "DiscoItemsGet": "profile:s jid:s node:s -> aa{sv}",
    "SoftwareVersionGet": "profile:s jid:s -> a{sv}",
    "Ping": "profile:s jid:s -> d",
    # --- blocking ---------------------------------------------------------- xep_0191
    "BlockingList": "profile:s -> as",
    "Block": "profile:s jids:as",
    "Unblock": "profile:s jids:as",
    "BlockingClear": "profile:s",
    # --- message editing, states, markers -------- xep_0308, 0424, 0425, 0444, 0085, 0333
    "MessageCorrect": "profile:s uid:s body:s",
    "MessageRetract": "profile:s uid:s",
    "MessageModerate": "profile:s room:s uid:s reason:s",
    "MessageReactionsSet": "profile:s uid:s reactions:as",
    "ChatStateSend": "profile:s to:s state:s -> b",
    "MarkerSend": "profile:s uid:s marker:s -> b",
    # --- message archive --------------------------------------------------- xep_0313
    "MamCatchUp": "profile:s -> a{sv}",
    "MamQuery": "profile:s with_jid:s filters:a{sv} limit:i -> aa{sv}",
    # --- group chat ------------------------------------------- xep_0045, 0249, 0410
    "MucJoin": "profile:s room:s nick:s options:a{sv} -> a{sv}",
    "MucLeave": "profile:s room:s status:s",
    "MucNickSet": "profile:s room:s nick:s -> s",
    "MucSubjectSet": "profile:s room:s subject:s",
    "MucOccupantsGet": "profile:s room:s -> aa{sv}",
    "MucRoomsJoined": "profile:s -> aa{sv}",
    "MucKick": "profile:s room:s nick:s reason:s",
    "MucBan": "profile:s room:s who:s reason:s",
    "MucAffiliationSet": "profile:s room:s who:s affiliation:s reason:s",
    "MucRoleSet": "profile:s room:s nick:s role:s reason:s",
    "MucAffiliationsGet": "profile:s room:s affiliation:s -> aa{sv}",
    "MucConfigGet": "profile:s room:s -> a{sv}",
    "MucConfigSet": "profile:s room:s values:a{sv}",
    "MucRoomDestroy": "profile:s room:s reason:s alternate:s",
    "MucServicesGet": "profile:s -> as",
    "MucSelfPing": "profile:s room:s -> s",
    "MucInvite": "profile:s room:s invitee:s reason:s",
    # --- bookmarks --------------------------------------------------------- xep_0402
    "BookmarksList": "profile:s -> aa{sv}",
    "BookmarkSet": "profile:s room:s name:s nick:s autojoin:b password:s",
    "BookmarkRemove": "profile:s room:s",
    # --- vCard and avatar ------------------------------------------ xep_0054, xep_0084
    "VCardGet": "profile:s jid:s -> a{sv}",
    "VCardSet": "profile:s fields:a{sv}",
    "AvatarGet": "profile:s jid:s -> s",
    "AvatarSet": "profile:s file_path:s -> s",
}

#: signals jp subscribes to by name (``debug monitor`` takes any signal)
SIGNALS: dict[str, str] = {
    "MessageNew": "profile:s message:a{sv}",
    "ProgressUpdated": "profile:s id:s position:x size:x",
    "ProgressFinished": "profile:s id:s metadata:a{sv}",
    "ProgressError": "profile:s id:s error:s",
}


def parse(spec: str) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """``"a:s b:as -> s"`` -> (("a", "b"), ("s", "as"), "s"); out is None when jp ignores
    the result."""
    args, arrow, out = spec.partition("->")
    names, types = [], []
    for word in args.split():
        name, _, sig = word.partition(":")
        names.append(name)
        types.append(sig)
    return tuple(names), tuple(types), out.strip() if arrow else None


def describe(names, types) -> str:
    return ", ".join(f"{n}: {t}" for n, t in zip(names, types, strict=True))
