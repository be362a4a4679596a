"""Contacts: RFC 6121 roster and subscriptions (sat.core.presence), XEP-0191 blocking,
XEP-0054 vCards and avatars (XEP-0084 / XEP-0153 / XEP-0398).

Everything runs on in-memory streams (wokkel's ``XmlStreamStub``) with a
``task.Clock``; storage is an in-memory key/value fake.
"""

from __future__ import annotations

from sat.core import wokkel_compat  # noqa: F401  (before any wokkel import)

# isort: split

import base64
import copy
import hashlib
import json
import logging
import struct
import zlib

import pytest
from twisted.internet import task
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.generic import parseXml
from wokkel.test import helpers as wokkel_helpers

from sat.core import errors
from sat.core.hooks import Hooks
from sat.core.presence import NS_PREAPPROVAL, NS_ROSTER, NS_ROSTERVER, PresenceHandling
from sat.plugins import xep_0030_disco, xep_0054_vcard, xep_0084_avatars, xep_0191_blocking
from sat.plugins.xep_0084_avatars import (
    NS_AVATAR_DATA,
    NS_AVATAR_METADATA,
    NS_CONVERSION,
    NS_PUBSUB,
    NS_VCARD_UPDATE,
    AvatarCache,
    image_info,
    normalise_id,
)
from tests.unit.test_disco_caps import answer, failure_of, result_of, run, sent_iqs

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_BLOCKING = "urn:xmpp:blocking"
NS_VCARD = "vcard-temp"
OWN = "juliet@capulet.lit/balcony"
ROMEO = "romeo@montague.lit"

# --- fakes ------------------------------------------------------------------------------


class FakeStorage:
    def __init__(self):
        self.kv: dict = {}
        self.writes = 0

    async def kv_get(self, namespace, key, default=None, profile=None):
        value = self.kv.get((profile, namespace, key))
        return default if value is None else copy.deepcopy(value)

    async def kv_set(self, namespace, key, value, profile=None):
        self.writes += 1
        self.kv[(profile, namespace, key)] = json.loads(json.dumps(value))

    async def kv_delete(self, namespace, key, profile=None):
        return self.kv.pop((profile, namespace, key), None) is not None

    async def disco_cache_get(self, ver):
        return None

    async def disco_cache_set(self, ver, xml):
        pass


class FakeBridge:
    def __init__(self):
        self.methods: dict = {}
        self.signals: dict = {}
        self.emitted: list = []

    def add_method(self, name, handler, args=(), out=None, doc="", interface="plugin"):
        assert name not in self.methods, name
        assert doc, name
        self.methods[name] = handler

    def add_signal(self, name, args=(), doc="", interface="plugin"):
        assert doc, name
        self.signals[name] = args

    def emit(self, name, *args):
        self.emitted.append((name, *args))

    def of(self, name):
        return [e[1:] for e in self.emitted if e[0] == name]


class FakeParams:
    def __init__(self):
        self.defs: dict = {}
        self.values: dict = {}

    def declare(self, definition):
        self.defs[(definition.category, definition.name)] = definition

    async def get(self, category, name, profile=None):
        if (category, name, profile) in self.values:
            return self.values[(category, name, profile)]
        return self.defs[(category, name)].default


class FakeProfiles:
    async def resolve(self, profile):
        return profile or "juliet"


class FakeConfig:
    def __init__(self, values):
        self.values = values

    def get(self, section, name):
        return self.values[(section, name)]


class FakeHost:
    def __init__(self, tmp_path=None, storage=None, config=None):
        values = {}
        if tmp_path is not None:
            values[("core", "data_dir")] = tmp_path
        values.update(config or {})
        self.config = FakeConfig(values)
        self.plugins: dict = {}
        self.hooks = Hooks()
        self.storage = storage or FakeStorage()
        self.bridge = FakeBridge()
        self.params = FakeParams()
        self.profiles = FakeProfiles()
        self.clients: dict = {}
        self.version = "0.1.0-test"
        self.presence = PresenceHandling(self)

    def get_client(self, profile):
        try:
            return self.clients[profile]
        except KeyError:
            raise errors.NotConnected(f"profile {profile!r} is not connected") from None


class ImmediateFactory:
    """Runs STREAM_CONNECTED bootstraps at once on the (already connected) stub stream."""

    def __init__(self, client):
        self.client = client

    def addBootstrap(self, event, fn):
        if event == xmlstream.STREAM_CONNECTED_EVENT:
            fn(self.client.xmlstream)

    def removeBootstrap(self, event, fn):
        pass


class FakeClient(wokkel_helpers.TestableStreamManager):
    def __init__(self, clock, jid=OWN, profile="juliet", features=()):
        super().__init__(reactor=clock)
        self.profile = profile
        self.jid = JID(jid)
        self.factory = ImmediateFactory(self)
        self.xmlstream.features = {f: domish.Element(f) for f in features}

    def is_connected(self):
        return True

    @property
    def output(self):
        return self.stub.output

    def receive(self, stanza):
        if isinstance(stanza, str):
            stanza = parseXml(stanza)
        self.stub.send(stanza)


def make(tmp_path, clock, plugins=(), storage=None, features=(), config=None):
    host = FakeHost(tmp_path, storage, config)
    for cls in plugins:
        plugin = cls(host)
        host.plugins[plugin.name] = plugin
    client = FakeClient(clock, features=features)
    for plugin in host.plugins.values():
        handler = plugin.get_handler(client)
        if handler is not None:
            handler.setHandlerParent(client)
    host.presence.attach(client)
    host.clients[client.profile] = client
    return host, client


def last_iq(client, iq_type="get"):
    iqs = sent_iqs(client, iq_type)
    assert iqs, f"no <iq type='{iq_type}'/> sent"
    return iqs[-1]


def presences(client):
    return [e for e in client.output if isinstance(e, domish.Element) and e.name == "presence"]


def roster_xml(ver=None, items=()):
    ver_attr = f" ver='{ver}'" if ver is not None else ""
    return f"<query xmlns='{NS_ROSTER}'{ver_attr}>{''.join(items)}</query>"


def item_xml(jid, name="", subscription="both", groups=(), ask=""):
    attrs = f"jid='{jid}' subscription='{subscription}'"
    if name:
        attrs += f" name='{name}'"
    if ask:
        attrs += f" ask='{ask}'"
    return f"<item {attrs}>{''.join(f'<group>{g}</group>' for g in groups)}</item>"


def push(client, item, ver=None, sender=None, iq_id="push1"):
    from_attr = f" from='{sender}'" if sender else ""
    client.receive(
        f"<iq xmlns='jabber:client' type='set' id='{iq_id}' to='{OWN}'{from_attr}>"
        f"{roster_xml(ver, [item])}</iq>"
    )


@pytest.fixture
def clock():
    return task.Clock()


