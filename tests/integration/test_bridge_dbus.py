"""The bridge end to end: one behaviour suite for the D-Bus client and the in-process client.

The D-Bus variant runs a real private ``dbus-daemon`` and the test backend
(``python -m tests.support.dbus serve``) in its own process; the in-process variant calls the
same declarations in this process. Both must behave the same. D-Bus-only tests follow:
malformed messages, busctl/gdbus/dbus-monitor, waiting for the daemon, a server in this
process (late declarations), the system-bus policy.

Run: ``python -m pytest --reactor=asyncio tests/integration/test_bridge_dbus.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus

from sat.bridge import dbus_server
from sat.bridge.contract import BUS_NAME, OBJECT_PATH, Bridge
from sat.core import errors as sat_errors
from sat_frontends.bridge import errors
from sat_frontends.bridge.dbus_client import DBusBridgeClient
from sat_frontends.bridge.inprocess import InProcessBridgeClient
from tests.support import dbus as dbus_support
from tests.support.dbus import (
    REPO_ROOT,
    BackendProcess,
    DBusDaemon,
    asyncio_test,
    declare_test_api,
    gdbus_call_command,
    run_sync,
)
from tests.support.waiting import eventually

# fixtures (the lead may move them into a conftest)
dbus_bus = dbus_support.dbus_bus
dbus_bus_module = dbus_support.dbus_bus_module

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="dbus-daemon is not installed"),
]

CORE = "org.salutatoi.SAT.core"
PLUGIN = "org.salutatoi.SAT.plugin"


@pytest.fixture(scope="module")
def backend(dbus_bus_module):
    """The test backend serving on the module's private bus."""
    with BackendProcess(dbus_bus_module.address) as process:
        yield process


@pytest.fixture(params=["dbus", "inprocess"])
def client(request):
    if request.param == "dbus":
        bus = request.getfixturevalue("dbus_bus_module")
        request.getfixturevalue("backend")
        bridge_client = run_sync(DBusBridgeClient.connect(bus.address, wait=10))
    else:
        bridge_client = InProcessBridgeClient(declare_test_api(Bridge()))
    yield bridge_client
    run_sync(bridge_client.close())


async def wait_for(predicate, timeout=5.0):
    """Until ``predicate()`` holds (checked every 10 ms)."""
    await eventually(predicate, timeout, interval=0.01)


async def raw_bus(address: str) -> MessageBus:
    return await MessageBus(bus_address=address).connect()


def raw_call(member, signature="", body=(), interface=CORE, flags=MessageFlag.NONE):
    return Message(
        destination=BUS_NAME,
        path=OBJECT_PATH,
        interface=interface,
        member=member,
        signature=signature,
        body=list(body),
        flags=flags,
    )


# ============================================================================ shared behaviour


@asyncio_test
async def test_each_type(client):
    assert await client.echo("héllo ✓") == "héllo ✓"
    assert await client.echo("") == ""
    assert await client.echo_int(-(2**63)) == -(2**63)
    assert await client.echo_uint32(2**32 - 1) == 2**32 - 1
    assert await client.echo_bool(True) is True
    assert await client.echo_double(2.5) == 2.5
    assert await client.echo_double(2) == 2.0
    assert await client.echo_bytes(b"\x00\xff") == b"\x00\xff"
    assert await client.echo_strings(["a", "b"]) == ["a", "b"]
    assert await client.echo_strings(("a",)) == ["a"]
    assert await client.echo_dict({"k": "v"}) == {"k": "v"}
    assert await client.echo_struct(("s", 1, False)) == ("s", 1, False)
    assert await client.echo_variant("text") == "text"
    assert await client.echo_variant([1, "mixed"]) == [1, "mixed"]
    assert await client.concat("ab", 3, "-") == "ab-ab-ab"
    assert await client.call("Concat", "x", 2, "") == "xx"  # CamelCase works too
    assert await client.nothing() is None
    assert await client.nothing_count() >= 1


@asyncio_test
async def test_record_round_trip(client):
    record = {
        "text": "t",
        "flag": False,
        "count": 2**40,
        "huge": 2**63 + 1,
        "ratio": 0.25,
        "raw": b"\x01\x02",
        "tags": ["a", "b"],
        "none": None,
        "empty": [],
        "nested": {"deep": {"deeper": [1, 2, 3]}, "gone": None},
        "items": [{"id": 1}, {"id": 2, "name": "two"}],
        "mixed": [1, "a", 2.5, {"k": "v"}],
    }
    expected = dict(record)
    del expected["none"]
    expected["nested"] = {"deep": {"deeper": [1, 2, 3]}}
    assert await client.echo_record(record) == expected
    assert await client.echo_record({}) == {}
    assert await client.echo_records([{"a": 1}, {}, {"b": None}]) == [{"a": 1}, {}, {}]
    assert await client.slow_async(0) == {"slept": 0.0, "style": "async"}


