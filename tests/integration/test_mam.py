"""MAM (XEP-0313) catch-up with the real daemon, the test Prosody and slixmpp as the sender.

A profile is offline while slixmpp (an independent XMPP implementation) sends it messages;
Prosody archives them; when the profile connects again the daemon catches up: every message
stored once, in order, with progress signals; doing it again stores nothing.
"""

from __future__ import annotations

import asyncio

import pytest

from sat_frontends.bridge.dbus_client import DBusBridgeClient
from tests.support.dbus import asyncio_test
from tests.support.prosody import Account, ProsodyServer


@pytest.fixture
def daemon(sat_daemon):
    return sat_daemon


async def bridge_for(daemon) -> DBusBridgeClient:
    return await DBusBridgeClient.connect(daemon.bus_address, wait=10, timeout=60)


async def create_profile(bridge, name: str, account: Account, server: ProsodyServer) -> None:
    await bridge.profile_create(
        name, account.jid, account.password, "", {"host": "127.0.0.1", "port": server.c2s_port}
    )


# --- slixmpp as the sender, on its own loop in a worker thread -----------------------------------


def _slixmpp_send(server: ProsodyServer, sender: Account, to: str, bodies: list[str]) -> None:
    """Log in as ``sender`` with slixmpp, send ``bodies`` to ``to``, wait until the server has
    handled them all (a ping answered after them), log out."""
    import slixmpp

    async def scenario():
        xmpp = slixmpp.ClientXMPP(sender.jid, sender.password)
        xmpp.enable_direct_tls = False
        xmpp.enable_starttls = True
        xmpp.enable_plaintext = False
        xmpp.ca_certs = server.ca_cert_path
        xmpp.register_plugin("xep_0199")
        started = asyncio.ensure_future(xmpp.wait_until("session_start", timeout=20))
        xmpp.connect(server.host, server.c2s_port)
        await started
        for body in bodies:
            xmpp.send_message(mto=to, mbody=body, mtype="chat")
        # the server handles one session's stanzas in order: once this answer comes back,
        # every message above was routed (and archived)
        await xmpp.plugin["xep_0199"].ping(jid=server.domain, timeout=60)
        await xmpp.disconnect(wait=2.0)

    asyncio.run(asyncio.wait_for(scenario(), 120))


async def slixmpp_send(server, sender, to, bodies) -> None:
    await asyncio.to_thread(_slixmpp_send, server, sender, to, bodies)


# --- helpers -----------------------------------------------------------------------------------


class ProgressWatcher:
    """Collects the progress signals of one job id."""

    def __init__(self, bridge: DBusBridgeClient, job_id: str):
        self.job_id = job_id
        self.started: list[dict] = []
        self.updates: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self.finished: asyncio.Future = asyncio.get_running_loop().create_future()
        bridge.on("ProgressStarted", self._started)
        bridge.on("ProgressUpdated", self._updated)
        bridge.on("ProgressFinished", self._finished)
        bridge.on("ProgressError", self._error)

    def _started(self, profile, job_id, metadata):
        if job_id == self.job_id:
            self.started.append(metadata)

    def _updated(self, profile, job_id, position, size):
        if job_id == self.job_id:
            self.updates.append((position, size))

    def _finished(self, profile, job_id, metadata):
        if job_id == self.job_id and not self.finished.done():
            self.finished.set_result(metadata)

    def _error(self, profile, job_id, error):
        if job_id == self.job_id:
            self.errors.append(error)
            if not self.finished.done():
                self.finished.set_exception(AssertionError(f"catch-up failed: {error}"))

    def reset(self):
        self.started.clear()
        self.updates.clear()
        self.finished = asyncio.get_running_loop().create_future()

    async def wait(self, timeout: float = 60) -> dict:
        return await asyncio.wait_for(self.finished, timeout)


async def history(bridge, profile, with_jid) -> list[dict]:
    return await bridge.history_get(profile, with_jid, 10_000, {})


# --- tests -------------------------------------------------------------------------------------