# --- roster: versioning and the cache ------------------------------------------------------


def test_roster_versioning_cache_and_reconnection(tmp_path, clock):
    storage = FakeStorage()
    host, client = make(tmp_path, clock, storage=storage, features=[(NS_ROSTERVER, "ver")])
    d = run(host.presence.fetch_roster(client))
    request = last_iq(client)
    query = next(request.elements(NS_ROSTER, "query"))
    assert query.getAttribute("ver") == ""  # nothing cached: bootstrap versioning
    answer(
        client,
        request,
        roster_xml(
            "v1",
            [
                item_xml(ROMEO, "Romeo", groups=["Friends", "Verona"]),
                item_xml("nurse@capulet.lit", subscription="to"),
            ],
        ),
    )
    result_of(d)
    assert client.roster[ROMEO] == {
        "jid": ROMEO,
        "name": "Romeo",
        "subscription": "both",
        "ask": "",
        "approved": False,
        "groups": ["Friends", "Verona"],
    }
    assert {c[1] for c in host.bridge.of("ContactNew")} == {ROMEO, "nurse@capulet.lit"}
    cached = storage.kv[("juliet", "roster", "cache")]
    assert cached["ver"] == "v1" and len(cached["items"]) == 2

    # a push updates the roster, the version and the cache; we answer it
    push(client, item_xml("benvolio@montague.lit", "Ben", subscription="none"), ver="v2")
    assert client.output[-1]["type"] == "result" and client.output[-1]["id"] == "push1"
    assert "benvolio@montague.lit" in client.roster
    assert storage.kv[("juliet", "roster", "cache")]["ver"] == "v2"

    # the daemon restarts: the roster is there before the connection completes
    host2 = FakeHost(tmp_path, storage)
    offline = result_of(run(host2.presence.roster_get("juliet")))
    assert {c["jid"] for c in offline} == {ROMEO, "nurse@capulet.lit", "benvolio@montague.lit"}

    # reconnection: the cached version is sent, the server says "unchanged"
    client2 = FakeClient(clock, features=[(NS_ROSTERVER, "ver")])
    host2.presence.attach(client2)
    host2.clients["juliet"] = client2
    d = run(host2.presence.fetch_roster(client2))
    request = last_iq(client2)
    assert next(request.elements(NS_ROSTER, "query"))["ver"] == "v2"
    answer(client2, request)  # empty result: use the cache
    result_of(d)
    assert set(client2.roster) == {ROMEO, "nurse@capulet.lit", "benvolio@montague.lit"}
    assert host2.bridge.of("ContactNew") == []  # nothing changed: nothing signalled
    # then the server pushes what changed meanwhile
    push(client2, item_xml("nurse@capulet.lit", subscription="remove"), ver="v3")
    assert "nurse@capulet.lit" not in client2.roster
    assert host2.bridge.of("ContactDeleted") == [("juliet", "nurse@capulet.lit")]
    assert storage.kv[("juliet", "roster", "cache")]["ver"] == "v3"


def test_full_roster_after_version_mismatch_signals_only_differences(tmp_path, clock):
    storage = FakeStorage()
    storage.kv[("juliet", "roster", "cache")] = {
        "ver": "old",
        "items": [
            {"jid": ROMEO, "name": "Romeo", "subscription": "both", "ask": "", "groups": []},
            {"jid": "gone@x.lit", "name": "", "subscription": "to", "ask": "", "groups": []},
        ],
    }
    host, client = make(tmp_path, clock, storage=storage, features=[(NS_ROSTERVER, "ver")])
    d = run(host.presence.fetch_roster(client))
    request = last_iq(client)
    assert next(request.elements(NS_ROSTER, "query"))["ver"] == "old"
    answer(client, request, roster_xml("new", [item_xml(ROMEO, "Romeo"), item_xml("new@x.lit")]))
    result_of(d)
    assert [c[1] for c in host.bridge.of("ContactNew")] == ["new@x.lit"]
    assert host.bridge.of("ContactDeleted") == [("juliet", "gone@x.lit")]
    assert storage.kv[("juliet", "roster", "cache")]["ver"] == "new"


def test_roster_without_versioning_sends_no_ver(tmp_path, clock):
    storage = FakeStorage()
    storage.kv[("juliet", "roster", "cache")] = {"ver": "stale", "items": []}
    host, client = make(tmp_path, clock, storage=storage)
    d = run(host.presence.fetch_roster(client))
    request = last_iq(client)
    assert not next(request.elements(NS_ROSTER, "query")).hasAttribute("ver")
    answer(client, request, roster_xml(None, [item_xml(ROMEO)]))
    result_of(d)
    assert list(client.roster) == [ROMEO]
    assert storage.kv[("juliet", "roster", "cache")]["ver"] is None


@pytest.mark.parametrize(
    "sender",
    [
        "romeo@montague.lit",  # a contact
        "capulet.lit",  # even our server's domain is not our account
        f"{OWN}",  # RFC 6121 2.1.6: the bare JID only
        "juliet@evil.lit",
        "not a jid@@",
    ],
)
def test_roster_push_from_forged_sender_is_ignored(tmp_path, clock, sender, caplog):
    host, client = make(tmp_path, clock)
    client.roster_loaded = True
    before = len(client.output)
    with caplog.at_level(logging.WARNING):
        push(client, item_xml("mallory@evil.lit", "Trust me"), ver="x", sender=sender)
    assert "mallory@evil.lit" not in client.roster
    assert len(client.output) == before  # not even answered
    assert host.bridge.of("ContactNew") == []
    assert "roster push from" in caplog.text


def test_roster_push_from_own_bare_jid_any_case_is_accepted(tmp_path, clock):
    host, client = make(tmp_path, clock)
    push(client, item_xml(ROMEO, "Romeo"), sender="Juliet@Capulet.lit")
    assert ROMEO in client.roster


def test_roster_push_with_several_items_is_ignored(tmp_path, clock):
    host, client = make(tmp_path, clock)
    client.receive(
        f"<iq xmlns='jabber:client' type='set' id='p' to='{OWN}'>"
        f"{roster_xml(None, [item_xml(ROMEO), item_xml('b@x.lit')])}</iq>"
    )
    assert client.roster == {}
    assert client.output[-1]["type"] == "result"


# --- roster edition --------------------------------------------------------------------------


