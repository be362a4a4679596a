"""Pieces shared by the benchmarks: baselines clients, workers, processes, statistics.

Nothing here imports Twisted or the daemon at module level: the worker processes started with
``python -m bench.common <worker>`` (bare slixmpp, raw sockets) must carry no other library, so
their memory and speed are those of the baseline alone.

- :class:`RawXMPP`: a blocking XMPP client on a plain ``socket`` + ``ssl`` (STARTTLS, SASL
  PLAIN over TLS, resource binding; nothing else). Used as the flood sender and as the raw
  receiver, the physical limit of what a client on this machine can get out of the server.
- :class:`Worker`: a baseline worker in its own process, driven by lines on stdin/stdout.
- :class:`BenchDaemon`: the real daemon (``tests.support.daemon.SatDaemon``) with logging at
  ``info`` (the tests' ``debug`` would be measured too) plus helpers to create and connect
  profiles over the bridge.
- small helpers: :func:`median`, :func:`percentile`, :func:`rss_kb`, :func:`await_twisted`.

Worker protocol (one JSON object per line on stdout; commands on stdin):

- ``python -m bench.common slix-recv CONFIG``: prints ``{"ready": full_jid}``; then on
  ``expect N`` answers ``{"armed": N}`` and, once N flood messages arrived,
  ``{"done": N, "first": t, "last": t}`` (``time.monotonic()``, which on Linux is one clock for
  every process of the machine).
- ``python -m bench.common raw-recv CONFIG``: the same with :class:`RawXMPP`.
- ``python -m bench.common slix-idle CONFIG``: connects ``CONFIG["count"]`` slixmpp clients,
  prints ``{"ready": [jids]}`` and waits for ``quit``.

CONFIG is a JSON object: host, port, domain, ca_file, accounts ([user, password] pairs),
resource.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import json
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

#: every flood message body starts with this, so receivers count only the flood
FLOOD_PREFIX = "flood "
STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
)


# ---------------------------------------------------------------------------- statistics


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def rss_kb(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` of ``/proc/PID/status``), in kB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, all its threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each named process uses between :meth:`start` and :meth:`stop`.

    ``None`` as a pid means the calling thread (``time.thread_time``: call both ends from
    the same thread). Used to show where a
    flood's CPU goes (daemon, Prosody, dbus-daemon, the D-Bus client) on a machine whose
    cores are all shared by the parties of the benchmark.
    """

    def __init__(self, pids: dict[str, int | None]):
        self.pids = pids
        self._at: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _now(self, pid: int | None) -> float:
        return time.thread_time() if pid is None else cpu_seconds(pid)

    def start(self) -> CpuMeter:
        self._at = {name: self._now(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        self.used = {name: self._now(pid) - self._at[name] for name, pid in self.pids.items()}
        return self.used


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


def message_stanza(to: str, body: str, ident: str) -> str:
    return (
        f"<message to='{_xml_attr(to)}' type='chat' id='{ident}'>"
        f"<body>{_xml_text(body)}</body></message>"
    )


def flood_bytes(to: str, count: int, run: int = 0, filler: int = 60) -> bytes:
    """``count`` chat messages to ``to`` serialised in one buffer (built before timing)."""
    pad = "x" * filler
    return "".join(
        message_stanza(to, f"{FLOOD_PREFIX}{run}-{i} {pad}", f"f{run}-{i}") for i in range(count)
    ).encode()


def _xml_attr(text: str) -> str:
    return _xml_text(text).replace("'", "&apos;").replace('"', "&quot;")


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------------- raw XMPP client


class RawXMPPError(RuntimeError):
    pass


class RawXMPP:
    """A minimal blocking XMPP client on a TLS socket, for floods and physical limits.

    It does exactly what the server requires (STARTTLS, SASL PLAIN over TLS, bind), parses
    nothing (the few replies it waits for are found by substring) and sends bytes built in
    advance.
    """

    def __init__(
        self,
        host: str,
        port: int,
        domain: str,
        user: str,
        password: str,
        ca_file: str,
        resource: str = "raw",
    ):
        self.host, self.port, self.domain = host, port, domain
        self.user, self.password, self.ca_file = user, password, ca_file
        self.resource = resource
        self.sock: socket.socket | ssl.SSLSocket | None = None
        self.buffer = b""
        self.jid: str | None = None

    # --- set-up -----------------------------------------------------------------

    def connect(self, timeout: float = 10.0, presence: bool = False) -> str:
        """Open the session; returns the bound full JID."""
        plain = socket.create_connection((self.host, self.port), timeout=timeout)
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = plain
        self._open_stream()
        self._read_until(b"</stream:features>")
        self._send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self._read_until(b"<proceed")
        context = ssl.create_default_context(cafile=self.ca_file)
        self.sock = context.wrap_socket(plain, server_hostname=self.domain)
        self.buffer = b""
        self._open_stream()
        self._read_until(b"</stream:features>")
        token = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        self._send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>".encode()
        )
        reply = self._read_until_any((b"<success", b"<failure"))
        if b"<failure" in reply:
            raise RawXMPPError(f"authentication failed for {self.user}: {reply[:200]!r}")
        self.buffer = b""
        self._open_stream()
        self._read_until(b"</stream:features>")
        self._send(
            b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            + f"<resource>{_xml_text(self.resource)}</resource>".encode()
            + b"</bind></iq>"
        )
        reply = self._read_until(b"</iq>")
        match = re.search(rb"<jid>([^<]+)</jid>", reply)
        if not match:
            raise RawXMPPError(f"no bound JID in {reply[:300]!r}")
        self.jid = match.group(1).decode()
        self.buffer = b""
        if presence:
            self._send(b"<presence/>")
        self.sock.settimeout(None)
        return self.jid

    def _open_stream(self) -> None:
        self._send(STREAM_HEADER.format(domain=self.domain).encode())

    def _send(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def _recv(self) -> bytes:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise RawXMPPError("connection closed by the server")
        return data

    def _read_until(self, marker: bytes) -> bytes:
        return self._read_until_any((marker,))

    def _read_until_any(self, markers: Sequence[bytes]) -> bytes:
        while not any(m in self.buffer for m in markers):
            self.buffer += self._recv()
        data, self.buffer = self.buffer, b""
        return data

    # --- use --------------------------------------------------------------------------

    def send_raw(self, data: bytes, chunk: int = 65536, timeout: float = 60.0) -> None:
        """Send ``data``; fails if the server stops reading for ``timeout`` seconds."""
        assert self.sock is not None
        view = memoryview(data)
        self.sock.settimeout(timeout)
        try:
            for start in range(0, len(data), chunk):
                self.sock.sendall(view[start : start + chunk])
        finally:
            self.sock.settimeout(None)

    def count(self, marker: bytes, wanted: int, timeout: float) -> tuple[float, float]:
        """Read until ``marker`` was seen ``wanted`` times; (first, last) monotonic times."""
        assert self.sock is not None
        self.sock.settimeout(timeout)
        seen, tail, first = 0, b"", 0.0
        deadline = time.monotonic() + timeout
        try:
            while seen < wanted:
                if time.monotonic() > deadline:
                    raise RawXMPPError(f"only {seen}/{wanted} messages within {timeout} s")
                data = tail + self._recv()
                found = data.count(marker)
                if found and not seen:
                    first = time.monotonic()
                seen += found
                # a marker cut in two by a read is completed by the next one
                tail = data[-(len(marker) - 1) :]
        finally:
            self.sock.settimeout(None)
        return first, time.monotonic()

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.sendall(b"</stream:stream>")
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


# ---------------------------------------------------------------------------- slixmpp helpers


def make_slixmpp(jid: str, password: str, ca_file: str):
    """A bare slixmpp client: no plugin, no roster fetch, certificate verified with our CA."""
    import slixmpp

    xmpp = slixmpp.ClientXMPP(jid, password)
    xmpp.ca_certs = ca_file
    # STARTTLS on the plain port, as our client does (slixmpp tries direct TLS first)
    xmpp.enable_direct_tls = False
    xmpp.enable_starttls = True
    return xmpp


async def slixmpp_connect(xmpp, host: str, port: int, timeout: float = 15.0) -> None:
    """Connect a slixmpp client and wait for ``session_start``."""

    started: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_start(_event):
        if not started.done():
            started.set_result(None)

    def on_failure(event):
        if not started.done():
            started.set_exception(RuntimeError(f"slixmpp connection failed: {event}"))

    xmpp.add_event_handler("session_start", on_start)
    xmpp.add_event_handler("failed_auth", on_failure)
    xmpp.add_event_handler("connection_failed", on_failure)
    try:
        xmpp.connect(host, port)
        await asyncio.wait_for(started, timeout)
    finally:
        xmpp.del_event_handler("session_start", on_start)
        xmpp.del_event_handler("failed_auth", on_failure)
        xmpp.del_event_handler("connection_failed", on_failure)


async def slixmpp_disconnect(xmpp, timeout: float = 5.0) -> None:

    with contextlib.suppress(asyncio.TimeoutError, Exception):
        await asyncio.wait_for(xmpp.disconnect(wait=0.5), timeout)
    # its output filter task is cancelled by the disconnection: let it finish now
    task = getattr(xmpp, "_run_out_filters", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


# ---------------------------------------------------------------------------- Twisted glue


async def await_twisted(value: Any) -> Any:
    """Await, from an asyncio task, a Deferred or a Twisted-driven coroutine."""
    import inspect

    from twisted.internet import defer

    if inspect.iscoroutine(value):
        value = defer.ensureDeferred(value)
    if isinstance(value, defer.Deferred):
        return await value.asFuture(asyncio.get_running_loop())
    return value


# ---------------------------------------------------------------------------- workers


class Worker:
    """A baseline in its own process (``python -m bench.common KIND CONFIG``)."""

    def __init__(self, kind: str, config: dict, workdir: Path):
        self.kind = kind
        self.config = config
        self.workdir = Path(workdir)
        self.process: subprocess.Popen | None = None
        self.ready: Any = None
        _workers.add(self)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, timeout: float = 20.0) -> Worker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.common", self.kind, json.dumps(self.config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.workdir / f"{self.kind}.stderr", "ab"),  # noqa: SIM115
            cwd=REPO_ROOT,
            env=env,
        )
        reply = await self.read(timeout)
        if "ready" not in reply:
            raise RuntimeError(f"{self.kind} worker said {reply!r}")
        self.ready = reply["ready"]
        return self

    def send(self, line: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    async def read(self, timeout: float) -> dict:

        assert self.process is not None and self.process.stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), timeout)
        except TimeoutError:
            raise RuntimeError(
                f"{self.kind} worker silent for {timeout} s: {self.stderr_tail()}"
            ) from None
        if not line:
            raise RuntimeError(f"{self.kind} worker exited: {self.stderr_tail()}")
        return json.loads(line)

    def stderr_tail(self, lines: int = 15) -> str:
        path = self.workdir / f"{self.kind}.stderr"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.stdin.write(b"quit\n")
                proc.stdin.flush()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _worker_raw_recv(config: dict) -> None:
    user, password = config["accounts"][0]
    client = RawXMPP(
        config["host"],
        config["port"],
        config["domain"],
        user,
        password,
        config["ca_file"],
        config.get("resource", "raw"),
    )
    _emit({"ready": client.connect()})
    marker = b"</message>"
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "expect":
            wanted = int(words[1])
            _emit({"armed": wanted})
            first, last = client.count(marker, wanted, float(config.get("timeout", 120)))
            _emit({"done": wanted, "first": first, "last": last})
    client.close()


