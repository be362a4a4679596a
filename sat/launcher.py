"""``sat``: start, stop and watch the backend daemon.

::

    sat start     run the daemon in the background; returns once it is ready
    sat stop      stop it (SIGTERM, then SIGKILL after --timeout seconds)
    sat status    tell whether it runs (exit 0), is dead with a pid file left (1), or not (3)
    sat restart   stop, then start
    sat fg        run it in the foreground (systemd's ExecStart); logs to standard error
                  unless [core] log_file / --log-file names a file

Common options: ``--config FILE``, ``--pid-file FILE``, ``--log-file FILE``,
``--data-dir DIR``, ``--bus session|system|ADDRESS``, ``--log-level LEVEL``.
They override the configuration (``[core] pid_file``...).

The daemon is ready when ``<pid_file>.ready`` exists and holds its pid (and,
under systemd, when it has sent ``READY=1``): see :mod:`sat.core.service`.

This module must start fast: it imports neither Twisted nor the backend
unless the daemon runs in this very process (``sat fg``).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

# exit codes (LSB init script conventions where they apply)
EXIT_OK = 0
EXIT_FAILURE = 1
#: ``status``: the daemon is dead but its pid file is still there
EXIT_DEAD_PID_FILE = 1
EXIT_USAGE = 2
#: ``status``: the daemon is not running
EXIT_NOT_RUNNING = 3
#: ``stop``: not allowed to signal the daemon (another user's)
EXIT_PERMISSION = 4
#: the configuration is invalid
EXIT_CONFIG = 6

READY_SUFFIX = ".ready"
DEFAULT_START_TIMEOUT = 20.0
DEFAULT_STOP_TIMEOUT = 20.0
#: how long to wait for the process to vanish after SIGKILL
KILL_WAIT = 5.0
POLL_INTERVAL = 0.01

#: options that name paths: made absolute before they are used or passed on
PATH_OPTIONS = ("config", "pid_file", "log_file", "data_dir")
BUS_CHOICES = ("session", "system")


class LauncherError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


# --- configuration ---------------------------------------------------------------


def normalize_options(options: Mapping[str, object]) -> dict[str, object]:
    """Options with ``_`` in their names (twistd uses ``-``), paths absolute, empty ones dropped."""
    result: dict[str, object] = {}
    for key, value in options.items():
        key = key.replace("-", "_")
        if value is None or value == "":
            continue
        if key in PATH_OPTIONS:
            value = os.path.abspath(os.path.expanduser(str(value)))
        result[key] = value
    return result


def config_env(options: Mapping[str, object], base: Mapping[str, str] | None = None) -> dict:
    """The environment to load the configuration with: ``base`` plus ``SAT_*`` overrides.

    Command line options override every file, exactly like the ``SAT_<SECTION>_<OPTION>``
    environment variables do, so they are passed to the configuration that way
    (without touching ``os.environ``).
    """
    options = normalize_options(options)
    env = dict(os.environ if base is None else base)
    for key, var in (
        ("data_dir", "SAT_CORE_DATA_DIR"),
        ("pid_file", "SAT_CORE_PID_FILE"),
        ("log_file", "SAT_CORE_LOG_FILE"),
        ("log_level", "SAT_CORE_LOG_LEVEL"),
    ):
        if key in options:
            env[var] = str(options[key])
    bus = options.get("bus")
    if bus:
        bus = str(bus)
        if bus in BUS_CHOICES:
            env["SAT_BRIDGE_BUS"] = bus
        else:
            env["SAT_BRIDGE_BUS"] = "address"
            env["SAT_BRIDGE_BUS_ADDRESS"] = bus
    return env


def load_config(options: Mapping[str, object], env: Mapping[str, str] | None = None):
    """The daemon's :class:`~sat.memory.config.Config`, with ``options`` overriding it."""
    from sat.memory.config import Config

    options = normalize_options(options)
    return Config.load(extra_file=options.get("config"), env=config_env(options, env))


def default_log_file(config) -> Path:
    """Log file of a daemon run in the background: ``[core] log_file`` or ``<data_dir>/sat.log``."""
    return config.get("core", "log_file") or config.get("core", "data_dir") / "sat.log"