def test_roster_add_update_remove(tmp_path, clock):
    host, client = make(tmp_path, clock)
    add = host.bridge.methods["RosterAdd"]
    d = run(add("juliet", "Romeo@Montague.lit/orchard", " Romeo ", ["Friends", "Friends", "V"]))
    request = last_iq(client, "set")
    item = next(next(request.elements(NS_ROSTER, "query")).elements(NS_ROSTER, "item"))
    assert item["jid"] == ROMEO and item["name"] == "Romeo"
    assert [str(g) for g in item.elements(NS_ROSTER, "group")] == ["Friends", "V"]
    answer(client, request)
    result_of(d)
    # the server pushes the new item
    push(client, item_xml(ROMEO, "Romeo", subscription="none", groups=["Friends", "V"]))
    assert host.bridge.of("ContactNew")[-1][1] == ROMEO

    update = host.bridge.methods["RosterUpdate"]
    failure_of(run(update("juliet", "nobody@x.lit", "", [])), errors.NotFound)
    d = run(update("juliet", ROMEO, "", []))
    request = last_iq(client, "set")
    item = next(next(request.elements(NS_ROSTER, "query")).elements(NS_ROSTER, "item"))
    assert not item.hasAttribute("name") and not list(item.elements())
    answer(client, request)
    result_of(d)

    remove = host.bridge.methods["RosterRemove"]
    d = run(remove("juliet", ROMEO))
    request = last_iq(client, "set")
    item = next(next(request.elements(NS_ROSTER, "query")).elements(NS_ROSTER, "item"))
    assert item["subscription"] == "remove"
    answer(client, request, error="item-not-found")
    failure_of(d, errors.NotFound)


@pytest.mark.parametrize(
    "jid, name, groups",
    [
        ("", "", []),
        ("juliet@capulet.lit", "", []),  # ourselves
        ("bad@@jid", "", []),
        (ROMEO, "", [""]),
        (ROMEO, "", ["  "]),
        (ROMEO, "x" * 2000, []),
        (ROMEO, "", [f"g{i}" for i in range(200)]),
    ],
)
def test_roster_add_refuses_invalid_input(tmp_path, clock, jid, name, groups):
    host, client = make(tmp_path, clock)
    failure_of(
        run(host.bridge.methods["RosterAdd"]("juliet", jid, name, groups)), errors.InvalidArgument
    )
    assert sent_iqs(client, "set") == []


def test_roster_error_answer_is_named(tmp_path, clock):
    host, client = make(tmp_path, clock)
    d = run(host.presence.roster_set(client, ROMEO, "R", []))
    answer(client, last_iq(client, "set"), error="not-acceptable")
    err = failure_of(d, errors.InvalidArgument)
    assert err.details["condition"] == "not-acceptable"


def test_roster_request_timeout(tmp_path, clock):
    host, client = make(tmp_path, clock)
    d = run(host.presence.roster_set(client, ROMEO, "R", []))
    clock.advance(120)
    failure_of(d, errors.Timeout)


# --- subscriptions ------------------------------------------------------------------------------


def subscribe_from(client, jid=ROMEO, status="", nick=""):
    extra = f"<status>{status}</status>" if status else ""
    if nick:
        extra += f"<nick xmlns='http://jabber.org/protocol/nick'>{nick}</nick>"
    client.receive(
        f"<presence xmlns='jabber:client' type='subscribe' from='{jid}' to='{OWN}'>{extra}</presence>"
    )


def test_subscription_request_is_signalled_never_auto_accepted(tmp_path, clock):
    host, client = make(tmp_path, clock)
    subscribe_from(client, status="It's me, Romeo", nick="Romeo M.")
    assert host.bridge.of("SubscriptionEvent") == [
        ("juliet", ROMEO, "subscribe", {"status": "It's me, Romeo", "nick": "Romeo M."})
    ]
    assert presences(client) == []  # nothing answered by itself
    requests = result_of(run(host.bridge.methods["SubscriptionRequestsGet"]("juliet")))
    assert [r["jid"] for r in requests] == [ROMEO]
    # approve
    result_of(run(host.bridge.methods["SubscriptionSend"]("juliet", ROMEO, "subscribed")))
    sent = presences(client)[-1]
    assert sent["to"] == ROMEO and sent["type"] == "subscribed"
    assert result_of(run(host.bridge.methods["SubscriptionRequestsGet"]("juliet"))) == []


def test_subscription_deny_and_withdrawn_request(tmp_path, clock):
    host, client = make(tmp_path, clock)
    subscribe_from(client, "a@x.lit")
    subscribe_from(client, "b@x.lit")
    result_of(run(host.presence.subscription_send(client, "a@x.lit/res", "unsubscribed")))
    assert presences(client)[-1]["type"] == "unsubscribed"
    assert presences(client)[-1]["to"] == "a@x.lit"
    # b changes its mind
    client.receive(
        f"<presence xmlns='jabber:client' type='unsubscribe' from='b@x.lit' to='{OWN}'/>"
    )
    assert client.subscription_requests == {}
    assert host.bridge.of("SubscriptionEvent")[-1][1:3] == ("b@x.lit", "unsubscribe")


def test_subscription_answers_are_signalled(tmp_path, clock):
    host, client = make(tmp_path, clock)
    for ptype in ("subscribed", "unsubscribed"):
        client.receive(f"<presence xmlns='jabber:client' type='{ptype}' from='{ROMEO}/x'/>")
    assert [e[1:3] for e in host.bridge.of("SubscriptionEvent")] == [
        (ROMEO, "subscribed"),
        (ROMEO, "unsubscribed"),
    ]
    assert presences(client) == []


def test_pre_approval_only_when_the_server_supports_it(tmp_path, clock):
    host, client = make(tmp_path, clock)
    failure_of(run(host.presence.subscription_send(client, ROMEO, "subscribed")), errors.NotFound)
    assert presences(client) == []
    host, client = make(tmp_path, clock, features=[(NS_PREAPPROVAL, "sub")])
    result_of(run(host.presence.subscription_send(client, ROMEO, "subscribed")))
    assert presences(client)[-1]["type"] == "subscribed"


def test_subscribe_unsubscribe_and_invalid(tmp_path, clock):
    host, client = make(tmp_path, clock)
    send = host.bridge.methods["SubscriptionSend"]
    result_of(run(send("juliet", ROMEO, "subscribe")))
    result_of(run(send("juliet", ROMEO, "unsubscribe")))
    assert [p["type"] for p in presences(client)] == ["subscribe", "unsubscribe"]
    failure_of(run(send("juliet", ROMEO, "probe")), errors.InvalidArgument)
    failure_of(run(send("juliet", "juliet@capulet.lit", "subscribe")), errors.InvalidArgument)
    failure_of(run(send("juliet", "@@", "subscribe")), errors.InvalidArgument)


def test_auto_accept_parameter(tmp_path, clock):
    host, client = make(tmp_path, clock)
    host.params.values[("roster", "auto_accept_subscriptions", "juliet")] = "contacts"
    client.roster = {
        ROMEO: {
            "jid": ROMEO,
            "name": "",
            "subscription": "to",
            "ask": "",
            "approved": False,
            "groups": [],
        }
    }
    subscribe_from(client, ROMEO)
    subscribe_from(client, "stranger@x.lit")
    assert [(p["to"], p["type"]) for p in presences(client)] == [(ROMEO, "subscribed")]
    events = host.bridge.of("SubscriptionEvent")
    assert events[0] == ("juliet", ROMEO, "subscribe", {"auto_accepted": True})
    assert events[1] == ("juliet", "stranger@x.lit", "subscribe", {})
    host.params.values[("roster", "auto_accept_subscriptions", "juliet")] = "always"
    subscribe_from(client, "other@x.lit")
    assert presences(client)[-1]["to"] == "other@x.lit"