@asyncio_test
async def test_errors_are_named(client):
    for name in (
        "NotFound",
        "PermissionDenied",
        "InvalidArgument",
        "Timeout",
        "NotConnected",
        "AlreadyExists",
        "AuthenticationFailed",
        "HostNotFound",
        "StorageError",
    ):
        with pytest.raises(errors.BridgeError) as info:
            await client.fail(name, f"{name} happened")
        assert info.value.name == name
        assert info.value.message == f"{name} happened"
        assert type(info.value) is errors.error_class(name)
    with pytest.raises(errors.ConnectionFailed):  # hierarchy kept
        await client.fail("AuthenticationFailed", "wrong password")
    with pytest.raises(errors.Internal, match="ZeroDivisionError"):
        await client.crash()
    with pytest.raises(errors.Internal, match="not matching"):
        await client.bad_result()
    with pytest.raises(errors.Internal, match="KeyError"):
        await client.deferred_crash()
    with pytest.raises(errors.NotFound, match="later"):
        await client.async_fail("later")
    with pytest.raises(errors.UnknownMethod):
        await client.no_such_method("x")
    assert await client.echo("still alive") == "still alive"


@asyncio_test
async def test_signals(client):
    got = []

    def on_notify(text, extra):
        got.append(("notify", text, extra))

    async def on_tick(count):  # coroutine callbacks are run too
        await asyncio.sleep(0)
        got.append(("tick", count))

    client.on("notify", on_notify)
    client.on("Tick", on_tick)
    await client.emit_notify("hello", {"n": 1, "none": None, "list": ["a"]})
    await wait_for(lambda: len(got) >= 2)
    assert got == [("notify", "hello", {"n": 1, "list": ["a"]}), ("tick", 5)]
    client.off("notify", on_notify)
    await client.emit_notify("again", {})
    await wait_for(lambda: len(got) >= 3)
    await asyncio.sleep(0.1)
    assert got[2:] == [("tick", 5)]


@asyncio_test
async def test_slow_call_does_not_block(client):
    start = time.monotonic()
    slow = asyncio.ensure_future(client.slow(1.0))
    slow_async = asyncio.ensure_future(client.slow_async(1.0))
    await asyncio.sleep(0.05)
    for _ in range(20):
        assert await client.echo("fast") == "fast"
    fast_done = time.monotonic() - start
    assert fast_done < 0.6, fast_done
    assert not slow.done()
    assert await slow == "slept 1.0"
    assert await slow_async == {"slept": 1.0, "style": "async"}
    assert time.monotonic() - start >= 0.95


@asyncio_test
async def test_many_concurrent_calls(client):
    results = await asyncio.gather(*(client.echo(str(i)) for i in range(300)))
    assert results == [str(i) for i in range(300)]


BAD_CALLS = [
    ("echo", (1,)),
    ("echo", (None,)),
    ("echo", ()),
    ("echo", ("a", "b")),
    ("echo_int", ("1",)),
    ("echo_int", (True,)),
    ("echo_bool", (1,)),
    ("echo_bytes", ("text",)),
    ("echo_strings", ("abc",)),
    ("echo_strings", ({"a": 1},)),
    ("echo_dict", (["a"],)),
    ("echo_record", ({"a": object()},)),
    ("echo_record", ("text",)),
    ("echo_struct", (("s", 1),)),
    ("echo_uint32", (-1,)),
    ("concat", ("a", "2", "-")),
    ("concat", ("a",)),
]


@asyncio_test(timeout=120)
async def test_a_thousand_bad_calls(client):
    async def bad(i):
        name, args = BAD_CALLS[i % len(BAD_CALLS)]
        with pytest.raises(errors.InvalidArgument):
            await getattr(client, name)(*args)

    for batch in range(10):
        await asyncio.gather(*(bad(batch * 100 + i) for i in range(100)))
    assert await client.echo("ok") == "ok"
    assert await client.concat("a", 2, "") == "aa"


