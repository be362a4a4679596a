"""The Prosody harness itself: ports, certificates, accounts, restart, and a real client session.

Raw XMPP probes use the stdlib (socket + ssl); the end-to-end check uses slixmpp, run on its own
asyncio loop in a worker thread so it never touches the Twisted reactor pytest-twisted may own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import ssl
import threading
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.support.prosody import LOOPBACK, ProsodyServer
from tests.support.slix_peer import new_client

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SM = "urn:xmpp:sm:3"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_UPLOAD = "urn:xmpp:http:upload:0"
IO_TIMEOUT = 5.0


# ------------------------------------------------------------------ raw stream helpers


def _read_until(sock: socket.socket, *markers: bytes, timeout: float = IO_TIMEOUT) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while not any(m in data for m in markers):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed while waiting for {markers}: {data!r}")
        data += chunk
    return data


def _open_stream(sock: socket.socket, domain: str) -> ET.Element:
    """Send a stream header, return the <features/> element."""
    sock.sendall(
        f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
        f"xmlns='jabber:client' xmlns:stream='{NS_STREAM}'>".encode()
    )
    data = _read_until(sock, b"</stream:features>").decode()
    match = re.search(r"<stream:features.*</stream:features>", data, re.S)
    assert match, data
    # the stream prefix is declared on the (unclosed) stream header: declare it here
    fragment = match.group(0).replace("<stream:features", f"<features xmlns='{NS_STREAM}'", 1)
    fragment = fragment.replace("</stream:features>", "</features>")
    return ET.fromstring(fragment)


def _mechanisms(features: ET.Element) -> set[str]:
    return {m.text or "" for m in features.iter(f"{{{NS_SASL}}}mechanism")}


def _ca_context(server: ProsodyServer, check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.ca_cert_path))
    ctx.check_hostname = check_hostname
    return ctx


def _starttls(
    server: ProsodyServer, domain: str, ctx: ssl.SSLContext, server_hostname: str | None = None
) -> tuple[ssl.SSLSocket, ET.Element]:
    """STARTTLS on the c2s port; returns the TLS socket and the post-TLS features."""
    sock = socket.create_connection((LOOPBACK, server.c2s_port), timeout=IO_TIMEOUT)
    try:
        features = _open_stream(sock, domain)
        assert features.find(f"{{{NS_TLS}}}starttls") is not None
        sock.sendall(f"<starttls xmlns='{NS_TLS}'/>".encode())
        assert b"<proceed" in _read_until(sock, b"<proceed", b"<failure")
        tls = ctx.wrap_socket(sock, server_hostname=server_hostname or domain)
    except BaseException:
        sock.close()
        raise
    return tls, _open_stream(tls, domain)


def _authenticate(
    server: ProsodyServer, user: str, password: str
) -> tuple[ssl.SSLSocket, ET.Element]:
    """SASL PLAIN over STARTTLS; returns the open socket and the post-auth features."""
    tls, features = _starttls(server, server.domain, _ca_context(server))
    try:
        assert "PLAIN" in _mechanisms(features)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        tls.sendall(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>".encode())
        reply = _read_until(tls, b"<success", b"</failure>")
        assert b"<success" in reply, f"authentication of {user} failed: {reply!r}"
        return tls, _open_stream(tls, server.domain)
    except BaseException:
        tls.close()
        raise


def _plain_login(server: ProsodyServer, user: str, password: str) -> ET.Element:
    """Log in and out again; returns the post-auth features."""
    tls, features = _authenticate(server, user, password)
    tls.close()
    return features


# ------------------------------------------------------------------ slixmpp in a thread


def _run_async(make_coro: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    """Run a coroutine on a private event loop in a worker thread, bounded by ``timeout``."""
    box: dict[str, Any] = {}

    def target() -> None:
        async def bounded() -> Any:
            return await asyncio.wait_for(make_coro(), timeout)

        try:
            box["result"] = asyncio.run(bounded())
        except BaseException as exc:  # handed back to the test thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="slixmpp-test", daemon=True)
    thread.start()
    thread.join(timeout + 10)
    if thread.is_alive():
        pytest.fail(f"slixmpp scenario still running after {timeout + 10} s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


class _Client:
    """A slixmpp client that records the stream features it receives."""

    def __init__(self, server: ProsodyServer, user: str, password: str, mech: str) -> None:
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath

        self.server = server
        self.xmpp = new_client(server, f"{user}@{server.domain}", password, sasl_mech=mech)
        self.features: list[ET.Element] = []
        self.xmpp.register_handler(
            Callback(
                "features spy",
                MatchXPath(f"{{{NS_STREAM}}}features"),
                lambda stanza: self.features.append(stanza.xml),
            )
        )

    async def connect(self) -> None:
        failed = asyncio.ensure_future(self.xmpp.wait_until("failed_all_auth", timeout=10))
        started = asyncio.ensure_future(self.xmpp.wait_until("session_start", timeout=10))
        self.xmpp.connect(self.server.host, self.server.c2s_port)
        done, _ = await asyncio.wait({failed, started}, return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        started.cancel()
        if started not in done:
            raise AssertionError(f"{self.xmpp.boundjid} could not log in")

    @property
    def mechanism(self) -> str:
        return self.xmpp.plugin["feature_mechanisms"].mech.name

    async def disconnect(self) -> None:
        await self.xmpp.disconnect(wait=1.0)


# ------------------------------------------------------------------ tests


def test_server_runs_on_loopback(prosody: ProsodyServer) -> None:
    assert prosody.running and prosody.pid
    ports = {prosody.c2s_port, prosody.direct_tls_port, prosody.http_port, prosody.proxy_port}
    assert len(ports) == 4
    for port in ports:
        with socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT):
            pass
    assert prosody.ca_cert_path.is_file()
    assert prosody.log_path.is_file()
    assert "c2s_direct_tls" in prosody.log_path.read_text()


def test_direct_tls_verifies_against_test_ca(prosody: ProsodyServer) -> None:
    raw = socket.create_connection((LOOPBACK, prosody.direct_tls_port), timeout=IO_TIMEOUT)
    with _ca_context(prosody).wrap_socket(raw, server_hostname="localhost") as tls:
        cert = tls.getpeercert()
        assert ("DNS", "localhost") in cert["subjectAltName"]
        features = _open_stream(tls, "localhost")
        assert "SCRAM-SHA-256" in _mechanisms(features)
        # already encrypted: no STARTTLS offered again
        assert features.find(f"{{{NS_TLS}}}starttls") is None


def test_starttls_port_requires_starttls(prosody: ProsodyServer) -> None:
    with socket.create_connection((LOOPBACK, prosody.c2s_port), timeout=IO_TIMEOUT) as sock:
        features = _open_stream(sock, "localhost")
    starttls = features.find(f"{{{NS_TLS}}}starttls")
    assert starttls is not None
    assert starttls.find(f"{{{NS_TLS}}}required") is not None
    # c2s_require_encryption: no SASL before TLS
    assert not _mechanisms(features)


def test_starttls_then_scram_sha_256_offered(prosody: ProsodyServer) -> None:
    tls, features = _starttls(prosody, "localhost", _ca_context(prosody))
    with tls:
        mechanisms = _mechanisms(features)
    assert {"SCRAM-SHA-256", "PLAIN"} <= mechanisms
    assert "SCRAM-SHA-1" not in mechanisms


def test_mismatching_domain_certificate_is_refused(prosody: ProsodyServer) -> None:
    # STARTTLS on the c2s port, as a client of mismatch.test would do
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _starttls(prosody, prosody.mismatch_domain, _ca_context(prosody))
    # direct TLS with SNI mismatch.test
    raw = socket.create_connection((LOOPBACK, prosody.direct_tls_port), timeout=IO_TIMEOUT)
    with raw, pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _ca_context(prosody).wrap_socket(raw, server_hostname=prosody.mismatch_domain)
    # the chain itself is valid: only the name is wrong (it is the localhost certificate)
    tls, features = _starttls(
        prosody, prosody.mismatch_domain, _ca_context(prosody, check_hostname=False)
    )
    with tls:
        san = tls.getpeercert()["subjectAltName"]
    assert ("DNS", "localhost") in san
    assert ("DNS", prosody.mismatch_domain) not in san
    assert _mechanisms(features)


def test_slixmpp_scram_sha_256_message_and_sm(prosody: ProsodyServer) -> None:
    async def scenario() -> dict[str, Any]:
        alice = _Client(prosody, "alice", "alice-pass-1", "SCRAM-SHA-256")
        bob = _Client(prosody, "bob", "bob-pass-1", "SCRAM-SHA-256")
        received: asyncio.Future = asyncio.get_running_loop().create_future()

        def on_message(msg: Any) -> None:
            if msg["body"] and not received.done():
                received.set_result((str(msg["from"]), msg["body"]))

        bob.xmpp.add_event_handler("message", on_message)
        await asyncio.gather(alice.connect(), bob.connect())
        try:
            alice.xmpp.send_message(mto=bob.xmpp.boundjid.full, mbody="hello bob", mtype="chat")
            sender, body = await asyncio.wait_for(received, 5)
        finally:
            await asyncio.gather(alice.disconnect(), bob.disconnect())
        return {
            "mech": alice.mechanism,
            "sender": sender,
            "body": body,
            "offered": set().union(*(_mechanisms(f) for f in alice.features)),
            "sm": alice.features[-1].find(f"{{{NS_SM}}}sm") is not None,
            "alice_jid": alice.xmpp.boundjid.full,
        }

    result = _run_async(scenario)
    assert result["mech"] == "SCRAM-SHA-256"
    assert "SCRAM-SHA-256" in result["offered"]
    assert result["sender"] == result["alice_jid"]
    assert result["body"] == "hello bob"
    assert result["sm"], "XEP-0198 (urn:xmpp:sm:3) not advertised after authentication"


def test_components_upload_and_pubsub_policy(prosody: ProsodyServer) -> None:
    from slixmpp.exceptions import IqError

    payload = b"some bytes for upload\n"

    async def scenario() -> dict[str, Any]:
        alice = _Client(prosody, "alice", "alice-pass-1", "SCRAM-SHA-256")
        admin = _Client(prosody, "admin", "admin-pass-1", "SCRAM-SHA-256")
        for client in (alice, admin):
            client.xmpp.register_plugin("xep_0060")
        await asyncio.gather(alice.connect(), admin.connect())
        try:
            iq = alice.xmpp.make_iq_get(ito=prosody.upload_domain)
            iq.append(
                ET.Element(
                    f"{{{NS_UPLOAD}}}request",
                    {
                        "filename": "hello.txt",
                        "size": str(len(payload)),
                        "content-type": "text/plain",
                    },
                )
            )
            reply = await iq.send(timeout=5)
            put = reply.xml.find(f"{{{NS_UPLOAD}}}slot/{{{NS_UPLOAD}}}put")
            get_url = reply.xml.find(f"{{{NS_UPLOAD}}}slot/{{{NS_UPLOAD}}}get").get("url")
            request = urllib.request.Request(put.get("url"), data=payload, method="PUT")
            request.add_header("Content-Type", "text/plain")
            for header in put.iter(f"{{{NS_UPLOAD}}}header"):
                request.add_header(header.get("name"), header.text or "")
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=5)
            downloaded = await asyncio.to_thread(
                lambda: urllib.request.urlopen(get_url, timeout=5).read()
            )
            try:
                await alice.xmpp.plugin["xep_0060"].create_node(
                    prosody.pubsub_domain, "alice-node", timeout=5
                )
                alice_error = None
            except IqError as exc:
                alice_error = exc.condition
            await admin.xmpp.plugin["xep_0060"].create_node(
                prosody.pubsub_domain, "admin-node", timeout=5
            )
        finally:
            await asyncio.gather(alice.disconnect(), admin.disconnect())
        return {"get_url": get_url, "downloaded": downloaded, "alice_error": alice_error}

    result = _run_async(scenario)
    assert result["get_url"].startswith(prosody.http_base_url)
    assert result["downloaded"] == payload
    assert result["alice_error"] == "forbidden"


def test_restart_keeps_ports_and_data(fresh_prosody: ProsodyServer) -> None:
    server = fresh_prosody
    ports = (server.c2s_port, server.direct_tls_port, server.http_port, server.proxy_port)
    first_pid = server.pid
    # a client still connected when the server goes down (the server closes first, so its
    # side of the connection lingers in TIME_WAIT: the port must be reusable anyway)
    connected, _ = _authenticate(server, "alice", "alice-pass-1")
    with connected:
        server.restart()
        # Prosody closed it (usually after a <system-shutdown/> stream error, not always flushed)
        connected.settimeout(IO_TIMEOUT)
        with contextlib.suppress(OSError):
            while connected.recv(65536):
                pass
    assert server.pid and server.pid != first_pid
    assert (server.c2s_port, server.direct_tls_port, server.http_port, server.proxy_port) == ports
    features = _plain_login(server, "alice", "alice-pass-1")
    assert features.find(f"{{{NS_SM}}}sm") is not None

    # accounts can be created while stopped too (prosodyctl, same data directory)
    server.stop()
    assert not server.running
    with pytest.raises(OSError):
        socket.create_connection((LOOPBACK, server.c2s_port), timeout=1).close()
    server.register("carol", "carol-pass-1")
    server.start()
    _plain_login(server, "carol", "carol-pass-1")


def test_make_account_is_unique_and_usable(prosody: ProsodyServer, make_account) -> None:
    first, second = make_account(), make_account("other")
    assert first.jid != second.jid
    assert first.host == prosody.domain
    _plain_login(prosody, second.user, second.password)


def test_scram_sha_1_minimal_and_sql_storage(make_prosody) -> None:
    sha1 = make_prosody(password_hash="SHA-1", minimal=True)
    tls, features = _starttls(sha1, "localhost", _ca_context(sha1))
    tls.close()
    assert "SCRAM-SHA-1" in _mechanisms(features)
    assert "SCRAM-SHA-256" not in _mechanisms(features)
    sha1.register("erin", "erin-pass-1")
    _plain_login(sha1, "erin", "erin-pass-1")

    sql = make_prosody(storage="sql")
    sql.register("dave", "dave-pass-1")
    assert (sql.data_dir / "prosody.sqlite").is_file()
    _plain_login(sql, "dave", "dave-pass-1")