def test_subscription_request_flood_is_bounded(tmp_path, clock, monkeypatch):
    from sat.core import presence as presence_mod

    monkeypatch.setattr(presence_mod, "MAX_PENDING_REQUESTS", 5)
    host, client = make(tmp_path, clock)
    for i in range(10):
        subscribe_from(client, f"spam{i}@x.lit", status="x" * 5000)
    assert len(client.subscription_requests) == 5
    assert all(len(r["status"]) <= 2000 for r in client.subscription_requests.values())


# --- presence ----------------------------------------------------------------------------------


def available(client, jid, show="", status="", priority=None, extra=""):
    body = f"<show>{show}</show>" if show else ""
    body += f"<status>{status}</status>" if status else ""
    body += f"<priority>{priority}</priority>" if priority is not None else ""
    client.receive(
        f"<presence xmlns='jabber:client' from='{jid}' to='{OWN}'>{body}{extra}</presence>"
    )


def test_presence_per_resource_and_unavailable(tmp_path, clock):
    host, client = make(tmp_path, clock)
    available(client, f"{ROMEO}/orchard", "away", "in the orchard", 5)
    available(client, f"{ROMEO}/phone", "chat", priority=1)
    available(client, f"{ROMEO}/bad", "sleeping", priority="abc")  # invalid show and priority
    statuses = result_of(run(host.bridge.methods["PresenceGet"]("juliet", ROMEO)))
    assert statuses["entity"] == f"{ROMEO}/orchard" and statuses["show"] == "away"
    assert client.presences[f"{ROMEO}/bad"]["show"] == ""
    assert client.presences[f"{ROMEO}/orchard"]["resource"] == "orchard"
    assert client.presences[f"{ROMEO}/orchard"]["statuses"] == {"default": "in the orchard"}
    # one resource leaves
    client.receive(f"<presence xmlns='jabber:client' type='unavailable' from='{ROMEO}/phone'/>")
    assert f"{ROMEO}/phone" not in client.presences
    # unavailable from the bare JID: every resource is gone
    client.receive(
        f"<presence xmlns='jabber:client' type='unavailable' from='{ROMEO}'>"
        "<status>bye</status></presence>"
    )
    assert client.presences == {}
    gone = result_of(run(host.bridge.methods["PresenceGet"]("juliet", ROMEO)))
    assert gone["show"] == "unavailable" and gone["statuses"] == {"default": "bye"}
    shows = [(e[1], e[2]) for e in host.bridge.of("PresenceUpdate")]
    assert (f"{ROMEO}/orchard", "unavailable") in shows and (ROMEO, "unavailable") in shows


def test_own_resource_not_stored_error_and_probe(tmp_path, clock):
    host, client = make(tmp_path, clock)
    available(client, OWN)
    assert client.presences == {}
    available(client, f"{ROMEO}/x")
    client.receive(f"<presence xmlns='jabber:client' type='error' from='{ROMEO}/x'/>")
    assert client.presences == {}
    client.receive(f"<presence xmlns='jabber:client' type='probe' from='{ROMEO}/x'/>")
    client.receive("<presence xmlns='jabber:client' type='weird' from='a@b.c'/>")
    client.receive("<presence xmlns='jabber:client'/>")  # no sender
    assert host.bridge.of("SubscriptionEvent") == []


def test_presence_claimed_by_a_plugin_is_not_a_contact(tmp_path, clock):
    """A plugin observer running first (XEP-0045 for room occupants) marks a presence as
    its own: the core keeps no contact resource for it but still runs the hooks."""
    host, client = make(tmp_path, clock)
    hooked = []
    host.hooks.add("presence_received", lambda c, elt: hooked.append(elt["from"]))

    def claim(elt):
        if elt.getAttribute("from", "").startswith("room@conf.lit/"):
            elt.claimed_by = "XEP-0045"

    client.xmlstream.addObserver("/presence", claim, priority=10)
    available(client, "room@conf.lit/nick", "away")
    client.receive("<presence xmlns='jabber:client' type='unavailable' from='room@conf.lit/nick'/>")
    client.receive("<presence xmlns='jabber:client' type='unavailable' from='room@conf.lit/x'/>")
    assert client.presences == {} and client.last_unavailable == {}
    assert host.bridge.of("PresenceUpdate") == []
    assert hooked == ["room@conf.lit/nick"] * 2 + ["room@conf.lit/x"]
    gone = result_of(run(host.bridge.methods["PresenceGet"]("juliet", "room@conf.lit")))
    assert gone["show"] == "unavailable" and "statuses" not in gone
    # errors are never claimed away: handled as before
    available(client, f"{ROMEO}/x")
    client.receive(f"<presence xmlns='jabber:client' type='error' from='{ROMEO}/x'/>")
    assert client.presences == {}
    # other presences are untouched
    available(client, f"{ROMEO}/orchard")
    assert list(client.presences) == [f"{ROMEO}/orchard"]


def test_directed_presence_and_session_start(tmp_path, clock):
    host, client = make(tmp_path, clock)
    available(client, f"{ROMEO}/x")
    d = run(host.presence.session_started(client))
    # stale presences are dropped, the roster asked before the initial presence
    assert client.presences == {}
    assert presences(client) == []
    answer(client, last_iq(client), roster_xml(None, []))
    result_of(d)
    assert presences(client)[-1].getAttribute("to") is None and client.presence_sent
    directed = host.bridge.methods["PresenceDirectedSend"]
    result_of(run(directed("juliet", "room@conf.lit/nick", "", "away", {"default": "hi"})))
    sent = presences(client)[-1]
    assert sent["to"] == "room@conf.lit/nick" and str(next(sent.elements(None, "show"))) == "away"
    result_of(run(directed("juliet", "room@conf.lit/nick", "unavailable", "", {})))
    assert presences(client)[-1]["type"] == "unavailable"
    failure_of(run(directed("juliet", "x@y.z", "probe", "", {})), errors.InvalidArgument)


# --- XEP-0191 blocking ----------------------------------------------------------------------------


def disco_answer(client, features=(), identities=()):
    request = last_iq(client)
    assert next(request.elements(NS_DISCO_INFO, "query"), None) is not None
    body = "".join(f"<identity category='{c}' type='{t}'/>" for c, t in identities)
    body += "".join(f"<feature var='{f}'/>" for f in features)
    answer(client, request, f"<query xmlns='{NS_DISCO_INFO}'>{body}</query>")


