"""jp without a daemon: parser, help, exit codes, one-line errors, formatting, completion,
and what it must not import."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sat_frontends.bridge import errors
from sat_frontends.jp import base, main
from sat_frontends.jp.base import Exit, JpError
from tests.support.dbus import asyncio_test

REPO_ROOT = Path(__file__).resolve().parents[2]
JP_DIR = REPO_ROOT / "sat_frontends" / "jp"


def run_jp(*args, env_extra=None, input="", timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAT_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "sat_frontends.jp", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        input=input,
        timeout=timeout,
    )


def leaf_paths(parser: argparse.ArgumentParser, path=()):
    """Every runnable command path (aliases skipped)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path
        return
    seen = set()
    for name, sub in subs[0].choices.items():
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        yield from leaf_paths(sub, (*path, name))


# ---------------------------------------------------------------------------- help


def test_help_lists_groups_examples_and_exit_codes(capsys):
    assert main.main(["--help"]) == Exit.OK
    out = capsys.readouterr().out
    for group in main.GROUPS:
        assert f"\n    {group}" in out
    assert "exit codes:" in out
    for code, _, meaning in base.EXIT_CODES:
        assert f"  {code:<4}{meaning}" in out
    assert "jp message wait" in out and "SAT_BRIDGE_BUS" in out


def test_no_arguments_prints_help_with_usage_code(capsys):
    assert main.main([]) == Exit.USAGE
    assert "groups:" in capsys.readouterr().out


def test_every_group_and_command_has_help(capsys):
    for group in main.GROUPS:
        assert main.main([group, "--help"]) == Exit.OK
        assert "usage: jp " + group in capsys.readouterr().out
    paths = list(leaf_paths(main.build_parser(None)))
    assert len(paths) > 50
    for path in paths:
        assert main.main([*path, "--help"]) == Exit.OK, path
        out = capsys.readouterr().out
        assert out.startswith("usage: jp " + " ".join(path)), path
        if path[0] != "completion":
            assert "--profile" in out and "--output" in out and "--timeout" in out, path


def test_version(capsys):
    assert main.main(["--version"]) == Exit.OK
    assert capsys.readouterr().out.startswith("jp ")


def test_issue_command_tree_is_there():
    parser = main.build_parser(None)
    paths = {" ".join(p) for p in leaf_paths(parser)}
    expected = {
        "profile create", "profile delete", "profile list", "profile default",
        "profile connect", "profile disconnect", "profile info",
        "roster list", "roster add", "roster remove", "roster subscribe", "roster block",
        "presence set",
        "message send", "message history", "message search", "message wait", "message listen",
        "message correct", "message retract", "message react", "message moderate",
        "message state", "message mark", "message sync", "message archive",
        "muc join", "muc leave", "muc list", "muc occupants", "muc invite", "muc config",
        "muc kick", "muc ban", "muc role", "muc affiliation", "muc affiliations",
        "muc destroy", "muc subject", "muc nick",
        "bookmarks list", "bookmarks add", "bookmarks remove",
        "vcard get", "vcard set", "avatar get", "avatar set",
        "roster unblock", "roster blocked", "roster requests", "presence get",
        "info disco", "info version", "info health",
        "param get", "param set",
        "debug bridge call", "debug monitor",
    }  # fmt: skip
    assert expected <= paths, expected - paths


# ---------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "argv, words",
    [
        (["nosuchgroup"], ["invalid choice", "'jp --help'"]),
        (["profile"], ["required", "'jp profile --help'"]),
        (["profile", "create", "x"], ["required: jid"]),
        (["profile", "list", "--output", "xml"], ["invalid choice"]),
        (["profile", "list", "--timeout", "soon"], ["not a number of seconds"]),
        (["--timeout", "-2", "profile", "list"], ["cannot be negative"]),
        (["message", "history", "-n", "-3"], ["not a positive integer"]),
        (["message", "search", "x", "--since", "someday"], ["is not a date"]),
        (["presence", "set", "sleepy"], ["invalid choice"]),
        (["profile", "list", "--nope"], ["unrecognized arguments"]),
    ],
)
def test_bad_arguments_are_one_line_and_code_2(capsys, argv, words):
    assert main.main(argv) == Exit.USAGE
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("jp: bad arguments: ")
    for word in words:
        assert word in lines[0]
    assert captured.out == ""


