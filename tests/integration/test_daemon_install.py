"""The daemon as installed by ``pip install .`` (not editable), run for real on a private bus.

A wheel is built from a copy of the source tree and installed into a fresh venv made with
``--system-site-packages`` (the dependencies installed here are reused: no network). Then:

- ``twistd --help`` lists ``sat`` (twisted/plugins/sat_plugin.py landed in site-packages),
  and ``twistd -n [--reactor=asyncio] sat ...`` runs the daemon until SIGTERM;
- ``sat start`` returns once the daemon is ready, ``sat status`` says so, ``sat stop``
  stops it cleanly, ``sat fg`` notifies a (fake) systemd;
- the systemd units pass ``systemd-analyze verify`` and the private bus configuration works.

Every process runs with HOME and XDG_* in temporary directories and the real host
(:mod:`sat.core.host`) serving the bridge on a private ``dbus-daemon``.
"""

from __future__ import annotations

import configparser
import grp
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dbus import DBusDaemon
from tests.support.waiting import poll

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO_ROOT / "misc" / "systemd"
BUS_NAME = "org.salutatoi.SAT"
COPY_IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench"
)


def _check_build_tools() -> None:
    has_wheel = importlib.util.find_spec("wheel") is not None
    import setuptools

    version = tuple(int(x) for x in setuptools.__version__.split(".")[:2] if x.isdigit())
    if not has_wheel and version < (70, 1):
        pytest.fail(
            "building the wheel offline needs the 'wheel' package (or setuptools >= 70.1): "
            "pip install wheel",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv with the project installed from its wheel (module scope: built once)."""
    _check_build_tools()
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(REPO_ROOT, src, ignore=COPY_IGNORE)
    venv = base / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
        check=True,
        capture_output=True,
    )
    env = clean_env()

    def pip(*args: str) -> None:
        result = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=base,
        )
        assert result.returncode == 0, f"pip {args[0]} failed:\n{result.stdout}\n{result.stderr}"

    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(src))
    (wheel,) = (base / "dist").glob("sat-*.whl")
    # --ignore-installed: a `sat` in the system site-packages must not count as installed
    pip("install", "--no-deps", "--no-index", "--ignore-installed", str(wheel))
    script = venv / "bin" / "twistd"
    if not script.exists():
        script.write_text(TWISTD_SCRIPT.format(python=venv / "bin" / "python"))
        script.chmod(0o755)
    return venv


TWISTD_SCRIPT = """#!{python}
import sys
from twisted.scripts.twistd import run
sys.exit(run())
"""


def twistd(venv: Path) -> list[str]:
    """The venv's ``twistd`` script.

    With ``--system-site-packages`` Twisted comes from the base environment, whose ``twistd``
    runs the base interpreter (blind to the venv's plugin): the fixture then writes the script
    pip writes when Twisted is installed in the venv (``python -m twisted`` is ``twist``, not
    ``twistd``).
    """
    return [str(venv / "bin" / "twistd")]


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without anything pointing at the repo, a real bus or systemd."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SAT_", "DBUS_", "XDG_", "PYTHON", "NOTIFY_", "JOURNAL_"))
    }
    env.update(extra)
    return env


@pytest.fixture
def bus(tmp_path_factory):
    with DBusDaemon(tmp_path_factory.mktemp("bus")) as daemon:
        yield daemon


class Daemon:
    """Paths and environment of one daemon instance (all in tmp dirs)."""

    def __init__(self, venv: Path, root: Path, bus_address: str):
        self.venv = venv
        self.root = root
        self.bus_address = bus_address
        home = root / "home"
        self.env = clean_env(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_DATA_HOME=str(home / ".local" / "share"),
            XDG_RUNTIME_DIR=str(root / "run"),
            DBUS_SESSION_BUS_ADDRESS=bus_address,
        )
        (root / "run").mkdir(parents=True, mode=0o700)
        home.mkdir()
        self.data_dir = root / "data"
        self.pid_file = root / "run" / "sat" / "sat.pid"
        self.ready_file = Path(str(self.pid_file) + ".ready")
        self.log_file = self.data_dir / "sat.log"

    @property
    def sat(self) -> str:
        return str(self.venv / "bin" / "sat")

    def options(self) -> list[str]:
        return ["--bus", self.bus_address, "--data-dir", str(self.data_dir)]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.sat, *args, *self.options()],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            args,
            env=kwargs.pop("env", self.env),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **kwargs,
        )

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


@pytest.fixture
def daemon(venv, bus, tmp_path):
    instance = Daemon(venv, tmp_path / "sat", bus.address)
    yield instance
    # never leave a daemon behind: stop the one whose pid file we made, by its pid
    pid = instance.pid()
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def name_owned(address: str, name: str = BUS_NAME) -> bool:
    result = subprocess.run(
        [
            "dbus-send",
            f"--bus={address}",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner",
            f"string:{name}",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    return "boolean true" in result.stdout


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> str:
    """Signal a process we started (by its pid), wait for it, return its output."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"process {proc.pid} did not stop on signal {sig}:\n{out}") from None
    return out.decode("utf-8", "replace") if isinstance(out, bytes) else out


# --- installation --------------------------------------------------------------------


def test_installed_layout(venv):
    python = str(venv / "bin" / "python")
    code = (
        "import sat, twisted, twisted.plugins, sys; "
        "print(sat.__file__); print(twisted.__file__); print(*twisted.plugins.__path__, sep=';')"
    )
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, env=clean_env(), cwd="/"
    ).stdout.splitlines()
    sat_file, twisted_file, plugin_paths = out
    assert sat_file.startswith(str(venv)), "sat must come from the venv, not the source tree"
    # Twisted itself is not shadowed by our plugin directory
    assert not twisted_file.startswith(str(venv)) or Path(twisted_file).name == "__init__.py"
    site = Path(sat_file).parents[1]
    assert (site / "twisted" / "plugins" / "sat_plugin.py").is_file()
    assert not (site / "twisted" / "__init__.py").exists() or twisted_file == str(
        site / "twisted" / "__init__.py"
    )
    assert str(site / "twisted" / "plugins") in plugin_paths.split(";")
    assert (venv / "bin" / "sat").is_file()


def test_twistd_lists_sat(venv):
    env = clean_env()
    result = subprocess.run(
        [*twistd(venv), "--help"], capture_output=True, text=True, env=env, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert any(words[:1] == ["sat"] for words in lines), result.stdout
    result = subprocess.run(
        [*twistd(venv), "sat", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--data-dir", "--bus", "--pid-file", "--log-level"):
        assert option in result.stdout


# --- twistd ----------------------------------------------------------------------


@pytest.mark.parametrize("reactor_args", [["--reactor=asyncio"], []], ids=["asyncio", "default"])
def test_twistd_runs_the_daemon(daemon, reactor_args):
    twistd_pid = daemon.root / "twistd.pid"
    proc = daemon.popen(
        [
            *twistd(daemon.venv),
            "-n",
            f"--pidfile={twistd_pid}",
            *reactor_args,
            "sat",
            *daemon.options(),
            "--pid-file",
            str(daemon.pid_file),
        ]
    )
    try:
        poll(
            lambda: daemon.ready_file.exists() or proc.poll() is not None,
            "the ready file",
            30,
            interval=0.02,
        )
        assert proc.poll() is None, proc.stdout.read().decode()
        assert daemon.ready_file.read_text().strip() == str(proc.pid)
        assert name_owned(daemon.bus_address)
        status = daemon.run("status", "--pid-file", str(daemon.pid_file))
        assert status.returncode == 0 and "ready" in status.stdout, status.stdout
    finally:
        out = stop_process(proc)
    # twistd ends by re-raising the signal that stopped it, once everything is cleaned up
    assert proc.returncode == -signal.SIGTERM, out
    assert "AsyncioSelectorReactor" in out
    assert "sat.core.service" in out and "SàT daemon stopped" in out
    assert not daemon.ready_file.exists() and not daemon.pid_file.exists()
    assert not twistd_pid.exists()


def test_twistd_refuses_another_reactor(daemon):
    proc = daemon.popen(
        [
            *twistd(daemon.venv),
            "-n",
            "--pidfile=",
            "--reactor=poll",
            "sat",
            *daemon.options(),
        ]
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "--reactor=asyncio" in out.decode()
    assert not daemon.ready_file.exists()


def test_twistd_start_failure_exit_code(daemon, tmp_path):
    proc = daemon.popen(
        [
            *twistd(daemon.venv),
            "-n",
            "--pidfile=",
            "sat",
            "--bus",
            f"unix:path={tmp_path}/no-bus-here",
            "--data-dir",
            str(daemon.data_dir),
        ]
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out.decode()
    assert "SàT failed to start" in out.decode()


# --- sat start / status / stop ---------------------------------------------------------


def test_start_status_stop(daemon):
    result = daemon.run("start")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready in" in result.stdout
    pid = daemon.pid()
    assert pid is not None and _alive(pid)
    assert daemon.ready_file.read_text().strip() == str(pid)
    assert name_owned(daemon.bus_address)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"sat.launcher" in cmdline  # detached from us: its own session
    assert os.getsid(pid) == pid

    status = daemon.run("status")
    assert status.returncode == 0 and f"running (pid {pid}), ready" in status.stdout

    again = daemon.run("start")
    assert again.returncode == 0 and f"already running (pid {pid})" in again.stdout

    stop = daemon.run("stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"sat stopped (pid {pid})" in stop.stdout and "SIGKILL" not in stop.stdout
    assert not _alive(pid)
    assert not daemon.ready_file.exists() and not daemon.pid_file.exists()
    assert not name_owned(daemon.bus_address)
    log = daemon.log_file.read_text()
    assert "SàT daemon ready" in log and "SàT daemon stopped" in log
    assert "Received SIGTERM" in log  # Twisted's own log lines reach the same file

    status = daemon.run("status")
    assert status.returncode == 3 and "not running" in status.stdout
    stop = daemon.run("stop")
    assert stop.returncode == 0 and "not running" in stop.stdout


def test_restart_and_stale_pid_file(daemon):
    assert daemon.run("start").returncode == 0
    first = daemon.pid()
    result = daemon.run("restart")
    assert result.returncode == 0, result.stdout + result.stderr
    second = daemon.pid()
    assert second != first and not _alive(first) and _alive(second)

    # a daemon killed hard leaves its files: status says so, start takes over
    os.kill(second, signal.SIGKILL)
    poll(lambda: not _alive(second), "the killed daemon to vanish", 30, interval=0.02)
    status = daemon.run("status")
    assert status.returncode == 1 and "gone" in status.stdout
    result = daemon.run("start")
    assert result.returncode == 0 and "stale" in result.stdout, result.stdout
    assert daemon.run("stop").returncode == 0


def test_start_failure_shows_the_log(daemon, tmp_path):
    result = subprocess.run(
        [
            daemon.sat,
            "start",
            "--bus",
            f"unix:path={tmp_path}/no-bus-here",
            "--data-dir",
            str(daemon.data_dir),
        ],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "exited with code 1 before being ready" in result.stderr
    assert "SàT failed to start" in result.stderr  # the tail of the log
    assert not daemon.pid_file.exists() and not daemon.ready_file.exists()


def test_fg_notifies_systemd_and_stops_cleanly(daemon):
    notify = daemon.root / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        sock.settimeout(30)
        proc = daemon.popen(
            [daemon.sat, "fg", *daemon.options()], env={**daemon.env, "NOTIFY_SOCKET": str(notify)}
        )
        try:
            message = sock.recv(4096).decode()
            assert message.startswith("READY=1\n") and f"MAINPID={proc.pid}" in message
            assert name_owned(daemon.bus_address)
        finally:
            out = stop_process(proc, signal.SIGINT)  # Ctrl-C
        assert sock.recv(4096).decode().startswith("STOPPING=1")
    assert proc.returncode == 0, out
    assert "SàT daemon ready" in out and "SàT daemon stopped" in out  # logs on stderr
    assert not daemon.pid_file.exists()


# --- systemd units and the private bus configuration ----------------------------------

UNITS = ["sat.service", "sat-system.service", "sat-dbus.socket", "sat-dbus.service"]


def test_systemd_units_parse():
    for name in UNITS + ["sat-system.service.d/dedicated-bus.conf"]:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read_string((SYSTEMD_DIR / name).read_text())
        if name.endswith(".service") and name != "sat-dbus.service":
            assert parser["Service"]["Type"] == "notify"
            assert "sat fg" in parser["Service"]["ExecStart"]
            assert "sat stop" in parser["Service"]["ExecStop"]
    system = (SYSTEMD_DIR / "sat-system.service").read_text()
    for setting in (
        "User=sat",
        "ProtectSystem=strict",
        "StateDirectory=sat",
        "RuntimeDirectory=sat",
    ):
        assert setting in system


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path, venv):
    sat_bin = str(venv / "bin" / "sat")
    for name in UNITS:
        text = (SYSTEMD_DIR / name).read_text().replace("/usr/bin/sat ", sat_bin + " ")
        (tmp_path / name).write_text(text)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    system = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / n) for n in UNITS[1:])],
        capture_output=True,
        text=True,
        env=env,
    )
    assert system.returncode == 0 and not system.stderr.strip(), system.stderr
    user = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(tmp_path / "sat.service")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert user.returncode == 0 and not user.stderr.strip(), user.stderr


def test_private_bus_configuration(venv, tmp_path):
    """misc/systemd/sat-dbus.conf (+ the D-Bus policy) run by dbus-daemon, as this user."""
    me = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    policy = (REPO_ROOT / "misc" / "dbus" / "org.salutatoi.SAT.conf").read_text()
    policy = policy.replace('user="sat"', f'user="{me}"').replace('group="sat"', f'group="{group}"')
    (tmp_path / "policy.conf").write_text(policy)
    conf = (SYSTEMD_DIR / "sat-dbus.conf").read_text()
    conf = conf.replace(
        "/usr/share/dbus-1/system.d/org.salutatoi.SAT.conf", str(tmp_path / "policy.conf")
    )
    conf = conf.replace('group="sat"', f'group="{group}"')
    conf = conf.replace("unix:path=/run/sat-bus/bus", f"unix:path={tmp_path}/bus")
    with DBusDaemon(tmp_path / "dbus", config=conf) as bus:
        daemon = Daemon(venv, tmp_path / "sat", bus.address)
        result = daemon.run("start")
        assert result.returncode == 0, result.stdout + result.stderr
        try:
            assert name_owned(bus.address)
            introspect = subprocess.run(
                [
                    "dbus-send",
                    f"--bus={bus.address}",
                    "--print-reply",
                    f"--dest={BUS_NAME}",
                    "/org/salutatoi/SAT/bridge",
                    "org.freedesktop.DBus.Introspectable.Introspect",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
            assert introspect.returncode == 0, introspect.stderr
            assert "org.salutatoi.SAT.core" in introspect.stdout
        finally:
            assert daemon.run("stop").returncode == 0
