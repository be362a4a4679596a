"""Group chat (XEP-0045), invitations (XEP-0249), self-ping (XEP-0410), bookmarks
(XEP-0402 / XEP-0048 / XEP-0049) and private PEP (XEP-0223), on in-memory streams.

The real message pipeline (:class:`sat.core.messages.MessageHandling`) and hooks run;
storage and bridge are recording fakes; time is a ``task.Clock``.
"""

from __future__ import annotations

from sat.core import wokkel_compat  # noqa: F401  (before any wokkel import)

# isort: split

import pytest
from twisted.internet import defer, task
from twisted.words.xish import domish

from sat.core import errors
from sat.core.messages import MessageHandling
from sat.plugins import (
    xep_0030_disco,
    xep_0045_muc,
    xep_0048_bookmarks_legacy,
    xep_0223_private_pep,
    xep_0249_direct_invitations,
    xep_0402_bookmarks,
    xep_0410_muc_self_ping,
)
from tests.unit.test_disco_caps import (
    FakeClient,
    FakeHost,
    answer,
    failure_of,
    load,
    result_of,
    run,
)

ROOM = "coven@chat.shakespeare.lit"
OTHER_ROOM = "other@chat.shakespeare.lit"
ME = "juliet@capulet.lit/chamber"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = NS_MUC + "#user"
NS_MUC_ADMIN = NS_MUC + "#admin"
NS_MUC_OWNER = NS_MUC + "#owner"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PING = "urn:xmpp:ping"
ROOM_FEATURES = (NS_MUC, "urn:xmpp:mam:2", "urn:xmpp:sid:0", "urn:xmpp:occupant-id:0")


# --- fakes ---------------------------------------------------------------------------------


class RecordingBridge:
    def __init__(self):
        self.methods: dict = {}
        self.signals: dict = {}
        self.emitted: list[tuple] = []

    def add_method(self, name, handler, args=(), out=None, doc="", interface="plugin"):
        assert name not in self.methods, name
        assert doc, name
        self.methods[name] = handler

    def add_signal(self, name, args=(), doc="", interface="plugin"):
        assert name not in self.signals, name
        self.signals[name] = args

    def emit(self, name, *args):
        assert name in self.signals or name == "MessageNew", name
        self.emitted.append((name, *args))

    def of(self, name):
        return [e[1:] for e in self.emitted if e[0] == name]


class RecordingStorage:
    def __init__(self):
        self.history: list[dict] = []

    def history_add_deferred(self, profile, data):
        # the receive loop's Deferred flavour of history_add
        return defer.ensureDeferred(self.history_add(profile, data))

    async def history_add(self, profile, data):
        for row in self.history:
            if row["uid"] == data["uid"] or (
                data.get("stanza_id")
                and (row.get("stanza_id"), row.get("stanza_id_by"))
                == (data["stanza_id"], data["stanza_id_by"])
            ):
                return False
        self.history.append(dict(data))
        return True

    async def history_get(self, profile, with_jid=None, limit=50, msg_type=None, **kw):
        rows = [r for r in self.history if with_jid in (r["source"], r["dest"])]
        if msg_type:
            rows = [r for r in rows if r["type"] == msg_type]
        return rows[-limit:]


class Env:
    def __init__(self, config=None):
        self.clock = task.Clock()
        self.host = FakeHost(config=config, bridge=RecordingBridge())
        self.host.storage = RecordingStorage()
        load(
            self.host,
            xep_0030_disco.DiscoPlugin,
            xep_0045_muc.MucPlugin,
            xep_0249_direct_invitations.DirectInvitationsPlugin,
            xep_0410_muc_self_ping.SelfPingPlugin,
            xep_0223_private_pep.PrivatePEPPlugin,
            xep_0048_bookmarks_legacy.LegacyBookmarksPlugin,
            xep_0402_bookmarks.BookmarksPlugin,
        )
        self.muc = self.host.plugins["XEP-0045"]
        self.muc.clock = self.clock
        self.selfping = self.host.plugins["XEP-0410"]
        self.selfping.clock = self.clock
        self.bookmarks = self.host.plugins["XEP-0402"]
        self.host.messages = MessageHandling(self.host)
        self.client = FakeClient(self.clock, jid=ME)
        self.client.own_presence = {"show": "", "statuses": {}, "priority": 0}
        for plugin in self.host.plugins.values():
            handler = plugin.get_handler(self.client)
            if handler is not None:
                handler.setHandlerParent(self.client)
        self.client.stub.xmlstream.addObserver(
            "/message", lambda e: self.host.messages._on_message(self.client, e)
        )
        self.host.clients[self.client.profile] = self.client
        self.mark = 0

    # sent stanzas
    def sent(self, name=None, **attrs):
        found = []
        for elt in self.client.output:
            if not isinstance(elt, domish.Element):
                continue
            if name and elt.name != name:
                continue
            if all(elt.getAttribute(k) == v for k, v in attrs.items()):
                found.append(elt)
        return found

    def new(self, name=None, **attrs):
        """Stanzas sent since the last call of ``new``."""
        output = self.client.output[self.mark :]
        self.mark = len(self.client.output)
        return [
            e
            for e in output
            if isinstance(e, domish.Element)
            and (not name or e.name == name)
            and all(e.getAttribute(k) == v for k, v in attrs.items())
        ]

    def last_iq(self, to=None, iq_type="get"):
        iqs = [e for e in self.sent("iq", type=iq_type) if to is None or e.getAttribute("to") == to]
        assert iqs, f"no <iq type={iq_type}> sent to {to}"
        return iqs[-1]

    def receive(self, xml):
        self.client.receive(xml)

    def signals(self, name):
        return self.host.bridge.of(name)

    # common exchanges
    def answer_room_info(self, room=ROOM, features=ROOM_FEATURES, name="The Coven"):
        iq = self.last_iq(room)
        assert next(iq.elements(NS_DISCO_INFO, "query"), None) is not None
        feats = "".join(f"<feature var='{f}'/>" for f in features)
        answer(
            self.client,
            iq,
            f"<query xmlns='{NS_DISCO_INFO}'><identity category='conference' type='text' "
            f"name='{name}'/>{feats}</query>",
        )

    def presence(
        self,
        room,
        nick,
        codes=(),
        role="participant",
        affiliation="none",
        jid=None,
        ptype=None,
        extra="",
        item_extra="",
    ):
        status = "".join(f"<status code='{c}'/>" for c in codes)
        jid_attr = f" jid='{jid}'" if jid else ""
        type_attr = f" type='{ptype}'" if ptype else ""
        self.receive(
            f"<presence xmlns='jabber:client' from='{room}/{nick}' to='{ME}'{type_attr}>{extra}"
            f"<x xmlns='{NS_MUC_USER}'><item role='{role}' affiliation='{affiliation}'"
            f"{jid_attr}>{item_extra}</item>{status}</x></presence>"
        )

    def join(
        self,
        room=ROOM,
        nick="juliet",
        features=ROOM_FEATURES,
        others=("romeo",),
        codes=(110,),
        options=None,
        subject="Fire burn",
    ):
        d = run(self.muc.join(self.client, room, nick, options=options))
        self.answer_room_info(room, features)
        for other in others:
            self.presence(room, other, jid=f"{other}@montague.lit/home")
        self.presence(room, nick, codes=codes, jid=ME, affiliation="member")
        if subject is not None:
            self.receive(
                f"<message xmlns='jabber:client' type='groupchat' from='{room}/romeo' "
                f"to='{ME}'><subject>{subject}</subject></message>"
            )
        return result_of(d)


