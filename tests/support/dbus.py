"""Private D-Bus buses and a tiny test backend, for bridge tests and benchmarks.

Plain helpers (usable from scripts such as ``bench/bench_bridge.py``)::

    with DBusDaemon(tmp_path) as bus:               # private dbus-daemon, unix socket in tmp_path
        with BackendProcess(bus.address) as backend:  # a daemon process serving TEST_API
            ...                                       # connect clients to bus.address

``gdbus_call_command(bus.address, "org.salutatoi.SAT.core.Echo", "hi")`` is the ``gdbus call``
command line for a bridge method, as a person would type it.

Pytest fixtures (import them into a conftest or a test module)::

    from tests.support.dbus import dbus_bus, dbus_bus_module  # noqa: F401

- ``dbus_bus``: a fresh private bus per test (a :class:`DBusDaemon`; ``.address``).
- ``dbus_bus_module``: one bus shared by a test module.

Running asyncio-style coroutines under pytest-twisted (asyncio reactor)::

    @asyncio_test
    async def test_x(dbus_bus): ...       # the coroutine runs as an asyncio task

    value = run_sync(coro)                 # in a sync fixture: wait for an asyncio coroutine

The test backend (``python -m tests.support.dbus serve ADDRESS``) declares the methods and
signals of :func:`declare_test_api` on a real :class:`sat.bridge.contract.Bridge`, serves it
with :mod:`sat.bridge.dbus_server` on the asyncio reactor and prints ``READY <unique name>``.
Every process started here is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "DBusDaemon",
    "BackendProcess",
    "session_config",
    "declare_test_api",
    "asyncio_test",
    "run_sync",
    "gdbus_call_command",
    "dbus_bus",
    "dbus_bus_module",
    "DBUS_DAEMON",
    "REPO_ROOT",
]

DBUS_DAEMON = (
    os.environ.get("SAT_TEST_DBUS_DAEMON")
    or shutil.which("dbus-daemon")
    or ("/usr/bin/dbus-daemon")
)
REPO_ROOT = Path(__file__).resolve().parents[2]

_running: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_running):
        process.stop()


def _stop_pid(popen: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate the process we started, by its PID, then kill it if it lingers."""
    if popen.poll() is not None:
        return
    try:
        os.kill(popen.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(popen.pid, signal.SIGKILL)
        popen.wait(timeout)


def _read_line(popen: subprocess.Popen, timeout: float, what: str) -> str:
    """Read one line from the process's stdout within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = popen.stdout.fileno()
    while not buf.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"{what}: no output after {timeout} s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1)
        if not chunk:
            raise RuntimeError(f"{what} exited (code {popen.wait()})")
        buf += chunk
    return buf.decode().strip()


def session_config(socket_path: str | Path, extra: str = "") -> str:
    """A session-like dbus-daemon configuration listening on ``socket_path`` only.

    No service activation and no include of system files, so the bus is hermetic; ``extra``
    is inserted as is (more ``<policy>`` or ``<include>`` elements).
    """
    return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket_path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_replies_per_connection">50000</limit>
  <limit name="reply_timeout">300000</limit>
{extra}
</busconfig>
"""


class DBusDaemon:
    """A private ``dbus-daemon`` on a unix socket under ``workdir``."""

    def __init__(self, workdir: str | Path | None = None, config: str | None = None):
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.mkdtemp(prefix="sat-dbus-")
            workdir = self._tmp
        self.workdir = Path(workdir)
        self.socket_path = self.workdir / "bus.sock"
        self.config_path = self.workdir / "bus.conf"
        self._config = config
        self.address: str | None = None
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 10.0) -> DBusDaemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._config or session_config(self.socket_path)
        self.config_path.write_text(config)
        self.log_path = self.workdir / "dbus-daemon.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [DBUS_DAEMON, f"--config-file={self.config_path}", "--nofork", "--print-address=1"],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        _running.add(self)
        try:
            self.address = _read_line(self.process, timeout, "dbus-daemon")
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop_pid(self.process)
            self.process.stdout.close()
            self.process = None
        _running.discard(self)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def env(self) -> dict[str, str]:
        """Environment for a child process using this bus as its session bus."""
        return {
            **os.environ,
            "DBUS_SESSION_BUS_ADDRESS": self.address,
            "SAT_BRIDGE_BUS": "address",
            "SAT_BRIDGE_BUS_ADDRESS": self.address,
        }

    def __enter__(self) -> DBusDaemon:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class BackendProcess:
    """A process serving :func:`declare_test_api` over D-Bus on ``address``."""

    def __init__(self, address: str, args: list[str] | None = None, env: dict | None = None):
        self.address = address
        self.args = args or []
        self.env = env
        self.process: subprocess.Popen | None = None
        self.unique_name: str | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 30.0) -> BackendProcess:
        env = dict(self.env or os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.dbus", "serve", self.address, *self.args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=env,
        )
        _running.add(self)
        try:
            line = _read_line(self.process, timeout, "test backend")
        except Exception:
            self.stop()
            raise
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"test backend said {line!r}")
        self.unique_name = line.split()[1]
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop_pid(self.process)
            self.process.stdout.close()
            self.process = None
        _running.discard(self)

    def __enter__(self) -> BackendProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------- test API