@asyncio_test
async def test_late_declaration(client):
    name = f"Shout{os.getpid()}{int(time.monotonic() * 1000) % 100000}"
    await client.declare_late(name)
    from sat_frontends.bridge.dbus_client import camel_to_snake

    method = getattr(client, camel_to_snake(name))
    assert await method("quiet") == "QUIET"


# ============================================================================ D-Bus only


@asyncio_test(timeout=120)
async def test_server_survives_malformed_calls(dbus_bus_module, backend):
    bus = await raw_bus(dbus_bus_module.address)
    try:
        cases = [
            (raw_call("Echo", "i", [1]), "org.salutatoi.SAT.Error.InvalidArgument"),
            (raw_call("Echo", "ss", ["a", "b"]), "org.salutatoi.SAT.Error.InvalidArgument"),
            (raw_call("Echo"), "org.salutatoi.SAT.Error.InvalidArgument"),
            (raw_call("Echo", "a{sv}", [{}]), "org.salutatoi.SAT.Error.InvalidArgument"),
            (raw_call("Concat", "ssi", ["a", "b", 1]), "org.salutatoi.SAT.Error.InvalidArgument"),
            (
                raw_call("EchoRecord", "a{ss}", [{"a": "b"}]),
                "org.salutatoi.SAT.Error.InvalidArgument",
            ),
            (raw_call("Nope"), "org.freedesktop.DBus.Error.UnknownMethod"),
            (
                raw_call("Echo", "s", ["x"], interface=PLUGIN),
                "org.freedesktop.DBus.Error.UnknownMethod",
            ),
            (
                raw_call("Introspect", "s", ["x"], interface="org.freedesktop.DBus.Introspectable"),
                "org.salutatoi.SAT.Error.InvalidArgument",
            ),
        ]
        for batch in range(10):
            calls = [cases[(batch * 100 + i) % len(cases)] for i in range(100)]
            replies = await asyncio.gather(
                *(bus.call(raw_call(m.member, m.signature, m.body, m.interface)) for m, _ in calls)
            )
            for (_, expected), reply in zip(calls, replies, strict=True):
                assert reply.message_type is MessageType.ERROR
                assert reply.error_name == expected, reply.body
                assert reply.body and reply.body[0]
        wrong = await bus.call(raw_call("Echo", "i", [1]))
        assert "expects signature 's'" in wrong.body[0]
        # no interface given: dispatch by member name
        reply = await bus.call(raw_call("Echo", "s", ["any interface"], interface=None))
        assert reply.body == ["any interface"]
        # a call nobody waits for is run and does not upset anything
        await bus.send(raw_call("Nothing", flags=MessageFlag.NO_REPLY_EXPECTED))
        await bus.send(raw_call("Crash", flags=MessageFlag.NO_REPLY_EXPECTED))
        reply = await bus.call(raw_call("Echo", "s", ["alive"]))
        assert reply.message_type is MessageType.METHOD_RETURN
        assert reply.body == ["alive"]
        for interface in ("org.freedesktop.DBus.Peer", None):
            ping = await bus.call(raw_call("Ping", interface=interface))
            assert ping.message_type is MessageType.METHOD_RETURN
        xml = await bus.call(raw_call("Introspect", interface=None))
        assert "org.salutatoi.SAT.core" in xml.body[0]
    finally:
        bus.disconnect()


@asyncio_test
async def test_parent_nodes_are_introspectable(dbus_bus_module, backend):
    bus = await raw_bus(dbus_bus_module.address)
    try:
        path, children = "/", []
        for child in ("org", "salutatoi", "SAT", "bridge"):
            reply = await bus.call(
                Message(
                    destination=BUS_NAME,
                    path=path,
                    interface="org.freedesktop.DBus.Introspectable",
                    member="Introspect",
                )
            )
            node = ET.fromstring(reply.body[0])
            children = [n.get("name") for n in node.findall("node")]
            assert children == [child]
            path = path.rstrip("/") + "/" + child
    finally:
        bus.disconnect()


def run_tool(*cmd, timeout=20):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (cmd, result.stdout, result.stderr)
    return result.stdout