@pytest.fixture
def env():
    return Env()


def join_presence(env, room=ROOM, nick="juliet"):
    presences = [p for p in env.sent("presence") if p.getAttribute("to") == f"{room}/{nick}"]
    assert presences, f"no join presence to {room}/{nick}"
    return presences[-1]


def muc_x(elt):
    return next((c for c in elt.elements() if c.uri == NS_MUC and c.name == "x"), None)


# --- joining ----------------------------------------------------------------------------------


def test_join_flow_with_mam_room(env):
    room = env.join()
    presence = join_presence(env)
    x = muc_x(presence)
    history = next(x.elements(NS_MUC, "history"))
    assert history["maxstanzas"] == "0"  # MUC MAM: no history on join
    assert room.state == "joined" and room.nick == "juliet" and room.mam
    assert set(room.occupants) == {"romeo", "juliet"}
    assert room.occupants["romeo"].jid == "romeo@montague.lit/home"
    assert room.own.affiliation == "member"
    assert room.subject == "Fire burn" and room.subject_by == "romeo"
    (joined,) = env.signals("MucRoomJoined")
    assert joined[1] == ROOM and joined[2]["nick"] == "juliet" and joined[2]["mam"]
    assert {o["nick"] for o in joined[2]["occupants"]} == {"romeo", "juliet"}
    assert env.signals("MucSubject") == [("juliet", ROOM, "Fire burn", "romeo")]
    assert env.host.storage.history == []  # the subject is not a message
    assert [r.jid.userhost() for r in env.muc.joined_rooms(env.client)] == [ROOM]


def test_join_callbacks_for_mam(env):
    seen = []
    env.muc.add_join_callback(lambda client, room: seen.append((room.jid.userhost(), room.mam)))
    env.join()
    assert seen == [(ROOM, True)]


class FakeMAM:
    name = "XEP-0313"
    auto_catch_up = True

    def __init__(self, env):
        self.env = env
        self.calls = []

    def prepare_catch_up(self, client, archive):
        # called before the join presence goes out
        sent = [p for p in self.env.sent("presence") if p.getAttribute("to", "").startswith(ROOM)]
        self.calls.append(("prepare", archive.userhost(), len(sent)))

    async def catch_up(self, client, archive):
        self.calls.append(("catch_up", archive.userhost()))
        return {}


def test_mam_catch_up_around_join(env):
    mam = env.host.plugins["XEP-0313"] = FakeMAM(env)
    env.join()
    assert mam.calls == [("prepare", ROOM, 0), ("catch_up", ROOM)]
    mam.calls.clear()
    env.join(room=OTHER_ROOM, features=(NS_MUC,))  # no MUC MAM: no catch-up
    assert mam.calls == []


def test_join_without_mam_asks_history_since_last_message(env):
    env.host.storage.history.append(
        {
            "uid": "old",
            "source": ROOM,
            "dest": "juliet@capulet.lit",
            "type": "groupchat",
            "timestamp": 1_700_000_000.0,
        }
    )
    env.join(features=(NS_MUC,))
    history = next(muc_x(join_presence(env)).elements(NS_MUC, "history"))
    assert history["since"] == "2023-11-14T22:13:20.001Z"
    assert not history.hasAttribute("maxstanzas")


def test_first_join_without_mam_asks_last_messages(env):
    env.join(features=(NS_MUC,))
    history = next(muc_x(join_presence(env)).elements(NS_MUC, "history"))
    assert history["maxstanzas"] == "20"


def test_join_with_password(env):
    d = run(env.muc.join(env.client, ROOM, "juliet", password="s3cret"))
    env.answer_room_info()
    x = muc_x(join_presence(env))
    assert str(next(x.elements(NS_MUC, "password"))) == "s3cret"
    env.presence(ROOM, "juliet", codes=(110,))
    assert result_of(d).password == "s3cret"


def test_nick_conflict_adds_suffix(env):
    d = run(env.muc.join(env.client, ROOM, "juliet"))
    env.answer_room_info()
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/juliet' type='error'>"
        "<error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        "</presence>"
    )
    join_presence(env, nick="juliet_")
    env.presence(ROOM, "juliet_", codes=(110,))
    assert result_of(d).nick == "juliet_"


def test_nick_conflict_error_when_asked(env):
    d = run(env.muc.join(env.client, ROOM, "juliet", options={"nick_conflict": "error"}))
    env.answer_room_info()
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/juliet' type='error'>"
        "<error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>taken</text></error></presence>"
    )
    error = failure_of(d, xep_0045_muc.NickConflict)
    assert "already used" in error.message and "taken" in error.message
    assert error.dbus_name == "MucNickConflict"
    assert env.muc.get_room(env.client, ROOM) is None


@pytest.mark.parametrize(
    "condition, cls",
    [
        ("not-authorized", xep_0045_muc.PasswordRequired),
        ("forbidden", xep_0045_muc.Banned),
        ("registration-required", xep_0045_muc.MembersOnly),
        ("not-allowed", xep_0045_muc.CreationRestricted),
        ("service-unavailable", xep_0045_muc.RoomFull),
        ("item-not-found", xep_0045_muc.RoomNotFound),
    ],
)
def test_join_errors_are_named(env, condition, cls):
    d = run(env.muc.join(env.client, ROOM, "juliet"))
    env.answer_room_info()
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/juliet' type='error'>"
        f"<error type='auth'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        "</presence>"
    )
    error = failure_of(d, cls)
    assert ROOM in error.message and condition in error.message
    assert env.muc.get_room(env.client, ROOM) is None


def test_join_timeout(env):
    d = run(env.muc.join(env.client, ROOM, "juliet"))
    env.answer_room_info()
    env.clock.advance(31)
    failure_of(d, errors.Timeout)
    assert env.muc.get_room(env.client, ROOM) is None


