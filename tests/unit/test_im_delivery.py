"""Message delivery and state plugins on in-memory streams.

XEP-0359 (ids), XEP-0203 (delay), XEP-0280 (carbons), XEP-0184 (receipts),
XEP-0085 (chat states), XEP-0333 (markers), XEP-0245 (/me), XEP-0393 (styling).

The real message pipeline (:mod:`sat.core.messages`), hooks, parameters and SQLite
storage run; the stream is wokkel's ``XmlStreamStub`` and disco requests are answered
at once by a fake responder (``Env.features``). Hostile input is fed on purpose:
forged carbons, untrusted stanza-ids, garbage receipts and markers, huge states.
"""

from __future__ import annotations

from sat.core import wokkel_compat  # noqa: F401  (before any wokkel import)

# isort: split

import logging
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.generic import parseXml
from wokkel.test import helpers as wokkel_helpers

from sat.core import errors
from sat.core.errors import StorageError
from sat.core.hooks import Hooks
from sat.core.messages import MessageHandling
from sat.memory.params import Params
from sat.memory.storage import Storage
from sat.plugins import (
    xep_0030_disco,
    xep_0085_chat_states,
    xep_0184_receipts,
    xep_0203_delay,
    xep_0245_me,
    xep_0280_carbons,
    xep_0333_markers,
    xep_0359_unique_ids,
    xep_0393_styling,
)
from sat.plugins.xep_0393_styling import parse_styling

ME = "juliet@capulet.lit"
ME_FULL = f"{ME}/balcony"
ROMEO = "romeo@montague.lit"
ROMEO_FULL = f"{ROMEO}/orchard"
NURSE = "nurse@capulet.lit"
ROOM = "coven@chat.shakespeare.lit"
SERVER = "capulet.lit"
PROFILE = "juliet"

NS_SID = "urn:xmpp:sid:0"
NS_DELAY = "urn:xmpp:delay"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_MARKERS = "urn:xmpp:chat-markers:0"
NS_HINTS = "urn:xmpp:hints"
NS_STYLING = "urn:xmpp:styling:0"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"


# --- fakes ---------------------------------------------------------------------------


class FakeBridge:
    def __init__(self):
        self.methods: dict = {}
        self.signals: dict = {}
        self.emitted: list[tuple] = []

    def add_method(self, name, handler, args=(), out=None, doc="", interface="plugin"):
        assert name not in self.methods, name
        assert doc
        self.methods[name] = handler

    def add_signal(self, name, args=(), doc="", interface="plugin"):
        assert name not in self.signals, name
        assert doc
        self.signals[name] = args

    def emit(self, name, *args):
        self.emitted.append((name, *args))

    def of(self, name):
        return [e[1:] for e in self.emitted if e[0] == name]


class FakeProfiles:
    async def resolve(self, name):
        return name or PROFILE


class FakeConfig:
    def get(self, section, name):
        raise KeyError(name)


class FakeHost:
    def __init__(self, storage):
        self.config = FakeConfig()
        self.hooks = Hooks()
        self.bridge = FakeBridge()
        # the core's own signal, declared in sat.core.core_api
        self.bridge.add_signal("MessageUpdate", doc="a stored message changed")
        self.storage = storage
        self.params = Params(storage)
        self.profiles = FakeProfiles()
        self.plugins: dict = {}
        self.clients: dict = {}
        self.messages = MessageHandling(self)

    def get_client(self, profile):
        try:
            return self.clients[profile]
        except KeyError:
            raise errors.NotConnected(profile) from None


class FakeClient(wokkel_helpers.TestableStreamManager):
    def __init__(self, clock, env):
        super().__init__(reactor=clock)
        self.profile = PROFILE
        self.jid = JID(ME_FULL)
        self.roster: dict = {}
        self.presences: dict = {}
        self.env = env
        self.stub.xmlstream.send = self._out

    @property
    def server_jid(self):
        return JID(SERVER)

    def is_connected(self):
        return True

    def _out(self, elt):
        self.stub.output.append(elt)
        if (
            isinstance(elt, domish.Element)
            and elt.name == "iq"
            and elt.getAttribute("type") == "get"
            and any(c.uri == NS_DISCO_INFO for c in elt.elements())
        ):
            self.env.disco_answer(elt)

    def sent(self, name="message"):
        return [e for e in self.stub.output if isinstance(e, domish.Element) and e.name == name]

    def clear(self):
        self.stub.output.clear()


class Env:
    """One profile (juliet) on an in-memory stream, with every plugin of this part."""

    def __init__(self, storage):
        self.clock = task.Clock()
        self.host = FakeHost(storage)
        #: entity -> (features, identities) answered to disco#info; others: an error
        self.features: dict[str, tuple[list[str], list[tuple[str, str]]]] = {
            ME: ([NS_SID, "urn:xmpp:mam:2"], []),
            SERVER: ([NS_CARBONS], [("server", "im")]),
        }
        self.disco_requests: list[str] = []
        #: entities whose disco#info requests get no answer (yet)
        self.silent: set[str] = set()
        for cls in (
            xep_0030_disco.DiscoPlugin,
            xep_0359_unique_ids.UniqueIdsPlugin,
            xep_0203_delay.DelayPlugin,
            xep_0280_carbons.CarbonsPlugin,
            xep_0184_receipts.ReceiptsPlugin,
            xep_0085_chat_states.ChatStatesPlugin,
            xep_0333_markers.MarkersPlugin,
            xep_0245_me.MePlugin,
            xep_0393_styling.StylingPlugin,
        ):
            plugin = cls(self.host)
            self.host.plugins[plugin.name] = plugin
        self.client = FakeClient(self.clock, self)
        for plugin in self.host.plugins.values():
            handler = plugin.get_handler(self.client)
            if handler is not None:
                handler.setHandlerParent(self.client)
        self.host.clients[PROFILE] = self.client

    @property
    def bridge(self):
        return self.host.bridge

    @property
    def storage(self):
        return self.host.storage

    def plugin(self, name):
        return self.host.plugins[name]

    def disco_answer(self, iq):
        target = iq.getAttribute("to") or ME
        self.disco_requests.append(target)
        if target in self.silent:
            return
        known = self.features.get(target)
        if known is None:
            reply = (
                f"<iq xmlns='jabber:client' type='error' id='{iq['id']}' from='{target}'>"
                "<error type='cancel'><service-unavailable "
                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            )
        else:
            features, identities = known
            items = "".join(f"<feature var='{f}'/>" for f in features)
            items += "".join(f"<identity category='{c}' type='{t}'/>" for c, t in identities)
            reply = (
                f"<iq xmlns='jabber:client' type='result' id='{iq['id']}' from='{target}'>"
                f"<query xmlns='{NS_DISCO_INFO}'>{items}</query></iq>"
            )
        self.client.stub.send(parseXml(reply))

    async def receive(self, xml: str):
        """Run a stanza (XML text) through the whole receiving pipeline."""
        await self.host.messages.received(self.client, parseXml(xml))

    async def send(self, to: str, body: str, **extra) -> str:
        return await self.host.messages.send(PROFILE, to, body, extra)

    async def history(self, with_jid=None, limit=50):
        return await self.storage.history_get(PROFILE, with_jid=with_jid, limit=limit)

    async def stored(self, uid):
        return await self.storage.history_find(PROFILE, uid=uid)