def test_options_before_and_after_the_command():
    parser = main.build_parser({"message"})
    args = parser.parse_args(["-p", "bob", "-j", "message", "history"])
    assert (args.profile, args.output) == ("bob", "json")
    args = parser.parse_args(["message", "history", "-p", "carol", "--timeout", "3"])
    assert (args.profile, args.output, args.timeout) == ("carol", "text", 3.0)
    args = parser.parse_args(["-p", "bob", "message", "history", "-p", "dave"])
    assert args.profile == "dave"
    args = parser.parse_args(["message", "wait"])
    assert args.default_timeout is None  # waits have no default time limit
    args = parser.parse_args(["message", "history"])
    assert args.default_timeout == 30.0


def test_find_group_skips_global_options():
    assert main.find_group(["-p", "bob", "--output", "json", "msg", "send"]) == "message"
    assert main.find_group(["--timeout=3", "-j", "profile"]) == "profile"
    assert main.find_group(["--bus", "session"]) is None
    assert main.find_group([]) is None


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "error, code, label",
    [
        (errors.UnknownMethod("x"), Exit.UNAVAILABLE, "unavailable"),
        (errors.NotFound("x"), Exit.NOT_FOUND, "not found"),
        (errors.InvalidArgument("x"), Exit.USAGE, "bad arguments"),
        (errors.NotConnected("x"), Exit.NOT_CONNECTED, "not connected"),
        (errors.Timeout("x"), Exit.TIMEOUT, "timeout"),
        (errors.BridgeUnavailable("x"), Exit.UNREACHABLE, "daemon unreachable"),
        (errors.PermissionDenied("x"), Exit.PERMISSION, "permission denied"),
        (errors.AuthenticationFailed("x"), Exit.CONNECTION, "connection failed (Authentication"),
        (errors.CertificateError("x"), Exit.CONNECTION, "connection failed (Certificate"),
        (errors.ConnectionFailed("x"), Exit.CONNECTION, "connection failed"),
        (errors.AlreadyExists("x"), Exit.EXISTS, "already exists"),
        (errors.Internal("x"), Exit.ERROR, "daemon error (Internal)"),
        (errors.BridgeError("x", "SomethingNew"), Exit.ERROR, "daemon error (SomethingNew)"),
        (RuntimeError("boom"), Exit.ERROR, "error"),
    ],
)
def test_bridge_errors_map_to_exit_codes(error, code, label):
    err = base.error_to_exit(error)
    assert err.code == code
    assert err.label.startswith(label)


def test_exit_codes_are_distinct_and_documented():
    codes = [c for c, _, _ in base.EXIT_CODES]
    assert len(codes) == len(set(codes))
    doc = (REPO_ROOT / "doc" / "jp.md").read_text()
    for code, _, _ in base.EXIT_CODES:
        assert f"| {code} " in doc, code


def test_one_line():
    assert base.one_line("a\n  b\n\nc ") == "a b c"
    err = base.unavailable("MucJoin")
    assert err.code == Exit.UNAVAILABLE
    assert err.message == "the daemon does not offer MucJoin (plugin not loaded?)"


def test_unreachable_bus_is_code_6_in_one_line(tmp_path):
    proc = run_jp("profile", "list", env_extra={"SAT_BRIDGE_BUS": f"unix:path={tmp_path}/x"})
    assert proc.returncode == Exit.UNREACHABLE
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("jp: daemon unreachable: ")
    proc = run_jp("--bus", f"unix:path={tmp_path}/y", "message", "send", "a@b", "hi")
    assert proc.returncode == Exit.UNREACHABLE and f"{tmp_path}/y" in proc.stderr
    # the daemon's convention: SAT_BRIDGE_BUS=address, the address in SAT_BRIDGE_BUS_ADDRESS
    env = {"SAT_BRIDGE_BUS": "address", "SAT_BRIDGE_BUS_ADDRESS": f"unix:path={tmp_path}/z"}
    proc = run_jp("profile", "list", env_extra=env)
    assert proc.returncode == Exit.UNREACHABLE and f"{tmp_path}/z" in proc.stderr


# ---------------------------------------------------------------------------- formatting


