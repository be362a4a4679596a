"""The benchmark runner: registry, shared resources, table and JSON.

A benchmark is a function (plain or ``async``) taking a :class:`Context` and returning a list of
:class:`Row` (or of tuples ``(metric, ours, baseline, unit, target, higher_is_better)``).
It registers itself when its module is imported::

    from bench.runner import Row, benchmark

    @benchmark("transfer", order=80, description="file transfer MB/s")
    async def transfer(ctx):
        server = ctx.prosody()                       # shared minimal Prosody (no archiving)
        ours, base = [], []
        for run in ctx.repetitions():                # warm-up + ctx.runs measured runs
            ...
            if run.measured:
                ours.append(mb_per_s); base.append(raw_mb_per_s)
        return [Row("transfer, 10 MB file", ours, base, "MB/s", target=50,
                    baseline_name="raw socket")]

Modules ``bench/bench_*.py`` are imported by the runner (``python -m bench``); a module that
fails to import is reported as a failed benchmark, the others still run.

Values of a row may be a number or a list of samples (one per run): the table shows the
median, the JSON keeps the samples. ``ratio`` is always ``ours / baseline`` (so > 1 means
"ours is bigger": faster for a rate, slower for a latency). A ``target`` is either a number
(an absolute bound on *ours*: at least it when higher is better, at most it otherwise) or a
string ``"1.0x"`` (a bound on the ratio, in the same direction).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import math
import os
import pkgutil
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

# ---------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One line of the table."""

    metric: str
    ours: float | Sequence[float] | None
    baseline: float | Sequence[float] | None = None
    unit: str = ""
    #: absolute bound on ours (number) or bound on ours/baseline ("1.5x"); None: no target
    target: float | str | None = None
    higher_is_better: bool = True
    #: what the baseline is ("bare slixmpp", "raw socket", ...)
    baseline_name: str = ""
    note: str = ""

    @classmethod
    def of(cls, value: Row | Sequence) -> Row:
        if isinstance(value, Row):
            return value
        return cls(*value)


def _samples(value: float | Sequence[float] | None) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return [float(value)]
    values = [float(v) for v in value if v is not None]
    return values or None


def _central(samples: list[float] | None) -> float | None:
    return statistics.median(samples) if samples else None


def parse_target(target: float | str | None) -> tuple[str, float] | None:
    """``50`` -> ("abs", 50.0); ``"1.5x"`` / ``"≥0.75×"`` -> ("ratio", ...); None -> None."""
    if target is None:
        return None
    if isinstance(target, int | float):
        return ("abs", float(target))
    text = target.strip().lstrip("≤≥<>=").strip()
    if text.endswith(("x", "×")):
        return ("ratio", float(text[:-1]))
    return ("abs", float(text.replace(",", "")))


@dataclass
class Result:
    """A row evaluated: medians, ratio, target check."""

    benchmark: str
    metric: str
    unit: str
    ours: float | None
    baseline: float | None
    ratio: float | None
    target: float | str | None
    target_text: str
    met: bool | None
    higher_is_better: bool
    baseline_name: str
    note: str
    ours_samples: list[float] | None = None
    baseline_samples: list[float] | None = None


def evaluate(row: Row, benchmark: str = "") -> Result:
    ours_s, base_s = _samples(row.ours), _samples(row.baseline)
    ours, base = _central(ours_s), _central(base_s)
    ratio = ours / base if ours is not None and base else None
    spec = parse_target(row.target)
    met = None
    text = ""
    if spec is not None:
        kind, bound = spec
        sign = "≥" if row.higher_is_better else "≤"
        if kind == "abs":
            text = f"{sign} {fmt(bound)}" + (f" {row.unit}" if row.unit else "")
            value = ours
        else:
            text = f"{sign} {bound:g}× base"
            value = ratio
        if value is not None and not math.isnan(value):
            met = value >= bound if row.higher_is_better else value <= bound
    return Result(
        benchmark=benchmark,
        metric=row.metric,
        unit=row.unit,
        ours=ours,
        baseline=base,
        ratio=ratio,
        target=row.target,
        target_text=text,
        met=met,
        higher_is_better=row.higher_is_better,
        baseline_name=row.baseline_name,
        note=row.note,
        ours_samples=ours_s,
        baseline_samples=base_s,
    )


