"""Editing messages after the fact: XEP-0308 corrections, XEP-0424 retractions, XEP-0425
moderation, XEP-0444 reactions, XEP-0461 replies.

In-memory streams (wokkel's stub), the real message pipeline (sat.core.messages), the real
hooks, a real SQLite storage (FTS checked), the real bridge contract (every signal goes
through its type conversion) and the real XEP-0359/0203/0393/0245 plugins; disco, caps and
the MUC plugin are small fakes exposing the public API the plugins use (rooms are real
``Room``/``Occupant`` objects of the XEP-0045 plugin).
"""

from __future__ import annotations

from sat.core import wokkel_compat  # noqa: F401  (before any wokkel import)

# isort: split

import logging
import time

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import data_form, disco
from wokkel.generic import parseXml
from wokkel.test import helpers as wokkel_helpers

from sat.bridge.contract import Bridge
from sat.core import errors
from sat.core.hooks import Hooks
from sat.core.messages import MessageHandling
from sat.memory.storage import Storage
from sat.plugins import (
    _editing,
    _pending_references,
    xep_0203_delay,
    xep_0245_me,
    xep_0308_correction,
    xep_0359_unique_ids,
    xep_0393_styling,
    xep_0424_retraction,
    xep_0425_moderation,
    xep_0444_reactions,
    xep_0461_replies,
)
from sat.plugins._editing import Author, same_author
from sat.plugins.xep_0045_muc import Occupant, Room
from sat.plugins.xep_0308_correction import NS_LMC
from sat.plugins.xep_0424_retraction import NS_RETRACT
from sat.plugins.xep_0444_reactions import NS_REACTIONS, is_emoji
from sat.plugins.xep_0461_replies import NS_REPLY

ME = "louise@example.org"
ME_FULL = ME + "/home"
BOB = "bob@example.net"
BOB_FULL = BOB + "/phone"
MALLORY = "mallory@evil.example"
ROOM = "cafe@conference.example.org"
NS_SID = "urn:xmpp:sid:0"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_MODERATE = "urn:xmpp:message-moderate:1"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
PROFILE = "louise"


# --- fakes ------------------------------------------------------------------------------------


class FakeDisco:
    name = "XEP-0030"

    def __init__(self):
        #: entity -> DiscoInfo
        self.infos: dict[str, disco.DiscoInfo] = {}
        self.iqs: list[tuple[str, domish.Element, str]] = []
        self.iq_error: Exception | None = None

    def set_features(self, entity, *features, form=None):
        info = disco.DiscoInfo()
        for feature in features:
            info.append(disco.DiscoFeature(feature))
        if form is not None:
            info.append(form)
        self.infos[entity] = info

    async def info(self, client, jid=None, node="", use_cache=True):
        return self.infos.get(str(jid), disco.DiscoInfo())

    async def has_feature(self, client, feature, jid=None):
        if feature == NS_SID:
            return True
        return feature in (await self.info(client, jid)).features

    def cached_feature(self, client, feature, jid=None):
        # as if every answer were cached: the synchronous path of the receive loop
        if feature == NS_SID:
            return True
        return feature in self.infos.get(str(jid), disco.DiscoInfo()).features

    async def send_iq(self, client, jid, payload, *, what=None, timeout=None, iq_type="get"):
        self.iqs.append((str(jid), payload, iq_type))
        if self.iq_error is not None:
            raise self.iq_error
        return domish.Element((None, "iq"))


class FakeCaps:
    name = "XEP-0115"

    def __init__(self):
        self.infos: dict[str, disco.DiscoInfo] = {}

    async def get_caps_info(self, client, jid):
        return self.infos.get(str(jid))


class FakeMuc:
    name = "XEP-0045"

    def __init__(self):
        self.rooms: dict[str, Room] = {}

    def get_room(self, client, room_jid):
        return self.rooms.get(str(room_jid).partition("/")[0])

    def join(self, room_jid, nick, features=(), occupants=None):
        room = Room(JID(room_jid), nick)
        room.state = "joined"
        room.features = set(features)
        for occupant_nick, attrs in (occupants or {}).items():
            occupant = Occupant(occupant_nick)
            for key, value in attrs.items():
                setattr(occupant, key, value)
            room.occupants[occupant_nick] = occupant
        self.rooms[room_jid] = room
        return room


class SignalRecorder:
    def __init__(self):
        self.signals: list[tuple[str, list]] = []

    def bridge_signal(self, signal, wire_args):
        from sat.bridge import types as bt

        self.signals.append((signal.name, [bt.from_wire(a) for a in wire_args]))

    def bridge_changed(self, member):
        pass

    def updates(self, kind=None):
        return [
            args
            for name, args in self.signals
            if name == "MessageUpdate" and (kind is None or args[2] == kind)
        ]

    def new(self):
        return [args[1] for name, args in self.signals if name == "MessageNew"]


class FakeHost:
    def __init__(self, storage):
        self.storage = storage
        self.hooks = Hooks()
        self.bridge = Bridge()
        self.bridge.add_signal(
            "MessageNew",
            (("profile", "s", "profile"), ("message", "a{sv}", "message")),
            "new message",
            interface="core",
        )
        self.bridge.add_signal(
            "MessageUpdate",
            (
                ("profile", "s", "profile"),
                ("uid", "s", "uid"),
                ("type", "s", "what changed"),
                ("data", "a{sv}", "new values"),
            ),
            "a stored message changed",
            interface="core",
        )
        self.recorder = SignalRecorder()
        self.bridge.attach(self.recorder)
        self.plugins: dict = {}
        self.clients: dict = {}
        self.messages = MessageHandling(self)

    def get_client(self, profile):
        try:
            return self.clients[profile]
        except KeyError:
            raise errors.NotConnected(profile) from None


class FakeClient(wokkel_helpers.TestableStreamManager):
    def __init__(self, clock, jid=ME_FULL, profile=PROFILE):
        super().__init__(reactor=clock)
        self.profile = profile
        self.jid = JID(jid)
        self.presences: dict = {}

    @property
    def output(self):
        return self.stub.output


class Env:
    """One profile (louise) of a host with the editing plugins loaded."""

    def __init__(self, storage):
        self.storage = storage
        self.host = FakeHost(storage)
        self.disco = FakeDisco()
        self.caps = FakeCaps()
        self.muc = FakeMuc()
        plugins = self.host.plugins
        plugins["XEP-0030"] = self.disco
        plugins["XEP-0115"] = self.caps
        plugins["XEP-0045"] = self.muc
        for cls in (
            xep_0359_unique_ids.UniqueIdsPlugin,
            xep_0203_delay.DelayPlugin,
            xep_0393_styling.StylingPlugin,
            xep_0245_me.MePlugin,
            xep_0308_correction.CorrectionPlugin,
            xep_0424_retraction.RetractionPlugin,
            xep_0425_moderation.ModerationPlugin,
            xep_0444_reactions.ReactionsPlugin,
            xep_0461_replies.RepliesPlugin,
        ):
            plugin = cls(self.host)
            plugins[plugin.name] = plugin
        self.clock = task.Clock()
        self.client = FakeClient(self.clock)
        for plugin in list(plugins.values()):
            get_handler = getattr(plugin, "get_handler", None)
            handler = get_handler(self.client) if get_handler else None
            if handler is not None:
                handler.setHandlerParent(self.client)
        self.host.clients[PROFILE] = self.client
        #: references to unknown messages; saved on this clock (no timer left behind)
        self.pending = _pending_references.pending_references(self.host)
        self.pending.clock = self.clock

    async def settle(self):
        """Wait for the pending references being applied (they run after the storage)."""
        await self.pending.idle()

    @property
    def signals(self):
        return self.host.recorder

    def plugin(self, name):
        return self.host.plugins[name]

    async def receive(self, xml: str, extra: dict | None = None):
        await self.host.messages.received(self.client, parseXml(xml), extra)

    async def send(self, to, body, **extra):
        return await self.host.messages.send(PROFILE, to, body, extra)

    def sent(self, clear=True) -> list[domish.Element]:
        out = [e for e in self.client.output if isinstance(e, domish.Element)]
        if clear:
            del self.client.output[:]
        return out

    async def history(self, with_jid=None):
        return await self.storage.history_get(PROFILE, with_jid=with_jid, limit=None)

    async def get(self, uid):
        return await self.storage.history_find(PROFILE, uid=uid)

    async def search(self, words, with_jid=None):
        rows = await self.storage.history_search(PROFILE, words, with_jid=with_jid)
        return [r["uid"] for r in rows]

    async def from_bob(self, body, msg_id, frm=BOB_FULL, extra_xml=""):
        await self.receive(
            f"<message xmlns='jabber:client' from='{frm}' to='{ME_FULL}' type='chat' "
            f"id='{msg_id}'><body>{body}</body>{extra_xml}</message>"
        )
        rows = [r for r in await self.history(BOB) if (r["extra"].get("message_id") == msg_id)]
        return rows[-1] if rows else None

    def join(self, **kwargs):
        return self.muc.join(ROOM, "louise", **kwargs)

    async def in_room(self, nick, body, msg_id, stanza_id, occupant_id=None, extra_xml=""):
        oid = f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='{occupant_id}'/>" if occupant_id else ""
        await self.receive(
            f"<message xmlns='jabber:client' from='{ROOM}/{nick}' to='{ME_FULL}' "
            f"type='groupchat' id='{msg_id}'><body>{body}</body>"
            f"<stanza-id xmlns='{NS_SID}' id='{stanza_id}' by='{ROOM}'/>{oid}{extra_xml}</message>"
        )
        rows = [r for r in await self.history(ROOM) if r.get("stanza_id") == stanza_id]
        return rows[-1] if rows else None


@pytest_twisted.async_yield_fixture
async def env(tmp_path):
    storage = Storage(tmp_path / "sat.db")
    await storage.initialise()
    await storage.profile_create(PROFILE)
    yield Env(storage)
    await storage.close()


def child(elt, uri, name):
    return next((c for c in elt.elements() if c.uri == uri and c.name == name), None)


def correction_xml(frm, ref, body, msg_id, msg_type="chat", extra_xml=""):
    return (
        f"<message xmlns='jabber:client' from='{frm}' to='{ME_FULL}' type='{msg_type}' "
        f"id='{msg_id}'><body>{body}</body><replace xmlns='{NS_LMC}' id='{ref}'/>"
        f"{extra_xml}</message>"
    )


