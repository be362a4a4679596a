"""A real Prosody server for integration tests, confined to one work directory.

Usage::

    with ProsodyServer(tmp_path) as server:
        server.register("alice", "secret")
        ...  # connect to 127.0.0.1:server.c2s_port, trust server.ca_cert_path

What gets generated in ``workdir``:

- ``certs/``: a private CA (``ca.crt``) and one certificate for ``localhost`` and every component
  (``conference.``, ``pubsub.``, ``upload.``, ``proxy.``); Prosody uses it for every host, including
  ``mismatch.test`` which deliberately has no certificate of its own (clients connecting to it must
  refuse the ``localhost`` certificate).
- ``prosody.cfg.lua``, ``data/``, ``prosody.log`` (Prosody's log), ``prosody.out`` (its stdout and
  stderr: configuration errors end up there), ``prosody.pid`` and ``prosody.sock`` (admin socket).

Every listener is on 127.0.0.1 and on a port picked at construction time; the ports never change
for the life of the object, so ``restart()`` brings the server back where clients expect it.
s2s is disabled, so nothing connects out.

Accounts are created through Prosody's admin socket (``mod_admin_socket`` + ``mod_admin_shell``,
the channel ``prosodyctl shell`` uses) while the server runs: ~9 ms per account, no process
spawned, and the running server's own user manager does the write (so SQL storage and any cache
stay coherent). When the server is stopped, ``register()`` falls back to
``prosodyctl --config <cfg> register`` (~40 ms), which writes to the same data store.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
import weakref
import xml.parsers.expat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.tls import CA, make_ca

__all__ = [
    "Account",
    "ProsodyError",
    "ProsodyServer",
    "find_free_ports",
    "PROSODY_BIN",
    "PROSODYCTL_BIN",
]

PROSODY_BIN = os.environ.get("SAT_TEST_PROSODY", "/usr/bin/prosody")
PROSODYCTL_BIN = os.environ.get("SAT_TEST_PROSODYCTL", "/usr/bin/prosodyctl")
LOOPBACK = "127.0.0.1"

#: modules loaded on every VirtualHost
DEFAULT_MODULES = (
    "roster",
    "saslauth",
    "tls",
    "disco",
    "carbons",
    "pep",
    "private",
    "blocklist",
    "vcard4",
    "vcard_legacy",
    "version",
    "uptime",
    "time",
    "ping",
    "register",
    "mam",
    "csi_simple",
    "smacks",
    "bookmarks",
    "admin_socket",
    "admin_shell",
)


class ProsodyError(RuntimeError):
    """Prosody could not be started, stopped or driven."""


#: servers started by this process, stopped at exit if a test run forgot to
_live_servers: weakref.WeakSet[ProsodyServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop(timeout=3)


def find_free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct TCP ports that were free on ``host`` a moment ago.

    All sockets are kept open until every port is chosen so the kernel never hands out the same
    port twice.
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _lua(value: Any) -> str:
    """Render a Python value as a Lua literal (str, bool, int, float, list/tuple/set, dict)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        escaped = (
            text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        )
        return f'"{escaped}"'
    if isinstance(value, Mapping):
        items = ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in value.items())
        return "{ " + items + " }"
    if isinstance(value, list | tuple | set | frozenset):
        return "{ " + ", ".join(_lua(v) for v in value) + " }"
    raise TypeError(f"cannot render {value!r} as Lua")


def _lua_assignments(options: Mapping[str, Any], indent: str = "") -> str:
    return "".join(f"{indent}{key} = {_lua(val)}\n" for key, val in options.items())


@dataclass(frozen=True)
class Account:
    user: str
    password: str
    host: str = "localhost"

    @property
    def jid(self) -> str:
        return f"{self.user}@{self.host}"


