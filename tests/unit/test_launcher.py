"""The daemon's life cycle without D-Bus: pid files, readiness, sd_notify, the ``sat`` commands.

The host is a stand-in (:class:`StandInHost`); the real one is exercised by
tests/integration/test_daemon_install.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from sat.core import errors, logging_setup, service
from sat.launcher import (
    EXIT_DEAD_PID_FILE,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    DaemonState,
    config_env,
    looks_like_sat,
    main,
    read_pid,
    ready_file_for,
)
from sat.memory.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]


class StandInHost:
    """Records its life cycle; ``fail`` makes ``start`` raise it; ``delay`` slows the start."""

    instances: list[StandInHost] = []

    def __init__(self, config, fail: Exception | None = None, delay: float = 0.0):
        self.config = config
        self.fail = fail
        self.delay = delay
        self.events: list[str] = []
        StandInHost.instances.append(self)

    async def start(self):
        self.events.append("start")
        if self.delay:
            await task.deferLater(reactor, self.delay, lambda: None)
        if self.fail is not None:
            raise self.fail
        self.events.append("started")

    async def stop(self):
        self.events.append("stop")


def stand_in(fail=None, delay=0.0):
    return lambda config: StandInHost(config, fail, delay)


class NotifyListener:
    """Stands for systemd's notification socket."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def messages(self) -> list[str]:
        """Every datagram received so far."""
        out = []
        self.sock.setblocking(False)
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    def recv(self, timeout: float = 10.0) -> str:
        """Wait for the next datagram."""
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A datagram socket standing for systemd's; NOTIFY_SOCKET points at it."""
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    yield listener
    listener.sock.close()


def make_config(tmp_path: Path, **core) -> Config:
    values = {"core": {"data_dir": str(tmp_path / "data"), "pid_file": str(tmp_path / "sat.pid")}}
    values["core"].update(core)
    return Config.from_dict(values, env={"HOME": str(tmp_path)})


# --- sd_notify -------------------------------------------------------------------


def test_sd_notify_sends_one_datagram(notify_socket):
    assert service.sd_notify("READY=1\nSTATUS=ready")
    assert notify_socket.messages() == ["READY=1\nSTATUS=ready"]


def test_sd_notify_abstract_socket():
    name = f"sat-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert service.sd_notify("READY=1", env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1"


def test_sd_notify_without_socket_does_nothing(tmp_path):
    assert not service.sd_notify("READY=1", env={})
    # a socket that vanished is a warning, not a crash
    assert not service.sd_notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone")})


# --- pid file ----------------------------------------------------------------


def test_pid_file_is_locked_and_removed(tmp_path):
    path = tmp_path / "run" / "sat.pid"
    first = service.PidFile(path)
    first.acquire()
    assert read_pid(path) == os.getpid()
    with pytest.raises(service.AlreadyRunning, match=str(os.getpid())):
        service.PidFile(path).acquire()
    first.release()
    assert not path.exists()
    # free again
    second = service.PidFile(path)
    second.acquire()
    second.release()


def test_pid_file_left_by_a_dead_daemon_is_taken_over(tmp_path):
    path = tmp_path / "sat.pid"
    path.write_text("999999999\n")
    pid_file = service.PidFile(path)
    pid_file.acquire()
    assert read_pid(path) == os.getpid()
    pid_file.release()


def test_pid_file_written_by_twistd_is_left_to_it(tmp_path):
    path = tmp_path / "sat.pid"
    path.write_text(str(os.getpid()))  # as twistd --pidfile writes it, before our service starts
    pid_file = service.PidFile(path)
    pid_file.acquire()
    pid_file.release()
    assert path.exists()  # twistd removes it itself


# --- the service, in process (pytest's reactor) ---------------------------------------


@pytest_twisted.ensureDeferred
async def test_service_ready_then_clean_stop(tmp_path, notify_socket):
    config = make_config(tmp_path)
    failures = []
    svc = service.SatService(config, stand_in(), on_failure=failures.append)
    svc.startService()
    await svc._starting
    host = svc.host
    ready = tmp_path / "sat.pid.ready"
    assert host.events == ["start", "started"]
    assert svc.ready and not failures
    assert read_pid(ready) == os.getpid()
    assert read_pid(tmp_path / "sat.pid") == os.getpid()
    assert notify_socket.messages() == [f"READY=1\nSTATUS=ready\nMAINPID={os.getpid()}"]

    await svc.stopService()
    assert host.events[-1] == "stop"
    assert not ready.exists()
    assert not (tmp_path / "sat.pid").exists()
    assert notify_socket.messages() == ["STOPPING=1\nSTATUS=stopping"]
    assert svc.exit_code == 0