# --- pid file and process checks -------------------------------------------------------


def ready_file_for(pid_file: str | os.PathLike) -> Path:
    """The file telling the daemon is ready: ``<pid_file>.ready``, holding its pid."""
    return Path(str(pid_file) + READY_SUFFIX)


def read_pid(path: str | os.PathLike) -> int | None:
    """The pid in ``path``, or None if the file is missing, empty or not a number."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid > 0 else None


def process_cmdline(pid: int) -> list[str] | None:
    """Arguments of process ``pid`` (from /proc), None if gone or a zombie, [] if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        stat = b""
    # the state follows the command name, which is in parentheses and may hold spaces
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] if stat else b""
    if state in (b"Z", b"X"):
        return None  # exited, waiting to be reaped: gone for us
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (and is not a zombie)."""
    if os.path.isdir("/proc/self"):
        return process_cmdline(pid) is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def looks_like_sat(cmdline: list[str]) -> bool:
    """Whether a command line is the SàT daemon's (``sat``, ``-m sat.launcher``, ``twistd sat``)."""
    if not cmdline:
        return False
    names = [os.path.basename(a) for a in cmdline]
    # ``python -m sat.launcher fg`` / ``python .../sat/launcher.py``
    if "sat.launcher" in cmdline or any(a.endswith("sat/launcher.py") for a in cmdline):
        return True
    # the console script: ``/usr/bin/sat fg`` or ``python3 /usr/bin/sat fg``
    if names[0] == "sat" or (len(names) > 1 and names[1] == "sat" and "python" in names[0]):
        return True
    # ``twistd ... sat ...`` or ``python -m twisted ... sat ...``
    twistd = any(n == "twistd" for n in names[:2]) or (
        "-m" in cmdline[:3] and "twisted" in cmdline[:4]
    )
    return twistd and "sat" in cmdline[1:]


class DaemonState:
    """What the pid file says about the daemon."""

    RUNNING = "running"
    NOT_RUNNING = "not running"
    STALE = "stale"

    def __init__(self, pid_file: str | os.PathLike):
        self.pid_file = Path(pid_file)
        self.ready_file = ready_file_for(pid_file)
        self.pid = read_pid(self.pid_file)
        self.reason = ""
        if self.pid is None:
            if self.pid_file.exists():
                self.state = self.STALE
                self.reason = f"pid file {self.pid_file} holds no pid"
            else:
                self.state = self.NOT_RUNNING
            return
        cmdline = process_cmdline(self.pid) if os.path.isdir("/proc/self") else None
        if cmdline is None and not pid_alive(self.pid):
            self.state = self.STALE
            self.reason = f"process {self.pid} is gone"
        elif cmdline is not None and cmdline and not looks_like_sat(cmdline):
            self.state = self.STALE
            self.reason = f"pid {self.pid} is now another program: {' '.join(cmdline)[:80]}"
        else:
            self.state = self.RUNNING

    @property
    def running(self) -> bool:
        return self.state == self.RUNNING

    @property
    def ready(self) -> bool:
        """Running, and the ready file holds its pid."""
        return self.running and read_pid(self.ready_file) == self.pid

    def remove_stale_files(self) -> None:
        """Remove the pid and ready files of a daemon that is gone."""
        for path in (self.ready_file, self.pid_file):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


# --- commands ----------------------------------------------------------------


def _say(message: str) -> None:
    print(message, flush=True)


def _warn(message: str) -> None:
    print(f"sat: {message}", file=sys.stderr, flush=True)