def declare_test_api(bridge, echo_only: bool = False):
    """Declare the test methods and signals on ``bridge`` (a sat.bridge.contract.Bridge)."""
    from twisted.internet import reactor, task

    from sat.core import errors

    def echo(value):
        return value

    def add_echo(name, sig, doc, interface="core"):
        bridge.add_method(
            name,
            echo,
            args=[("value", sig, f"the {doc} to send back")],
            out=(sig, f"the same {doc}"),
            doc=f"Return the {doc} unchanged.",
            interface=interface,
        )

    add_echo("Echo", "s", "text")
    if echo_only:
        return bridge
    add_echo("EchoInt", "x", "64-bit integer")
    add_echo("EchoUint32", "u", "unsigned 32-bit integer")
    add_echo("EchoBool", "b", "boolean")
    add_echo("EchoDouble", "d", "float")
    add_echo("EchoBytes", "ay", "bytes")
    add_echo("EchoStrings", "as", "list of strings")
    add_echo("EchoDict", "a{ss}", "string dictionary")
    add_echo("EchoRecord", "a{sv}", "open record")
    add_echo("EchoRecords", "aa{sv}", "list of open records", interface="plugin")
    add_echo("EchoStruct", "(sxb)", "struct")
    add_echo("EchoVariant", "v", "variant")

    bridge.add_method(
        "Concat",
        lambda text, count, sep: sep.join([text] * count),
        args=[
            ("text", "s", "text to repeat"),
            ("count", "i", "how many times"),
            ("separator", "s", "put between copies"),
        ],
        out=("s", "the joined copies"),
        doc="Repeat a text.",
        interface="core",
    )
    calls = {"nothing": 0}

    def nothing():
        calls["nothing"] += 1

    bridge.add_method("Nothing", nothing, doc="Take nothing, return nothing.", interface="core")
    bridge.add_method(
        "NothingCount",
        lambda: calls["nothing"],
        out=("x", "how many times Nothing was called"),
        doc="Count calls to Nothing.",
        interface="core",
    )

    error_classes = {}
    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, errors.SatError):
            error_classes.setdefault(cls.dbus_name, cls)

    def fail(name, message):
        raise error_classes[name](message)

    bridge.add_method(
        "Fail",
        fail,
        args=[("name", "s", "dbus_name of the SatError to raise"), ("message", "s", "its text")],
        doc="Raise the named backend error.",
        interface="core",
    )

    def crash():
        return 1 / 0

    bridge.add_method("Crash", crash, out=("x", "never"), doc="Raise a bug.", interface="core")
    bridge.add_method(
        "BadResult",
        lambda: 42,
        out=("s", "a string, supposedly"),
        doc="Return a value not matching the signature.",
        interface="core",
    )
    bridge.add_method(
        "Slow",
        lambda seconds: task.deferLater(reactor, seconds, lambda: f"slept {seconds}"),
        args=[("seconds", "d", "how long to wait")],
        out=("s", "a note"),
        doc="Answer after a delay (Deferred).",
        interface="core",
    )

    async def slow_async(seconds):
        await task.deferLater(reactor, seconds, lambda: None)
        return {"slept": seconds, "style": "async"}

    bridge.add_method(
        "SlowAsync",
        slow_async,
        args=[("seconds", "d", "how long to wait")],
        out=("a{sv}", "a note"),
        doc="Answer after a delay (coroutine awaiting a Deferred).",
        interface="plugin",
    )

    async def async_fail(message):
        await task.deferLater(reactor, 0, lambda: None)
        raise errors.NotFound(message)

    bridge.add_method(
        "AsyncFail",
        async_fail,
        args=[("message", "s", "error text")],
        doc="Fail with NotFound after a reactor turn.",
        interface="plugin",
    )

    def deferred_crash():
        return task.deferLater(reactor, 0, lambda: {}["missing"])

    bridge.add_method(
        "DeferredCrash", deferred_crash, doc="A Deferred failing with a bug.", interface="plugin"
    )

    bridge.add_signal(
        "Notify",
        args=[("text", "s", "what happened"), ("extra", "a{sv}", "details")],
        doc="Something happened.",
        interface="plugin",
    )
    bridge.add_signal(
        "Tick", args=[("count", "x", "a counter")], doc="A core signal.", interface="core"
    )

    def emit(text, extra):
        bridge.emit("Notify", text, extra)
        bridge.emit("Tick", len(text))

    bridge.add_method(
        "EmitNotify",
        emit,
        args=[("text", "s", "what to say"), ("extra", "a{sv}", "details")],
        doc="Emit Notify then Tick.",
        interface="plugin",
    )

    def declare_late(name):
        bridge.add_method(
            name,
            lambda value: value.upper(),
            args=[("value", "s", "text")],
            out=("s", "text in capitals"),
            doc="Declared after the server started.",
            interface="plugin",
        )

    bridge.add_method(
        "DeclareLate",
        declare_late,
        args=[("name", "s", "name of the method to declare")],
        doc="Declare a new method, as a plugin loaded late would.",
        interface="plugin",
    )
    return bridge


