#!/usr/bin/env python3
"""Primitivus: message arrival → drawn, and opening a 5,000-contact list, beside bare urwid.

    python bench/bench_primitivus.py [--runs 5] [--messages 200] [--contacts 5000]

Both measures run the real application (:class:`sat_frontends.primitivus.app.PrimitivusApp`,
its urwid main loop on the asyncio loop) on a real terminal driver: urwid's raw screen writing
to a pseudo-terminal (80×24, 256 colours) whose other end is drained, so escape-sequence
generation and the write are included. The bridge is the in-process fake
(:class:`sat_frontends.quick_frontend.testing.FakeBridge`): no daemon, no D-Bus, so what is
measured is the frontend itself.

- **message → drawn**: a chat window with 200 messages of history is on screen; a
  ``MessageNew`` signal is delivered to the app and the time runs until ``draw_screen``
  returned with the message drawn (the app's redraw scheduling included). Median and p99
  over ``--messages`` messages. Baseline: the same terminal and main loop with a bare urwid
  ``ListBox`` of ``Text`` widgets: append a ``Text``, move the focus, draw.
- **open 5,000 contacts**: log a profile in whose ``RosterGet`` returns 5,000 contacts in 20
  groups (1,000 of them online by ``PresenceStatusesGet``) and draw the screen with the contact
  list: roster and presences into the model, grouping and sorting, the lazy list widget, the
  draw. Target ≤ 200 ms. Baseline: a bare urwid ``ListBox`` of 5,000 ``Text`` widgets
  (one per contact, no grouping nor sorting) built and drawn on the same screen.

Also registered in the bench runner (``python -m bench --only primitivus``).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import statistics
import struct
import sys
import termios
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import urwid  # noqa: E402

from sat_frontends.primitivus.app import PrimitivusApp  # noqa: E402
from sat_frontends.primitivus.config import Config  # noqa: E402
from sat_frontends.primitivus.palette import PALETTE  # noqa: E402
from sat_frontends.quick_frontend.testing import FakeBridge, message_record  # noqa: E402

TARGET_OPEN_CONTACTS_MS = 200.0
ALICE = "alice@example.org"
BOB = "bob@example.org"
COLS, ROWS = 80, 24


# ---------------------------------------------------------------------------- terminal


class Terminal:
    """A pseudo-terminal of COLS×ROWS with an urwid raw screen on it; output drained."""

    def __init__(self):
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.input = os.fdopen(os.dup(self.slave), "rb", buffering=0)
        self.output = os.fdopen(os.dup(self.slave), "w", encoding="utf-8")
        self.bytes_out = 0

    def screen(self) -> urwid.display.raw.Screen:
        screen = urwid.display.raw.Screen(
            input=self.input, output=self.output, bracketed_paste_mode=False, focus_reporting=False
        )
        screen.set_terminal_properties(colors=256)
        return screen

    def _drain(self) -> None:
        # a thread of its own: a draw blocked on a full pty buffer must not wait for the
        # event loop that is busy drawing
        while True:
            try:
                chunk = os.read(self.master, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.bytes_out += len(chunk)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._thread = threading.Thread(target=self._drain, name="pty-drain", daemon=True)
        self._thread.start()

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for f in (self.input, self.output):
            f.close()
        os.close(self.slave)
        os.close(self.master)
        self._thread.join(timeout=2)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------------------- message → drawn


def chat_bridge(history: int = 200) -> FakeBridge:
    bridge = FakeBridge()
    bridge.profiles["alice"] = {"jid": ALICE, "password": ""}
    bridge.rosters["alice"] = [{"jid": BOB, "name": "Bob", "groups": ["Friends"]}]
    now = time.time() - 3600
    bridge.history["alice"] = [
        message_record(
            f"{BOB}/pc", ALICE, f"history message {i} with *some* styling", timestamp=now + i
        )
        for i in range(history)
    ]
    return bridge


async def app_message_latency(term: Terminal, count: int) -> list[float]:
    bridge = chat_bridge()
    app = PrimitivusApp(bridge, Config(bell=False))
    await app.qa.start()
    loop = app.make_loop(term.screen())
    loop.start()
    try:
        await app.login("alice")
        conv = app.qa.conversation("alice", BOB)
        app.open_conversation(conv)
        await app.qa.load_history(conv, 200)
        app._redraw()
        drawn = asyncio.Event()
        app.draw_hooks.append(drawn.set)
        samples = []
        for i in range(count):
            await asyncio.sleep(0.002)  # the loop is idle when the message arrives
            drawn.clear()
            record = message_record(f"{BOB}/pc", ALICE, f"new message {i}, _hello_ 日本語")
            t0 = time.perf_counter()
            bridge.emit("MessageNew", "alice", record)
            await drawn.wait()
            samples.append((time.perf_counter() - t0) * 1000)
        assert conv.messages[-1].body.startswith(f"new message {count - 1}")
        return samples
    finally:
        loop.stop()
        app.loop = None


async def bare_message_latency(term: Terminal, count: int) -> list[float]:
    walker = urwid.SimpleFocusListWalker(
        [urwid.Text(f"12:00 Bob> history message {i} with *some* styling") for i in range(200)]
    )
    listbox = urwid.ListBox(walker)
    aio = asyncio.get_running_loop()
    loop = urwid.MainLoop(
        listbox, palette=PALETTE, screen=term.screen(), event_loop=urwid.AsyncioEventLoop(loop=aio)
    )
    loop.start()
    try:
        drawn = asyncio.Event()

        def draw():
            loop.draw_screen()
            drawn.set()

        samples = []
        for i in range(count):
            await asyncio.sleep(0.002)
            drawn.clear()
            t0 = time.perf_counter()
            walker.append(urwid.Text(f"12:00 Bob> new message {i}, _hello_ 日本語"))
            walker.set_focus(len(walker) - 1)
            aio.call_soon(draw)
            await drawn.wait()
            samples.append((time.perf_counter() - t0) * 1000)
        return samples
    finally:
        loop.stop()


# ---------------------------------------------------------------------------- 5,000 contacts


def big_roster(n: int) -> tuple[list[dict], list[dict]]:
    roster = [
        {
            "jid": f"contact{i:05d}@example.org",
            "name": f"Contact {(i * 7919) % n:05d}",
            "groups": [f"Group {i % 20:02d}"],
            "subscription": "both",
        }
        for i in range(n)
    ]
    presences = [
        {
            "entity": f"contact{i:05d}@example.org/res",
            "show": ("", "away", "dnd", "xa", "chat")[i % 5],
            "priority": 0,
            "statuses": {},
        }
        for i in range(0, n, 5)
    ]
    return roster, presences


async def app_open_contacts(term: Terminal, n: int) -> tuple[float, str]:
    roster, presences = big_roster(n)
    bridge = FakeBridge()
    bridge.profiles["alice"] = {"jid": ALICE, "password": ""}
    bridge.rosters["alice"] = roster
    bridge.handle("PresenceStatusesGet", lambda profile: presences)
    app = PrimitivusApp(bridge, Config(bell=False))
    await app.qa.start()
    loop = app.make_loop(term.screen())
    loop.start()
    try:
        t0 = time.perf_counter()
        await app.login("alice")
        app._redraw()
        elapsed = (time.perf_counter() - t0) * 1000
        text = "\n".join(r.decode() for r in app.top.render((COLS, ROWS)).text)
        return elapsed, text
    finally:
        loop.stop()
        app.loop = None


async def bare_open_contacts(term: Terminal, n: int) -> float:
    roster, _presences = big_roster(n)
    aio = asyncio.get_running_loop()
    placeholder = urwid.WidgetPlaceholder(urwid.SolidFill(" "))
    loop = urwid.MainLoop(
        placeholder,
        palette=PALETTE,
        screen=term.screen(),
        event_loop=urwid.AsyncioEventLoop(loop=aio),
    )
    loop.start()
    try:
        t0 = time.perf_counter()
        rows = [urwid.Text(item["name"] or item["jid"], wrap="ellipsis") for item in roster]
        placeholder.original_widget = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        loop.draw_screen()
        return (time.perf_counter() - t0) * 1000
    finally:
        loop.stop()


# ---------------------------------------------------------------------------- driver


async def measure(runs: int, messages: int, contacts: int, log=print) -> dict[str, list[float]]:
    aio = asyncio.get_running_loop()
    term = Terminal()
    term.attach(aio)
    out: dict[str, list[float]] = {
        "msg_p50": [], "msg_p99": [], "bare_msg_p50": [], "bare_msg_p99": [],
        "open": [], "bare_open": [],
    }  # fmt: skip
    try:
        for run in range(runs + 1):  # the first is a warm-up
            ours = await app_message_latency(term, messages)
            base = await bare_message_latency(term, messages)
            opened, text = await app_open_contacts(term, contacts)
            bare_opened = await bare_open_contacts(term, contacts)
            assert "Group 00" in text, text
            if run == 0:
                continue
            out["msg_p50"].append(statistics.median(ours))
            out["msg_p99"].append(percentile(ours, 0.99))
            out["bare_msg_p50"].append(statistics.median(base))
            out["bare_msg_p99"].append(percentile(base, 0.99))
            out["open"].append(opened)
            out["bare_open"].append(bare_opened)
            log(
                f"  run {run}: message→drawn p50 {out['msg_p50'][-1]:.2f} ms "
                f"(bare {out['bare_msg_p50'][-1]:.2f}), open {contacts} contacts "
                f"{opened:.0f} ms (bare {bare_opened:.0f})"
            )
    finally:
        term.close(aio)
    return out


def report(samples: dict[str, list[float]], messages: int, contacts: int) -> str:
    med = statistics.median
    rows = [
        ("message signal → drawn, p50", med(samples["msg_p50"]), med(samples["bare_msg_p50"]), ""),
        ("message signal → drawn, p99", med(samples["msg_p99"]), med(samples["bare_msg_p99"]), ""),
        (
            f"open a {contacts:,}-contact list",
            med(samples["open"]),
            med(samples["bare_open"]),
            f"≤ {TARGET_OPEN_CONTACTS_MS:.0f} ms",
        ),
    ]
    lines = [f"{'metric':34} {'primitivus':>11} {'bare urwid':>11} {'ratio':>6}  target"]
    for name, ours, base, target in rows:
        met = ""
        if target:
            met = " (met)" if ours <= TARGET_OPEN_CONTACTS_MS else " (NOT met)"
        lines.append(f"{name:34} {ours:8.2f} ms {base:8.2f} ms {ours / base:5.2f}×  {target}{met}")
    lines.append(
        f"({messages} messages per run; medians of {len(samples['open'])} runs; "
        "bare urwid = ListBox of Text widgets on the same 80×24 pty screen)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--contacts", type=int, default=5000)
    args = parser.parse_args(argv)
    samples = asyncio.run(measure(args.runs, args.messages, args.contacts))
    print(f"Primitivus, {os.cpu_count()} CPUs, urwid {urwid.__version__}, {sys.executable}")
    print(report(samples, args.messages, args.contacts))
    return 0


# ---------------------------------------------------------------------------- bench runner

try:
    from bench.runner import Row, benchmark
except ImportError:  # run as a plain script without the runner
    benchmark = None

if benchmark is not None:

    @benchmark(
        "primitivus",
        order=95,
        timeout=(90.0, 300.0),
        description="Primitivus: message→drawn, 5,000 contacts opened, vs bare urwid",
    )
    async def primitivus_ui(ctx):
        messages = ctx.scale(100, 200)
        samples = await measure(ctx.runs, messages, 5000, log=ctx.log)
        return [
            Row("primitivus message → drawn p50", samples["msg_p50"], samples["bare_msg_p50"],
                "ms", higher_is_better=False, baseline_name="bare urwid ListBox append + draw"),
            Row("primitivus message → drawn p99", samples["msg_p99"], samples["bare_msg_p99"],
                "ms", higher_is_better=False, baseline_name="bare urwid ListBox append + draw"),
            Row("primitivus open 5,000 contacts", samples["open"], samples["bare_open"], "ms",
                target=TARGET_OPEN_CONTACTS_MS, higher_is_better=False,
                baseline_name="bare urwid ListBox of 5,000 Text"),
        ]  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