@pytest.mark.skipif(not shutil.which("busctl"), reason="busctl is not installed")
def test_busctl_introspect(dbus_bus_module, backend):
    address = f"--address={dbus_bus_module.address}"
    out = run_tool("busctl", address, "introspect", BUS_NAME, OBJECT_PATH)
    for member in (
        ".Echo",
        ".Concat",
        ".EchoRecord",
        ".Notify",
        ".Tick",
        ".SlowAsync",
        CORE,
        PLUGIN,
    ):
        assert member in out
    assert any(line.split()[:3] == [".Concat", "method", "sis"] for line in out.splitlines())
    xml = run_tool("busctl", address, "introspect", "--xml-interface", BUS_NAME, OBJECT_PATH)
    assert 'name="org.freedesktop.DBus.DocString" value="Repeat a text."' in xml
    assert 'name="org.gtk.GDBus.DocString" value="how many times"' in xml
    call_out = run_tool(
        "busctl",
        address,
        "call",
        BUS_NAME,
        OBJECT_PATH,
        CORE,
        "EchoRecord",
        "a{sv}",
        "2",
        "name",
        "s",
        "x",
        "n",
        "i",
        "3",
    )
    # handlers see plain values: the int32 comes back as the int64 every int is sent as
    assert call_out.strip() == 'a{sv} 2 "name" s "x" "n" x 3'