def fmt(value: float | None) -> str:
    """A number for the table: 3 significant digits, thousands separated."""
    if value is None:
        return "—"
    if math.isnan(value):
        return "nan"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    if size == 0:
        return "0"
    return f"{value:.3g}"


def _cell(value: float | None, unit: str) -> str:
    return fmt(value) + (f" {unit}" if value is not None and unit else "")


def format_table(results: Sequence[Result], errors: dict[str, str] | None = None) -> str:
    """The results as a fixed-width text table (plus a line per failed benchmark)."""
    headers = ("metric", "ours", "baseline", "ratio", "target", "met", "baseline is")
    lines = []
    for r in results:
        met = {True: "yes", False: "NO", None: ""}[r.met]
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        lines.append(
            (
                r.metric,
                _cell(r.ours, r.unit),
                _cell(r.baseline, r.unit),
                ratio,
                r.target_text,
                met,
                r.baseline_name,
            )
        )
    widths = [len(h) for h in headers]
    for line in lines:
        widths = [max(w, len(c)) for w, c in zip(widths, line, strict=True)]
    right = {1, 2, 3}

    def render(cells) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [render(headers), render(["-" * w for w in widths])]
    out += [render(line) for line in lines]
    for name, error in (errors or {}).items():
        out.append(f"!! {name}: FAILED: {error}")
    notes = [f"  [{r.metric}] {r.note}" for r in results if r.note]
    if notes:
        out.append("")
        out.append("notes:")
        out += notes
    return "\n".join(out)


