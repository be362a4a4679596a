"""XEP-0030 (service discovery) and XEP-0115 (entity capabilities) plugins.

Everything runs on an in-memory stream (wokkel's ``XmlStreamStub``) with a
``twisted.internet.task.Clock``: no reactor needed, no network.
"""

from __future__ import annotations

from sat.core import wokkel_compat  # noqa: F401  (before any wokkel import)

# isort: split

import pytest
from twisted.internet import defer, task
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import data_form
from wokkel.generic import parseXml
from wokkel.test import helpers as wokkel_helpers

from sat.core import errors
from sat.core.hooks import Hooks
from sat.plugins import xep_0030_disco, xep_0115_caps
from sat.plugins.xep_0115_caps import (
    CAPS_NODE,
    NS_CAPS,
    IllFormed,
    caps_input_from_element,
    compute_ver,
    verification_string,
)

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

# --- XEP-0115 section 5.2 (simple) and 5.3 (complex) examples -----------------------

SIMPLE_VER = "QgayPKawpkPSDYmwT/WM94uAlu0="
SIMPLE_FEATURES = [
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/disco#items",
    "http://jabber.org/protocol/muc",
    "http://jabber.org/protocol/caps",
]
SIMPLE_QUERY = f"""
<query xmlns='{NS_DISCO_INFO}' node='http://code.google.com/p/exodus#{SIMPLE_VER}'>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
</query>"""

COMPLEX_VER = "q07IKJEyjvHSyhy//CH0CxmKi8w="
COMPLEX_QUERY = f"""
<query xmlns='{NS_DISCO_INFO}' node='http://psi-im.org#{COMPLEX_VER}'>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='&#936; 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'>
      <value>urn:xmpp:dataforms:softwareinfo</value>
    </field>
    <field var='ip_version'>
      <value>ipv4</value>
      <value>ipv6</value>
    </field>
    <field var='os'>
      <value>Mac</value>
    </field>
    <field var='os_version'>
      <value>10.5.1</value>
    </field>
    <field var='software'>
      <value>Psi</value>
    </field>
    <field var='software_version'>
      <value>0.11</value>
    </field>
  </x>
</query>"""
COMPLEX_S = (
    "client/pc/el/\u03a8 0.11<client/pc/en/Psi 0.11<"
    "http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<"
    "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
    "urn:xmpp:dataforms:softwareinfo<"
    "ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<software_version<0.11<"
)


# --- fakes -----------------------------------------------------------------------------


class FakeStorage:
    def __init__(self):
        self.data: dict[str, str] = {}
        self.gets: list[str] = []

    async def disco_cache_get(self, ver_hash):
        self.gets.append(ver_hash)
        return self.data.get(ver_hash)

    async def disco_cache_set(self, ver_hash, xml_text):
        self.data[ver_hash] = xml_text


class FakeBridge:
    def __init__(self):
        self.methods: dict[str, dict] = {}

    def add_method(self, name, handler, args=(), out=None, doc="", interface="plugin"):
        assert name not in self.methods
        self.methods[name] = {
            "handler": handler,
            "args": list(args),
            "out": out,
            "doc": doc,
            "interface": interface,
        }


class FakeConfig:
    def __init__(self, values=None):
        self.values = values or {}

    def get(self, section, name):
        return self.values[(section, name)]


class FakeHost:
    def __init__(self, config=None, bridge=None):
        self.plugins: dict = {}
        self.hooks = Hooks()
        self.storage = FakeStorage()
        self.bridge = bridge if bridge is not None else FakeBridge()
        self.version = "0.1.0-test"
        self.config = FakeConfig(config)
        self.clients: dict = {}

    def get_client(self, profile):
        try:
            return self.clients[profile]
        except KeyError:
            raise errors.NotConnected(f"profile {profile!r} is not connected") from None


class FakeClient(wokkel_helpers.TestableStreamManager):
    def __init__(self, clock, jid="juliet@capulet.lit/chamber", profile="juliet"):
        super().__init__(reactor=clock)
        self.profile = profile
        self.jid = JID(jid)

    @property
    def output(self):
        return self.stub.output

    def receive(self, stanza):
        if isinstance(stanza, str):
            stanza = parseXml(stanza)
        self.stub.send(stanza)

    def drop(self):
        self._disconnected(Failure(ConnectionLost("test")))

    def reconnect(self):
        self.stub = wokkel_helpers.XmlStreamStub()
        self._connected(self.stub.xmlstream)
        self._authd(self.stub.xmlstream)