# --- XEP-0308: receiving ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_correction_from_contact_replaces_body_keeps_edits_and_fts(env):
    original = await env.from_bob("the wrong wurd", "m1")
    await env.receive(correction_xml(BOB_FULL, "m1", "the *right* word", "m2"))
    rows = await env.history(BOB)
    assert len(rows) == 1, "a correction is not a new message"
    row = rows[0]
    assert row["uid"] == original["uid"]
    assert row["body"] == "the *right* word"
    edits = row["extra"]["edits"]
    assert [e["body"] for e in edits] == ["the wrong wurd"]
    assert edits[0]["id"] == "m2" and edits[0]["timestamp"] == original["timestamp"]
    assert row["extra"]["edited"] >= edits[0]["timestamp"]
    assert row["extra"]["styling"][0]["type"] == "strong"  # recomputed for the new body
    assert await env.search("wurd") == []
    assert await env.search("right") == [row["uid"]]
    (update,) = env.signals.updates("correction")
    assert update[0] == PROFILE and update[1] == row["uid"]
    assert update[3]["body"] == "the *right* word"
    assert update[3]["edits"][0]["body"] == "the wrong wurd"
    # a second correction names the original id again (XEP-0308 business rules)
    await env.receive(correction_xml(BOB_FULL, "m1", "the right word", "m3"))
    row = await env.get(original["uid"])
    assert row["body"] == "the right word"
    assert [e["body"] for e in row["extra"]["edits"]] == ["the wrong wurd", "the *right* word"]
    assert "styling" not in row["extra"]


@pytest_twisted.ensureDeferred
async def test_correction_from_another_resource_of_the_contact_is_accepted(env):
    original = await env.from_bob("helo", "m1", frm=BOB_FULL)
    await env.receive(correction_xml(BOB + "/laptop", "m1", "hello", "m2"))
    assert (await env.get(original["uid"]))["body"] == "hello"


@pytest_twisted.ensureDeferred
async def test_correction_of_our_message_by_contact_is_refused(env, caplog):
    uid = await env.send(BOB, "I owe you nothing")
    env.sent()
    before = await env.history(BOB)
    with caplog.at_level(logging.WARNING):
        await env.receive(correction_xml(BOB_FULL, uid, "I owe you 1000 €", "evil1"))
    assert "refused correction" in caplog.text
    assert await env.history(BOB) == before
    assert env.signals.updates() == []


@pytest_twisted.ensureDeferred
async def test_correction_naming_another_conversation_message_changes_nothing(env, caplog):
    await env.from_bob("bob's words", "m1")
    before = await env.history()
    with caplog.at_level(logging.INFO):
        await env.receive(correction_xml(MALLORY + "/x", "m1", "mallory's words", "evil"))
    rows = await env.history()
    # not applied to bob's message: at most a message of mallory's own, in her conversation
    assert [r for r in rows if r["source"] == BOB] == [r for r in before if r["source"] == BOB]
    assert all(r["body"] != "mallory's words" or r["source"] == MALLORY for r in rows)
    assert env.signals.updates() == []


@pytest_twisted.ensureDeferred
async def test_correction_of_an_older_message_is_not_applied(env, caplog):
    first = await env.from_bob("first", "m1")
    await env.from_bob("second", "m2")
    with caplog.at_level(logging.INFO):
        await env.receive(correction_xml(BOB_FULL, "m1", "first, corrected", "m3"))
    assert "not its last message" in caplog.text
    assert (await env.get(first["uid"]))["body"] == "first"
    bodies = [r["body"] for r in await env.history(BOB)]
    assert bodies == ["first", "second", "first, corrected"]  # kept as its own message
    assert env.signals.updates() == []


@pytest_twisted.ensureDeferred
async def test_correction_of_unknown_message_is_stored_as_a_message(env):
    await env.receive(correction_xml(BOB_FULL, "never-seen", "corrected text", "m9"))
    (row,) = await env.history(BOB)
    assert row["body"] == "corrected text"
    assert row["extra"]["replace_id"] == "never-seen"


@pytest_twisted.ensureDeferred
async def test_same_correction_twice_is_applied_once(env):
    original = await env.from_bob("v1", "m1")
    xml = correction_xml(BOB_FULL, "m1", "v2", "m2")
    await env.receive(xml)
    await env.receive(xml)
    row = await env.get(original["uid"])
    assert len(row["extra"]["edits"]) == 1
    assert len(env.signals.updates("correction")) == 1


@pytest_twisted.ensureDeferred
async def test_malformed_corrections_do_not_crash(env):
    original = await env.from_bob("text", "m1")
    long_id = "x" * 5000
    await env.receive(correction_xml(BOB_FULL, long_id, "other", "m2"))
    await env.receive(
        f"<message xmlns='jabber:client' from='{BOB_FULL}' type='chat' id='m3'>"
        f"<replace xmlns='{NS_LMC}' id='m1'/></message>"
    )
    assert (await env.get(original["uid"]))["body"] == "text"


@pytest_twisted.ensureDeferred
async def test_correction_from_carbon_of_our_other_device(env):
    uid = await env.send(BOB, "typo heer")
    env.sent()
    inner = (
        f"<message xmlns='jabber:client' from='{ME}/laptop' to='{BOB}' type='chat' id='c1'>"
        f"<body>typo here</body><replace xmlns='{NS_LMC}' id='{uid}'/></message>"
    )
    await env.host.messages.received(env.client, parseXml(inner), {"carbon": "sent"})
    assert (await env.get(uid))["body"] == "typo here"


# --- XEP-0308 in rooms ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_room_correction_by_another_occupant_is_refused(env, caplog):
    env.join(features={NS_SID})
    msg = await env.in_room("alice", "meet at 6", "a1", "s1")
    with caplog.at_level(logging.WARNING):
        await env.receive(correction_xml(f"{ROOM}/mallory", "a1", "meet at 9", "x1", "groupchat"))
    assert "refused correction" in caplog.text
    assert (await env.get(msg["uid"]))["body"] == "meet at 6"
    # alice may correct her own message
    await env.receive(correction_xml(f"{ROOM}/alice", "a1", "meet at 7", "a2", "groupchat"))
    assert (await env.get(msg["uid"]))["body"] == "meet at 7"


@pytest_twisted.ensureDeferred
async def test_room_correction_after_the_nick_changed_hands_is_refused(env, caplog):
    env.join(features={NS_SID})
    msg = await env.in_room("alice", "hello all", "a1", "s1")
    # alice leaves; someone else may take the nick
    await env.host.hooks.run(
        "presence_received",
        env.client,
        parseXml(
            f"<presence xmlns='jabber:client' from='{ROOM}/alice' type='unavailable'>"
            f"<x xmlns='{NS_MUC_USER}'/></presence>"
        ),
    )
    time.sleep(0.01)
    with caplog.at_level(logging.WARNING):
        await env.receive(correction_xml(f"{ROOM}/alice", "a1", "hijacked", "z1", "groupchat"))
    assert "left the room" in caplog.text
    assert (await env.get(msg["uid"]))["body"] == "hello all"


@pytest_twisted.ensureDeferred
async def test_room_occupant_id_decides_when_the_room_announces_it(env, caplog):
    env.join(features={NS_SID, NS_OCCUPANT_ID})
    msg = await env.in_room("alice", "draft", "a1", "s1", occupant_id="alice-oid")
    assert msg["extra"]["occupant_id"] == "alice-oid"
    # same nick, another participant (another occupant-id): refused
    with caplog.at_level(logging.WARNING):
        await env.receive(
            correction_xml(
                f"{ROOM}/alice",
                "a1",
                "forged",
                "z1",
                "groupchat",
                f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='other-oid'/>",
            )
        )
    assert "different occupant-id" in caplog.text
    assert (await env.get(msg["uid"]))["body"] == "draft"
    await env.receive(
        correction_xml(
            f"{ROOM}/alice",
            "a1",
            "final",
            "a2",
            "groupchat",
            f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='alice-oid'/>",
        )
    )
    assert (await env.get(msg["uid"]))["body"] == "final"


@pytest_twisted.ensureDeferred
async def test_room_real_jid_must_match_when_known(env, caplog):
    room = env.join(features={NS_SID}, occupants={"alice": {"jid": "alice@example.com/x"}})
    msg = await env.in_room("alice", "v1", "a1", "s1")
    assert msg["extra"]["occupant_jid"] == "alice@example.com"
    room.occupants["alice"].jid = "eve@example.com/y"
    with caplog.at_level(logging.WARNING):
        await env.receive(correction_xml(f"{ROOM}/alice", "a1", "v2", "a2", "groupchat"))
    assert "belongs to another user" in caplog.text
    assert (await env.get(msg["uid"]))["body"] == "v1"


# --- XEP-0308: sending ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_message_correct_sends_replace_and_updates_history(env):
    lmc = env.plugin("XEP-0308")
    uid = await env.send(BOB, "see you tomorow")
    env.sent()
    await lmc._bridge_correct(PROFILE, uid, "see you tomorrow")
    (elt,) = env.sent()
    assert elt["to"] == BOB and elt["type"] == "chat" and elt["id"] != uid
    assert str(child(elt, None, "body") or next(elt.elements(None, "body"))) == "see you tomorrow"
    replace = child(elt, NS_LMC, "replace")
    assert replace["id"] == uid
    origin = child(elt, NS_SID, "origin-id")
    assert origin is not None and origin["id"] == elt["id"]
    row = await env.get(uid)
    assert row["body"] == "see you tomorrow"
    assert row["extra"]["edits"][0]["body"] == "see you tomorow"
    assert await env.search("tomorow") == []
    assert env.signals.updates("correction")[0][1] == uid
    # a second correction still names the original
    await lmc.correct(env.client, uid, "see you on Tuesday")
    (elt,) = env.sent()
    assert child(elt, NS_LMC, "replace")["id"] == uid


@pytest_twisted.ensureDeferred
async def test_message_correct_refusals(env):
    lmc = env.plugin("XEP-0308")
    first = await env.send(BOB, "one")
    await env.send(BOB, "two")
    bob_msg = await env.from_bob("bob's", "b1")
    env.sent()
    with pytest.raises(errors.PermissionDenied, match="last message"):
        await lmc.correct(env.client, first, "uno")
    with pytest.raises(errors.PermissionDenied, match="own"):
        await lmc.correct(env.client, bob_msg["uid"], "mine now")
    with pytest.raises(errors.NotFound):
        await lmc.correct(env.client, "nope", "x")
    with pytest.raises(errors.InvalidArgument):
        await lmc.correct(env.client, first, "   ")
    assert env.sent() == []
    assert env.signals.updates() == []