def msg(sender, body=None, *, to=ME_FULL, type_="chat", id_=None, children=""):
    attrs = f"from='{sender}' to='{to}' type='{type_}'"
    if id_:
        attrs += f" id='{id_}'"
    body_xml = f"<body>{body}</body>" if body is not None else ""
    return f"<message xmlns='jabber:client' {attrs}>{body_xml}{children}</message>"


def carbon(direction, inner, sender=ME, to=ME_FULL):
    return (
        f"<message xmlns='jabber:client' from='{sender}' to='{to}' type='chat'>"
        f"<{direction} xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>{inner}"
        f"</forwarded></{direction}></message>"
    )


def children_of(elt, uri):
    return [c for c in elt.elements() if c.uri == uri]


@pytest_twisted.async_yield_fixture
async def env(tmp_path):
    storage = Storage(tmp_path / "sat.db")
    await storage.initialise()
    await storage.profile_create(PROFILE)
    yield Env(storage)
    await storage.close()


def befriend(env, jid, subscription="both"):
    env.client.roster[jid] = {"jid": jid, "subscription": subscription}


# --- XEP-0359 -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sent_message_carries_origin_id_equal_to_uid(env):
    uid = await env.send(ROMEO, "hello")
    (out,) = env.client.sent()
    (origin,) = [c for c in children_of(out, NS_SID) if c.name == "origin-id"]
    assert origin["id"] == out["id"] == uid
    stored = await env.stored(uid)
    assert stored["origin_id"] == uid and stored["outgoing"]


@pytest_twisted.ensureDeferred
async def test_origin_id_deduplicates_per_sender(env):
    oid = f"<origin-id xmlns='{NS_SID}' id='o-1'/>"
    await env.receive(msg(ROMEO_FULL, "once", id_="m1", children=oid))
    await env.receive(msg(ROMEO_FULL, "once", id_="m1", children=oid))
    await env.receive(msg(f"{NURSE}/kitchen", "same id, other sender", children=oid))
    history = await env.history()
    assert [m["body"] for m in history] == ["once", "same id, other sender"]
    assert history[0]["origin_id"] == "o-1"
    assert history[0]["extra"]["message_id"] == "m1"


@pytest_twisted.ensureDeferred
async def test_stanza_id_from_our_archive_is_trusted_and_deduplicates(env):
    sid = f"<stanza-id xmlns='{NS_SID}' id='arch-1' by='{ME}'/>"
    await env.receive(msg(ROMEO_FULL, "archived", children=sid))
    await env.receive(msg(ROMEO_FULL, "archived again", children=sid))
    (stored,) = await env.history()
    assert (stored["stanza_id"], stored["stanza_id_by"]) == ("arch-1", ME)


@pytest_twisted.ensureDeferred
async def test_untrusted_stanza_ids_are_ignored(env, caplog):
    caplog.set_level(logging.INFO)
    # by someone else (the sender itself), by a full JID, twice by us, oversized
    await env.receive(
        msg(ROMEO_FULL, "a", children=f"<stanza-id xmlns='{NS_SID}' id='x1' by='{ROMEO}'/>")
    )
    await env.receive(
        msg(ROMEO_FULL, "b", children=f"<stanza-id xmlns='{NS_SID}' id='x2' by='{ME_FULL}'/>")
    )
    twice = (
        f"<stanza-id xmlns='{NS_SID}' id='x3' by='{ME}'/>"
        f"<stanza-id xmlns='{NS_SID}' id='x4' by='{ME}'/>"
    )
    await env.receive(msg(ROMEO_FULL, "c", children=twice))
    huge = "h" * 5000
    await env.receive(
        msg(ROMEO_FULL, "d", children=f"<stanza-id xmlns='{NS_SID}' id='{huge}' by='{ME}'/>")
    )
    history = await env.history()
    assert [m["body"] for m in history] == ["a", "b", "c", "d"]
    assert all(m["stanza_id"] is None for m in history)


@pytest_twisted.ensureDeferred
async def test_stanza_id_needs_the_archive_to_announce_the_feature(env):
    env.features[ME] = (["urn:xmpp:mam:2"], [])  # no urn:xmpp:sid:0: a forged one gets through
    sid = f"<stanza-id xmlns='{NS_SID}' id='forged' by='{ME}'/>"
    await env.receive(msg(ROMEO_FULL, "hi", children=sid))
    (stored,) = await env.history()
    assert stored["stanza_id"] is None


