#!/usr/bin/env python3
"""Bridge benchmark: our D-Bus server beside a bare dbus-fast service, on a private bus.

What runs:

- a private ``dbus-daemon`` (unix socket in a temporary directory);
- "ours": the test backend (``python -m tests.support.dbus serve ADDRESS --echo-only``): a
  :class:`sat.bridge.contract.Bridge` declaring ``Echo(s) -> s``, served by
  :mod:`sat.bridge.dbus_server` on Twisted's asyncio reactor;
- "baseline": this script in ``--role baseline``: a plain dbus-fast ``ServiceInterface`` whose
  ``Echo(s) -> s`` method is declared with dbus-fast's decorator, on a bare asyncio loop;
- the client: this process, sending raw dbus-fast method calls, the same for both servers
  (plus one informational row through our ``DBusBridgeClient``).

Measured, over several interleaved runs (median reported): calls/s with 64 calls in flight,
and the latency of sequential calls (p50, p99). Targets: ours >= 5,000 calls/s with 64 in
flight and within 25 % of the bare service.

    python bench/bench_bridge.py [--runs 5] [--seconds 2] [--latency-calls 2000] [--check]
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from dbus_fast import Message, MessageType  # noqa: E402
from dbus_fast.aio import MessageBus  # noqa: E402

OURS_NAME = "org.salutatoi.SAT"
BASELINE_NAME = "org.salutatoi.SATBaseline"
PATH = "/org/salutatoi/SAT/bridge"
INTERFACE = "org.salutatoi.SAT.core"


# ---------------------------------------------------------------------------- baseline server


def run_baseline(address: str) -> None:
    from dbus_fast.service import ServiceInterface, method

    class EchoInterface(ServiceInterface):
        def __init__(self):
            super().__init__(INTERFACE)

        @method()
        def Echo(self, value: "s") -> "s":  # noqa: F821, N802 (dbus-fast signature syntax)
            return value

    async def serve():
        bus = await MessageBus(bus_address=address).connect()
        bus.export(PATH, EchoInterface())
        await bus.request_name(BASELINE_NAME)
        sys.stdout.write(f"READY {bus.unique_name}\n")
        sys.stdout.flush()
        await bus.wait_for_disconnect()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


class BaselineProcess:
    def __init__(self, address: str):
        self.address = address
        self.process = None

    def __enter__(self):
        import subprocess

        from tests.support.dbus import _read_line

        self.process = subprocess.Popen(
            [sys.executable, __file__, "--role", "baseline", "--address", self.address],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        line = _read_line(self.process, 30, "baseline service")
        assert line.startswith("READY"), line
        return self

    def __exit__(self, *exc):
        from tests.support.dbus import _stop_pid

        _stop_pid(self.process)
        self.process.stdout.close()


# ---------------------------------------------------------------------------- measurements


def echo_message(destination: str, text: str) -> Message:
    return Message(
        destination=destination,
        path=PATH,
        interface=INTERFACE,
        member="Echo",
        signature="s",
        body=[text],
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(
    bus: MessageBus, destination: str, inflight: int, seconds: float
) -> tuple[float, int]:
    """Calls per second with ``inflight`` calls outstanding at any time, and the call count."""
    stop = time.perf_counter() + seconds
    count = 0

    async def worker(n):
        nonlocal count
        text = f"ping {n}"
        while time.perf_counter() < stop:
            reply = await bus.call(echo_message(destination, text))
            if reply.message_type is not MessageType.METHOD_RETURN or reply.body[0] != text:
                raise RuntimeError(f"bad reply {reply}")
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(inflight)))
    return count / (time.perf_counter() - start), count


async def latency(bus: MessageBus, destination: str, calls: int) -> tuple[float, float]:
    """p50 and p99 of sequential calls, in microseconds."""
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        reply = await bus.call(echo_message(destination, "ping"))
        samples.append((time.perf_counter() - start) * 1e6)
        if reply.message_type is not MessageType.METHOD_RETURN:
            raise RuntimeError(f"bad reply {reply}")
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


async def client_throughput(address: str, inflight: int, seconds: float) -> float:
    """Calls per second through our DBusBridgeClient (client-side conversion included)."""
    from sat_frontends.bridge.dbus_client import DBusBridgeClient

    client = await DBusBridgeClient.connect(address)
    stop = time.perf_counter() + seconds
    count = 0

    async def worker():
        nonlocal count
        while time.perf_counter() < stop:
            await client.echo("ping")
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    elapsed = time.perf_counter() - start
    await client.close()
    return count / elapsed


async def measure(address: str, args, pids: dict[str, int]) -> dict[str, dict[str, list[float]]]:
    bus = await MessageBus(bus_address=address).connect()
    results = {
        name: {"tput": [], "p50": [], "p99": [], "cpu": [], "client": []}
        for name in ("ours", "baseline")
    }
    targets = {"ours": OURS_NAME, "baseline": BASELINE_NAME}
    # warm-up (imports, caches, connection setup)
    for destination in targets.values():
        await throughput(bus, destination, args.inflight, 0.3)
    for run in range(args.runs):
        order = ["ours", "baseline"] if run % 2 == 0 else ["baseline", "ours"]
        for name in order:
            cpu_before = cpu_seconds(pids[name])
            tput, count = await throughput(bus, targets[name], args.inflight, args.seconds)
            results[name]["cpu"].append((cpu_seconds(pids[name]) - cpu_before) / count * 1e6)
            p50, p99 = await latency(bus, targets[name], args.latency_calls)
            results[name]["tput"].append(tput)
            results[name]["p50"].append(p50)
            results[name]["p99"].append(p99)
        results["ours"]["client"].append(
            await client_throughput(address, args.inflight, args.seconds)
        )
        print(
            f"run {run + 1}/{args.runs}: ours {results['ours']['tput'][-1]:,.0f}/s, "
            f"baseline {results['baseline']['tput'][-1]:,.0f}/s",
            file=sys.stderr,
        )
    bus.disconnect()
    return results


def report(results, args) -> bool:
    med = statistics.median
    ours, base = results["ours"], results["baseline"]
    rows = [
        (f"calls/s, {args.inflight} in flight", med(ours["tput"]), med(base["tput"]), True),
        ("sequential latency p50 (µs)", med(ours["p50"]), med(base["p50"]), False),
        ("sequential latency p99 (µs)", med(ours["p99"]), med(base["p99"]), False),
        ("server CPU per call (µs)", med(ours["cpu"]), med(base["cpu"]), False),
    ]
    print()
    print(f"{'metric':<34} {'ours':>10} {'baseline':>10} {'ratio':>7}")
    print("-" * 64)
    for label, mine, theirs, _ in rows:
        print(f"{label:<34} {mine:>10,.0f} {theirs:>10,.0f} {mine / theirs:>7.2f}")
    client = med(ours["client"])
    print(f"{'calls/s via DBusBridgeClient':<34} {client:>10,.0f} {'-':>10} {'':>7}")
    print()
    tput_ours, tput_base = rows[0][1], rows[0][2]
    ok_abs = tput_ours >= 5000
    ok_rel = tput_ours >= 0.75 * tput_base
    print(
        f"target ours >= 5,000 calls/s with {args.inflight} in flight: "
        f"{'met' if ok_abs else 'MISSED'} ({tput_ours:,.0f})"
    )
    print(
        f"target ours within 25% of bare dbus-fast: {'met' if ok_rel else 'MISSED'} "
        f"({tput_ours / tput_base:.0%} of baseline)"
    )
    print(
        f"(runs: {args.runs} x {args.seconds} s, {args.latency_calls} sequential calls each; "
        f"{os.cpu_count()} CPUs; client, bus and server share them)"
    )
    return ok_abs and ok_rel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["bench", "baseline"], default="bench")
    parser.add_argument("--address")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--latency-calls", type=int, default=2000)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.role == "baseline":
        run_baseline(args.address)
        return 0

    from tests.support.dbus import BackendProcess, DBusDaemon

    with DBusDaemon() as bus:
        with (
            BackendProcess(bus.address, args=["--echo-only"]) as ours,
            BaselineProcess(bus.address) as baseline,
        ):
            pids = {"ours": ours.pid, "baseline": baseline.process.pid}
            results = asyncio.run(measure(bus.address, args, pids))
    ok = report(results, args)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
