"""The daemon as a Twisted service: start the host, say when it is ready, stop it cleanly.

:class:`SatService` wraps the host (:class:`sat.core.host.SAT`):

- ``startService`` takes the pid file (``[core] pid_file``, locked so that one
  daemon runs per configuration) and runs ``host.start()``. When that returns
  the daemon is *ready*: it writes ``<pid_file>.ready`` holding its pid (what
  ``sat start`` waits for) and sends ``READY=1`` to systemd when
  ``$NOTIFY_SOCKET`` is set (``Type=notify`` units). If the start fails, the
  error is logged, the reactor is stopped and the process exits with code 1.
- ``stopService`` (run on SIGTERM/SIGINT, before the reactor stops) removes the
  ready file, tells systemd ``STOPPING=1``, runs ``host.stop()`` (disconnects
  the profiles, leaves the bus, closes the storage) and releases the pid file.

Two ways to run it: :func:`run` (``sat fg`` and, in the background,
``sat start``) and ``twistd sat`` (:class:`Options` and :func:`makeService`
here are what the ``twisted/plugins/sat_plugin.py`` service maker loads).
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.python import usage

from sat.core.errors import SatError
from sat.launcher import ready_file_for

log = logging.getLogger(__name__)

EXIT_START_FAILED = 1


class AlreadyRunning(SatError):
    """Another daemon already runs with this pid file."""

    dbus_name = "AlreadyRunning"


# --- systemd notification protocol ------------------------------------------------


def sd_notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (``READY=1``, ``STOPPING=1``, ``STATUS=...``) to systemd.

    The protocol: one datagram on the unix socket named by ``$NOTIFY_SOCKET``
    (a path, or an abstract name written with a leading ``@``). Returns
    whether it was sent; does nothing without ``$NOTIFY_SOCKET``.
    """
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("unsupported NOTIFY_SOCKET address %r: not notifying systemd", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as e:
        log.warning("could not notify systemd (%s): %s", address.lstrip("\0"), e)
        return False
    return True


# --- pid file ----------------------------------------------------------------


class PidFile:
    """A pid file, locked (``flock``) for as long as the daemon runs.

    The lock, not the file's existence, says a daemon runs: a file left by a
    killed daemon is taken over. If the file already holds our pid (``twistd
    --pidfile`` wrote it), it is only locked, and left for twistd to remove.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None
        self._owned = False

    def acquire(self, pid: int | None = None) -> None:
        """Lock the file and write ``pid`` (ours by default) in it.

        :raises AlreadyRunning: another process holds the lock
        """
        pid = os.getpid() if pid is None else pid
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise
                other = _read_int(self.path)
                raise AlreadyRunning(
                    f"another daemon already runs with pid file {self.path}"
                    + (f" (pid {other})" if other else "")
                ) from None
            # the daemon holding it may have removed the file between our open and lock
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        content = os.pread(fd, 32, 0).strip()
        if content != str(pid).encode():
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{pid}\n".encode(), 0)
            self._owned = True
        self._fd = fd

    def release(self) -> None:
        """Remove the file (if we wrote it) and unlock it."""
        if self._fd is None:
            return
        if self._owned:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("could not remove pid file %s: %s", self.path, e)
        os.close(self._fd)
        self._fd = None
        self._owned = False


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _process_age() -> float | None:
    """Seconds since this process started (from /proc), None if unknown."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        # field 22 (starttime) is the 20th after the command name
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _default_host_factory(config):
    from sat.core.host import SAT
    from sat.tools.memory import release_large_blocks

    # the real daemon only (not test stand-ins): give scrypt's 16 MiB back after use
    release_large_blocks()
    return SAT(config)


# --- the service -------------------------------------------------------------


#: seconds a thread waiting for the GIL lets the running one go on (CPython's default: 0.005)
GIL_SWITCH_INTERVAL = 0.001


class SatService(service.Service):
    """Runs a host (``host_factory(config)``) for as long as the service runs.

    :param config: the loaded configuration
    :param host_factory: builds the host from the config (tests pass a stand-in)
    :param pid_file: overrides ``[core] pid_file``; None: from the config
    :param on_failure: called with the exit code when the start fails; the
        default stops the reactor
    """

    name = "sat"

    def __init__(
        self,
        config,
        host_factory: Callable[[Any], Any] | None = None,
        pid_file: str | os.PathLike | None = None,
        on_failure: Callable[[int], None] | None = None,
    ):
        self.config = config
        self.host_factory = host_factory or _default_host_factory
        pid_path = Path(pid_file) if pid_file else Path(config.get("core", "pid_file"))
        self.pid_file = PidFile(pid_path)
        self.ready_file = ready_file_for(pid_path)
        self.on_failure = on_failure or _stop_reactor
        self.host = None
        self.ready = False
        #: the process' exit code: 0, or EXIT_START_FAILED once the start failed
        self.exit_code = 0
        self._starting: defer.Deferred | None = None
        self._stopping: defer.Deferred | None = None

    # start

    def startService(self) -> None:
        super().startService()
        # The database thread hands results back to the reactor thread, which holds the GIL
        # while it works: with CPython's default 5 ms switch interval, a woken database
        # thread waited for the reactor to go idle before it could even start its INSERT
        # (measured: most of the 2.5 ms MessageSend -> MessageNew time). A shorter interval
        # lets it in sooner; it costs switches when both threads want to run: 0.2 ms took
        # 15 % more CPU in a MAM catch-up, 1 ms kept the latency gain at no measurable cost.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self._starting = defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        t0 = time.monotonic()
        try:
            self.pid_file.acquire()
            self._remove_ready_file()
            self.host = self.host_factory(self.config)
            await self.host.start()
        except Exception as e:
            self._start_failed(e)
            return
        if self._stopping is not None:
            return  # asked to stop while starting: don't claim to be ready
        self._mark_ready(time.monotonic() - t0)

    def _mark_ready(self, duration: float) -> None:
        pid = os.getpid()
        tmp = self.ready_file.with_name(f"{self.ready_file.name}.{pid}.tmp")
        try:
            tmp.write_text(f"{pid}\n", encoding="ascii")
            os.replace(tmp, self.ready_file)  # atomic: readers never see a partial file
        except OSError as e:
            log.warning("could not write the ready file %s: %s", self.ready_file, e)
        self.ready = True
        sd_notify(f"READY=1\nSTATUS=ready\nMAINPID={pid}")
        age = _process_age()
        log.info(
            "SàT daemon ready (pid %d): host started in %.3f s%s",
            pid,
            duration,
            f", {age:.2f} s after the process started" if age is not None else "",
        )

    def _start_failed(self, error: Exception) -> None:
        self.exit_code = EXIT_START_FAILED
        if isinstance(error, SatError):
            # an expected failure (config, bus name taken...): its message says it all
            log.error("SàT failed to start: %s", error)
            log.debug("start failure details", exc_info=error)
        elif isinstance(error, OSError):
            # the environment (bus socket missing, permission denied...): no traceback needed
            log.error("SàT failed to start: %s: %s", type(error).__name__, error)
            log.debug("start failure details", exc_info=error)
        else:
            log.error("SàT failed to start: %s: %s", type(error).__name__, error, exc_info=error)
        summary = str(error).splitlines()[0] if str(error) else type(error).__name__
        sd_notify(f"STATUS=failed to start: {summary}")
        self.on_failure(self.exit_code)

    # stop

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._stopping is None:
            self._stopping = defer.ensureDeferred(self._stop())
        return self._stopping

    async def _stop(self) -> None:
        log.info("SàT daemon stopping")
        if self.ready:
            sd_notify("STOPPING=1\nSTATUS=stopping")
        self.ready = False
        self._remove_ready_file()
        if self._starting is not None and not self._starting.called:
            await self._starting  # never fails: _start catches its errors
        if self.host is not None:
            try:
                await self.host.stop()
            except Exception:
                log.exception("error while stopping the host")
        self.pid_file.release()
        log.info("SàT daemon stopped")

    def _remove_ready_file(self) -> None:
        try:
            self.ready_file.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove the ready file %s: %s", self.ready_file, e)


def _stop_reactor(code: int) -> None:
    from twisted.internet import reactor

    reactor.callWhenRunning(_stop_if_running, reactor)


def _stop_if_running(reactor) -> None:
    if reactor.running:
        reactor.stop()


# --- building it -----------------------------------------------------------------


def ensure_asyncio_reactor():
    """Install the asyncio reactor, or fail clearly if another one already runs."""
    from sat.core.reactor import install_asyncio_reactor

    try:
        return install_asyncio_reactor()
    except RuntimeError as e:
        raise usage.UsageError(
            f"{e}. With twistd, choose it: twistd --reactor=asyncio sat ..."
        ) from None


def make_service(
    options: Mapping[str, Any],
    host_factory: Callable[[Any], Any] | None = None,
    *,
    under_twistd: bool = False,
    env: Mapping[str, str] | None = None,
) -> SatService:
    """Install the reactor, load the config with ``options``, set up logging, build the service.

    ``options``: ``config``, ``pid_file``, ``log_file``, ``data_dir``, ``bus``,
    ``log_level`` (dashes or underscores; missing ones come from the config).
    Under twistd, records are handed to twistd's log; otherwise Twisted's log
    is handed to stdlib logging, written to ``[core] log_file`` or standard error.
    """
    from sat.core import logging_setup
    from sat.launcher import load_config, normalize_options

    ensure_asyncio_reactor()
    options = normalize_options(options)
    config = load_config(options, env)
    # twistd writes its --pidfile (often the same file) before starting us, but does not
    # create its directory ($XDG_RUNTIME_DIR/sat/ by default)
    Path(config.get("core", "pid_file")).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if under_twistd:
        logging_setup.configure_from_config(config, to_twisted=True)
    else:
        # [core] log_file (--log-file overrides it), or standard error when it is empty
        logging_setup.configure_from_config(config)
    return SatService(config, host_factory)


def run(
    options: Mapping[str, Any],
    host_factory: Callable[[Any], Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run the daemon in this process until SIGTERM/SIGINT; return its exit code."""
    from sat.core.errors import ConfigError

    ensure_asyncio_reactor()
    try:
        sat_service = make_service(options, host_factory, env=env)
    except ConfigError as e:
        print(f"sat: invalid configuration:\n{e}", file=sys.stderr, flush=True)
        return 6
    from twisted.internet import reactor

    reactor.callWhenRunning(sat_service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", sat_service.stopService)
    reactor.run()
    return sat_service.exit_code


# --- twistd ------------------------------------------------------------------


class Options(usage.Options):
    """Options of ``twistd sat``."""

    synopsis = "[options]"
    longdesc = (
        "Run the Salut à Toi XMPP daemon under twistd. It needs Twisted's asyncio reactor: "
        "without --reactor, it installs it itself; with another reactor it refuses to start. "
        "The daemon is ready when <pid file>.ready exists (and it notifies systemd)."
    )
    optParameters = [
        ["config", "c", None, "Extra configuration file (read after the system and user ones)."],
        ["data-dir", None, None, "Data directory ([core] data_dir)."],
        [
            "bus",
            None,
            None,
            "D-Bus bus of the bridge: session, system or an address (unix:path=...).",
        ],
        [
            "pid-file",
            None,
            None,
            "SàT's pid file ([core] pid_file); may be twistd's own --pidfile.",
        ],
        ["log-file", None, None, "Also write SàT's log to this file ([core] log_file)."],
        ["log-level", None, None, "debug, info, warning or error ([core] log_level)."],
    ]

    def postOptions(self) -> None:
        bus = self["bus"]
        if bus and bus not in ("session", "system") and ":" not in bus:
            raise usage.UsageError(f"--bus {bus}: expected session, system or a D-Bus address")
        level = self["log-level"]
        if level and level not in ("debug", "info", "warning", "error"):
            raise usage.UsageError(f"--log-level {level}: expected debug, info, warning or error")


def makeService(options: Mapping[str, Any]) -> SatService:
    """twistd's entry point (through the ``sat`` service maker)."""
    from sat.core.errors import ConfigError

    try:
        sat_service = make_service(options, under_twistd=True)
    except ConfigError as e:
        raise usage.UsageError(f"invalid configuration:\n{e}") from None

    def on_failure(code: int) -> None:
        # twistd itself always exits with 0 after a clean reactor stop: force our code once
        # it has cleaned up (atexit handlers run last, after twistd removed its pid file)
        atexit.register(_exit_with, code)
        _stop_reactor(code)

    sat_service.on_failure = on_failure
    return sat_service


def _exit_with(code: int) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)