def test_invalid_room_or_nick(env):
    failure_of(run(env.muc.join(env.client, "not a jid@@", "juliet")), errors.InvalidArgument)
    failure_of(run(env.muc.join(env.client, "chat.shakespeare.lit", "x")), errors.InvalidArgument)
    failure_of(run(env.muc.join(env.client, ROOM + "/nick", "x")), errors.InvalidArgument)


def test_room_creation_instant(env):
    d = run(env.muc.join(env.client, ROOM, "juliet"))
    env.answer_room_info()
    env.presence(ROOM, "juliet", codes=(201, 110), role="moderator", affiliation="owner")
    config = env.last_iq(ROOM, "set")
    query = next(config.elements(NS_MUC_OWNER, "query"))
    x = next(query.elements("jabber:x:data", "x"))
    assert x["type"] == "submit" and not list(x.elements())
    answer(env.client, config)
    env.answer_room_info()  # features read again once configured
    room = result_of(d)
    assert room.created and room.own.role == "moderator"


FORM = f"""<query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='form'>
<title>Configuration</title>
<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#roomconfig</value></field>
<field var='muc#roomconfig_roomname' type='text-single' label='Name'><value>Old</value></field>
<field var='muc#roomconfig_persistentroom' type='boolean'><value>0</value></field>
<field var='muc#roomconfig_whois' type='list-single'><value>moderators</value>
 <option label='Moderators'><value>moderators</value></option>
 <option label='Anyone'><value>anyone</value></option></field>
<field var='muc#roomconfig_roomadmins' type='jid-multi'/>
<field type='fixed'><value>Some text</value></field>
</x></query>"""


def submitted_values(iq):
    query = next(iq.elements(NS_MUC_OWNER, "query"))
    x = next(query.elements("jabber:x:data", "x"))
    assert x["type"] == "submit"
    return {f["var"]: [str(v) for v in f.elements() if v.name == "value"] for f in x.elements()}


def test_room_creation_configured(env):
    d = run(
        env.muc.join(
            env.client,
            ROOM,
            "juliet",
            options={
                "config": {
                    "muc#roomconfig_persistentroom": True,
                    "muc#roomconfig_roomname": "Coven",
                }
            },
        )
    )
    env.answer_room_info()
    env.presence(ROOM, "juliet", codes=(201, 110), role="moderator", affiliation="owner")
    answer(env.client, env.last_iq(ROOM, "get"), FORM)
    values = submitted_values(env.last_iq(ROOM, "set"))
    assert values["muc#roomconfig_persistentroom"] == ["1"]
    assert values["muc#roomconfig_roomname"] == ["Coven"]
    assert values["muc#roomconfig_whois"] == ["moderators"]
    assert values["FORM_TYPE"] == ["http://jabber.org/protocol/muc#roomconfig"]
    answer(env.client, env.last_iq(ROOM, "set"))
    env.answer_room_info()
    assert result_of(d).created


def test_service_changes_our_nick(env):
    d = run(env.muc.join(env.client, ROOM, "Juliet"))
    env.answer_room_info()
    env.presence(ROOM, "juliet-rewritten", codes=(110, 210))
    assert result_of(d).nick == "juliet-rewritten"


def test_join_twice_returns_the_same_room(env):
    room = env.join()
    assert result_of(run(env.muc.join(env.client, ROOM, "other"))) is room


def test_concurrent_joins_share_one_attempt(env):
    d1 = run(env.muc.join(env.client, ROOM, "juliet"))
    d2 = run(env.muc.join(env.client, ROOM, "juliet"))
    env.answer_room_info()
    assert len([p for p in env.sent("presence") if p.getAttribute("to", "").startswith(ROOM)]) == 1
    env.presence(ROOM, "juliet", codes=(110,))
    assert result_of(d1) is result_of(d2)


# --- presence updates ---------------------------------------------------------------------------


def test_occupant_join_update_leave(env):
    env.join()
    env.presence(ROOM, "mercutio", role="visitor")
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/mercutio'><show>away</show>"
        f"<status>brb</status><x xmlns='{NS_MUC_USER}'><item role='participant' "
        "affiliation='none'/></x></presence>"
    )
    occupant = env.muc.get_room(env.client, ROOM).occupants["mercutio"]
    assert (occupant.role, occupant.show, occupant.status) == ("participant", "away", "brb")
    env.presence(ROOM, "mercutio", ptype="unavailable", role="none")
    updates = [u[2] for u in env.signals("MucOccupantUpdate")]
    assert [u["state"] for u in updates] == ["joined", "updated", "left"]
    assert "mercutio" not in env.muc.get_room(env.client, ROOM).occupants


def test_other_occupant_kicked(env):
    env.join()
    env.presence(
        ROOM,
        "romeo",
        ptype="unavailable",
        role="none",
        codes=(307,),
        item_extra="<actor nick='juliet'/><reason>Be quiet</reason>",
    )
    update = env.signals("MucOccupantUpdate")[-1][2]
    assert update["state"] == "left" and update["reason"] == "kicked"
    assert update["actor"] == "juliet" and update["message"] == "Be quiet"


@pytest.mark.parametrize(
    "code, reason",
    [(307, "kicked"), (301, "banned"), (321, "affiliation"), (322, "members_only")],
)
def test_we_are_removed(env, code, reason):
    env.join()
    env.presence(ROOM, "juliet", ptype="unavailable", role="none", codes=(110, code))
    ((profile, room, details),) = env.signals("MucRoomLeft")
    assert room == ROOM and details["reason"] == reason
    assert env.muc.get_room(env.client, ROOM) is None


@pytest.mark.parametrize("code, reason", [(332, "shutdown"), (333, "error")])
def test_removed_by_the_service_rejoins_later(env, code, reason):
    env.join()
    env.new()
    env.presence(ROOM, "juliet", ptype="unavailable", role="none", codes=(110, code))
    ((_p, room, details),) = env.signals("MucRoomLeft")
    assert details["reason"] == reason and details["rejoining"]
    assert not env.muc.is_joined(env.client, ROOM)
    assert env.muc.get_room(env.client, ROOM) is not None
    # the service is still away: the attempt times out, another one is scheduled
    env.clock.advance(xep_0045_muc.REJOIN_FIRST_DELAY)
    env.answer_room_info()
    assert [p["to"] for p in env.new("presence")] == [f"{ROOM}/juliet"]
    env.clock.advance(env.muc.join_timeout)
    assert env.muc.get_room(env.client, ROOM) is not None
    env.clock.advance(2 * xep_0045_muc.REJOIN_FIRST_DELAY)
    env.answer_room_info()
    assert [p["to"] for p in env.new("presence")] == [f"{ROOM}/juliet"]
    env.presence(ROOM, "juliet", codes=(110,))
    assert env.muc.is_joined(env.client, ROOM)
    assert env.signals("MucRoomJoined")[-1][2]["rejoined"]