def test_parse_time():
    now = time.time()
    assert base.parse_time("1700000000") == 1700000000.0
    assert abs(base.parse_time("2h") - (now - 7200)) < 5
    assert abs(base.parse_time("7d") - (now - 7 * 86400)) < 5
    assert abs(base.parse_time("now") - now) < 5
    assert base.parse_time("2026-11-03T10:00:00+00:00") == 1793700000.0
    assert base.parse_time("today") <= now < base.parse_time("today") + 86400
    assert base.parse_time("yesterday") == base.parse_time("today") - 86400
    with pytest.raises(argparse.ArgumentTypeError):
        base.parse_time("next tuesday")


def test_message_line():
    msg = {
        "timestamp": 0,
        "from": "alice@example.org/phone",
        "to": "bob@example.org",
        "type": "chat",
        "body": "first line\nsecond line",
    }
    line = base.message_line(msg)
    assert "alice@example.org/phone > bob@example.org: first line\n    second line" in line
    msg.update(type="groupchat", snippet="a [match]")
    assert base.message_line(msg, snippet=True).endswith("(groupchat): a [match]")


def test_generic_text_and_json():
    assert base.generic_text({"a": True, "bb": [1, 2]}) == "a:  yes\nbb: 1, 2"
    assert base.generic_text(["x", "y"]) == "x\ny"
    assert json.loads(base.to_json({"b": b"\x00\x01", "s": {"z"}})) == {"b": "AAE=", "s": ["z"]}
    assert base.to_json({"é": 1}) == '{"é": 1}'


def test_progress_bar_draws_only_when_enabled():
    import io

    stream = io.StringIO()
    bar = base.ProgressBar("sync", stream=stream, enabled=False)
    bar.update(5, 10)
    bar.finish()
    assert stream.getvalue() == ""
    bar = base.ProgressBar("sync", stream=stream, enabled=True)
    bar.update(5, 10)
    assert "50%" in stream.getvalue() and "5/10" in stream.getvalue()
    bar.finish()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_debug_call_argument_conversion():
    from sat_frontends.jp.cmd_debug import convert_arg

    assert convert_arg("hello", "s") == "hello"
    assert convert_arg("0x10", "i") == 16
    assert convert_arg("yes", "b") is True and convert_arg("false", "b") is False
    assert convert_arg("1.5", "d") == 1.5
    assert convert_arg('{"a": [1]}', "a{sv}") == {"a": [1]}
    assert convert_arg('["x", "y"]', "as") == ["x", "y"]
    assert convert_arg('{"a": 1}', "a{ss}") == {"a": "1"}
    assert convert_arg("[1, true]", "(xb)") == (1, True)
    assert convert_arg("plain", "v") == "plain"
    assert convert_arg("abc", "ay") == b"abc" and convert_arg("[1,2]", "ay") == b"\x01\x02"
    for text, sig in (("x", "i"), ("maybe", "b"), ("{", "a{sv}"), ("x", "d")):
        with pytest.raises(JpError) as info:
            convert_arg(text, sig, "arg")
        assert info.value.code == Exit.USAGE


def test_muc_config_assignments():
    from sat_frontends.jp.cmd_muc import _parse_assignments

    assert _parse_assignments(["a=1", "b=true", "a=2", "c="]) == {
        "a": ["1", "2"],
        "b": True,
        "c": "",
    }
    with pytest.raises(JpError):
        _parse_assignments(["novalue"])


# ---------------------------------------------------------------------------- completion


def test_completion_files_are_up_to_date():
    from sat_frontends.jp import completion

    table = completion.command_table()
    assert completion.FILES["bash"].read_text() == completion.bash_script(table), (
        "regenerate: python -m sat_frontends.jp.completion"
    )
    assert completion.FILES["zsh"].read_text() == completion.zsh_script(table), (
        "regenerate: python -m sat_frontends.jp.completion"
    )


def test_completion_command_prints_the_scripts():
    from sat_frontends.jp import completion

    for shell in ("bash", "zsh"):
        proc = run_jp("completion", shell)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == completion.FILES[shell].read_text()


