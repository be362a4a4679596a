"""Message delivery and state features through the real daemon, D-Bus and Prosody.

- two profiles: receipts come back, displayed markers update the sender's history,
  chat states are negotiated and signalled, origin-id / stanza-id are stored;
- carbons between two resources (two profiles) of one account, private messages
  not copied, a receipt reaching the copy of a message sent by the other resource;
- interoperability with slixmpp (an independent implementation) as the other party:
  it asks for a receipt and gets one, it acknowledges ours, it sends chat states;
  hostile stanzas from it (forged carbons, garbage receipts) change nothing.

slixmpp runs on the test's own asyncio loop (the one the Twisted asyncio reactor
drives), like the D-Bus client.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import xml.etree.ElementTree as ET

import pytest

from sat_frontends.bridge.dbus_client import DBusBridgeClient
from tests.support.daemon import SatDaemon
from tests.support.dbus import asyncio_test, dbus_bus  # noqa: F401  (fixture)

NS_RECEIPTS = "urn:xmpp:receipts"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_CLIENT = "jabber:client"
TIMEOUT = 10


@pytest.fixture
def daemon(tmp_path, dbus_bus, prosody):  # noqa: F811
    d = SatDaemon(tmp_path / "daemon", dbus_bus.address, prosody.ca_cert_path)
    d.start()
    yield d
    if d.process is not None:
        d.stop()
    # shown by pytest only when the test failed ("Captured stdout teardown")
    print(d.log_tail(150))


class Slix:
    """A slixmpp client of the test Prosody, on the running asyncio loop."""

    def __init__(self, server, account, resource="slix", plugins=("xep_0030", "xep_0184")):
        import slixmpp

        self.server = server
        self.xmpp = slixmpp.ClientXMPP(f"{account.jid}/{resource}", account.password)
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_starttls = True
        self.xmpp.enable_plaintext = False
        self.xmpp.ca_certs = server.ca_cert_path
        for plugin in plugins:
            self.xmpp.register_plugin(plugin)
        self.messages: asyncio.Queue = asyncio.Queue()
        self.receipts: asyncio.Queue = asyncio.Queue()
        self.xmpp.add_event_handler("message", self.messages.put_nowait)
        self.xmpp.add_event_handler("receipt_received", self.receipts.put_nowait)

    async def connect(self):
        started = asyncio.ensure_future(self.xmpp.wait_until("session_start", timeout=TIMEOUT))
        self.xmpp.connect(self.server.host, self.server.c2s_port)
        await started
        self.xmpp.send_presence()
        await self.xmpp.get_roster()

    async def disconnect(self):
        with contextlib.suppress(Exception):
            await self.xmpp.disconnect(wait=1.0)

    def send_raw(self, xml: str):
        self.xmpp.send_raw(xml)


async def befriend(server, first, second):
    """Mutual presence subscription between two accounts (slixmpp helper resources)."""
    a = Slix(server, first, "helper", plugins=())
    b = Slix(server, second, "helper", plugins=())
    await asyncio.gather(a.connect(), b.connect())
    try:
        a.xmpp.send_presence(pto=second.jid, ptype="subscribe")
        b.xmpp.send_presence(pto=first.jid, ptype="subscribe")
        for _ in range(100):
            if (
                a.xmpp.client_roster[second.jid]["subscription"] == "both"
                and b.xmpp.client_roster[first.jid]["subscription"] == "both"
            ):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the mutual subscription did not complete")
    finally:
        await asyncio.gather(a.disconnect(), b.disconnect())


class Signals:
    """Records the daemon's signals; ``wait`` for one matching a predicate."""

    def __init__(self, bridge):
        self.events: list[tuple] = []
        self._changed = asyncio.Event()
        for name in ("MessageNew", "MessageUpdate", "ChatStateReceived", "PresenceUpdate"):
            bridge.on(name, lambda *args, n=name: self._add(n, args))

    def _add(self, name, args):
        self.events.append((name, *args))
        self._changed.set()

    def of(self, name, profile=None):
        return [e[1:] for e in self.events if e[0] == name and profile in (None, e[1])]

    async def presence(self, profile, entity, timeout=TIMEOUT):
        """Wait until ``profile`` saw an available presence of ``entity`` (bare or full)."""
        return await self.wait(
            "PresenceUpdate",
            lambda p, e, show, *rest: (
                p == profile
                and show != "unavailable"
                and (e == entity or e.startswith(entity + "/"))
            ),
            timeout,
        )

    async def wait(self, name, predicate=lambda *a: True, timeout=TIMEOUT):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event in self.events:
                if event[0] == name and predicate(*event[1:]):
                    return event[1:]
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {name} signal matched within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