def _worker_slix(config: dict, idle: bool) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    resource = config.get("resource", "slix")
    clients = [
        make_slixmpp(f"{user}@{config['domain']}/{resource}", password, config["ca_file"])
        for user, password in config["accounts"]
    ]
    state = {"wanted": 0, "seen": 0, "first": 0.0}

    def on_message(msg):
        if not msg["body"].startswith(FLOOD_PREFIX):
            return
        state["seen"] += 1
        if state["seen"] == 1:
            state["first"] = time.monotonic()
        if state["seen"] == state["wanted"]:
            _emit({"done": state["wanted"], "first": state["first"], "last": time.monotonic()})

    async def main():
        for xmpp in clients:
            await slixmpp_connect(xmpp, config["host"], config["port"])
        if not idle:
            clients[0].add_event_handler("message", on_message)
        jids = [str(c.boundjid.full) for c in clients]
        _emit({"ready": jids if idle else jids[0]})
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode()
            words = line.split()
            if not words or words[0] == "quit":
                break
            if words[0] == "expect":
                state.update(wanted=int(words[1]), seen=0, first=0.0)
                _emit({"armed": state["wanted"]})
        for xmpp in clients:
            await slixmpp_disconnect(xmpp)

    loop.run_until_complete(main())


def worker_main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m bench.common raw-recv|slix-recv|slix-idle CONFIG\n")
        return 2
    kind, config = argv[0], json.loads(argv[1])
    if kind == "raw-recv":
        _worker_raw_recv(config)
    elif kind == "slix-recv":
        _worker_slix(config, idle=False)
    elif kind == "slix-idle":
        _worker_slix(config, idle=True)
    else:
        sys.stderr.write(f"unknown worker {kind!r}\n")
        return 2
    return 0