def _fake_jp(tmp_path: Path) -> Path:
    """A `jp` on PATH answering `jp profile list` without a daemon (for -p completion)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "jp"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "profile list" ] && printf "alice\\nbob\\n"\n')
    fake.chmod(0o755)
    return bindir


BASH_CASES = [
    (["jp", ""], {"profile", "message", "msg", "debug", "completion"}),
    (["jp", "pro"], {"profile"}),
    (["jp", "-p", "alice", "mes"], {"message"}),
    (["jp", "message", "se"], {"send", "search"}),
    (["jp", "message", "send", "--ty"], {"--type"}),
    (["jp", "message", "send", "--type", "g"], {"groupchat"}),
    (["jp", "msg", "wait", "-p", ""], {"alice", "bob"}),
    (["jp", "-o", ""], {"text", "json"}),
    (["jp", "presence", "set", "a"], {"available", "away"}),
    (["jp", "debug", "bridge", ""], {"call", "list", "ls"}),
    (["jp", "completion", ""], {"bash", "zsh"}),
]


def test_bash_completion(tmp_path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    from sat_frontends.jp import completion

    script = completion.FILES["bash"]
    assert subprocess.run([bash, "-n", str(script)]).returncode == 0
    lines = [f"source {script}"]
    for words, _ in BASH_CASES:
        quoted = " ".join("'" + w + "'" for w in words)
        lines.append(
            f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; COMPREPLY=(); _jp; "
            'echo "${COMPREPLY[*]}"'
        )
    env = {**os.environ, "PATH": f"{_fake_jp(tmp_path)}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [bash, "-c", "\n".join(lines)], capture_output=True, text=True, env=env, timeout=30
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    results = proc.stdout.splitlines()
    for (words, expected), got in zip(BASH_CASES, results, strict=True):
        assert set(got.split()) >= expected, (words, got)


def test_zsh_completion(tmp_path):
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed")
    from sat_frontends.jp import completion

    script = completion.FILES["zsh"]
    assert subprocess.run([zsh, "-n", str(script)]).returncode == 0
    # zsh's completion widgets replaced by stubs printing what they were given
    lines = [
        'compadd() { [[ $1 == -- ]] && shift; print -r -- "$*"; }',
        '_describe() { print -r -- "${(j: :)${(@)${(P)4}%%:*}}"; }',
        "_files() { print files; }",
        "_default() { print default; }",
        f"eval \"$(sed '$d' {script})\"",
    ]
    cases = [*BASH_CASES, (["jp", "message", "wait", "--ready-file", ""], {"files"})]
    for words, _ in cases:
        quoted = " ".join("'" + w + "'" for w in words)
        lines.append(f"words=({quoted}); CURRENT={len(words)}; _jp")
    env = {**os.environ, "PATH": f"{_fake_jp(tmp_path)}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [zsh, "-f", "-c", "\n".join(lines)], capture_output=True, text=True, env=env, timeout=30
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    results = proc.stdout.splitlines()
    assert len(results) == len(cases), proc.stdout
    for (words, expected), got in zip(cases, results, strict=True):
        prefix = words[-1]
        # _describe leaves prefix matching to zsh: compare on the candidates that match
        offered = {w for w in got.split() if w.startswith(prefix)}
        assert offered >= expected, (words, got)


# ---------------------------------------------------------------------------- imports


def test_jp_never_imports_the_backend_nor_twisted():
    code = """
import sys, pkgutil, importlib
import sat_frontends.jp as jp
from sat_frontends.jp import main
main.build_parser(None)
for info in pkgutil.walk_packages(jp.__path__, "sat_frontends.jp."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
import sat_frontends.bridge.dbus_client
bad = sorted(m for m in sys.modules if m == "sat" or m.startswith(("sat.", "twisted", "wokkel")))
print(",".join(bad))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    for path in JP_DIR.rglob("*.py"):
        text = path.read_text()
        assert "import sat." not in text and "from sat." not in text, path
        assert "from sat import" not in text, path


def test_help_and_parsing_do_not_load_dbus_or_asyncio():
    code = """
import sys
from sat_frontends.jp import main
main.build_parser({"message"}).parse_args(["message", "send", "a@b", "hi"])
print(",".join(sorted(m for m in ("asyncio", "dbus_fast", "json") if m in sys.modules)))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_only_the_named_group_is_imported():
    code = """
import sys
from sat_frontends.jp import main
main.build_parser({main.find_group(["-p", "x", "profile", "list"])})
print(",".join(sorted(m for m in sys.modules if m.startswith("sat_frontends.jp.cmd_"))))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
    )
    assert proc.stdout.strip() == "sat_frontends.jp.cmd_profile", proc.stderr