@pytest_twisted.ensureDeferred
async def test_message_correct_refused_when_peer_clients_lack_the_feature(env):
    lmc = env.plugin("XEP-0308")
    uid = await env.send(BOB, "hi")
    env.sent()
    env.client.presences[BOB_FULL] = {"jid": BOB, "resource": "phone"}
    old_client = disco.DiscoInfo()
    old_client.append(disco.DiscoFeature("urn:xmpp:receipts"))
    env.caps.infos[BOB_FULL] = old_client
    with pytest.raises(_editing.FeatureNotSupported):
        await lmc.correct(env.client, uid, "hello")
    assert env.sent() == []
    old_client.append(disco.DiscoFeature(NS_LMC))
    await lmc.correct(env.client, uid, "hello")
    assert len(env.sent()) == 1


@pytest_twisted.ensureDeferred
async def test_message_correct_in_room_waits_for_the_reflection(env):
    env.join(features={NS_SID})
    lmc = env.plugin("XEP-0308")
    await env.in_room("louise", "my mesage", "mine1", "s1")
    (row,) = await env.history(ROOM)
    assert env.plugin("XEP-0308").is_own(env.client, row)
    await lmc.correct(env.client, row["uid"], "my message")
    (elt,) = env.sent()
    assert elt["to"] == ROOM and elt["type"] == "groupchat"
    assert child(elt, NS_LMC, "replace")["id"] == "mine1"
    assert (await env.get(row["uid"]))["body"] == "my mesage"  # not yet
    await env.receive(
        correction_xml(f"{ROOM}/louise", "mine1", "my message", elt["id"], "groupchat")
    )
    assert (await env.get(row["uid"]))["body"] == "my message"


# --- archived pages (MAM): the original and its correction in the same page ----------------------


async def process_archived_page(env, inner_xmls, archive=ME, first=0):
    """What the MAM plugin does with a page: hooks on every message, then one batch.
    ``first``: number (archive id, time) of the page's first message."""
    from sat.core.messages import parse_message

    kept = []
    for n, xml in enumerate(inner_xmls, first):
        inner = parseXml(xml)
        data = parse_message(inner, env.client.jid)
        data["timestamp"] = 1_000_000.0 + n
        data["stanza_id"] = f"arch-{n}"
        data["stanza_id_by"] = archive
        data["extra"]["archived"] = True
        if await env.host.messages.process_received(env.client, inner, data):
            kept.append(data)
    await env.storage.history_add_batch(PROFILE, kept)
    return kept


@pytest_twisted.ensureDeferred
async def test_archived_correction_retraction_reaction_apply_within_the_page(env):
    page = [
        f"<message xmlns='jabber:client' from='{BOB_FULL}' to='{ME}' type='chat' id='o1'>"
        "<body>archived wrong</body></message>",
        correction_xml(BOB_FULL, "o1", "archived right", "o2").replace(ME_FULL, ME),
        f"<message xmlns='jabber:client' from='{BOB_FULL}' to='{ME}' type='chat' id='o3'>"
        "<body>to be retracted</body></message>",
        f"<message xmlns='jabber:client' from='{BOB_FULL}' to='{ME}' type='chat' id='o4'>"
        f"<retract xmlns='{NS_RETRACT}' id='o3'/><body>fallback</body></message>",
        f"<message xmlns='jabber:client' from='{ME}/laptop' to='{BOB}' type='chat' id='o5'>"
        f"<reactions xmlns='{NS_REACTIONS}' id='o1'><reaction>👍</reaction></reactions>"
        "</message>",
    ]
    await process_archived_page(env, page)
    rows = await env.history(BOB)
    assert [r["body"] for r in rows] == ["archived right", None]
    assert rows[0]["extra"]["edits"][0]["body"] == "archived wrong"
    assert rows[0]["extra"]["reactions"] == {"👍": [ME]}
    assert rows[1]["extra"]["retracted"]["by"] == BOB
    assert await env.search("wrong") == [] and await env.search("retracted") == []
    # the same page again (a second catch-up): nothing new, nothing applied twice
    await process_archived_page(env, page)
    rows = await env.history(BOB)
    assert len(rows) == 2
    assert len(rows[0]["extra"]["edits"]) == 1


# --- XEP-0424 ---------------------------------------------------------------------------------------


def retraction_xml(frm, ref, msg_id, msg_type="chat", extra_xml=""):
    return (
        f"<message xmlns='jabber:client' from='{frm}' to='{ME_FULL}' type='{msg_type}' "
        f"id='{msg_id}'><retract xmlns='{NS_RETRACT}' id='{ref}'/>"
        f"<fallback xmlns='urn:xmpp:fallback:0' for='{NS_RETRACT}'/>"
        "<body>/me retracted a previous message, but it's unsupported by your client.</body>"
        f"<store xmlns='urn:xmpp:hints'/>{extra_xml}</message>"
    )


@pytest_twisted.ensureDeferred
async def test_retraction_from_contact_leaves_a_tombstone(env):
    msg = await env.from_bob("secret password hunter2", "m1")
    await env.receive(correction_xml(BOB_FULL, "m1", "secret password hunter3", "m2"))
    await env.receive(retraction_xml(BOB_FULL, "m1", "r1"))
    (row,) = await env.history(BOB)  # the fallback body is not stored
    assert row["uid"] == msg["uid"]
    assert row["body"] is None
    assert row["extra"]["retracted"]["by"] == BOB
    assert row["extra"]["retracted"]["id"] == "r1"
    assert "edits" not in row["extra"] and "styling" not in row["extra"]
    assert await env.search("hunter2") == [] and await env.search("hunter3") == []
    assert await env.search("password") == []
    (update,) = env.signals.updates("retraction")
    assert update[1] == msg["uid"] and update[3]["body"] == ""
    assert update[3]["retracted"]["by"] == BOB
    # again: nothing more
    await env.receive(retraction_xml(BOB_FULL, "m1", "r2"))
    assert len(env.signals.updates("retraction")) == 1


@pytest_twisted.ensureDeferred
async def test_retraction_of_our_message_by_contact_is_ignored(env, caplog):
    uid = await env.send(BOB, "my words stay")
    env.sent()
    with caplog.at_level(logging.WARNING):
        await env.receive(retraction_xml(BOB_FULL, uid, "r1"))
    assert "refused retraction" in caplog.text
    row = await env.get(uid)
    assert row["body"] == "my words stay" and "retracted" not in row["extra"]
    assert await env.search("stay") == [uid]
    assert env.signals.updates() == []


@pytest_twisted.ensureDeferred
async def test_retraction_by_non_moderator_occupant_is_ignored(env, caplog):
    env.join(features={NS_SID})
    msg = await env.in_room("alice", "alice speaks", "a1", "s1")
    before = await env.history(ROOM)
    with caplog.at_level(logging.WARNING):
        # a plain XEP-0424 retraction of alice's message by mallory
        await env.receive(retraction_xml(f"{ROOM}/mallory", "s1", "x1", "groupchat"))
        # mallory forging a moderation notice (only the room may send one)
        await env.receive(
            f"<message xmlns='jabber:client' from='{ROOM}/mallory' to='{ME_FULL}' "
            f"type='groupchat' id='x2'><retract xmlns='{NS_RETRACT}' id='s1'>"
            f"<moderated xmlns='{NS_MODERATE}' by='{ROOM}/mallory'/></retract></message>"
        )
        # a contact forging one in a chat message
        await env.receive(
            f"<message xmlns='jabber:client' from='{MALLORY}' to='{ME_FULL}' "
            f"type='chat' id='x3'><retract xmlns='{NS_RETRACT}' id='s1'>"
            f"<moderated xmlns='{NS_MODERATE}' by='{MALLORY}'/></retract></message>"
        )
    assert caplog.text.count("refused") >= 3
    assert await env.history(ROOM) == before
    assert (await env.get(msg["uid"]))["body"] == "alice speaks"
    assert await env.history(MALLORY) == []
    assert env.signals.updates() == []


@pytest_twisted.ensureDeferred
async def test_room_retraction_by_author_with_occupant_id_after_nick_change(env):
    env.join(features={NS_SID, NS_OCCUPANT_ID})
    msg = await env.in_room("alice", "oops", "a1", "s1", occupant_id="oid-a")
    await env.receive(
        retraction_xml(
            f"{ROOM}/alice2",
            "s1",
            "r1",
            "groupchat",
            f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='oid-a'/>"
            f"<stanza-id xmlns='{NS_SID}' id='s2' by='{ROOM}'/>",
        )
    )
    row = await env.get(msg["uid"])
    assert row["body"] is None and row["extra"]["retracted"]["by"] == f"{ROOM}/alice2"


@pytest_twisted.ensureDeferred
async def test_legacy_fastening_retraction_is_accepted(env):
    msg = await env.from_bob("old style", "m1", extra_xml=f"<origin-id xmlns='{NS_SID}' id='o1'/>")
    await env.receive(
        f"<message xmlns='jabber:client' from='{BOB_FULL}' to='{ME_FULL}' type='chat' id='r1'>"
        "<apply-to xmlns='urn:xmpp:fasten:0' id='o1'>"
        "<retract xmlns='urn:xmpp:message-retract:0'/></apply-to>"
        "<fallback xmlns='urn:xmpp:fallback:0'/><body>retracted</body></message>"
    )
    assert (await env.get(msg["uid"]))["body"] is None


@pytest_twisted.ensureDeferred
async def test_message_retract_sends_and_tombstones(env):
    retraction = env.plugin("XEP-0424")
    uid = await env.send(BOB, "wrong recipient")
    env.sent()
    await retraction._bridge_retract(PROFILE, uid)
    (elt,) = env.sent()
    assert child(elt, NS_RETRACT, "retract")["id"] == uid
    assert child(elt, "urn:xmpp:fallback:0", "fallback")["for"] == NS_RETRACT
    assert child(elt, "urn:xmpp:hints", "store") is not None
    assert "retracted" in str(next(elt.elements(None, "body")))
    row = await env.get(uid)
    assert row["body"] is None and row["extra"]["retracted"]["by"] == ME
    assert await env.search("recipient") == []
    # someone else's message cannot be retracted this way
    msg = await env.from_bob("bob's", "b1")
    with pytest.raises(errors.PermissionDenied):
        await retraction.retract(env.client, msg["uid"])


