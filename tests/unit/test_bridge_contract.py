"""The bridge contract: declarations, argument checks, naming, variants, introspection, errors.

Run with the asyncio reactor: ``python -m pytest -p pytest_twisted --reactor=asyncio``.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from dbus_fast import Variant
from twisted.internet import defer, reactor, task

from sat.bridge import types as bt
from sat.bridge.contract import (
    BUS_NAME,
    INTERFACES,
    OBJECT_PATH,
    Bridge,
    UnknownMethod,
)
from sat.core import errors
from sat_frontends.bridge import dbus_client
from sat_frontends.bridge import errors as ferrors
from sat_frontends.bridge.inprocess import InProcessBridgeClient
from tests.support.dbus import asyncio_test, declare_test_api

DOC = "org.freedesktop.DBus.DocString"
GTK_DOC = "org.gtk.GDBus.DocString"


def make_bridge() -> Bridge:
    bridge = Bridge()
    bridge.add_method(
        "ProfileCreate",
        lambda name, password: f"created {name}",
        args=[("profile", "s", "the profile's name"), ("password", "s", "its password")],
        out=("s", "a note"),
        doc="Create a profile.",
        interface="core",
    )
    return bridge


# ---------------------------------------------------------------------------- declarations


def test_declaration_is_recorded():
    bridge = make_bridge()
    method = bridge.methods["ProfileCreate"]
    assert method.snake_name == "profile_create"
    assert method.in_signature == "ss"
    assert method.out_signature == "s"
    assert method.interface_name == "org.salutatoi.SAT.core"
    assert [a.name for a in method.args] == ["profile", "password"]
    assert bridge.find_method("profile_create") is method
    assert bridge.find_method("ProfileCreate") is method
    assert bridge.find_method("nope") is None


def test_views_are_read_only():
    bridge = make_bridge()
    with pytest.raises(TypeError):
        bridge.methods["X"] = None
    with pytest.raises(TypeError):
        bridge.signals["X"] = None


def test_default_interface_is_plugin():
    bridge = Bridge()
    bridge.add_method("MucJoin", lambda: None, doc="Join a room.")
    bridge.add_signal("MucJoined", doc="Joined.")
    assert bridge.methods["MucJoin"].interface_name == INTERFACES["plugin"]
    assert bridge.signals["MucJoined"].interface_name == INTERFACES["plugin"]


def test_duplicate_names_are_refused():
    bridge = make_bridge()
    with pytest.raises(ValueError, match="already declared"):
        bridge.add_method("ProfileCreate", lambda: None, doc="again")
    bridge.add_signal("Ping", doc="a signal")
    with pytest.raises(ValueError, match="already declared"):
        bridge.add_signal("Ping", doc="again")


def test_snake_case_clash_is_refused():
    bridge = Bridge()
    bridge.add_method("MUCJoin", lambda: None, doc="x")
    with pytest.raises(ValueError, match="clashes"):
        bridge.add_method("MucJoin", lambda: None, doc="x")


@pytest.mark.parametrize(
    "name", ["profileCreate", "profile_create", "Profile.Create", "", "Profile-Create", 3]
)
def test_bad_member_names(name):
    with pytest.raises(ValueError, match="CamelCase"):
        Bridge().add_method(name, lambda: None, doc="x")


@pytest.mark.parametrize(
    "args, match",
    [
        ([("a", "q(", "x")], "argument 'a'"),
        ([("a", "ss", "x")], "exactly one complete type"),
        ([("a", "", "x")], "argument 'a'"),
        ([("a", "h", "x")], "not supported"),
        ([("a", "s", "x"), ("a", "s", "y")], "twice"),
        ([("1a", "s", "x")], "bad argument name"),
        ([("a", "s")], "tuples"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        Bridge().add_method("Thing", lambda *a: None, args=args, doc="x")


def test_bad_interface_and_handler():
    with pytest.raises(ValueError, match="interface"):
        Bridge().add_method("Thing", lambda: None, doc="x", interface="other")
    with pytest.raises(ValueError, match="callable"):
        Bridge().add_method("Thing", "not callable", doc="x")


def test_docs_are_required():
    with pytest.raises(ValueError, match="doc string is required"):
        Bridge().add_method("Thing", lambda: None)
    with pytest.raises(ValueError, match="'a' needs a doc"):
        Bridge().add_method("Thing", lambda a: None, args=[("a", "s", "")], doc="x")
    with pytest.raises(ValueError, match="'result' needs a doc"):
        Bridge().add_method("Thing", lambda: 1, out=("x", ""), doc="x")
    with pytest.raises(ValueError, match="doc string is required"):
        Bridge().add_signal("Thing")
    relaxed = Bridge(require_docs=False)
    relaxed.add_method("Thing", lambda a: None, args=[("a", "s", "")])
    relaxed.add_signal("Thing")


def test_attached_listener_hears_late_declarations():
    bridge = make_bridge()
    seen = []

    class Listener:
        def bridge_changed(self, member):
            seen.append(member.name)

        def bridge_signal(self, signal, wire_args):
            seen.append((signal.name, wire_args))

    listener = Listener()
    bridge.attach(listener)
    bridge.add_method("Late", lambda: None, doc="declared after the server started")
    bridge.add_signal("LateSignal", args=[("data", "a{sv}", "stuff")], doc="late")
    bridge.emit("LateSignal", {"a": 1, "b": None})
    bridge.detach(listener)
    bridge.emit("LateSignal", {})
    assert seen[:2] == ["Late", "LateSignal"]
    name, wire = seen[2]
    assert name == "LateSignal"
    assert wire == [{"a": Variant("x", 1)}]
    assert len(seen) == 3


def test_emit_checks_arguments():
    bridge = Bridge()
    bridge.add_signal("Tick", args=[("n", "x", "count")], doc="tick")
    with pytest.raises(ValueError, match="not declared"):
        bridge.emit("Tock", 1)
    with pytest.raises(errors.InvalidArgument, match="'n'"):
        bridge.emit("Tick", "one")
    with pytest.raises(errors.InvalidArgument, match="takes 1"):
        bridge.emit("Tick")


def test_failing_listener_does_not_stop_others(caplog):
    bridge = Bridge()
    bridge.add_signal("Tick", args=[("n", "x", "count")], doc="tick")
    got = []

    class Broken:
        def bridge_signal(self, signal, wire_args):
            raise RuntimeError("boom")

        def bridge_changed(self, member):
            raise RuntimeError("boom")

    class Good:
        def bridge_signal(self, signal, wire_args):
            got.append(wire_args)

        def bridge_changed(self, member):
            pass

    bridge.attach(Broken())
    bridge.attach(Good())
    with caplog.at_level(logging.ERROR):
        bridge.emit("Tick", 3)
        bridge.add_method("Other", lambda: None, doc="x")
    assert got == [[3]]
    assert "boom" in caplog.text


# ---------------------------------------------------------------------------- calls


@asyncio_test
async def test_call_sync_handler():
    bridge = make_bridge()
    assert await bridge.call("ProfileCreate", "alice", "pw") == "created alice"
    assert await bridge.call("profile_create", "bob", "pw") == "created bob"


@asyncio_test
async def test_call_deferred_and_twisted_style_coroutine():
    bridge = Bridge()

    def later(x):
        return task.deferLater(reactor, 0.01, lambda: x * 2)

    async def twisted_style(x):
        # awaits a Deferred: only works when driven by ensureDeferred
        value = await task.deferLater(reactor, 0.01, lambda: x + 1)
        return {"value": value, "none": None}

    bridge.add_method("Later", later, args=[("x", "x", "n")], out=("x", "2n"), doc="d")
    bridge.add_method("Tw", twisted_style, args=[("x", "x", "n")], out=("a{sv}", "r"), doc="d")
    assert await bridge.call("Later", 21) == 42
    assert await bridge.call("Tw", 1) == {"value": 2}


@asyncio_test
async def test_wrong_types_name_the_argument():
    bridge = make_bridge()
    with pytest.raises(errors.InvalidArgument, match="'password' \\(s\\): expected str, got int"):
        await bridge.call("ProfileCreate", "alice", 3)
    with pytest.raises(errors.InvalidArgument, match="takes 2 argument"):
        await bridge.call("ProfileCreate", "alice")
    with pytest.raises(errors.InvalidArgument, match="takes 2 argument"):
        await bridge.call("ProfileCreate", "alice", "a", "b")
    with pytest.raises(UnknownMethod):
        await bridge.call("ProfileDelete", "alice")


@asyncio_test
async def test_value_conversions():
    bridge = Bridge(require_docs=False)
    sigs = [
        "x",
        "i",
        "u",
        "y",
        "d",
        "b",
        "s",
        "o",
        "g",
        "as",
        "a{sv}",
        "aa{sv}",
        "(sx)",
        "ay",
        "v",
        "a{sx}",
        "a(sv)",
    ]
    for index, sig in enumerate(sigs):
        bridge.add_method(f"Echo{index}", lambda v: v, args=[("v", sig, "")], out=(sig, ""))
    by_sig = {m.in_signature: m.name for m in bridge.methods.values()}

    async def echo(sig, value):
        return await bridge.call(by_sig[sig], value)

    assert await echo("d", 3) == 3.0 and isinstance(await echo("d", 3), float)
    assert await echo("(sx)", ["a", 1]) == ("a", 1)
    assert await echo("as", ("a", "b")) == ["a", "b"]
    assert await echo("ay", bytearray(b"xy")) == b"xy"
    assert await echo("o", "/a/b") == "/a/b"
    assert await echo("a{sv}", {"a": None, "b": (1, 2), "c": {"d": [{"e": b"z"}]}}) == {
        "b": [1, 2],
        "c": {"d": [{"e": b"z"}]},
    }
    assert await echo("v", [1, "x", 2.5]) == [1, "x", 2.5]
    assert await echo("a(sv)", [("k", 1)]) == [("k", 1)]

    bad = [
        ("x", True, "expected int"),
        ("x", 2**63, "out of range"),
        ("i", 2**31, "out of range"),
        ("u", -1, "out of range"),
        ("y", 256, "out of range"),
        ("b", 1, "expected bool"),
        ("d", "1.0", "expected float"),
        ("s", b"x", "expected str"),
        ("o", "not/a/path", "object path"),
        ("g", "a{", "signature"),
        ("as", "abc", "expected list"),
        ("as", ["a", 1], r"at \[1\]: expected str"),
        ("a{sx}", {"a": "1"}, r"at \['a'\]: expected int"),
        ("a{sx}", ["a"], "expected dict"),
        ("a{sv}", {"a": {1: "x"}}, r"at \['a'\]\[1\]: expected str"),
        ("a{sv}", {"a": object()}, "cannot send a object"),
        ("a{sv}", {"a": [None]}, "None cannot be sent"),
        ("a{sv}", {"a": 2**64}, "64 bits"),
        ("(sx)", ("a",), "2-item tuple"),
        ("ay", "text", "expected bytes"),
        ("v", None, "None cannot be sent"),
    ]
    for sig, value, match in bad:
        with pytest.raises(errors.InvalidArgument, match=match):
            await echo(sig, value)


@asyncio_test
async def test_errors(caplog):
    bridge = Bridge(require_docs=False)

    def not_found():
        raise errors.NotFound("no such contact")

    def bug():
        raise KeyError("oops")

    async def async_bug():
        await task.deferLater(reactor, 0, lambda: None)
        raise RuntimeError("async oops")

    bridge.add_method("NotFoundThing", not_found)
    bridge.add_method("Bug", bug)
    bridge.add_method("AsyncBug", async_bug)
    bridge.add_method("BadResult", lambda: 3, out=("s", ""))
    bridge.add_method("DeferredBug", lambda: defer.fail(ValueError("deferred oops")))

    with pytest.raises(errors.NotFound, match="no such contact"):
        await bridge.call("NotFoundThing")
    with caplog.at_level(logging.ERROR, logger="sat.bridge.contract"):
        for name, kind in [
            ("Bug", "KeyError"),
            ("AsyncBug", "RuntimeError"),
            ("DeferredBug", "ValueError"),
        ]:
            with pytest.raises(errors.InternalError, match=kind):
                await bridge.call(name)
            assert f"bridge call {name} failed" in caplog.text
    assert "async oops" in caplog.text  # the traceback is logged
    with pytest.raises(errors.InternalError, match="not matching 's'"):
        await bridge.call("BadResult")


# ---------------------------------------------------------------------------- naming


NAMES = [
    ("ProfileCreate", "profile_create"),
    ("MessageSend", "message_send"),
    ("HistoryGet", "history_get"),
    ("MUCJoin", "muc_join"),
    ("GetURLInfo", "get_url_info"),
    ("Xep0045Join", "xep0045_join"),
    ("Ping", "ping"),
    ("A", "a"),
]


@pytest.mark.parametrize("camel, snake", NAMES)
def test_naming(camel, snake):
    for module in (bt, dbus_client):
        assert module.camel_to_snake(camel) == snake
        assert module.snake_to_camel(camel) == camel
    assert bt.snake_to_camel("profile_create") == "ProfileCreate"
    assert dbus_client.snake_to_camel("message_new") == "MessageNew"


# ---------------------------------------------------------------------------- variants

SAMPLES = [
    ("text", "s"),
    (True, "b"),
    (3, "x"),
    (-(2**63), "x"),
    (2**63, "t"),
    (1.5, "d"),
    (b"raw", "ay"),
    (bytearray(b"raw"), "ay"),
    ({"a": 1, "b": None}, "a{sv}"),
    ([], "as"),
    (["a", "b"], "as"),
    ([{"a": 1}, {}], "aa{sv}"),
    ([True, False], "ab"),
    ([1, 2], "ax"),
    ([1.0, 2.5], "ad"),
    ([b"a", b"b"], "aay"),
    ([1, "a"], "av"),
    ([1, 2.5], "av"),
    ((1, 2), "ax"),
    ({"nested": {"deep": [{"x": [1, "y"]}]}}, "a{sv}"),
]


@pytest.mark.parametrize("value, sig", SAMPLES)
def test_guess_variant(value, sig):
    backend = bt.guess_variant(value)
    frontend = dbus_client.guess_variant(value)
    assert backend.signature == sig
    assert frontend.signature == sig
    assert backend == frontend  # the twins agree
    backend.type.verify(backend.value)  # and dbus-fast accepts the result


def test_unwrap():
    wrapped = bt.compile_to_wire("a{sv}")(
        {"a": 1, "b": None, "c": {"d": [1, "x"]}, "e": [{"f": True}], "g": ("s", 1)}
    )
    assert "b" not in wrapped
    assert isinstance(wrapped["c"], Variant)
    plain = {"a": 1, "c": {"d": [1, "x"]}, "e": [{"f": True}], "g": ["s", 1]}
    assert bt.from_wire(wrapped) == plain
    assert dbus_client.from_wire(wrapped) == plain
    assert bt.from_wire(("a", Variant("s", "b"))) == ("a", "b")


@pytest.mark.parametrize("value", [None, object(), {1: "a"}, 2**70, [None]])
def test_guess_refuses(value):
    with pytest.raises(bt.WireTypeError):
        bt.guess_variant(value)
    with pytest.raises((ValueError, TypeError)):
        dbus_client.guess_variant(value)


# ---------------------------------------------------------------------------- introspection


def test_introspection_xml_is_documented():
    bridge = declare_test_api(Bridge())
    xml = bridge.introspection_xml()
    assert xml.startswith("<!DOCTYPE node")
    root = ET.fromstring(xml)
    assert root.get("name") == OBJECT_PATH
    ifaces = {i.get("name"): i for i in root.findall("interface")}
    assert set(INTERFACES.values()) <= set(ifaces)
    assert "org.freedesktop.DBus.Introspectable" in ifaces
    count = 0
    for iface_name in INTERFACES.values():
        for member in ifaces[iface_name]:
            if member.tag == "annotation":
                continue
            count += 1
            names = {a.get("name") for a in member.findall("annotation")}
            assert {DOC, GTK_DOC} <= names, member.get("name")
            for arg in member.findall("arg"):
                arg_docs = {a.get("name"): a.get("value") for a in arg.findall("annotation")}
                assert arg_docs.get(DOC), (member.get("name"), arg.get("name"))
                assert arg_docs[DOC] == arg_docs[GTK_DOC]
    assert count == len(bridge.methods) + len(bridge.signals)
    concat = ifaces[INTERFACES["core"]].find("method[@name='Concat']")
    args = [(a.get("name"), a.get("type"), a.get("direction")) for a in concat.findall("arg")]
    assert args == [
        ("text", "s", "in"),
        ("count", "i", "in"),
        ("separator", "s", "in"),
        ("result", "s", "out"),
    ]
    notify = ifaces[INTERFACES["plugin"]].find("signal[@name='Notify']")
    assert [a.get("type") for a in notify.findall("arg")] == ["s", "a{sv}"]
    # the client reads it back
    methods, signals = dbus_client.parse_introspection(xml)
    assert methods["Concat"].arg_names == ("text", "count", "separator")
    assert methods["Concat"].doc == "Repeat a text."
    assert methods["EchoRecords"].interface == INTERFACES["plugin"]
    assert signals["Notify"].signature == "sa{sv}"


def test_introspection_escapes_and_follows_declarations():
    bridge = make_bridge()
    before = bridge.introspection_xml()
    bridge.add_method(
        "Quote",
        lambda: None,
        doc='Uses <tags>, "quotes" & ampersands.\n\nAnd a second paragraph.',
    )
    after = bridge.introspection_xml()
    assert "Quote" not in before and "Quote" in after
    method = ET.fromstring(after).find(".//method[@name='Quote']")
    doc = method.find("annotation").get("value")
    assert doc == 'Uses <tags>, "quotes" & ampersands.\n\nAnd a second paragraph.'


# ---------------------------------------------------------------------------- client errors


@pytest.mark.parametrize(
    "dbus_name, cls, short",
    [
        ("org.salutatoi.SAT.Error.NotFound", ferrors.NotFound, "NotFound"),
        (
            "org.salutatoi.SAT.Error.AuthenticationFailed",
            ferrors.AuthenticationFailed,
            "AuthenticationFailed",
        ),
        ("org.salutatoi.SAT.Error.Internal", ferrors.Internal, "Internal"),
        ("org.salutatoi.SAT.Error.SomethingNew", ferrors.BridgeError, "SomethingNew"),
        ("org.freedesktop.DBus.Error.UnknownMethod", ferrors.UnknownMethod, "UnknownMethod"),
        (
            "org.freedesktop.DBus.Error.ServiceUnknown",
            ferrors.BridgeUnavailable,
            "BridgeUnavailable",
        ),
        ("org.freedesktop.DBus.Error.NoReply", ferrors.Timeout, "Timeout"),
        ("org.freedesktop.DBus.Error.AccessDenied", ferrors.PermissionDenied, "PermissionDenied"),
        ("com.example.Weird", ferrors.BridgeError, "Weird"),
    ],
)
def test_error_mapping(dbus_name, cls, short):
    error = ferrors.from_error_name(dbus_name, "text")
    assert type(error) is cls
    assert error.name == short
    assert error.message == "text"
    assert error.dbus_name == dbus_name
    assert isinstance(error, ferrors.BridgeError)


def test_every_backend_error_has_a_client_class():
    for obj in vars(errors).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, errors.SatError)
            and obj is not errors.SatError
        ):
            cls = ferrors.error_class(obj.dbus_name)
            assert cls is not ferrors.BridgeError, obj.dbus_name
            assert cls.name == obj.dbus_name
    assert issubclass(ferrors.AuthenticationFailed, ferrors.ConnectionFailed)


def test_frontend_bridge_does_not_import_the_backend():
    root = Path(__file__).resolve().parents[2] / "sat_frontends" / "bridge"
    for path in root.glob("*.py"):
        if path.name == "inprocess.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name != "sat" and not name.startswith("sat."), (path.name, name)


def test_constants_agree():
    assert dbus_client.BUS_NAME == BUS_NAME
    assert dbus_client.OBJECT_PATH == OBJECT_PATH


# ---------------------------------------------------------------------------- in-process client


@asyncio_test
async def test_inprocess_client():
    bridge = declare_test_api(Bridge())
    client = InProcessBridgeClient(bridge)
    assert await client.echo("x") == "x"
    assert await client.concat("ab", 2, "-") == "ab-ab"
    assert await client.call("EchoInt", 5) == 5
    assert "echo_record" in dir(client)
    assert "Repeat" in client.concat.__doc__
    with pytest.raises(ferrors.NotFound, match="gone"):
        await client.fail("NotFound", "gone")
    with pytest.raises(ferrors.InvalidArgument, match="'count'"):
        await client.concat("a", "2", "-")
    with pytest.raises(ferrors.UnknownMethod):
        await client.no_such_method()
    with pytest.raises(AttributeError):
        client._private  # noqa: B018

    got = []
    client.on("notify", lambda text, extra: got.append((text, extra)))
    client.on("Tick", lambda n: got.append(n))
    await client.emit_notify("hello", {"k": [1, 2], "none": None})
    assert got == []  # delivered later, never from inside emit
    await asyncio.sleep(0.01)
    assert got == [("hello", {"k": [1, 2]}), 5]
    await client.close()
    with pytest.raises(ferrors.BridgeUnavailable):
        await client.echo("x")