@pytest_twisted.ensureDeferred
async def test_service_start_failure(tmp_path, notify_socket, caplog):
    config = make_config(tmp_path)
    failures = []
    error = errors.ConnectionFailed("cannot reach the bus: no such socket")
    svc = service.SatService(config, stand_in(fail=error), on_failure=failures.append)
    with caplog.at_level(logging.ERROR, logger="sat.core.service"):
        svc.startService()
        await svc._starting
    assert failures == [service.EXIT_START_FAILED] and svc.exit_code == 1
    assert "SàT failed to start: cannot reach the bus: no such socket" in caplog.text
    assert not (tmp_path / "sat.pid.ready").exists()
    messages = notify_socket.messages()
    assert not any("READY=1" in m for m in messages)
    assert messages == ["STATUS=failed to start: cannot reach the bus: no such socket"]
    await svc.stopService()
    # a half-started host is still stopped, and the pid file released
    assert svc.host.events == ["start", "stop"]
    assert not (tmp_path / "sat.pid").exists()


@pytest_twisted.ensureDeferred
async def test_service_refuses_a_second_daemon(tmp_path, caplog):
    config = make_config(tmp_path)
    holder = service.PidFile(tmp_path / "sat.pid")
    holder.acquire()
    try:
        failures = []
        svc = service.SatService(config, stand_in(), on_failure=failures.append)
        with caplog.at_level(logging.ERROR):
            svc.startService()
            await svc._starting
        assert failures == [1] and svc.host is None
        assert "another daemon already runs" in caplog.text
        await svc.stopService()
        assert (tmp_path / "sat.pid").exists()  # still the other daemon's
    finally:
        holder.release()


@pytest_twisted.ensureDeferred
async def test_stop_while_starting_waits_and_never_says_ready(tmp_path, notify_socket):
    config = make_config(tmp_path)
    svc = service.SatService(config, stand_in(delay=0.2), on_failure=lambda code: None)
    svc.startService()
    await task.deferLater(reactor, 0.05, lambda: None)
    await svc.stopService()
    assert svc.host.events == ["start", "started", "stop"]
    assert not svc.ready and not (tmp_path / "sat.pid.ready").exists()
    assert not any("READY=1" in m for m in notify_socket.messages())


def test_config_env_turns_options_into_overrides(tmp_path):
    env = config_env(
        {"data-dir": "d", "pid_file": str(tmp_path / "p"), "bus": "unix:path=/x", "log_level": ""},
        base={"HOME": "/h"},
    )
    assert env["SAT_CORE_DATA_DIR"] == os.path.abspath("d")
    assert env["SAT_CORE_PID_FILE"] == str(tmp_path / "p")
    assert env["SAT_BRIDGE_BUS"] == "address"
    assert env["SAT_BRIDGE_BUS_ADDRESS"] == "unix:path=/x"
    assert "SAT_CORE_LOG_LEVEL" not in env
    config = Config.load(env=env, system_dir=None)
    assert config.get("bridge", "bus") == "address"
    assert config.get("core", "pid_file") == tmp_path / "p"
    assert config_env({"bus": "system"}, base={})["SAT_BRIDGE_BUS"] == "system"


# --- logging -----------------------------------------------------------------


def test_logging_to_file_with_secrets_filtered(tmp_path):
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    log_file = tmp_path / "logs" / "sat.log"
    try:
        handlers = logging_setup.configure("debug", log_file, capture_twisted=False)
        try:
            from sat.memory.crypto import SecretsFilter
        except ImportError:
            SecretsFilter = None
        if SecretsFilter is not None:
            assert all(any(isinstance(f, SecretsFilter) for f in h.filters) for h in handlers)
            SecretsFilter.register("hunter2-secret")
        try:
            logging.getLogger("sat.test").info("password is %s", "hunter2-secret")
        finally:
            if SecretsFilter is not None:
                SecretsFilter.unregister("hunter2-secret")
        for h in handlers:
            h.flush()
        text = log_file.read_text()
        assert "INFO    sat.test: password is" in text
        if SecretsFilter is not None:
            assert "hunter2-secret" not in text
    finally:
        for h in list(root.handlers):
            if getattr(h, "_sat_handler", False):
                root.removeHandler(h)
                h.close()
        root.setLevel(saved[0])


def test_journal_formatter_prefixes_priorities():
    formatter = logging_setup.JournalFormatter()
    record = logging.LogRecord("sat.x", logging.WARNING, __file__, 1, "a\nb", None, None)
    assert formatter.format(record) == "<4>sat.x: a\n<4>b"


def test_stdlib_observer_forwards_twisted_events(caplog):
    from twisted.logger import Logger

    observer = logging_setup.StdlibObserver()
    events = []
    log = Logger(namespace="twisted.internet.test", observer=events.append)
    log.warn("hello {who}", who="world")
    with caplog.at_level(logging.DEBUG):
        observer(events[0])
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("twisted.internet.test", logging.WARNING, "hello world")
    ]