# --- XEP-0425 ---------------------------------------------------------------------------------------


def moderation_xml(ref, by=f"{ROOM}/boss", frm=ROOM, reason="spam"):
    return (
        f"<message xmlns='jabber:client' from='{frm}' to='{ME_FULL}' type='groupchat' id='mod1'>"
        f"<retract xmlns='{NS_RETRACT}' id='{ref}'><moderated xmlns='{NS_MODERATE}' by='{by}'>"
        f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='boss-oid'/></moderated>"
        f"<reason>{reason}</reason></retract></message>"
    )


@pytest_twisted.ensureDeferred
async def test_moderation_notice_from_the_room_is_applied(env):
    env.join(features={NS_SID, NS_MODERATE})
    msg = await env.in_room("spammer", "buy potions", "p1", "s1")
    # the stanza-id must be the room's: the message id does not count
    await env.receive(moderation_xml("p1"))
    assert (await env.get(msg["uid"]))["body"] == "buy potions"
    await env.receive(moderation_xml("s1"))
    row = await env.get(msg["uid"])
    assert row["body"] is None
    retracted = row["extra"]["retracted"]
    assert retracted["moderated"] is True
    assert retracted["by"] == f"{ROOM}/boss" and retracted["reason"] == "spam"
    assert await env.search("potions") == []
    assert env.signals.updates("retraction")[0][1] == msg["uid"]


@pytest_twisted.ensureDeferred
async def test_moderation_notice_from_a_room_we_are_not_in_is_ignored(env, caplog):
    env.join(features={NS_SID})
    msg = await env.in_room("alice", "hi", "a1", "s1")
    with caplog.at_level(logging.WARNING):
        await env.receive(moderation_xml("s1", frm="other@conference.example.org"))
    assert (await env.get(msg["uid"]))["body"] == "hi"


@pytest_twisted.ensureDeferred
async def test_message_moderate_requires_moderator_role_and_room_support(env):
    room = env.join(features={NS_SID, NS_MODERATE}, occupants={"louise": {"role": "participant"}})
    moderation = env.plugin("XEP-0425")
    msg = await env.in_room("spammer", "spam spam", "p1", "s1")
    with pytest.raises(errors.PermissionDenied, match="moderators"):
        await moderation._bridge_moderate(PROFILE, ROOM, msg["uid"], "spam")
    assert env.disco.iqs == []
    room.occupants["louise"].role = "moderator"
    await moderation.moderate(env.client, ROOM, msg["uid"], "spam")
    ((to, payload, iq_type),) = env.disco.iqs
    assert (to, iq_type) == (ROOM, "set")
    assert payload.name == "moderate" and payload.uri == NS_MODERATE and payload["id"] == "s1"
    assert child(payload, NS_RETRACT, "retract") is not None
    assert str(child(payload, NS_MODERATE, "reason")) == "spam"
    # nothing changes until the room broadcasts it
    assert (await env.get(msg["uid"]))["body"] == "spam spam"
    # the room refuses: the error reaches the caller
    env.disco.iq_error = errors.PermissionDenied("forbidden", condition="forbidden")
    with pytest.raises(errors.PermissionDenied):
        await moderation.moderate(env.client, ROOM, msg["uid"], "")
    room.features.discard(NS_MODERATE)
    with pytest.raises(_editing.FeatureNotSupported):
        await moderation.moderate(env.client, ROOM, msg["uid"], "")


# --- XEP-0444 ---------------------------------------------------------------------------------------


def reactions_xml(frm, ref, *reactions, msg_type="chat", msg_id="re1", extra_xml=""):
    inner = "".join(f"<reaction>{r}</reaction>" for r in reactions)
    return (
        f"<message xmlns='jabber:client' from='{frm}' to='{ME_FULL}' type='{msg_type}' "
        f"id='{msg_id}'><reactions xmlns='{NS_REACTIONS}' id='{ref}'>{inner}</reactions>"
        f"<store xmlns='urn:xmpp:hints'/>{extra_xml}</message>"
    )


@pytest_twisted.ensureDeferred
async def test_reactions_received_replace_per_sender(env, caplog):
    uid = await env.send(BOB, "cake?")
    env.sent()
    await env.receive(reactions_xml(BOB_FULL, uid, "👍", "🎂", "👍"))
    row = await env.get(uid)
    assert row["extra"]["reactions"] == {"👍": [BOB], "🎂": [BOB]}
    assert env.signals.updates("reaction")[-1][3]["reactions"] == {"👍": [BOB], "🎂": [BOB]}
    # the new set replaces the previous one; invalid values are dropped with a log line
    with caplog.at_level(logging.INFO):
        await env.receive(reactions_xml(BOB_FULL, uid, "🎂", "not an emoji", "x" * 100))
    assert "invalid reaction" in caplog.text
    assert (await env.get(uid))["extra"]["reactions"] == {"🎂": [BOB]}
    # our own reaction adds up
    await env.plugin("XEP-0444").set_reactions(env.client, uid, ["🎂"])
    assert (await env.get(uid))["extra"]["reactions"] == {"🎂": [BOB, ME]}
    # an empty <reactions/> removes the sender's
    await env.receive(reactions_xml(BOB_FULL, uid))
    assert (await env.get(uid))["extra"]["reactions"] == {"🎂": [ME]}
    assert len(await env.history(BOB)) == 1  # reactions are not messages


@pytest_twisted.ensureDeferred
async def test_reactions_hostile_input(env, caplog):
    uid = await env.send(BOB, "hello")
    env.sent()
    with caplog.at_level(logging.INFO):
        # two <reactions/> in one message: refused
        await env.receive(
            f"<message xmlns='jabber:client' from='{BOB_FULL}' type='chat' id='x'>"
            f"<reactions xmlns='{NS_REACTIONS}' id='{uid}'><reaction>👍</reaction></reactions>"
            f"<reactions xmlns='{NS_REACTIONS}' id='{uid}'><reaction>👎</reaction></reactions>"
            "</message>"
        )
        # thousands of reactions: at most MAX_REACTIONS kept
        many = [chr(0x1F600 + i) for i in range(60)]
        await env.receive(reactions_xml(BOB_FULL, uid, *many))
        # a reaction to a message of another conversation
        await env.receive(reactions_xml(MALLORY + "/x", uid, "💩"))
        # a delayed (older) update after a newer one is ignored
        await env.receive(
            reactions_xml(
                BOB_FULL,
                uid,
                "🐢",
                extra_xml="<delay xmlns='urn:xmpp:delay' stamp='2001-01-01T00:00:00Z'/>",
            )
        )
    reactions = (await env.get(uid))["extra"]["reactions"]
    assert len(reactions) == xep_0444_reactions.MAX_REACTIONS
    assert "🐢" not in reactions and "💩" not in reactions and "👎" not in reactions


@pytest_twisted.ensureDeferred
async def test_room_reactions_use_stanza_id_and_aggregate_occupants(env):
    env.join(features={NS_SID, NS_OCCUPANT_ID})
    msg = await env.in_room("alice", "vote!", "a1", "s1", occupant_id="oid-a")
    oid = f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='oid-b'/>"
    await env.receive(reactions_xml(f"{ROOM}/bob", "s1", "✅", msg_type="groupchat", extra_xml=oid))
    await env.receive(
        reactions_xml(f"{ROOM}/carol", "s1", "✅", "❌", msg_type="groupchat", msg_id="re2")
    )
    # bob changes nick: same occupant-id, his reactions are replaced, not added
    await env.receive(
        reactions_xml(
            f"{ROOM}/bobby", "s1", "❌", msg_type="groupchat", msg_id="re3", extra_xml=oid
        )
    )
    row = await env.get(msg["uid"])
    summary = {k: sorted(v) for k, v in row["extra"]["reactions"].items()}
    assert summary == {"✅": [f"{ROOM}/carol"], "❌": [f"{ROOM}/bobby", f"{ROOM}/carol"]}
    assert len(row["extra"]["reactions_by"]) == 2
    # our reactions in the room go with the stanza-id and wait for the reflection
    await env.plugin("XEP-0444").set_reactions(env.client, msg["uid"], ["✅"])
    (elt,) = env.sent()
    assert elt["to"] == ROOM and elt["type"] == "groupchat"
    reactions = child(elt, NS_REACTIONS, "reactions")
    assert reactions["id"] == "s1"
    assert [str(r) for r in reactions.elements()] == ["✅"]
    assert child(elt, "urn:xmpp:hints", "store") is not None


@pytest_twisted.ensureDeferred
async def test_set_reactions_validation_and_restrictions(env):
    reactions = env.plugin("XEP-0444")
    uid = await env.send(BOB, "hi")
    env.sent()
    for bad in (["no"], ["👍👍"], ["👍"] * 1 + ["x" * 40], "👍"):
        with pytest.raises(errors.InvalidArgument):
            await reactions.set_reactions(env.client, uid, bad)
    with pytest.raises(errors.InvalidArgument):
        await reactions.set_reactions(env.client, uid, [chr(0x1F600 + i) for i in range(30)])
    assert env.sent() == []
    env.join(features={NS_SID})
    form = data_form.Form("result", formNamespace="urn:xmpp:reactions:0:restrictions")
    form.addField(data_form.Field(var="max_reactions_per_user", value="1"))
    form.addField(data_form.Field("list-multi", var="allowlist", values=["💘", "💜"]))
    env.disco.set_features(ROOM, NS_REACTIONS, form=form)
    msg = await env.in_room("alice", "love", "a1", "s1")
    with pytest.raises(errors.InvalidArgument, match="at most 1"):
        await reactions.set_reactions(env.client, msg["uid"], ["💘", "💜"])
    with pytest.raises(errors.InvalidArgument, match="only accepts"):
        await reactions.set_reactions(env.client, msg["uid"], ["👍"])
    await reactions.set_reactions(env.client, msg["uid"], ["💜"])
    assert len(env.sent()) == 1
    # a group chat message without stanza-id cannot be reacted to
    await env.receive(
        f"<message xmlns='jabber:client' from='{ROOM}/alice' type='groupchat' id='n1'>"
        "<body>no sid</body></message>"
    )
    no_sid = [r for r in await env.history(ROOM) if r["body"] == "no sid"][0]
    with pytest.raises(errors.InvalidArgument, match="stanza-id"):
        await reactions.set_reactions(env.client, no_sid["uid"], ["💜"])