def format_markdown(results: Sequence[Result]) -> str:
    """The results as a Markdown table (for bench/README.md)."""
    out = [
        "| metric | ours | baseline | ratio | target | met | baseline is |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for r in results:
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        out.append(
            f"| {r.metric} | {_cell(r.ours, r.unit)} | {_cell(r.baseline, r.unit)} | {ratio} "
            f"| {r.target_text} | {met} | {r.baseline_name} |"
        )
    return "\n".join(out)


# ---------------------------------------------------------------------------- registry


@dataclass
class Benchmark:
    name: str
    func: Callable[[Context], Any]
    description: str = ""
    #: position in the table (lower first)
    order: int = 100
    #: time limit for the benchmark, quick and full mode (seconds)
    timeout: tuple[float, float] = (60.0, 600.0)
    module: str = ""


REGISTRY: dict[str, Benchmark] = {}
#: in quick mode no benchmark may run longer than this (seconds), whatever it asks for, so a
#: hang in one cannot push ``--quick`` far past its 2 minutes
QUICK_CAP = 60.0


def register(
    name: str,
    func: Callable[[Context], Any],
    *,
    description: str = "",
    order: int = 100,
    timeout: tuple[float, float] = (60.0, 600.0),
) -> Benchmark:
    """Add a benchmark; a second registration of a name replaces the first."""
    bench = Benchmark(
        name,
        func,
        description or (inspect.getdoc(func) or "").split("\n")[0],
        order,
        timeout,
        getattr(func, "__module__", ""),
    )
    REGISTRY[name] = bench
    return bench


def benchmark(
    name: str,
    *,
    description: str = "",
    order: int = 100,
    timeout: tuple[float, float] = (60.0, 600.0),
) -> Callable:
    """Decorator form of :func:`register`."""

    def decorate(func):
        register(name, func, description=description, order=order, timeout=timeout)
        return func

    return decorate


def discover(package_dir: Path = BENCH_DIR, package: str = "bench") -> dict[str, str]:
    """Import every ``bench_*`` module of the package; returns {module: error} for failures."""
    failures = {}
    for info in sorted(pkgutil.iter_modules([str(package_dir)]), key=lambda i: i.name):
        if not info.name.startswith("bench_"):
            continue
        try:
            importlib.import_module(f"{package}.{info.name}")
        except Exception as e:  # a broken module must not hide the others
            failures[info.name] = f"{type(e).__name__}: {e}"
    return failures


# ---------------------------------------------------------------------------- context


@dataclass
class Run:
    index: int
    measured: bool


class Context:
    """What a benchmark gets: mode, repetitions, a work directory and shared servers."""

    def __init__(self, workdir: Path, quick: bool = False, runs: int = 3, log=None):
        self.workdir = Path(workdir)
        self.quick = quick
        self.runs = runs
        self.warmup = 1
        self.current: str = ""
        self._log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self._servers: dict[str, Any] = {}
        self._bus = None
        self._accounts = 0
        self._errors: dict[str, list[str]] = {}
        self.extra: dict[str, Any] = {}

    # --- mode -----------------------------------------------------------------

    def scale(self, quick: Any, full: Any) -> Any:
        """``quick`` in quick mode, ``full`` otherwise."""
        return quick if self.quick else full

    def repetitions(self, warmup: int | None = None) -> Iterator[Run]:
        """Warm-up runs (``measured`` False) then ``self.runs`` measured ones."""
        warm = self.warmup if warmup is None else warmup
        for i in range(warm + self.runs):
            yield Run(i, i >= warm)

    def error(self, text: str) -> None:
        """Record a failure of the current benchmark while letting it return its rows.

        The table shows it as a failure (and the exit code is 1), beside the figures that
        could still be measured.
        """
        self._errors.setdefault(self.current, []).append(text)
        self.log(f"FAILED: {text}")

    def errors_of(self, name: str) -> list[str]:
        return list(self._errors.get(name, ()))

    def log(self, text: str) -> None:
        self._log(f"  [{self.current}] {text}" if self.current else f"  {text}")

    def dir(self, name: str) -> Path:
        path = self.workdir / (self.current or "shared") / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- shared servers ------------------------------------------------------------

    def prosody(self):
        """The minimal Prosody (no archive, nagle off), started on first use."""
        return self._server("minimal", {})

    def prosody_archive(self):
        """A second Prosody with MAM (SQL storage, raised archive limits), for catch-up runs."""
        return self._server(
            "archive",
            {
                "storage": "sql",
                "extra_modules": ["mam"],
                "extra_host": {"max_archive_query_results": 1000},
            },
        )

    def _server(self, kind: str, options: dict):
        server = self._servers.get(kind)
        if server is None:
            from tests.support.prosody import ProsodyServer

            self._log(f"  starting Prosody ({kind})")
            server = ProsodyServer(
                self.workdir / f"prosody-{kind}", minimal=True, log_level="warn", **options
            )
            server.start()
            self._servers[kind] = server
        return server

    def account(self, prefix: str = "bench", server=None, password: str | None = None):
        """A fresh account on ``server`` (default: the minimal Prosody)."""
        server = server or self.prosody()
        self._accounts += 1
        user = f"{prefix}{self._accounts}"
        password = password or f"{user}-pw"
        server.register(user, password)
        return server.accounts.get(user) or _account(user, password, server.domain)

    def bus(self):
        """A private dbus-daemon (started on first use)."""
        if self._bus is None:
            from tests.support.dbus import DBusDaemon

            self._bus = DBusDaemon(self.workdir / "dbus").start()
        return self._bus

    def close(self) -> None:
        for server in self._servers.values():
            with contextlib.suppress(Exception):
                server.stop()
        self._servers.clear()
        if self._bus is not None:
            with contextlib.suppress(Exception):
                self._bus.stop()
            self._bus = None


def _account(user: str, password: str, domain: str):
    from tests.support.prosody import Account

    return Account(user, password, domain)


# ---------------------------------------------------------------------------- running


@dataclass
class Report:
    started: str
    mode: str
    runs: int
    results: list[Result] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    total_seconds: float = 0.0

    def to_json(self) -> dict:
        by_bench: dict[str, dict] = {}
        for name, seconds in self.durations.items():
            by_bench[name] = {"seconds": round(seconds, 3), "rows": []}
        for name, error in self.errors.items():
            by_bench.setdefault(name, {"rows": []})["error"] = error
        for r in self.results:
            by_bench.setdefault(r.benchmark, {"rows": []})["rows"].append(asdict(r))
        return {
            "started": self.started,
            "mode": self.mode,
            "runs": self.runs,
            "total_seconds": round(self.total_seconds, 3),
            "machine": self.machine,
            "benchmarks": by_bench,
        }


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(Exception):
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        info["dirty"] = bool(dirty)
    with contextlib.suppress(Exception):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


def write_json(report: Report, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    return path


async def run_benchmarks(
    benchmarks: Sequence[Benchmark], ctx: Context, mode: str = "full"
) -> Report:
    """Run each benchmark in turn (each within its time limit); failures are recorded."""
    report = Report(
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        mode=mode,
        runs=ctx.runs,
        machine=machine_info(),
    )
    t_all = time.monotonic()
    for bench in benchmarks:
        ctx.current = bench.name
        limit = min(bench.timeout[0], QUICK_CAP) if ctx.quick else bench.timeout[1]
        ctx._log(f"{bench.name}: {bench.description}")
        t0 = time.monotonic()
        task = asyncio.ensure_future(_call(bench.func, ctx))
        try:
            done, _pending = await asyncio.wait({task}, timeout=limit)
            if not done:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise _OverTime(f"did not finish within {limit:g} s")
            for row in task.result() or ():
                report.results.append(evaluate(Row.of(row), bench.name))
            if ctx.errors_of(bench.name):
                report.errors[bench.name] = "; ".join(ctx.errors_of(bench.name))
        except _OverTime as e:
            report.errors[bench.name] = str(e)
        except Exception as e:
            report.errors[bench.name] = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=sys.stderr)
        report.durations[bench.name] = time.monotonic() - t0
        ctx._log(f"  {bench.name} took {report.durations[bench.name]:.1f} s")
    ctx.current = ""
    report.total_seconds = time.monotonic() - t_all
    return report


class _OverTime(Exception):
    pass


async def _call(func: Callable, ctx: Context):
    try:
        result = func(ctx)
        if inspect.isawaitable(result):
            result = await _await_any(result)
    except SystemExit as e:  # scripts' helpers may exit on failure: not the runner
        raise RuntimeError(f"benchmark code called exit: {e}") from None
    return result


async def _await_any(awaitable):
    """Await an asyncio awaitable, a Deferred or a Twisted-driven coroutine."""
    if "twisted.internet.defer" in sys.modules:
        from twisted.internet import defer

        if isinstance(awaitable, defer.Deferred):
            return await awaitable.asFuture(asyncio.get_running_loop())
    return await awaitable


def select(names: Sequence[str] | None) -> list[Benchmark]:
    """Registered benchmarks in table order, restricted to ``names`` if given."""
    chosen = sorted(REGISTRY.values(), key=lambda b: (b.order, b.name))
    if names:
        unknown = [n for n in names if n not in REGISTRY]
        if unknown:
            raise KeyError(
                f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}"
            )
        chosen = [b for b in chosen if b.name in names]
    return chosen


