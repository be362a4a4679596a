"""XEP-0092 (software version) and XEP-0199 (ping, keepalive) plugins.

In-memory stream (wokkel's ``XmlStreamStub``) and a ``task.Clock``: no reactor
time passes, no network.
"""

from __future__ import annotations

from sat.core import wokkel_compat  # noqa: F401  (before any wokkel import)

# isort: split

import pytest
from twisted.internet import task
from twisted.words.xish import domish

from sat.core import errors
from sat.plugins import xep_0030_disco, xep_0092_version, xep_0199_ping
from tests.unit.test_disco_caps import (
    FakeHost,
    answer,
    connect,
    disco_get,
    failure_of,
    load,
    query_of,
    result_of,
    run,
    sent_iqs,
)

NS_VERSION = "jabber:iq:version"
NS_PING = "urn:xmpp:ping"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"


@pytest.fixture
def clock():
    return task.Clock()


def make(clock, config=None, transport_dead=True):
    host = FakeHost(config=config)
    load(
        host,
        xep_0030_disco.DiscoPlugin,
        xep_0092_version.VersionPlugin,
        xep_0199_ping.PingPlugin,
    )
    host.plugins["XEP-0199"].clock = clock
    client = connect(host, clock)
    if transport_dead:
        client.dead_reasons = []
        client.transport_dead = client.dead_reasons.append
    return host, client


def children(elt, ns):
    return {c.name: str(c) for c in elt.elements() if c.uri == ns}


# --- XEP-0092 -----------------------------------------------------------------------------


def version_get(client, iq_id="v1"):
    client.receive(
        f"<iq xmlns='jabber:client' type='get' id='{iq_id}' from='romeo@montague.lit/orchard' "
        f"to='{client.jid.full()}'><query xmlns='{NS_VERSION}'/></iq>"
    )
    response = client.output[-1]
    assert response["id"] == iq_id and response["type"] == "result"
    assert response["to"] == "romeo@montague.lit/orchard"
    return children(query_of(response, NS_VERSION), NS_VERSION)


def test_version_answer_without_os_by_default(clock):
    host, client = make(clock)
    assert version_get(client) == {"name": "Salut à Toi", "version": "0.1.0-test"}


def test_version_answer_with_os_when_configured(clock):
    host, client = make(clock, config={("xep_0092", "show_os"): True})
    answer_ = version_get(client)
    assert answer_["name"] == "Salut à Toi"
    assert answer_["os"]


def test_features_declared(clock):
    host, client = make(clock)
    query = query_of(disco_get(client), NS_DISCO_INFO)
    features = {f["var"] for f in query.elements(NS_DISCO_INFO, "feature")}
    assert {NS_VERSION, NS_PING} <= features


def test_get_version(clock):
    host, client = make(clock)
    plugin = host.plugins["XEP-0092"]
    d = run(plugin.get_version(client, "romeo@montague.lit/orchard"))
    (iq,) = sent_iqs(client)
    assert iq["to"] == "romeo@montague.lit/orchard"
    assert query_of(iq, NS_VERSION) is not None
    answer(
        client,
        iq,
        f"<query xmlns='{NS_VERSION}'><name>Exodus</name><version>0.9.1</version>"
        "<os>Windows-XP 5.01.2600</os></query>",
    )
    assert result_of(d) == ("Exodus", "0.9.1", "Windows-XP 5.01.2600")

    d = run(plugin.get_version(client, None))
    iq = sent_iqs(client)[1]
    assert iq["to"] == "capulet.lit"
    answer(client, iq, f"<query xmlns='{NS_VERSION}'><name>Prosody</name></query>")
    assert result_of(d) == ("Prosody", None, None)


def test_get_version_error(clock):
    host, client = make(clock)
    d = run(host.plugins["XEP-0092"].get_version(client, "romeo@montague.lit/orchard"))
    answer(client, sent_iqs(client)[0], error="service-unavailable")
    err = failure_of(d, errors.NotFound)
    assert "software version" in err.message


def test_software_version_bridge(clock):
    from sat.bridge.contract import Bridge
    from sat.bridge.types import from_wire

    host = FakeHost(bridge=Bridge())
    load(host, xep_0030_disco.DiscoPlugin, xep_0092_version.VersionPlugin)
    client = connect(host, clock)
    method = host.bridge.find_method("SoftwareVersionGet")
    assert method.out_signature == "a{sv}"
    d = method.run(method.check_args(["juliet", "romeo@montague.lit/orchard"]))
    answer(
        client,
        sent_iqs(client)[0],
        f"<query xmlns='{NS_VERSION}'><name>Exodus</name><version>0.9.1</version></query>",
    )
    assert from_wire(method.result_to_wire(result_of(d))[0]) == {
        "name": "Exodus",
        "version": "0.9.1",
    }


# --- XEP-0199: responder and requester -----------------------------------------------------


def test_ping_answered(clock):
    host, client = make(clock)
    client.receive(
        f"<iq xmlns='jabber:client' type='get' id='p1' from='capulet.lit' "
        f"to='{client.jid.full()}'><ping xmlns='{NS_PING}'/></iq>"
    )
    response = client.output[-1]
    assert response["type"] == "result"
    assert response["id"] == "p1"
    assert response["to"] == "capulet.lit"