@pytest_twisted.ensureDeferred
async def test_refused_reactions_are_reverted(env):
    reactions = env.plugin("XEP-0444")
    msg = await env.from_bob("react to me", "b1")
    await reactions.set_reactions(env.client, msg["uid"], ["👍"])
    assert (await env.get(msg["uid"]))["extra"]["reactions"] == {"👍": [ME]}
    await reactions.set_reactions(env.client, msg["uid"], ["👍", "🐢"])
    (_first, second) = env.sent()
    assert child(second, NS_REACTIONS, "reactions")["id"] == "b1"
    env.client.stub.send(
        parseXml(
            f"<message xmlns='jabber:client' from='{BOB_FULL}' type='error' id='{second['id']}'>"
            "<error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "</error></message>"
        )
    )
    for _ in range(20):
        if (await env.get(msg["uid"]))["extra"]["reactions"] == {"👍": [ME]}:
            break
        await task.deferLater(reactor, 0.01)
    assert (await env.get(msg["uid"]))["extra"]["reactions"] == {"👍": [ME]}


def test_is_emoji():
    for good in ("👍", "👍🏽", "❤️", "🏳️‍🌈", "🇫🇷", "1️⃣", "👩🏽‍❤️‍💋‍👨🏻", "🏴󠁧󠁢󠁥󠁮󠁧󠁿", "♥"):
        assert is_emoji(good), good
    for bad in ("", "a", "👍👍", "hello", "1", " 👍", "👍 ", "🇫", "<b>", "x" * 100, None, 3):
        assert not is_emoji(bad), bad


# --- XEP-0461 ---------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reply_send_adds_reference_and_fallback(env):
    msg = await env.from_bob("We should bake a cake", "b1")
    uid = await env.send(BOB, "Great idea!", reply_to=msg["uid"])
    (elt,) = env.sent()
    reply = child(elt, NS_REPLY, "reply")
    assert reply["id"] == "b1" and reply["to"] == BOB_FULL
    body = str(next(elt.elements(None, "body")))
    assert body == "> We should bake a cake\nGreat idea!"
    fallback = child(elt, "urn:xmpp:fallback:0", "fallback")
    assert fallback["for"] == NS_REPLY
    marked = child(fallback, "urn:xmpp:fallback:0", "body")
    assert body[int(marked["start"]) : int(marked["end"])] == "> We should bake a cake\n"
    row = await env.get(uid)
    assert row["body"] == "Great idea!"
    assert row["extra"]["reply_to"] == msg["uid"] and row["extra"]["reply_to_id"] == "b1"
    # unknown reply_to: sent as a plain message
    uid2 = await env.send(BOB, "plain", reply_to="nope")
    (elt,) = env.sent()
    assert child(elt, NS_REPLY, "reply") is None
    assert "reply_to" not in (await env.get(uid2))["extra"]


@pytest_twisted.ensureDeferred
async def test_reply_received_is_resolved_and_fallback_removed(env):
    uid = await env.send(BOB, "We should bake a cake")
    env.sent()
    quote = "> We should bake a cake\n"
    await env.receive(
        f"<message xmlns='jabber:client' from='{BOB_FULL}' to='{ME_FULL}' type='chat' id='b2'>"
        f"<body>{quote}Great idea!</body><reply xmlns='{NS_REPLY}' to='{ME_FULL}' id='{uid}'/>"
        f"<fallback xmlns='urn:xmpp:fallback:0' for='{NS_REPLY}'>"
        f"<body start='0' end='{len(quote)}'/></fallback></message>"
    )
    row = [r for r in await env.history(BOB) if r["extra"].get("message_id") == "b2"][0]
    assert row["body"] == "Great idea!"
    assert row["extra"]["reply_to"] == uid and row["extra"]["reply_to_jid"] == ME_FULL
    # unknown referenced message: the quote stays; bad ranges are ignored
    await env.receive(
        f"<message xmlns='jabber:client' from='{BOB_FULL}' to='{ME_FULL}' type='chat' id='b3'>"
        f"<body>{quote}Me too</body><reply xmlns='{NS_REPLY}' id='unknown'/>"
        f"<fallback xmlns='urn:xmpp:fallback:0' for='{NS_REPLY}'>"
        f"<body start='0' end='9999'/></fallback></message>"
    )
    row = [r for r in await env.history(BOB) if r["extra"].get("message_id") == "b3"][0]
    assert row["body"] == quote + "Me too"
    assert "reply_to" not in row["extra"] and row["extra"]["reply_to_id"] == "unknown"


@pytest_twisted.ensureDeferred
async def test_room_reply_uses_the_room_stanza_id(env):
    env.join(features={NS_SID})
    msg = await env.in_room("alice", "question?", "a1", "s1")
    await env.send(ROOM, "answer", type="groupchat", reply_to=msg["uid"])
    (elt,) = env.sent()
    reply = child(elt, NS_REPLY, "reply")
    assert reply["id"] == "s1" and reply["to"] == f"{ROOM}/alice"
    await env.in_room(
        "bob",
        "me too",
        "b1",
        "s2",
        extra_xml=f"<reply xmlns='{NS_REPLY}' to='{ROOM}/alice' id='s1'/>",
    )
    row = [r for r in await env.history(ROOM) if r.get("stanza_id") == "s2"][0]
    assert row["extra"]["reply_to"] == msg["uid"]


# --- identity rules -----------------------------------------------------------------------------------


def test_same_author_rules():
    bob = Author(bare=BOB)
    assert same_author(bob, Author(bare=BOB, resource="other"))[0]
    assert not same_author(bob, Author(bare=MALLORY))[0]
    alice = Author(bare=ROOM, resource="alice", muc=True)
    assert same_author(alice, Author(bare=ROOM, resource="alice", muc=True))[0]
    assert not same_author(alice, Author(bare=ROOM, resource="eve", muc=True))[0]
    assert not same_author(alice, Author(bare=ROOM, resource="alice", muc=True), left_since=True)[0]
    with_oid = Author(bare=ROOM, resource="alice", muc=True, occupant_id="1")
    renamed = Author(bare=ROOM, resource="alice2", muc=True, occupant_id="1")
    assert same_author(with_oid, renamed, same_nick=False)[0]
    assert not same_author(with_oid, renamed, same_nick=True)[0]
    assert not same_author(bob, Author(bare=BOB, resource="x", muc=True))[0]


# --- storage helpers --------------------------------------------------------------------------------


def stored(body, uid, source=BOB, dest=ME, ts=1000.0, **kwargs):
    data = {
        "uid": uid,
        "source": source,
        "dest": dest,
        "timestamp": ts,
        "type": "chat",
        "body": body,
    }
    data.update(kwargs)
    return data


@pytest_twisted.ensureDeferred
async def test_storage_update_body_keeps_the_index_in_sync(env):
    st = env.storage
    await st.history_add(PROFILE, stored("première version", "u1", extra={"a": 1, "b": 2}))
    row = await st.history_update_body(PROFILE, "u1", "seconde rédaction", {"a": None, "c": 3})
    assert row["body"] == "seconde rédaction" and row["extra"] == {"b": 2, "c": 3}
    assert await env.search("premiere") == []
    assert await env.search("redaction") == ["u1"]
    row = await st.history_update_body(PROFILE, "u1", None, {"retracted": {"by": BOB}})
    assert row["body"] is None
    assert await env.search("redaction") == []
    # the index is still consistent (FTS5 integrity check; rows without body are not
    # indexed by design, so the check against the content table does not apply)
    await st._call(
        lambda: st._conn.execute("INSERT INTO history_fts(history_fts) VALUES ('integrity-check')")
    )
    with pytest.raises(errors.NotFound):
        await st.history_update_body(PROFILE, "nope", "x")
    with pytest.raises(errors.InvalidArgument):
        await st.history_update_body(PROFILE, "u1", 42)


@pytest_twisted.ensureDeferred
async def test_storage_find_ref_and_last_from(env):
    st = env.storage
    await st.history_add(PROFILE, stored("from bob", "u1", extra={"message_id": "same"}))
    await st.history_add(
        PROFILE, stored("to bob", "u2", source=ME, dest=BOB, ts=1001.0, origin_id="same")
    )
    await st.history_add(
        PROFILE, stored("from mallory", "u3", source=MALLORY, ts=1002.0, extra={"message_id": "m"})
    )
    await st.history_add(
        PROFILE,
        stored(
            "room",
            "u4",
            source=ROOM,
            source_resource="alice",
            type="groupchat",
            ts=1003.0,
            stanza_id="sid",
            stanza_id_by=ROOM,
            extra={"message_id": "same"},
        ),
    )

    async def ref(ref_id, peer, **kwargs):
        row = await st.history_find_ref(PROFILE, ref_id, peer, **kwargs)
        return row and row["uid"]

    # origin-id before message_id; scoped to the conversation; one sender when asked
    assert await ref("same", BOB, own_jid=ME) == "u2"
    assert await ref("same", BOB, own_jid=ME, source=BOB) == "u1"
    assert await ref("same", BOB, own_jid=ME, scan_limit=0, source=BOB) is None
    assert await ref("m", BOB, own_jid=ME) is None
    assert await ref("m", MALLORY, own_jid=ME) == "u3"
    assert await ref("u2", BOB, own_jid=ME) == "u2"
    # rooms: the room's stanza-id, only among its group chat messages
    assert await ref("sid", ROOM, groupchat=True, stanza_id_by=ROOM) == "u4"
    assert await ref("sid", BOB, own_jid=ME) is None
    assert await ref("same", ROOM, groupchat=True, source=ROOM, source_resource="bob") is None
    last = await st.history_last_from(PROFILE, BOB, dest=ME)
    assert last["uid"] == "u1"
    assert (await st.history_last_from(PROFILE, ME, dest=BOB))["uid"] == "u2"
    assert (await st.history_last_from(PROFILE, ROOM, source_resource="alice", groupchat=True))[
        "uid"
    ] == "u4"
    assert await st.history_last_from(PROFILE, ROOM, source_resource="bob", groupchat=True) is None