def make_workdir(keep: bool = False) -> Path:
    return Path(tempfile.mkdtemp(prefix="sat-bench-"))


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------- adapters
# Benchmarks written as stand-alone scripts before this registry existed are wrapped here,
# by importing their functions. An adapter is only used while the script does not register a
# benchmark of the same name itself.


async def _storage_adapter(ctx: Context) -> list[Row]:
    """sat.memory.storage beside raw sqlite3 (bench/bench_storage.py)."""
    from bench import bench_storage
    from bench.common import await_twisted

    tmp = ctx.dir("db")
    corpus = bench_storage.Corpus(seed=42)
    single = ctx.scale(800, 2000)
    batches = ctx.scale(8, 20)
    ctx.log(f"inserts: {single} single, {batches}×500 batched, {ctx.runs} runs")
    ins = await await_twisted(bench_storage.bench_inserts(tmp, corpus, ctx.runs, single, batches))
    rows = ctx.scale(100_000, 1_000_000)
    queries = ctx.scale(150, 300)
    ctx.log(f"search: {rows:,} messages, {queries} queries, {ctx.runs} runs")
    srch = await await_twisted(bench_storage.bench_search(tmp, corpus, rows, ctx.runs, queries))
    target_note = "" if rows >= 1_000_000 else "the ≤20 ms target is for 1,000,000 messages"
    return [
        Row(
            "history_add, 1 message/transaction",
            ins["single"][0],
            ins["single"][1],
            "tx/s",
            baseline_name="raw sqlite3 INSERT+COMMIT",
        ),
        Row(
            "history_add_many, batches of 500",
            ins["batch"][0],
            ins["batch"][1],
            "rows/s",
            baseline_name="raw sqlite3 executemany",
        ),
        Row(
            f"FTS search p50, {rows:,} messages",
            srch["p50"][0],
            srch["p50"][1],
            "ms",
            target=20,
            higher_is_better=False,
            baseline_name="LIKE '%word%' scan",
            note=target_note,
        ),
        Row(
            f"FTS search p99, {rows:,} messages",
            srch["p99"][0],
            srch["p99"][1],
            "ms",
            higher_is_better=False,
            baseline_name="LIKE '%word%' scan",
        ),
        Row(
            f"FTS search p50 after optimize(), {rows:,}",
            srch["opt"][0],
            None,
            "ms",
            target=20,
            higher_is_better=False,
        ),
    ]