# ---------------------------------------------------------------------------- with a fake bridge


class FakeBus:
    def __init__(self):
        import asyncio

        self.handlers = []
        self.disconnected = asyncio.get_event_loop().create_future()
        self.connected = True

    def add_message_handler(self, handler):
        self.handlers.append(handler)

    def remove_message_handler(self, handler):
        self.handlers.remove(handler)

    async def wait_for_disconnect(self):
        await self.disconnected

    def owner_lost(self):
        from types import SimpleNamespace

        msg = SimpleNamespace(
            member="NameOwnerChanged",
            sender="org.freedesktop.DBus",
            body=["org.salutatoi.SAT", ":1.4", ""],
        )
        for handler in list(self.handlers):
            handler(msg)


class FakeBridge:
    """What Context uses of DBusBridgeClient: on/off, call, methods, bus, close."""

    def __init__(self, handlers):
        self.bus = FakeBus()
        self.callbacks: dict[str, list] = {}
        self.handlers = handlers
        self.methods = {}

    def on(self, name, callback):
        self.callbacks.setdefault(name, []).append(callback)

    def off(self, name, callback):
        self.callbacks[name].remove(callback)

    def emit(self, name, *args):
        for callback in list(self.callbacks.get(name, ())):
            callback(*args)

    async def call(self, name, *args):
        result = self.handlers[name](*args)
        if hasattr(result, "__await__"):
            result = await result
        return result

    async def close(self):
        if not self.bus.disconnected.done():
            self.bus.disconnected.set_result(None)


def fake_context(bridge, **options):
    values = {"profile": "alice", "output": "json", "bus": None, "effective_timeout": 5}
    values.update(options)
    ctx = base.Context(argparse.Namespace(**values))
    ctx.bridge = bridge
    return ctx


@asyncio_test(timeout=20)
async def test_with_progress_draws_from_matching_signals_and_reports_errors(monkeypatch):
    import asyncio

    drawn = []
    monkeypatch.setattr(base.ProgressBar, "update", lambda self, pos, size: drawn.append(pos))
    bridge = FakeBridge({})
    stats = {"archive": "alice@x", "stored": 3, "received": 5}

    async def catch_up(profile):
        bridge.emit("ProgressUpdated", "alice", "mam:alice:alice@x", 2, 5)
        bridge.emit("ProgressUpdated", "bob", "mam:alice:alice@x", 9, 9)  # another profile
        bridge.emit("ProgressUpdated", "alice", "upload:1", 7, 9)  # another job
        bridge.emit("ProgressUpdated", "alice", "mam:alice:alice@x", 5, 5)
        await asyncio.sleep(0)
        return stats

    bridge.handlers["MamCatchUp"] = catch_up
    ctx = fake_context(bridge)

    def run():
        return ctx.with_progress(
            "alice",
            lambda: ctx.call("MamCatchUp", "alice"),
            lambda pid: pid.startswith("mam:alice:"),
            "sync",
        )

    assert await run() == stats
    assert drawn == [2, 5]
    assert all(not cbs for cbs in bridge.callbacks.values())  # unsubscribed

    def failing(profile):
        raise errors.NotFound("alice@x offers no message archive (XEP-0313)")

    bridge.handlers["MamCatchUp"] = failing
    with pytest.raises(errors.NotFound):
        await run()
    assert base.error_to_exit(errors.NotFound("x")).code == Exit.NOT_FOUND

    async def daemon_dies(profile):
        bridge.bus.owner_lost()
        await asyncio.sleep(10)

    bridge.handlers["MamCatchUp"] = daemon_dies
    with pytest.raises(JpError) as info:
        await run()
    assert info.value.code == Exit.UNREACHABLE
    await ctx.close()