def blocking_setup(tmp_path, clock, supported=True, items=()):
    host, client = make(
        tmp_path, clock, plugins=(xep_0030_disco.DiscoPlugin, xep_0191_blocking.BlockingPlugin)
    )
    plugin = host.plugins["XEP-0191"]
    d = run(plugin.profile_connected(client))
    disco_answer(client, [NS_BLOCKING] if supported else [])
    if supported:
        request = last_iq(client)
        assert next(request.elements(NS_BLOCKING, "blocklist"), None) is not None
        body = "".join(f"<item jid='{j}'/>" for j in items)
        answer(client, request, f"<blocklist xmlns='{NS_BLOCKING}'>{body}</blocklist>")
    result_of(d)
    return host, client, plugin


def blocking_push(client, command, jids, sender=None):
    from_attr = f" from='{sender}'" if sender else ""
    body = "".join(f"<item jid='{j}'/>" for j in jids)
    client.receive(
        f"<iq xmlns='jabber:client' type='set' id='b1' to='{OWN}'{from_attr}>"
        f"<{command} xmlns='{NS_BLOCKING}'>{body}</{command}></iq>"
    )


def test_blocking_list_block_unblock_and_pushes(tmp_path, clock):
    host, client, plugin = blocking_setup(tmp_path, clock, items=["spam.lit", "Troll@x.lit/r"])
    blocklist = host.bridge.methods["BlockingList"]
    assert result_of(run(blocklist("juliet"))) == ["spam.lit", "troll@x.lit/r"]

    d = run(host.bridge.methods["Block"]("juliet", ["mallory@evil.lit", "Mallory@evil.lit"]))
    request = last_iq(client, "set")
    block = next(request.elements(NS_BLOCKING, "block"))
    assert [i["jid"] for i in block.elements(NS_BLOCKING, "item")] == ["mallory@evil.lit"]
    answer(client, request)
    result_of(d)
    blocking_push(client, "block", ["mallory@evil.lit"])
    assert client.output[-1]["type"] == "result"
    assert "mallory@evil.lit" in result_of(run(blocklist("juliet")))
    assert host.bridge.of("BlockingChanged")[-1] == ("juliet", ["mallory@evil.lit"], [])

    # a push from someone else is ignored
    blocking_push(client, "unblock", [], sender="mallory@evil.lit")
    assert "mallory@evil.lit" in result_of(run(blocklist("juliet")))

    blocking_push(client, "unblock", ["spam.lit"], sender="juliet@capulet.lit")
    assert host.bridge.of("BlockingChanged")[-1] == ("juliet", [], ["spam.lit"])
    blocking_push(client, "unblock", [])  # everybody
    assert result_of(run(blocklist("juliet"))) == []
    assert sorted(host.bridge.of("BlockingChanged")[-1][2]) == [
        "mallory@evil.lit",
        "troll@x.lit/r",
    ]

    failure_of(run(host.bridge.methods["Unblock"]("juliet", [])), errors.InvalidArgument)
    failure_of(run(host.bridge.methods["Block"]("juliet", ["@@bad"])), errors.InvalidArgument)
    failure_of(
        run(host.bridge.methods["Block"]("juliet", ["juliet@capulet.lit"])), errors.InvalidArgument
    )
    d = run(host.bridge.methods["BlockingClear"]("juliet"))
    unblock = next(last_iq(client, "set").elements(NS_BLOCKING, "unblock"))
    assert list(unblock.elements()) == []
    answer(client, last_iq(client, "set"))
    result_of(d)


def test_blocking_unsupported_server(tmp_path, clock):
    host, client, plugin = blocking_setup(tmp_path, clock, supported=False)
    failure_of(run(host.bridge.methods["BlockingList"]("juliet")), errors.NotFound)
    failure_of(run(host.bridge.methods["Block"]("juliet", ["a@b.c"])), errors.NotFound)
    assert sent_iqs(client, "set") == []


# --- XEP-0054 vCards ---------------------------------------------------------------------------------

VCARD_XML = f"""
<vCard xmlns='{NS_VCARD}'>
  <FN>Peter Saint-Andre</FN>
  <N><FAMILY>Saint-Andre</FAMILY><GIVEN>Peter</GIVEN><MIDDLE/></N>
  <NICKNAME>stpeter</NICKNAME>
  <URL>http://www.xmpp.org/xsf/people/stpeter.shtml</URL>
  <BDAY>1966-08-06</BDAY>
  <ORG><ORGNAME>XMPP Standards Foundation</ORGNAME><ORGUNIT/></ORG>
  <TITLE>Executive Director</TITLE>
  <ROLE>Patron Saint</ROLE>
  <TEL><WORK/><VOICE/><NUMBER>303-308-3282</NUMBER></TEL>
  <ADR><WORK/><STREET>Suite 600</STREET></ADR>
  <EMAIL><INTERNET/><PREF/><USERID>stpeter@jabber.org</USERID></EMAIL>
  <EMAIL><INTERNET/><USERID>peter@example.org</USERID></EMAIL>
  <JABBERID>stpeter@jabber.org</JABBERID>
  <DESC>More information about me is located on my personal website.</DESC>
  <NOTE>a note</NOTE>
  {{photo}}
</vCard>"""


def vcard_with_photo(data=None, mime="image/png"):
    photo = ""
    if data is not None:
        photo = (
            f"<PHOTO><TYPE>{mime}</TYPE><BINVAL>{base64.b64encode(data).decode()}</BINVAL></PHOTO>"
        )
    return VCARD_XML.replace("{photo}", photo)


def test_parse_vcard_example():
    fields = xep_0054_vcard.parse_vcard(parseXml(vcard_with_photo(b"img")))
    assert fields == {
        "FN": "Peter Saint-Andre",
        "FAMILY": "Saint-Andre",
        "GIVEN": "Peter",
        "NICKNAME": "stpeter",
        "URL": "http://www.xmpp.org/xsf/people/stpeter.shtml",
        "BDAY": "1966-08-06",
        "ORG": "XMPP Standards Foundation",
        "TITLE": "Executive Director",
        "ROLE": "Patron Saint",
        "TEL": ["303-308-3282"],
        "EMAIL": ["stpeter@jabber.org", "peter@example.org"],
        "JABBERID": "stpeter@jabber.org",
        "DESC": "More information about me is located on my personal website.",
        "NOTE": "a note",
        "PHOTO_TYPE": "image/png",
        "PHOTO_HASH": hashlib.sha1(b"img").hexdigest(),
    }


def vcard_setup(tmp_path, clock, **kwargs):
    return make(
        tmp_path,
        clock,
        plugins=(xep_0030_disco.DiscoPlugin, xep_0054_vcard.VCardPlugin),
        **kwargs,
    )