async def _bridge_adapter(ctx: Context) -> list[Row]:
    """The D-Bus bridge beside a bare dbus-fast echo service (bench/bench_bridge.py)."""
    from types import SimpleNamespace

    from bench import bench_bridge
    from tests.support.dbus import BackendProcess

    args = SimpleNamespace(
        runs=ctx.runs,
        seconds=ctx.scale(1.0, 2.0),
        inflight=64,
        latency_calls=ctx.scale(1000, 2000),
    )
    address = ctx.bus().address
    with (
        BackendProcess(address, args=["--echo-only"]) as ours,
        bench_bridge.BaselineProcess(address) as base,
    ):
        pids = {"ours": ours.pid, "baseline": base.process.pid}
        results = await bench_bridge.measure(address, args, pids)
    ours_r, base_r = results["ours"], results["baseline"]
    name = "bare dbus-fast echo service"
    return [
        Row(
            "D-Bus calls/s, 64 in flight",
            ours_r["tput"],
            base_r["tput"],
            "call/s",
            target=5000,
            baseline_name=name,
            note="raw dbus-fast client calling Echo(s) on our bridge server (test backend "
            "process) and on the bare service; client, bus and server share the 2 CPUs",
        ),
        Row(
            "D-Bus calls/s, 64 in flight, vs bare",
            ours_r["tput"],
            base_r["tput"],
            "call/s",
            target="0.75x",
            baseline_name=name,
        ),
        Row(
            "D-Bus sequential call latency p50",
            ours_r["p50"],
            base_r["p50"],
            "µs",
            higher_is_better=False,
            baseline_name=name,
        ),
        Row(
            "D-Bus sequential call latency p99",
            ours_r["p99"],
            base_r["p99"],
            "µs",
            higher_is_better=False,
            baseline_name=name,
        ),
        Row(
            "D-Bus server CPU per call",
            ours_r["cpu"],
            base_r["cpu"],
            "µs",
            higher_is_better=False,
            baseline_name=name,
        ),
        Row(
            "calls/s via DBusBridgeClient, 64 in flight",
            ours_r["client"],
            ours_r["tput"],
            "call/s",
            baseline_name="raw dbus-fast client, same server",
        ),
    ]


ADAPTERS: dict[str, tuple[str, Callable, dict]] = {
    "bridge": (
        "bench_bridge",
        _bridge_adapter,
        {"order": 45, "timeout": (45.0, 180.0)},
    ),
    "storage": (
        "bench_storage",
        _storage_adapter,
        {"order": 60, "timeout": (90.0, 600.0)},
    ),
}


def register_adapters() -> list[str]:
    """Register the adapters whose script exists and registers nothing itself."""
    added = []
    for name, (module, func, options) in ADAPTERS.items():
        if name in REGISTRY or not (BENCH_DIR / f"{module}.py").exists():
            continue
        register(name, func, **options)
        added.append(name)
    return added
