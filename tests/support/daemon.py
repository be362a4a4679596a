"""Run the real daemon as a subprocess on a private D-Bus, for integration tests.

``SatDaemon(workdir, bus_address, ca_file)`` writes a ``sat.conf`` in
``workdir`` (data, pid and log files there too, fast reconnection delays) and
runs ``python -m sat.launcher fg`` from the source tree. ``start()`` waits for
the ready file; ``stop()`` sends SIGTERM (clean shutdown), ``kill()`` SIGKILL.
The same data directory survives restarts, which is what crash tests need.

``sat_daemon_on_private_bus(workdir, ca_file)`` is the usual way in: a private dbus-daemon and
a started daemon on it, both stopped when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class SatDaemon:
    #: module run with ``python -m ... fg --config FILE`` (tests may run a variant)
    launcher = "sat.launcher"

    def __init__(
        self,
        workdir: str | Path,
        bus_address: str,
        ca_file: str | Path | None = None,
        extra_config: str = "",
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bus_address = bus_address
        self.data_dir = self.workdir / "data"
        self.pid_file = self.workdir / "sat.pid"
        self.ready_file = Path(f"{self.pid_file}.ready")
        self.log_path = self.workdir / "sat.log"
        self.config_path = self.workdir / "sat.conf"
        ca_line = f"ca_file = {ca_file}\n" if ca_file else ""
        self.config_path.write_text(
            "[core]\n"
            f"data_dir = {self.data_dir}\n"
            f"pid_file = {self.pid_file}\n"
            f"log_file = {self.log_path}\n"
            "log_level = debug\n"
            "[bridge]\n"
            "bus = address\n"
            f"bus_address = {bus_address}\n"
            "[xmpp]\n"
            f"{ca_line}"
            "reconnect_initial_delay = 0.3\n"
            "reconnect_max_delay = 2\n"
            f"{extra_config}"
        )
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAT_")}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        env["DBUS_SESSION_BUS_ADDRESS"] = self.bus_address
        env["XDG_CONFIG_HOME"] = str(self.workdir / "xdg-config")
        env["XDG_DATA_HOME"] = str(self.workdir / "xdg-data")
        env["XDG_RUNTIME_DIR"] = str(self.workdir)
        return env

    def start(self, timeout: float = 20.0) -> SatDaemon:
        self.ready_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.launcher, "fg", "--config", str(self.config_path)],
            cwd=REPO_ROOT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "stderr.log", "ab"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"daemon exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.ready_file.exists():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"daemon not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 60) -> str:
        text = ""
        for path in (self.log_path, self.workdir / "stderr.log"):
            if path.exists():
                text += (
                    f"--- {path.name}\n"
                    + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                    + "\n"
                )
        return text


@contextlib.contextmanager
def sat_daemon_on_private_bus(
    workdir: str | Path, ca_file: str | Path | None = None, extra_config: str = ""
) -> Iterator[SatDaemon]:
    """A started :class:`SatDaemon` on its own private ``dbus-daemon``, stopped on exit.

    The bus lives in ``workdir/dbus`` and the daemon in ``workdir/daemon``. The daemon may be
    stopped, killed or restarted inside the block: it is stopped at the end only if running.
    """
    from tests.support.dbus import DBusDaemon

    workdir = Path(workdir)
    with DBusDaemon(workdir / "dbus") as bus:
        daemon = SatDaemon(workdir / "daemon", bus.address, ca_file, extra_config)
        daemon.start()
        try:
            yield daemon
        finally:
            if daemon.process is not None:
                daemon.stop()
