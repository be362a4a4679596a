"""kill -9 in the middle of a burst of writes loses no acknowledged transaction.

A child process runs the real :class:`sat.memory.storage.Storage` on its own
asyncio reactor and writes history rows (single-row transactions and batches
of 50) in a loop, printing each uid once its ``await`` returned, i.e. once
the commit was acknowledged. The test SIGKILLs it mid-burst, then opens the
database: it must pass ``PRAGMA integrity_check`` and the FTS5 integrity
check, contain every acknowledged row, hold every batch whole or not at all,
and keep the profile, its settings and secret. Three rounds on the same file,
so rounds 2 and 3 also recover a killed database through ``Storage``.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sat.memory import storage as storage_mod

ROOT = Path(__file__).resolve().parents[2]
BATCH = 50

CHILD = r"""
import sys
from sat.core.reactor import install_asyncio_reactor

reactor = install_asyncio_reactor()
from twisted.internet import defer, task

from sat.memory.storage import Storage

path, round_no = sys.argv[1], int(sys.argv[2])
BATCH = int(sys.argv[3])


def message(uid, i):
    return {
        "uid": uid,
        "source": "bob@example.net",
        "dest": "louise@example.org",
        "timestamp": 1_700_000_000 + i,
        "body": f"message {uid} : café crème numéro {i} " + "bla " * (i % 40),
        "stanza_id": uid,
        "stanza_id_by": "louise@example.org",
        "extra": {"round": round_no, "i": i},
    }


async def main(_reactor):
    st = Storage(path)
    await st.initialise()
    if not await st.profile_exists("louise"):
        await st.profile_create("louise")
        await st.param_set("General", "lang", "fr", profile="louise")
        await st.secret_set("louise", "password", b"\x01\x02secret")
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    i = 0
    while True:
        if i % 4 == 3:
            uids = [f"r{round_no}-b{i}-{j}" for j in range(BATCH)]
            await st.history_add_many("louise", [message(u, i) for u in uids])
            out.write("".join(f"ACK {u}\n" for u in uids))
        else:
            uid = f"r{round_no}-s{i}"
            await st.history_add("louise", message(uid, i))
            out.write(f"ACK {uid}\n")
        out.flush()
        i += 1


task.react(lambda r: defer.ensureDeferred(main(r)))
"""


def _run_round(path: Path, round_no: int, rng: random.Random) -> list[str]:
    """Start the writer, SIGKILL it after a random number of acks; return the acked uids."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(round_no), str(BATCH)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    target = rng.randint(300, 3000)
    acked: list[str] = []
    buffer = b""
    ready = False
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 20
    try:
        while len(acked) < target and time.monotonic() < deadline:
            if not sel.select(timeout=0.5):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line == b"READY":
                    ready = True
                elif line.startswith(b"ACK "):
                    acked.append(line[4:].decode())
        # let it run on a random bit more so the kill lands anywhere in a transaction
        time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        sel.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # whatever the child flushed before dying was acknowledged too
    buffer += proc.stdout.read()
    proc.stdout.close()
    for line in buffer.split(b"\n")[:-1]:
        if line.startswith(b"ACK "):
            acked.append(line[4:].decode())
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    assert ready, f"child did not start: {stderr}"
    assert proc.returncode == -signal.SIGKILL, f"child ended by itself: {stderr}"
    assert len(acked) >= 100, f"child wrote too little before the kill: {stderr}"
    return acked


def _check(path: Path, acked: list[str]) -> int:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # the full-text index itself is sound; it may be behind the table (live messages
        # are indexed a little later): the next open catches up with this statement, after
        # which it matches the table exactly
        conn.execute("INSERT INTO history_fts(history_fts, rank) VALUES ('integrity-check', 0)")
        conn.execute(storage_mod._FTS_CATCH_UP)
        conn.commit()
        conn.execute("INSERT INTO history_fts(history_fts, rank) VALUES ('integrity-check', 1)")
        (pid,) = conn.execute("SELECT id FROM profiles WHERE name = 'louise'").fetchone()
        assert conn.execute(
            "SELECT value FROM params WHERE profile_id = ? AND category = 'General' "
            "AND name = 'lang'",
            (pid,),
        ).fetchone() == ("fr",)
        assert conn.execute(
            "SELECT value FROM secrets WHERE profile_id = ? AND name = 'password'", (pid,)
        ).fetchone() == (b"\x01\x02secret",)
        stored = {row[0] for row in conn.execute("SELECT uid FROM history")}
        missing = [uid for uid in acked if uid not in stored]
        assert not missing, f"{len(missing)} acknowledged rows lost, e.g. {missing[:5]}"
        # a batch is one transaction: all of it or nothing
        batches = Counter(uid.rsplit("-", 1)[0] for uid in stored if "-b" in uid)
        assert all(n == BATCH for n in batches.values()), batches
        fts = conn.execute(
            "SELECT count(*) FROM history_fts WHERE history_fts MATCH 'creme'"
        ).fetchone()[0]
        assert fts == len(stored)
        return len(stored)
    finally:
        conn.close()


def test_kill_9_mid_burst_loses_no_acknowledged_row(tmp_path):
    path = tmp_path / "sat.db"
    rng = random.Random()
    all_acked: list[str] = []
    for round_no in range(3):
        acked = _run_round(path, round_no, rng)
        all_acked += acked
        stored = _check(path, all_acked)
        assert stored >= len(all_acked)