def test_leave_while_waiting_to_rejoin(env):
    env.join()
    env.presence(ROOM, "juliet", ptype="unavailable", role="none", codes=(110, 332))
    env.new()
    result_of(run(env.muc.leave(env.client, ROOM)))
    assert env.new("presence") == []
    assert env.muc.get_room(env.client, ROOM) is None
    env.clock.advance(xep_0045_muc.REJOIN_MAX_DELAY)
    assert env.new() == []


def test_room_destroyed(env):
    env.join()
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/juliet' type='unavailable'>"
        f"<x xmlns='{NS_MUC_USER}'><item affiliation='none' role='none'/>"
        f"<destroy jid='{OTHER_ROOM}'><reason>Moving</reason></destroy>"
        "<status code='110'/></x></presence>"
    )
    ((_p, _r, details),) = env.signals("MucRoomLeft")
    assert details["reason"] == "destroyed" and details["alternate"] == OTHER_ROOM
    assert details["message"] == "Moving"


def test_nick_change(env):
    env.join()
    d = run(env.muc.nick_set(env.client, ROOM, "jules"))
    assert join_presence(env, nick="jules")
    env.presence(
        ROOM,
        "juliet",
        ptype="unavailable",
        codes=(303, 110),
        item_extra="",
        role="participant",
        affiliation="member",
    )
    # the 303 item carries the new nick
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/juliet' type='unavailable'>"
        f"<x xmlns='{NS_MUC_USER}'><item affiliation='member' role='participant' nick='jules'/>"
        "<status code='303'/><status code='110'/></x></presence>"
    )
    env.presence(ROOM, "jules", codes=(110,), affiliation="member")
    assert result_of(d) == "jules"
    room = env.muc.get_room(env.client, ROOM)
    assert room.nick == "jules" and "jules" in room.occupants and "juliet" not in room.occupants
    states = [u[2]["state"] for u in env.signals("MucOccupantUpdate")]
    assert "nick" in states


def test_nick_change_conflict(env):
    env.join()
    d = run(env.muc.nick_set(env.client, ROOM, "romeo"))
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/romeo' type='error'>"
        "<error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        "</presence>"
    )
    failure_of(d, xep_0045_muc.NickConflict)
    assert env.muc.get_room(env.client, ROOM).nick == "juliet"


def test_malformed_presences_are_harmless(env):
    env.join()
    room = env.muc.get_room(env.client, ROOM)
    before = {n: o.as_dict() for n, o in room.occupants.items()}
    # hostile role/affiliation/codes/jid: ignored, occupant kept sane
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/romeo'><x xmlns='{NS_MUC_USER}'>"
        "<item role='superuser' affiliation='god' jid='@@bad@@'/><status code='abc'/>"
        "<status code='1100'/><status/></x></presence>"
    )
    romeo = room.occupants["romeo"]
    assert (romeo.role, romeo.affiliation) == ("participant", "none")
    assert romeo.jid == "romeo@montague.lit/home"
    # no from, bad from, room itself, not a room we are in, no <x/>: nothing changes
    env.receive("<presence xmlns='jabber:client'/>")
    env.receive("<presence xmlns='jabber:client' from='@@@'/>")
    env.receive(f"<presence xmlns='jabber:client' from='{ROOM}'/>")
    env.receive(f"<presence xmlns='jabber:client' from='{OTHER_ROOM}/x'/>")
    env.receive(f"<presence xmlns='jabber:client' from='{ROOM}/tybalt' type='probe'/>")
    env.receive(f"<presence xmlns='jabber:client' from='{ROOM}/juliet' type='unavailable'/>")
    # an unavailable without 110 from our nick removes us only when it says it is us
    assert env.muc.get_room(env.client, OTHER_ROOM) is None
    after = {n: o.as_dict() for n, o in room.occupants.items()}
    assert after == before
    # a 303 without a valid new nick changes nothing
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/romeo' type='unavailable'>"
        f"<x xmlns='{NS_MUC_USER}'><item nick=''/><status code='303'/></x></presence>"
    )
    assert env.muc.get_room(env.client, ROOM) is room


def test_presence_error_outside_join_is_only_logged(env):
    env.join()
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/juliet' type='error'>"
        "<error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "</error></presence>"
    )
    assert env.muc.is_joined(env.client, ROOM)


def test_presence_change_forwarded_to_rooms(env):
    env.join()
    env.new()
    elt = domish.Element((None, "presence"))
    elt.addElement("show", content="dnd")
    elt.addElement("status", content="busy")
    result_of(run(env.host.hooks.run("presence_send", env.client, elt)))
    (copy,) = env.new("presence")
    assert copy["to"] == f"{ROOM}/juliet"
    assert str(next(c for c in copy.elements() if c.name == "show")) == "dnd"


# --- messages --------------------------------------------------------------------------------


def groupchat(env, nick, body, msg_id="m1", room=ROOM, extra=""):
    env.receive(
        f"<message xmlns='jabber:client' type='groupchat' id='{msg_id}' from='{room}/{nick}' "
        f"to='{ME}'><body>{body}</body>{extra}</message>"
    )


def test_groupchat_received_and_stored(env):
    env.join()
    groupchat(
        env,
        "romeo",
        "Hello all",
        extra=(
            f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='sid-1'/>"
            "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='occ-romeo'/>"
        ),
    )
    (row,) = env.host.storage.history
    assert row["type"] == "groupchat" and row["source"] == ROOM
    assert row["source_resource"] == "romeo" and not row["outgoing"]
    assert row["stanza_id"] == "sid-1" and row["stanza_id_by"] == ROOM
    assert row["extra"]["occupant_id"] == "occ-romeo"
    assert len(env.signals("MessageNew")) == 1


def test_groupchat_send_stores_reflection_once(env):
    env.join()
    env.new()
    uid = result_of(run(env.host.messages.send("juliet", ROOM, "Hi", {"type": "groupchat"})))
    assert env.host.storage.history == []  # not stored on send
    (sent,) = env.new("message")
    assert sent["type"] == "groupchat" and sent["to"] == ROOM
    # reflection by the room, with its stanza-id
    groupchat(
        env,
        "juliet",
        "Hi",
        msg_id=sent["id"],
        extra=f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='sid-2'/>",
    )
    (row,) = env.host.storage.history
    assert row["uid"] == uid and row["outgoing"] and row["source_resource"] == "juliet"
    # the same message again (e.g. from the archive) is not stored twice
    groupchat(
        env,
        "juliet",
        "Hi",
        msg_id=sent["id"],
        extra=f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='sid-2'/>",
    )
    assert len(env.host.storage.history) == 1