# ---------------------------------------------------------------------------- the daemon


def server_config(server, accounts: Sequence, resource: str = "bench", **extra) -> dict:
    """Worker CONFIG for ``server`` (a ProsodyServer) and ``accounts`` (Account objects)."""
    return {
        "host": server.host,
        "port": server.c2s_port,
        "domain": server.domain,
        "ca_file": str(server.ca_cert_path),
        "accounts": [[a.user, a.password] for a in accounts],
        "resource": resource,
        **extra,
    }


#: daemons and workers started by this process, stopped at exit if a benchmark could not
_daemons: weakref.WeakSet = weakref.WeakSet()
_workers: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for daemon in list(_daemons):
        with contextlib.suppress(Exception):
            daemon.kill()
    for worker in list(_workers):
        with contextlib.suppress(Exception):
            worker.stop(timeout=2)


def bench_daemon(workdir: Path, bus_address: str, ca_file: str):
    """The real daemon (SatDaemon of the test support) logging at ``info``."""
    from tests.support.daemon import SatDaemon

    class BenchSatDaemon(SatDaemon):
        def env(self) -> dict:
            env = super().env()
            env["SAT_CORE_LOG_LEVEL"] = "info"
            return env

    daemon = BenchSatDaemon(workdir, bus_address, ca_file)
    _daemons.add(daemon)
    return daemon


