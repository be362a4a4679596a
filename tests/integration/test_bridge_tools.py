"""The real daemon's bridge driven by the stock D-Bus tools (busctl, gdbus), as a person would.

A private dbus-daemon, the daemon as a subprocess, the test Prosody: profiles are
created and connected with ``gdbus call``, a message sent with ``gdbus call`` is seen
as a ``MessageNew`` signal by ``gdbus monitor``, wrong calls get named errors, and
the daemon survives a flood of malformed calls.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import subprocess
import time

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from tests.support.dbus import asyncio_test, gdbus_call_command

DEST = "org.salutatoi.SAT"
PATH = "/org/salutatoi/SAT/bridge"
CORE = "org.salutatoi.SAT.core"


def gdbus_call(address: str, method: str, *args: str, check: bool = True):
    cmd = gdbus_call_command(address, f"{CORE}.{method}", *args)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {result.stderr}")
    return result


def test_busctl_lists_documented_members(sat_daemon):
    out = subprocess.run(
        ["busctl", f"--address={sat_daemon.bus_address}", "introspect", DEST, PATH],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    for member in (
        "ProfileCreate",
        "ProfileConnect",
        "MessageSend",
        "HistoryGet",
        "MessageNew",
        "DiscoInfoGet",
    ):
        assert member in out, out
    xml = subprocess.run(
        [
            "busctl",
            f"--address={sat_daemon.bus_address}",
            "introspect",
            "--xml-interface",
            DEST,
            PATH,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert 'name="org.freedesktop.DBus.DocString"' in xml
    assert "Send a message; it is queued while the profile is reconnecting" in xml
    assert "recipient JID" in xml  # argument docs too


def test_gdbus_profile_connect_message_and_monitor(sat_daemon, prosody, make_account):
    a, b = make_account("g-alice"), make_account("g-bob")
    addr = sat_daemon.bus_address
    options = f"{{'host': <'127.0.0.1'>, 'port': <{prosody.c2s_port}>}}"
    gdbus_call(addr, "ProfileCreate", "alice", a.jid, a.password, "", options)
    gdbus_call(addr, "ProfileCreate", "bob", b.jid, b.password, "", options)
    assert "true" in gdbus_call(addr, "ProfileConnect", "alice", "").stdout
    assert "true" in gdbus_call(addr, "ProfileConnect", "bob", "").stdout

    monitor = subprocess.Popen(
        ["gdbus", "monitor", "--address", addr, "--dest", DEST],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = MonitorOutput(monitor)
    try:
        # the monitor reports the name's owner once it has subscribed to its signals
        assert output.wait_for(lambda line: "is owned by" in line), (
            "gdbus monitor not ready:\n" + output.text()
        )
        gdbus_call(addr, "MessageSend", "alice", b.jid, "seen by gdbus monitor", "{}")
        assert output.wait_for(
            lambda line: (
                "MessageNew" in line and "'bob'" in line and "seen by gdbus monitor" in line
            )
        ), "MessageNew for bob not seen:\n" + output.text()
    finally:
        monitor.terminate()
        monitor.wait(5)
    history = gdbus_call(addr, "HistoryGet", "bob", a.jid, "10", "{}").stdout
    assert "seen by gdbus monitor" in history


def test_wrong_calls_get_named_errors(sat_daemon):
    addr = sat_daemon.bus_address
    r = gdbus_call(addr, "ProfileConnect", "nobody", "", check=False)
    assert r.returncode != 0 and "org.salutatoi.SAT.Error.NotFound" in r.stderr
    r = gdbus_call(addr, "ProfileCreate", "bad name!", "x@localhost", "p", "", "{}", check=False)
    assert "org.salutatoi.SAT.Error.InvalidArgument" in r.stderr
    r = gdbus_call(addr, "HistoryGet", "nobody", "", "10", "{}", check=False)
    assert "org.salutatoi.SAT.Error.NotFound" in r.stderr
    r = gdbus_call(addr, "ProfileConnect", "only-one-arg", check=False)
    assert "org.salutatoi.SAT.Error.InvalidArgument: ProfileConnect expects signature 'ss'" in (
        r.stderr
    )


@asyncio_test(timeout=120)
async def test_daemon_survives_a_thousand_bad_calls(sat_daemon):
    bus = await MessageBus(bus_address=sat_daemon.bus_address).connect()
    rng = random.Random(42)
    methods = [
        "ProfileConnect",
        "MessageSend",
        "HistoryGet",
        "ParamSet",
        "ProfileCreate",
        "RosterGet",
        "PresenceSet",
        "NoSuchMethod",
        "DiscoInfoGet",
        "HistorySearch",
    ]
    junk = [
        ("s", ["x"]),
        ("i", [7]),
        ("ss", ["a", "b"]),
        ("", []),
        ("as", [["a"]]),
        ("a{sv}", [{"k": Variant("s", "v")}]),
        ("sssss", ["a"] * 5),
        ("sisi", ["a", 1, "b", 2]),
        ("x", [-1]),
        ("ssa{sv}", ["nobody", "x@y", {}]),
        ("ssia{sv}", ["", "", -5, {}]),
    ]
    try:

        async def one(i):
            sig, body = rng.choice(junk)
            reply = await bus.call(
                Message(
                    destination=DEST,
                    path=PATH,
                    interface=CORE,
                    member=rng.choice(methods),
                    signature=sig,
                    body=body,
                )
            )
            return reply

        replies = []
        for start in range(0, 1000, 100):
            replies += await asyncio.gather(*(one(i) for i in range(start, start + 100)))
        errors = [r for r in replies if r.message_type is MessageType.ERROR]
        assert len(errors) == len(replies) == 1000
        names = {r.error_name for r in errors}
        assert names <= {
            "org.salutatoi.SAT.Error.InvalidArgument",
            "org.salutatoi.SAT.Error.NotFound",
            "org.freedesktop.DBus.Error.UnknownMethod",
            "org.freedesktop.DBus.Error.InvalidArgs",
            "org.salutatoi.SAT.Error.NotConnected",
        }, names
        assert "org.salutatoi.SAT.Error.Internal" not in names
        ready = await bus.call(
            Message(destination=DEST, path=PATH, interface=CORE, member="IsReady")
        )
        assert ready.message_type is MessageType.METHOD_RETURN and ready.body == [True]
    finally:
        bus.disconnect()
    assert sat_daemon.process.poll() is None


class MonitorOutput:
    """Lines a subprocess prints, read straight from its pipe.

    (A buffered ``readline`` after ``select`` misses lines: several signals printed at once
    land in Python's buffer and ``select`` on the empty pipe then waits forever.)
    """

    def __init__(self, process: subprocess.Popen):
        self.fd = process.stdout.fileno()
        self.lines: list[str] = []
        self._partial = b""

    def wait_for(self, wanted, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for line in self.lines[checked:]:
                if wanted(line):
                    return True
            checked = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if select.select([self.fd], [], [], min(left, 0.2))[0]:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    return any(wanted(line) for line in self.lines[checked:])
                *complete, self._partial = (self._partial + chunk).split(b"\n")
                self.lines += [line.decode(errors="replace") for line in complete]

    def text(self) -> str:
        return "\n".join(self.lines + [self._partial.decode(errors="replace")])
