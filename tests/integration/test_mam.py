"""MAM (XEP-0313) catch-up with the real daemon, the test Prosody and slixmpp as the sender.

A profile is offline while slixmpp (an independent XMPP implementation) sends it messages;
Prosody archives them; when the profile connects again the daemon catches up: every message
stored once, in order, with progress signals; doing it again stores nothing.
"""

from __future__ import annotations

import asyncio

from tests.support.bridge_helpers import ProgressWatcher, create_profile, history, open_bridge
from tests.support.dbus import asyncio_test
from tests.support.slix_peer import send_messages
from tests.support.waiting import eventually

#: history_get limit: every stored message
ALL = 10_000


# --- tests -------------------------------------------------------------------------------------


@asyncio_test(timeout=240)
async def test_offline_profile_catches_up_500_messages_once(sat_daemon, prosody, make_account):
    alice, sender = make_account("mam-a"), make_account("mam-slix")
    bridge = await open_bridge(sat_daemon, timeout=60)
    try:
        await create_profile(bridge, "alice", alice, prosody)
        watcher = ProgressWatcher(bridge, f"mam:alice:{alice.jid}")
        # first connection: the archive is empty; the daemon syncs (nothing) and goes offline
        await bridge.profile_connect("alice", "")
        first = await watcher.wait()
        assert first["stored"] == 0 and first["first_sync"]
        await bridge.profile_disconnect("alice")

        bodies = [f"archived message {i:03d} – été" for i in range(500)]
        await send_messages(prosody, sender, alice.jid, bodies)

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

        stored = await history(bridge, "alice", sender.jid, ALL)
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
        assert len(await history(bridge, "alice", sender.jid, ALL)) == 500
    finally:
        await bridge.close()


@asyncio_test(timeout=240)
async def test_live_messages_during_catch_up_are_stored_once(sat_daemon, prosody, make_account):
    bob, sender = make_account("mam-b"), make_account("mam-slix")
    bridge = await open_bridge(sat_daemon, timeout=60)
    try:
        await create_profile(bridge, "bob", bob, prosody)
        watcher = ProgressWatcher(bridge, f"mam:bob:{bob.jid}")
        await bridge.profile_connect("bob", "")
        await watcher.wait()
        await bridge.profile_disconnect("bob")
        offline = [f"offline {i:03d}" for i in range(300)]
        await send_messages(prosody, sender, bob.jid, offline)

        live = [f"live {i:03d}" for i in range(60)]
        watcher.reset()
        # the sender starts while the profile connects: these arrive during the catch-up
        sending = asyncio.ensure_future(send_messages(prosody, sender, bob.jid, live))
        await bridge.profile_connect("bob", "")
        await watcher.wait(120)
        await sending
        expected = offline + live

        async def all_stored():  # the last live messages may still be in the pipeline
            stored = await history(bridge, "bob", sender.jid, ALL)
            return stored if len(stored) >= len(expected) else None

        stored = await eventually(all_stored, 10, "every message stored", interval=0.1)
        bodies = [m["body"] for m in stored]
        assert sorted(bodies) == sorted(expected)  # each exactly once
        assert bodies[:300] == offline  # the archive's order
        await bridge.mam_catch_up("bob")
        assert len(await history(bridge, "bob", sender.jid, ALL)) == len(expected)
    finally:
        await bridge.close()


@asyncio_test(timeout=120)
async def test_mam_query_scrolls_back_past_stored_history(sat_daemon, prosody, make_account):
    carol, sender = make_account("mam-c"), make_account("mam-slix")
    bodies = [f"old {i:02d}" for i in range(80)]
    await send_messages(prosody, sender, carol.jid, bodies)
    bridge = await open_bridge(sat_daemon, timeout=60)
    try:
        await create_profile(bridge, "carol", carol, prosody)
        # first sync of this profile: only the most recent page (50 on the test server)
        await bridge.param_set("mam", "first_sync_days", "0", "carol")
        watcher = ProgressWatcher(bridge, f"mam:carol:{carol.jid}")
        await bridge.profile_connect("carol", "")
        first = await watcher.wait()
        assert first["first_sync"] and first["stored"] == 50
        assert [m["body"] for m in await history(bridge, "carol", sender.jid, ALL)] == bodies[30:]

        # scrolling back: each call fetches the page before the oldest stored message
        page = await bridge.mam_query("carol", sender.jid, {}, 20)
        assert [m["body"] for m in page] == bodies[10:30]
        page = await bridge.mam_query("carol", sender.jid, {}, 20)
        assert [m["body"] for m in page] == bodies[:10]
        assert await bridge.mam_query("carol", sender.jid, {}, 20) == []
        stored = await history(bridge, "carol", sender.jid, ALL)
        assert [m["body"] for m in stored] == bodies
        # asking for an already stored page returns it without storing it twice
        again = await bridge.mam_query("carol", sender.jid, {"before_uid": stored[10]["uid"]}, 5)
        assert [m["uid"] for m in again] == [m["uid"] for m in stored[5:10]]
        assert len(await history(bridge, "carol", sender.jid, ALL)) == 80
    finally:
        await bridge.close()