@pytest_twisted.ensureDeferred
async def test_groupchat_stanza_id_only_from_the_room(env):
    env.features[ROOM] = ([NS_SID], [("conference", "text")])
    by_room = f"<stanza-id xmlns='{NS_SID}' id='r-1' by='{ROOM}'/>"
    by_us = f"<stanza-id xmlns='{NS_SID}' id='r-2' by='{ME}'/>"
    await env.receive(msg(f"{ROOM}/witch", "from the room", type_="groupchat", children=by_room))
    await env.receive(msg(f"{ROOM}/witch", "claims ours", type_="groupchat", children=by_us))
    # a 1:1 message cannot carry a room id
    await env.receive(msg(ROMEO_FULL, "claims the room", children=by_room.replace("r-1", "r-3")))
    first, second, third = await env.history()
    assert (first["stanza_id"], first["stanza_id_by"]) == ("r-1", ROOM)
    assert second["stanza_id"] is None and third["stanza_id"] is None


@pytest_twisted.ensureDeferred
async def test_room_without_sid_support_is_not_trusted(env):
    env.features[ROOM] = ([], [("conference", "text")])
    by_room = f"<stanza-id xmlns='{NS_SID}' id='r-1' by='{ROOM}'/>"
    await env.receive(msg(f"{ROOM}/witch", "spoofable", type_="groupchat", children=by_room))
    (stored,) = await env.history()
    assert stored["stanza_id"] is None


# --- XEP-0203 -----------------------------------------------------------------------


def delay(stamp, sender=None, reason=""):
    from_attr = f" from='{sender}'" if sender else ""
    return f"<delay xmlns='{NS_DELAY}' stamp='{stamp}'{from_attr}>{reason}</delay>"


@pytest_twisted.ensureDeferred
async def test_offline_delay_sets_the_original_time(env):
    await env.receive(
        msg(
            ROMEO_FULL, "O blessed night", children=delay("2002-09-10T23:08:25Z", SERVER, "Offline")
        )
    )
    (stored,) = await env.history()
    assert stored["timestamp"] == 1031699305.0
    assert stored["received_timestamp"] > time.time() - 60
    assert stored["extra"]["delay"] == 1031699305.0
    assert stored["extra"]["delay_from"] == SERVER
    assert stored["extra"]["delay_reason"] == "Offline"


@pytest_twisted.ensureDeferred
async def test_delay_stamp_with_offset_and_fraction(env):
    await env.receive(msg(ROMEO_FULL, "x", children=delay("2002-09-11T01:08:25.5+02:00", ROMEO)))
    (stored,) = await env.history()
    assert stored["timestamp"] == 1031699305.5


@pytest_twisted.ensureDeferred
async def test_hostile_delays_are_bounded_or_ignored(env):
    before = time.time()
    await env.receive(msg(ROMEO_FULL, "future", children=delay("2999-01-01T00:00:00Z", ROMEO)))
    await env.receive(msg(ROMEO_FULL, "third party", children=delay("2002-09-10T23:08:25Z", NURSE)))
    await env.receive(msg(ROMEO_FULL, "garbage", children=delay("yesterday", SERVER)))
    await env.receive(msg(ROMEO_FULL, "ancient", children=delay("1970-01-02T00:00:00Z", SERVER)))
    by_body = {m["body"]: m for m in await env.history()}
    future, third, garbage, ancient = (
        by_body[k] for k in ("future", "third party", "garbage", "ancient")
    )
    assert before <= future["timestamp"] <= time.time()  # clamped to the reception time
    for message in (third, garbage, ancient):
        assert message["timestamp"] >= before
        assert "delay" not in message["extra"]


@pytest_twisted.ensureDeferred
async def test_room_delay_wins_in_groupchat(env):
    children = delay("2002-09-10T23:05:37Z", ROOM) + delay("2002-09-10T23:00:00Z", "witch@x.lit")
    await env.receive(
        msg(f"{ROOM}/secondwitch", "By the pricking", type_="groupchat", children=children)
    )
    (stored,) = await env.history()
    assert stored["extra"]["delay_from"] == ROOM
    assert stored["timestamp"] == 1031699137.0


# --- XEP-0280 -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_carbons_enabled_when_the_server_offers_them(env):
    d = defer.ensureDeferred(env.plugin("XEP-0280").profile_connected(env.client))
    (enable,) = [i for i in env.client.sent("iq") if i.getAttribute("type") == "set"]
    assert not enable.hasAttribute("to")  # addressed to our own account
    assert children_of(enable, NS_CARBONS)[0].name == "enable"
    env.client.stub.send(
        parseXml(f"<iq xmlns='jabber:client' type='result' id='{enable['id']}' from='{ME}'/>")
    )
    await d
    assert env.client.carbons_enabled


@pytest_twisted.ensureDeferred
async def test_carbons_not_enabled_without_server_support(env):
    env.features[SERVER] = ([], [("server", "im")])
    await env.plugin("XEP-0280").profile_connected(env.client)
    assert not [i for i in env.client.sent("iq") if i.getAttribute("type") == "set"]
    assert env.client.carbons_enabled is False


@pytest_twisted.ensureDeferred
async def test_received_and_sent_carbons_are_unwrapped(env):
    inner_in = msg(ROMEO_FULL, "to your phone", to=f"{ME}/phone", id_="c1")
    inner_out = (
        f"<message xmlns='jabber:client' from='{ME}/phone' to='{ROMEO_FULL}' type='chat' id='c2'>"
        f"<body>from your phone</body><origin-id xmlns='{NS_SID}' id='c2'/></message>"
    )
    await env.receive(carbon("received", inner_in))
    await env.receive(carbon("sent", inner_out))
    received, sent = await env.history()
    assert received["body"] == "to your phone" and not received["outgoing"]
    assert received["source"] == ROMEO and received["extra"]["carbon"] == "received"
    assert sent["body"] == "from your phone" and sent["outgoing"]
    assert (sent["source"], sent["source_resource"], sent["dest"]) == (ME, "phone", ROMEO)
    assert sent["extra"]["carbon"] == "sent" and sent["origin_id"] == "c2"
    assert len(env.bridge.of("MessageNew")) == 2
    # no receipt or marker is sent for copies
    assert not env.client.sent()