@pytest_twisted.ensureDeferred
async def test_reactions_kept_on_errors_other_than_not_acceptable(env):
    reactions = env.plugin("XEP-0444")
    msg = await env.from_bob("react", "b1")
    await reactions.set_reactions(env.client, msg["uid"], ["👍"])
    (sent,) = env.sent()
    env.client.stub.send(
        parseXml(
            f"<message xmlns='jabber:client' from='{BOB}' type='error' id='{sent['id']}'>"
            "<error type='cancel'>"
            "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "</error></message>"
        )
    )
    await task.deferLater(reactor, 0.05)
    assert (await env.get(msg["uid"]))["extra"]["reactions"] == {"👍": [ME]}


@pytest_twisted.ensureDeferred
async def test_correction_recomputes_me_flag(env):
    original = await env.from_bob("/me waves", "m1")
    assert original["extra"]["me"] is True
    await env.receive(correction_xml(BOB_FULL, "m1", "hello", "m2"))
    row = await env.get(original["uid"])
    assert "me" not in row["extra"]
    (update,) = env.signals.updates("correction")
    assert "me" in update[3]["removed"]


@pytest_twisted.ensureDeferred
async def test_huge_corrections_are_bounded(env):
    from sat.core.messages import MAX_BODY_LENGTH

    original = await env.from_bob("short", "m1")
    for n in range(5):
        await env.receive(correction_xml(BOB_FULL, "m1", str(n) * 150_000, f"c{n}"))
    row = await env.get(original["uid"])
    assert len(row["body"]) == MAX_BODY_LENGTH and row["body"][0] == "4"
    edits = row["extra"]["edits"]
    total = sum(len(e["body"]) for e in edits)
    assert total <= xep_0308_correction.MAX_EDITS_CHARS
    assert edits[-1]["body"][0] == "3"


# --- references received before their message (kept pending, applied once it is stored) ----------


def bob_message_xml(body, msg_id, frm=BOB_FULL, extra_xml=""):
    return (
        f"<message xmlns='jabber:client' from='{frm}' to='{ME_FULL}' type='chat' "
        f"id='{msg_id}'><body>{body}</body>{extra_xml}</message>"
    )


async def carbon_to_bob(env, body, msg_id):
    """Our other device's message to bob, as a XEP-0280 sent copy."""
    await env.receive(
        f"<message xmlns='jabber:client' from='{ME}/laptop' to='{BOB}' type='chat' "
        f"id='{msg_id}'><body>{body}</body></message>",
        {"carbon": "sent"},
    )
    await env.settle()


@pytest_twisted.ensureDeferred
async def test_early_reaction_is_applied_when_its_message_arrives(env, caplog):
    with caplog.at_level(logging.INFO):
        await env.receive(reactions_xml(BOB_FULL, "m1", "👍", "🎉"))
    assert "kept until that message arrives" in caplog.text
    assert env.pending.count(PROFILE) == 1 and await env.history(BOB) == []
    # a newer set from the same sender replaces the pending one
    await env.receive(reactions_xml(BOB_FULL, "m1", "🎉", msg_id="re2"))
    assert env.pending.count(PROFILE) == 1
    msg = await env.from_bob("party tonight", "m1")
    await env.settle()
    row = await env.get(msg["uid"])
    assert row["extra"]["reactions"] == {"🎉": [BOB]}
    (update,) = env.signals.updates("reaction")
    assert update[1] == msg["uid"] and update[3]["reactions"] == {"🎉": [BOB]}
    # MessageNew first (the message as received), then the update
    names = [name for name, _ in env.signals.signals]
    assert names.index("MessageNew") < names.index("MessageUpdate")
    assert env.pending.count(PROFILE) == 0
    # the same message again (a duplicate): nothing more
    await env.from_bob("party tonight", "m1")
    await env.settle()
    assert len(env.signals.updates("reaction")) == 1


@pytest_twisted.ensureDeferred
async def test_early_references_only_apply_in_their_conversation(env):
    # mallory reacts to (and retracts) an id bob will use: another conversation
    await env.receive(reactions_xml(MALLORY + "/x", "m1", "💩"))
    await env.receive(retraction_xml(MALLORY + "/x", "m1", "r1"))
    assert env.pending.count(PROFILE) == 2
    msg = await env.from_bob("hello", "m1")
    await env.settle()
    row = await env.get(msg["uid"])
    assert row["body"] == "hello" and "reactions" not in row["extra"]
    assert env.signals.updates() == []


@pytest_twisted.ensureDeferred
async def test_early_retraction_keeps_the_author_check(env, caplog):
    # bob retracts an id before any message carrying it arrives
    await env.receive(retraction_xml(BOB_FULL, "c1", "r1"))
    assert env.pending.count(PROFILE) == 1
    # our other device's message to bob (a carbon) with that id: not bob's, refused
    with caplog.at_level(logging.WARNING):
        await carbon_to_bob(env, "my own words", "c1")
    assert "refused retraction" in caplog.text
    (ours,) = await env.history(BOB)
    assert ours["outgoing"] and ours["body"] == "my own words"
    assert "retracted" not in ours["extra"] and await env.search("words") == [ours["uid"]]
    assert env.signals.updates() == []
    # still waiting: bob's own message with that id gets it
    assert env.pending.count(PROFILE) == 1
    msg = await env.from_bob("oops, wrong chat", "c1")
    await env.settle()
    row = await env.get(msg["uid"])
    assert row["body"] is None and row["extra"]["retracted"]["by"] == BOB
    assert row["extra"]["retracted"]["id"] == "r1"
    assert await env.search("wrong") == []
    (update,) = env.signals.updates("retraction")
    assert update[1] == msg["uid"]
    assert (await env.get(ours["uid"]))["body"] == "my own words"


@pytest_twisted.ensureDeferred
async def test_early_room_moderation_and_retraction(env, caplog):
    env.join(features={NS_SID, NS_MODERATE, NS_OCCUPANT_ID})
    # the room moderates s1 before we get it; mallory retracts s2 (alice's) early
    await env.receive(moderation_xml("s1"))
    await env.receive(
        retraction_xml(
            f"{ROOM}/mallory",
            "s2",
            "x1",
            "groupchat",
            extra_xml=f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='oid-m'/>",
        )
    )
    # an occupant forging a moderation notice is refused at once, never kept
    with caplog.at_level(logging.WARNING):
        await env.receive(moderation_xml("s2", frm=f"{ROOM}/mallory"))
    assert "only the room itself" in caplog.text
    assert env.pending.count(PROFILE) == 2
    spam = await env.in_room("spammer", "buy potions", "p1", "s1")
    with caplog.at_level(logging.WARNING):
        alice = await env.in_room("alice", "alice speaks", "a1", "s2", occupant_id="oid-a")
        await env.settle()
    row = await env.get(spam["uid"])
    assert row["body"] is None and row["extra"]["retracted"]["moderated"] is True
    assert row["extra"]["retracted"]["reason"] == "spam"
    assert (await env.get(alice["uid"]))["body"] == "alice speaks"
    assert "refused retraction" in caplog.text
    assert [u[1] for u in env.signals.updates()] == [spam["uid"]]


@pytest_twisted.ensureDeferred
async def test_early_correction_is_folded_into_its_original(env):
    await env.receive(correction_xml(BOB_FULL, "m1", "the right word", "m2"))
    (standalone,) = await env.history(BOB)  # stored on its own meanwhile: nothing is lost
    assert standalone["body"] == "the right word"
    assert standalone["extra"]["replace_id"] == "m1"
    original = await env.from_bob("the wrong wurd", "m1")
    await env.settle()
    (row,) = await env.history(BOB)
    assert row["uid"] == original["uid"] and row["body"] == "the right word"
    assert row["extra"]["edits"][0]["body"] == "the wrong wurd"
    assert row["extra"]["edits"][0]["id"] == "m2"
    assert await env.search("wurd") == [] and await env.search("right") == [original["uid"]]
    (update,) = env.signals.updates("correction")
    assert update[1] == original["uid"]
    (deleted,) = env.signals.updates("deleted")
    assert deleted[1] == standalone["uid"] and deleted[3]["merged_into"] == original["uid"]


@pytest_twisted.ensureDeferred
async def test_early_correction_refusals(env, caplog):
    # not the sender's last message: bob spoke in between, the correction stays apart
    await env.receive(
        correction_xml(BOB_FULL, "m1", "first, fixed", "m3").replace(
            "</message>", "<delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:03Z'/></message>"
        )
    )
    # (decided when the original is stored: what is stored by then counts)
    for body, msg_id, second in (("second", "m2", 2), ("first", "m1", 1)):
        await env.receive(
            bob_message_xml(
                body,
                msg_id,
                extra_xml=f"<delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:0{second}Z'/>",
            )
        )
    await env.settle()
    assert [r["body"] for r in await env.history(BOB)] == ["first", "second", "first, fixed"]
    fixed = (await env.history(BOB))[-1]
    assert fixed["extra"]["correction_refused"] == "not the last message"
    assert env.signals.updates("correction") == []
    # someone else's message with the referenced id: refused (our own, via a carbon)
    await env.receive(correction_xml(BOB_FULL, "c9", "I owe bob money", "m4"))
    with caplog.at_level(logging.WARNING):
        await carbon_to_bob(env, "bob owes me money", "c9")
    assert "refused correction" in caplog.text
    assert await env.search("owes") != []


@pytest_twisted.ensureDeferred
async def test_early_retraction_takes_early_corrections_along(env):
    await env.receive(correction_xml(BOB_FULL, "m1", "secret hunter3", "m2"))
    await env.receive(retraction_xml(BOB_FULL, "m1", "r1"))
    # the correction stored on its own carried the text: retracted too
    (standalone,) = await env.history(BOB)
    assert standalone["body"] is None and standalone["extra"]["retracted"]["by"] == BOB
    assert await env.search("hunter3") == []
    original = await env.from_bob("secret hunter2", "m1")
    await env.settle()
    rows = await env.history(BOB)
    assert [r["uid"] for r in rows] == [original["uid"]]  # the standalone one is gone
    assert rows[0]["body"] is None and rows[0]["extra"]["retracted"]["id"] == "r1"
    assert await env.search("hunter2") == []


