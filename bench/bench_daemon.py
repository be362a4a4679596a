"""The daemon process: start to ready, stop, and memory with 1 and 10 profiles connected.

``daemon``
    - start to ready and SIGTERM to exit: ``bench/bench_startup.py``'s ``time_daemon`` (spawn of
      ``python -m sat.launcher fg`` on the private bus until the ready file holds its pid;
      interpreter start included), on a fresh data directory (database created) then on the
      same one again (a restart), beside ``python -c "import twisted.internet.asyncioreactor"``
      (what any program on this event loop pays before doing anything) and ``python -c pass``;
    - RSS (``VmRSS`` of ``/proc/PID/status``) of the daemon with 1 profile connected, then
      with 10, beside a bare slixmpp process holding 1 (and 10) connections to the same
      Prosody. Profiles are created over the bridge, then connected one by one.
"""

from __future__ import annotations

import asyncio
import sys

from bench.common import DaemonSession, Worker, median, rss_kb, server_config
from bench.runner import Row, benchmark

PROFILES = 10


async def _settled_rss(pid: int, seconds: float = 0.5) -> int:
    """RSS after letting the process finish what it started (presence, disco...)."""
    await asyncio.sleep(seconds)
    return rss_kb(pid)


def _startup_times(ctx) -> dict[str, list[float]]:
    """ms: fresh and existing-data start to ready, stop, and the two interpreter floors."""
    from bench import bench_startup

    bus = ctx.bus()
    root = ctx.dir("startup")
    env = bench_startup.env_for(root, bus.address)
    reactor_import = [sys.executable, "-c", "import twisted.internet.asyncioreactor"]
    times: dict[str, list[float]] = {k: [] for k in ("fresh", "again", "stop", "pass", "import")}
    for run in ctx.repetitions():
        run_root = root / f"run-{run.index}"
        (run_root / "run").mkdir(parents=True, mode=0o700)
        fresh, _stop = bench_startup.time_daemon(run_root, run_root / "data", bus.address)
        again, stop = bench_startup.time_daemon(run_root, run_root / "data", bus.address)
        floor = bench_startup.time_command([sys.executable, "-c", "pass"], env)
        imports = bench_startup.time_command(reactor_import, env)
        if run.measured:
            for key, value in zip(times, (fresh, again, stop, floor, imports), strict=True):
                times[key].append(value * 1000)
    return times


@benchmark("daemon", order=50, timeout=(50.0, 240.0), description="start to ready, RSS")
async def bench_daemon_process(ctx) -> list[Row]:
    """Daemon start to ready and stop (bench_startup), RSS with 1 and 10 profiles vs slixmpp."""
    server = ctx.prosody()
    times = _startup_times(ctx)
    ctx.log(", ".join(f"{k} {median(v):.0f} ms" for k, v in times.items()))

    # --- memory -------------------------------------------------------------------------
    rss = {"ours1": [], "ours10": [], "slix1": [], "slix10": []}
    for i in range(min(ctx.runs, ctx.scale(1, 2))):
        accounts = [ctx.account(f"rss{i}-") for _ in range(PROFILES)]
        session = await DaemonSession.open(ctx, f"rss{i}-", accounts, connect=1)
        try:
            rss["ours1"].append(await _settled_rss(session.pid) / 1024)
            for profile in session.profiles[1:]:
                await session.bridge.profile_connect(profile, "")
            rss["ours10"].append(await _settled_rss(session.pid) / 1024)
        finally:
            # killed: a clean stop with 10 profiles is timed by the latency benchmark's
            # daemon (2 profiles) and would only add waiting here
            await session.close(kill=True)
        for count, key in ((1, "slix1"), (PROFILES, "slix10")):
            config = server_config(server, accounts[:count], resource=f"slix{i}")
            worker = await Worker("slix-idle", config, ctx.dir("w")).start(timeout=60)
            try:
                rss[key].append(await _settled_rss(worker.pid) / 1024)
            finally:
                worker.stop()
    ctx.log(", ".join(f"{k} {median(v):.1f} MB" for k, v in rss.items()))
    return [
        Row(
            "daemon start → ready (existing data)",
            times["again"],
            times["import"],
            "ms",
            target=500,
            higher_is_better=False,
            baseline_name="python -c 'import asyncioreactor'",
            note="spawn of `python -m sat.launcher fg` to its ready file (bench_startup)",
        ),
        Row(
            "daemon start → ready (fresh data dir)",
            times["fresh"],
            times["pass"],
            "ms",
            target=500,
            higher_is_better=False,
            baseline_name="python -c pass",
        ),
        Row(
            "daemon stop (SIGTERM → exit), no profile",
            times["stop"],
            None,
            "ms",
            higher_is_better=False,
        ),
        Row(
            "daemon RSS, 1 profile connected",
            rss["ours1"],
            rss["slix1"],
            "MB",
            target=60,
            higher_is_better=False,
            baseline_name="bare slixmpp process, 1 connection",
        ),
        Row(
            f"daemon RSS, {PROFILES} profiles connected",
            rss["ours10"],
            rss["slix10"],
            "MB",
            higher_is_better=False,
            baseline_name=f"bare slixmpp process, {PROFILES} connections",
        ),
    ]