def test_ping_round_trip(clock):
    host, client = make(clock)
    plugin = host.plugins["XEP-0199"]
    d = run(plugin.ping(client, "romeo@montague.lit/orchard"))
    (iq,) = sent_iqs(client)
    assert iq["to"] == "romeo@montague.lit/orchard"
    assert next(iq.elements(NS_PING, "ping"), None) is not None
    clock.advance(0.25)
    answer(client, iq)
    assert result_of(d) == pytest.approx(0.25)


def test_ping_errors(clock):
    host, client = make(clock)
    plugin = host.plugins["XEP-0199"]
    # answering "not implemented" is still an answer
    d = run(plugin.ping(client, "old@montague.lit/x"))
    clock.advance(1)
    answer(client, sent_iqs(client)[-1], error="feature-not-implemented")
    assert result_of(d) == pytest.approx(1)
    # an unavailable entity is an error
    d = run(plugin.ping(client, "offline@montague.lit/x"))
    answer(client, sent_iqs(client)[-1], error="service-unavailable")
    failure_of(d, errors.NotFound)
    # no answer at all
    d = run(plugin.ping(client, "void@montague.lit/x"))
    clock.advance(plugin.timeout + 1)
    failure_of(d, errors.Timeout)


def test_ping_bridge(clock):
    from sat.bridge.contract import Bridge
    from sat.bridge.types import from_wire

    host = FakeHost(bridge=Bridge())
    load(host, xep_0030_disco.DiscoPlugin, xep_0199_ping.PingPlugin)
    host.plugins["XEP-0199"].clock = clock
    client = connect(host, clock)
    method = host.bridge.find_method("Ping")
    assert method.out_signature == "d"
    d = method.run(method.check_args(["juliet", ""]))
    clock.advance(0.5)
    (iq,) = sent_iqs(client)
    assert iq["to"] == "capulet.lit"
    answer(client, iq)
    assert from_wire(method.result_to_wire(result_of(d))[0]) == pytest.approx(0.5)


# --- XEP-0199: keepalive ------------------------------------------------------------------


def pings_to_server(client):
    return [
        iq
        for iq in sent_iqs(client)
        if iq.getAttribute("to") == "capulet.lit" and next(iq.elements(NS_PING, "ping"), None)
    ]


def test_keepalive_pings_after_inactivity(clock):
    host, client = make(clock)
    clock.advance(59)
    assert pings_to_server(client) == []
    # traffic from the server postpones the ping
    client.receive("<presence xmlns='jabber:client' from='romeo@montague.lit/orchard'/>")
    clock.advance(59)
    assert pings_to_server(client) == []
    clock.advance(1.5)
    (ping,) = pings_to_server(client)
    # answered: the link is alive, nothing happens
    clock.advance(5)
    answer(client, ping)
    clock.advance(20)
    assert client.dead_reasons == []
    assert len(pings_to_server(client)) == 1
    # next ping after another quiet interval; an error answer is still an answer
    clock.advance(40)
    assert len(pings_to_server(client)) == 2
    answer(client, pings_to_server(client)[-1], error="service-unavailable")
    clock.advance(30)
    assert client.dead_reasons == []


def test_keepalive_detects_dead_server(clock):
    host, client = make(clock)
    clock.advance(60)
    assert len(pings_to_server(client)) == 1
    clock.advance(19)
    assert client.dead_reasons == []
    clock.advance(1.5)
    assert len(client.dead_reasons) == 1
    assert "ping" in client.dead_reasons[0]
    # the keepalive of that stream stopped: no timer left, no more pings
    assert clock.getDelayedCalls() == []
    clock.advance(600)
    assert len(pings_to_server(client)) == 1


def test_keepalive_aborts_transport_without_transport_dead(clock):
    class Transport:
        aborted = False

        def abortConnection(self):
            self.aborted = True

    host, client = make(clock, transport_dead=False)
    transport = client.xmlstream.transport = Transport()
    clock.advance(60)
    clock.advance(21)
    assert transport.aborted


def test_keepalive_stopped_on_disconnect_and_restarted(clock):
    host, client = make(clock)
    assert clock.getDelayedCalls()
    client.drop()
    assert clock.getDelayedCalls() == []
    clock.advance(600)
    assert pings_to_server(client) == []
    client.reconnect()
    clock.advance(60)
    assert len(pings_to_server(client)) == 1


def test_keepalive_stopped_while_ping_pending(clock):
    host, client = make(clock)
    clock.advance(60)
    assert len(pings_to_server(client)) == 1
    client.drop()
    assert clock.getDelayedCalls() == []
    assert client.dead_reasons == []


def test_keepalive_interval_from_config_and_disabled(clock):
    host, client = make(clock, config={("xmpp", "keepalive_interval"): 10.0})
    clock.advance(10)
    assert len(pings_to_server(client)) == 1

    other_clock = task.Clock()
    host, client = make(other_clock, config={("xmpp", "keepalive_interval"): 0})
    assert other_clock.getDelayedCalls() == []
    other_clock.advance(3600)
    assert pings_to_server(client) == []


def test_plugin_stop_cancels_timers(clock):
    host, client = make(clock)
    assert clock.getDelayedCalls()
    result_of(run(host.plugins["XEP-0199"].stop()))
    assert clock.getDelayedCalls() == []


def test_presence_does_not_reach_keepalive_output(clock):
    # sanity: the keepalive only sends pings, never other stanzas
    host, client = make(clock)
    clock.advance(60)
    assert all(isinstance(e, domish.Element) and e.name == "iq" for e in client.output)
