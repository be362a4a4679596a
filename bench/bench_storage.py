#!/usr/bin/env python3
"""Benchmark of sat.memory.storage beside raw sqlite3, measured in the same run.

    python bench/bench_storage.py [--rows 100000] [--runs 5] [--queries 300]

Prints, each as the median of ``--runs`` runs:

- one-row ``history_add`` transactions/s (each call is a commit, through the
  database thread and back to the reactor) vs raw sqlite3 doing one
  ``INSERT`` + ``COMMIT`` per row into the same schema (same pragmas) from the
  calling thread: the difference is the layer's own cost (validation, the
  thread hop there and back, Deferred/coroutine resumption);
- ``history_add_many`` rows/s with batches of 500 (MAM catch-up) vs raw
  sqlite3 ``executemany`` of the same 500-row batches into the same schema;
- full-text search latency p50/p99 over ``--rows`` messages (our FTS5
  ``history_search``: ranked, with snippets, accent-insensitive) vs a plain
  ``body LIKE '%word%'`` scan of the same table (newest 20 first; ASCII-only
  case folding, no accent folding, no ranking).

The last column is ours ÷ baseline as a speed factor: > 1 means ours is
faster (for latencies it is baseline time ÷ our time).

Messages are generated quickly from a Zipf-distributed multilingual
vocabulary (real French/English/German/Spanish/Italian/Portuguese words with
their accents, plus synthetic words so the vocabulary is ~30k words like a
real chat history). Search queries are "content words" (vocabulary ranks 50 to
5,000, i.e. not the stop-word-like head): 60 % one word, 25 % two words, 15 %
a 4-letter prefix with ``*``; the single most frequent word is timed apart as
the worst case.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from itertools import accumulate
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sat.core.reactor import install_asyncio_reactor  # noqa: E402

WORDS = """
le la les un une des et à de du en est pas que qui dans pour sur avec ce il elle nous vous
ils on mais ou où donc ni car très bien plus moins tout tous toute déjà encore après avant
café crème thé gâteau pâtes fenêtre forêt été hiver château hôpital élève école général
frère sœur père mère enfant garçon fille ami amie réunion téléphone ordinateur message
bientôt peut-être voilà ça ici là-bas demain aujourd'hui hier soirée matinée journée
noël fête anniversaire cadeau réveil vélo voiture métro trajet retard désolé merci
the and to of a in is it you that he was for on are with as I his they be at one have
this from or had by hot word but what some we can out other were all there when up use
your how said an each she which do their time if will way about many then them write
would like so these her long make thing see him two has look more day could go come did
number sound no most people my over know water than call first who may down side been
now find meeting tomorrow tonight coffee lunch dinner weekend holiday train plane ticket
und der die das ist nicht ein eine zu mit sich auf für von dem den im sind auch noch
schön müde größer straße über mädchen käse brötchen grüße fußball tschüss gemütlich
el los las un una es y en que por con para como más pero sus le ya o este sí porque
mañana niño año señor canción corazón jamón pequeño compañía montaña español
il lo gli della che è per una sono mi ha le si con non ma anche città perché così più
caffè però già università attività libertà
não são também você coração irmã avó ação informação manhã pão
""".split()

SYLLABLES = (
    "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo ga ge go la le li lo lu ma me mi "
    "mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi "
    "vo za ze zo é è ê à â ô û ç ü ö ä ñ ão ei au ou an on in er el ar or"
).split()


def build_vocabulary(size: int, rng: random.Random) -> list[str]:
    vocab = list(dict.fromkeys(WORDS))
    rng.shuffle(vocab)
    seen = set(vocab)
    while len(vocab) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            vocab.append(word)
    return vocab


class Corpus:
    """Fast generator of realistic-ish chat messages (Zipf word frequencies)."""

    def __init__(self, seed: int = 42, vocab_size: int = 30_000):
        self.rng = random.Random(seed)
        self.vocab = build_vocabulary(vocab_size, self.rng)
        self.cum_weights = list(accumulate(1.0 / (rank + 2.7) for rank in range(len(self.vocab))))
        self.contacts = [f"contact{i}@example.org" for i in range(200)]
        self.counter = 0

    def bodies(self, count: int) -> list[str]:
        lengths = [self.rng.randint(2, 22) for _ in range(count)]
        words = self.rng.choices(self.vocab, cum_weights=self.cum_weights, k=sum(lengths))
        bodies, pos = [], 0
        for length in lengths:
            sentence = " ".join(words[pos : pos + length])
            pos += length
            bodies.append(sentence[0].upper() + sentence[1:] + self.rng.choice(".?!…"))
        return bodies

    def messages(self, count: int, me: str = "me@example.org") -> list[dict]:
        out = []
        rng = self.rng
        for body in self.bodies(count):
            self.counter += 1
            n = self.counter
            contact = rng.choice(self.contacts)
            outgoing = rng.random() < 0.4
            out.append(
                {
                    "uid": f"m{n}",
                    "stanza_id": f"s{n}",
                    "stanza_id_by": me,
                    "origin_id": f"o{n}" if outgoing else None,
                    "timestamp": 1_600_000_000 + n * 7.3,
                    "received_timestamp": None,
                    "source": me if outgoing else contact,
                    "source_resource": "sat" if outgoing else "phone",
                    "dest": contact if outgoing else me,
                    "dest_resource": None,
                    "type": "chat",
                    "body": body,
                    "subject": None,
                    "thread": None,
                    "extra": None,
                    "outgoing": outgoing,
                }
            )
        return out

    def queries(self, count: int) -> list[str]:
        rng = random.Random(7)
        content = self.vocab[50:5000]
        out = []
        for _ in range(count):
            roll = rng.random()
            if roll < 0.60:
                out.append(rng.choice(content))
            elif roll < 0.85:
                out.append(f"{rng.choice(content)} {rng.choice(content)}")
            else:
                word = rng.choice([w for w in content[:2000] if len(w) >= 5] or content)
                out.append(word[:4] + "*")
        return out


# --- raw sqlite3 baseline -------------------------------------------------------------

FIELDS = (
    "uid stanza_id stanza_id_by origin_id timestamp received_timestamp source source_resource "
    "dest dest_resource type body subject thread extra outgoing"
).split()
RAW_INSERT = (
    f"INSERT INTO history (profile_id, {', '.join(FIELDS)}) "
    f"VALUES (1, {', '.join('?' * len(FIELDS))}) ON CONFLICT DO NOTHING"
)


def raw_open(path: Path) -> sqlite3.Connection:
    from sat.memory.migrations import MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    # the same cache settings as Storage, so the ratio shows the layer's own cost
    conn.execute("PRAGMA cache_size = -32000")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("BEGIN")
    for migration in MIGRATIONS:
        migration.apply(conn)
    conn.execute("INSERT INTO profiles (id, name, created) VALUES (1, 'bench', 0)")
    conn.execute("COMMIT")
    return conn


def as_row(message: dict) -> tuple:
    return tuple(int(message[f]) if f == "outgoing" else message[f] for f in FIELDS)


# --- measurements ----------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench_inserts(tmp: Path, corpus: Corpus, runs: int, single: int, batches: int):
    from sat.memory.storage import _FTS_CATCH_UP, _FTS_INDEX_AFTER, _LAST_HISTORY_ID, Storage

    results = {"single": ([], []), "batch": ([], [])}
    for run in range(runs):
        run_dir = tmp / f"insert{run}"
        st = Storage(run_dir / "ours.db")
        await st.initialise()
        await st.profile_create("bench")
        raw = raw_open(run_dir / "raw.db")

        msgs = corpus.messages(single)
        t0 = time.perf_counter()
        for m in msgs:
            await st.history_add("bench", m)
        await st.fts_sync()  # the full-text indexing they left, counted in
        results["single"][0].append(single / (time.perf_counter() - t0))
        # the raw baseline does the same SQL work: one INSERT per row in autocommit, then
        # the full-text entries of them all (live messages are indexed a little later, in
        # batches: see "Full-text indexing" in sat/memory/storage.py)
        msgs = corpus.messages(single)
        t0 = time.perf_counter()
        for m in msgs:
            raw.execute(RAW_INSERT, as_row(m))
        raw.execute("BEGIN IMMEDIATE")
        raw.execute(_FTS_CATCH_UP)
        raw.execute("COMMIT")
        results["single"][1].append(single / (time.perf_counter() - t0))

        chunks = [corpus.messages(500) for _ in range(batches)]
        t0 = time.perf_counter()
        for chunk in chunks:
            await st.history_add_many("bench", chunk)
        results["batch"][0].append(500 * batches / (time.perf_counter() - t0))
        chunks = [[as_row(m) for m in corpus.messages(500)] for _ in range(batches)]
        t0 = time.perf_counter()
        for chunk in chunks:
            raw.execute("BEGIN IMMEDIATE")
            last = raw.execute(_LAST_HISTORY_ID).fetchone()[0]
            raw.executemany(RAW_INSERT, chunk)
            raw.execute(_FTS_INDEX_AFTER, (last,))
            raw.execute("COMMIT")
        results["batch"][1].append(500 * batches / (time.perf_counter() - t0))

        await st.close()
        raw.close()
        shutil.rmtree(run_dir)
    return {k: (statistics.median(a), statistics.median(b)) for k, (a, b) in results.items()}


async def populate(st, corpus: Corpus, rows: int, chunk: int = 20_000) -> float:
    t0 = time.perf_counter()
    done = 0
    while done < rows:
        n = min(chunk, rows - done)
        await st.history_add_many("bench", corpus.messages(n))
        done += n
        if rows >= 200_000:
            print(f"\r  populating: {done:,}/{rows:,}", end="", file=sys.stderr, flush=True)
    if rows >= 200_000:
        print(file=sys.stderr)
    return rows / (time.perf_counter() - t0)


async def time_searches(st, queries: list[str]) -> tuple[list[float], int]:
    times, hits = [], 0
    for q in queries:
        t0 = time.perf_counter()
        results = await st.history_search("bench", q)
        times.append((time.perf_counter() - t0) * 1000)
        hits += bool(results)
    return times, hits


def time_like(conn: sqlite3.Connection, queries: list[str]) -> list[float]:
    times = []
    for q in queries:
        args = [1]
        conds = []
        for word in q.replace("*", "").split():
            conds.append("body LIKE ?")
            args.append(f"%{word}%")
        t0 = time.perf_counter()
        conn.execute(
            "SELECT uid, body FROM history WHERE profile_id = ? AND "
            + " AND ".join(conds)
            + " ORDER BY timestamp DESC LIMIT 20",
            args,
        ).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def bench_search(tmp: Path, corpus: Corpus, rows: int, runs: int, n_queries: int):
    from sat.memory.storage import Storage

    path = tmp / "search.db"
    st = Storage(path)
    await st.initialise()
    await st.profile_create("bench")
    fill_rate = await populate(st, corpus, rows)
    queries = corpus.queries(n_queries)
    like_queries = queries[: min(n_queries, max(30, 3_000_000 // max(rows, 1)))]
    head_word = corpus.vocab[0]

    await time_searches(st, queries[:20])  # warm the page cache
    ours_p50, ours_p99, base_p50, base_p99, head = [], [], [], [], []
    hits = 0
    conn = sqlite3.connect(path)
    for _ in range(runs):
        times, hits = await time_searches(st, queries)
        ours_p50.append(pct(times, 0.5))
        ours_p99.append(pct(times, 0.99))
        head.append(statistics.median((await time_searches(st, [head_word] * 5))[0]))
        like = time_like(conn, like_queries)
        base_p50.append(pct(like, 0.5))
        base_p99.append(pct(like, 0.99))
    conn.close()

    await st.optimize()
    opt_p50, opt_p99 = [], []
    for _ in range(runs):
        times, _hits = await time_searches(st, queries)
        opt_p50.append(pct(times, 0.5))
        opt_p99.append(pct(times, 0.99))
    await st.close()
    size = sum(f.stat().st_size for f in tmp.glob("search.db*"))
    med = statistics.median
    return {
        "fill_rate": fill_rate,
        "p50": (med(ours_p50), med(base_p50)),
        "p99": (med(ours_p99), med(base_p99)),
        "opt": (med(opt_p50), med(opt_p99)),
        "head": (head_word, med(head)),
        "hits": hits,
        "queries": len(queries),
        "like_queries": len(like_queries),
        "size": size,
    }


async def run(args) -> None:
    import sqlite3 as _sqlite

    tmp = Path(tempfile.mkdtemp(prefix="sat-bench-", dir=args.dir))
    try:
        corpus = Corpus(seed=args.seed)
        print(
            f"SQLite {_sqlite.sqlite_version}, Python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPU, data in {tmp}"
        )
        print(f"runs={args.runs}, rows={args.rows:,}, queries={args.queries}\n")
        ins = await bench_inserts(tmp, corpus, args.runs, args.single, args.batches)
        srch = await bench_search(tmp, corpus, args.rows, args.runs, args.queries)

        header = f"{'metric':<46} {'ours':>12} {'baseline':>12} {'speed ×':>8}  baseline"
        print(header)
        print("-" * (len(header) + 40))

        def line(name, ours, base, unit, higher_better, base_name):
            factor = ours / base if higher_better else base / ours
            print(
                f"{name:<46} {ours:>10,.1f}{unit:>2} {base:>10,.1f}{unit:>2} {factor:>8.2f}  "
                f"{base_name}"
            )

        line(
            "history_add, one row per transaction (tx/s)",
            *ins["single"],
            "",
            True,
            "raw INSERT+COMMIT, same schema",
        )
        line(
            "history_add_many, batches of 500 (rows/s)",
            *ins["batch"],
            "",
            True,
            "raw executemany, same schema",
        )
        line(
            f"search p50 over {args.rows:,} msgs (ms)",
            *srch["p50"],
            "",
            False,
            "LIKE '%word%' scan",
        )
        line(
            f"search p99 over {args.rows:,} msgs (ms)",
            *srch["p99"],
            "",
            False,
            "LIKE '%word%' scan",
        )
        print()
        print(f"populate via history_add_many (20k batches): {srch['fill_rate']:,.0f} rows/s")
        print(
            f"search after storage.optimize(): p50 {srch['opt'][0]:.2f} ms, "
            f"p99 {srch['opt'][1]:.2f} ms"
        )
        print(
            f"worst case, most frequent word {srch['head'][0]!r}: {srch['head'][1]:.1f} ms "
            "(median of 5)"
        )
        print(
            f"{srch['hits']}/{srch['queries']} queries had results; LIKE timed on "
            f"{srch['like_queries']} of them; database size {srch['size'] / 1e6:,.0f} MB"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="messages for the search bench")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--queries", type=int, default=300, help="search queries per run")
    parser.add_argument("--single", type=int, default=2000, help="one-row transactions per run")
    parser.add_argument("--batches", type=int, default=20, help="500-row batches per run")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dir", default=None, help="where to put the temporary databases")
    args = parser.parse_args()

    install_asyncio_reactor()
    from twisted.internet import defer, task

    task.react(lambda _reactor: defer.ensureDeferred(run(args)))


if __name__ == "__main__":
    main()
