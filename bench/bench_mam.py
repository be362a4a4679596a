"""MAM catch-up (XEP-0313): 10,000 archived messages, the daemon beside bare slixmpp.

Run it alone with ``python -m bench --only mam`` (``--quick``: 1,500 messages, fewer runs) or
``python -m bench.bench_mam [--quick] [--runs N]``.

What one run does, on a Prosody with MAM, SQL storage (in /dev/shm) and
``max_archive_query_results = 1000`` (no mod_offline: only the archive holds the messages):

1. a fresh account gets one "seed" message; its daemon profile connects once (its first
   sync stores the seed: the catch-up point) and disconnects;
2. a raw-socket sender floods N messages to that account while it is offline, then waits
   for a ping answer (the server handled everything before it);
3. ours: ``ProfileConnect`` → ``ProgressFinished`` of ``mam:<profile>:<jid>`` (wall time) and
   the daemon process's CPU time over the same span (``utime + stime`` of /proc/PID/stat:
   connection, TLS, parsing, hooks, SQLite on its own thread, D-Bus signals); the run checks
   that exactly N messages were stored;
4. baseline: a bare slixmpp client (its ``xep_0313`` plugin, ``iterate`` with pages of 1000
   after the seed's archive id), in a thread of this process with its own event loop: wall
   time from ``connect()`` to the last result, and that thread's CPU time. It only fetches
   (no storage), which is what a client without local history does.

Ours and the baseline alternate which goes first (the server's page cache is warm for the
second).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import RawXMPP, flood_bytes, median
from bench.runner import Row, benchmark

TARGET_SECONDS = 1.5
PAGE = 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ping_wait(sender: RawXMPP, tag: str) -> None:
    sender._send(
        f"<iq type='get' id='{tag}' to='{sender.domain}'><ping xmlns='urn:xmpp:ping'/></iq>".encode()
    )
    sender._read_until(tag.encode())


def _fill(sender: RawXMPP, to: str, count: int, run: int) -> float:
    """Flood ``count`` messages to ``to``; seconds until the server handled them all."""
    payload = flood_bytes(to, count, run)
    t0 = time.monotonic()
    sender.send_raw(payload)
    _ping_wait(sender, f"fill{run}")
    return time.monotonic() - t0


class _Progress:
    def __init__(self, bridge, job_id: str, pid: int | None = None):
        self.job_id = job_id
        self.pid = pid
        self.future: asyncio.Future | None = None
        self.updates = 0
        #: the daemon's CPU seconds when the catch-up started (ProgressStarted)
        self.cpu_at_start: float | None = None
        bridge.on("ProgressStarted", self._started)
        bridge.on("ProgressFinished", self._finished)
        bridge.on("ProgressUpdated", self._updated)
        bridge.on("ProgressError", self._error)

    def arm(self) -> asyncio.Future:
        self.future = asyncio.get_running_loop().create_future()
        self.updates = 0
        self.cpu_at_start = None
        return self.future

    def _started(self, profile, job_id, metadata=None, *rest):
        if job_id == self.job_id and self.pid is not None:
            self.cpu_at_start = cpu_seconds(self.pid)

    def _finished(self, profile, job_id, metadata):
        if job_id == self.job_id and self.future and not self.future.done():
            self.future.set_result((time.monotonic(), metadata))

    def _updated(self, profile, job_id, position, size):
        if job_id == self.job_id:
            self.updates += 1

    def _error(self, profile, job_id, error):
        if job_id == self.job_id and self.future and not self.future.done():
            self.future.set_exception(RuntimeError(f"catch-up failed: {error}"))


def _slixmpp_fetch(server, account, after_id: str, expected: int) -> tuple[float, float]:
    """(wall seconds, thread CPU seconds) for bare slixmpp to fetch the archive after an id."""
    import slixmpp

    box: dict = {}

    async def scenario():
        xmpp = slixmpp.ClientXMPP(f"{account.jid}/slix", account.password)
        xmpp.ca_certs = str(server.ca_cert_path)
        xmpp.enable_direct_tls = False
        xmpp.enable_starttls = True
        xmpp.register_plugin("xep_0313")
        cpu0 = time.thread_time()
        t0 = time.monotonic()
        started = asyncio.ensure_future(xmpp.wait_until("session_start", timeout=30))
        xmpp.connect(server.host, server.c2s_port)
        await started
        count = 0
        # no 'to': Prosody answers our own archive's queries without 'from', which is
        # what slixmpp's result matcher then expects
        async for _message in xmpp.plugin["xep_0313"].iterate(rsm={"max": PAGE, "after": after_id}):
            count += 1
        wall = time.monotonic() - t0
        cpu = time.thread_time() - cpu0
        if count != expected:
            raise RuntimeError(f"slixmpp fetched {count} messages, expected {expected}")
        await xmpp.disconnect(wait=1.0)
        box["result"] = (wall, cpu)

    def target():
        try:
            asyncio.run(asyncio.wait_for(scenario(), 300))
        except BaseException as e:  # handed back to the caller
            box["error"] = e

    thread = threading.Thread(target=target, name="slixmpp-mam", daemon=True)
    thread.start()
    thread.join(330)
    if "error" in box:
        raise box["error"]
    if "result" not in box:
        raise RuntimeError("slixmpp fetch did not finish")
    return box["result"]


def _archive_server(ctx):
    """Prosody with MAM on SQL storage, its data in memory (/dev/shm when there is one).

    Prosody commits (and fsyncs) every archived message: on a disk it archives ~50-200
    messages/s, in memory ~1,000/s, which is what makes a 10,000 message fill bearable.
    """
    from tests.support.prosody import ProsodyServer

    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    workdir = Path(tempfile.mkdtemp(prefix="sat-bench-mam-", dir=base))
    server = ProsodyServer(
        workdir / "prosody",
        minimal=True,
        log_level="warn",
        storage="sql",
        extra_modules=["mam"],
        extra_host={"max_archive_query_results": PAGE},
    )
    ctx.log(f"starting Prosody (MAM, SQL storage in {workdir})")
    server.start()
    return server


@benchmark("mam", order=50, timeout=(240.0, 900.0), description="MAM catch-up of 10,000 messages")
async def bench_mam(ctx) -> list[Row]:
    count = ctx.scale(1500, 10_000)
    server = _archive_server(ctx)
    try:
        return await _measure(ctx, server, count)
    finally:
        server.stop()
        shutil.rmtree(server.workdir.parent, ignore_errors=True)


async def _measure(ctx, server, count: int) -> list[Row]:
    from bench.common import DaemonSession

    runs = list(ctx.repetitions())
    accounts = [ctx.account("mamt", server=server) for _ in runs]
    sender_account = ctx.account("mams", server=server)
    sender = RawXMPP(
        server.host,
        server.c2s_port,
        server.domain,
        sender_account.user,
        sender_account.password,
        str(server.ca_cert_path),
    )
    await asyncio.to_thread(sender.connect)
    try:
        session = await DaemonSession.open(ctx, "mam", accounts, connect=0, server=server)
    except BaseException:
        await asyncio.to_thread(sender.close)
        raise
    bridge = session.bridge
    ours_wall: list[float] = []
    ours_cpu: list[float] = []
    catch_up_cpu: list[float] = []  # from ProgressStarted: without connection and unlock
    base_wall: list[float] = []
    base_cpu: list[float] = []
    fills: list[float] = []
    pages: list[int] = []
    try:
        for run, account, profile in zip(runs, accounts, session.profiles, strict=True):
            progress = _Progress(bridge, f"mam:{profile}:{account.jid}", session.pid)
            # 1. the seed, stored by a first sync: the catch-up starts after it
            seed = f"seed {run.index}"
            await asyncio.to_thread(
                sender.send_raw,
                f"<message to='{account.jid}' type='chat'><body>{seed}</body></message>".encode(),
            )
            await asyncio.to_thread(_ping_wait, sender, f"seed{run.index}")
            done = progress.arm()
            await bridge.profile_connect(profile, "")
            _t, meta = await asyncio.wait_for(done, 60)
            if meta["stored"] != 1:
                raise RuntimeError(f"first sync stored {meta['stored']} messages, expected 1")
            (seed_row,) = await bridge.history_get(profile, "", 10, {})
            seed_id = seed_row["stanza_id"]
            await bridge.profile_disconnect(profile)
            # 2. the flood, while the profile is offline
            fill = await asyncio.to_thread(_fill, sender, account.jid, count, run.index)
            ctx.log(f"run {run.index}: {count} messages archived in {fill:.1f} s")

            async def ours(progress=progress, profile=profile, run=run):
                done = progress.arm()
                cpu0 = cpu_seconds(session.pid)
                t0 = time.monotonic()
                await bridge.profile_connect(profile, "")
                t1, meta = await asyncio.wait_for(done, 300)
                cpu_end = cpu_seconds(session.pid)
                cpu = cpu_end - cpu0
                if meta["stored"] != count:
                    raise RuntimeError(f"catch-up stored {meta['stored']}, expected {count}")
                if progress.cpu_at_start is not None and run.measured:
                    catch_up_cpu.append(cpu_end - progress.cpu_at_start)
                return t1 - t0, cpu, meta["pages"]

            async def baseline(account=account, seed_id=seed_id):
                return await asyncio.to_thread(_slixmpp_fetch, server, account, seed_id, count)

            if run.index % 2:
                b_wall, b_cpu = await baseline()
                o_wall, o_cpu, o_pages = await ours()
            else:
                o_wall, o_cpu, o_pages = await ours()
                b_wall, b_cpu = await baseline()
            await bridge.profile_disconnect(profile)
            ctx.log(
                f"run {run.index}: ours {o_wall:.3f} s wall, {o_cpu:.3f} s CPU ({o_pages} "
                f"pages); slixmpp {b_wall:.3f} s wall, {b_cpu:.3f} s CPU"
            )
            if run.measured:
                ours_wall.append(o_wall)
                ours_cpu.append(o_cpu)
                base_wall.append(b_wall)
                base_cpu.append(b_cpu)
                fills.append(fill)
                pages.append(o_pages)
    finally:
        await asyncio.to_thread(sender.close)
        await session.close()
    note = (
        f"{count:,} messages after a known archive id, pages of {PAGE}; Prosody filled them "
        f"at {count / median(fills):,.0f} msg/s"
    )
    return [
        Row(
            f"MAM catch-up {count:,} msgs: daemon CPU",
            ours_cpu,
            base_cpu,
            "s",
            target=TARGET_SECONDS if count == 10_000 else None,
            higher_is_better=False,
            baseline_name="bare slixmpp xep_0313 fetch (no storage), thread CPU",
            note=note + "; ours: connect, parse, hooks, SQLite, signals",
        ),
        Row(
            f"MAM catch-up {count:,} msgs: daemon CPU from ProgressStarted",
            catch_up_cpu or None,
            base_cpu,
            "s",
            higher_is_better=False,
            baseline_name="bare slixmpp xep_0313 fetch (no storage), thread CPU",
            note="the catch-up alone: the row above also counts the connection (TLS, SCRAM) "
            "and the check of the profile password (scrypt, ~0.1 s)",
        ),
        Row(
            f"MAM catch-up {count:,} msgs: ProfileConnect → ProgressFinished",
            ours_wall,
            base_wall,
            "s",
            higher_is_better=False,
            baseline_name="bare slixmpp: connect → last result",
        ),
        Row(
            f"MAM catch-up {count:,} msgs: rate",
            [count / w for w in ours_wall],
            [count / w for w in base_wall],
            "msg/s",
            baseline_name="bare slixmpp",
        ),
    ]


if __name__ == "__main__":
    from bench.__main__ import main

    sys.exit(main(["--only", "mam", *sys.argv[1:]]))
