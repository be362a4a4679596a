"""The per-profile XMPP session against a real Prosody (no daemon, no bridge).

Covers the foundation's connection promises: SCRAM-SHA-256 over verified TLS,
distinct errors for each way a connection fails, reconnection after a server
restart with the queued message delivered, and XEP-0198 resumption.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.words.xish import domish

from sat.core import errors
from sat.core.xmpp.client import SatXMPPClient
from sat.core.xmpp.connection import ConnectionSettings


def settings_for(server, **overrides) -> ConnectionSettings:
    values = dict(
        host="127.0.0.1",
        port=server.c2s_port,
        ca_file=str(server.ca_cert_path),
        connect_timeout=5,
        init_timeout=10,
        reconnect_initial_delay=0.3,
        reconnect_max_delay=2,
    )
    values.update(overrides)
    return ConnectionSettings(**values)


class Inbox:
    """Collects the bodies of chat messages a client receives."""

    def __init__(self, client: SatXMPPClient):
        from twisted.words.protocols.jabber import xmlstream

        self.bodies: list[str] = []
        self._waiters: list[tuple[str, defer.Deferred]] = []

        def on_stream(xs):
            xs.addObserver("/message/body", self._on_message)

        client.factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, on_stream)

    def _on_message(self, elt):
        body = str(next(c for c in elt.elements() if c.name == "body"))
        self.bodies.append(body)
        for wanted, d in list(self._waiters):
            if wanted == body:
                self._waiters.remove((wanted, d))
                d.callback(body)

    def wait_for(self, body: str, timeout: float = 10) -> defer.Deferred:
        if body in self.bodies:
            return defer.succeed(body)
        d = defer.Deferred()
        self._waiters.append((body, d))
        d.addTimeout(timeout, reactor)
        return d


def chat(to: str, body: str) -> domish.Element:
    elt = domish.Element((None, "message"))
    elt["to"] = to
    elt["type"] = "chat"
    elt.addElement("body", content=body)
    return elt


async def wait_until(predicate, timeout: float, step: float = 0.05) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await task.deferLater(reactor, step, lambda: None)
    return time.monotonic() - start


@pytest.fixture
def clients():
    made: list[SatXMPPClient] = []
    yield made
    for client in made:
        client._want_connected = False
        if client.xmlstream is not None and client.xmlstream.transport is not None:
            client.xmlstream.transport.abortConnection()


def make_client(clients, profile, account, settings) -> SatXMPPClient:
    client = SatXMPPClient(profile, f"{account.jid}/test", account.password, settings)
    clients.append(client)
    return client


@pytest_twisted.ensureDeferred
async def test_two_profiles_scram_sha256_verified_tls(prosody, make_account, clients):
    a, b = make_account("alice"), make_account("bob")
    alice = make_client(clients, "alice", a, settings_for(prosody))
    bob = make_client(clients, "bob", b, settings_for(prosody))
    inbox = Inbox(bob)
    await defer.DeferredList(
        [defer.ensureDeferred(alice.connect()), defer.ensureDeferred(bob.connect())],
        fireOnOneErrback=True,
    )
    for client in (alice, bob):
        assert client.is_connected()
        assert client.sasl_mechanism == "SCRAM-SHA-256"
        assert client.tls_active
        assert client.sm.enabled and client.sm.session_id
    alice.send(chat(bob.jid.full(), "hello over verified TLS"))
    assert await inbox.wait_for("hello over verified TLS") == "hello over verified TLS"


@pytest_twisted.ensureDeferred
async def test_direct_tls_xep_0368(prosody, make_account, clients):
    a = make_account("direct")
    client = make_client(
        clients, "d", a, settings_for(prosody, port=prosody.direct_tls_port, direct_tls=True)
    )
    await client.connect()
    assert client.is_connected() and client.tls_active
    assert client.sasl_mechanism == "SCRAM-SHA-256"


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_authentication_failed(prosody, make_account, clients):
    a = make_account("wrongpw")
    client = SatXMPPClient("w", f"{a.jid}/t", "not-the-password", settings_for(prosody))
    clients.append(client)
    with pytest.raises(errors.AuthenticationFailed, match="wrong JID or password"):
        await client.connect()
    assert not client.is_connected()


@pytest_twisted.ensureDeferred
async def test_unknown_host_is_host_not_found(prosody, make_account, clients):
    a = make_account("nohost")
    client = make_client(clients, "n", a, settings_for(prosody, host="no-such-host.invalid"))
    with pytest.raises(errors.HostNotFound, match="no-such-host.invalid"):
        await client.connect()


@pytest_twisted.ensureDeferred
async def test_certificate_mismatch_is_refused(prosody, clients):
    # mismatch.test is served by the same Prosody, which only has a certificate for localhost
    client = SatXMPPClient("m", "someone@mismatch.test/t", "irrelevant", settings_for(prosody))
    clients.append(client)
    with pytest.raises(errors.CertificateError, match="mismatch.test"):
        await client.connect()


@pytest_twisted.ensureDeferred
async def test_untrusted_ca_is_refused(prosody, make_account, clients, tmp_path):
    from tests.support.tls import make_ca

    other_ca = make_ca(tmp_path / "other-ca")
    a = make_account("untrusted")
    client = make_client(clients, "u", a, settings_for(prosody, ca_file=str(other_ca.cert_path)))
    with pytest.raises(errors.CertificateError):
        await client.connect()


@pytest_twisted.ensureDeferred
async def test_dead_port_is_connection_refused(prosody, make_account, clients):
    from tests.support.prosody import find_free_ports

    a = make_account("deadport")
    (port,) = find_free_ports(1)
    client = make_client(clients, "p", a, settings_for(prosody, port=port))
    with pytest.raises(errors.ConnectionRefused, match=str(port)):
        await client.connect()


@pytest_twisted.ensureDeferred
async def test_reconnect_after_server_restart_delivers_queued_message(fresh_prosody, clients):
    server = fresh_prosody
    a = server.register("rq-alice", "rq-alice-pass")
    b = server.register("rq-bob", "rq-bob-pass")
    alice = make_client(clients, "alice", a, settings_for(server))
    bob = make_client(clients, "bob", b, settings_for(server))
    inbox = Inbox(bob)
    # like a real session: available presence after each fresh (re)connection, so
    # messages kept offline by the server while bob was away get delivered
    bob.on_ready.append(lambda c, resumed: resumed or c.send(domish.Element((None, "presence"))))
    await alice.connect()
    await bob.connect()

    await task.deferLater(reactor, 0, server.stop)
    await wait_until(lambda: not alice.is_connected() and not bob.is_connected(), 10)
    # queued while the server is down: must arrive once it is back
    alice.send(chat(f"{b.jid}/test", "sent while the server was down"))
    await task.deferLater(reactor, 1.0, lambda: None)
    await task.deferLater(reactor, 0, server.start)
    restarted = time.monotonic()
    await wait_until(lambda: alice.is_connected() and bob.is_connected(), 5)
    assert time.monotonic() - restarted <= 5
    assert alice.reconnections >= 1 and bob.reconnections >= 1
    await inbox.wait_for("sent while the server was down")
    assert inbox.bodies.count("sent while the server was down") == 1


@pytest_twisted.ensureDeferred
async def test_stream_management_resumption_loses_nothing(prosody, make_account, clients):
    a, b = make_account("sm-alice"), make_account("sm-bob")
    alice = make_client(clients, "alice", a, settings_for(prosody))
    bob = make_client(clients, "bob", b, settings_for(prosody))
    inbox = Inbox(bob)
    await alice.connect()
    await bob.connect()
    session_before = alice.sm.session_id
    assert session_before

    # the link dies right after stanzas left: they are unacknowledged
    for i in range(3):
        alice.send(chat(bob.jid.full(), f"in flight {i}"))
    assert len(alice.sm.unacked) == 3
    alice.xmlstream.transport.abortConnection()
    await wait_until(lambda: not alice.is_connected(), 5)
    # messages sent while reconnecting are queued too
    alice.send(chat(bob.jid.full(), "during reconnection"))

    await wait_until(lambda: alice.is_connected(), 10)
    assert alice.sm.resumed_total == 1
    assert alice.sm.session_id == session_before
    for body in ("in flight 0", "in flight 1", "in flight 2", "during reconnection"):
        await inbox.wait_for(body)
    # let acks settle, then check nothing was duplicated
    await task.deferLater(reactor, 1.5, lambda: None)
    for body in ("in flight 0", "in flight 1", "in flight 2", "during reconnection"):
        assert inbox.bodies.count(body) == 1, inbox.bodies
    await wait_until(lambda: not alice.sm.unacked, 5)


@pytest_twisted.ensureDeferred
async def test_iq_answer_from_wrong_entity_is_ignored(prosody, make_account, clients):
    """A contact cannot answer an IQ we sent to someone else (id guessing)."""
    from wokkel import generic

    a = make_account("iq")
    client = make_client(clients, "iq", a, settings_for(prosody))
    await client.connect()
    request = generic.Request(recipient=None, stanzaType="get")
    request.childParser = None
    elt_holder = {}
    original_send = client.send

    def capture(obj):
        elt_holder["elt"] = obj
        original_send(obj)

    client.send = capture
    req = generic.Request(stanzaType="get")
    req.recipient = client.server_jid
    req.timeout = 5

    class Ping(generic.Request):
        def toElement(self):
            elt = super().toElement()
            elt.addElement(("urn:xmpp:ping", "ping"))
            return elt

    ping = Ping(recipient=client.server_jid, stanzaType="get")
    d = client.request(ping)
    sent = elt_holder["elt"]
    forged = domish.Element((None, "iq"))
    forged["type"] = "result"
    forged["id"] = sent["id"]
    forged["from"] = "evil@localhost/x"
    client.xmlstream.dispatch(forged)
    assert not d.called
    result = await d
    assert result.getAttribute("from") == client.server_jid.full()


@pytest_twisted.ensureDeferred
async def test_nagle_is_off_on_both_kinds_of_tls(prosody, make_account, clients):
    import socket

    for direct in (False, True):
        a = make_account("nodelay")
        port = prosody.direct_tls_port if direct else prosody.c2s_port
        client = make_client(clients, "nd", a, settings_for(prosody, port=port, direct_tls=direct))
        await client.connect()
        transport = client.xmlstream.transport
        # STARTTLS: the TCP transport itself; direct TLS: a TLS protocol over it
        sock = getattr(transport, "socket", None) or transport.transport.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), direct
