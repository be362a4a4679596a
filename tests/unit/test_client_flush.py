"""``SatXMPPClient.flush``: a sent stanza reaches the socket without waiting for the reactor.

A real TCP connection on loopback with Twisted's TLS on top (the layers a STARTTLS stream
has): after ``xs.send`` the bytes sit in the TLS layer's small-write aggregator and then
in the TCP write buffer, each emptied on a later reactor turn; ``flush`` writes them now.
"""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.protocols import tls

from sat.core.xmpp import connection
from sat.core.xmpp.client import SatXMPPClient
from sat.core.xmpp.connection import ConnectionSettings
from tests.support.tls import make_ca


class Collect(protocol.Protocol):
    def __init__(self):
        self.data = b""
        self.ready = defer.Deferred()

    def connectionMade(self):
        self.ready.callback(self)

    def dataReceived(self, data):
        self.data += data


class Stream:
    """What flush needs from an XmlStream: its transport."""

    def __init__(self, transport):
        self.transport = transport


def pending(tls_protocol, tcp) -> int:
    """Bytes Twisted still holds: in the TLS aggregator, then in the TCP write buffers."""
    held = sum(len(b) for b in getattr(tls_protocol._aggregator, "_buffer", ()))
    return held + tcp._tempDataLen + len(tcp.dataBuffer) - tcp.offset


@pytest_twisted.ensureDeferred
async def test_flush_puts_tls_bytes_on_the_socket_at_once(tmp_path):
    ca = make_ca(tmp_path)
    cert, key = ca.issue(tmp_path, ["localhost"], "localhost")
    server_ctx = ssl.PrivateCertificate.loadPEM(
        Path(cert).read_text() + Path(key).read_text()
    ).options()
    client_ctx = connection.tls_options("localhost", str(ca.cert_path))
    server_side = Collect()
    server_factory = tls.TLSMemoryBIOFactory(
        server_ctx, False, protocol.Factory.forProtocol(lambda: server_side)
    )
    port = reactor.listenTCP(0, server_factory, interface="127.0.0.1")
    client_side = Collect()
    client_factory = tls.TLSMemoryBIOFactory(
        client_ctx, True, protocol.ClientFactory.forProtocol(lambda: client_side)
    )
    try:
        connector = reactor.connectTCP("127.0.0.1", port.getHost().port, client_factory)
        await client_side.ready
        client_side.transport.write(b"hello")  # and let the handshake finish
        await until(lambda: b"hello" in server_side.data)
        tls_protocol = client_side.transport
        tcp = tls_protocol.transport
        client = SatXMPPClient("p", "me@localhost/r", "x", ConnectionSettings())
        client.xmlstream = Stream(tls_protocol)  # direct TLS: the TLS layer on top

        tls_protocol.write(b"<message/>")
        assert pending(tls_protocol, tcp) > 0  # held for a later reactor turn
        client.flush()
        assert pending(tls_protocol, tcp) == 0  # written, no reactor turn needed
        await until(lambda: b"<message/>" in server_side.data)

        # STARTTLS shape: the TCP transport on top, the TLS layer as its protocol
        client.xmlstream = Stream(_TcpView(tcp, tls_protocol))
        tls_protocol.write(b"<presence/>")
        assert pending(tls_protocol, tcp) > 0
        client.flush()
        assert pending(tls_protocol, tcp) == 0
        await until(lambda: b"<presence/>" in server_side.data)
        client.flush()  # nothing pending: nothing happens
        connector.disconnect()
    finally:
        await port.stopListening()


class _TcpView:
    """The TCP transport as a STARTTLS stream sees it (its protocol is the TLS layer)."""

    def __init__(self, tcp, tls_protocol):
        self._tcp = tcp
        self.protocol = tls_protocol

    def __getattr__(self, name):
        return getattr(self._tcp, name)


async def until(check, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not met in time")


def test_flush_without_a_stream_does_nothing():
    client = SatXMPPClient("p", "me@localhost/r", "x", ConnectionSettings())
    client.flush()  # not connected: no error
    client.xmlstream = Stream(None)
    client.flush()