def log_tail(path: str | os.PathLike, lines: int = 40, start: int = 0) -> str:
    """The last ``lines`` lines of a log file written after offset ``start`` ("" if unreadable).

    The first error line (``SàT failed to start: ...``) is repeated at the end when the tail
    does not show it, so the reason is the last thing a user reads.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(start, size - 256 * 1024) if size >= start else 0)
            data = f.read()
    except OSError:
        return ""
    all_lines = data.decode("utf-8", "replace").splitlines()
    tail = all_lines[-lines:]
    errors = [line for line in all_lines if " ERROR " in line or " CRITICAL " in line]
    if errors and errors[0] not in tail:
        tail.append(f"[...] first error: {errors[0]}")
    return "\n".join(tail)


def _daemon_args(options: Mapping[str, object], log_file: Path, pid_file: Path) -> list[str]:
    args = [sys.executable, "-m", "sat.launcher", "fg"]
    for key in ("config", "data_dir", "bus", "log_level"):
        if options.get(key):
            args += [f"--{key.replace('_', '-')}", str(options[key])]
    args += ["--pid-file", str(pid_file), "--log-file", str(log_file)]
    return args


def _daemon_env() -> dict[str, str]:
    """Environment of the background daemon: ours, plus a PYTHONPATH finding this very ``sat``."""
    import site

    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)  # the launcher is not the service systemd waits for
    root = str(Path(__file__).resolve().parents[1])
    installed = {os.path.realpath(p) for p in site.getsitepackages()}
    user_site = site.getusersitepackages()
    if user_site:
        installed.add(os.path.realpath(user_site))
    if os.path.realpath(root) not in installed:
        current = env.get("PYTHONPATH")
        env["PYTHONPATH"] = root + (os.pathsep + current if current else "")
    return env


def cmd_start(options: dict, timeout: float = DEFAULT_START_TIMEOUT) -> int:
    import subprocess

    config = load_config(options)
    pid_file = config.get("core", "pid_file")
    log_file = Path(options.get("log_file") or default_log_file(config))
    state = DaemonState(pid_file)
    if state.running:
        _say(f"sat is already running (pid {state.pid})")
        return EXIT_OK
    if state.state == DaemonState.STALE:
        _say(f"removing stale pid file {pid_file} ({state.reason})")
        state.remove_stale_files()
    ready_file = ready_file_for(pid_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    Path(pid_file).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    start = time.monotonic()
    with open(log_file, "ab") as log_out:
        log_start = log_out.tell()
        proc = subprocess.Popen(
            _daemon_args(options, log_file, pid_file),
            stdin=subprocess.DEVNULL,
            stdout=log_out,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=_daemon_env(),
            start_new_session=True,  # its own session: no terminal, no SIGINT from our shell
        )
    deadline = start + timeout
    while True:
        if read_pid(ready_file) == proc.pid:
            _say(f"sat started (pid {proc.pid}), ready in {time.monotonic() - start:.2f} s")
            # the daemon outlives us: don't let Popen's finalizer complain about it
            proc.returncode = 0
            return EXIT_OK
        code = proc.poll()
        if code is not None:
            _warn(f"the daemon exited with code {code} before being ready; end of {log_file}:")
            print(log_tail(log_file, start=log_start), file=sys.stderr, flush=True)
            return EXIT_FAILURE
        if time.monotonic() > deadline:
            _warn(f"the daemon (pid {proc.pid}) was not ready after {timeout:g} s; stopping it")
            stop_pid(proc.pid, DEFAULT_STOP_TIMEOUT, wait_child=proc)
            _warn(f"end of {log_file}:")
            print(log_tail(log_file, start=log_start), file=sys.stderr, flush=True)
            return EXIT_FAILURE
        time.sleep(POLL_INTERVAL)


def stop_pid(pid: int, timeout: float, wait_child=None) -> bool:
    """SIGTERM ``pid``, wait until it is gone, SIGKILL it after ``timeout``; True if SIGKILLed.

    :raises LauncherError: not allowed to signal it
    """

    def gone() -> bool:
        if wait_child is not None:
            return wait_child.poll() is not None
        return not pid_alive(pid)

    def send(sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise LauncherError(
                f"not allowed to stop the daemon (pid {pid}): it belongs to another user",
                EXIT_PERMISSION,
            ) from None

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not gone():
        if time.monotonic() > deadline:
            _warn(f"the daemon (pid {pid}) did not stop within {timeout:g} s: killing it (SIGKILL)")
            send(signal.SIGKILL)
            kill_deadline = time.monotonic() + KILL_WAIT
            while not gone() and time.monotonic() < kill_deadline:
                time.sleep(POLL_INTERVAL)
            return True
        time.sleep(POLL_INTERVAL)
    return False


def cmd_stop(options: dict, timeout: float = DEFAULT_STOP_TIMEOUT) -> int:
    config = load_config(options)
    state = DaemonState(config.get("core", "pid_file"))
    if not state.running:
        if state.state == DaemonState.STALE:
            _say(f"sat is not running (removing stale pid file: {state.reason})")
            state.remove_stale_files()
        else:
            _say("sat is not running")
        return EXIT_OK
    killed = stop_pid(state.pid, timeout)
    if killed or DaemonState(state.pid_file).state == DaemonState.STALE:
        # a killed daemon could not clean up after itself
        state.remove_stale_files()
    _say(f"sat stopped (pid {state.pid})" + (" by SIGKILL" if killed else ""))
    return EXIT_OK


def cmd_status(options: dict) -> int:
    config = load_config(options)
    pid_file = config.get("core", "pid_file")
    state = DaemonState(pid_file)
    if state.running:
        if state.ready:
            _say(f"sat is running (pid {state.pid}), ready")
        else:
            _say(f"sat is running (pid {state.pid}), starting: not ready yet")
        return EXIT_OK
    if state.state == DaemonState.STALE:
        _say(f"sat is not running, but its pid file is left: {state.reason} ({pid_file})")
        return EXIT_DEAD_PID_FILE
    _say("sat is not running")
    return EXIT_NOT_RUNNING


def cmd_fg(options: dict) -> int:
    from sat.core.service import run

    return run(options)


# --- command line ------------------------------------------------------------


def _bus(value: str) -> str:
    if value in BUS_CHOICES or ":" in value:
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r}: expected session, system or a D-Bus address (unix:path=...)"
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("daemon options (override the configuration)")
    group.add_argument("-c", "--config", metavar="FILE", help="extra configuration file")
    group.add_argument("--pid-file", metavar="FILE", help="pid file ([core] pid_file)")
    group.add_argument(
        "--log-file",
        metavar="FILE",
        help="log file ([core] log_file; when unset, fg logs to standard error and start "
        "to <data_dir>/sat.log)",
    )
    group.add_argument("--data-dir", metavar="DIR", help="data directory ([core] data_dir)")
    group.add_argument(
        "--bus",
        type=_bus,
        metavar="session|system|ADDRESS",
        help="D-Bus bus of the bridge ([bridge] bus / bus_address)",
    )
    group.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="[core] log_level"
    )

    parser = argparse.ArgumentParser(
        prog="sat",
        description="Run the Salut à Toi XMPP daemon.",
        epilog="status exits with 0 (running), 1 (dead, pid file left) or 3 (not running).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("start", parents=[common], help="start in the background, wait until ready")
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_START_TIMEOUT, help="seconds to wait for ready"
    )
    p = sub.add_parser("stop", parents=[common], help="stop (SIGTERM, SIGKILL after --timeout)")
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_STOP_TIMEOUT, help="seconds before SIGKILL"
    )
    sub.add_parser("status", parents=[common], help="running (0), dead (1), not running (3)")
    p = sub.add_parser("restart", parents=[common], help="stop then start")
    p.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT, help="for each step")
    sub.add_parser("fg", parents=[common], help="run in the foreground (systemd's ExecStart)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = normalize_options(
        {k: getattr(args, k) for k in ("config", "pid_file", "log_file", "data_dir", "bus")}
        | {"log_level": args.log_level}
    )
    try:
        if args.command == "fg":
            return cmd_fg(options)
        if args.command == "start":
            return cmd_start(options, args.timeout)
        if args.command == "stop":
            return cmd_stop(options, args.timeout)
        if args.command == "status":
            return cmd_status(options)
        if args.command == "restart":
            code = cmd_stop(options, args.timeout)
            return code if code != EXIT_OK else cmd_start(options, args.timeout)
    except LauncherError as e:
        _warn(str(e))
        return e.code
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            _warn(f"permission denied: {e}")
            return EXIT_PERMISSION
        raise
    except Exception as e:
        from sat.core.errors import ConfigError

        if isinstance(e, ConfigError):
            _warn(f"invalid configuration:\n{e}")
            return EXIT_CONFIG
        raise
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