def load(host, *classes):
    plugins = []
    for cls in classes:
        plugin = cls(host)
        host.plugins[plugin.name] = plugin
        plugins.append(plugin)
    return plugins


def connect(host, clock, **kwargs):
    client = FakeClient(clock, **kwargs)
    for plugin in host.plugins.values():
        handler = plugin.get_handler(client)
        if handler is not None:
            handler.setHandlerParent(client)
    host.clients[client.profile] = client
    return client


def result_of(d):
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


def failure_of(d, *types):
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    result = results[0]
    assert isinstance(result, Failure), f"expected a failure, got {result!r}"
    assert result.check(*types), result.getTraceback()
    return result.value


def run(coro):
    return defer.ensureDeferred(coro)


def sent_iqs(client, iq_type="get"):
    return [
        e
        for e in client.output
        if isinstance(e, domish.Element) and e.name == "iq" and e.getAttribute("type") == iq_type
    ]


def answer(client, request, payload=None, error=None, sender=None):
    """Answer ``request`` (a sent <iq/>) with a result (payload XML) or an error condition."""
    to = sender or request.getAttribute("to")
    iq_type = "error" if error else "result"
    attrs = f"type='{iq_type}' id='{request['id']}' to='{client.jid.full()}'"
    if to:
        attrs += f" from='{to}'"
    if error:
        body = (
            f"<error type='cancel'><{error} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        )
    else:
        body = payload or ""
    client.receive(f"<iq xmlns='jabber:client' {attrs}>{body}</iq>")


def query_of(iq, ns):
    return next(iq.elements(ns, "query"), None)


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def host():
    h = FakeHost()
    load(h, xep_0030_disco.DiscoPlugin, xep_0115_caps.CapsPlugin)
    return h


@pytest.fixture
def client(host, clock):
    return connect(host, clock)


@pytest.fixture
def disco(host):
    return host.plugins["XEP-0030"]


@pytest.fixture
def caps(host):
    return host.plugins["XEP-0115"]


# --- compute_ver -------------------------------------------------------------------------


def test_ver_simple_example_from_tuples():
    identities = [("client", "pc", "", "Exodus 0.9.1")]
    assert compute_ver(identities, SIMPLE_FEATURES) == SIMPLE_VER
    # 3-tuples are (category, type, name)
    assert compute_ver([("client", "pc", "Exodus 0.9.1")], SIMPLE_FEATURES) == SIMPLE_VER


def test_ver_simple_example_from_element_and_disco_info():
    query = parseXml(SIMPLE_QUERY)
    assert compute_ver(*caps_input_from_element(query)) == SIMPLE_VER
    info = xep_0030_disco.parse_info(query)
    assert compute_ver(info) == SIMPLE_VER
    # wokkel's own DiscoInfo parser works too when there is no xml:lang
    from wokkel.disco import DiscoInfo

    assert compute_ver(DiscoInfo.fromElement(parseXml(SIMPLE_QUERY))) == SIMPLE_VER


def test_ver_complex_example_from_element():
    query = parseXml(COMPLEX_QUERY)
    identities, features, forms = caps_input_from_element(query)
    assert verification_string(identities, features, forms) == COMPLEX_S
    assert compute_ver(identities, features, forms) == COMPLEX_VER
    assert compute_ver(identities, features, forms, algo="SHA-1") == COMPLEX_VER
    assert compute_ver(identities, features, forms, algo="sha-256") != COMPLEX_VER


def test_ver_complex_example_from_disco_info_keeps_langs():
    info = xep_0030_disco.parse_info(parseXml(COMPLEX_QUERY))
    assert verification_string(info) == COMPLEX_S
    assert compute_ver(info) == COMPLEX_VER


def test_ver_complex_example_from_python_values():
    identities = [("client", "pc", "en", "Psi 0.11"), ("client", "pc", "el", "\u03a8 0.11")]
    features = list(reversed(SIMPLE_FEATURES))
    fields = {
        "software_version": ["0.11"],
        "os": "Mac",
        "ip_version": ["ipv6", "ipv4"],
        "os_version": ["10.5.1"],
        "software": ["Psi"],
    }
    assert compute_ver(identities, features, {"urn:xmpp:dataforms:softwareinfo": fields}) == (
        COMPLEX_VER
    )
    form = data_form.Form(
        "result",
        formNamespace="urn:xmpp:dataforms:softwareinfo",
        fields=[
            data_form.Field("text-multi", var="ip_version", values=["ipv4", "ipv6"]),
            data_form.Field(var="os", value="Mac"),
            data_form.Field(var="os_version", value="10.5.1"),
            data_form.Field(var="software", value="Psi"),
            data_form.Field(var="software_version", value="0.11"),
        ],
    )
    assert compute_ver(identities, features, [form]) == COMPLEX_VER
    # a form without FORM_TYPE is not part of the string
    extra = data_form.Form("result", fields=[data_form.Field(var="x", value="y")])
    assert compute_ver(identities, features, [form, extra]) == COMPLEX_VER


def test_ver_sorts_by_octets_and_does_not_unescape():
    # "&lt;" in a name stays four characters (no conversion to "<")
    s = verification_string([("client", "pc", "", "A&lt;B")], ["b", "a"])
    assert s == "client/pc//A&lt;B<a<b<"
    query = parseXml(
        f"<query xmlns='{NS_DISCO_INFO}'>"
        "<identity category='client' type='pc' name='A&amp;lt;B'/></query>"
    )
    assert verification_string(*caps_input_from_element(query)) == "client/pc//A&lt;B<"


@pytest.mark.parametrize(
    "body",
    [
        "<feature var='a'/><feature var='a'/>",
        "<identity category='client' type='pc'/><identity category='client' type='pc'/>",
        "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
        "<value>urn:a</value><value>urn:b</value></field></x>",
        "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
        "<value>urn:a</value></field></x>"
        "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
        "<value>urn:a</value></field></x>",
    ],
)
def test_ill_formed_answers_are_rejected(body):
    with pytest.raises(IllFormed):
        caps_input_from_element(parseXml(f"<query xmlns='{NS_DISCO_INFO}'>{body}</query>"))


def test_forms_without_hidden_form_type_are_ignored():
    base = f"<query xmlns='{NS_DISCO_INFO}'><identity category='client' type='pc'/>"
    plain = parseXml(base + "</query>")
    not_hidden = parseXml(
        base + "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'>"
        "<value>urn:a</value></field><field var='f'><value>v</value></field></x></query>"
    )
    no_form_type = parseXml(
        base + "<x xmlns='jabber:x:data' type='result'>"
        "<field var='f'><value>v</value></field></x></query>"
    )
    expected = compute_ver(*caps_input_from_element(plain))
    assert compute_ver(*caps_input_from_element(not_hidden)) == expected
    assert compute_ver(*caps_input_from_element(no_form_type)) == expected


def test_unknown_algorithm():
    with pytest.raises(ValueError):
        compute_ver([("client", "pc", "", "")], [], algo="md5")


# --- XEP-0030 responder --------------------------------------------------------------------


def disco_get(client, node=None, ns=NS_DISCO_INFO, iq_id="disco1"):
    node_attr = f" node='{node}'" if node else ""
    client.receive(
        f"<iq xmlns='jabber:client' type='get' id='{iq_id}' from='romeo@montague.lit/orchard' "
        f"to='{client.jid.full()}'><query xmlns='{ns}'{node_attr}/></iq>"
    )
    response = client.output[-1]
    assert response["id"] == iq_id
    return response


def test_disco_info_answer(client):
    response = disco_get(client)
    assert response["type"] == "result"
    assert response["to"] == "romeo@montague.lit/orchard"
    query = query_of(response, NS_DISCO_INFO)
    identities = [
        (i["category"], i["type"], i.getAttribute("name"))
        for i in query.elements(NS_DISCO_INFO, "identity")
    ]
    assert identities == [("client", "pc", "Salut à Toi")]
    features = [f["var"] for f in query.elements(NS_DISCO_INFO, "feature")]
    assert sorted(features) == sorted([NS_DISCO_INFO, NS_DISCO_ITEMS, NS_CAPS])
    # the answer is itself a well-formed caps input
    caps_input_from_element(query)


def test_disco_info_answer_has_no_duplicates(host, client):
    # a second handler declaring an already declared feature
    from wokkel import disco as wokkel_disco
    from wokkel.iwokkel import IDisco
    from wokkel.subprotocols import XMPPHandler
    from zope.interface import implementer

    @implementer(IDisco)
    class Dup(XMPPHandler):
        def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
            return [wokkel_disco.DiscoFeature(NS_CAPS)] if not nodeIdentifier else []

        def getDiscoItems(self, requestor, target, nodeIdentifier=""):
            return []

    Dup().setHandlerParent(client)
    query = query_of(disco_get(client), NS_DISCO_INFO)
    features = [f["var"] for f in query.elements(NS_DISCO_INFO, "feature")]
    assert features.count(NS_CAPS) == 1


def test_disco_items_answer_and_unknown_node(client):
    response = disco_get(client, ns=NS_DISCO_ITEMS)
    assert response["type"] == "result"
    assert list(query_of(response, NS_DISCO_ITEMS).elements()) == []
    response = disco_get(client, node="urn:unknown", iq_id="disco2")
    assert response["type"] == "error"
    assert response.error.firstChildElement().name == "item-not-found"


# --- XEP-0115: our own caps ---------------------------------------------------------------


def send_presence(host, client, presence_type=None, sync=False):
    presence = domish.Element((None, "presence"))
    if presence_type:
        presence["type"] = presence_type
    if sync:
        assert host.hooks.run_sync("presence_send", client, presence)
    else:
        assert result_of(run(host.hooks.run("presence_send", client, presence)))
    return presence


def test_presence_caps_match_our_disco_answer(host, client):
    presence = send_presence(host, client)
    c_elts = list(presence.elements(NS_CAPS, "c"))
    assert len(c_elts) == 1
    c_elt = c_elts[0]
    assert c_elt["hash"] == "sha-1"
    assert c_elt["node"] == CAPS_NODE == "https://salut-a-toi.org"
    ver = c_elt["ver"]

    # a contact checks our caps as XEP-0115 section 5.4 says
    node = f"{CAPS_NODE}#{ver}"
    response = disco_get(client, node=node)
    assert response["type"] == "result"
    query = query_of(response, NS_DISCO_INFO)
    assert query["node"] == node
    assert compute_ver(*caps_input_from_element(query)) == ver
    # same answer as without node
    plain = query_of(disco_get(client, iq_id="disco2"), NS_DISCO_INFO)
    assert compute_ver(*caps_input_from_element(plain)) == ver

    # a ver we never announced is not answered
    response = disco_get(client, node=f"{CAPS_NODE}#bm90IG91cnM=", iq_id="disco3")
    assert response["type"] == "error"


def test_presence_caps_also_with_run_sync_and_not_on_unavailable(host, client):
    presence = send_presence(host, client, sync=True)
    assert len(list(presence.elements(NS_CAPS, "c"))) == 1
    unavailable = send_presence(host, client, "unavailable")
    assert list(unavailable.elements(NS_CAPS, "c")) == []
    # not twice if already there
    again = domish.Element((None, "presence"))
    again.addElement((NS_CAPS, "c"))["ver"] = "x"
    host.hooks.run_sync("presence_send", client, again)
    assert len(list(again.elements(NS_CAPS, "c"))) == 1


# --- XEP-0115: others' caps ---------------------------------------------------------------


def caps_presence(sender, ver, node="http://psi-im.org", hash_="sha-1", ptype=None):
    attrs = f" from='{sender}'" if sender is not None else ""
    if ptype:
        attrs += f" type='{ptype}'"
    c_attrs = ""
    if hash_ is not None:
        c_attrs += f" hash='{hash_}'"
    if node is not None:
        c_attrs += f" node='{node}'"
    if ver is not None:
        c_attrs += f" ver='{ver}'"
    return parseXml(
        f"<presence xmlns='jabber:client'{attrs}><c xmlns='{NS_CAPS}'{c_attrs}/></presence>"
    )


def receive_presence(host, client, presence):
    assert result_of(run(host.hooks.run("presence_received", client, presence)))


def test_remote_caps_verified_and_cached(host, client, disco, caps):
    benvolio = "benvolio@capulet.lit/230193"
    receive_presence(host, client, caps_presence(benvolio, COMPLEX_VER))
    iqs = sent_iqs(client)
    assert len(iqs) == 1
    assert iqs[0]["to"] == benvolio
    assert query_of(iqs[0], NS_DISCO_INFO)["node"] == f"http://psi-im.org#{COMPLEX_VER}"
    answer(client, iqs[0], COMPLEX_QUERY)

    # verified: cached by hash in the storage, usable for the JID
    assert COMPLEX_VER in host.storage.data
    stored = parseXml(host.storage.data[COMPLEX_VER])
    assert compute_ver(*caps_input_from_element(stored)) == COMPLEX_VER
    assert caps.get_caps(client, benvolio).verified
    info = result_of(run(caps.get_caps_info(client, JID(benvolio))))
    assert "http://jabber.org/protocol/muc" in info.features
    # disco info() uses the caps: no round trip
    info = result_of(run(disco.info(client, benvolio)))
    assert ("client", "pc") in info.identities
    assert len(sent_iqs(client)) == 1

    # someone else with the same ver: known at once
    receive_presence(host, client, caps_presence("nurse@capulet.lit/chamber", COMPLEX_VER))
    assert len(sent_iqs(client)) == 1
    info = result_of(run(caps.get_caps_info(client, "nurse@capulet.lit/chamber")))
    assert "http://jabber.org/protocol/muc" in info.features

    # unavailable: forgotten for that JID
    receive_presence(
        host, client, caps_presence("nurse@capulet.lit/chamber", None, None, None, "unavailable")
    )
    assert result_of(run(caps.get_caps_info(client, "nurse@capulet.lit/chamber"))) is None


def test_remote_caps_bad_hash_not_cached(host, client, caps):
    bad_ver = "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
    liar = "liar@montague.lit/home"
    receive_presence(host, client, caps_presence(liar, bad_ver))
    iqs = sent_iqs(client)
    assert len(iqs) == 1
    answer(client, iqs[0], COMPLEX_QUERY)
    assert host.storage.data == {}
    entry = caps.get_caps(client, liar)
    assert not entry.verified
    # kept for that JID only
    info = result_of(run(caps.get_caps_info(client, liar)))
    assert "http://jabber.org/protocol/muc" in info.features
    # another JID announcing the same ver is asked again
    receive_presence(host, client, caps_presence("other@montague.lit/x", bad_ver))
    assert len(sent_iqs(client)) == 2


def test_remote_caps_ill_formed_answer_not_cached(host, client, caps):
    sender = "dup@montague.lit/x"
    receive_presence(host, client, caps_presence(sender, SIMPLE_VER))
    ill = SIMPLE_QUERY.replace(
        "</query>", "<feature var='http://jabber.org/protocol/muc'/></query>"
    )
    answer(client, sent_iqs(client)[0], ill)
    assert host.storage.data == {}
    assert not caps.get_caps(client, sender).verified


def test_remote_caps_from_storage_without_request(host, client, caps):
    host.storage.data[SIMPLE_VER] = parseXml(SIMPLE_QUERY).toXml()
    receive_presence(host, client, caps_presence("romeo@montague.lit/orchard", SIMPLE_VER))
    assert sent_iqs(client) == []
    assert host.storage.gets == [SIMPLE_VER]
    info = result_of(run(caps.get_caps_info(client, "romeo@montague.lit/orchard")))
    assert "http://jabber.org/protocol/muc" in info.features
    assert caps.get_caps(client, "romeo@montague.lit/orchard").verified


def test_tampered_storage_entry_is_not_trusted(host, client):
    tampered = SIMPLE_QUERY.replace("http://jabber.org/protocol/muc", "urn:evil")
    host.storage.data[SIMPLE_VER] = tampered
    receive_presence(host, client, caps_presence("romeo@montague.lit/orchard", SIMPLE_VER))
    assert len(sent_iqs(client)) == 1


def test_unsupported_hash_kept_per_jid(host, client, caps):
    sender = "old@montague.lit/x"
    receive_presence(host, client, caps_presence(sender, "abc", hash_="md5"))
    iqs = sent_iqs(client)
    assert len(iqs) == 1
    answer(client, iqs[0], SIMPLE_QUERY)
    assert host.storage.data == {}
    info = result_of(run(caps.get_caps_info(client, sender)))
    assert "http://jabber.org/protocol/muc" in info.features


def test_concurrent_same_ver_single_request(host, client, caps):
    receive_presence(host, client, caps_presence("a@montague.lit/1", COMPLEX_VER))
    receive_presence(host, client, caps_presence("b@montague.lit/2", COMPLEX_VER))
    # get_caps_info waits for the running lookup
    waiting = run(caps.get_caps_info(client, "b@montague.lit/2"))
    assert not waiting.called
    iqs = sent_iqs(client)
    assert len(iqs) == 1
    answer(client, iqs[0], COMPLEX_QUERY)
    assert "http://jabber.org/protocol/muc" in result_of(waiting).features
    assert caps.get_caps(client, "b@montague.lit/2").verified


@pytest.mark.parametrize(
    "presence",
    [
        # legacy caps: no hash attribute
        caps_presence("legacy@montague.lit/x", "0.9", "http://exodus", None),
        caps_presence("nover@montague.lit/x", None),
        caps_presence("nonode@montague.lit/x", COMPLEX_VER, node=None),
        caps_presence("empty@montague.lit/x", "", node=""),
        caps_presence(None, COMPLEX_VER),
        caps_presence("@@bad@@/x", COMPLEX_VER),
        caps_presence("huge@montague.lit/x", "A" * 5000),
        caps_presence("err@montague.lit/x", COMPLEX_VER, ptype="error"),
        parseXml("<presence xmlns='jabber:client' from='n@m.lit/x'><c/></presence>"),
        parseXml("<presence xmlns='jabber:client' from='n@m.lit/x'/>"),
    ],
)
def test_malformed_or_legacy_caps_ignored(host, client, caps, presence):
    receive_presence(host, client, presence)
    assert sent_iqs(client) == []


def test_caps_lookup_error_does_not_crash(host, client, caps):
    sender = "broken@montague.lit/x"
    receive_presence(host, client, caps_presence(sender, COMPLEX_VER))
    answer(client, sent_iqs(client)[0], error="service-unavailable")
    assert result_of(run(caps.get_caps_info(client, sender))) is None
    assert host.storage.data == {}


# --- XEP-0030 requester ------------------------------------------------------------------


def test_info_request_cache_and_invalidation(client, disco):
    d = run(disco.info(client, "capulet.lit"))
    iqs = sent_iqs(client)
    assert len(iqs) == 1 and iqs[0]["to"] == "capulet.lit"
    answer(
        client,
        iqs[0],
        f"<query xmlns='{NS_DISCO_INFO}'><identity category='server' type='im'/>"
        "<feature var='urn:xmpp:ping'/></query>",
    )
    info = result_of(d)
    assert ("server", "im") in info.identities
    assert "urn:xmpp:ping" in info.features
    # cached for the session
    assert result_of(run(disco.info(client, None))) is info
    assert len(sent_iqs(client)) == 1
    # dropped with the stream
    client.drop()
    client.reconnect()
    d = run(disco.info(client, "capulet.lit"))
    assert len(sent_iqs(client)) == 1  # on the new stream
    answer(client, sent_iqs(client)[0], f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert result_of(d).features == set()


def test_concurrent_info_requests_share_one_iq(client, disco):
    d1 = run(disco.info(client, "pubsub.capulet.lit", "node1"))
    d2 = run(disco.info(client, "pubsub.capulet.lit", "node1"))
    iqs = sent_iqs(client)
    assert len(iqs) == 1
    assert query_of(iqs[0], NS_DISCO_INFO)["node"] == "node1"
    answer(
        client, iqs[0], f"<query xmlns='{NS_DISCO_INFO}' node='node1'><feature var='f'/></query>"
    )
    assert "f" in result_of(d1).features
    assert "f" in result_of(d2).features


def test_info_error_mapped(client, disco):
    d = run(disco.info(client, "nobody@capulet.lit"))
    answer(client, sent_iqs(client)[0], error="item-not-found")
    err = failure_of(d, errors.NotFound)
    assert err.details["condition"] == "item-not-found"
    assert "nobody@capulet.lit" in err.message and "item-not-found" in err.message

    d = run(disco.info(client, "secret@capulet.lit"))
    answer(client, sent_iqs(client)[1], error="forbidden")
    failure_of(d, errors.PermissionDenied)

    # an error is not cached
    run(disco.info(client, "nobody@capulet.lit"))
    assert len(sent_iqs(client)) == 3


def test_info_timeout(client, disco, clock):
    d = run(disco.info(client, "slow.capulet.lit"))
    clock.advance(disco.timeout - 1)
    assert not d.called
    clock.advance(2)
    err = failure_of(d, errors.Timeout)
    assert "slow.capulet.lit" in err.message


def test_timeout_from_config(clock):
    host = FakeHost(config={("xep_0030", "timeout"): 5.0})
    (disco,) = load(host, xep_0030_disco.DiscoPlugin)
    client = connect(host, clock)
    d = run(disco.items(client, None))
    clock.advance(5.5)
    failure_of(d, errors.Timeout)


def test_connection_lost_and_not_connected(client, disco):
    d = run(disco.info(client, "capulet.lit"))
    client.drop()
    failure_of(d, errors.NotConnected)
    # no stream: refused at once
    failure_of(run(disco.info(client, "capulet.lit")), errors.NotConnected)


def test_invalid_jid(client, disco):
    failure_of(run(disco.info(client, "@@@")), errors.InvalidArgument)


def serve_server(client, infos, items):
    """Answer every pending disco request from the given tables."""
    answered = client.__dict__.setdefault("answered_ids", set())
    progress = True
    while progress:
        progress = False
        for iq in sent_iqs(client):
            if iq["id"] in answered:
                continue
            answered.add(iq["id"])
            progress = True
            to = iq["to"]
            if query_of(iq, NS_DISCO_ITEMS) is not None:
                body = "".join(f"<item jid='{j}'{a}/>" for j, a in items.get(to, []))
                answer(client, iq, f"<query xmlns='{NS_DISCO_ITEMS}'>{body}</query>")
            elif to in infos:
                answer(client, iq, f"<query xmlns='{NS_DISCO_INFO}'>{infos[to]}</query>")
            else:
                answer(client, iq, error="service-unavailable")


SERVER_ITEMS = {
    "capulet.lit": [
        ("conference.capulet.lit", ""),
        ("pubsub.capulet.lit", ""),
        ("upload.capulet.lit", ""),
        ("pubsub.capulet.lit", " node='some_node'"),
        ("gone.capulet.lit", ""),
    ]
}
SERVER_INFOS = {
    "capulet.lit": "<identity category='server' type='im'/><identity category='pubsub' "
    "type='pep'/><feature var='urn:xmpp:ping'/>",
    "conference.capulet.lit": "<identity category='conference' type='text' name='Chatrooms'/>"
    "<feature var='http://jabber.org/protocol/muc'/>",
    "pubsub.capulet.lit": "<identity category='pubsub' type='service'/>"
    "<feature var='http://jabber.org/protocol/pubsub'/>",
    "upload.capulet.lit": "<identity category='store' type='file'/>"
    "<feature var='urn:xmpp:http:upload:0'/><feature var='urn:xmpp:ping'/>",
}


def test_find_service(client, disco):
    d = run(disco.find_service(client, "conference", "text"))
    serve_server(client, SERVER_INFOS, SERVER_ITEMS)
    assert result_of(d) == [JID("conference.capulet.lit")]
    requests = len(sent_iqs(client))
    # the server itself counts; answers are cached (errors are asked again)
    d = run(disco.find_service(client, "pubsub", "pep"))
    assert len(sent_iqs(client)) == requests + 1
    serve_server(client, SERVER_INFOS, SERVER_ITEMS)
    assert result_of(d) == [JID("capulet.lit")]
    d = run(disco.find_service(client, "proxy", "bytestreams"))
    serve_server(client, SERVER_INFOS, SERVER_ITEMS)
    assert result_of(d) == []


def test_find_features_and_has_feature(client, disco):
    d = run(disco.find_features(client, ["urn:xmpp:ping"]))
    serve_server(client, SERVER_INFOS, SERVER_ITEMS)
    assert result_of(d) == [JID("capulet.lit"), JID("upload.capulet.lit")]
    assert result_of(run(disco.has_feature(client, "urn:xmpp:ping")))
    assert not result_of(run(disco.has_feature(client, "urn:xmpp:mam:2")))
    # an entity answering with an error has no feature
    d = run(disco.has_feature(client, "urn:xmpp:ping", "gone.capulet.lit"))
    serve_server(client, SERVER_INFOS, SERVER_ITEMS)
    assert result_of(d) is False


# --- bridge ----------------------------------------------------------------------------------


def test_bridge_declarations(host):
    methods = host.bridge.methods
    assert methods["DiscoInfoGet"]["out"][0] == "a{sv}"
    assert [a[:2] for a in methods["DiscoInfoGet"]["args"]] == [
        ("profile", "s"),
        ("jid", "s"),
        ("node", "s"),
    ]
    assert methods["DiscoItemsGet"]["out"][0] == "aa{sv}"
    assert all(m["interface"] == "plugin" and m["doc"] for m in methods.values())


def test_bridge_methods_with_real_contract(clock):
    from sat.bridge.contract import Bridge

    host = FakeHost(bridge=Bridge())
    load(host, xep_0030_disco.DiscoPlugin, xep_0115_caps.CapsPlugin)
    client = connect(host, clock)
    bridge = host.bridge

    method = bridge.find_method("DiscoInfoGet")
    d = method.run(method.check_args(["juliet", "benvolio@capulet.lit/230193", ""]))
    answer(client, sent_iqs(client)[0], COMPLEX_QUERY)
    result = method.result_to_wire(result_of(d))
    from sat.bridge.types import from_wire

    plain = from_wire(result[0])
    assert plain["jid"] == "benvolio@capulet.lit/230193"
    assert {"category": "client", "type": "pc", "lang": "el", "name": "\u03a8 0.11"} in plain[
        "identities"
    ]
    assert "http://jabber.org/protocol/muc" in plain["features"]
    assert plain["extensions"][0]["form_type"] == "urn:xmpp:dataforms:softwareinfo"
    assert plain["extensions"][0]["fields"]["ip_version"] == ["ipv4", "ipv6"]

    method = bridge.find_method("DiscoItemsGet")
    d = method.run(method.check_args(["juliet", "", ""]))
    answer(
        client,
        sent_iqs(client)[1],
        f"<query xmlns='{NS_DISCO_ITEMS}'><item jid='conference.capulet.lit' name='MUC'/>"
        "<item jid='capulet.lit' node='n1'/></query>",
    )
    plain = from_wire(method.result_to_wire(result_of(d))[0])
    assert plain == [
        {"jid": "conference.capulet.lit", "node": "", "name": "MUC"},
        {"jid": "capulet.lit", "node": "n1", "name": ""},
    ]

    failure_of(
        method.run(method.check_args(["nobody", "", ""])),
        errors.NotConnected,
    )


def test_known_caps_survive_a_lost_stream_until_a_fresh_session(host, client, caps):
    host.storage.data[SIMPLE_VER] = parseXml(SIMPLE_QUERY).toXml()
    romeo = "romeo@montague.lit/orchard"
    receive_presence(host, client, caps_presence(romeo, SIMPLE_VER))
    # a resumed stream (XEP-0198) gets no presence again: what we know stays
    client.drop()
    client.reconnect()
    assert result_of(run(caps.get_caps_info(client, romeo))) is not None
    # a fresh session: the server sends every presence again
    result_of(run(caps.profile_connected(client)))
    assert result_of(run(caps.get_caps_info(client, romeo))) is None
