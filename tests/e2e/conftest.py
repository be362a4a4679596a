"""End-to-end fixtures: the real daemon, the test Prosody, and Primitivus in a private tmux.

- ``tmux``: a :class:`Tmux` server of our own (its socket in the test's tmp dir, no status
  line, ``tmux-256color``), killed after the test; ``tmux.start(command, width, height)``
  opens the session, ``send``/``type`` press keys, ``screen()`` is ``capture-pane -p``,
  ``wait_for(text)`` polls it (from asyncio tests: ``await tmux.await_text(text)``).
- ``prosody``, ``make_account``, ``sat_daemon``: the integration fixtures (real Prosody, the
  daemon as a subprocess on a private dbus-daemon).
- ``asker_daemon``: the same real daemon with the test plugins of ``daemon_plugins/`` loaded
  too (``E2eAsk``: the daemon asks the user a question with ``ActionNew``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (  # noqa: F401
    make_account,
    make_sat_daemon,
    prosody,
    sat_daemon,
)
from tests.support.daemon import REPO_ROOT, SatDaemon

TMUX = shutil.which("tmux") or "/usr/bin/tmux"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


class Tmux:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.socket = workdir / "tmux.sock"
        self.config = workdir / "tmux.conf"
        self.config.write_text(
            'set -g default-terminal "tmux-256color"\n'
            "set -g status off\n"
            "set -g remain-on-exit on\n"
            "set -g history-limit 2000\n"
            "set -s escape-time 0\n"
        )
        self.session = "e2e"
        self.started = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [TMUX, "-S", str(self.socket), "-f", str(self.config), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=15,
        )

    def start(
        self,
        command: str,
        width: int = 80,
        height: int = 24,
        env: dict | None = None,
        cwd: str | Path | None = None,
    ):
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        prefix = f"cd {shlex.quote(str(cwd))} && " if cwd else ""
        shell = f'{prefix}env {exports} {command}; echo "[exited with status $?]"; sleep 600'
        self._run(
            "new-session", "-d", "-x", str(width), "-y", str(height), "-s", self.session, shell
        )
        self.started = True

    def send(self, *keys: str) -> None:
        """Press keys by tmux name: Enter, Escape, F3, C-q, M-Enter, Up..."""
        self._run("send-keys", "-t", self.session, *keys)

    def type(self, text: str) -> None:
        """Type literal text."""
        self._run("send-keys", "-t", self.session, "-l", text)

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-t", self.session).stdout

    def size(self) -> tuple[int, int]:
        out = self._run(
            "display-message", "-p", "-t", self.session, "#{pane_width} #{pane_height}"
        ).stdout.split()
        return int(out[0]), int(out[1])

    def resize(self, width: int, height: int) -> None:
        self._run("resize-window", "-t", self.session, "-x", str(width), "-y", str(height))

    def pane_dead(self) -> bool:
        out = self._run("display-message", "-p", "-t", self.session, "#{pane_dead}", check=False)
        return out.stdout.strip() == "1"

    def _match(self, pattern: str | re.Pattern, screen: str) -> bool:
        if isinstance(pattern, re.Pattern):
            return pattern.search(screen) is not None
        return pattern in screen

    def wait_for(self, pattern, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if self._match(pattern, screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on screen after {timeout} s:\n{screen}")
            time.sleep(0.1)

    async def await_text(self, pattern, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if self._match(pattern, screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on screen after {timeout} s:\n{screen}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self.socket.exists():
            self._run("kill-server", check=False)


@pytest.fixture
def tmux(tmp_path: Path):
    if not os.access(TMUX, os.X_OK):
        pytest.fail("tmux is required for the end-to-end tests (apt-get install tmux)")
    server = Tmux(tmp_path)
    try:
        yield server
    finally:
        server.kill()


class AskerDaemon(SatDaemon):
    """:class:`SatDaemon` run by ``tests.e2e.asker_daemon`` (test plugins loaded too)."""

    launcher = "tests.e2e.asker_daemon"


@pytest.fixture
def asker_daemon(tmp_path: Path, prosody):  # noqa: F811  (the imported fixture)
    """The real daemon with the E2eAsk test method, on its own private bus."""
    from tests.support.dbus import DBusDaemon

    with DBusDaemon(tmp_path / "dbus") as bus:
        daemon = AskerDaemon(tmp_path / "daemon", bus.address, prosody.ca_cert_path)
        daemon.start()
        try:
            yield daemon
        finally:
            if daemon.process is not None:
                daemon.stop()


def primitivus_command(bus_address: str, workdir: Path, *args: str) -> tuple[str, dict]:
    """The shell command running Primitivus from the source tree, and its environment."""
    log = workdir / "primitivus.log"
    command = " ".join(
        shlex.quote(a)
        for a in (
            sys.executable,
            "-m",
            "sat_frontends.primitivus",
            "--bus",
            bus_address,
            "--log",
            str(log),
            *args,
        )
    )
    env = {
        "PYTHONPATH": str(REPO_ROOT),
        "LANG": "C.UTF-8",
        "XDG_CONFIG_HOME": str(workdir / "xdg-config"),
        "XDG_STATE_HOME": str(workdir / "xdg-state"),
    }
    return command, env