# --- pid checks and status ------------------------------------------------------------


@pytest.mark.parametrize(
    "cmdline, expected",
    [
        (["/usr/bin/python3", "-m", "sat.launcher", "fg"], True),
        (["/usr/bin/python3", "/usr/local/bin/sat", "fg", "--bus", "session"], True),
        (["/home/u/.local/bin/sat", "fg"], True),
        (["/venv/bin/python", "/venv/bin/twistd", "-n", "--reactor=asyncio", "sat"], True),
        (["python3", "-m", "twisted", "--pidfile", "p", "sat", "--bus", "system"], True),
        (["python3", "-m", "twisted", "web"], False),
        (["sleep", "100"], False),
        (["/usr/bin/python3", "/usr/bin/satisfied"], False),
        (["bash", "-c", "sat"], False),
    ],
)
def test_looks_like_sat(cmdline, expected):
    assert looks_like_sat(cmdline) is expected


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdin=subprocess.DEVNULL)


def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


# a process whose command line looks like the daemon's (args after -c are in its cmdline)
FAKE_DAEMON = [sys.executable, "-c", "import time; time.sleep(60)", "-m", "sat.launcher", "fg"]


def run_main(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_status_exit_codes(tmp_path, capsys):
    pid_file = tmp_path / "sat.pid"
    opts = ("--pid-file", str(pid_file), "--data-dir", str(tmp_path / "data"))

    code, out = run_main(capsys, "status", *opts)
    assert code == EXIT_NOT_RUNNING == 3 and "not running" in out

    # process gone: LSB "dead, pid file exists"
    dead = _spawn(["true"])
    dead.wait()
    pid_file.write_text(f"{dead.pid}\n")
    code, out = run_main(capsys, "status", *opts)
    assert code == EXIT_DEAD_PID_FILE == 1 and f"process {dead.pid} is gone" in out
    assert DaemonState(pid_file).state == DaemonState.STALE

    # pid reused by another program
    other = _spawn(["sleep", "60"])
    try:
        pid_file.write_text(str(other.pid))
        code, out = run_main(capsys, "status", *opts)
        assert code == 1 and "another program" in out and "sleep 60" in out
    finally:
        _reap(other)

    # garbage in the pid file
    pid_file.write_text("not a pid")
    assert run_main(capsys, "status", *opts)[0] == 1

    fake = _spawn(FAKE_DAEMON)
    try:
        pid_file.write_text(str(fake.pid))
        code, out = run_main(capsys, "status", *opts)
        assert code == EXIT_OK and "not ready yet" in out
        ready_file_for(pid_file).write_text(str(fake.pid))
        code, out = run_main(capsys, "status", *opts)
        assert code == EXIT_OK and f"running (pid {fake.pid}), ready" in out
    finally:
        _reap(fake)


def test_stop_when_not_running_or_stale(tmp_path, capsys):
    pid_file = tmp_path / "sat.pid"
    opts = ("--pid-file", str(pid_file), "--data-dir", str(tmp_path / "data"))
    code, out = run_main(capsys, "stop", *opts)
    assert code == 0 and "not running" in out

    other = _spawn(["sleep", "60"])
    try:
        pid_file.write_text(str(other.pid))
        ready_file_for(pid_file).write_text(str(other.pid))
        code, out = run_main(capsys, "stop", *opts)
        assert code == 0 and "stale" in out
        assert other.poll() is None  # never signal a process that is not ours
        assert not pid_file.exists() and not ready_file_for(pid_file).exists()
    finally:
        _reap(other)


def test_stop_terminates_then_kills(tmp_path, capsys):
    pid_file = tmp_path / "sat.pid"
    opts = ("--pid-file", str(pid_file), "--data-dir", str(tmp_path / "data"))
    polite = _spawn(FAKE_DAEMON)  # dies on SIGTERM
    try:
        pid_file.write_text(str(polite.pid))
        code, out = run_main(capsys, "stop", *opts)
        assert code == 0 and f"sat stopped (pid {polite.pid})" in out
        assert polite.wait(5) == -signal.SIGTERM
    finally:
        _reap(polite)

    stubborn_code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ok', flush=True); time.sleep(60)"
    )
    stubborn = subprocess.Popen(
        [sys.executable, "-c", stubborn_code, "-m", "sat.launcher"], stdout=subprocess.PIPE
    )
    try:
        assert stubborn.stdout.readline() == b"ok\n"  # SIGTERM is ignored from now on
        pid_file.write_text(str(stubborn.pid))
        t0 = time.monotonic()
        code, out = run_main(capsys, "stop", "--timeout", "0.5", *opts)
        assert code == 0 and "did not stop within 0.5 s: killing it (SIGKILL)" in out
        assert "by SIGKILL" in out and time.monotonic() - t0 < 5
        assert stubborn.wait(5) == -signal.SIGKILL
        assert not pid_file.exists()
    finally:
        _reap(stubborn)
        stubborn.stdout.close()