@pytest_twisted.ensureDeferred
async def test_archive_pages_newest_first_apply_early_references(env):
    """Scrolling back (MAM ``before``): a page with reactions, a retraction and a correction
    comes before the older page holding their messages."""
    newer = [
        correction_xml(BOB_FULL, "o1", "archived right", "o2").replace(ME_FULL, ME),
        f"<message xmlns='jabber:client' from='{BOB_FULL}' to='{ME}' type='chat' id='o4'>"
        f"<retract xmlns='{NS_RETRACT}' id='o3'/><body>fallback</body></message>",
        f"<message xmlns='jabber:client' from='{ME}/laptop' to='{BOB}' type='chat' id='o5'>"
        f"<reactions xmlns='{NS_REACTIONS}' id='o1'><reaction>👍</reaction></reactions>"
        "</message>",
    ]
    older = [
        f"<message xmlns='jabber:client' from='{BOB_FULL}' to='{ME}' type='chat' id='o3'>"
        "<body>to be retracted</body></message>",
        f"<message xmlns='jabber:client' from='{BOB_FULL}' to='{ME}' type='chat' id='o1'>"
        "<body>archived wrong</body></message>",
    ]
    await process_archived_page(env, newer, first=10)
    assert env.pending.count(PROFILE) == 3
    await process_archived_page(env, older, first=0)
    await env.settle()
    rows = await env.history(BOB)
    assert [r["body"] for r in rows] == [None, "archived right"]
    assert rows[1]["extra"]["edits"][0]["body"] == "archived wrong"
    assert rows[1]["extra"]["reactions"] == {"👍": [ME]}
    assert rows[0]["extra"]["retracted"]["by"] == BOB
    assert await env.search("wrong") == [] and await env.search("retracted") == []
    assert env.pending.count(PROFILE) == 0
    # the same pages again (a second catch-up): nothing new, nothing applied twice
    await process_archived_page(env, newer, first=10)
    await process_archived_page(env, older, first=0)
    await env.settle()
    rows = await env.history(BOB)
    assert len(rows) == 2 and len(rows[1]["extra"]["edits"]) == 1


@pytest_twisted.ensureDeferred
async def test_pending_references_are_bounded(env, caplog):
    pending = env.pending
    pending.MAX_ENTRIES = 6
    pending.MAX_PER_SENDER = 4
    now = [1_000_000.0]
    pending.wall = lambda: now[0]
    with caplog.at_level(logging.WARNING):
        for n in range(10):
            await env.receive(reactions_xml(MALLORY + "/x", f"nope-{n}", "💩", msg_id=f"x{n}"))
    assert "oldest dropped" in caplog.text
    assert pending.count(PROFILE) == 4  # one sender cannot take every slot
    await env.receive(reactions_xml(BOB_FULL, "b1", "👍"))
    await env.receive(reactions_xml(BOB_FULL, "b2", "👍", msg_id="re2"))
    await env.receive(reactions_xml(BOB_FULL, "b3", "👍", msg_id="re3"))
    assert pending.count(PROFILE) == 6  # at most MAX_ENTRIES: the oldest went
    # after MAX_AGE they are forgotten: a late message gets nothing
    now[0] += pending.MAX_AGE + 1
    msg = await env.from_bob("late", "b3")
    await env.settle()
    assert "reactions" not in (await env.get(msg["uid"]))["extra"]
    await env.receive(reactions_xml(BOB_FULL, "b4", "👍", msg_id="re4"))
    assert pending.count(PROFILE) == 1


@pytest_twisted.ensureDeferred
async def test_pending_references_survive_a_restart(env):
    await env.receive(reactions_xml(BOB_FULL, "m1", "👍"))
    await env.receive(retraction_xml(BOB_FULL, "m2", "r2"))
    assert env.clock.getDelayedCalls()  # saved a moment later, in one write
    env.clock.advance(env.pending.FLUSH_DELAY)
    await env.settle()
    await env.pending.flush(PROFILE)
    # "restart": a new host on the same database; the old one stops listening
    env.storage.remove_stored_listener(env.pending.on_stored)
    await env.storage.kv_set(
        _pending_references.PENDING_KV_NAMESPACE,
        "unrelated",
        "x",
        PROFILE,
    )
    restarted = Env(env.storage)
    restarted.pending.clock = restarted.clock
    await restarted.plugin("XEP-0444").profile_connecting(restarted.client)
    await restarted.plugin("XEP-0424").profile_connecting(restarted.client)
    assert restarted.pending.count(PROFILE) == 2
    first = await restarted.from_bob("liked", "m1")
    second = await restarted.from_bob("regretted", "m2")
    await restarted.settle()
    assert (await restarted.get(first["uid"]))["extra"]["reactions"] == {"👍": [BOB]}
    assert (await restarted.get(second["uid"]))["body"] is None
    assert restarted.pending.count(PROFILE) == 0
    await restarted.plugin("XEP-0444").stop()
    saved = await env.storage.kv_get(
        _pending_references.PENDING_KV_NAMESPACE, _pending_references.PENDING_KV_KEY, None, PROFILE
    )
    assert saved["entries"] == []
    env.storage.remove_stored_listener(restarted.pending.on_stored)


@pytest_twisted.ensureDeferred
async def test_saved_pending_references_are_checked_when_read(env):
    good = {
        "key": "k",
        "kind": "reaction",
        "ref": "m1",
        "peer": BOB,
        "groupchat": False,
        "author": {"bare": BOB},
        "sender": f"jid:{BOB}",
        "timestamp": 1.0,
        "added": time.time(),
        "data": {"reactions": ["👍", "not an emoji"]},
    }
    junk = [
        "text",
        {**good, "key": "k2", "kind": "explode"},
        {**good, "key": "k3", "ref": "x" * 5000},
        {**good, "key": "k4", "author": {"bare": 5}},
        {**good, "key": "k5", "added": "yesterday"},
    ]
    await env.storage.kv_set(
        _pending_references.PENDING_KV_NAMESPACE,
        _pending_references.PENDING_KV_KEY,
        {"version": 1, "entries": [good, *junk]},
        PROFILE,
    )
    await env.pending.load(PROFILE)
    assert env.pending.count(PROFILE) == 1
    msg = await env.from_bob("hi", "m1")
    await env.settle()
    assert (await env.get(msg["uid"]))["extra"]["reactions"] == {"👍": [BOB]}


def reply_xml(frm, ref, text, msg_id, msg_type="chat", quote="", to=None, extra_xml=""):
    """A XEP-0461 reply to ``ref``, with ``quote`` before ``text`` marked as its fallback."""
    fallback = (
        f"<fallback xmlns='urn:xmpp:fallback:0' for='{NS_REPLY}'>"
        f"<body start='0' end='{len(quote)}'/></fallback>"
        if quote
        else ""
    )
    to_attr = f" to='{to}'" if to else ""
    return (
        f"<message xmlns='jabber:client' from='{frm}' to='{ME_FULL}' type='{msg_type}' "
        f"id='{msg_id}'><body>{quote}{text}</body><reply xmlns='{NS_REPLY}'{to_attr} "
        f"id='{ref}'/>{fallback}{extra_xml}</message>"
    )


@pytest_twisted.ensureDeferred
async def test_early_reply_is_linked_when_its_message_arrives(env, caplog):
    quote = "> Party tonight?\n"
    with caplog.at_level(logging.INFO):
        await env.receive(reply_xml(BOB_FULL, "m1", "Yes!", "r1", quote=quote, to=BOB_FULL))
    assert "linked if that message arrives" in caplog.text
    (reply,) = await env.history(BOB)  # stored as received meanwhile, quote included
    assert reply["body"] == quote + "Yes!"
    assert reply["extra"]["reply_to_id"] == "m1" and "reply_to" not in reply["extra"]
    assert env.pending.count(PROFILE) == 1
    assert env.signals.updates() == []
    target = await env.from_bob("Party tonight?", "m1")
    await env.settle()
    row = await env.get(reply["uid"])
    assert row["extra"]["reply_to"] == target["uid"]
    assert row["extra"]["reply_to_id"] == "m1" and row["extra"]["reply_to_jid"] == BOB_FULL
    # the body and what was derived from it stay as stored
    assert row["body"] == quote + "Yes!" and row["extra"].get("styling") == reply["extra"].get(
        "styling"
    )
    (update,) = env.signals.updates("reply")
    assert update[1] == reply["uid"] and update[3] == {"reply_to": target["uid"]}
    assert env.signals.updates("correction") == []
    assert (await env.get(target["uid"]))["extra"] == target["extra"]  # the target unchanged
    assert env.pending.count(PROFILE) == 0
    # a reply arriving once its message is known is linked at once, as before
    await env.receive(reply_xml(BOB_FULL, "m1", "Still yes", "r2"))
    later = [r for r in await env.history(BOB) if r["extra"].get("message_id") == "r2"][0]
    assert later["extra"]["reply_to"] == target["uid"]
    assert env.pending.count(PROFILE) == 0 and len(env.signals.updates("reply")) == 1


@pytest_twisted.ensureDeferred
async def test_early_reply_whose_message_never_comes_expires(env, caplog):
    pending = env.pending
    now = [1_000_000.0]
    pending.wall = lambda: now[0]
    await env.receive(reply_xml(BOB_FULL, "gone", "What?", "r1"))
    assert pending.count(PROFILE) == 1
    now[0] += pending.MAX_AGE + 1
    # anything kept later makes the store forget the expired ones
    with caplog.at_level(logging.INFO):
        await env.receive(reply_xml(BOB_FULL, "gone-too", "Hm?", "r2"))
    assert "expired" in caplog.text
    assert pending.count(PROFILE) == 1
    # the message comes after all, too late: the reply stays unlinked
    now[0] += pending.MAX_AGE + 1
    await env.from_bob("the original", "gone")
    await env.settle()
    reply = [r for r in await env.history(BOB) if r["extra"].get("message_id") == "r1"][0]
    assert "reply_to" not in reply["extra"]
    assert env.signals.updates("reply") == []


@pytest_twisted.ensureDeferred
async def test_early_replies_are_bounded_per_sender(env):
    env.pending.MAX_PER_SENDER = 3
    for n in range(6):
        await env.receive(reply_xml(MALLORY + "/x", f"nope-{n}", "spam", f"x{n}"))
    assert env.pending.count(PROFILE) == 3  # the oldest went