def test_groupchat_send_to_room_not_joined(env):
    error = failure_of(
        run(env.host.messages.send("juliet", ROOM, "Hi", {"type": "groupchat"})),
        errors.PermissionDenied,
    )
    assert "not in room" in error.message
    assert env.sent("message") == []


def test_hostile_groupchat_messages_ignored(env):
    env.join()
    # from a room we are not in (claiming to be group chat)
    groupchat(env, "romeo", "spam", room=OTHER_ROOM)
    # a contact pretending its message is group chat
    env.receive(
        f"<message xmlns='jabber:client' type='groupchat' from='mallory@evil.lit/x' to='{ME}'>"
        "<body>fake</body></message>"
    )
    assert env.host.storage.history == []


def test_fake_subject_ignored(env):
    env.join()
    # from a nick that is not an occupant, after the room's own subject
    env.receive(
        f"<message xmlns='jabber:client' type='groupchat' from='{ROOM}/mallory' to='{ME}'>"
        "<subject>Pwned</subject></message>"
    )
    # from a room we are not in
    env.receive(
        f"<message xmlns='jabber:client' type='groupchat' from='{OTHER_ROOM}/romeo' to='{ME}'>"
        "<subject>Pwned</subject></message>"
    )
    room = env.muc.get_room(env.client, ROOM)
    assert room.subject == "Fire burn"
    # a subject with a body is a message, not a subject change
    groupchat(env, "romeo", "hello", extra="<subject>Not a subject change</subject>")
    assert room.subject == "Fire burn"
    # a real change by an occupant
    env.receive(
        f"<message xmlns='jabber:client' type='groupchat' from='{ROOM}/romeo' to='{ME}'>"
        "<subject>Cauldron bubble</subject></message>"
    )
    assert room.subject == "Cauldron bubble"
    assert [s[2] for s in env.signals("MucSubject")] == ["Fire burn", "Cauldron bubble"]


def test_archived_subject_and_bodyless_messages(env):
    env.join()
    seen = []
    env.host.hooks.add("message_received", lambda c, e, d: seen.append(d["extra"].copy()), -10)
    room = env.muc.get_room(env.client, ROOM)
    # an archived subject (MAM) is history: the room's subject stays
    elt = domish.Element((None, "message"))
    elt["from"] = f"{ROOM}/romeo"
    elt["type"] = "groupchat"
    elt.addElement("subject", content="Old subject")
    result_of(run(env.host.messages.received(env.client, elt, {"archived": True})))
    assert room.subject == "Fire burn" and env.host.storage.history == []
    # a chat state in the room reaches the plugins after this one, and is not stored
    env.receive(
        f"<message xmlns='jabber:client' type='groupchat' from='{ROOM}/romeo' to='{ME}'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    assert seen and seen[-1]["muc_nick"] == "romeo"
    assert env.host.storage.history == []


def test_subject_set(env):
    env.join()
    d = run(env.muc.subject_set(env.client, ROOM, "New"))
    (msg,) = [m for m in env.sent("message", type="groupchat") if m.subject]
    env.receive(
        f"<message xmlns='jabber:client' type='groupchat' id='{msg['id']}' "
        f"from='{ROOM}/juliet' to='{ME}'><subject>New</subject></message>"
    )
    result_of(d)
    d = run(env.muc.subject_set(env.client, ROOM, "Again"))
    msg = [m for m in env.sent("message", type="groupchat") if m.subject][-1]
    env.receive(
        f"<message xmlns='jabber:client' type='error' id='{msg['id']}' from='{ROOM}' to='{ME}'>"
        "<error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        "</message>"
    )
    failure_of(d, errors.PermissionDenied)


def test_private_messages(env):
    env.join()
    env.receive(
        f"<message xmlns='jabber:client' type='chat' from='{ROOM}/romeo' to='{ME}'>"
        f"<body>psst</body><x xmlns='{NS_MUC_USER}'/></message>"
    )
    (row,) = env.host.storage.history
    assert row["type"] == "chat" and row["extra"]["muc_pm"] and row["source_resource"] == "romeo"
    env.new()
    result_of(run(env.host.messages.send("juliet", f"{ROOM}/romeo", "hi", {})))
    (sent,) = env.new("message")
    assert any(c.uri == NS_MUC_USER and c.name == "x" for c in sent.elements())


def test_message_error_not_acceptable_rejoins(env):
    env.join()
    env.new()
    env.receive(
        f"<message xmlns='jabber:client' type='error' id='zz' from='{ROOM}' to='{ME}'>"
        "<error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "</error></message>"
    )
    assert env.signals("MucMessageError")[0][1] == ROOM
    env.answer_room_info()
    assert [p["to"] for p in env.new("presence")] == [f"{ROOM}/juliet"]


# --- moderation and configuration -----------------------------------------------------------


def test_kick_and_forbidden(env):
    env.join()
    d = run(env.muc.kick(env.client, ROOM, "romeo", "Out"))
    iq = env.last_iq(ROOM, "set")
    item = next(next(iq.elements(NS_MUC_ADMIN, "query")).elements(NS_MUC_ADMIN, "item"))
    assert (item["nick"], item["role"]) == ("romeo", "none")
    assert str(next(item.elements())) == "Out"
    answer(env.client, iq)
    result_of(d)
    d = run(env.muc.ban(env.client, ROOM, "romeo"))
    iq = env.last_iq(ROOM, "set")
    item = next(next(iq.elements(NS_MUC_ADMIN, "query")).elements(NS_MUC_ADMIN, "item"))
    assert (item["jid"], item["affiliation"]) == ("romeo@montague.lit", "outcast")
    answer(env.client, iq, error="forbidden")
    failure_of(d, errors.PermissionDenied)
    failure_of(run(env.muc.kick(env.client, ROOM, "nobody")), errors.NotFound)
    failure_of(run(env.muc.role_set(env.client, ROOM, "romeo", "king")), errors.InvalidArgument)


def test_config_get_and_set(env):
    env.join()
    d = run(env.muc.config_get(env.client, ROOM))
    answer(env.client, env.last_iq(ROOM, "get"), FORM)
    form = result_of(d)
    assert form["form_type"] == "http://jabber.org/protocol/muc#roomconfig"
    fields = {f["var"]: f for f in form["fields"]}
    assert fields["muc#roomconfig_whois"]["options"][1] == {"value": "anyone", "label": "Anyone"}
    assert fields["muc#roomconfig_persistentroom"]["type"] == "boolean"
    d = run(
        env.muc.config_set(
            env.client,
            ROOM,
            {"muc#roomconfig_whois": "anyone", "muc#roomconfig_roomadmins": ["a@b.c", "d@e.f"]},
        )
    )
    answer(env.client, env.last_iq(ROOM, "get"), FORM)
    values = submitted_values(env.last_iq(ROOM, "set"))
    assert values["muc#roomconfig_whois"] == ["anyone"]
    assert values["muc#roomconfig_roomadmins"] == ["a@b.c", "d@e.f"]
    assert values["muc#roomconfig_roomname"] == ["Old"]  # unchanged values are kept
    answer(env.client, env.last_iq(ROOM, "set"))
    result_of(d)
    d = run(env.muc.config_set(env.client, ROOM, {"no_such_field": "x"}))
    answer(env.client, env.last_iq(ROOM, "get"), FORM)
    failure_of(d, errors.InvalidArgument)


def test_leave(env):
    env.join()
    d = run(env.muc.leave(env.client, ROOM, "bye"))
    presence = env.sent("presence", type="unavailable")[-1]
    assert presence["to"] == f"{ROOM}/juliet"
    env.presence(ROOM, "juliet", ptype="unavailable", codes=(110,), role="none")
    result_of(d)
    assert env.signals("MucRoomLeft")[-1][2]["reason"] == "left"
    assert not env.muc.rooms(env.client)


def with_core_presence(env):
    """The core presence handling (RFC 6121) on the same stream, as in the daemon."""
    from sat.core.presence import PresenceHandling

    class Immediate:
        def addBootstrap(self, event, fn):
            fn(env.client.xmlstream)

    env.host.bridge.add_signal("PresenceUpdate", (), "a contact's presence")
    presence = PresenceHandling(env.host)
    env.client.factory = Immediate()
    presence.attach(env.client)
    seen = []
    env.host.hooks.add("presence_received", lambda client, elt: seen.append(elt["from"]))
    return seen


def test_occupants_are_not_contacts(env):
    hooked = with_core_presence(env)
    env.join()  # romeo is in, then us
    env.presence(ROOM, "mercutio", role="visitor")
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/mercutio'><show>away</show>"
        f"<x xmlns='{NS_MUC_USER}'><item role='participant' affiliation='none'/></x></presence>"
    )
    env.presence(ROOM, "mercutio", ptype="unavailable", role="none")
    # the room's presences are the plugin's: occupant signals, no contact presence
    states = [u[2]["state"] for u in env.signals("MucOccupantUpdate")]
    assert states == ["joined", "updated", "left"]
    assert env.signals("PresenceUpdate") == []
    assert env.client.presences == {} and env.client.last_unavailable == {}
    # the presence_received hooks still see them (editing plugins track who left)
    assert f"{ROOM}/mercutio" in hooked and f"{ROOM}/juliet" in hooked
    # leaving: no ghost contact either
    d = run(env.muc.leave(env.client, ROOM, "bye"))
    env.presence(ROOM, "romeo", ptype="unavailable", role="none")
    env.presence(ROOM, "juliet", ptype="unavailable", codes=(110,), role="none")
    result_of(d)
    assert env.signals("PresenceUpdate") == []
    assert env.client.presences == {} and env.client.last_unavailable == {}
    # presences from a room we are not in (any more), and errors: handled as before
    env.receive(f"<presence xmlns='jabber:client' from='{OTHER_ROOM}/x'/>")
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/juliet' type='error'>"
        "<error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        "</presence>"
    )
    assert [u[1] for u in env.signals("PresenceUpdate")] == [f"{OTHER_ROOM}/x"]
    assert list(env.client.presences) == [f"{OTHER_ROOM}/x"]


