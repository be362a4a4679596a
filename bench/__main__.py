"""``python -m bench [--quick] [--only NAME,...] [--json out.json] [--runs N]``

Starts its own Prosody (and dbus-daemon, daemons, baseline workers) on loopback, runs every
registered benchmark with a warm-up and N measured repetitions, prints the table (medians)
and writes the JSON report (``bench/results/<timestamp>.json`` unless ``--json`` says where).

Exit code: 0 when every benchmark ran (whatever the figures), 1 if one failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import runner


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of the SàT daemon, each beside a baseline measured in the same run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller loads, fewer runs (under 2 minutes)"
    )
    parser.add_argument("--only", default="", help="comma separated benchmark names")
    parser.add_argument("--json", dest="json_path", default=None, help="where to write the JSON")
    parser.add_argument(
        "--runs", type=int, default=None, help="measured runs per benchmark (3 quick, 5 full)"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (servers' logs, databases)"
    )
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # the reactor first: benchmarks import Twisted and the daemon's code
    from sat.core.reactor import install_asyncio_reactor

    reactor = install_asyncio_reactor()
    failures = runner.discover()
    runner.register_adapters()
    if args.list:
        for bench in runner.select(None):
            print(f"{bench.name:<12} {bench.description}  ({bench.module})")
        for module, error in failures.items():
            print(f"{module:<12} IMPORT FAILED: {error}")
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    try:
        chosen = runner.select(names)
    except KeyError as e:
        print(e.args[0], file=sys.stderr)
        return 2
    runs = args.runs or (3 if args.quick else 5)
    if runs < 1:
        print("--runs must be at least 1", file=sys.stderr)
        return 2
    workdir = runner.make_workdir()
    ctx = runner.Context(workdir, quick=args.quick, runs=runs)
    mode = "quick" if args.quick else "full"
    print(f"bench: {mode} mode, {runs} runs, work directory {workdir}", file=sys.stderr)
    outcome: dict = {}

    async def go():
        try:
            outcome["report"] = await runner.run_benchmarks(chosen, ctx, mode)
        finally:
            ctx.close()

    def start():
        import asyncio

        from twisted.internet import defer

        task = asyncio.ensure_future(go())
        outcome["task"] = task

        def finished(t):
            if not t.cancelled() and t.exception() is not None:
                outcome["error"] = t.exception()
            from twisted.internet.error import ReactorNotRunning

            try:
                reactor.stop()
            except ReactorNotRunning:  # already shutting down (signal)
                pass

        def before_shutdown():
            # SIGTERM or Ctrl-C: cancel the benchmark so its clean-up (daemons, workers,
            # servers) runs before the loop stops; bounded by a 20 s wait
            if task.done():
                return None
            outcome["interrupted"] = True
            task.cancel()
            waiting = asyncio.ensure_future(asyncio.wait({task}, timeout=20))
            return defer.Deferred.fromFuture(waiting)

        task.add_done_callback(finished)
        reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)

    reactor.callWhenRunning(start)
    try:
        reactor.run()
    finally:
        ctx.close()
        if not args.keep:
            runner.remove_workdir(workdir)
    if "error" in outcome:
        raise outcome["error"]
    if "report" not in outcome:
        print("bench: interrupted, nothing to report", file=sys.stderr)
        return 130
    report = outcome["report"]
    if not names:
        for module, error in failures.items():
            report.errors[module] = f"import failed: {error}"
    print()
    print(runner.format_table(report.results, report.errors))
    if args.markdown:
        print()
        print(runner.format_markdown(report.results))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(args.json_path) if args.json_path else runner.RESULTS_DIR / f"{stamp}.json"
    runner.write_json(report, path)
    print(f"\n{mode} run: {report.total_seconds:.0f} s; JSON written to {path}")
    if args.keep:
        print(f"work directory kept: {workdir}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
