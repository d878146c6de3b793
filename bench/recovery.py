"""Recovery time against state size, and memory and disk per lead.

Run: scripts/with-kafka.sh .venv/bin/python bench/recovery.py [--leads 10000,100000,1000000]

For each size, and first for none, it fills the lead
table's changelog of a fresh app id with that many valid lead rows. It fills
the timer table's changelog with their index entries too. Then it starts
`nurture worker` on an empty data directory. Recovery time runs from the start of the process to
the moment its ready endpoint returns true. Nothing is taken off for start-up: the
empty run became ready a second later than the run of 10,000 leads, so a difference
would measure the spread between starts. Then it reads the process's resident
memory and the size of its data directory, stops it, and counts the rows in its
RocksDB files to check that every lead came back.

The rows are those the engine's pipeline leaves after the bundled clickstream
(bench/common.bench_events), repeated under new lead ids. That history is moved
to end 60 days from now, so that no journey wait comes due while measuring.
Results go to var/bench/results/recovery.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Worker, progress  # noqa: E402

FUTURE_MS = 60 * 86_400_000
SETTLE_SECONDS = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", default="10000,100000,1000000", help="comma-separated state sizes")
    parser.add_argument("--timeout", type=float, default=900.0, help="maximum wait for one recovery (s)")
    args = parser.parse_args()
    common.broker()
    common.stop_on_sigterm()
    model_dir = common.train_model(common.RESULTS.parent)
    templates = lead_rows(model_dir)
    sizes = [0, *(int(text) for text in args.leads.split(","))]
    runs = []
    for leads in sizes:
        run = measure(leads, templates, model_dir, args.timeout)
        runs.append(run)
        progress("recovery", f"{leads:,} leads: ready after {run['ready_seconds']:.1f} s, "
                 f"RSS {run['rss_bytes'] / 1e6:,.0f} MB, data {run['disk_bytes'] / 1e6:,.0f} MB")
        common.save("recovery", {"runs": runs})  # after each size, so that a stopped run keeps the finished ones
    print_table(runs)


def lead_rows(model_dir: Path) -> list[dict[str, Any]]:
    """Return the lead rows the pipeline leaves after the clickstream's events."""
    from nurture.agents.journeys.loader import load_journeys
    from nurture.agents.pipeline import Runtime, process_event
    from nurture.agents.rules import load_rules
    from nurture.agents.state import new_lead
    from nurture.schemas.records import Event
    from nurture.scoring.model import load_model

    now_ms = int(time.time() * 1000)
    runtime = Runtime(model=load_model(model_dir), rules=load_rules(common.PROJECT / "config" / "rules.toml"),
                      book=load_journeys(common.PROJECT / "config" / "journeys.toml"))
    source = common.bench_events(31_689, now_ms + FUTURE_MS, tag="t")
    progress("recovery", f"building lead rows from {len(source):,} events")
    leads: dict[str, dict[str, Any]] = {}
    for kind, record in source:
        event = Event.from_record(kind, record)
        lead = leads.setdefault(event.lead_id, new_lead(event.lead_id))
        process_event(lead, event, runtime, now_ms)
    return list(leads.values())


def changelog(templates: list[dict[str, Any]], leads: int, app_id: str) -> Iterator[tuple[str, bytes, bytes, int]]:
    """Yield (topic, key, value, partition) of ``leads`` rows and their timer index entries."""
    from kafka.partitioner.default import murmur2

    from nurture.agents.journeys.engine import next_due
    from nurture.streams.timers import index_key

    for number in range(leads):
        template = templates[number % len(templates)]
        lead_id = f"{template['lead_id']}-r{number}"
        key = lead_id.encode()
        partition = (murmur2(key) & 0x7FFFFFFF) % common.PARTITIONS
        row = {**template, "lead_id": lead_id, "due": next_due(template)}
        yield f"{app_id}-leads-changelog", key, orjson.dumps(row), partition
        if row["due"] is not None:
            yield f"{app_id}-timers-changelog", index_key(row["due"], key), b"1", partition


def measure(leads: int, templates: list[dict[str, Any]], model_dir: Path, timeout: float) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="recovery-", dir=common.RESULTS.parent))
    app_id = f"r{uuid.uuid4().hex[:6]}"
    worker = Worker(directory, app_id, app_id, model_dir)
    try:
        worker.create_topics()
        written = asyncio.run(produce(changelog(templates, leads, app_id), leads))
        started = time.monotonic()
        worker.start()
        while not worker.ready():
            worker.check_alive()
            if time.monotonic() - started > timeout:
                raise SystemExit(f"the worker was not ready {timeout:.0f} s after its start with {leads:,} leads")
            time.sleep(0.2)
        ready = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)
        rss = worker.rss_bytes()
        disk = common.directory_bytes(directory / "data")
        worker.stop()
        stored = count_rows(directory / "data")
        if stored != leads:
            raise SystemExit(f"the worker recovered {stored:,} of {leads:,} lead rows")
        return {"leads": leads, "ready_seconds": ready, "rss_bytes": rss, "disk_bytes": disk,
                "changelog_bytes": written, "rows_recovered": stored}
    finally:
        worker.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def produce(records: Iterator[tuple[str, bytes, bytes, int]], leads: int) -> int:
    """Produce the changelog records; return the bytes of the lead rows."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=common.broker(), acks="all", linger_ms=20,
                                max_batch_size=524_288, max_request_size=8_388_608)
    await producer.start()
    written, pending = 0, []
    try:
        for topic, key, value, partition in records:
            pending.append(await producer.send(topic, value=value, key=key, partition=partition))
            if topic.endswith("-leads-changelog"):
                written += len(value)
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                progress("recovery", f"changelog: {written / 1e6:,.0f} MB of rows for {leads:,} leads so far")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return written


def count_rows(data_dir: Path) -> int:
    from faust.stores.rocksdb import RocksDBOptions

    total = 0
    for path in sorted(data_dir.glob("**/tables/leads-*.db")):
        db = RocksDBOptions(use_rocksdict=True).open(path)
        try:
            # Faust keeps each partition's changelog offset under a key of its own.
            total += sum(1 for key in db.keys() if not key.startswith(b"__faust"))
        finally:
            db.close()
    return total


def print_table(runs: list[dict[str, Any]]) -> None:
    base = runs[0]
    print(f"\n{'leads':>10}{'ready (s)':>11}{'RSS (MB)':>10}{'disk (MB)':>11}{'row (B)':>9}")
    for run in runs:
        row = run["changelog_bytes"] / run["leads"] if run["leads"] else 0
        print(f"{run['leads']:>10,}{run['ready_seconds']:>11.1f}"
              f"{run['rss_bytes'] / 1e6:>10.0f}{run['disk_bytes'] / 1e6:>11.0f}{row:>9.0f}")
    last = runs[-1]
    if last["leads"]:
        print(f"per lead at {last['leads']:,} leads: memory "
              f"{(last['rss_bytes'] - base['rss_bytes']) / last['leads']:,.0f} B, disk "
              f"{(last['disk_bytes'] - base['disk_bytes']) / last['leads']:,.0f} B, changelog row "
              f"{last['changelog_bytes'] / last['leads']:,.0f} B")


if __name__ == "__main__":
    main()
