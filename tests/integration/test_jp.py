"""``jp`` as a subprocess against the real daemon on a private bus and the test Prosody.

The scripting contract is checked as a script would see it: exit codes, one-line errors on
stderr, JSON on stdout that parses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.daemon import sat_daemon_on_private_bus
from tests.support.dbus import DBusDaemon
from tests.support.images import png
from tests.support.waiting import poll

REPO_ROOT = Path(__file__).resolve().parents[2]

# jp's exit codes (sat_frontends/jp/base.py: Exit), spelled out as the documentation does
OK, ERROR, USAGE, NOT_FOUND, NOT_CONNECTED, TIMEOUT, UNREACHABLE = 0, 1, 2, 3, 4, 5, 6
PERMISSION, CONNECTION, EXISTS, UNAVAILABLE = 7, 8, 9, 10


def jp_env(bus_address: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAT_")}
    env["SAT_BRIDGE_BUS"] = bus_address
    env["DBUS_SESSION_BUS_ADDRESS"] = bus_address
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env.pop("JP_DEBUG", None)
    return env


def jp_command(*args) -> list[str]:
    return [sys.executable, "-m", "sat_frontends.jp", *map(str, args)]


class Jp:
    """Runs ``jp`` against one bus."""

    def __init__(self, bus_address: str):
        self.env = jp_env(bus_address)

    def __call__(self, *args, input: str | None = None, timeout: float = 60):
        return subprocess.run(
            jp_command(*args),
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=self.env,
            timeout=timeout,
        )

    def ok(self, *args, input: str | None = None) -> str:
        proc = self(*args, input=input)
        assert proc.returncode == OK, (args, proc.returncode, proc.stderr)
        return proc.stdout

    def json(self, *args, input: str | None = None):
        return json.loads(self.ok(*args, "--output", "json", input=input))

    def popen(self, *args) -> subprocess.Popen:
        return subprocess.Popen(
            jp_command(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=self.env,
        )


def assert_fails(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The command failed with ``code`` and said why on exactly one line of stderr."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("jp: "), lines[0]
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert proc.stdout == ""
    return lines[0]


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"jp exited with {proc.returncode}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"{path} not created"
        time.sleep(0.02)


def by_uid(messages: list[dict], uid: str) -> dict | None:
    return next((m for m in messages if m["uid"] == uid), None)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def stack(tmp_path_factory, prosody):
    """A private bus and the real daemon on it, with two fresh accounts on the test Prosody."""
    work = tmp_path_factory.mktemp("jp")
    with sat_daemon_on_private_bus(work, prosody.ca_cert_path) as daemon:
        tag = uuid.uuid4().hex[:6]
        yield {
            "daemon": daemon,
            "prosody": prosody,
            "jp": Jp(daemon.bus_address),
            "alice": prosody.register(f"jp-alice-{tag}", "alice-secret"),
            "bob": prosody.register(f"jp-bob-{tag}", "bob-secret"),
            "work": work,
        }


@pytest.fixture(scope="module")
def profiles(stack):
    """alice and bob created and connected through jp (checked on the way)."""
    jp, server = stack["jp"], stack["prosody"]
    a, b = stack["alice"], stack["bob"]
    port = server.c2s_port
    assert jp.json("profile", "list") == []
    # XMPP password as an option, and read from stdin
    out = jp.ok(
        "profile",
        "create",
        "alice",
        a.jid,
        "-x",
        a.password,
        "--host",
        "127.0.0.1",
        "--port",
        port,
    )
    assert "alice" in out
    created = jp.json(
        "profile",
        "create",
        "bob",
        b.jid,
        "-x",
        "-",
        "--host",
        "127.0.0.1",
        "--port",
        port,
        input=b.password + "\n",
    )
    assert created == {"name": "bob", "jid": b.jid}
    assert jp.json("profile", "list") == ["alice", "bob"]
    assert jp.ok("profile", "default").strip() == "alice"  # the first profile
    # not connected yet: status says so with its exit code
    proc = jp("profile", "status", "-p", "bob")
    assert proc.returncode == NOT_CONNECTED and proc.stdout.strip() == "bob: disconnected"
    assert jp.json("profile", "connect") == {
        "profile": "alice",
        "connected": True,
        "already": False,
    }
    assert jp.json("-p", "bob", "profile", "connect")["already"] is False
    assert jp.json("profile", "connect", "-p", "bob")["already"] is True
    assert jp.ok("profile", "status", "-p", "bob").strip() == "bob: connected"
    info = jp.json("profile", "info", "-p", "bob")
    assert info["connected"] is True and info["jid"] == b.jid
    return stack


# ---------------------------------------------------------------------------- tests


def test_daemon_unreachable(tmp_path):
    # no bus at all
    jp = Jp(f"unix:path={tmp_path / 'no-such-bus'}")
    assert_fails(jp("profile", "list"), UNREACHABLE, "daemon unreachable")
    # a bus, but no daemon on it
    with DBusDaemon(tmp_path / "bus") as bus:
        proc = Jp(bus.address)("message", "send", "-p", "x", "x@example.org", "hi")
        assert_fails(proc, UNREACHABLE, "org.salutatoi.SAT")


def test_send_wait_history_search(profiles, tmp_path):
    jp, a, b = profiles["jp"], profiles["alice"], profiles["bob"]
    word = f"caféwait{uuid.uuid4().hex[:6]}"
    ready = tmp_path / "ready"
    waiter = jp.popen(
        "message",
        "wait",
        "-p",
        "bob",
        "--from",
        a.jid,
        "--ready-file",
        ready,
        "--timeout",
        30,
        "-j",
    )
    try:
        wait_for_file(ready, waiter)
        # the text comes from stdin (alice is the default profile)
        assert jp.ok("message", "send", b.jid, input=f"Bonjour Bob, un {word} ?\n") == ""
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == OK, err
    message = json.loads(out)
    assert message["body"] == f"Bonjour Bob, un {word} ?"
    assert message["from"].split("/")[0] == a.jid
    assert message["outgoing"] is False

    # text from the arguments, uid printed
    uid = jp.ok("message", "send", "-p", "alice", b.jid, "second", "one", "-u").strip()
    assert len(uid) >= 16
    history = jp.json("message", "history", a.jid, "-p", "bob", "-n", 10)
    assert [m["body"] for m in history][-2:] == [message["body"], "second one"]
    sent = jp.json("message", "history", b.jid, "-n", 1)
    assert sent[0]["uid"] == uid and sent[0]["outgoing"] is True

    # search: accents and case ignored, snippet highlighted, in text and JSON
    found = jp.json("message", "search", "-p", "bob", word.replace("é", "E"))
    assert [r["uid"] for r in found] == [message["uid"]]
    assert f"[{word}]" in found[0]["snippet"]
    text = jp.ok("message", "search", "-p", "bob", word, "--with", a.jid, "--since", "1h")
    assert f"[{word}]" in text and a.jid in text
    assert jp.json("message", "search", "-p", "bob", word, "--until", "2h") == []


def test_listen_with_filters_and_count(profiles, tmp_path):
    jp, b = profiles["jp"], profiles["bob"]
    ready = tmp_path / "ready"
    listener = jp.popen(
        "message",
        "listen",
        "-p",
        "bob",
        "--match",
        "^take",
        "-c",
        2,
        "-j",
        "--ready-file",
        ready,
        "--timeout",
        30,
    )
    try:
        wait_for_file(ready, listener)
        for text in ("skip me", "take one", "take two", "take three"):
            jp.ok("message", "send", b.jid, text)
        out, err = listener.communicate(timeout=30)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()
    assert listener.returncode == OK, err
    lines = [json.loads(line) for line in out.splitlines()]  # JSON Lines
    assert [m["body"] for m in lines] == ["take one", "take two"]
    # a listen with a duration ends by itself, successfully
    proc = jp("message", "listen", "-p", "bob", "--duration", "0.3")
    assert proc.returncode == OK and proc.stdout == ""


def test_json_output_parses_everywhere(profiles):
    jp, a = profiles["jp"], profiles["alice"]
    assert jp.json("profile", "default") == {"default": "alice"}
    assert isinstance(jp.json("roster", "list"), list)
    assert isinstance(jp.json("presence", "list", "-p", "bob"), list)
    jp.ok("presence", "set", "away", "-s", "à table", "-p", "bob")
    health = jp.json("info", "health")
    assert health["ok"] is True and health["version"]
    assert {p["name"] for p in health["plugins"]} >= {"XEP-0030", "XEP-0092", "XEP-0199"}
    disco = jp.json("info", "disco")
    assert disco["jid"] == a.jid.split("@")[1] and "urn:xmpp:ping" in disco["features"]
    assert isinstance(jp.json("info", "items"), list)
    assert jp.json("info", "version")["name"] == "Prosody"
    assert jp.json("info", "ping")["rtt"] > 0
    assert jp.json("param", "get", "connection", "jid", "-p", "bob")["value"] == profiles["bob"].jid
    jp.ok("param", "set", "connection", "resource", "jp-test", "-p", "bob")
    assert jp.ok("param", "get", "connection", "resource", "-p", "bob").strip() == "jp-test"
    params = jp.json("param", "list", "connection")
    assert {p["name"] for p in params} >= {"jid", "password", "autoconnect"}
    members = jp.json("debug", "bridge", "list")
    assert "MessageSend" in {m["name"] for m in members["methods"]}
    assert "MessageNew" in {s["name"] for s in members["signals"]}
    # options before the group work too
    assert jp.json("-p", "bob", "profile", "info")["name"] == "bob"


def test_debug_call_and_monitor(profiles, tmp_path):
    jp, b = profiles["jp"], profiles["bob"]
    assert jp.ok("debug", "bridge", "call", "VersionGet").strip()
    assert json.loads(jp.ok("debug", "bridge", "call", "profiles_list")) == ["alice", "bob"]
    history = json.loads(
        jp.ok("debug", "bridge", "call", "HistoryGet", "bob", "", "1", '{"msg_type": "chat"}')
    )
    assert len(history) == 1
    assert_fails(jp("debug", "bridge", "call", "VersionGet", "extra"), USAGE, "takes 0")
    assert_fails(jp("debug", "bridge", "call", "HistoryGet", "bob", "", "ten", "{}"), USAGE)
    assert_fails(jp("debug", "bridge", "call", "NoSuchMethod"), UNAVAILABLE, "NoSuchMethod")

    ready = tmp_path / "ready"
    monitor = jp.popen(
        "debug",
        "monitor",
        "MessageNew",
        "-p",
        "bob",
        "-c",
        1,
        "-j",
        "--ready-file",
        ready,
        "--timeout",
        30,
    )
    try:
        wait_for_file(ready, monitor)
        jp.ok("message", "send", b.jid, "seen by the monitor")
        out, err = monitor.communicate(timeout=30)
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.communicate()
    assert monitor.returncode == OK, err
    event = json.loads(out)
    assert event["signal"] == "MessageNew" and event["args"]["profile"] == "bob"
    assert event["args"]["message"]["body"] == "seen by the monitor"


def test_error_cases_have_their_exit_codes(profiles):
    jp, server, a = profiles["jp"], profiles["prosody"], profiles["alice"]
    port = server.c2s_port
    # bad arguments: jp's own checks, then the daemon's
    assert_fails(jp("profile", "create", "only-a-name"), USAGE, "bad arguments", "--help")
    assert_fails(jp("nosuchgroup"), USAGE, "invalid choice")
    assert_fails(jp("profile", "list", "--timeout", "-1"), USAGE)
    assert_fails(jp("message", "send", "bob@example.org", input=""), USAGE, "empty")
    assert_fails(jp("message", "send", "not a jid@@", "hi"), USAGE, "valid JID")
    assert_fails(jp("message", "history", "-n", "0"), USAGE)
    assert_fails(jp("profile", "delete", "bob"), USAGE, "--yes")
    # not found
    assert_fails(jp("profile", "connect", "-p", "nobody"), NOT_FOUND, "nobody")
    assert_fails(jp("param", "get", "connection", "nope"), NOT_FOUND, "connection/nope")
    # already exists
    assert_fails(
        jp("profile", "create", "alice", a.jid, "-x", "x", "--port", port), EXISTS, "alice"
    )
    # not connected
    jp.ok(
        "profile", "create", "idle", a.jid, "-x", a.password, "--host", "127.0.0.1", "--port", port
    )
    assert_fails(jp("message", "send", "-p", "idle", a.jid, "hi"), NOT_CONNECTED, "idle")
    assert_fails(jp("message", "wait", "-p", "idle", "--timeout", "5"), NOT_CONNECTED)
    # permission denied: wrong profile password
    jp.ok(
        "profile",
        "create",
        "locked",
        a.jid,
        "-x",
        a.password,
        "-P",
        "right",
        "--host",
        "127.0.0.1",
        "--port",
        port,
    )
    assert_fails(jp("profile", "connect", "-p", "locked", "-P", "wrong"), PERMISSION)
    # XMPP connection failure: wrong XMPP password
    jp.ok("profile", "create", "badpw", a.jid, "-x", "wrong", "--host", "127.0.0.1", "--port", port)
    assert_fails(jp("profile", "connect", "-p", "badpw"), CONNECTION, "AuthenticationFailed")
    # timeout: nothing arrives
    started = time.monotonic()
    assert_fails(jp("message", "wait", "-p", "bob", "--timeout", "0.5"), TIMEOUT, "0.5 s")
    assert time.monotonic() - started < 10
    # cleanup, non-interactive: needs --yes
    for name in ("idle", "locked", "badpw"):
        assert jp.json("profile", "delete", name, "--yes") == {"name": name, "deleted": True}
    assert jp.json("profile", "list") == ["alice", "bob"]


def test_waiting_commands_exit_when_the_daemon_stops(tmp_path, prosody):
    with sat_daemon_on_private_bus(tmp_path, prosody.ca_cert_path) as daemon:
        try:
            jp = Jp(daemon.bus_address)
            jp.ok("profile", "create", "lonely", "lonely@localhost", "-x", "pw")
            listen_ready, monitor_ready = tmp_path / "listen", tmp_path / "monitor"
            listener = jp.popen(
                "message", "listen", "--disconnected-ok", "--ready-file", listen_ready
            )
            monitor = jp.popen("debug", "monitor", "--ready-file", monitor_ready)
            wait_for_file(listen_ready, listener)
            wait_for_file(monitor_ready, monitor)
        finally:
            daemon.stop()
        for proc in (listener, monitor):
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == UNREACHABLE, (out, err)
            assert err.count("\n") == 1 and err.startswith("jp: daemon unreachable: "), err


def test_members_jp_uses_match_the_daemon(profiles):
    """Every member jp calls (sat_frontends/jp/members.py) is offered by the real daemon with
    the same argument names and types, and the return type jp reads."""
    from sat_frontends.jp.members import MEMBERS, SIGNALS, parse

    jp = profiles["jp"]
    offered = jp.json("debug", "bridge", "list")
    methods = {m["name"]: m for m in offered["methods"]}
    problems = []
    for name, spec in MEMBERS.items():
        names, types, out = parse(spec)
        method = methods.get(name)
        if method is None:
            problems.append(f"{name}: not offered by the daemon")
            continue
        declared = tuple((a["name"], a["type"]) for a in method["args"])
        if declared != tuple(zip(names, types, strict=True)):
            problems.append(f"{name}: daemon {declared}, jp {spec}")
        if out is not None and method["out"] != out:
            problems.append(f"{name}: daemon returns {method['out']!r}, jp reads {out!r}")
    signals = {s["name"]: s for s in offered["signals"]}
    for name, spec in SIGNALS.items():
        names, types, _ = parse(spec)
        signal = signals.get(name)
        if (
            signal is None
            or tuple(signal["args"]) != names
            or signal["signature"] != "".join(types)
        ):
            problems.append(f"signal {name}: daemon {signal}, jp {spec}")
    assert not problems, "\n".join(problems)


def test_group_chat_round_trip(profiles, tmp_path):
    """Two profiles in a room through jp only: join, occupants, talk, correct, react, retract
    (each seen in the other profile's history), subject, config, affiliations, kick, leave."""
    jp, server, a = profiles["jp"], profiles["prosody"], profiles["alice"]
    room = f"jp-{uuid.uuid4().hex[:8]}@{server.muc_domain}"
    info = jp.json("muc", "join", room, "-n", "alice")  # alice: the default profile
    assert info["created"] and info["nick"] == "alice" and info["role"] == "moderator"
    assert jp.ok("muc", "join", room, "-p", "bob", "-n", "bob").startswith(
        f"joined {room} as bob, 2 occupant(s)"
    )
    occupants = jp.json("muc", "occupants", room, "-p", "bob")
    assert {(o["nick"], o["role"]) for o in occupants} == {
        ("alice", "moderator"),
        ("bob", "participant"),
    }
    poll(
        lambda: len(jp.json("muc", "occupants", room)) == 2,
        "bob among alice's occupants",
    )
    assert [r["room"] for r in jp.json("muc", "list", "-p", "bob")] == [room]

    # alice talks (groupchat, as the daemon wants for a room), bob receives it
    ready = tmp_path / "ready"
    waiter = jp.popen(
        "message", "wait", "-p", "bob", "--from", room, "--type", "groupchat",
        "--ready-file", ready, "--timeout", 30, "-j",
    )  # fmt: skip
    try:
        wait_for_file(ready, waiter)
        a_uid = jp.ok("message", "send", room, "Meeting at 10", "--type", "groupchat", "-u")
        a_uid = a_uid.strip()
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == OK, err
    received = json.loads(out)
    assert received["from"] == f"{room}/alice" and received["body"] == "Meeting at 10"
    b_uid = received["uid"]
    # bob answers without --type: jp sees he is in that room and sends a groupchat message
    jp.ok("message", "send", "-p", "bob", room, "Works for me")

    def groupchat_history(*options):
        return [
            m for m in jp.json("message", "history", room, *options) if m["type"] == "groupchat"
        ]

    history = poll(
        lambda: (lambda msgs: msgs if len(msgs) == 2 else None)(groupchat_history()),
        "both messages in alice's history",
    )
    assert [(m["from"], m["body"]) for m in history] == [
        (f"{room}/alice", "Meeting at 10"),
        (f"{room}/bob", "Works for me"),
    ]
    assert history[0]["uid"] == a_uid and history[0]["outgoing"] is True

    def sees(profile, uid, predicate, what):
        """The message ``uid`` in ``profile``'s history, once ``predicate`` holds for it."""
        return poll(
            lambda: (lambda m: m if m and predicate(m) else None)(
                by_uid(groupchat_history("-p", profile), uid)
            ),
            what,
        )

    # alice corrects her message: bob's copy changes
    jp.ok("message", "correct", a_uid, "Meeting", "at", "11")
    seen = sees("bob", b_uid, lambda m: m["body"] == "Meeting at 11", "correction")
    assert seen["extra"]["edits"][0]["body"] == "Meeting at 10"
    assert "Meeting at 11 (edited)" in jp.ok("message", "history", room, "-p", "bob")
    # bob reacts: alice's copy gets the reaction
    jp.ok("message", "react", b_uid, "👍", "-p", "bob")
    mine = sees("alice", a_uid, lambda m: m["extra"].get("reactions"), "reaction")
    assert mine["extra"]["reactions"] == {"👍": [f"{room}/bob"]}
    # alice retracts it: bob keeps a tombstone
    assert jp.json("message", "retract", a_uid) == {"uid": a_uid, "retracted": True}
    gone = sees("bob", b_uid, lambda m: m["extra"].get("retracted"), "retraction")
    assert "body" not in gone and gone["extra"]["retracted"]["by"] == f"{room}/alice"
    assert "[retracted]" in jp.ok("message", "history", room, "-p", "bob", "-n", 2)

    # room management as its owner
    jp.ok("muc", "subject", room, "Ordre", "du", "jour")
    assert jp.json("muc", "list")[0]["subject"] == "Ordre du jour"
    form = jp.json("muc", "config", room)
    assert form["form_type"] == "http://jabber.org/protocol/muc#roomconfig"
    jp.ok("muc", "config", room, "muc#roomconfig_roomname=Salle jp")
    fields = {f["var"]: f["values"] for f in jp.json("muc", "config", room)["fields"]}
    assert fields["muc#roomconfig_roomname"] == ["Salle jp"]
    assert "muc#roomconfig_roomname = Salle jp" in jp.ok("muc", "config", room)
    owners = jp.json("muc", "affiliations", room, "owner")
    assert [o["jid"] for o in owners] == [a.jid]
    assert_fails(jp("muc", "config", room, "-p", "bob"), PERMISSION)
    assert_fails(jp("muc", "kick", room, "alice", "-p", "bob"), PERMISSION)
    jp.ok("muc", "kick", room, "bob", "-r", "Dehors")
    poll(lambda: jp.json("muc", "list", "-p", "bob") == [], "bob out of the room")
    assert_fails(
        jp("message", "send", "-p", "bob", room, "still here?", "--type", "groupchat"),
        PERMISSION,
        "not in room",
    )
    assert_fails(jp("muc", "occupants", room, "-p", "bob"), NOT_FOUND)
    jp.ok("muc", "leave", room, "-s", "bye")
    assert jp.json("muc", "list") == []


def test_roster_blocking_bookmarks(profiles):
    jp, b, server = profiles["jp"], profiles["bob"], profiles["prosody"]
    # roster
    jp.ok("roster", "add", b.jid, "--name", "Bob", "-g", "Friends")
    entry = poll(
        lambda: next((i for i in jp.json("roster", "list") if i["jid"] == b.jid), None),
        "bob in alice's roster",
    )
    assert entry["name"] == "Bob" and entry["groups"] == ["Friends"]
    assert f"{b.jid} (Bob)" in jp.ok("roster", "list", "-g", "Friends")
    jp.ok("roster", "remove", b.jid)
    poll(
        lambda: all(i["jid"] != b.jid for i in jp.json("roster", "list")),
        "bob removed from alice's roster",
    )
    # blocking (XEP-0191)
    spam = f"spam-{uuid.uuid4().hex[:6]}@example.org"
    jp.ok("roster", "block", spam, "-p", "bob")
    assert jp.json("roster", "blocked", "-p", "bob") == [spam]
    jp.ok("roster", "unblock", spam, "-p", "bob")
    assert jp.json("roster", "blocked", "-p", "bob") == []
    jp.ok("roster", "block", spam, "other." + spam.split("@")[1], "-p", "bob")
    assert len(jp.json("roster", "blocked", "-p", "bob")) == 2
    jp.ok("roster", "unblock", "--all", "-p", "bob")
    assert jp.json("roster", "blocked", "-p", "bob") == []
    assert_fails(jp("roster", "unblock", "-p", "bob"), USAGE, "--all")
    # bookmarks (without autojoin: the daemon would join the room at once)
    room = f"mark-{uuid.uuid4().hex[:8]}@{server.muc_domain}"
    jp.ok("bookmarks", "add", room, "-n", "Salle", "--nick", "al")

    def bookmark():
        return next((m for m in jp.json("bookmarks", "list") if m["room"] == room), None)

    assert bookmark() == {
        "room": room,
        "name": "Salle",
        "nick": "al",
        "autojoin": False,
        "has_password": False,
    }
    jp.ok("bookmarks", "add", room, "--nick", "ali")  # an update keeps the name
    assert (bookmark()["name"], bookmark()["nick"]) == ("Salle", "ali")
    assert f"{room} (Salle)  nick=ali" in jp.ok("bookmarks", "list")
    jp.ok("bookmarks", "remove", room)
    assert bookmark() is None
    assert_fails(jp("bookmarks", "remove", room), NOT_FOUND)


def test_vcard_avatar_archive(profiles, tmp_path):
    jp, a = profiles["jp"], profiles["alice"]
    jp.ok("vcard", "set", "FN=Alice Test", "EMAIL=alice@example.org", "NOTE=jp")
    card = jp.json("vcard", "get")
    assert card["FN"] == "Alice Test" and card["EMAIL"] == ["alice@example.org"]
    assert jp.json("vcard", "get", a.jid, "-p", "bob")["FN"] == "Alice Test"
    # a round trip through jq-like editing: what get prints, set takes
    edited = dict(card, NOTE="edited")
    jp.ok("vcard", "set", "-", input=json.dumps(edited))
    assert jp.json("vcard", "get")["NOTE"] == "edited"
    assert_fails(jp("vcard", "set", "COLOUR=blue"), USAGE, "COLOUR")

    image = tmp_path / "me.png"
    image.write_bytes(png(seed=1, size=1))
    import hashlib

    result = jp.json("avatar", "set", image)
    assert result["id"] == hashlib.sha1(image.read_bytes()).hexdigest()
    path = jp.ok("avatar", "get").strip()
    assert Path(path).read_bytes() == image.read_bytes()
    assert_fails(jp("avatar", "set", tmp_path / "nope.png"), NOT_FOUND, "no such file")

    # the message archive: a catch-up, then a page of a conversation
    stats = jp.json("message", "sync")
    assert stats["archive"] == a.jid and stats["complete"] is True
    assert "new message(s)" in jp.ok("message", "sync")
    page = jp.json("message", "archive", profiles["bob"].jid, "-n", 5)
    assert isinstance(page, list) and len(page) <= 5