@pytest_twisted.ensureDeferred
async def test_forged_carbons_are_ignored(env, caplog):
    caplog.set_level(logging.WARNING)
    lie = msg(f"{ME}/phone", "I never said that", to=ROMEO_FULL)
    await env.receive(carbon("sent", lie, sender=ROMEO))  # from a contact
    await env.receive(carbon("sent", lie, sender=f"{ME}/phone"))  # from a full JID
    await env.receive(carbon("received", msg(ROMEO_FULL, "x"), sender=NURSE))
    # from us, but wrapping a message that is not ours / not to us
    await env.receive(carbon("sent", msg(ROMEO_FULL, "not ours", to=NURSE)))
    await env.receive(carbon("received", msg(ROMEO_FULL, "not to us", to=NURSE)))
    # two copies in one wrapper, a nested copy, and copies without a forwarded message
    await env.receive(
        f"<message xmlns='jabber:client' from='{ME}' to='{ME_FULL}'>"
        f"<sent xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>{lie}</forwarded></sent>"
        f"<received xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>{lie}</forwarded>"
        "</received></message>"
    )
    await env.receive(carbon("received", carbon("sent", lie)))
    await env.receive(
        f"<message xmlns='jabber:client' from='{ME}' to='{ME_FULL}'>"
        f"<received xmlns='{NS_CARBONS}'/><body>wrapper body</body></message>"
    )
    assert await env.history() == []
    assert "forged carbon" in caplog.text


@pytest_twisted.ensureDeferred
async def test_private_messages_avoid_carbons(env):
    await env.send(ROMEO, "secret", private=True)
    await env.send(ROMEO, "not copied", no_copy=True)
    first, second = env.client.sent()
    assert {(c.uri, c.name) for c in first.elements()} >= {
        (NS_CARBONS, "private"),
        (NS_HINTS, "no-copy"),
    }
    assert (NS_CARBONS, "private") not in {(c.uri, c.name) for c in second.elements()}
    assert (NS_HINTS, "no-copy") in {(c.uri, c.name) for c in second.elements()}


# --- XEP-0184 -----------------------------------------------------------------------


def requests_receipt(elt):
    return any(c.name == "request" for c in children_of(elt, NS_RECEIPTS))


@pytest_twisted.ensureDeferred
async def test_receipt_requested_according_to_the_xep(env):
    await env.send(ROMEO, "bare JID: may ask")
    env.features[ROMEO_FULL] = (["urn:xmpp:receipts"], [])
    await env.send(ROMEO_FULL, "full JID supporting receipts")
    env.features["romeo@montague.lit/old"] = ([], [])
    await env.send("romeo@montague.lit/old", "full JID without receipts")
    await env.send("romeo@montague.lit/gone", "full JID answering disco with an error")
    await env.send(ROMEO, "no thanks", receipt=False)
    await env.send(ROOM, "room message", type="groupchat")
    asked = [requests_receipt(e) for e in env.client.sent()]
    assert asked == [True, True, False, False, False, False]
    history = await env.history()
    assert [bool(m["extra"].get("receipt_requested")) for m in history] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert all("receipt" not in m["extra"] for m in history)


@pytest_twisted.ensureDeferred
async def test_slow_disco_does_not_hold_messages_back(env):
    env.silent.add(ROMEO_FULL)
    d = defer.ensureDeferred(env.send(ROMEO_FULL, "are you there?"))
    # the message waits a moment (DISCO_WAIT, on the fake clock) for the client's answer
    for _ in range(200):
        if d.called:
            break
        await task.deferLater(reactor, 0.01, lambda: None)
        env.clock.advance(xep_0184_receipts.DISCO_WAIT / 2)
    await d
    (first,) = [m for m in env.client.sent() if m.body]
    assert not requests_receipt(first)
    # the answer comes late: it is still cached, the next message asks for a receipt
    (iq,) = [i for i in env.client.sent("iq") if i.getAttribute("to") == ROMEO_FULL]
    env.features[ROMEO_FULL] = (["urn:xmpp:receipts", NS_MARKERS], [])
    env.silent.clear()
    env.disco_answer(iq)
    await env.send(ROMEO_FULL, "now?")
    assert requests_receipt([m for m in env.client.sent() if m.body][-1])


@pytest_twisted.ensureDeferred
async def test_history_mark_before_checks_the_conversation(env):
    uid = await env.send(ROMEO, "for romeo")
    with pytest.raises(errors.InvalidArgument):
        await env.storage.history_mark_before(
            PROFILE,
            uid,
            "marker",
            "displayed",
            ("received", "displayed"),
            with_jid=NURSE,
            outgoing=True,
        )
    with pytest.raises(errors.InvalidArgument):
        await env.storage.history_mark_before(
            PROFILE,
            uid,
            "marker",
            "read",
            ("received", "displayed"),
            with_jid=ROMEO,
            outgoing=True,
        )
    with pytest.raises(errors.NotFound):
        await env.storage.history_mark_before(
            PROFILE, "nope", "marker", "displayed", ("displayed",), with_jid=ROMEO, outgoing=True
        )
    assert await env.storage.history_find(PROFILE, source=ME, origin_id=uid) is not None
    with pytest.raises(errors.InvalidArgument):
        await env.storage.history_find(PROFILE, origin_id=uid)


@pytest_twisted.ensureDeferred
async def test_receipt_marks_our_message_delivered_once(env):
    uid = await env.send(ROMEO, "did you get it?")
    ack = f"<received xmlns='{NS_RECEIPTS}' id='{uid}'/>"
    await env.receive(msg(ROMEO_FULL, type_="normal", children=ack))
    await env.receive(msg(ROMEO_FULL, children=ack))  # repeated: nothing more
    stored = await env.stored(uid)
    assert stored["extra"]["delivery"] == "received"
    assert stored["extra"]["delivery_resource"] == "orchard"
    updates = env.bridge.of("MessageUpdate")
    assert len(updates) == 1
    profile, updated_uid, kind, data = updates[0]
    assert (profile, updated_uid, kind, data["delivery"]) == (PROFILE, uid, "receipt", "received")
    # the ack itself is not stored
    assert len(await env.history()) == 1