@asyncio_test(timeout=20)
async def test_wait_filters_and_daemon_gone(capsys):
    import asyncio

    from sat_frontends.jp import cmd_message

    bridge = FakeBridge({"ProfileIsConnected": lambda profile: True})
    parser = main.build_parser({"message"})
    args = parser.parse_args(["message", "wait", "-p", "bob", "--from", "alice@x", "-j"])
    args.effective_timeout = 5
    ctx = fake_context(bridge, **vars(args))
    task = asyncio.ensure_future(cmd_message.wait(ctx))
    await asyncio.sleep(0.01)
    msg = {"from": "alice@x/phone", "to": "bob@x", "body": "hi", "outgoing": False}
    bridge.emit("MessageNew", "alice", msg)  # another profile
    bridge.emit("MessageNew", "bob", {**msg, "outgoing": True})  # sent, not received
    bridge.emit("MessageNew", "bob", {**msg, "from": "carol@x/pc"})  # not from alice
    bridge.emit("MessageNew", "bob", msg)
    assert await asyncio.wait_for(task, 5) == Exit.OK
    assert json.loads(capsys.readouterr().out) == msg

    args = parser.parse_args(["message", "wait", "-p", "bob"])
    ctx = fake_context(bridge, **vars(args))
    task = asyncio.ensure_future(cmd_message.wait(ctx))
    await asyncio.sleep(0.01)
    bridge.bus.owner_lost()
    with pytest.raises(JpError) as info:
        await asyncio.wait_for(task, 5)
    assert info.value.code == Exit.UNREACHABLE and "left the bus" in info.value.message
    await ctx.close()


@asyncio_test(timeout=20)
async def test_call_with_arguments_jp_does_not_expect_is_a_version_mismatch():
    from types import SimpleNamespace

    def info(names, types, out=""):
        return SimpleNamespace(arg_names=names, arg_signatures=types, out_signature=out)

    bridge = FakeBridge({"MucJoin": lambda *a: {"room": "room@x"}})
    ctx = fake_context(bridge)
    # what jp expects: goes through
    bridge.methods = {
        "muc_join": info(("profile", "room", "nick", "options"), ("s", "s", "s", "a{sv}"), "a{sv}")
    }
    assert await ctx.call("MucJoin", "alice", "room@x", "nick", {}) == {"room": "room@x"}
    # fewer arguments, other types, another return type: refused before sending
    for wrong in (
        info(("profile", "room"), ("s", "s"), "a{sv}"),
        info(("profile", "room", "nick", "password"), ("s", "s", "s", "s"), "a{sv}"),
        info(("profile", "room", "nick", "options"), ("s", "s", "s", "a{sv}"), "b"),
    ):
        bridge.methods = {"muc_join": wrong}
        with pytest.raises(JpError) as err:
            await ctx.call("MucJoin", "alice", "room@x", "nick", {})
        assert err.value.code == Exit.ERROR and err.value.label == "version mismatch"
        assert "disagree on MucJoin" in err.value.message
    # a member jp ignores the result of may return something
    bridge.handlers["MucLeave"] = lambda *a: None
    bridge.methods = {"muc_leave": info(("profile", "room", "status"), ("s", "s", "s"), "b")}
    await ctx.call("MucLeave", "alice", "room@x", "")
    # a member missing from jp's table is a bug of jp, said as such
    with pytest.raises(JpError, match="not in jp/members.py"):
        await ctx.call("MUCJoin", "alice", "room@x", "nick", {})
    await ctx.close()


def _called_members() -> dict[str, list[int]]:
    """member -> argument counts of every ``ctx.call("Member", ...)`` in jp's modules."""
    import ast

    found: dict[str, list[int]] = {}
    for path in JP_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "call"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "ctx"
            ):
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Constant), f"{path.name}:{node.lineno}: literal name"
                found.setdefault(first.value, []).append(len(node.args) - 1)
    return found


def test_every_member_jp_calls_is_declared_with_its_arguments():
    from sat_frontends.jp.members import MEMBERS, SIGNALS, parse

    called = _called_members()
    assert set(called) == set(MEMBERS), set(called) ^ set(MEMBERS)
    for member, counts in called.items():
        names, types, _out = parse(MEMBERS[member])
        assert len(names) == len(types) and all(types), member
        assert set(counts) == {len(names)}, (member, counts, names)
    for spec in SIGNALS.values():
        names, types, out = parse(spec)
        assert out is None and len(names) == len(types)
    # the names jp guessed before the plugins existed are gone for good
    for old in ("MUCJoin", "MUCJoinedGet", "BookmarkAdd", "BlockingAdd", "MessageReact", "MAMSync"):
        assert old not in MEMBERS


