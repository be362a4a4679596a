"""The daemon's receive pipeline in one process, without network: CPU per message.

The real host (:class:`sat.core.host.SAT`: storage, every plugin, hooks, the bridge) and a
profile's real stream (``SatXmlStream`` built by the client's factory), fed with the bytes a
server would send. No TLS, no server, no other process: what is measured is our own code
(parse, dispatch, hooks, storage hand-off, ``MessageNew`` emission), so a change shows in
the figure even when the machine is noisy, and a profiler sees only the pipeline.

``python -m bench.pipeline_probe [--count N] [--bus none|ADDRESS] [--profile FILE]``: prints
messages/s and main-thread CPU µs per message; ``--profile`` writes cProfile stats.
The runner's ``pipeline`` benchmark uses :func:`run_probe`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

STREAM_OPEN = (
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    "from='localhost' id='probe' version='1.0'>"
)
ME = "me@localhost"


def stanzas(count: int, run: int = 0) -> list[bytes]:
    """What a contact's client sends nowadays: body, origin-id, receipt request, markable,
    active chat state, and the server's stanza-id (as Prosody with mod_mam adds)."""
    out = []
    for i in range(count):
        out.append(
            f"<message xmlns='jabber:client' from='peer@localhost/res' to='{ME}/probe' "
            f"type='chat' id='m{run}-{i}'><body>message {run}-{i}: the quick brown fox jumps "
            f"over the lazy dog</body><origin-id xmlns='urn:xmpp:sid:0' id='o{run}-{i}'/>"
            "<request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>"
            "<active xmlns='http://jabber.org/protocol/chatstates'/>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ME}' id='s{run}-{i}'/></message>".encode()
        )
    return out


class Probe:
    """A started host and one profile's stream, ready to be fed."""

    def __init__(self, workdir: Path, bus: str = "none"):
        self.workdir = workdir
        self.bus = bus
        self.host = None
        self.stream = None
        self.stored = 0
        self._waiter: asyncio.Future | None = None
        self._wanted = 0

    async def start(self) -> None:
        from twisted.internet.testing import StringTransport
        from wokkel import subprotocols

        from bench.common import await_twisted
        from sat.core.host import SAT
        from sat.core.xmpp.client import SatXMPPClient
        from sat.core.xmpp.connection import ConnectionSettings
        from sat.memory.config import Config

        config = Config.from_dict({"storage": {"path": str(self.workdir / "sat.db")}})
        host = self.host = SAT(config, bus=self.bus)
        await await_twisted(host.start())
        await await_twisted(host.profiles.create("probe"))
        client = SatXMPPClient("probe", f"{ME}/probe", "x", ConnectionSettings())
        host.attach_client(client)
        self._seed_disco(client)
        original = host.bridge.emit

        def counting_emit(name, *args):
            original(name, *args)
            if name == "MessageNew":
                self.stored += 1
                if self._waiter is not None and self.stored >= self._wanted:
                    self._waiter.set_result(None)
                    self._waiter = None

        host.bridge.emit = counting_emit
        xs = client.factory.buildProtocol(None)
        xs.makeConnection(StringTransport())
        xs.dataReceived(STREAM_OPEN.encode())
        # the handlers' observers, as after authentication (without the session start:
        # no roster, disco or MAM request goes to this fake server)
        subprotocols.StreamManager._authd(client, xs)
        self.stream = xs

    def _seed_disco(self, client) -> None:
        """Our account announces stanza-ids and MAM, as Prosody with mod_mam does (a
        connected profile learns it by disco at connection)."""
        from twisted.words.xish import domish

        disco = self.host.plugins.get("XEP-0030")
        if disco is None:
            return
        query = domish.Element(("http://jabber.org/protocol/disco#info", "query"))
        for feature in ("urn:xmpp:sid:0", "urn:xmpp:mam:2"):
            query.addElement("feature")["var"] = feature
        disco._info_cache.setdefault(client.profile, {})[(ME, "")] = disco.parse_info(query)

    async def feed(self, chunks: list[bytes], per_read: int = 20) -> float:
        """Feed the stanzas ``per_read`` at a time (as TLS records bring them); wait until
        each is stored and signalled; return the seconds it took."""
        loop = asyncio.get_running_loop()
        self._wanted = self.stored + len(chunks)
        self._waiter = loop.create_future()
        t0 = time.perf_counter()
        for at in range(0, len(chunks), per_read):
            self.stream.dataReceived(b"".join(chunks[at : at + per_read]))
            await asyncio.sleep(0)  # let the storage answers in, as between socket reads
        await asyncio.wait_for(self._waiter, 120)
        return time.perf_counter() - t0

    async def stop(self) -> None:
        from bench.common import await_twisted

        if self.host is not None:
            await await_twisted(self.host.stop())


def thread_cpu() -> float:
    return time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID)


async def run_probe(count: int, runs: int, bus: str = "none") -> list[tuple[float, float]]:
    """(messages/s, main-thread CPU µs per message) for each measured run, after a warm-up."""
    with tempfile.TemporaryDirectory(prefix="sat-probe-") as tmp:
        probe = Probe(Path(tmp), bus)
        await probe.start()
        try:
            results = []
            for run in range(runs + 1):
                chunks = stanzas(count, run)
                cpu0 = thread_cpu()
                elapsed = await probe.feed(chunks)
                cpu = thread_cpu() - cpu0
                if run:
                    results.append((count / elapsed, cpu * 1e6 / count))
            return results
        finally:
            await probe.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--bus", default="none", help="none, private (a dbus-daemon of its own) or an address"
    )
    parser.add_argument("--profile", help="write cProfile stats of the measured runs here")
    args = parser.parse_args()
    from sat.core.reactor import install_asyncio_reactor

    install_asyncio_reactor()
    import logging

    logging.basicConfig(level=os.environ.get("PROBE_LOG", "WARNING"))

    async def go():
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
            try:
                return await run_probe(args.count, args.runs, args.bus)
            finally:
                prof.disable()
                prof.dump_stats(args.profile)
        return await run_probe(args.count, args.runs, args.bus)

    from twisted.internet import reactor

    result = {}
    bus_daemon = None
    if args.bus == "private":
        from tests.support.dbus import DBusDaemon

        bus_daemon = DBusDaemon(tempfile.mkdtemp(prefix="sat-probe-bus-")).start()
        args.bus = bus_daemon.address

    async def wrapper():
        try:
            result["r"] = await go()
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: asyncio.ensure_future(wrapper()))
    try:
        reactor.run()
    finally:
        if bus_daemon is not None:
            bus_daemon.stop()
    for rate, cpu in result["r"]:
        print(f"{rate:9,.0f} msg/s   {cpu:6.1f} µs CPU/msg (main thread)   pid {os.getpid()}")


if __name__ == "__main__":
    main()