@pytest_twisted.ensureDeferred
async def test_garbage_receipts_change_nothing(env):
    uid = await env.send(ROMEO, "for romeo only")
    for children in (
        f"<received xmlns='{NS_RECEIPTS}' id='{uid}'/>",  # from the nurse: not her message
        f"<received xmlns='{NS_RECEIPTS}'/>",
        f"<received xmlns='{NS_RECEIPTS}' id='{'x' * 10000}'/>",
        f"<received xmlns='{NS_RECEIPTS}' id='unknown'/>",
    ):
        await env.receive(msg(f"{NURSE}/kitchen", children=children))
    await env.receive(
        msg(
            f"{ROOM}/romeo",
            type_="groupchat",
            children=f"<received xmlns='{NS_RECEIPTS}' id='{uid}'/>",
        )
    )
    assert "delivery" not in (await env.stored(uid))["extra"]
    assert env.bridge.of("MessageUpdate") == []


@pytest_twisted.ensureDeferred
async def test_receipt_for_a_message_sent_by_another_resource(env):
    inner = (
        f"<message xmlns='jabber:client' from='{ME}/phone' to='{ROMEO}' type='chat' id='p1'>"
        f"<body>sent from the phone</body><origin-id xmlns='{NS_SID}' id='p1'/></message>"
    )
    await env.receive(carbon("sent", inner))
    ack = msg(ROMEO_FULL, to=f"{ME}/phone", children=f"<received xmlns='{NS_RECEIPTS}' id='p1'/>")
    await env.receive(carbon("received", ack))
    (stored,) = await env.history()
    assert stored["extra"]["delivery"] == "received"


@pytest_twisted.ensureDeferred
async def test_receipts_answered_only_to_allowed_contacts(env):
    request = f"<request xmlns='{NS_RECEIPTS}'/>"
    await env.receive(msg(ROMEO_FULL, "stranger asks", id_="s1", children=request))
    assert env.client.sent() == []  # not allowed to see our presence
    befriend(env, ROMEO, "from")
    await env.receive(msg(ROMEO_FULL, "friend asks", id_="f1", children=request))
    (ack,) = env.client.sent()
    assert ack["to"] == ROMEO_FULL and ack["type"] == "chat" and ack["id"] != "f1"
    (received,) = children_of(ack, NS_RECEIPTS)
    assert received.name == "received" and received["id"] == "f1"
    assert not ack.body  # only the receipt
    env.client.clear()
    await env.host.params.set("privacy", "receipts", "everyone", PROFILE)
    await env.receive(msg(f"{NURSE}/kitchen", "anyone", id_="n1", children=request))
    assert len(env.client.sent()) == 1
    env.client.clear()
    await env.host.params.set("privacy", "receipts", "nobody", PROFILE)
    await env.receive(msg(ROMEO_FULL, "friend again", id_="f2", children=request))
    assert env.client.sent() == []


@pytest_twisted.ensureDeferred
async def test_receipt_goes_once_the_message_is_stored(env):
    befriend(env, ROMEO)
    request = f"<request xmlns='{NS_RECEIPTS}'/><origin-id xmlns='{NS_SID}' id='o-k1'/>"
    order = []
    real_emit, real_send = env.bridge.emit, env.client.send
    env.bridge.emit = lambda name, *args: (order.append(("signal", name)), real_emit(name, *args))
    env.client.send = lambda elt: (order.append(("sent", elt.name)), real_send(elt))
    await env.receive(msg(ROMEO_FULL, "keep me", id_="k1", children=request))
    (stored,) = await env.history()
    assert stored["extra"]["receipt_sent"] is True
    # the frontends hear of the message before the receipt leaves
    assert order == [("signal", "MessageNew"), ("sent", "message")]
    # the same message again (a resumed stream re-sends it): acknowledged again, stored once
    env.client.clear()
    await env.receive(msg(ROMEO_FULL, "keep me", id_="k1", children=request))
    assert len(env.client.sent()) == 1 and len(await env.history()) == 1
    # a message that cannot be stored is not acknowledged
    env.client.clear()
    await env.storage.close()
    with pytest.raises(StorageError):
        await env.receive(
            msg(ROMEO_FULL, "lost", id_="k2", children=request.replace("o-k1", "o-k2"))
        )
    assert env.client.sent() == []


@pytest_twisted.ensureDeferred
async def test_receipts_never_answered_where_the_xep_forbids(env):
    befriend(env, ROMEO)
    request = f"<request xmlns='{NS_RECEIPTS}'/>"
    # no id, groupchat, an ack asking for an ack (loop), no body, a carbon copy, archived
    await env.receive(msg(ROMEO_FULL, "no id", children=request))
    await env.receive(msg(f"{ROOM}/romeo", "room", id_="g1", type_="groupchat", children=request))
    await env.receive(
        msg(ROMEO_FULL, id_="a1", children=request + f"<received xmlns='{NS_RECEIPTS}' id='zz'/>")
    )
    await env.receive(msg(ROMEO_FULL, id_="e1", children=request))
    await env.receive(
        carbon("received", msg(ROMEO_FULL, "copy", to=f"{ME}/phone", id_="c1", children=request))
    )
    await env.host.messages.received(
        env.client,
        parseXml(msg(ROMEO_FULL, "archived", id_="m1", children=request)),
        extra={"archived": True},
    )
    assert env.client.sent() == []


# --- XEP-0085 -----------------------------------------------------------------------


def state_of(elt):
    states = children_of(elt, NS_CHATSTATES)
    return states[0].name if states else None


