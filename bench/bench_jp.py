#!/usr/bin/env python3
"""Wall time of ``jp`` commands beside ``python -c pass``, measured in the same run.

    python bench/bench_jp.py [--runs 10] [--no-bytecode-cache]

Starts a private dbus-daemon, a Prosody and the real daemon with two connected profiles,
then times, round-robin (so a load change on the machine hits every command alike), each
command as a fresh process from spawn to exit:

- ``python -c pass``: the baseline, the cost of starting this Python at all (on this machine
  it includes the site-packages ``.pth`` files);
- ``jp profile list`` and ``jp message send`` (a real message to the other profile) through
  the console-script entry point (``from sat_frontends.jp.main import main``, what the
  ``jp`` script installed by pip runs), and ``jp profile list`` through
  ``python -m sat_frontends.jp``;
- a bare D-Bus client: ``asyncio`` + the bridge client + one ``ProfilesList`` call, the floor
  any Python frontend using the bridge client pays.

Medians of ``--runs`` runs after two warm-up rounds. Byte-code is cached (in a temporary
``PYTHONPYCACHEPREFIX``), as for an installed package; ``--no-bytecode-cache`` measures the
source tree with ``PYTHONDONTWRITEBYTECODE`` (every module compiled on every start).
The target is ≤ 0.15 s for ``jp profile list`` (the original system's CLI needs 0.85 s).

Also registered in the bench runner (``python -m bench --only jp``) when it is available.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

TARGET_PROFILE_LIST = 0.150

CONSOLE_SCRIPT = """\
import sys
from sat_frontends.jp.main import main
sys.exit(main())
"""

BARE_CLIENT = """\
import asyncio
from sat_frontends.bridge.dbus_client import DBusBridgeClient
async def go():
    bridge = await DBusBridgeClient.connect()
    await bridge.profiles_list()
    await bridge.close()
asyncio.run(go())
"""


def bench_env(bus_address: str, workdir: Path, bytecode_cache: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAT_", "JP_"))}
    env["SAT_BRIDGE_BUS"] = bus_address
    env["DBUS_SESSION_BUS_ADDRESS"] = bus_address
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    return env


def commands(workdir: Path, sender: str, recipient: str) -> dict[str, list[str]]:
    py = sys.executable
    script = workdir / "jp"
    script.write_text(CONSOLE_SCRIPT)
    bare = workdir / "bare_client.py"
    bare.write_text(BARE_CLIENT)
    return {
        "python -c pass": [py, "-c", "pass"],
        "jp profile list": [py, str(script), "profile", "list"],
        "jp message send": [py, str(script), "message", "send", "-p", sender, recipient, "{n}"],
        "python -m sat_frontends.jp profile list": [
            py,
            "-m",
            "sat_frontends.jp",
            "profile",
            "list",
        ],
        "bare client: connect + ProfilesList": [py, str(bare)],
    }


def measure(
    cmds: dict[str, list[str]], env: dict[str, str], runs: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds per run of each command, round-robin; warm-up rounds are dropped."""
    samples: dict[str, list[float]] = {name: [] for name in cmds}
    for i in range(warmup + runs):
        for name, argv in cmds.items():
            argv = [a.replace("{n}", f"bench message {i}") for a in argv]
            t0 = time.perf_counter()
            proc = subprocess.run(
                argv,
                env=env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            elapsed = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{name} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
                )
            if i >= warmup:
                samples[name].append(elapsed)
    return samples


