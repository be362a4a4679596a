"""Daemon start-to-ready time, beside the cost of Python + Twisted's asyncio reactor alone.

    python bench/bench_startup.py [--runs 5]

Each run spawns the daemon as ``sat fg`` does (``python -m sat.launcher fg``) on a private
``dbus-daemon``, with its data in a temporary directory, and times it from the spawn until
``<pid_file>.ready`` holds its pid (written once storage, plugins and the D-Bus bridge are up:
the bus name is owned by then, which the script checks), then until it has exited after
SIGTERM. "fresh" runs start on an empty data directory (the database is created), "existing"
ones on the data directory of a previous run. The baselines are measured in the same run:
``python -c pass`` and ``python -c "import twisted.internet.asyncioreactor"``. Medians of
``--runs`` runs are printed (target: ready within 0.5 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.dbus import DBusDaemon  # noqa: E402

POLL = 0.001


def env_for(root: Path, bus_address: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SAT_", "DBUS_", "XDG_", "NOTIFY_", "JOURNAL_"))
    }
    env.update(
        HOME=str(root / "home"),
        XDG_RUNTIME_DIR=str(root / "run"),
        XDG_CONFIG_HOME=str(root / "home" / ".config"),
        XDG_DATA_HOME=str(root / "home" / ".local" / "share"),
        DBUS_SESSION_BUS_ADDRESS=bus_address,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    return env


def time_command(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def name_owned(address: str) -> bool:
    out = subprocess.run(
        [
            "dbus-send",
            f"--bus={address}",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner",
            "string:org.salutatoi.SAT",
        ],
        capture_output=True,
        text=True,
    ).stdout
    return "boolean true" in out


def time_daemon(root: Path, data_dir: Path, bus_address: str) -> tuple[float, float]:
    """(spawn -> ready, SIGTERM -> exited) of one daemon run."""
    pid_file = root / "run" / "sat" / "sat.pid"
    ready = Path(str(pid_file) + ".ready")
    args = [sys.executable, "-m", "sat.launcher", "fg", "--bus", bus_address]
    args += ["--data-dir", str(data_dir), "--pid-file", str(pid_file), "--log-level", "warning"]
    log = open(root / "daemon.log", "ab")  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        args, env=env_for(root, bus_address), stdin=subprocess.DEVNULL, stderr=log, cwd=root
    )
    try:
        while True:
            try:
                if ready.read_text().strip() == str(proc.pid):
                    break
            except FileNotFoundError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited with {proc.returncode}: see {root}/daemon.log")
            if time.perf_counter() - t0 > 30:
                raise SystemExit("the daemon was not ready within 30 s")
            time.sleep(POLL)
        ready_time = time.perf_counter() - t0
        if not name_owned(bus_address):
            raise SystemExit("ready, but org.salutatoi.SAT is not on the bus")
        t1 = time.perf_counter()
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
        stop_time = time.perf_counter() - t1
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    if proc.returncode != 0:
        raise SystemExit(f"the daemon exited with {proc.returncode}: see {root}/daemon.log")
    return ready_time, stop_time


def fmt(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):8.0f} {min(ms):8.0f} {max(ms):8.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sat-bench-startup-"))
    rows: list[tuple[str, list[float]]] = []
    try:
        with DBusDaemon(root / "bus") as bus:
            env = env_for(root, bus.address)
            rows.append(
                (
                    "python -c pass",
                    [time_command([sys.executable, "-c", "pass"], env) for _ in range(args.runs)],
                )
            )
            baseline = [sys.executable, "-c", "import twisted.internet.asyncioreactor"]
            rows.append(
                (
                    "baseline: import asyncioreactor",
                    [time_command(baseline, env) for _ in range(args.runs)],
                )
            )
            fresh, existing, stops = [], [], []
            for i in range(args.runs):
                run_root = root / f"run-{i}"
                (run_root / "run").mkdir(parents=True, mode=0o700)
                ready, stop = time_daemon(run_root, run_root / "data", bus.address)
                fresh.append(ready)
                ready, stop = time_daemon(run_root, run_root / "data", bus.address)
                existing.append(ready)
                stops.append(stop)
            rows.append(("daemon start -> ready (fresh data)", fresh))
            rows.append(("daemon start -> ready (existing data)", existing))
            rows.append(("daemon SIGTERM -> exited", stops))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"startup, {args.runs} runs each (ms)")
    print(f"{'':40} {'median':>8} {'min':>8} {'max':>8}")
    for name, values in rows:
        print(f"{name:40} {fmt(values)}")
    overhead = statistics.median(existing) - statistics.median(rows[1][1])
    print(f"{'daemon over the baseline (existing data)':40} {overhead * 1000:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