# --- reconnection -------------------------------------------------------------------------------


def test_rejoin_after_fresh_session(env):
    env.join()
    env.new()
    result_of(run(env.muc.profile_connected(env.client)))
    env.answer_room_info()
    (presence,) = env.new("presence")
    assert presence["to"] == f"{ROOM}/juliet"
    env.presence(ROOM, "juliet", codes=(110,))
    joined = env.signals("MucRoomJoined")
    assert len(joined) == 2 and joined[-1][2]["rejoined"]
    assert env.muc.is_joined(env.client, ROOM)


def test_failed_rejoin_reports_left(env):
    env.join()
    result_of(run(env.muc.profile_connected(env.client)))
    env.answer_room_info()
    env.receive(
        f"<presence xmlns='jabber:client' from='{ROOM}/juliet' type='error'>"
        "<error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        "</presence>"
    )
    details = env.signals("MucRoomLeft")[-1][2]
    assert details["reason"] == "error" and "banned" in details["message"]
    assert env.muc.get_room(env.client, ROOM) is None


# --- XEP-0249 ------------------------------------------------------------------------------------


def test_direct_invitation_signalled_not_joined(env):
    env.receive(
        f"<message xmlns='jabber:client' from='romeo@montague.lit/home' to='{ME}'>"
        f"<x xmlns='jabber:x:conference' jid='{ROOM}' reason='Join us' password='pw'/></message>"
    )
    assert env.signals("MucInvitation") == [
        ("juliet", ROOM, "romeo@montague.lit/home", "Join us", "pw")
    ]
    assert env.muc.rooms(env.client) == [] and env.sent("presence") == []
    assert env.host.storage.history == []
    # invalid room JIDs are ignored
    for bad in ("", "@@", f"{ROOM}/nick", "chat.shakespeare.lit"):
        env.receive(
            f"<message xmlns='jabber:client' from='romeo@montague.lit/home' to='{ME}'>"
            f"<x xmlns='jabber:x:conference' jid='{bad}'/></message>"
        )
    assert len(env.signals("MucInvitation")) == 1


def test_mediated_invitation_checked(env):
    xml = (
        f"<message xmlns='jabber:client' from='{{room}}' to='{ME}'><x xmlns='{NS_MUC_USER}'>"
        "<invite from='romeo@montague.lit/home'><reason>Come</reason></invite>"
        "<password>cauldron</password></x></message>"
    )
    env.receive(xml.format(room=ROOM))
    env.answer_room_info()
    assert env.signals("MucInvitation") == [
        ("juliet", ROOM, "romeo@montague.lit/home", "Come", "cauldron")
    ]
    env.receive(xml.format(room="mallory@evil.lit"))
    answer(
        env.client,
        env.last_iq("mallory@evil.lit"),
        f"<query xmlns='{NS_DISCO_INFO}'><identity category='client' type='pc'/></query>",
    )
    assert len(env.signals("MucInvitation")) == 1


def test_send_invitation(env):
    env.join()
    plugin = env.host.plugins["XEP-0249"]
    result_of(run(plugin.invite(env.client, ROOM, "romeo@montague.lit", "hello")))
    msg = env.sent("message", to="romeo@montague.lit")[-1]
    x = next(msg.elements("jabber:x:conference", "x"))
    assert x["jid"] == ROOM and x["reason"] == "hello"
    failure_of(run(plugin.invite(env.client, ROOM, "@@bad", "")), errors.InvalidArgument)


# --- XEP-0410 ---------------------------------------------------------------------------------