async def open_bridge(daemon) -> DBusBridgeClient:
    return await DBusBridgeClient.connect(daemon.bus_address, wait=10, timeout=30)


async def add_profile(bridge, name, account, server, **options):
    options = {"host": "127.0.0.1", "port": server.c2s_port, **options}
    await bridge.profile_create(name, account.jid, account.password, "", options)


async def history_of(bridge, profile, with_jid):
    return await bridge.history_get(profile, with_jid, 100, {})


async def eventually(check, timeout=TIMEOUT):
    """Poll an async check until it returns a truthy value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# --- two daemon profiles ----------------------------------------------------------------


@asyncio_test(timeout=90)
async def test_receipts_markers_and_chat_states_between_two_profiles(daemon, prosody, make_account):
    a, b = make_account("rcpt-alice"), make_account("rcpt-bob")
    await befriend(prosody, a, b)
    bridge = await open_bridge(daemon)
    signals = Signals(bridge)
    try:
        await add_profile(bridge, "alice", a, prosody)
        await add_profile(bridge, "bob", b, prosody)
        await bridge.profile_connect("alice", "")
        await bridge.profile_connect("bob", "")
        # each saw the other's initial presence: both sessions are fully set up
        await signals.presence("alice", b.jid)
        await signals.presence("bob", a.jid)

        uid = await bridge.message_send("alice", b.jid, "Did *you* get this?", {})
        _, received = await signals.wait(
            "MessageNew", lambda p, m: p == "bob" and m.get("body") == "Did *you* get this?"
        )
        assert received["extra"]["markable"] is True
        assert received["extra"]["styling"] == [{"type": "strong", "start": 4, "end": 9}]
        assert received["origin_id"] == uid  # our origin-id made it through
        # Prosody's archive stamped it, and the daemon trusts its own server's stamp
        assert received["stanza_id_by"] == b.jid and received["stanza_id"]

        # the receipt comes back to alice
        _, _, kind, data = await signals.wait(
            "MessageUpdate", lambda p, u, k, d: p == "alice" and u == uid and k == "receipt"
        )
        assert data["delivery"] == "received"
        (sent,) = await history_of(bridge, "alice", b.jid)
        assert sent["uid"] == uid and sent["extra"]["delivery"] == "received"
        assert sent["extra"]["receipt_requested"] is True

        # chat states: alice's message said <active/>, so bob may tell he is typing
        assert await bridge.chat_state_send("bob", a.jid, "composing") is True
        assert await bridge.chat_state_send("bob", a.jid, "composing") is False  # no repeat
        await signals.wait(
            "ChatStateReceived",
            lambda p, f, s: p == "alice" and f.startswith(b.jid) and s == "composing",
        )

        # bob answers, then reads alice's messages: markers update alice's history
        uid2 = await bridge.message_send("alice", b.jid, "second", {})
        _, second = await signals.wait(
            "MessageNew", lambda p, m: p == "bob" and m.get("body") == "second"
        )
        assert await bridge.marker_send("bob", second["uid"], "displayed") is True
        assert await bridge.marker_send("bob", second["uid"], "displayed") is False
        for marked in (uid, uid2):
            await signals.wait(
                "MessageUpdate",
                lambda p, u, k, d, m=marked: p == "alice" and u == m and k == "marker",
            )
        history = await history_of(bridge, "alice", b.jid)
        assert [m["extra"].get("marker") for m in history] == ["displayed", "displayed"]
        bob_side = await history_of(bridge, "bob", a.jid)
        assert [m["extra"].get("marker_sent") for m in bob_side] == ["displayed", "displayed"]
        # state-only messages and acks were not stored
        assert len(bob_side) == 2 and len(history) == 2
    finally:
        await bridge.close()


# --- carbons ------------------------------------------------------------------------------


@asyncio_test(timeout=90)
async def test_carbons_between_two_resources_of_one_account(daemon, prosody, make_account):
    c, d = make_account("carb-me"), make_account("carb-friend")
    await befriend(prosody, c, d)
    bridge = await open_bridge(daemon)
    signals = Signals(bridge)
    try:
        await add_profile(bridge, "pc", c, prosody, resource="pc")
        await add_profile(bridge, "phone", c, prosody, resource="phone")
        await add_profile(bridge, "friend", d, prosody)
        for profile in ("pc", "phone", "friend"):
            await bridge.profile_connect(profile, "")
        # initial presences go out once the plugins (carbons enabled) are done
        await signals.presence("phone", f"{c.jid}/pc")
        await signals.presence("pc", f"{c.jid}/phone")
        await signals.presence("friend", f"{c.jid}/pc")
        await signals.presence("friend", f"{c.jid}/phone")
        await signals.presence("pc", d.jid)

        # a message to the phone only: the pc gets a received copy
        await bridge.message_send("friend", f"{c.jid}/phone", "to your phone", {})
        _, copy = await signals.wait(
            "MessageNew", lambda p, m: p == "pc" and m.get("body") == "to your phone"
        )
        assert copy["extra"]["carbon"] == "received" and not copy["outgoing"]
        assert copy["from"].startswith(d.jid)

        # the phone writes: the pc stores it as outgoing, from the phone
        uid = await bridge.message_send("phone", d.jid, "from my phone", {})
        _, sent = await signals.wait(
            "MessageNew", lambda p, m: p == "pc" and m.get("body") == "from my phone"
        )
        assert sent["outgoing"] and sent["extra"]["carbon"] == "sent"
        assert sent["from"] == f"{c.jid}/phone" and sent["origin_id"] == uid
        # the friend's receipt reaches the pc's copy too (found by origin-id)
        await signals.wait(
            "MessageUpdate",
            lambda p, u, k, data: p == "pc" and u == sent["uid"] and k == "receipt",
        )
        await signals.wait(
            "MessageUpdate", lambda p, u, k, data: p == "phone" and u == uid and k == "receipt"
        )

        # a private message is not copied
        await bridge.message_send("phone", d.jid, "private one", {"private": True})
        await bridge.message_send("phone", d.jid, "public one", {})
        await signals.wait("MessageNew", lambda p, m: p == "pc" and m.get("body") == "public one")
        await signals.wait(
            "MessageNew", lambda p, m: p == "friend" and m.get("body") == "private one"
        )
        bodies = [m["body"] for m in await history_of(bridge, "pc", d.jid)]
        assert bodies == ["to your phone", "from my phone", "public one"]
    finally:
        await bridge.close()


# --- slixmpp as the other party -------------------------------------------------------------


@asyncio_test(timeout=90)
async def test_receipts_interoperate_with_slixmpp(daemon, prosody, make_account):
    me, other = make_account("slx-me"), make_account("slx-other")
    await befriend(prosody, me, other)
    bridge = await open_bridge(daemon)
    signals = Signals(bridge)
    slix = Slix(prosody, other)
    try:
        await add_profile(bridge, "me", me, prosody)
        await bridge.profile_connect("me", "")
        await slix.connect()
        await signals.presence("me", f"{other.jid}/slix")

        # slixmpp asks for a receipt: the daemon stores the message and answers
        message = slix.xmpp.make_message(mto=me.jid, mbody="receipt please", mtype="chat")
        message["request_receipt"] = True
        message_id = message["id"]
        message.send()
        receipt = await asyncio.wait_for(slix.receipts.get(), TIMEOUT)
        assert receipt["receipt"] == message_id
        assert receipt["from"].bare == me.jid
        _, stored = await signals.wait(
            "MessageNew", lambda p, m: p == "me" and m.get("body") == "receipt please"
        )
        assert stored["extra"]["message_id"] == message_id
        assert stored["extra"]["receipt_sent"] is True
        # Prosody's stanza-id for our archive is kept (stanza-id by our bare JID)
        assert stored["stanza_id_by"] == me.jid and stored["stanza_id"]

        # we ask: slixmpp's xep_0184 acknowledges, our history shows it
        uid = await bridge.message_send("me", other.jid, "ack this", {})
        incoming = await asyncio.wait_for(slix.messages.get(), TIMEOUT)
        while incoming["body"] != "ack this":
            incoming = await asyncio.wait_for(slix.messages.get(), TIMEOUT)
        assert incoming["request_receipt"] and incoming["id"] == uid
        await signals.wait(
            "MessageUpdate", lambda p, u, k, d: p == "me" and u == uid and k == "receipt"
        )
        history = await history_of(bridge, "me", other.jid)
        assert [m["extra"].get("delivery") for m in history if m["outgoing"]] == ["received"]

        # chat states from slixmpp
        state = slix.xmpp.make_message(mto=me.jid, mtype="chat")
        state.append(ET.Element("{http://jabber.org/protocol/chatstates}composing"))
        state.send()
        await signals.wait(
            "ChatStateReceived",
            lambda p, f, s: p == "me" and f.startswith(other.jid) and s == "composing",
        )
    finally:
        await slix.disconnect()
        await bridge.close()


@asyncio_test(timeout=90)
async def test_hostile_stanzas_from_slixmpp_change_nothing(daemon, prosody, make_account):
    me, evil = make_account("hst-me"), make_account("hst-evil")
    await befriend(prosody, me, evil)  # even a contact cannot forge these
    bridge = await open_bridge(daemon)
    signals = Signals(bridge)
    slix = Slix(prosody, evil, plugins=())
    try:
        await add_profile(bridge, "me", me, prosody)
        await bridge.profile_connect("me", "")
        await slix.connect()
        await signals.presence("me", f"{evil.jid}/slix")
        uid = await bridge.message_send("me", "victim@localhost", "to someone else", {})
        forged = (
            f"<message xmlns='{NS_CLIENT}' to='{me.jid}' type='chat' id='{uuid.uuid4().hex}'>"
            f"<sent xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>"
            f"<message xmlns='{NS_CLIENT}' from='{me.jid}/pc' to='victim@localhost' type='chat'>"
            "<body>I never wrote this</body></message></forwarded></sent></message>"
        )
        slix.send_raw(forged)
        for receipt_id in (uid, "x" * 3000, ""):
            slix.send_raw(
                f"<message xmlns='{NS_CLIENT}' to='{me.jid}' type='chat'>"
                f"<received xmlns='{NS_RECEIPTS}' id='{receipt_id}'/></message>"
            )
        slix.send_raw(
            f"<message xmlns='{NS_CLIENT}' to='{me.jid}' type='chat'>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' by='{evil.jid}' id='fake'/>"
            "<body>with a made-up stanza-id</body></message>"
        )
        _, last = await signals.wait(
            "MessageNew", lambda p, m: p == "me" and m.get("body") == "with a made-up stanza-id"
        )
        # Prosody's own stamp (by our account) is the only stanza-id kept
        assert last["stanza_id_by"] == me.jid and last["stanza_id"] != "fake"
        bodies = [m["body"] for m in await bridge.history_get("me", "", 100, {})]
        assert bodies == ["to someone else", "with a made-up stanza-id"]
        assert signals.of("MessageUpdate") == []
        assert await bridge.is_ready()
    finally:
        await slix.disconnect()
        await bridge.close()