@pytest_twisted.ensureDeferred
async def test_early_reply_is_not_linked_to_another_conversation(env):
    await env.receive(reply_xml(BOB_FULL, "m1", "Agreed", "r1"))
    # mallory sends a message carrying the id bob's reply names: not bob's conversation
    await env.receive(
        f"<message xmlns='jabber:client' from='{MALLORY}/x' to='{ME_FULL}' type='chat' "
        "id='m1'><body>I owe mallory money</body></message>"
    )
    # nor is a room's message with that id (or stanza-id)
    env.join(features={NS_SID})
    await env.in_room("mallory", "room words", "m1", "m1")
    await env.settle()
    (reply,) = await env.history(BOB)
    assert "reply_to" not in reply["extra"]
    assert env.signals.updates("reply") == []
    assert env.pending.count(PROFILE) == 1  # still waiting for bob's message
    target = await env.from_bob("Let's split the bill", "m1")
    await env.settle()
    assert (await env.get(reply["uid"]))["extra"]["reply_to"] == target["uid"]


@pytest_twisted.ensureDeferred
async def test_early_room_reply_waits_for_the_room_stanza_id(env):
    env.join(features={NS_SID})
    await env.in_room("bob", "me too", "b1", "s2", extra_xml=f"<reply xmlns='{NS_REPLY}' id='s1'/>")
    (reply,) = await env.history(ROOM)
    assert "reply_to" not in reply["extra"] and env.pending.count(PROFILE) == 1
    # an occupant's message whose id (chosen by the occupant) is the referenced one: in a
    # room only the stanza-id the room gave counts (XEP-0461 "Using the correct ID")
    await env.in_room("mallory", "fake question", "s1", "s3")
    await env.settle()
    assert "reply_to" not in (await env.get(reply["uid"]))["extra"]
    assert env.pending.count(PROFILE) == 1
    question = await env.in_room("alice", "question?", "a1", "s1")
    await env.settle()
    assert (await env.get(reply["uid"]))["extra"]["reply_to"] == question["uid"]
    (update,) = env.signals.updates("reply")
    assert update[1] == reply["uid"] and update[3] == {"reply_to": question["uid"]}


@pytest_twisted.ensureDeferred
async def test_early_reply_found_in_a_later_archive_page(env):
    """Scrolling back: the page with the reply comes before the older page with its
    message; the same pages again link nothing twice."""
    newer = [reply_xml(BOB_FULL, "o1", "Sure", "o2").replace(ME_FULL, ME)]
    older = [
        f"<message xmlns='jabber:client' from='{BOB_FULL}' to='{ME}' type='chat' id='o1'>"
        "<body>Lunch?</body></message>"
    ]
    await process_archived_page(env, newer, first=10)
    assert env.pending.count(PROFILE) == 1
    await process_archived_page(env, older, first=0)
    await env.settle()
    question, reply = await env.history(BOB)
    assert reply["extra"]["reply_to"] == question["uid"]
    assert env.pending.count(PROFILE) == 0
    await process_archived_page(env, newer, first=10)
    await process_archived_page(env, older, first=0)
    await env.settle()
    assert len(await env.history(BOB)) == 2 and len(env.signals.updates("reply")) == 1


@pytest_twisted.ensureDeferred
async def test_storage_tells_listeners_of_new_messages_only(env):
    seen = []

    def listener(profile, message):
        seen.append((profile, message["uid"]))

    def broken(profile, message):
        raise RuntimeError("boom")

    env.storage.add_stored_listener(broken)
    env.storage.add_stored_listener(listener)
    try:
        message = {
            "uid": "u1",
            "source": BOB,
            "dest": ME,
            "type": "chat",
            "body": "one",
            "timestamp": 1.0,
        }
        assert await env.storage.history_add(PROFILE, message)
        assert not await env.storage.history_add(PROFILE, dict(message))
        batch = [dict(message), {**message, "uid": "u2"}, {**message, "uid": "u3"}]
        await env.storage.history_add_batch(PROFILE, batch)
    finally:
        env.storage.remove_stored_listener(listener)
        env.storage.remove_stored_listener(broken)
    assert seen == [(PROFILE, "u1"), (PROFILE, "u2"), (PROFILE, "u3")]
    await env.storage.history_add(PROFILE, {**message, "uid": "u4"})
    assert len(seen) == 3


# --- XEP-0424 tombstones in archives -----------------------------------------------------------


def tombstone_xml(frm, msg_id, retraction_id="r1", to=ME, msg_type="chat", inner=None):
    inner = (
        inner
        if inner is not None
        else f"<retracted xmlns='{NS_RETRACT}' id='{retraction_id}' stamp='2030-01-01T10:00:00Z'/>"
    )
    return (
        f"<message xmlns='jabber:client' from='{frm}' to='{to}' type='{msg_type}' "
        f"id='{msg_id}'>{inner}</message>"
    )


@pytest_twisted.ensureDeferred
async def test_tombstone_in_our_archive_retracts_the_stored_message(env):
    page = [
        f"<message xmlns='jabber:client' from='{BOB_FULL}' to='{ME}' type='chat' id='t1'>"
        "<body>hunter2 is my password</body></message>"
    ]
    (stored,) = await process_archived_page(env, page)
    assert await env.search("hunter2") == [stored["uid"]]
    # later, the archive holds a tombstone in its place (same archive id)
    await process_archived_page(env, [tombstone_xml(BOB_FULL, "t1")])
    (row,) = await env.history(BOB)
    assert row["uid"] == stored["uid"] and row["body"] is None
    retracted = row["extra"]["retracted"]
    assert retracted["by"] == BOB and retracted["id"] == "r1" and retracted["tombstone"]
    assert retracted["timestamp"] == 1893492000.0  # the tombstone's stamp
    assert await env.search("hunter2") == []
    (update,) = env.signals.updates("retraction")
    assert update[1] == stored["uid"]
    # the retraction message, also archived, comes next: nothing more
    await process_archived_page(env, [retraction_xml(BOB_FULL, "t1", "r1")], first=1)
    assert len(env.signals.updates("retraction")) == 1
    assert len(await env.history(BOB)) == 1


@pytest_twisted.ensureDeferred
async def test_tombstone_of_our_message_stored_live_without_archive_id(env):
    # a message we sent: stored with its uid as id, no archive id; the archive then
    # says it was retracted (from another of our devices): authoritative, no author check
    uid = await env.send(BOB, "sent to the wrong person")
    env.sent()
    await process_archived_page(env, [tombstone_xml(ME + "/laptop", uid, to=BOB)], first=5)
    row = await env.get(uid)
    assert row["body"] is None and row["extra"]["retracted"]["by"] == ME
    assert len(await env.history(BOB)) == 1


@pytest_twisted.ensureDeferred
async def test_tombstone_of_an_unknown_message_stores_a_placeholder(env):
    kept = await process_archived_page(env, [tombstone_xml(BOB_FULL, "t9")])
    (row,) = await env.history(BOB)
    assert row["uid"] == kept[0]["uid"] and row["body"] is None
    assert row["stanza_id"] == "arch-0" and row["stanza_id_by"] == ME
    assert row["extra"]["retracted"]["tombstone"] and row["extra"]["retracted"]["by"] == BOB
    # the message itself cannot come back with its text (same archive id, origin-id...)
    await process_archived_page(env, [bob_message_xml("the text", "t9").replace(ME_FULL, ME)])
    assert len(await env.history(BOB)) == 1
    # a second catch-up: nothing new
    await process_archived_page(env, [tombstone_xml(BOB_FULL, "t9")])
    assert len(await env.history(BOB)) == 1


@pytest_twisted.ensureDeferred
async def test_moderated_tombstone_in_a_room_archive(env):
    env.join(features={NS_SID, NS_OCCUPANT_ID})
    msg = await env.in_room("spammer", "buy potions", "p1", "arch-0")
    inner = (
        f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='oid-s'/>"
        f"<retracted stamp='2030-01-01T10:00:00Z' xmlns='{NS_RETRACT}'>"
        f"<moderated by='{ROOM}/boss' xmlns='{NS_MODERATE}'>"
        f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='oid-boss'/></moderated>"
        "<reason>Spam</reason></retracted>"
    )
    page = [tombstone_xml(f"{ROOM}/spammer", "p1", to=ME, msg_type="groupchat", inner=inner)]
    await process_archived_page(env, page, archive=ROOM)
    row = await env.get(msg["uid"])
    assert row["body"] is None
    retracted = row["extra"]["retracted"]
    assert retracted["moderated"] and retracted["by"] == f"{ROOM}/boss"
    assert retracted["reason"] == "Spam" and retracted["by_occupant_id"] == "oid-boss"
    # an old-form (:0) moderated tombstone of a message we never had: a placeholder
    old = (
        "<moderated by='boss@example.org' xmlns='urn:xmpp:message-moderate:0'>"
        "<retracted stamp='2030-01-01T10:00:00Z' xmlns='urn:xmpp:message-retract:0'/>"
        "<reason>Off topic</reason></moderated>"
    )
    page = [tombstone_xml(f"{ROOM}/troll", "p2", msg_type="groupchat", inner=old)]
    await process_archived_page(env, page, archive=ROOM, first=1)
    (placeholder,) = [r for r in await env.history(ROOM) if r["source_resource"] == "troll"]
    assert placeholder["body"] is None
    assert placeholder["extra"]["retracted"]["reason"] == "Off topic"
    assert placeholder["extra"]["retracted"]["by"] == "boss@example.org"


@pytest_twisted.ensureDeferred
async def test_tombstones_outside_an_archive_or_from_another_archive_are_ignored(env, caplog):
    msg = await env.from_bob("still here", "t1")
    with caplog.at_level(logging.INFO):
        # live: a contact cannot send a tombstone
        await env.receive(tombstone_xml(BOB_FULL, "t1", to=ME_FULL))
        # an archived copy that claims to come from another archive
        await process_archived_page(env, [tombstone_xml(BOB_FULL, "t1")], archive=MALLORY)
    assert "outside an archive" in caplog.text and "neither ours nor the room" in caplog.text
    assert (await env.get(msg["uid"]))["body"] == "still here"
    assert len(await env.history(BOB)) == 1
    assert env.signals.updates() == []


def test_a_plugin_keeping_references_must_apply_them():
    host = FakeHost(None)

    class Incomplete(_editing.EditingPlugin):
        name = "XEP-test"
        pending_kinds = ("test",)

    with pytest.raises(TypeError, match="pending_apply"):
        Incomplete(host)

    class Complete(Incomplete):
        async def pending_apply(self, client, row, entry):
            pass

    assert Complete(host).pending_kinds == ("test",)