def ping_to_self(env):
    pings = [
        i
        for i in env.sent("iq", type="get", to=f"{ROOM}/juliet")
        if next(i.elements(NS_PING, "ping"), None) is not None
    ]
    return pings


def start_selfping(env):
    env.join()
    result_of(run(env.selfping.profile_connected(env.client)))
    env.clock.advance(env.selfping.interval + env.selfping.check_period())
    (ping,) = ping_to_self(env)
    return ping


def test_selfping_joined(env):
    ping = start_selfping(env)
    answer(env.client, ping)
    env.clock.advance(env.selfping.check_period())
    assert len(ping_to_self(env)) == 1  # activity refreshed: no new ping yet


@pytest.mark.parametrize(
    "condition", ["service-unavailable", "feature-not-implemented", "item-not-found"]
)
def test_selfping_errors_meaning_joined(env, condition):
    ping = start_selfping(env)
    env.new()
    answer(env.client, ping, error=condition)
    assert env.new("presence") == []
    assert env.muc.is_joined(env.client, ROOM)


@pytest.mark.parametrize("condition", ["not-acceptable", "not-allowed", "bad-request"])
def test_selfping_not_joined_rejoins(env, condition):
    ping = start_selfping(env)
    env.new()
    answer(env.client, ping, error=condition)
    env.answer_room_info()
    assert [p["to"] for p in env.new("presence")] == [f"{ROOM}/juliet"]
    env.presence(ROOM, "juliet", codes=(110,))
    assert env.muc.is_joined(env.client, ROOM)


@pytest.mark.parametrize("condition", ["remote-server-not-found", "remote-server-timeout", None])
def test_selfping_unreachable_retries(env, condition):
    ping = start_selfping(env)
    env.new()
    if condition is None:
        env.clock.advance(env.selfping.timeout + 1)
    else:
        answer(env.client, ping, error=condition)
    assert env.new("presence") == []
    count = len(ping_to_self(env))
    env.clock.advance(env.selfping.retry + env.selfping.check_period())
    assert len(ping_to_self(env)) == count + 1


def test_no_selfping_during_nick_change(env):
    env.join()
    result_of(run(env.selfping.profile_connected(env.client)))
    env.muc.join_timeout = env.selfping.check_period() * 2
    d = run(env.muc.nick_set(env.client, ROOM, "jules"))
    env.muc.get_room(env.client, ROOM).last_activity = -env.selfping.interval
    env.clock.advance(env.selfping.check_period())
    assert ping_to_self(env) == []
    env.clock.advance(env.muc.join_timeout)  # the nick change times out: checks resume
    failure_of(d, errors.Timeout)
    env.clock.advance(env.selfping.check_period())
    assert len(ping_to_self(env)) == 1


# --- XEP-0223 -------------------------------------------------------------------------------------


def publish_options(iq):
    pubsub = next(iq.elements(NS_PUBSUB, "pubsub"))
    options = next(pubsub.elements(NS_PUBSUB, "publish-options"))
    x = next(options.elements("jabber:x:data", "x"))
    return {f["var"]: str(next(f.elements())) for f in x.elements()}


def test_private_pep_publish_reconfigures_on_precondition(env):
    pep = env.host.plugins["XEP-0223"]
    payload = domish.Element(("urn:example", "data"))
    d = run(pep.publish(env.client, "urn:example", "current", payload))
    iq = env.last_iq("juliet@capulet.lit", "set")
    options = publish_options(iq)
    assert options["pubsub#access_model"] == "whitelist"
    assert options["pubsub#persist_items"] == "true"
    env.receive(
        f"<iq xmlns='jabber:client' type='error' id='{iq['id']}' from='juliet@capulet.lit' "
        f"to='{ME}'><error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "<precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/></error></iq>"
    )
    configure = env.last_iq("juliet@capulet.lit", "set")
    assert next(configure.elements(NS_PUBSUB + "#owner", "pubsub"), None) is not None
    answer(env.client, configure)
    republish = env.last_iq("juliet@capulet.lit", "set")
    assert republish is not iq and next(republish.elements(NS_PUBSUB, "pubsub"), None)
    answer(env.client, republish)
    result_of(d)


# --- bookmarks ---------------------------------------------------------------------------------


ACCOUNT = "juliet@capulet.lit"


def answer_account_info(env, features):
    feats = "".join(f"<feature var='{f}'/>" for f in features)
    answer(
        env.client,
        env.last_iq(ACCOUNT),
        f"<query xmlns='{NS_DISCO_INFO}'><identity category='account' type='registered'/>"
        f"<identity category='pubsub' type='pep'/>{feats}</query>",
    )


BOOKMARKS2_ITEMS = f"""<pubsub xmlns='{NS_PUBSUB}'><items node='urn:xmpp:bookmarks:1'>
<item id='{ROOM}'><conference xmlns='urn:xmpp:bookmarks:1' name='The Coven' autojoin='true'>
<nick>jules</nick><password>pw</password>
<extensions><state xmlns='urn:example'/></extensions></conference></item>
<item id='{OTHER_ROOM}'><conference xmlns='urn:xmpp:bookmarks:1' autojoin='0'/></item>
<item id='not a room'><conference xmlns='urn:xmpp:bookmarks:1' autojoin='true'/></item>
</items></pubsub>"""


def start_bookmarks2(env):
    result_of(run(env.bookmarks.profile_connected(env.client)))
    answer_account_info(
        env, ["urn:xmpp:bookmarks:1#compat", "http://jabber.org/protocol/pubsub#publish-options"]
    )
    answer(env.client, env.last_iq(ACCOUNT), BOOKMARKS2_ITEMS)


def test_bookmarks2_load_and_autojoin(env):
    start_bookmarks2(env)
    # autojoin of the coven with the bookmark's nick and password
    env.answer_room_info()
    presence = join_presence(env, nick="jules")
    assert str(next(muc_x(presence).elements(NS_MUC, "password"))) == "pw"
    env.presence(ROOM, "jules", codes=(110,))
    assert env.muc.is_joined(env.client, ROOM)
    listed = result_of(run(env.bookmarks.list(env.client)))
    assert listed == [
        {
            "room": ROOM,
            "name": "The Coven",
            "nick": "jules",
            "autojoin": True,
            "has_password": True,
        },
        {"room": OTHER_ROOM, "name": "", "nick": "", "autojoin": False, "has_password": False},
    ]