@pytest.mark.skipif(not shutil.which("gdbus"), reason="gdbus (libglib2.0-bin) is not installed")
def test_gdbus_call_and_introspect(dbus_bus_module, backend):
    address = dbus_bus_module.address
    call = gdbus_call_command
    assert run_tool(*call(address, f"{CORE}.Echo", "hello")).strip() == "('hello',)"
    assert run_tool(*call(address, f"{CORE}.Concat", "ab", "2", "+")).strip() == "('ab+ab',)"
    out = run_tool(*call(address, f"{PLUGIN}.SlowAsync", "0.1"))
    assert "'style': <'async'>" in out
    failed = subprocess.run(
        call(address, f"{CORE}.Fail", "NotFound", "no such thing"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert failed.returncode != 0
    assert "org.salutatoi.SAT.Error.NotFound: no such thing" in failed.stderr
    out = run_tool(
        "gdbus",
        "introspect",
        "--address",
        dbus_bus_module.address,
        "--dest",
        BUS_NAME,
        "--object-path",
        OBJECT_PATH,
    )
    assert '@org.gtk.GDBus.DocString("Repeat a text.")' in out


async def _monitor_sees_signal(address, cmd, ready_text, expected):
    """Start a monitoring tool, emit Notify once it is ready, wait for it to show the signal."""
    loop = asyncio.get_running_loop()
    monitor = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []

    def read_until(text):
        # runs in a thread: readline blocks
        for line in monitor.stdout:
            lines.append(line)
            if text in line:
                return True
        return False

    try:
        ready = await asyncio.wait_for(loop.run_in_executor(None, read_until, ready_text), 10)
        assert ready, lines
        client = await DBusBridgeClient.connect(address)
        await client.emit_notify("monitored", {"x": 1})
        await client.close()
        seen = await asyncio.wait_for(loop.run_in_executor(None, read_until, expected), 10)
        assert seen, lines
    finally:
        os.kill(monitor.pid, signal.SIGTERM)  # unblocks the reading thread (EOF)
        monitor.wait(5)
        monitor.stdout.close()


@pytest.mark.skipif(not shutil.which("gdbus"), reason="gdbus (libglib2.0-bin) is not installed")
@asyncio_test
async def test_gdbus_monitor_sees_signal(dbus_bus_module, backend):
    await _monitor_sees_signal(
        dbus_bus_module.address,
        ["gdbus", "monitor", "--address", dbus_bus_module.address, "--dest", BUS_NAME],
        "is owned by",
        f"{PLUGIN}.Notify ('monitored', {{'x': <int64 1>}})",
    )


@pytest.mark.skipif(not shutil.which("dbus-monitor"), reason="dbus-monitor is not installed")
@asyncio_test
async def test_dbus_monitor_sees_signal(dbus_bus_module, backend):
    await _monitor_sees_signal(
        dbus_bus_module.address,
        [
            "dbus-monitor",
            "--address",
            dbus_bus_module.address,
            f"type='signal',interface='{PLUGIN}'",
        ],
        "NameAcquired",
        "member=Notify",
    )


@asyncio_test(timeout=60)
async def test_connect_waits_for_the_daemon(dbus_bus):
    with pytest.raises(errors.BridgeUnavailable, match="not on the bus"):
        await DBusBridgeClient.connect(dbus_bus.address)
    with pytest.raises(errors.BridgeUnavailable, match="cannot reach"):
        await DBusBridgeClient.connect("unix:path=/nonexistent/bus", wait=0.2)
    backend = BackendProcess(dbus_bus.address)
    waiting = asyncio.ensure_future(DBusBridgeClient.connect(dbus_bus.address, wait=30))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await asyncio.get_running_loop().run_in_executor(None, backend.start)
    try:
        client = await waiting
        assert await client.echo("there") == "there"
        got = []
        client.on("tick", got.append)
        # the daemon restarts: calls fail meanwhile, then work again with a new owner
        backend.stop()
        with pytest.raises(errors.BridgeUnavailable):
            await client.echo("gone")
        await asyncio.get_running_loop().run_in_executor(None, backend.start)
        await wait_for(lambda: client._owner == backend.unique_name)
        assert await client.echo("back") == "back"
        await client.emit_notify("abc", {})
        await wait_for(lambda: got == [3])
        await client.close()
    finally:
        backend.stop()


@asyncio_test
async def test_server_in_this_process(dbus_bus):
    """A server on this process's reactor: start/stop, late declarations, name conflicts."""
    bridge = declare_test_api(Bridge(), echo_only=True)
    server = await dbus_server.start(bridge, dbus_bus.address)
    try:
        assert server.connected
        client = await DBusBridgeClient.connect(dbus_bus.address)
        assert await client.echo("local") == "local"
        assert "late_one" not in client.methods
        bridge.add_method("LateOne", lambda: 7, out=("x", "seven"), doc="Plugin loaded late.")
        bridge.add_signal("LateSignal", args=[("n", "x", "a number")], doc="Late signal.")
        assert await client.late_one() == 7  # found by introspecting again
        assert client.methods["late_one"].doc == "Plugin loaded late."
        got = []
        client.on("late_signal", got.append)
        await asyncio.sleep(0.05)
        bridge.emit("LateSignal", 42)
        await wait_for(lambda: got == [42])
        with pytest.raises(dbus_server.BusNameTaken):
            await dbus_server.start(Bridge(), dbus_bus.address)
        with pytest.raises(sat_errors.AlreadyExists):
            await dbus_server.start(Bridge(), dbus_bus.address)
        await client.close()
    finally:
        await server.stop()
    assert not server.connected
    bridge.emit("LateSignal", 1)  # detached: nothing to send, no error


POLICY = REPO_ROOT / "misc" / "dbus" / "org.salutatoi.SAT.conf"
SYSTEM_DEFAULT_POLICY = """
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
"""


def system_like_config(socket_path, policy_path) -> str:
    """A configuration with system.conf's default policy, including ``policy_path``."""
    return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket_path}</listen>
  <auth>EXTERNAL</auth>
{SYSTEM_DEFAULT_POLICY}
  <include>{policy_path}</include>
</busconfig>
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (switches to other uids)")
@asyncio_test
async def test_system_policy_refuses_others(tmp_path):
    """With the shipped policy, an account other than "sat" cannot own the name."""
    with DBusDaemon(tmp_path, config=system_like_config(tmp_path / "bus.sock", POLICY)) as bus:
        assert "sat" in POLICY.read_text()
        with pytest.raises(Exception, match="not allowed to own"):
            await dbus_server.start(Bridge(), bus.address)


def as_user(uid: int, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd],
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("gdbus"),
    reason="needs root, setpriv and gdbus",
)
def test_system_policy_members_only():
    """The policy's logic, with "sat" played by root and the group by nobody/nogroup (65534)."""
    workdir = Path(tempfile.mkdtemp(prefix="sat-policy-"))
    try:
        workdir.chmod(0o755)  # other accounts must reach the socket
        policy = workdir / "policy.conf"
        policy.write_text(
            POLICY.read_text()
            .replace('user="sat"', 'user="root"')
            .replace('group="sat"', 'group="nogroup"')
        )
        config = system_like_config(workdir / "bus.sock", policy)
        with DBusDaemon(workdir, config=config) as bus, BackendProcess(bus.address):
            call = gdbus_call_command(bus.address, f"{CORE}.Echo", "hi")
            member = as_user(65534, *call)  # nobody, group nogroup
            assert member.returncode == 0, member.stderr
            assert member.stdout.strip() == "('hi',)"
            outsider = as_user(1, *call)  # daemon, group daemon
            assert outsider.returncode != 0
            assert "AccessDenied" in outsider.stderr
            introspect = as_user(
                1,
                "gdbus",
                "introspect",
                "--address",
                bus.address,
                "--dest",
                BUS_NAME,
                "--object-path",
                OBJECT_PATH,
            )
            assert introspect.returncode != 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
