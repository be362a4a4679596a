"""Fixtures giving integration tests a real Prosody (see tests/support/prosody.py).

- ``prosody``: one server for the whole session, with ``alice``/``alice-pass-1``,
  ``bob``/``bob-pass-1`` and ``admin``/``admin-pass-1`` (the only JID allowed to create nodes on
  ``pubsub.localhost``). Tests must leave it running.
- ``make_account``: ``make_account(prefix="user", password=None, server=None) -> Account`` creates
  a fresh, never-used account (on ``prosody`` unless ``server`` is given).
- ``fresh_prosody``: a private server for one test, which may stop, restart or kill it; it has the
  same three accounts.
- ``make_prosody``: ``make_prosody(**ProsodyServer kwargs) -> ProsodyServer`` (started), for
  tests needing another configuration (SHA-1 hashes, SQL storage, minimal modules...).
- ``sat_daemon``: the real SàT daemon (a subprocess, :class:`tests.support.daemon.SatDaemon`) on
  a private dbus-daemon, trusting the CA of ``prosody``.
- ``make_sat_daemon``: ``make_sat_daemon(server=None, extra_config="") -> SatDaemon`` (started),
  each on its own private bus and trusting ``server``'s CA (default: ``prosody``); all are
  stopped after the test.

When a test using one of these servers or daemons fails, the tail of their logs is attached to
the report.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import SatDaemon, sat_daemon_on_private_bus
from tests.support.prosody import PROSODY_BIN, Account, ProsodyServer

DEFAULT_ACCOUNTS = (
    ("alice", "alice-pass-1"),
    ("bob", "bob-pass-1"),
    ("admin", "admin-pass-1"),
)
PUBSUB_ADMIN = "admin@localhost"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


def _logs_of(item: pytest.Item) -> list[tuple[str, ProsodyServer | SatDaemon, int]]:
    """(title, server or daemon, lines) for each Prosody and SàT daemon the test used."""
    found: list[tuple[str, ProsodyServer | SatDaemon, int]] = []
    for value in getattr(item, "funcargs", {}).values():
        servers = [value] if isinstance(value, ProsodyServer) else []
        servers.extend(getattr(value, "prosody_servers", ()))
        daemons = [value] if isinstance(value, SatDaemon) else []
        daemons.extend(getattr(value, "sat_daemons", ()))
        found.extend(("Prosody log", server, 60) for server in servers)
        found.extend(("SàT daemon log", daemon, 150) for daemon in daemons)
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Attach the tail of Prosody's and the daemon's logs to failed tests that used them."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        seen = set()
        for title, source, lines in _logs_of(item):
            if id(source) not in seen:
                seen.add(id(source))
                report.sections.append((f"{title} ({source.workdir})", source.log_tail(lines)))
    return report


def _require_prosody() -> None:
    if not os.access(PROSODY_BIN, os.X_OK):
        pytest.fail(
            f"Prosody is required for integration tests but {PROSODY_BIN} is missing: "
            "install it (apt-get install --no-install-recommends prosody lua-dbi-sqlite3) "
            "or point SAT_TEST_PROSODY at the binary",
            pytrace=False,
        )


def _start_with_accounts(server: ProsodyServer) -> ProsodyServer:
    server.start()
    for user, password in DEFAULT_ACCOUNTS:
        server.register(user, password)
    return server


@pytest.fixture(scope="session")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    """Session-wide Prosody with alice, bob and admin registered."""
    _require_prosody()
    server = ProsodyServer(tmp_path_factory.mktemp("prosody"), pubsub_admins=[PUBSUB_ADMIN])
    try:
        yield _start_with_accounts(server)
    finally:
        server.stop()


@pytest.fixture
def fresh_prosody(tmp_path: Path) -> Iterator[ProsodyServer]:
    """A Prosody of its own for one test (free to stop/restart/kill it)."""
    _require_prosody()
    server = ProsodyServer(tmp_path / "prosody", pubsub_admins=[PUBSUB_ADMIN])
    try:
        yield _start_with_accounts(server)
    finally:
        server.stop()


@pytest.fixture
def make_prosody(tmp_path: Path) -> Iterator[Callable[..., ProsodyServer]]:
    """Factory of extra, started servers; all are stopped after the test."""
    _require_prosody()
    servers: list[ProsodyServer] = []
    counter = itertools.count(1)

    def factory(**kwargs) -> ProsodyServer:
        server = ProsodyServer(tmp_path / f"prosody-{next(counter)}", **kwargs)
        servers.append(server)
        server.start()
        return server

    factory.prosody_servers = servers  # type: ignore[attr-defined]  (read by the report hook)
    try:
        yield factory
    finally:
        for server in servers:
            server.stop()


_account_counter = itertools.count(1)


@pytest.fixture
def make_account(request: pytest.FixtureRequest) -> Callable[..., Account]:
    """``make_account(prefix="user", password=None, server=None)``: a brand-new account.

    Defaults to the session ``prosody`` server (started on first use).
    """

    def factory(
        prefix: str = "user", password: str | None = None, server: ProsodyServer | None = None
    ) -> Account:
        if server is None:
            server = request.getfixturevalue("prosody")
        user = f"{prefix}-{next(_account_counter)}-{uuid.uuid4().hex[:6]}"
        return server.register(user, password or f"{user}-pass")

    return factory


@pytest.fixture
def make_sat_daemon(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., SatDaemon]]:
    """Factory of started SàT daemons, each on its own private bus; all stopped afterwards.

    ``make_sat_daemon(server=None, extra_config="")``: the daemon trusts ``server``'s CA (the
    session ``prosody`` by default). The first one lives in ``tmp_path/daemon``.
    """
    daemons: list[SatDaemon] = []
    with contextlib.ExitStack() as stack:

        def factory(server: ProsodyServer | None = None, extra_config: str = "") -> SatDaemon:
            if server is None:
                server = request.getfixturevalue("prosody")
            workdir = tmp_path if not daemons else tmp_path / f"sat-{len(daemons) + 1}"
            daemon = stack.enter_context(
                sat_daemon_on_private_bus(workdir, server.ca_cert_path, extra_config)
            )
            daemons.append(daemon)
            return daemon

        factory.sat_daemons = daemons  # type: ignore[attr-defined]  (read by the report hook)
        yield factory


@pytest.fixture
def sat_daemon(make_sat_daemon: Callable[..., SatDaemon], prosody: ProsodyServer) -> SatDaemon:
    """The real SàT daemon (a subprocess) on a private dbus-daemon, trusting the test CA."""
    return make_sat_daemon(prosody)