def _serve(address: str, echo_only: bool = False) -> None:
    from sat.core.reactor import install_asyncio_reactor

    reactor = install_asyncio_reactor()
    from sat.bridge import dbus_server
    from sat.bridge.contract import Bridge
    from sat.tools.async_glue import as_deferred

    bridge = declare_test_api(Bridge(), echo_only=echo_only)

    def started(server):
        sys.stdout.write(f"READY {server.unique_name}\n")
        sys.stdout.flush()

    def failed(failure):
        sys.stderr.write(f"test backend failed to start: {failure.getErrorMessage()}\n")
        reactor.stop()

    def begin():
        as_deferred(dbus_server.start(bridge, address)).addCallbacks(started, failed)

    reactor.callWhenRunning(begin)
    reactor.run()


def gdbus_call_command(address: str, member: str, *args: str) -> list[str]:
    """The ``gdbus call`` command line calling ``member`` (``interface.Member``) with ``args``
    on the bridge object (``org.salutatoi.SAT``, ``/org/salutatoi/SAT/bridge``) of the bus at
    ``address``."""
    from sat.bridge.contract import BUS_NAME, OBJECT_PATH

    return [
        "gdbus",
        "call",
        "--address",
        address,
        "--dest",
        BUS_NAME,
        "--object-path",
        OBJECT_PATH,
        "--method",
        member,
        *args,
    ]


# ---------------------------------------------------------------------------- pytest glue


def asyncio_test(func: Callable | None = None, *, timeout: float = 60.0):
    """Run an ``async def`` test as an asyncio task under pytest-twisted.

    pytest-twisted drives coroutines with Twisted's ``ensureDeferred``, which cannot await
    asyncio futures (dbus-fast's); this wrapper hands pytest-twisted a Deferred instead.
    """

    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            from twisted.internet import defer

            coro = asyncio.wait_for(f(*args, **kwargs), timeout)
            return defer.Deferred.fromFuture(asyncio.ensure_future(coro))

        return wrapper

    return decorate(func) if func is not None else decorate


def run_sync(coro, timeout: float = 60.0) -> Any:
    """Wait, from a sync fixture, for an asyncio coroutine (pytest-twisted's blockon)."""
    import pytest_twisted
    from twisted.internet import defer

    future = asyncio.ensure_future(asyncio.wait_for(coro, timeout))
    return pytest_twisted.blockon(defer.Deferred.fromFuture(future))


@pytest.fixture
def dbus_bus(tmp_path_factory):
    """A private dbus-daemon for one test (``.address``), stopped afterwards."""
    with DBusDaemon(tmp_path_factory.mktemp("dbus")) as bus:
        yield bus


@pytest.fixture(scope="module")
def dbus_bus_module(tmp_path_factory):
    """A private dbus-daemon shared by the tests of a module."""
    with DBusDaemon(tmp_path_factory.mktemp("dbus")) as bus:
        yield bus


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        _serve(argv[1], echo_only="--echo-only" in argv[2:])
        return 0
    if argv[:1] == ["bus"]:  # start a bus and print its address until interrupted
        with DBusDaemon() as bus:
            print(bus.address, flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
        return 0
    sys.stderr.write("usage: python -m tests.support.dbus serve ADDRESS [--echo-only] | bus\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