@pytest_twisted.ensureDeferred
async def test_chat_states_implicit_negotiation(env):
    send_state = env.plugin("XEP-0085").send_state
    await env.send(ROMEO, "Who's there?")
    assert state_of(env.client.sent()[-1]) == "active"
    # not before the contact answered
    assert await send_state(env.client, ROMEO, "composing") is False
    await env.receive(
        msg(ROMEO_FULL, "Nay, answer me", children=f"<active xmlns='{NS_CHATSTATES}'/>")
    )
    assert await send_state(env.client, ROMEO, "composing") is True
    (standalone,) = [e for e in env.client.sent() if not e.body]
    assert state_of(standalone) == "composing" and standalone["type"] == "chat"
    assert len(list(standalone.elements())) == 1
    # never the same standalone state twice in a row
    assert await send_state(env.client, ROMEO, "composing") is False
    assert await send_state(env.client, ROMEO, "paused") is True
    with pytest.raises(errors.InvalidArgument):
        await send_state(env.client, ROMEO, "sleeping")


@pytest_twisted.ensureDeferred
async def test_chat_states_stop_when_the_reply_has_none(env):
    send_state = env.plugin("XEP-0085").send_state
    await env.send(ROMEO, "Who's there?")
    await env.receive(msg(ROMEO_FULL, "a reply without state"))
    assert await send_state(env.client, ROMEO, "composing") is False
    await env.send(ROMEO, "next message")
    assert state_of(env.client.sent()[-1]) is None


@pytest_twisted.ensureDeferred
async def test_chat_states_from_disco(env):
    env.client.presences[ROMEO_FULL] = {"jid": ROMEO, "show": "", "priority": 0}
    env.features[ROMEO_FULL] = ([NS_CHATSTATES], [])
    assert await env.plugin("XEP-0085").send_state(env.client, ROMEO, "composing") is True


@pytest_twisted.ensureDeferred
async def test_chat_states_in_rooms_and_disabled(env):
    send_state = env.plugin("XEP-0085").send_state
    env.features[ROOM] = ([], [("conference", "text")])
    assert await send_state(env.client, ROOM, "composing") is True
    assert env.client.sent()[-1]["type"] == "groupchat"
    assert await send_state(env.client, ROOM, "gone") is False
    await env.host.params.set("privacy", "chat_states", "false", PROFILE)
    assert await send_state(env.client, ROOM, "paused") is False
    await env.send(ROMEO, "no state please")
    assert state_of(env.client.sent()[-1]) is None


@pytest_twisted.ensureDeferred
async def test_incoming_chat_states_signalled_not_stored(env):
    composing = f"<composing xmlns='{NS_CHATSTATES}'/>"
    await env.receive(msg(ROMEO_FULL, children=composing))
    await env.receive(msg(ROMEO_FULL, children=composing))  # repetition: one signal
    await env.receive(msg(ROMEO_FULL, "here it is", children=f"<active xmlns='{NS_CHATSTATES}'/>"))
    assert env.bridge.of("ChatStateReceived") == [
        (PROFILE, ROMEO_FULL, "composing"),
        (PROFILE, ROMEO_FULL, "active"),
    ]
    assert [m["body"] for m in await env.history()] == ["here it is"]


@pytest_twisted.ensureDeferred
async def test_hostile_chat_states_ignored(env):
    huge_name = "composing" + "x" * 5000
    await env.receive(msg(ROMEO_FULL, children=f"<{huge_name} xmlns='{NS_CHATSTATES}'/>"))
    await env.receive(
        msg(ROMEO_FULL, children=f"<composing xmlns='{NS_CHATSTATES}'>{'z' * 100000}</composing>")
    )
    await env.receive(
        msg(
            ROMEO_FULL,
            children=f"<composing xmlns='{NS_CHATSTATES}'/><paused xmlns='{NS_CHATSTATES}'/>",
        )
    )
    await env.receive(
        msg(f"{ROOM}/witch", type_="groupchat", children=f"<gone xmlns='{NS_CHATSTATES}'/>")
    )
    await env.receive(
        msg(
            ROMEO_FULL,
            children=f"<paused xmlns='{NS_CHATSTATES}'/>" + delay("2020-01-01T00:00:00Z"),
        )
    )
    # our own state copied from another resource
    await env.receive(
        carbon(
            "sent", msg(f"{ME}/phone", to=ROMEO_FULL, children=f"<gone xmlns='{NS_CHATSTATES}'/>")
        )
    )
    # only the well-formed 'composing' with text content counts
    assert env.bridge.of("ChatStateReceived") == [(PROFILE, ROMEO_FULL, "composing")]
    assert await env.history() == []


# --- XEP-0333 -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_contact_markers_update_our_messages_up_to_the_marked_one(env):
    uids = [await env.send(ROMEO, f"message {i}") for i in range(4)]
    assert all(children_of(e, NS_MARKERS)[0].name == "markable" for e in env.client.sent())
    other = await env.send(NURSE, "to the nurse")
    displayed = f"<displayed xmlns='{NS_MARKERS}' id='{uids[2]}'/>"
    await env.receive(msg(ROMEO_FULL, children=displayed))
    markers = {m["uid"]: m["extra"].get("marker") for m in await env.history()}
    assert [markers[u] for u in uids] == ["displayed", "displayed", "displayed", None]
    assert markers[other] is None
    updates = env.bridge.of("MessageUpdate")
    assert sorted(u[1] for u in updates) == sorted(uids[:3])
    assert {u[2] for u in updates} == {"marker"}
    # markers only move forward: an older or weaker one changes nothing
    await env.receive(msg(ROMEO_FULL, children=f"<displayed xmlns='{NS_MARKERS}' id='{uids[0]}'/>"))
    await env.receive(msg(ROMEO_FULL, children=f"<received xmlns='{NS_MARKERS}' id='{uids[2]}'/>"))
    assert len(env.bridge.of("MessageUpdate")) == 3
    await env.receive(msg(ROMEO_FULL, children=f"<displayed xmlns='{NS_MARKERS}' id='{uids[3]}'/>"))
    assert [u[1] for u in env.bridge.of("MessageUpdate")[3:]] == [uids[3]]