def test_vcard_get_is_cached_and_offline(tmp_path, clock):
    storage = FakeStorage()
    host, client = vcard_setup(tmp_path, clock, storage=storage)
    get = host.bridge.methods["VCardGet"]
    d = run(get("juliet", ROMEO))
    request = last_iq(client)
    assert request["to"] == ROMEO
    answer(client, request, vcard_with_photo())
    assert result_of(d)["NICKNAME"] == "stpeter"
    count = len(sent_iqs(client))
    assert result_of(run(get("juliet", ROMEO)))["FN"] == "Peter Saint-Andre"
    assert len(sent_iqs(client)) == count  # from the cache
    # a new photo announced: the cached copy is stale, asked again when connected...
    result_of(run(host.plugins["XEP-0054"].invalidate(client, ROMEO)))
    d = run(get("juliet", ROMEO))
    answer(client, last_iq(client), vcard_with_photo().replace("stpeter<", "peter<"))
    assert result_of(d)["NICKNAME"] == "peter"
    assert len(sent_iqs(client)) == count + 1
    # offline: the cache still answers (even a stale one)
    result_of(run(host.plugins["XEP-0054"].invalidate(client, ROMEO)))
    del host.clients["juliet"]
    assert result_of(run(get("juliet", ROMEO)))["FN"] == "Peter Saint-Andre"
    failure_of(run(get("juliet", "unknown@x.lit")), errors.NotConnected)


def test_vcard_get_none(tmp_path, clock):
    host, client = vcard_setup(tmp_path, clock)
    d = run(host.plugins["XEP-0054"].get(client, ROMEO))
    answer(client, last_iq(client), error="item-not-found")
    assert result_of(d) == {}


def test_vcard_set_keeps_photo_and_other_fields(tmp_path, clock):
    host, client = vcard_setup(tmp_path, clock)
    d = run(
        host.bridge.methods["VCardSet"](
            "juliet", {"NICKNAME": "Jules", "EMAIL": ["j@capulet.lit"], "NOTE": "", "GIVEN": "J"}
        )
    )
    request = last_iq(client)
    assert request["to"] == "juliet@capulet.lit"
    answer(client, request, vcard_with_photo(b"photo bytes"))
    update = last_iq(client, "set")
    vcard = next(update.elements(NS_VCARD, "vCard"))
    answer(client, update)
    result_of(d)
    fields = xep_0054_vcard.parse_vcard(vcard)
    assert fields["NICKNAME"] == "Jules" and fields["EMAIL"] == ["j@capulet.lit"]
    assert "NOTE" not in fields
    assert fields["GIVEN"] == "J" and fields["FAMILY"] == "Saint-Andre"
    assert fields["PHOTO_HASH"] == hashlib.sha1(b"photo bytes").hexdigest()
    assert fields["FN"] == "Peter Saint-Andre"
    assert next(vcard.elements(NS_VCARD, "ADR"), None) is not None  # unknown to us: kept


@pytest.mark.parametrize(
    "fields",
    [{"PHOTO_HASH": "x"}, {"UNKNOWN": "x"}, {"FN": 3}, {"EMAIL": [1]}, {"NOTE": "x" * 20_000}],
)
def test_vcard_set_refuses_bad_fields(tmp_path, clock, fields):
    host, client = vcard_setup(tmp_path, clock)
    failure_of(run(host.bridge.methods["VCardSet"]("juliet", fields)), errors.InvalidArgument)
    assert sent_iqs(client) == []


# --- avatars -------------------------------------------------------------------------------------