def test_start_refuses_nothing_when_already_running(tmp_path, capsys):
    pid_file = tmp_path / "sat.pid"
    fake = _spawn(FAKE_DAEMON)
    try:
        pid_file.write_text(str(fake.pid))
        code, out = run_main(
            capsys, "start", "--pid-file", str(pid_file), "--data-dir", str(tmp_path)
        )
        assert code == 0 and f"already running (pid {fake.pid})" in out
    finally:
        _reap(fake)


def test_invalid_configuration_exit_code(tmp_path, capsys):
    conf = tmp_path / "bad.conf"
    conf.write_text("[core]\nlog_level = loud\n")
    code, out = run_main(capsys, "status", "--config", str(conf))
    assert code == 6 and "log_level" in out


def test_bad_bus_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["status", "--bus", "sesion"])
    assert e.value.code == 2
    assert "expected session, system or a D-Bus address" in capsys.readouterr().err


# --- the daemon process (service.run) with a stand-in host ----------------------------

DAEMON_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from sat.core.reactor import install_asyncio_reactor
    install_asyncio_reactor()
    from sat.core import service
    from tests.unit.test_launcher import StandInHost
    from sat.core.errors import ConnectionFailed

    options, fail, events_file = json.loads(sys.argv[1])

    class Host(StandInHost):
        async def stop(self):
            await super().stop()
            with open(events_file, "w") as f:
                json.dump(self.events, f)

    def factory(config):
        return Host(config, ConnectionFailed(fail) if fail else None)

    sys.exit(service.run(options, factory))
    """
)


def run_daemon(tmp_path, fail=None, env_extra=None) -> tuple[subprocess.Popen, Path, Path]:
    pid_file = tmp_path / "run" / "sat.pid"
    events = tmp_path / "events.json"
    options = {"pid_file": str(pid_file), "data_dir": str(tmp_path / "data")}
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env_extra or {})}
    proc = subprocess.Popen(
        # the trailing "sat.launcher" makes its command line look like the daemon's to `status`
        [
            sys.executable,
            "-c",
            DAEMON_SCRIPT,
            json.dumps([options, fail, str(events)]),
            "sat.launcher",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return proc, pid_file, events


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_daemon_process_ready_and_clean_on_signal(tmp_path, notify_socket, sig):
    proc, pid_file, events = run_daemon(
        tmp_path, env_extra={"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]}
    )
    try:
        ready = ready_file_for(pid_file)
        wait_for(lambda: read_pid(ready) == proc.pid or proc.poll() is not None)
        assert read_pid(pid_file) == proc.pid
        assert notify_socket.recv().startswith("READY=1\n")
        status = subprocess.run(
            [sys.executable, "-m", "sat.launcher", "status", "--pid-file", str(pid_file)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        assert status.returncode == 0 and "ready" in status.stdout
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()
        assert json.loads(events.read_text()) == ["start", "started", "stop"]
        assert not ready.exists() and not pid_file.exists()
        assert notify_socket.recv().startswith("STOPPING=1")
        assert b"daemon stopped" in err
    finally:
        _reap(proc)
        proc.stderr.close()


def test_daemon_process_start_failure_exit_code(tmp_path):
    proc, pid_file, events = run_daemon(tmp_path, fail="no bus at unix:path=/nowhere")
    try:
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 1
        assert "SàT failed to start: no bus at unix:path=/nowhere" in err.decode()
        assert "Traceback" not in err.decode()  # an expected error: one clear line
        assert not pid_file.exists() and not ready_file_for(pid_file).exists()
        assert json.loads(events.read_text()) == ["start", "stop"]
    finally:
        _reap(proc)
        proc.stderr.close()


def test_launcher_imports_stay_light():
    code = (
        "import sys, sat.launcher; "
        "heavy = [m for m in ('twisted.internet.reactor', 'twisted.internet.defer', "
        "'sat.core.host', 'dbus_fast') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_no_init_files_shadowing_twisted():
    assert (REPO_ROOT / "twisted" / "plugins" / "sat_plugin.py").exists()
    assert not (REPO_ROOT / "twisted" / "__init__.py").exists()
    assert not (REPO_ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_twistd_options():
    opts = service.Options()
    opts.parseOptions(["--bus", "unix:path=/tmp/x", "--data-dir", "/tmp/d", "-c", "/tmp/c"])
    assert opts["bus"] == "unix:path=/tmp/x" and opts["data-dir"] == "/tmp/d"
    from twisted.python import usage

    with pytest.raises(usage.UsageError):
        service.Options().parseOptions(["--bus", "nowhere"])
