"""The real daemon as a subprocess, on a private dbus-daemon, against the test Prosody.

Everything goes through the D-Bus bridge, as a frontend or a script would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time

import pytest

from sat_frontends.bridge import errors as bridge_errors
from sat_frontends.bridge.dbus_client import DBusBridgeClient
from tests.support.dbus import asyncio_test


@pytest.fixture
def daemon(sat_daemon):
    return sat_daemon


def connection_options(server, **extra):
    return {"host": "127.0.0.1", "port": server.c2s_port, **extra}


async def client_for(daemon) -> DBusBridgeClient:
    return await DBusBridgeClient.connect(daemon.bus_address, wait=10, timeout=30)


async def create_profile(bridge, name, account, server, profile_password="", **extra):
    await bridge.profile_create(
        name, account.jid, account.password, profile_password, connection_options(server, **extra)
    )


@asyncio_test
async def test_two_profiles_talk_through_the_daemon(daemon, prosody, make_account):
    a, b = make_account("d-alice"), make_account("d-bob")
    bridge = await client_for(daemon)
    try:
        assert await bridge.is_ready()
        await create_profile(bridge, "alice", a, prosody)
        await create_profile(bridge, "bob", b, prosody)
        assert await bridge.profiles_list() == ["alice", "bob"]
        received = asyncio.get_running_loop().create_future()

        def on_message(profile, message):
            if profile == "bob" and not message["outgoing"] and not received.done():
                received.set_result(message)

        bridge.on("MessageNew", on_message)
        assert await bridge.profile_connect("alice", "") is True
        assert await bridge.profile_connect("bob", "") is True
        assert await bridge.profile_connect("bob", "") is False  # already connected
        info = await bridge.profile_info_get("alice")
        assert info["connected"] and info["sm_enabled"]

        uid = await bridge.message_send("alice", b.jid, "Bonjour Bob, ça va ?", {})
        message = await asyncio.wait_for(received, 10)
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
    log_text = daemon.log_path.read_text()
    assert "SCRAM" in log_text or "connected as" in log_text  # the log is really written
    for secret in (a.password, b.password):
        assert secret not in log_text


@asyncio_test
async def test_connection_failures_have_distinct_named_errors(daemon, prosody, make_account):
    from tests.support.prosody import find_free_ports

    good = make_account("d-err")
    (dead_port,) = find_free_ports(1)
    bridge = await client_for(daemon)
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
async def test_sigkill_during_write_burst_loses_nothing_acknowledged(daemon, prosody, make_account):
    a, b = make_account("k-alice"), make_account("k-bob")
    bridge = await client_for(daemon)
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
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.process.wait()
    stop.set()
    await asyncio.gather(*writers, return_exceptions=True)
    await bridge.close()
    assert len(acknowledged) >= 150

    db_path = daemon.data_dir / "sat.db"
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    await asyncio.get_running_loop().run_in_executor(None, daemon.start)
    bridge = await client_for(daemon)
    try:
        assert await bridge.profiles_list() == ["alice", "bob"]
        assert await bridge.param_get("connection", "autoconnect", "alice") == "true"
        assert await bridge.param_get("connection", "jid", "bob") == b.jid
        # the autoconnect profile comes back by itself, with its decrypted password
        deadline = time.monotonic() + 10
        while not await bridge.profile_is_connected("alice"):
            assert time.monotonic() < deadline, "alice did not autoconnect after restart"
            await asyncio.sleep(0.1)
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
async def test_health_and_clean_stop(daemon):
    bridge = await client_for(daemon)
    try:
        health = {p["name"]: p for p in await bridge.health_get()}
        for name in ("XEP-0030", "XEP-0115", "XEP-0092", "XEP-0199"):
            assert health[name]["loaded"], health[name]
        assert await bridge.version_get()
    finally:
        await bridge.close()
    assert daemon.ready_file.exists()
    code = await asyncio.get_running_loop().run_in_executor(None, daemon.stop)
    assert code == 0, daemon.log_tail()
    assert not daemon.ready_file.exists()
