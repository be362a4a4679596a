"""XEP-0198 counters and initializers on an in-memory stream."""

from twisted.internet import task
from twisted.test.proto_helpers import StringTransport
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish

from sat.core.xmpp.client import SatXmlStream
from sat.core.xmpp.stream_management import (
    NS_SM,
    SMEnableInitializer,
    SMResumeInitializer,
    SMState,
)


def make_stream(state):
    xs = SatXmlStream(xmlstream.ConnectAuthenticator("example.org"))
    xs.sm = state
    xs.transport = StringTransport()
    xs.connectionMade()
    xs.dataReceived(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        "from='example.org' id='s1' version='1.0'>"
    )
    xs.transport.clear()
    state.stream_started(xs)
    return xs


def message(body="hi"):
    elt = domish.Element((None, "message"))
    elt["to"] = "bob@example.org"
    elt.addElement("body", content=body)
    return elt


def test_counts_only_stanzas_and_answers_r():
    clock = task.Clock()
    state = SMState(clock)
    xs = make_stream(state)
    state.enabled_on(xs, "sess", None)
    xs.dataReceived("<message from='a@example.org'><body>x</body></message>")
    xs.dataReceived("<presence from='a@example.org'/>")
    xs.dataReceived("<iq type='get' id='1' from='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    xs.dataReceived(f"<r xmlns='{NS_SM}'/>")
    sent = xs.transport.value().decode()
    assert f"<a xmlns='{NS_SM}' h='3'/>" in sent
    assert state.in_count == 3


def test_outgoing_queue_acked_and_requested():
    clock = task.Clock()
    state = SMState(clock)
    xs = make_stream(state)
    state.enabled_on(xs, "sess", None)
    for i in range(3):
        xs.send(message(str(i)))
    assert len(state.unacked) == 3
    assert b"<r " not in xs.transport.value()
    clock.advance(1.1)  # delayed ack request
    assert f"<r xmlns='{NS_SM}'/>".encode() in xs.transport.value()
    xs.dataReceived(f"<a xmlns='{NS_SM}' h='2'/>")
    assert [str(e.body) for e in state.unacked] == ["2"]
    xs.dataReceived(f"<a xmlns='{NS_SM}' h='3'/>")
    assert not state.unacked


def test_threshold_requests_ack_immediately():
    state = SMState(task.Clock())
    xs = make_stream(state)
    state.enabled_on(xs, "sess", None)
    for i in range(5):
        xs.send(message(str(i)))
    assert xs.transport.value().count(b"<r ") == 1


def test_bogus_ack_does_not_crash():
    state = SMState(task.Clock())
    xs = make_stream(state)
    state.enabled_on(xs, "sess", None)
    xs.send(message())
    xs.dataReceived(f"<a xmlns='{NS_SM}' h='not-a-number'/>")
    xs.dataReceived(f"<a xmlns='{NS_SM}' h='99'/>")  # more than we sent
    assert not state.unacked


def test_no_counting_before_enabled():
    state = SMState(task.Clock())
    xs = make_stream(state)
    xs.send(message())
    xs.dataReceived("<message from='a@example.org'><body>x</body></message>")
    assert not state.unacked and state.in_count == 0


def _features(xs, *children):
    xs.features = {(NS_SM, "sm"): domish.Element((NS_SM, "sm"))}


def test_enable_then_resume_success_skips_bind():
    state = SMState(task.Clock())
    xs = make_stream(state)
    _features(xs)
    d = SMEnableInitializer(xs, state).initialize()
    assert b"<enable" in xs.transport.value() and b"resume='true'" in xs.transport.value()
    xs.dataReceived(f"<enabled xmlns='{NS_SM}' id='abc' resume='true' max='300'/>")
    assert d.called and state.enabled and state.session_id == "abc"
    xs.send(message("lost?"))
    xs.dataReceived("<message from='a@example.org'><body>x</body></message>")

    # new stream after a network failure
    state.stream_lost()
    xs2 = make_stream(state)
    _features(xs2)

    class Bind:
        skip_on_resume = True

    resume = SMResumeInitializer(xs2, state)
    bind = Bind()
    xs2.initializers = [resume, bind]
    d2 = resume.initialize()
    out = xs2.transport.value().decode()
    assert "previd='abc'" in out and "h='1'" in out
    xs2.dataReceived(f"<resumed xmlns='{NS_SM}' previd='abc' h='0'/>")
    assert d2.called and xs2.sm_resumed
    assert bind not in xs2.initializers
    assert [str(e.body) for e in state.take_unacked()] == ["lost?"]


def test_resume_failure_forgets_session_and_keeps_queue():
    state = SMState(task.Clock())
    xs = make_stream(state)
    state.enabled_on(xs, "abc", None)
    xs.send(message("pending"))
    state.stream_lost()
    xs2 = make_stream(state)
    _features(xs2)
    resume = SMResumeInitializer(xs2, state)
    xs2.initializers = [resume]
    d = resume.initialize()
    xs2.dataReceived(
        f"<failed xmlns='{NS_SM}'><item-not-found "
        "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    )
    assert d.called and state.session_id is None
    assert not getattr(xs2, "sm_resumed", False)
    assert len(state.unacked) == 1
