"""The real daemon as a subprocess, on a private dbus-daemon, against the test Prosody.

Everything goes through the D-Bus bridge, as a frontend or a script would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3

import pytest

from sat_frontends.bridge import errors as bridge_errors
from tests.support.bridge_helpers import (
    SignalRecorder,
    connection_options,
    create_profile,
    open_bridge,
)
from tests.support.dbus import asyncio_test
from tests.support.waiting import eventually


@asyncio_test
async def test_two_profiles_talk_through_the_daemon(sat_daemon, prosody, make_account):
    a, b = make_account("d-alice"), make_account("d-bob")
    bridge = await open_bridge(sat_daemon)
    try:
        assert await bridge.is_ready()
        await create_profile(bridge, "alice", a, prosody)
        await create_profile(bridge, "bob", b, prosody)
        assert await bridge.profiles_list() == ["alice", "bob"]
        signals = SignalRecorder(bridge, ["MessageNew"])
        assert await bridge.profile_connect("alice", "") is True
        assert await bridge.profile_connect("bob", "") is True
        assert await bridge.profile_connect("bob", "") is False  # already connected
        info = await bridge.profile_info_get("alice")
        assert info["connected"] and info["sm_enabled"]

        uid = await bridge.message_send("alice", b.jid, "Bonjour Bob, ça va ?", {})
        message = await signals.new("bob", lambda m: not m["outgoing"])
        assert message["body"] == "Bonjour Bob, ça va ?"
        assert message["from"].startswith(a.jid)
        history = await bridge.history_get("bob", a.jid, 10, {})
        assert [m["body"] for m in history] == ["Bonjour Bob, ça va ?"]
        sent = await bridge.history_get("alice", b.jid, 10, {})
        assert sent[0]["uid"] == uid and sent[0]["outgoing"]
        # the password is a secret: never given back
        assert await bridge.param_get("connection", "password", "alice") == ""
        assert await bridge.param_get("connection", "jid", "alice") == a.jid
    finally:
        await bridge.close()
    # debug logging is on in tests: still, no password may reach the log
    log_text = sat_daemon.log_path.read_text()
    assert "SCRAM" in log_text or "connected as" in log_text  # the log is really written
    for secret in (a.password, b.password):
        assert secret not in log_text


@asyncio_test
async def test_connection_failures_have_distinct_named_errors(sat_daemon, prosody, make_account):
    from tests.support.prosody import find_free_ports

    good = make_account("d-err")
    (dead_port,) = find_free_ports(1)
    bridge = await open_bridge(sat_daemon)
    try:
        await bridge.profile_create(
            "wrongpw", good.jid, "wrong password", "", connection_options(prosody)
        )
        await bridge.profile_create(
            "deadport", good.jid, good.password, "", {"host": "127.0.0.1", "port": dead_port}
        )
        await bridge.profile_create(
            "nohost", good.jid, good.password, "", {"host": "no-such-host.invalid", "port": 5222}
        )
        await bridge.profile_create(
            "mismatch", "someone@mismatch.test", "x", "", connection_options(prosody)
        )
        expected = {
            "wrongpw": bridge_errors.AuthenticationFailed,
            "deadport": bridge_errors.ConnectionRefused,
            "nohost": bridge_errors.HostNotFound,
            "mismatch": bridge_errors.CertificateError,
        }
        for profile, error_class in expected.items():
            with pytest.raises(error_class) as info:
                await bridge.profile_connect(profile, "")
            assert info.value.message, profile
            assert not await bridge.profile_is_connected(profile)
        with pytest.raises(bridge_errors.NotFound):
            await bridge.profile_connect("nobody", "")
        with pytest.raises(bridge_errors.NotConnected):
            await bridge.message_send("wrongpw", good.jid, "hi", {})
        # the daemon is still fine
        assert await bridge.is_ready()
    finally:
        await bridge.close()


@asyncio_test(timeout=120)
async def test_sigkill_during_write_burst_loses_nothing_acknowledged(
    sat_daemon, prosody, make_account
):
    a, b = make_account("k-alice"), make_account("k-bob")
    bridge = await open_bridge(sat_daemon)
    await create_profile(bridge, "alice", a, prosody)
    await create_profile(bridge, "bob", b, prosody, profile_password="bob's secret")
    await bridge.param_set("connection", "autoconnect", "true", "alice")
    await bridge.profile_connect("alice", "")

    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def writer(worker: int):
        i = 0
        while not stop.is_set():
            try:
                uid = await bridge.message_send("alice", b.jid, f"burst {worker}-{i}", {})
            except Exception:
                return  # the daemon died under us: expected
            acknowledged.append(uid)
            i += 1

    writers = [asyncio.ensure_future(writer(w)) for w in range(8)]
    while len(acknowledged) < 150:
        await asyncio.sleep(0.01)
    os.kill(sat_daemon.pid, signal.SIGKILL)
    sat_daemon.process.wait()
    stop.set()
    await asyncio.gather(*writers, return_exceptions=True)
    await bridge.close()
    assert len(acknowledged) >= 150

    db_path = sat_daemon.data_dir / "sat.db"
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    await asyncio.get_running_loop().run_in_executor(None, sat_daemon.start)
    bridge = await open_bridge(sat_daemon)
    try:
        assert await bridge.profiles_list() == ["alice", "bob"]
        assert await bridge.param_get("connection", "autoconnect", "alice") == "true"
        assert await bridge.param_get("connection", "jid", "bob") == b.jid
        # the autoconnect profile comes back by itself, with its decrypted password
        await eventually(
            lambda: bridge.profile_is_connected("alice"),
            10,
            "alice autoconnecting after restart",
            interval=0.1,
        )
        # bob's secrets need bob's profile password
        with pytest.raises(bridge_errors.PermissionDenied):
            await bridge.profile_connect("bob", "wrong")
        assert await bridge.profile_connect("bob", "bob's secret") is True
        stored = await bridge.history_get("alice", b.jid, 10000, {})
        stored_uids = {m["uid"] for m in stored}
        missing = [uid for uid in acknowledged if uid not in stored_uids]
        assert not missing, f"{len(missing)} acknowledged messages lost"
        assert len(stored_uids) == len(stored)  # no duplicate
    finally:
        await bridge.close()


@asyncio_test
async def test_health_and_clean_stop(sat_daemon):
    bridge = await open_bridge(sat_daemon)
    try:
        health = {p["name"]: p for p in await bridge.health_get()}
        for name in ("XEP-0030", "XEP-0115", "XEP-0092", "XEP-0199"):
            assert health[name]["loaded"], health[name]
        assert await bridge.version_get()
    finally:
        await bridge.close()
    assert sat_daemon.ready_file.exists()
    code = await asyncio.get_running_loop().run_in_executor(None, sat_daemon.stop)
    assert code == 0, sat_daemon.log_tail()
    assert not sat_daemon.ready_file.exists()
