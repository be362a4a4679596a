"""The benchmark runner's machinery (bench/runner.py) with fake benchmarks: no server started.

Ratios, target checks, table and JSON output, the registry, and running benchmarks with
failures and time limits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading

import pytest

from bench import runner
from bench.runner import Context, Row, evaluate, format_markdown, format_table, parse_target


def run_coroutine(factory, timeout: float = 30.0):
    """Run ``factory()`` on a fresh event loop in its own thread (the test's reactor untouched)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = asyncio.run(factory())
        except BaseException as e:  # handed back to the test
            outcome["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "coroutine did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def registry(monkeypatch):
    fresh: dict = {}
    monkeypatch.setattr(runner, "REGISTRY", fresh)
    return fresh


# ---------------------------------------------------------------------------- targets and ratios


@pytest.mark.parametrize(
    "target, expected",
    [
        (None, None),
        (50, ("abs", 50.0)),
        (2.5, ("abs", 2.5)),
        ("1.0x", ("ratio", 1.0)),
        ("≥0.75×", ("ratio", 0.75)),
        ("<= 1.5x", ("ratio", 1.5)),
        ("5,000", ("abs", 5000.0)),
    ],
)
def test_parse_target(target, expected):
    assert parse_target(target) == expected


def test_medians_and_ratio_of_samples():
    result = evaluate(Row("rate", [10, 30, 20], [5, 5, 100], "msg/s"), "bench")
    assert result.ours == 20 and result.baseline == 5
    assert result.ratio == pytest.approx(4.0)
    assert result.ours_samples == [10.0, 30.0, 20.0]
    assert result.benchmark == "bench"
    assert result.met is None and result.target_text == ""


def test_absolute_target_lower_is_better():
    met = evaluate(Row("latency", [1.5, 1.9, 1.7], 0.4, "ms", target=2, higher_is_better=False))
    assert met.met is True
    assert met.target_text == "≤ 2.00 ms"
    missed = evaluate(Row("latency", 2.1, 0.4, "ms", target=2, higher_is_better=False))
    assert missed.met is False
    edge = evaluate(Row("latency", 2.0, None, "ms", target=2, higher_is_better=False))
    assert edge.met is True and edge.ratio is None


def test_absolute_target_higher_is_better():
    assert evaluate(Row("calls", 6000, 7000, "call/s", target=5000)).met is True
    assert evaluate(Row("calls", 4000, 7000, "call/s", target=5000)).met is False


def test_ratio_targets_follow_the_direction():
    faster = evaluate(Row("rate", 1500, 1000, "msg/s", target="1.0x"))
    assert faster.ratio == pytest.approx(1.5) and faster.met is True
    slower = evaluate(Row("rate", 900, 1000, "msg/s", target="1.0x"))
    assert slower.met is False
    assert slower.target_text == "≥ 1× base"
    # lower is better: ours may be at most 1.5 times the baseline
    ok = evaluate(Row("catch-up", 1.2, 1.0, "s", target="1.5x", higher_is_better=False))
    assert ok.met is True
    bad = evaluate(Row("catch-up", 1.6, 1.0, "s", target="1.5x", higher_is_better=False))
    assert bad.met is False


def test_ratio_target_without_baseline_is_unknown():
    result = evaluate(Row("rate", 1500, None, "msg/s", target="1.0x"))
    assert result.ratio is None and result.met is None


def test_row_from_tuple():
    row = Row.of(("connect", [12.0], [40.0], "ms", 50, False))
    assert row.metric == "connect" and row.target == 50 and row.higher_is_better is False
    assert evaluate(row).met is True


@pytest.mark.parametrize(
    "value, text",
    [
        (None, "—"),
        (0, "0"),
        (0.3713, "0.371"),
        (3.704, "3.70"),
        (49.01, "49.0"),
        (466.2, "466"),
        (14293.4, "14,293"),
    ],
)
def test_number_format(value, text):
    assert runner.fmt(value) == text


# ---------------------------------------------------------------------------- table and JSON


def sample_results():
    return [
        evaluate(
            Row(
                "messages/s received",
                [1200, 1300],
                [14000],
                "msg/s",
                "1.0x",
                baseline_name="bare slixmpp",
                note="flood of 5,000",
            ),
            "throughput",
        ),
        evaluate(Row("start to ready", 466, 268, "ms", 500, False, "import"), "daemon"),
    ]


def test_table_has_every_column_and_the_failures():
    table = format_table(sample_results(), {"storage": "TimeoutError: too slow"})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "ours", "baseline", "ratio", "target", "met"] + [
        "baseline",
        "is",
    ]
    assert set(lines[1]) <= {"-", " "}
    rate = next(line for line in lines if line.startswith("messages/s received"))
    assert "1,250 msg/s" in rate and "14,000 msg/s" in rate and "0.09×" in rate
    assert "≥ 1× base" in rate and " NO " in rate and rate.endswith("bare slixmpp")
    start = next(line for line in lines if line.startswith("start to ready"))
    assert "466 ms" in start and "1.74×" in start and "≤ 500 ms" in start and " yes " in start
    assert "!! storage: FAILED: TimeoutError: too slow" in table
    assert "[messages/s received] flood of 5,000" in table
    # columns line up: the ratio column ends at the same offset on every row
    ends = {line.index("×") for line in (rate, start)}
    assert len(ends) == 1


def test_markdown_table():
    text = format_markdown(sample_results())
    lines = text.splitlines()
    assert lines[0].startswith("| metric | ours | baseline | ratio | target | met |")
    assert len(lines) == 4
    assert "| **no** |" in lines[2] and "| yes |" in lines[3]


def test_json_report(tmp_path):
    report = runner.Report(started="2026-11-23T10:00:00+0000", mode="quick", runs=3)
    report.results = sample_results()
    report.errors = {"storage": "boom"}
    report.durations = {"throughput": 12.3456, "daemon": 4.0, "storage": 1.0}
    report.machine = {"cpus": 2}
    path = runner.write_json(report, tmp_path / "out" / "result.json")
    data = json.loads(path.read_text())
    assert data["mode"] == "quick" and data["runs"] == 3 and data["machine"] == {"cpus": 2}
    throughput = data["benchmarks"]["throughput"]
    assert throughput["seconds"] == 12.346
    (row,) = throughput["rows"]
    assert row["metric"] == "messages/s received"
    assert row["ours"] == 1250 and row["ours_samples"] == [1200, 1300]
    assert row["met"] is False and row["target"] == "1.0x"
    assert data["benchmarks"]["storage"] == {"seconds": 1.0, "rows": [], "error": "boom"}


# ---------------------------------------------------------------------------- registry and runs


def test_registration_and_selection(registry):
    @runner.benchmark("second", order=20)
    def second(ctx):
        """Second benchmark."""
        return []

    runner.register("first", lambda ctx: [], description="first one", order=10)
    assert [b.name for b in runner.select(None)] == ["first", "second"]
    assert registry["second"].description == "Second benchmark."
    assert [b.name for b in runner.select(["second"])] == ["second"]
    with pytest.raises(KeyError, match="nope"):
        runner.select(["nope"])


def test_run_benchmarks_with_failures_and_time_limits(registry, tmp_path):
    calls = []

    def sync_bench(ctx):
        calls.append(("sync", ctx.quick, ctx.runs))
        samples = [run.index for run in ctx.repetitions() if run.measured]
        return [("sync metric", samples, 1.0, "x", "0.5x", True)]

    async def async_bench(ctx):
        await asyncio.sleep(0)
        return [Row("async metric", 3.0, 2.0, "ms", 5, False)]

    def broken(ctx):
        raise ValueError("no server")

    async def slow(ctx):
        await asyncio.sleep(30)

    def exits(ctx):
        sys.exit("gave up")

    runner.register("a-sync", sync_bench, order=1)
    runner.register("b-async", async_bench, order=2)
    runner.register("c-broken", broken, order=3)
    runner.register("d-slow", slow, order=4, timeout=(0.2, 0.2))
    runner.register("e-exits", exits, order=5)
    ctx = Context(tmp_path, quick=True, runs=3, log=lambda text: None)
    report = run_coroutine(lambda: runner.run_benchmarks(runner.select(None), ctx, "quick"))

    assert calls == [("sync", True, 3)]
    by_metric = {r.metric: r for r in report.results}
    # one warm-up run (index 0) then three measured ones
    assert by_metric["sync metric"].ours_samples == [1.0, 2.0, 3.0]
    assert by_metric["sync metric"].met is True
    assert by_metric["async metric"].met is True
    assert by_metric["async metric"].benchmark == "b-async"
    assert report.errors["c-broken"] == "ValueError: no server"
    assert "did not finish within 0.2 s" in report.errors["d-slow"]
    assert "gave up" in report.errors["e-exits"]
    assert set(report.durations) == {"a-sync", "b-async", "c-broken", "d-slow", "e-exits"}
    assert report.durations["d-slow"] < 5


def test_discover_reports_modules_that_fail_to_import(registry, tmp_path, monkeypatch):
    package = tmp_path / "fakebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bench_good.py").write_text(
        "from bench.runner import benchmark\n@benchmark('good')\ndef good(ctx):\n    return []\n"
    )
    (package / "bench_bad.py").write_text("import module_that_does_not_exist\n")
    (package / "helper.py").write_text("raise RuntimeError('not a benchmark module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    failures = runner.discover(package, "fakebench")
    assert list(registry) == ["good"]
    assert list(failures) == ["bench_bad"]
    assert "ModuleNotFoundError" in failures["bench_bad"]
    for name in ("fakebench", "fakebench.bench_good", "fakebench.bench_bad"):
        sys.modules.pop(name, None)


def test_context_helpers(tmp_path):
    quick = Context(tmp_path, quick=True, runs=2, log=lambda text: None)
    full = Context(tmp_path, quick=False, runs=2, log=lambda text: None)
    assert quick.scale(1, 2) == 1 and full.scale(1, 2) == 2
    runs = list(quick.repetitions(warmup=2))
    assert [(r.index, r.measured) for r in runs] == [(0, False), (1, False), (2, True), (3, True)]
    quick.current = "x"
    assert quick.dir("data") == tmp_path / "x" / "data" and (tmp_path / "x" / "data").is_dir()


def test_quick_mode_caps_every_time_limit(registry, tmp_path, monkeypatch):
    async def hangs(ctx):
        await asyncio.sleep(30)

    runner.register("hangs", hangs, timeout=(100.0, 100.0))
    monkeypatch.setattr(runner, "QUICK_CAP", 0.2)
    ctx = Context(tmp_path, quick=True, runs=1, log=lambda text: None)
    report = run_coroutine(lambda: runner.run_benchmarks(runner.select(None), ctx, "quick"))
    assert report.errors == {"hangs": "did not finish within 0.2 s"}


def test_a_benchmark_may_report_a_failure_beside_its_rows(registry, tmp_path):
    def partial(ctx):
        ctx.error("run 2: the daemon stalled")
        return [Row("baseline only", None, 10.0, "msg/s", target="1.0x")]

    runner.register("partial", partial)
    ctx = Context(tmp_path, quick=True, runs=1, log=lambda text: None)
    report = run_coroutine(lambda: runner.run_benchmarks(runner.select(None), ctx, "quick"))
    assert report.errors == {"partial": "run 2: the daemon stalled"}
    (result,) = report.results
    assert result.ours is None and result.baseline == 10.0 and result.met is None
    table = format_table(report.results, report.errors)
    assert "baseline only" in table and "!! partial: FAILED: run 2: the daemon stalled" in table
