"""Timer index: the cost of one due check against the number of leads, and the firing delay.

Run: .venv/bin/python bench/timers.py [--repeats N] [--leads 1000,1000000] [--due 100]
     NURTURE_BROKER=kafka://127.0.0.1:PORT .venv/bin/python bench/timers.py --firing 200

Part one fills a RocksDB database (rocksdict, Faust's options) with one index
key per lead, of which --due are due and the rest lie up to 60 days ahead, and
times the check the worker runs (streams/timers.find_due). It does so again
after as many keys as the leads have were fired and deleted, because RocksDB
keeps deletions as tombstones until compaction and a walk from the first key
steps over them.

Part two (--firing N, needs a broker) starts a worker whose clock reads a file
and puts N leads into a one-minute wait. It then moves the clock past the due
time and measures how long each lead's next command takes to reach
nurture.commands.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="checks per figure (median)")
    parser.add_argument("--leads", default="1000,1000000", help="comma-separated index sizes")
    parser.add_argument("--due", type=int, default=100, help="due items in each index")
    parser.add_argument("--firing", type=int, default=0, help="leads for the firing delay run (needs a broker)")
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'leads':>10} {'due':>5} {'tombstones':>11} {'walk starts at':>15} {'check (µs)':>12}")
    for leads in (int(text) for text in args.leads.split(",")):
        for tombstones, start, median in check_cost(leads, args.due, args.repeats):
            print(f"{leads:>10} {args.due:>5} {tombstones:>11} {start:>15} {median:>12.1f}", flush=True)
    if args.firing:
        from firing import firing_delays  # bench/firing.py

        from common import save

        delays = firing_delays(args.firing)
        save("timers", {"leads": len(delays), "p50_ms": percentile(delays, 50), "p99_ms": percentile(delays, 99)})
        print(f"firing delay over {len(delays)} leads, from clock move to command on the topic: "
              f"p50 {percentile(delays, 50):.0f} ms, p99 {percentile(delays, 99):.0f} ms, "
              f"max {max(delays):.0f} ms")


def check_cost(leads: int, due: int, repeats: int) -> list[tuple[int, str, float]]:
    """Return (tombstones, where the walk starts, median µs per check), before and after deletions."""
    from faust.stores.rocksdb import RocksDBOptions

    from nurture.streams.timers import Floors, NoticeLog, find_due, index_key

    directory = Path(tempfile.mkdtemp(prefix="nurture-timers-"))
    try:
        db = RocksDBOptions(use_rocksdict=True).open(directory / "index.db")
        now = 1_800_000_000_000
        rng = random.Random(7)
        progress(f"writing {leads} index keys")
        _write(db, [index_key(now - rng.randrange(1, 3_600_000), f"due-{i}".encode()) for i in range(due)])
        _write(db, [index_key(now + rng.randrange(60_000, 60 * 86_400_000), f"lead-{i}".encode())
                    for i in range(leads - due)])
        results = [(0, "first key", _median_check(db, now, repeats, due, find_due, NoticeLog, None))]
        # Keys of waits that fired earlier: written, then deleted, all before the due ones.
        fired = [index_key(now - 86_400_000 - i, f"fired-{i}".encode()) for i in range(leads)]
        _write(db, fired)
        _delete(db, fired)
        results.append((leads, "first key", _median_check(db, now, repeats, due, find_due, NoticeLog, None)))
        # The worker starts each walk at the floor its previous walk found.
        floors = Floors()
        find_due({0: db}, {0}, now, NoticeLog(), floors)
        results.append((leads, "floor", _median_check(db, now, repeats, due, find_due, NoticeLog, floors)))
        db.close()
        return results
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _write(db, keys: list[bytes]) -> None:
    from rocksdict import WriteBatch

    for start in range(0, len(keys), 100_000):
        batch = WriteBatch(raw_mode=True)
        for key in keys[start:start + 100_000]:
            batch.put(key, b"1")
        db.write(batch)


def _delete(db, keys: list[bytes]) -> None:
    from rocksdict import WriteBatch

    for start in range(0, len(keys), 100_000):
        batch = WriteBatch(raw_mode=True)
        for key in keys[start:start + 100_000]:
            batch.delete(key)
        db.write(batch)


def _median_check(db, now: int, repeats: int, due: int, find_due, notice_log, floors) -> float:
    timings = []
    for _ in range(repeats):
        notices = notice_log()  # a fresh log, so every check finds all due items
        started = time.perf_counter()
        found = find_due({0: db}, {0}, now, notices, floors)
        timings.append((time.perf_counter() - started) * 1e6)
        if len(found) != due:
            raise SystemExit(f"the check found {len(found)} due items, expected {due}")
    return statistics.median(timings)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def progress(message: str) -> None:
    print(f"[timers] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