async def create_profiles(bridge, server, accounts: Sequence, prefix: str = "p") -> list[str]:
    """One profile per account (connection to ``server``), named ``prefix0``, ``prefix1``..."""
    names = []
    for i, account in enumerate(accounts):
        name = f"{prefix}{i}"
        await bridge.profile_create(
            name,
            account.jid,
            account.password,
            "",
            {"host": server.host, "port": server.c2s_port},
        )
        names.append(name)
    return names


class DaemonSession:
    """The real daemon on the context's private bus, a bridge client, and profiles.

    ``await DaemonSession.open(ctx, "name", accounts, connect=k)`` starts the daemon, creates
    one profile per account (``name0``, ``name1``...) and connects the first ``k`` of them.
    """

    def __init__(self, daemon, bridge, server):
        self.daemon = daemon
        self.bridge = bridge
        self.server = server
        self.profiles: list[str] = []
        self.start_seconds = 0.0

    @classmethod
    async def open(cls, ctx, name: str, accounts: Sequence, connect: int = 0, server=None):
        from sat_frontends.bridge.dbus_client import DBusBridgeClient

        server = server or ctx.prosody()
        bus = ctx.bus()
        daemon = bench_daemon(ctx.dir(name), bus.address, str(server.ca_cert_path))
        t0 = time.monotonic()
        daemon.start(timeout=30)
        start_seconds = time.monotonic() - t0
        try:
            bridge = await DBusBridgeClient.connect(bus.address, wait=10, timeout=60)
        except BaseException:
            daemon.stop()
            raise
        session = cls(daemon, bridge, server)
        session.start_seconds = start_seconds
        try:
            session.profiles = await create_profiles(bridge, server, accounts, prefix=name)
            for profile in session.profiles[:connect]:
                await bridge.profile_connect(profile, "")
        except BaseException:
            await session.close()
            raise
        return session

    @property
    def pid(self) -> int:
        return self.daemon.pid

    def log_errors(self, limit: int = 3) -> list[str]:
        """The first ``limit`` ERROR records of the daemon's log, each with its last line."""
        path = self.daemon.log_path
        if not path.exists():
            return []
        found: list[list[str]] = []
        for line in path.read_text(errors="replace").splitlines():
            if re.match(r"\d{4}-\d\d-\d\d ", line):
                if len(found) >= limit and " ERROR " in line:
                    break
                if " ERROR " in line:
                    found.append([line.split(" ERROR ", 1)[1].strip()])
                elif found and len(found[-1]) == 1:
                    found[-1].append("")
            elif found and line.strip():
                found[-1][1:] = [line.strip()]
        return [" / ".join(part for part in record if part) for record in found[:limit]]

    async def full_jid(self, profile: str) -> str:
        return (await self.bridge.profile_info_get(profile))["full_jid"]

    async def close(self, kill: bool = False) -> float:
        """Stop the daemon (SIGTERM, clean shutdown; SIGKILL when ``kill``): seconds taken."""
        with contextlib.suppress(Exception):
            await self.bridge.close()
        t0 = time.monotonic()
        if kill:
            self.daemon.kill()
        else:
            await asyncio.to_thread(self.daemon.stop)
        return time.monotonic() - t0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