@pytest_twisted.ensureDeferred
async def test_markers_cannot_touch_other_conversations(env):
    uid = await env.send(ROMEO, "for romeo")
    for children in (
        f"<displayed xmlns='{NS_MARKERS}' id='{uid}'/>",
        f"<displayed xmlns='{NS_MARKERS}'/>",
        f"<displayed xmlns='{NS_MARKERS}' id='{'q' * 9999}'/>",
        f"<displayed xmlns='{NS_MARKERS}' id='{uid}'/><received xmlns='{NS_MARKERS}' id='{uid}'/>",
        f"<read xmlns='{NS_MARKERS}' id='{uid}'/>",
    ):
        await env.receive(msg(f"{NURSE}/kitchen", children=children))
    assert "marker" not in (await env.stored(uid))["extra"]
    assert env.bridge.of("MessageUpdate") == []


@pytest_twisted.ensureDeferred
async def test_marker_send_for_received_messages(env):
    befriend(env, ROMEO)
    markable = f"<markable xmlns='{NS_MARKERS}'/>"
    for i in range(3):
        await env.receive(msg(ROMEO_FULL, f"line {i}", id_=f"r{i}", children=markable))
    await env.receive(msg(ROMEO_FULL, "not markable", id_="r3"))
    history = await env.history()
    uids = [m["uid"] for m in history]
    send_marker = env.plugin("XEP-0333").send_marker
    assert await send_marker(env.client, uids[1], "displayed") is True
    (out,) = env.client.sent()
    assert out["to"] == ROMEO and out["type"] == "chat"
    (marker,) = children_of(out, NS_MARKERS)
    assert (marker.name, marker["id"]) == ("displayed", "r1")
    assert children_of(out, NS_HINTS)[0].name == "store"
    sent = {m["uid"]: m["extra"].get("marker_sent") for m in await env.history()}
    assert [sent[u] for u in uids] == ["displayed", "displayed", None, None]
    # already marked, or older than the last marker: nothing sent
    assert await send_marker(env.client, uids[1], "displayed") is False
    assert await send_marker(env.client, uids[0], "displayed") is False
    assert await send_marker(env.client, uids[3], "displayed") is False  # not markable
    assert await send_marker(env.client, uids[2], "displayed") is True
    with pytest.raises(errors.InvalidArgument):
        await send_marker(env.client, uids[2], "read")
    with pytest.raises(errors.NotFound):
        await send_marker(env.client, "no-such-uid", "displayed")
    mine = await env.send(ROMEO, "mine")
    with pytest.raises(errors.InvalidArgument):
        await send_marker(env.client, mine, "displayed")


@pytest_twisted.ensureDeferred
async def test_marker_send_respects_privacy(env):
    await env.receive(msg(ROMEO_FULL, "hi", id_="r0", children=f"<markable xmlns='{NS_MARKERS}'/>"))
    (stored,) = await env.history()
    assert await env.plugin("XEP-0333").send_marker(env.client, stored["uid"], "displayed") is False
    assert env.client.sent() == []


@pytest_twisted.ensureDeferred
async def test_room_markers_use_the_room_stanza_id(env):
    env.features[ROOM] = ([NS_SID], [("conference", "text")])
    children = (
        f"<markable xmlns='{NS_MARKERS}'/><stanza-id xmlns='{NS_SID}' id='39K7' by='{ROOM}'/>"
    )
    await env.receive(
        msg(
            f"{ROOM}/firstwitch",
            "Thrice the brinded cat",
            id_="message-1",
            type_="groupchat",
            children=children,
        )
    )
    (stored,) = await env.history()
    assert stored["extra"]["marker_id"] == "39K7"
    assert await env.plugin("XEP-0333").send_marker(env.client, stored["uid"], "displayed")
    (out,) = env.client.sent()
    assert out["to"] == ROOM and out["type"] == "groupchat"
    assert children_of(out, NS_MARKERS)[0]["id"] == "39K7"
    # an occupant's marker adds its nick
    await env.receive(
        msg(
            f"{ROOM}/secondwitch",
            type_="groupchat",
            children=f"<displayed xmlns='{NS_MARKERS}' id='39K7'/>",
        )
    )
    assert (await env.stored(stored["uid"]))["extra"]["displayed_by"] == ["secondwitch"]


@pytest_twisted.ensureDeferred
async def test_markers_in_private_room_messages_stay_with_that_occupant(env):
    occupant = f"{ROOM}/witch"
    await env.host.messages.received(
        env.client,
        parseXml(msg(occupant, "psst", id_="pm1", children=f"<markable xmlns='{NS_MARKERS}'/>")),
        extra={"muc_pm": True},
    )
    (stored,) = await env.history()
    assert await env.plugin("XEP-0333").send_marker(env.client, stored["uid"], "displayed")
    (out,) = env.client.sent()
    assert out["to"] == occupant and out["type"] == "chat"
    to_other = await env.send(f"{ROOM}/other", "to another occupant")
    to_witch = await env.send(occupant, "to the witch")
    env.bridge.emitted.clear()
    await env.host.messages.received(
        env.client,
        parseXml(msg(occupant, children=f"<displayed xmlns='{NS_MARKERS}' id='{to_witch}'/>")),
        extra={"muc_pm": True},
    )
    assert [u[1] for u in env.bridge.of("MessageUpdate")] == [to_witch]
    assert "marker" not in (await env.stored(to_other))["extra"]


@pytest_twisted.ensureDeferred
async def test_marker_from_our_other_resource_syncs_read_state(env):
    oid = f"<origin-id xmlns='{NS_SID}' id='o7'/><markable xmlns='{NS_MARKERS}'/>"
    await env.receive(msg(ROMEO_FULL, "read me", id_="o7", children=oid))
    inner = msg(f"{ME}/phone", to=ROMEO, children=f"<displayed xmlns='{NS_MARKERS}' id='o7'/>")
    await env.receive(carbon("sent", inner))
    (stored,) = await env.history()
    assert stored["extra"]["marker_sent"] == "displayed"