def png(width=2, height=3, seed=0):
    def chunk(tag, data):
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    raw = b"".join(b"\x00" + bytes([seed % 256, 0, 0]) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def sha1(data):
    return hashlib.sha1(data).hexdigest()


def test_image_info():
    assert image_info(png(64, 32)) == ("image/png", 64, 32)
    jpeg = (
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        b"\xff\xc0\x00\x11\x08\x00\x30\x00\x40\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    )
    assert image_info(jpeg) == ("image/jpeg", 64, 48)
    assert image_info(b"GIF89a\x10\x00\x20\x00" + b"\x00" * 10) == ("image/gif", 16, 32)
    with pytest.raises(errors.InvalidArgument):
        image_info(b"<svg xmlns='http://www.w3.org/2000/svg'/>")


@pytest.mark.parametrize(
    "bad_id",
    [
        "../../../../etc/passwd",
        "..",
        "/etc/passwd",
        "a" * 39 + "/",
        "a" * 41,
        "A" * 40,  # ids are lowercase once normalised; the cache takes nothing else
        "g" * 40,
        "a" * 40 + "\n",
        "",
    ],
)
def test_cache_refuses_path_traversal_ids(tmp_path, bad_id):
    cache = AvatarCache(tmp_path / "avatars", 1000)
    with pytest.raises(errors.InvalidArgument):
        cache.path_for(bad_id)
    with pytest.raises(errors.InvalidArgument):
        cache.store(bad_id, b"x")
    assert not (tmp_path / "avatars").exists() or not any((tmp_path / "avatars").iterdir())
    assert normalise_id(bad_id) in (None, bad_id.strip().lower())


def test_cache_checks_hash_and_size(tmp_path):
    cache = AvatarCache(tmp_path / "avatars", 100)
    with pytest.raises(errors.InvalidArgument, match="does not match"):
        cache.store(sha1(b"other"), b"data")
    with pytest.raises(errors.InvalidArgument, match="bigger"):
        cache.store(sha1(b"x" * 101), b"x" * 101)
    assert not (tmp_path / "avatars").exists() or not any((tmp_path / "avatars").iterdir())
    path = cache.store(sha1(b"data"), b"data")
    assert path == tmp_path / "avatars" / sha1(b"data") and path.read_bytes() == b"data"


def avatar_setup(tmp_path, clock, max_size=None, **kwargs):
    config = {("xep_0084", "max_size"): max_size} if max_size else None
    host, client = make(
        tmp_path,
        clock,
        plugins=(
            xep_0030_disco.DiscoPlugin,
            xep_0054_vcard.VCardPlugin,
            xep_0084_avatars.AvatarPlugin,
        ),
        config=config,
        **kwargs,
    )
    return host, client, host.plugins["XEP-0084"]


def metadata_event(client, publisher, info_attrs=None, item_id=None):
    info = ""
    if info_attrs is not None:
        attrs = " ".join(f"{k}='{v}'" for k, v in info_attrs.items())
        info = f"<info {attrs}/>"
    item_id = item_id or (info_attrs or {}).get("id", "current")
    client.receive(
        f"<message xmlns='jabber:client' from='{publisher}' to='{OWN}'>"
        "<event xmlns='http://jabber.org/protocol/pubsub#event'>"
        f"<items node='{NS_AVATAR_METADATA}'><item id='{item_id}'>"
        f"<metadata xmlns='{NS_AVATAR_METADATA}'>{info}</metadata>"
        "</item></items></event></message>"
    )


def data_answer(client, request, avatar_id, data):
    answer(
        client,
        request,
        f"<pubsub xmlns='{NS_PUBSUB}'><items node='{NS_AVATAR_DATA}'><item id='{avatar_id}'>"
        f"<data xmlns='{NS_AVATAR_DATA}'>{base64.b64encode(data).decode()}</data>"
        "</item></items></pubsub>",
    )


def test_avatar_disco_advertises_notify(tmp_path, clock):
    host, client, plugin = avatar_setup(tmp_path, clock)
    info = result_of(host.plugins["XEP-0030"].get_own_info(client))
    assert f"{NS_AVATAR_METADATA}+notify" in info.features


def test_pep_metadata_notification_fetches_checks_and_caches(tmp_path, clock):
    host, client, plugin = avatar_setup(tmp_path, clock)
    image = png(seed=1)
    avatar_id = sha1(image)
    metadata_event(client, ROMEO, {"id": avatar_id, "bytes": len(image), "type": "image/png"})
    request = last_iq(client)
    assert request["to"] == ROMEO
    items = next(next(request.elements(NS_PUBSUB, "pubsub")).elements(NS_PUBSUB, "items"))
    assert items["node"] == NS_AVATAR_DATA
    assert next(items.elements(NS_PUBSUB, "item"))["id"] == avatar_id
    data_answer(client, request, avatar_id, image)
    path = tmp_path / "avatars" / avatar_id
    assert path.read_bytes() == image
    assert host.bridge.of("AvatarUpdated") == [("juliet", ROMEO, str(path))]
    assert result_of(run(host.bridge.methods["AvatarGet"]("juliet", ROMEO))) == str(path)
    assert result_of(run(host.bridge.methods["AvatarGet"]("juliet", f"{ROMEO}/r"))) == str(path)
    # the same id again: no download
    count = len(sent_iqs(client))
    metadata_event(client, ROMEO, {"id": avatar_id, "bytes": len(image), "type": "image/png"})
    assert len(sent_iqs(client)) == count
    # the avatar is disabled
    metadata_event(client, ROMEO, None, item_id="current")
    assert host.bridge.of("AvatarUpdated")[-1] == ("juliet", ROMEO, "")
    assert result_of(run(host.bridge.methods["AvatarGet"]("juliet", ROMEO))) == ""


def test_pep_avatar_hash_mismatch_is_refused(tmp_path, clock, caplog):
    host, client, plugin = avatar_setup(tmp_path, clock)
    announced = sha1(png(seed=2))
    with caplog.at_level(logging.WARNING):
        metadata_event(client, ROMEO, {"id": announced, "bytes": 80, "type": "image/png"})
        data_answer(client, last_iq(client), announced, png(seed=3))  # other bytes
    assert "does not match" in caplog.text
    assert not (tmp_path / "avatars" / announced).exists()
    assert host.bridge.of("AvatarUpdated") == []
    assert result_of(run(host.bridge.methods["AvatarGet"]("juliet", ROMEO))) == ""
    # announced again: not downloaded again
    count = len(sent_iqs(client))
    metadata_event(client, ROMEO, {"id": announced, "bytes": 80, "type": "image/png"})
    assert len(sent_iqs(client)) == count


def test_oversized_avatar_is_refused(tmp_path, clock, caplog):
    host, client, plugin = avatar_setup(tmp_path, clock, max_size=2000)
    big = png(width=200, height=200, seed=5) + b"\x00" * 3000
    avatar_id = sha1(big)
    with caplog.at_level(logging.WARNING):
        # announced as too big: not even asked
        metadata_event(client, ROMEO, {"id": avatar_id, "bytes": len(big), "type": "image/png"})
        assert sent_iqs(client) == []
        # announced as small, but the data is big
        metadata_event(client, "b@x.lit", {"id": avatar_id, "bytes": 100, "type": "image/png"})
        data_answer(client, last_iq(client), avatar_id, big)
    assert not (tmp_path / "avatars" / avatar_id).exists()
    assert host.bridge.of("AvatarUpdated") == []
    assert "refused" in caplog.text


@pytest.mark.parametrize(
    "bad_id", ["../../../tmp/evil", "..%2f..%2fetc", "/etc/passwd", "x" * 40, "a" * 40 + "/.."]
)
def test_path_traversal_ids_from_contacts_are_refused(tmp_path, clock, bad_id, caplog):
    host, client, plugin = avatar_setup(tmp_path, clock)
    with caplog.at_level(logging.WARNING):
        metadata_event(client, ROMEO, {"id": bad_id, "bytes": 10, "type": "image/png"})
        available(
            client, f"{ROMEO}/r", extra=f"<x xmlns='{NS_VCARD_UPDATE}'><photo>{bad_id}</photo></x>"
        )
    assert sent_iqs(client) == []
    assert not (tmp_path / "avatars").exists()
    assert "invalid" in caplog.text


def test_vcard_based_avatar_from_presence_hash(tmp_path, clock):
    host, client, plugin = avatar_setup(tmp_path, clock)
    image = png(seed=7)
    avatar_id = sha1(image)
    available(
        client,
        f"{ROMEO}/orchard",
        extra=f"<x xmlns='{NS_VCARD_UPDATE}'><photo>{avatar_id.upper()}</photo></x>",
    )
    request = last_iq(client)
    assert request["to"] == ROMEO and next(request.elements(NS_VCARD, "vCard"), None) is not None
    answer(client, request, vcard_with_photo(image))
    assert (tmp_path / "avatars" / avatar_id).read_bytes() == image
    assert host.bridge.of("AvatarUpdated")[-1][1] == ROMEO
    # a presence without <photo/> means "not ready": nothing changes
    available(client, f"{ROMEO}/orchard", extra=f"<x xmlns='{NS_VCARD_UPDATE}'/>")
    assert result_of(run(plugin.get_path("juliet", ROMEO)))
    # an empty <photo/>: no avatar any more
    available(client, f"{ROMEO}/orchard", extra=f"<x xmlns='{NS_VCARD_UPDATE}'><photo/></x>")
    assert result_of(run(plugin.get_path("juliet", ROMEO))) == ""


def test_vcard_photo_not_matching_presence_hash_is_refused(tmp_path, clock, caplog):
    host, client, plugin = avatar_setup(tmp_path, clock)
    announced = sha1(b"what was announced")
    with caplog.at_level(logging.WARNING):
        available(
            client,
            f"{ROMEO}/x",
            extra=f"<x xmlns='{NS_VCARD_UPDATE}'><photo>{announced}</photo></x>",
        )
        answer(client, last_iq(client), vcard_with_photo(png(seed=9)))
    assert "does not match" in caplog.text
    assert not (tmp_path / "avatars").exists() or not any((tmp_path / "avatars").iterdir())
    assert host.bridge.of("AvatarUpdated") == []


def test_hash_flood_gives_one_download_per_contact_at_a_time(tmp_path, clock):
    host, client, plugin = avatar_setup(tmp_path, clock)
    images = [png(seed=20 + i) for i in range(6)]
    for image in images:
        available(
            client,
            f"{ROMEO}/x",
            extra=f"<x xmlns='{NS_VCARD_UPDATE}'><photo>{sha1(image)}</photo></x>",
        )
    assert len(sent_iqs(client)) == 1  # the first one only
    answer(client, last_iq(client), vcard_with_photo(images[0]))
    # then only the latest announce is fetched
    assert len(sent_iqs(client)) == 2
    answer(client, last_iq(client), vcard_with_photo(images[-1]))
    assert len(sent_iqs(client)) == 2
    assert result_of(run(plugin.get_path("juliet", ROMEO))).endswith(sha1(images[-1]))


def test_room_occupant_avatar_keyed_by_full_jid(tmp_path, clock):
    host, client, plugin = avatar_setup(tmp_path, clock)
    image = png(seed=11)
    available(
        client,
        "room@conference.lit/romeo",
        extra=(
            "<x xmlns='http://jabber.org/protocol/muc#user'><item role='participant'/></x>"
            f"<x xmlns='{NS_VCARD_UPDATE}'><photo>{sha1(image)}</photo></x>"
        ),
    )
    request = last_iq(client)
    assert request["to"] == "room@conference.lit/romeo"
    answer(client, request, vcard_with_photo(image), sender="room@conference.lit/romeo")
    assert host.bridge.of("AvatarUpdated")[-1][1] == "room@conference.lit/romeo"
    assert result_of(run(plugin.get_path("juliet", "room@conference.lit"))) == ""


def own_discovery(client, pep=True, conversion=True):
    identities = [("account", "registered")] + ([("pubsub", "pep")] if pep else [])
    disco_answer(client, [NS_CONVERSION] if conversion else [], identities)


def test_avatar_set_with_pep_and_server_conversion(tmp_path, clock):
    host, client, plugin = avatar_setup(tmp_path, clock)
    run(plugin.profile_connected(client))
    own_discovery(client, pep=True, conversion=True)
    image = png(48, 48, seed=13)
    file_path = tmp_path / "me.png"
    file_path.write_bytes(image)
    d = run(host.bridge.methods["AvatarSet"]("juliet", str(file_path)))
    publish = next(next(last_iq(client, "set").elements(NS_PUBSUB, "pubsub")).elements())
    assert publish["node"] == NS_AVATAR_DATA
    item = next(publish.elements())
    assert item["id"] == sha1(image)
    assert base64.b64decode(str(next(item.elements()))) == image
    answer(client, last_iq(client, "set"))
    publish = next(next(last_iq(client, "set").elements(NS_PUBSUB, "pubsub")).elements())
    assert publish["node"] == NS_AVATAR_METADATA
    info = next(next(next(publish.elements()).elements()).elements())
    assert (info["id"], info["bytes"], info["type"], info["width"], info["height"]) == (
        sha1(image),
        str(len(image)),
        "image/png",
        "48",
        "48",
    )
    answer(client, last_iq(client, "set"))
    assert result_of(d) == sha1(image)
    # no vCard request: the server converts; our presence carries no x:update (server adds it)
    assert not [i for i in sent_iqs(client, "set") if next(i.elements(NS_VCARD, "vCard"), None)]
    sent = presences(client)[-1]
    assert next(sent.elements(NS_VCARD_UPDATE, "x"), None) is None
    assert result_of(run(plugin.get_path("juliet", "juliet@capulet.lit"))) == str(
        tmp_path / "avatars" / sha1(image)
    )


def test_avatar_set_without_conversion_uses_vcard_and_presence(tmp_path, clock):
    host, client, plugin = avatar_setup(tmp_path, clock)
    run(plugin.profile_connected(client))
    own_discovery(client, pep=False, conversion=False)
    # XEP-0153: our own vCard is read to learn our hash
    answer(client, last_iq(client), f"<vCard xmlns='{NS_VCARD}'><FN>Juliet</FN></vCard>")
    image = png(seed=15)
    file_path = tmp_path / "me.png"
    file_path.write_bytes(image)
    d = run(plugin.set_avatar(client, str(file_path)))
    answer(client, last_iq(client), f"<vCard xmlns='{NS_VCARD}'><FN>Juliet</FN></vCard>")
    vcard = next(last_iq(client, "set").elements(NS_VCARD, "vCard"))
    fields = xep_0054_vcard.parse_vcard(vcard)
    assert fields["FN"] == "Juliet" and fields["PHOTO_HASH"] == sha1(image)
    answer(client, last_iq(client, "set"))
    result_of(d)
    photo = next(next(presences(client)[-1].elements(NS_VCARD_UPDATE, "x")).elements())
    assert str(photo) == sha1(image)


def test_presence_not_ready_before_own_hash_known(tmp_path, clock):
    host, client, plugin = avatar_setup(tmp_path, clock)
    run(plugin.profile_connected(client))
    result_of(run(host.presence.send_presence(client)))
    update = next(presences(client)[-1].elements(NS_VCARD_UPDATE, "x"))
    assert list(update.elements()) == []  # not ready yet


@pytest.mark.parametrize("content", [b"just text", b"", b"\x89PNG\r\n\x1a\nbroken"])
def test_avatar_set_refuses_non_images(tmp_path, clock, content):
    host, client, plugin = avatar_setup(tmp_path, clock)
    file_path = tmp_path / "not-an-image"
    file_path.write_bytes(content)
    failure_of(run(plugin.set_avatar(client, str(file_path))), errors.InvalidArgument)
    failure_of(run(plugin.set_avatar(client, str(tmp_path / "missing.png"))), errors.NotFound)
    assert sent_iqs(client, "set") == []


def test_avatar_set_with_pep_requires_png(tmp_path, clock):
    host, client, plugin = avatar_setup(tmp_path, clock)
    run(plugin.profile_connected(client))
    own_discovery(client, pep=True, conversion=True)
    file_path = tmp_path / "me.gif"
    file_path.write_bytes(b"GIF89a\x10\x00\x20\x00" + b"\x00" * 10)
    failure_of(run(plugin.set_avatar(client, str(file_path))), errors.InvalidArgument)
    assert sent_iqs(client, "set") == []


def test_avatar_set_refuses_big_files(tmp_path, clock):
    host, client, plugin = avatar_setup(tmp_path, clock, max_size=2000)
    file_path = tmp_path / "big.png"
    file_path.write_bytes(png() + b"\x00" * 3000)
    failure_of(run(plugin.set_avatar(client, str(file_path))), errors.InvalidArgument)
    assert sent_iqs(client, "set") == []