def test_bookmarks2_set_keeps_extensions_and_password(env):
    start_bookmarks2(env)
    d = run(env.bookmarks.set(env.client, ROOM, "Renamed", "jules", True, ""))
    iq = env.last_iq(ACCOUNT, "set")
    options = publish_options(iq)
    assert options["pubsub#access_model"] == "whitelist"
    assert options["pubsub#max_items"] == "max"
    assert options["pubsub#send_last_published_item"] == "never"
    item = next(next(next(iq.elements(NS_PUBSUB, "pubsub")).elements()).elements())
    assert item["id"] == ROOM
    conference = next(item.elements())
    assert conference["name"] == "Renamed" and conference["autojoin"] == "true"
    children = {c.name: c for c in conference.elements()}
    assert str(children["password"]) == "pw"
    assert next(children["extensions"].elements()).uri == "urn:example"
    answer(env.client, iq)
    result_of(d)
    assert env.signals("BookmarkUpdate")[-1][2]["name"] == "Renamed"


def test_bookmarks2_remove(env):
    start_bookmarks2(env)
    d = run(env.bookmarks.remove(env.client, OTHER_ROOM))
    iq = env.last_iq(ACCOUNT, "set")
    retract = next(next(iq.elements(NS_PUBSUB, "pubsub")).elements())
    assert retract.name == "retract" and retract["notify"] == "true"
    answer(env.client, iq)
    result_of(d)
    assert env.signals("BookmarkRemoved") == [("juliet", OTHER_ROOM)]
    failure_of(run(env.bookmarks.remove(env.client, OTHER_ROOM)), errors.NotFound)


def event(env, inner, sender=ACCOUNT):
    env.receive(
        f"<message xmlns='jabber:client' type='headline' from='{sender}' to='{ME}'>"
        f"<event xmlns='http://jabber.org/protocol/pubsub#event'>{inner}</event></message>"
    )


def test_bookmarks2_notifications(env):
    start_bookmarks2(env)
    env.answer_room_info()
    env.presence(ROOM, "jules", codes=(110,))
    env.new()
    # another client adds an autojoin bookmark: we join
    event(
        env,
        f"<items node='urn:xmpp:bookmarks:1'><item id='{OTHER_ROOM}'>"
        "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='1'/></item></items>",
    )
    env.answer_room_info(OTHER_ROOM)
    assert [p["to"] for p in env.new("presence")] == [f"{OTHER_ROOM}/juliet"]
    # from someone else: ignored
    event(
        env,
        f"<items node='urn:xmpp:bookmarks:1'><retract id='{ROOM}'/></items>",
        sender="mallory@evil.lit",
    )
    assert env.bookmarks.get(env.client, ROOM) is not None
    # retracted by another client: we leave the room
    event(env, f"<items node='urn:xmpp:bookmarks:1'><retract id='{ROOM}'/></items>")
    assert env.bookmarks.get(env.client, ROOM) is None
    (leave,) = env.new("presence", type="unavailable")
    assert leave["to"] == f"{ROOM}/jules"
    assert ("juliet", ROOM) in env.signals("BookmarkRemoved")
    assert env.host.storage.history == []


LEGACY_STORAGE = f"""<storage xmlns='storage:bookmarks'>
<conference jid='{ROOM}' name='Coven' autojoin='1'><nick>jules</nick></conference>
<url name='Site' url='https://example.org/'/>
</storage>"""


def test_legacy_pep_bookmarks(env):
    result_of(run(env.bookmarks.profile_connected(env.client)))
    answer_account_info(env, ["http://jabber.org/protocol/pubsub#publish-options"])
    iq = env.last_iq(ACCOUNT)
    items = next(next(iq.elements(NS_PUBSUB, "pubsub")).elements())
    assert items["node"] == "storage:bookmarks"
    answer(
        env.client,
        iq,
        f"<pubsub xmlns='{NS_PUBSUB}'><items node='storage:bookmarks'><item id='current'>"
        f"{LEGACY_STORAGE}</item></items></pubsub>",
    )
    env.answer_room_info()
    assert join_presence(env, nick="jules")
    d = run(env.bookmarks.set(env.client, OTHER_ROOM, "Other", "", False, "pw2"))
    answer(
        env.client,
        env.last_iq(ACCOUNT),
        f"<pubsub xmlns='{NS_PUBSUB}'><items node='storage:bookmarks'><item id='current'>"
        f"{LEGACY_STORAGE}</item></items></pubsub>",
    )
    publish = env.last_iq(ACCOUNT, "set")
    assert publish_options(publish)["pubsub#access_model"] == "whitelist"
    storage = next(
        next(next(next(publish.elements(NS_PUBSUB, "pubsub")).elements()).elements()).elements()
    )
    children = list(storage.elements())
    assert {c.getAttribute("jid") for c in children if c.name == "conference"} == {ROOM, OTHER_ROOM}
    assert any(c.name == "url" for c in children)  # kept
    answer(env.client, publish)
    result_of(d)
    assert {b["room"] for b in result_of(run(env.bookmarks.list(env.client)))} == {ROOM, OTHER_ROOM}


def test_private_xml_bookmarks(env):
    result_of(run(env.bookmarks.profile_connected(env.client)))
    answer(
        env.client,
        env.last_iq(ACCOUNT),
        f"<query xmlns='{NS_DISCO_INFO}'><identity category='account' type='registered'/></query>",
    )
    iq = env.last_iq(ACCOUNT)
    assert next(iq.elements("jabber:iq:private", "query"), None) is not None
    answer(env.client, iq, f"<query xmlns='jabber:iq:private'>{LEGACY_STORAGE}</query>")
    env.answer_room_info()
    assert join_presence(env, nick="jules")
    d = run(env.bookmarks.remove(env.client, ROOM))
    answer(
        env.client,
        env.last_iq(ACCOUNT),
        f"<query xmlns='jabber:iq:private'>{LEGACY_STORAGE}</query>",
    )
    stored = env.last_iq(ACCOUNT, "set")
    storage = next(next(stored.elements("jabber:iq:private", "query")).elements())
    assert [c.name for c in storage.elements()] == ["url"]
    answer(env.client, stored)
    result_of(d)
    assert result_of(run(env.bookmarks.list(env.client))) == []


def test_bridge_members_declared(env):
    methods = set(env.host.bridge.methods)
    assert {
        "MucJoin",
        "MucLeave",
        "MucNickSet",
        "MucSubjectSet",
        "MucOccupantsGet",
        "MucRoomsJoined",
        "MucKick",
        "MucBan",
        "MucAffiliationSet",
        "MucRoleSet",
        "MucConfigGet",
        "MucConfigSet",
        "MucRoomDestroy",
        "MucInvite",
        "MucSelfPing",
        "BookmarksList",
        "BookmarkSet",
        "BookmarkRemove",
    } <= methods
    assert {
        "MucRoomJoined",
        "MucRoomLeft",
        "MucOccupantUpdate",
        "MucSubject",
        "MucInvitation",
        "BookmarkUpdate",
        "BookmarkRemoved",
    } <= set(env.host.bridge.signals)
