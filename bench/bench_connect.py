"""connect + auth + bind over STARTTLS with SCRAM-SHA-256, ours beside bare clients.

Every client connects to the same minimal Prosody on loopback, verifies its certificate
against the test CA, does STARTTLS, authenticates and binds a resource; the time is from the
TCP connect call to "session ready", then the client disconnects cleanly. Clients are
interleaved within each run so drifts hit them alike.

- ours, first connection: :class:`SatXMPPClient` with the salted-password cache cleared, so
  SCRAM's PBKDF2 (Prosody's iteration count) is paid; "ready" also includes XEP-0198
  ``<enable/>`` (one more round trip that the bare clients do not make);
- ours, reconnection: the same with the salted password cached (what every reconnection and
  every later connection of a profile pays);
- bare slixmpp (SCRAM-SHA-256, no plugin; it has no salted-password cache);
- bare Twisted ``XMPPClientFactory``: Twisted has no SCRAM, it authenticates with PLAIN over
  TLS (so: the same stack without the SCRAM cost);
- raw socket, PLAIN over TLS (:class:`bench.common.RawXMPP`, blocking): the physical floor.
"""

from __future__ import annotations

import asyncio
import time

from bench.common import (
    RawXMPP,
    await_twisted,
    make_slixmpp,
    median,
    slixmpp_connect,
    slixmpp_disconnect,
)
from bench.runner import Row, benchmark

TARGET_MS = 50


def _settings(server):
    from sat.core.xmpp.connection import ConnectionSettings

    return ConnectionSettings(
        host=server.host,
        port=server.c2s_port,
        ca_file=str(server.ca_cert_path),
        connect_timeout=5,
        init_timeout=10,
    )


async def connect_ours(server, account, first: bool) -> float:
    """ms to get our client's session ready (SCRAM cache cleared when ``first``)."""
    from sat.core.xmpp import sasl
    from sat.core.xmpp.client import SatXMPPClient

    if first:
        sasl.clear_salted_password_cache()
    client = SatXMPPClient("bench", f"{account.jid}/ours", account.password, _settings(server))
    t0 = time.perf_counter()
    await await_twisted(client.connect())
    elapsed = (time.perf_counter() - t0) * 1000
    if client.sasl_mechanism != "SCRAM-SHA-256":
        raise RuntimeError(f"expected SCRAM-SHA-256, the client used {client.sasl_mechanism}")
    await await_twisted(client.disconnect())
    return elapsed


async def connect_slixmpp(server, account) -> float:
    xmpp = make_slixmpp(f"{account.jid}/slix", account.password, str(server.ca_cert_path))
    t0 = time.perf_counter()
    await slixmpp_connect(xmpp, server.host, server.c2s_port)
    elapsed = (time.perf_counter() - t0) * 1000
    await slixmpp_disconnect(xmpp)
    return elapsed


async def connect_twisted(server, account) -> float:
    """A bare twisted.words client (XMPPClientFactory: STARTTLS, PLAIN, bind, session)."""
    from twisted.internet import defer, endpoints, reactor
    from twisted.words.protocols.jabber import client, jid, xmlstream

    from sat.core.xmpp.connection import tls_options

    factory = client.XMPPClientFactory(
        jid.JID(f"{account.jid}/tw"),
        account.password,
        configurationForTLS=tls_options(server.domain, str(server.ca_cert_path)),
    )
    factory.maxRetries = 0
    ready: defer.Deferred = defer.Deferred()
    factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, ready.callback)
    factory.addBootstrap(xmlstream.INIT_FAILED_EVENT, ready.errback)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, server.host, server.c2s_port, timeout=5)
    t0 = time.perf_counter()
    connecting = endpoint.connect(factory)
    connecting.addErrback(lambda f: ready.called or ready.errback(f))
    xs = await asyncio.wait_for(ready.asFuture(asyncio.get_running_loop()), 15)
    elapsed = (time.perf_counter() - t0) * 1000
    factory.stopTrying()
    closed: defer.Deferred = defer.Deferred()
    xs.addObserver(xmlstream.STREAM_END_EVENT, lambda _: closed.called or closed.callback(None))
    xs.sendFooter()
    xs.transport.loseConnection()
    await asyncio.wait_for(closed.asFuture(asyncio.get_running_loop()), 5)
    return elapsed


def connect_raw(server, account) -> float:
    raw = RawXMPP(
        server.host,
        server.c2s_port,
        server.domain,
        account.user,
        account.password,
        str(server.ca_cert_path),
    )
    t0 = time.perf_counter()
    raw.connect()
    elapsed = (time.perf_counter() - t0) * 1000
    raw.close()
    return elapsed


@benchmark("connect", order=10, timeout=(40.0, 180.0), description="connect+auth+bind (SCRAM)")
async def bench_connect(ctx) -> list[Row]:
    """connect+auth+bind over STARTTLS with SCRAM-SHA-256, beside slixmpp, Twisted, raw."""
    server = ctx.prosody()
    account = ctx.account("conn")
    per_run = ctx.scale(4, 10)
    names = ("first", "again", "slix", "twisted", "raw")
    samples: dict[str, list[float]] = {n: [] for n in names}
    for run in ctx.repetitions():
        current: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(per_run):
            current["first"].append(await connect_ours(server, account, first=True))
            current["again"].append(await connect_ours(server, account, first=False))
            current["slix"].append(await connect_slixmpp(server, account))
            current["twisted"].append(await connect_twisted(server, account))
            current["raw"].append(connect_raw(server, account))
        if run.measured:
            for name in names:
                samples[name].append(median(current[name]))
    ctx.log("medians: " + ", ".join(f"{n} {median(v):.1f} ms" for n, v in samples.items()))
    return [
        Row(
            "connect+auth+bind, first (SCRAM-SHA-256)",
            samples["first"],
            samples["slix"],
            "ms",
            target=TARGET_MS,
            higher_is_better=False,
            baseline_name="bare slixmpp, SCRAM-SHA-256",
            note="includes PBKDF2 at Prosody's iteration count, and our XEP-0198 <enable/>",
        ),
        Row(
            "connect+auth+bind, reconnect (salted pw cached)",
            samples["again"],
            samples["slix"],
            "ms",
            target=TARGET_MS,
            higher_is_better=False,
            baseline_name="bare slixmpp, SCRAM-SHA-256",
        ),
        Row(
            "connect+auth+bind, reconnect vs Twisted",
            samples["again"],
            samples["twisted"],
            "ms",
            higher_is_better=False,
            baseline_name="bare Twisted client, PLAIN",
        ),
        Row(
            "connect+auth+bind, reconnect vs raw socket",
            samples["again"],
            samples["raw"],
            "ms",
            higher_is_better=False,
            baseline_name="raw socket, PLAIN",
        ),
    ]