class _AdminReply:
    """Collects the first ``<repl-result>`` of an admin-socket stream (expat, incremental)."""

    def __init__(self) -> None:
        self.parser = xml.parsers.expat.ParserCreate()
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._chars
        self.depth = 0
        self.current: str | None = None
        self.text: list[str] = []
        self.output: list[str] = []
        self.result: tuple[bool, str] | None = None
        self.result_type = ""

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        if self.depth == 2:
            self.current = name
            self.text = []
            self.result_type = attrs.get("type", "")

    def _end(self, name: str) -> None:
        if self.depth == 2:
            text = "".join(self.text)
            if name == "repl-result":
                self.result = (self.result_type != "error", text)
            elif name == "repl-output":
                self.output.append(text)
            self.current = None
        self.depth -= 1

    def _chars(self, data: str) -> None:
        if self.current is not None:
            self.text.append(data)

    def feed(self, data: bytes) -> None:
        self.parser.Parse(data, False)


class ProsodyServer:
    """Prosody 0.12 in ``workdir``, listening on loopback ports chosen once.

    :param workdir: directory for config, certificates, data and logs (created if missing)
    :param domain: main VirtualHost
    :param password_hash: ``"SHA-256"`` (SCRAM-SHA-256 offered) or ``"SHA-1"`` (SCRAM-SHA-1)
    :param storage: ``"internal"`` (files) or ``"sql"`` (SQLite in the data directory)
    :param log_level: minimal level written to ``prosody.log``; ``SAT_TEST_PROSODY_LOG`` overrides
    :param pubsub_admins: bare JIDs allowed to create nodes on ``pubsub.<domain>`` (only admins
        can, on Prosody's pubsub component)
    :param admins: server-wide admins (``admins`` option)
    :param smacks_hibernation_time: seconds a disconnected XEP-0198 session stays resumable
    :param extra_global: more global options (Python values rendered as Lua)
    :param extra_host: more options for the main VirtualHost
    :param extra_modules: more modules for the main VirtualHost
    :param minimal: only the modules needed to log in and exchange messages (for benchmarks):
        no archive, no PEP, no components (so nothing listens on ``http_port``/``proxy_port``)
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        domain: str = "localhost",
        password_hash: str = "SHA-256",
        storage: str = "internal",
        log_level: str | None = None,
        pubsub_admins: Iterable[str] = (),
        admins: Iterable[str] = (),
        smacks_hibernation_time: int = 60,
        extra_global: Mapping[str, Any] | None = None,
        extra_host: Mapping[str, Any] | None = None,
        extra_modules: Iterable[str] = (),
        minimal: bool = False,
    ) -> None:
        if storage not in ("internal", "sql"):
            raise ValueError(f"unknown storage {storage!r}")
        self.workdir = Path(workdir).absolute()
        self._domain = domain
        self.password_hash = password_hash
        self.storage = storage
        self.log_level = os.environ.get("SAT_TEST_PROSODY_LOG") or log_level or "info"
        self.pubsub_admins = list(pubsub_admins)
        self.admins = list(admins)
        self.smacks_hibernation_time = smacks_hibernation_time
        self.extra_global = dict(extra_global or {})
        self.extra_host = dict(extra_host or {})
        self.extra_modules = list(extra_modules)
        self.minimal = minimal

        self.mismatch_domain = "mismatch.test"
        self.muc_domain = f"conference.{domain}"
        self.pubsub_domain = f"pubsub.{domain}"
        self.upload_domain = f"upload.{domain}"
        self.proxy_domain = f"proxy.{domain}"

        (
            self._c2s_port,
            self._direct_tls_port,
            self._http_port,
            self._proxy_port,
        ) = find_free_ports(4)

        self.certs_dir = self.workdir / "certs"
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "prosody.cfg.lua"
        self._log_path = self.workdir / "prosody.log"
        self.output_path = self.workdir / "prosody.out"
        self.pidfile_path = self.workdir / "prosody.pid"
        self.admin_socket_path = self.workdir / "prosody.sock"

        self._proc: subprocess.Popen[bytes] | None = None
        self._output_file = None
        self.ca: CA | None = None
        self.cert_path: Path | None = None
        self.key_path: Path | None = None
        self.accounts: dict[str, Account] = {}
        self._prepared = False

    # ---------------------------------------------------------------- properties

    @property
    def domain(self) -> str:
        return self._domain

    @property
    def host(self) -> str:
        """Address to connect to (always loopback)."""
        return LOOPBACK

    @property
    def c2s_port(self) -> int:
        """Client port with STARTTLS (RFC 6120)."""
        return self._c2s_port

    @property
    def direct_tls_port(self) -> int:
        """Client port with TLS from the first byte (XEP-0368)."""
        return self._direct_tls_port

    @property
    def http_port(self) -> int:
        """Plain HTTP port (serves the XEP-0363 upload component)."""
        return self._http_port

    @property
    def proxy_port(self) -> int:
        """SOCKS5 port of the XEP-0065 proxy (``proxy.<domain>``)."""
        return self._proxy_port

    @property
    def ca_cert_path(self) -> Path:
        self._prepare()
        assert self.ca is not None
        return self.ca.cert_path

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def pid(self) -> int | None:
        """PID of the running Prosody, or None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        return None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def http_base_url(self) -> str:
        return f"http://{LOOPBACK}:{self._http_port}/"

    def info(self) -> dict[str, Any]:
        """Everything a client needs, JSON-serialisable."""
        return {
            "domain": self.domain,
            "host": LOOPBACK,
            "c2s_port": self.c2s_port,
            "direct_tls_port": self.direct_tls_port,
            "http_port": self.http_port,
            "proxy_port": self.proxy_port,
            "ca_cert": str(self.ca_cert_path),
            "muc": self.muc_domain,
            "pubsub": self.pubsub_domain,
            "upload": self.upload_domain,
            "proxy": self.proxy_domain,
            "mismatch_domain": self.mismatch_domain,
            "workdir": str(self.workdir),
            "log": str(self.log_path),
            "pid": self.pid,
        }

    # ---------------------------------------------------------------- config

    def _prepare(self) -> None:
        if self._prepared:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        os.chmod(self.data_dir, 0o750)
        self.certs_dir.mkdir(exist_ok=True)
        (self.workdir / "no-certs").mkdir(exist_ok=True)
        self.ca = make_ca(self.certs_dir)
        names = [
            self.domain,
            self.muc_domain,
            self.pubsub_domain,
            self.upload_domain,
            self.proxy_domain,
        ]
        # basename "server" (not "localhost"): Prosody must not pick it up by name for
        # mismatch.test; it is configured explicitly as the global certificate instead
        self.cert_path, self.key_path = self.ca.issue(self.certs_dir, names, "server")
        self.config_path.write_text(self.render_config(), encoding="utf-8")
        self._prepared = True

    def render_config(self) -> str:
        """Text of ``prosody.cfg.lua``."""
        assert self.cert_path is not None and self.key_path is not None
        ssl = {"certificate": str(self.cert_path), "key": str(self.key_path)}
        glob: dict[str, Any] = {
            "pidfile": str(self.pidfile_path),
            "data_path": str(self.data_dir),
            # an empty directory: no automatic certificate discovery by host name
            "certificates": str(self.workdir / "no-certs"),
            "daemonize": False,
        }
        if os.geteuid() == 0:
            glob["run_as_root"] = True
        glob.update(
            {
                "interfaces": [LOOPBACK],
                "local_interfaces": [LOOPBACK],
                "c2s_ports": [self.c2s_port],
                "c2s_direct_tls_ports": [self.direct_tls_port],
                "c2s_interfaces": [LOOPBACK],
                "c2s_direct_tls_interfaces": [LOOPBACK],
                "s2s_ports": [],
                "s2s_direct_tls_ports": [],
                "s2s_interfaces": [],
                "http_ports": [self.http_port],
                "http_interfaces": [LOOPBACK],
                "https_ports": [],
                "https_interfaces": [],
                "proxy65_ports": [self.proxy_port],
                "proxy65_interfaces": [LOOPBACK],
                "admin_socket": str(self.admin_socket_path),
                # nothing may leave the machine: no server-to-server at all
                "modules_disabled": ["s2s", "s2s_auth_certs", "dialback", "s2s_bidi"],
                "network_settings": {"nagle": False},
                "ssl": ssl,
                "authentication": "internal_hashed",
                "password_hash": self.password_hash,
                "c2s_require_encryption": True,
                "s2s_require_encryption": True,
                "allow_registration": False,
                "storage": self.storage,
                "storage_archive_item_limit": 100000,
                "archive_expires_after": "never",
                "muc_log_expires_after": "never",
                # mod_limits is not loaded; the limits below only matter if a test loads it
                "limits": {
                    "c2s": {"rate": "100mb/s"},
                    "c2s_unauthed": {"rate": "100mb/s"},
                },
                "smacks_hibernation_time": self.smacks_hibernation_time,
                "c2s_stanza_size_limit": 1024 * 1024,
                "http_default_host": self.upload_domain,
                "log": [
                    {
                        "levels": {"min": self.log_level},
                        "to": "file",
                        "filename": str(self._log_path),
                    }
                ],
            }
        )
        if self.storage == "sql":
            glob["sql"] = {"driver": "SQLite3", "database": str(self.data_dir / "prosody.sqlite")}
        if self.admins:
            glob["admins"] = self.admins
        glob.update(self.extra_global)

        if self.minimal:
            modules = ["roster", "saslauth", "tls", "disco", "ping", "smacks"]
            modules += ["admin_socket", "admin_shell"]
        else:
            modules = list(DEFAULT_MODULES)
        modules += [m for m in self.extra_modules if m not in modules]
        glob["modules_enabled"] = modules

        lines = ["-- generated by tests/support/prosody.py; edits are overwritten\n"]
        lines.append(_lua_assignments(glob))
        lines.append(f"\nVirtualHost {_lua(self.domain)}\n")
        lines.append(_lua_assignments({"ssl": ssl, **self.extra_host}, "    "))
        lines.append(f"\nVirtualHost {_lua(self.mismatch_domain)}\n")
        lines.append("    -- no certificate of its own: clients get the localhost one\n")
        if not self.minimal:
            lines.append(f'\nComponent {_lua(self.muc_domain)} "muc"\n')
            lines.append(
                _lua_assignments(
                    {
                        "ssl": ssl,
                        "modules_enabled": ["muc_mam"],
                        "restrict_room_creation": False,
                        "max_history_messages": 50,
                    },
                    "    ",
                )
            )
            lines.append(f'\nComponent {_lua(self.pubsub_domain)} "pubsub"\n')
            pubsub_opts: dict[str, Any] = {"ssl": ssl, "pubsub_max_items": 10000}
            if self.pubsub_admins:
                # Prosody's pubsub service only lets admins (and the host) create nodes
                pubsub_opts["admins"] = self.pubsub_admins
            lines.append(_lua_assignments(pubsub_opts, "    "))
            lines.append(f'\nComponent {_lua(self.upload_domain)} "http_file_share"\n')
            lines.append(
                _lua_assignments(
                    {
                        "ssl": ssl,
                        "http_external_url": self.http_base_url,
                        "http_file_share_size_limit": 16 * 1024 * 1024,
                        "http_file_share_daily_quota": 1024 * 1024 * 1024,
                    },
                    "    ",
                )
            )
            lines.append(f'\nComponent {_lua(self.proxy_domain)} "proxy65"\n')
            lines.append(
                _lua_assignments(
                    {"ssl": ssl, "proxy65_address": LOOPBACK},
                    "    ",
                )
            )
        return "".join(lines)

    # ---------------------------------------------------------------- process

    def start(self, timeout: float = 10.0) -> None:
        """Start Prosody and wait until its client ports accept connections."""
        if self.running:
            return
        if not os.path.exists(PROSODY_BIN):
            raise ProsodyError(
                f"Prosody not found at {PROSODY_BIN}: install the 'prosody' package "
                "(or set SAT_TEST_PROSODY)"
            )
        self._prepare()
        with contextlib.suppress(FileNotFoundError):
            self.admin_socket_path.unlink()
        self._output_file = open(self.output_path, "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [PROSODY_BIN, "--config", str(self.config_path), "-F"],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._output_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _live_servers.add(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self._terminate()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = [self.c2s_port, self.direct_tls_port]
        if not self.minimal:
            waiting += [self.http_port, self.proxy_port]
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ProsodyError(
                    f"Prosody exited with code {self._proc.returncode} while starting\n"
                    + self.log_tail()
                )
            waiting = [p for p in waiting if not self._port_open(p)]
            if not waiting and self.admin_socket_path.exists():
                return
            if time.monotonic() > deadline:
                raise ProsodyError(
                    f"Prosody did not open ports {waiting} (or its admin socket) within "
                    f"{timeout} s\n" + self.log_tail()
                )
            time.sleep(0.02)

    @staticmethod
    def _port_open(port: int) -> bool:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM Prosody, wait for it, SIGKILL if it lingers."""
        self._terminate(timeout)

    def _terminate(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        _live_servers.discard(self)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._output_file is not None:
            self._output_file.close()
            self._output_file = None

    def restart(self, timeout: float = 10.0) -> None:
        """Stop then start again: same ports, same data, same certificates."""
        self.stop()
        self.start(timeout)

    def kill(self) -> None:
        """SIGKILL, no clean shutdown (for crash tests)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        self._terminate()

    def __enter__(self) -> ProsodyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        # last resort, so a crashed test session leaves no Prosody behind
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of Prosody's log and console output, for error messages."""
        parts = []
        for path in (self.output_path, self._log_path):
            try:
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except FileNotFoundError:
                continue
            parts.append(f"--- {path} (last {lines} lines) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts) or "(no Prosody output)"

    # ---------------------------------------------------------------- accounts

    def admin(self, command: str, timeout: float = 10.0) -> str:
        """Run one ``prosodyctl shell`` command (Lua syntax) on the running server.

        Returns the result text; raises ProsodyError if the command reports a failure.
        """
        if not self.running:
            raise ProsodyError("Prosody is not running")
        reply = _AdminReply()
        payload = (
            "<stream:stream xmlns='xmpp:prosody.im/admin' "
            "xmlns:stream='http://etherx.jabber.org/streams'>"
            f"<repl-input>{_xml_escape(command)}</repl-input>"
        ).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.admin_socket_path))
            sock.sendall(payload)
            while reply.result is None:
                data = sock.recv(65536)
                if not data:
                    break
                reply.feed(data)
            with contextlib.suppress(OSError):
                sock.sendall(b"</stream:stream>")
        if reply.result is None:
            raise ProsodyError(f"no reply from admin socket for {command!r}")
        ok, text = reply.result
        if not ok:
            raise ProsodyError(f"{command!r} failed: {text}")
        return text

    def register(self, user: str, password: str, host: str | None = None) -> Account:
        """Create an account (while running: admin socket; stopped: ``prosodyctl register``)."""
        host = host or self.domain
        if self.running:
            self.admin(f"user:create({_lua(f'{user}@{host}')}, {_lua(password)})")
        else:
            self._prepare()
            result = subprocess.run(
                [
                    PROSODYCTL_BIN,
                    "--config",
                    str(self.config_path),
                    "register",
                    user,
                    host,
                    password,
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if result.returncode != 0:
                raise ProsodyError(
                    f"prosodyctl register {user} {host} failed ({result.returncode}): "
                    f"{result.stdout}{result.stderr}"
                )
        account = Account(user, password, host)
        self.accounts[account.jid] = account
        return account

    def unregister(self, user: str, host: str | None = None) -> None:
        host = host or self.domain
        self.admin(f"user:delete({_lua(f'{user}@{host}')})")
        self.accounts.pop(f"{user}@{host}", None)

    def set_password(self, user: str, password: str, host: str | None = None) -> None:
        host = host or self.domain
        self.admin(f"user:password({_lua(f'{user}@{host}')}, {_lua(password)})")
        self.accounts[f"{user}@{host}"] = Account(user, password, host)


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