def report(samples: dict[str, list[float]]) -> str:
    base = statistics.median(samples["python -c pass"])
    lines = [
        f"{'command':<42} {'median':>9} {'min':>9} {'- baseline':>11} {'x baseline':>11}",
    ]
    for name, values in samples.items():
        med = statistics.median(values)
        lines.append(
            f"{name:<42} {med * 1000:>7.1f}ms {min(values) * 1000:>7.1f}ms "
            f"{(med - base) * 1000:>9.1f}ms {med / base:>10.2f}x"
        )
    jp_list = statistics.median(samples["jp profile list"])
    verdict = "met" if jp_list <= TARGET_PROFILE_LIST else "MISSED"
    lines.append(
        f"target: jp profile list <= {TARGET_PROFILE_LIST * 1000:.0f} ms: {verdict} "
        f"({jp_list * 1000:.1f} ms; the original system's CLI: 850 ms)"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- standalone


def setup_stack(workdir: Path):
    """Bus, Prosody, the daemon and two connected profiles; returns (bus, server, daemon,
    sender profile, recipient JID)."""
    from tests.support.daemon import SatDaemon
    from tests.support.dbus import DBusDaemon
    from tests.support.prosody import ProsodyServer

    bus = DBusDaemon(workdir / "bus").start()
    server = ProsodyServer(workdir / "prosody", minimal=True, log_level="warn")
    server.start()
    daemon = SatDaemon(workdir / "daemon", bus.address, server.ca_cert_path)
    # benchmarks log at info (debug lines would be measured too)
    daemon.config_path.write_text(
        daemon.config_path.read_text().replace("log_level = debug", "log_level = info")
    )
    daemon.start(timeout=30)
    env = bench_env(bus.address, workdir)
    accounts = [server.register(user, f"{user}-pw") for user in ("jpbench-a", "jpbench-b")]
    for name, account in zip(("a", "b"), accounts, strict=True):
        for argv in (
            ["profile", "create", name, account.jid, "-x", account.password, "--host",
             server.host, "--port", str(server.c2s_port)],
            ["profile", "connect", "-p", name],
        ):  # fmt: skip
            subprocess.run(
                [sys.executable, "-m", "sat_frontends.jp", *argv],
                env=env,
                cwd=REPO_ROOT,
                check=True,
                stdout=subprocess.DEVNULL,
            )
    return bus, server, daemon, "a", accounts[1].jid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="measured runs (default: 10)")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="compile every module at every start (source tree with PYTHONDONTWRITEBYTECODE)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-jp-") as tmp:
        workdir = Path(tmp)
        bus, server, daemon, sender, recipient = setup_stack(workdir)
        try:
            env = bench_env(bus.address, workdir, not args.no_bytecode_cache)
            cmds = commands(workdir, sender, recipient)
            samples = measure(cmds, env, args.runs)
        finally:
            daemon.stop()
            server.stop()
            bus.stop()
    cache = "no byte-code cache" if args.no_bytecode_cache else "byte-code cached"
    print(f"jp wall time, {args.runs} runs, {cache}, {os.cpu_count()} CPUs, {sys.executable}")
    print(report(samples))
    return 0


# ---------------------------------------------------------------------------- bench runner

try:
    from bench.runner import Row, benchmark
except ImportError:  # run as a plain script without the runner
    benchmark = None

if benchmark is not None:

    @benchmark("jp", order=90, timeout=(90.0, 240.0), description="jp wall time vs python")
    async def jp_wall_time(ctx):
        import asyncio

        from bench.common import DaemonSession

        accounts = [ctx.account("jp"), ctx.account("jp")]
        session = await DaemonSession.open(ctx, "jp", accounts, connect=2)
        try:
            workdir = ctx.dir("jp-run")
            env = bench_env(ctx.bus().address, workdir)
            cmds = commands(workdir, session.profiles[0], accounts[1].jid)
            samples = await asyncio.to_thread(measure, cmds, env, max(ctx.runs, 5))
        finally:
            await session.close()
        base = [s * 1000 for s in samples["python -c pass"]]

        def ms(name):
            return [s * 1000 for s in samples[name]]

        return [
            Row("jp profile list", ms("jp profile list"), base, "ms",
                target=TARGET_PROFILE_LIST * 1000, higher_is_better=False,
                baseline_name="python -c pass"),
            Row("jp message send", ms("jp message send"), base, "ms",
                higher_is_better=False, baseline_name="python -c pass"),
            Row("bare bridge client call", ms("bare client: connect + ProfilesList"), base,
                "ms", higher_is_better=False, baseline_name="python -c pass"),
        ]  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