def test_named_plugin_errors_have_their_exit_codes():
    for name, code in (
        ("MucNickConflict", Exit.EXISTS),
        ("MucBanned", Exit.PERMISSION),
        ("MucPasswordRequired", Exit.PERMISSION),
        ("MucRoomNotFound", Exit.NOT_FOUND),
        ("MucNotJoined", Exit.NOT_FOUND),
        ("MucNickNotAcceptable", Exit.USAGE),
        ("MucRoomFull", Exit.ERROR),
    ):
        err = base.error_to_exit(errors.from_error_name(f"org.salutatoi.SAT.Error.{name}", "x"))
        assert err.code == code and name in err.label, name


def test_message_line_shows_edits_retractions_and_reactions():
    msg = {"timestamp": 0, "from": "r@c/alice", "to": "bob@x", "type": "groupchat"}
    line = base.message_line(
        {**msg, "body": "Meeting at 11", "extra": {"edits": [{"body": "Meeting at 10"}]}}
    )
    assert line.endswith("(groupchat): Meeting at 11 (edited)")
    line = base.message_line({**msg, "body": "hi", "extra": {"reactions": {"👍": ["a", "b"]}}})
    assert line.endswith(": hi [👍2]")
    assert base.message_line({**msg, "extra": {"retracted": {"by": "r@c/alice"}}}).endswith(
        ": [retracted]"
    )


def test_new_commands_parse():
    parser = main.build_parser(None)
    args = parser.parse_args(["message", "send", "room@c", "hi", "--reply-to", "u1"])
    assert (args.type, args.reply_to) == (None, "u1")
    args = parser.parse_args(["message", "state", "bob@x", "composing"])
    assert args.state == "composing"
    assert parser.parse_args(["message", "mark", "u1"]).marker == "displayed"
    args = parser.parse_args(["message", "archive", "--room", "r@c", "-n", "100"])
    assert (args.room, args.limit, args.with_jid) == ("r@c", 100, None)
    args = parser.parse_args(["muc", "leave", "r@c", "-r", "bye"])
    assert args.status == "bye"
    assert parser.parse_args(["muc", "affiliations", "r@c"]).affiliations == []
    args = parser.parse_args(["muc", "join", "r@c", "--config", "a=true", "--history", "0"])
    assert (args.config, args.history) == (["a=true"], 0)
    args = parser.parse_args(["bookmarks", "add", "r@c"])
    assert (args.autojoin, args.name, args.nick) == (None, None, None)
    assert parser.parse_args(["bookmarks", "add", "r@c", "--no-autojoin"]).autojoin is False
    for argv in (
        ["message", "archive", "-n", "1001"],
        ["muc", "role", "r@c", "bob", "king"],
        ["muc", "affiliations", "r@c", "friend"],
        ["message", "state", "bob@x", "sleeping"],
    ):
        with pytest.raises(JpError) as info:
            parser.parse_args(argv)
        assert info.value.code == Exit.USAGE, argv


def test_vcard_assignments(monkeypatch):
    import io

    from sat_frontends.jp import cmd_vcard

    parser = main.build_parser({"vcard"})

    def fields(*argv, stdin=""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        return cmd_vcard._fields(base.Context(parser.parse_args(["vcard", "set", *argv])))

    assert fields("fn=Alice L", "EMAIL=a@x", "EMAIL=b@x", "NOTE=") == {
        "FN": "Alice L",
        "EMAIL": ["a@x", "b@x"],
        "NOTE": "",
    }
    assert fields("TEL=") == {"TEL": []}
    assert fields("-", stdin='{"FN": "A", "PHOTO_HASH": "ab", "EMAIL": ["a@x"]}') == {
        "FN": "A",
        "EMAIL": ["a@x"],
    }
    for argv, stdin in ((("FN",), ""), (("FN=a", "FN=b"), ""), (("-",), "[1]"), (("-",), "{")):
        with pytest.raises(JpError) as info:
            fields(*argv, stdin=stdin)
        assert info.value.code == Exit.USAGE, argv