# --- XEP-0245 -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_me_command_flagged_both_ways(env):
    await env.send(ROMEO, "/me waves")
    await env.receive(msg(ROMEO_FULL, "/me bows"))
    await env.receive(msg(ROMEO_FULL, "/meh"))
    await env.receive(msg(ROMEO_FULL, " /me not first"))
    flags = [m["extra"].get("me", False) for m in await env.history()]
    assert flags == [True, True, False, False]
    assert [m["body"] for m in await env.history()][:2] == ["/me waves", "/me bows"]


# --- XEP-0393 -----------------------------------------------------------------------


def styled(body):
    return [(s["type"], body[s["start"] : s["end"]]) for s in parse_styling(body)]


@pytest.mark.parametrize(
    "body, expected",
    [
        # §5.2 examples
        ("*strong*", [("strong", "*strong*")]),
        ("plain *strong* plain", [("strong", "*strong*")]),
        ("*strong* plain *strong*", [("strong", "*strong*"), ("strong", "*strong*")]),
        ("*strong*plain*", [("strong", "*strong*")]),
        ("* plain *strong*", [("strong", "*strong*")]),
        ("not strong*", []),
        ("*not strong", []),
        ("*not \n strong*", []),
        ("*not *strong", []),
        ("**", []),
        ("****", []),
        (
            "The full title is _Twelfth Night, or What You Will_ but\n_most_ people shorten it.",
            [("emphasis", "_Twelfth Night, or What You Will_"), ("emphasis", "_most_")],
        ),
        (
            'The full title is "Twelfth Night, or What You Will" but\n*most* people shorten it.',
            [("strong", "*most*")],
        ),
        ("Everyone ~dis~likes cake.", [("strike", "~dis~")]),
        ("This is `monospace`", [("pre", "`monospace`")]),
        ("This is `*monospace*`", [("pre", "`*monospace*`")]),
        (
            "This is *`monospace and bold`*",
            [("strong", "*`monospace and bold`*"), ("pre", "`monospace and bold`")],
        ),
        ("Wow, I can write in `monospace`!", [("pre", "`monospace`")]),
        # §5.1 blocks
        (
            "(There are three blocks in this body marked by parens,)\n(but there is no *formatting)\n"
            "(as spans* may not escape blocks.)",
            [],
        ),
        (
            '```ignored\n(println "Hello, world!")\n```\n\nThis should show up as monospace, '
            "preformatted text ⤴",
            [("pre-block", '```ignored\n(println "Hello, world!")\n```')],
        ),
        (
            '> ```\n> (println "Hello, world!")\n\nThe entire blockquote is a preformatted text '
            "block, but this line\nis plaintext!",
            [
                ("quote", '> ```\n> (println "Hello, world!")'),
                ("pre-block", '```\n> (println "Hello, world!")'),
            ],
        ),
        (
            "> That that is, is.\n\nSaid the old hermit of Prague.",
            [("quote", "> That that is, is.")],
        ),
        (
            ">> That that is, is.\n> Said the old hermit of Prague.\n\nWho?",
            [
                ("quote", ">> That that is, is.\n> Said the old hermit of Prague."),
                ("quote", "> That that is, is."),
            ],
        ),
        ("> *quoted strong*", [("quote", "> *quoted strong*"), ("strong", "*quoted strong*")]),
        (
            "```\n*not styled*\n```\n*styled*",
            [("pre-block", "```\n*not styled*\n```"), ("strong", "*styled*")],
        ),
        ("_*both*_", [("emphasis", "_*both*_"), ("strong", "*both*")]),
        ("__init__ and a*b*c", []),
        ("", []),
    ],
)
def test_styling_examples(body, expected):
    assert styled(body) == expected


def test_styling_hostile_bodies_stay_fast_and_bounded():
    bodies = [
        ">" * 100_000,
        "*a " * 33_000,
        "*" * 100_000,
        "`x" * 50_000,
        "_a_ " * 25_000,
        ("> " * 50 + "*x*\n") * 500,
        "```\n" * 25_000,
    ]
    for body in bodies:
        start = time.perf_counter()
        spans = parse_styling(body)
        assert time.perf_counter() - start < 2.0, body[:20]
        assert len(spans) <= xep_0393_styling.MAX_SPANS
        for span in spans:
            assert 0 <= span["start"] < span["end"] <= len(body)


@pytest_twisted.ensureDeferred
async def test_styling_stored_with_messages_and_unstyled_hint(env):
    await env.send(ROMEO, "*bold* move")
    await env.send(ROMEO, "*raw*", unstyled=True)
    await env.receive(msg(ROMEO_FULL, "_yes_"))
    await env.receive(msg(ROMEO_FULL, "*no*", children=f"<unstyled xmlns='{NS_STYLING}'/>"))
    first, second, third, fourth = await env.history()
    assert first["extra"]["styling"] == [{"type": "strong", "start": 0, "end": 6}]
    assert "styling" not in second["extra"] and second["extra"]["unstyled"]
    assert any(c.name == "unstyled" for c in children_of(env.client.sent()[1], NS_STYLING))
    assert third["extra"]["styling"] == [{"type": "emphasis", "start": 0, "end": 5}]
    assert "styling" not in fourth["extra"] and fourth["extra"]["unstyled"]


# --- disco and bridge -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_features_advertised_and_bridge_declared(env):
    info = await env.plugin("XEP-0030").get_own_info(env.client)
    for feature in (NS_SID, NS_RECEIPTS, NS_CHATSTATES, NS_MARKERS, NS_STYLING):
        assert feature in info.features
    assert {"ChatStateSend", "MarkerSend"} <= set(env.bridge.methods)
    assert "ChatStateReceived" in env.bridge.signals
    befriend(env, ROMEO)
    await env.receive(msg(ROMEO_FULL, "x", id_="b1", children=f"<markable xmlns='{NS_MARKERS}'/>"))
    (stored,) = await env.history()
    assert await env.bridge.methods["MarkerSend"]("", stored["uid"], "displayed") is True
    env.features[ROMEO_FULL] = ([NS_CHATSTATES], [])
    assert await env.bridge.methods["ChatStateSend"](PROFILE, ROMEO_FULL, "composing") is True