@asyncio_test(timeout=240)
async def test_offline_profile_catches_up_500_messages_once(daemon, prosody, make_account):
    alice, sender = make_account("mam-a"), make_account("mam-slix")
    bridge = await bridge_for(daemon)
    try:
        await create_profile(bridge, "alice", alice, prosody)
        watcher = ProgressWatcher(bridge, f"mam:alice:{alice.jid}")
        # first connection: the archive is empty; the daemon syncs (nothing) and goes offline
        await bridge.profile_connect("alice", "")
        first = await watcher.wait()
        assert first["stored"] == 0 and first["first_sync"]
        await bridge.profile_disconnect("alice")

        bodies = [f"archived message {i:03d} – été" for i in range(500)]
        await slixmpp_send(prosody, sender, alice.jid, bodies)

        watcher.reset()
        await bridge.profile_connect("alice", "")
        done = await watcher.wait(120)
        assert watcher.started and watcher.started[0]["archive"] == alice.jid
        assert done["stored"] == 500, done
        assert done["duplicates"] == 0 and done["complete"] and not done["first_sync"]
        # the test server pages by 50 (max_archive_query_results): progress at every page
        assert len(watcher.updates) >= 10
        positions = [position for position, _size in watcher.updates]
        assert positions == sorted(positions) and positions[-1] == 500

        stored = await history(bridge, "alice", sender.jid)
        assert [m["body"] for m in stored] == bodies  # all, once, in order
        assert all(m["extra"].get("archived") for m in stored)
        assert all(m["from"].startswith(sender.jid) for m in stored)
        assert len({m["stanza_id"] for m in stored}) == 500

        # doing it again stores nothing new: manual trigger...
        watcher.reset()
        counts = await bridge.mam_catch_up("alice")
        assert counts["stored"] == 0 and counts["complete"]
        # ...and a new session
        await bridge.profile_disconnect("alice")
        watcher.reset()
        await bridge.profile_connect("alice", "")
        again = await watcher.wait()
        assert again["stored"] == 0
        assert len(await history(bridge, "alice", sender.jid)) == 500
    finally:
        await bridge.close()


@asyncio_test(timeout=240)
async def test_live_messages_during_catch_up_are_stored_once(daemon, prosody, make_account):
    bob, sender = make_account("mam-b"), make_account("mam-slix")
    bridge = await bridge_for(daemon)
    try:
        await create_profile(bridge, "bob", bob, prosody)
        watcher = ProgressWatcher(bridge, f"mam:bob:{bob.jid}")
        await bridge.profile_connect("bob", "")
        await watcher.wait()
        await bridge.profile_disconnect("bob")
        offline = [f"offline {i:03d}" for i in range(300)]
        await slixmpp_send(prosody, sender, bob.jid, offline)

        live = [f"live {i:03d}" for i in range(60)]
        watcher.reset()
        # the sender starts while the profile connects: these arrive during the catch-up
        sending = asyncio.ensure_future(slixmpp_send(prosody, sender, bob.jid, live))
        await bridge.profile_connect("bob", "")
        await watcher.wait(120)
        await sending
        expected = offline + live
        for _ in range(100):  # the last live messages may still be in the pipeline
            stored = await history(bridge, "bob", sender.jid)
            if len(stored) >= len(expected):
                break
            await asyncio.sleep(0.1)
        bodies = [m["body"] for m in stored]
        assert sorted(bodies) == sorted(expected)  # each exactly once
        assert bodies[:300] == offline  # the archive's order
        await bridge.mam_catch_up("bob")
        assert len(await history(bridge, "bob", sender.jid)) == len(expected)
    finally:
        await bridge.close()


@asyncio_test(timeout=120)
async def test_mam_query_scrolls_back_past_stored_history(daemon, prosody, make_account):
    carol, sender = make_account("mam-c"), make_account("mam-slix")
    bodies = [f"old {i:02d}" for i in range(80)]
    await slixmpp_send(prosody, sender, carol.jid, bodies)
    bridge = await bridge_for(daemon)
    try:
        await create_profile(bridge, "carol", carol, prosody)
        # first sync of this profile: only the most recent page (50 on the test server)
        await bridge.param_set("mam", "first_sync_days", "0", "carol")
        watcher = ProgressWatcher(bridge, f"mam:carol:{carol.jid}")
        await bridge.profile_connect("carol", "")
        first = await watcher.wait()
        assert first["first_sync"] and first["stored"] == 50
        assert [m["body"] for m in await history(bridge, "carol", sender.jid)] == bodies[30:]

        # scrolling back: each call fetches the page before the oldest stored message
        page = await bridge.mam_query("carol", sender.jid, {}, 20)
        assert [m["body"] for m in page] == bodies[10:30]
        page = await bridge.mam_query("carol", sender.jid, {}, 20)
        assert [m["body"] for m in page] == bodies[:10]
        assert await bridge.mam_query("carol", sender.jid, {}, 20) == []
        stored = await history(bridge, "carol", sender.jid)
        assert [m["body"] for m in stored] == bodies
        # asking for an already stored page returns it without storing it twice
        again = await bridge.mam_query("carol", sender.jid, {"before_uid": stored[10]["uid"]}, 5)
        assert [m["uid"] for m in again] == [m["uid"] for m in stored[5:10]]
        assert len(await history(bridge, "carol", sender.jid)) == 80
    finally:
        await bridge.close()
