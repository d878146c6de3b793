"""The limit: a raw aiokafka consumer that copies every event record to an output topic.

Run: .venv/bin/python bench/passthrough.py --prefix P --group G --expect N --result FILE

It reads P.click, P.open and P.form from the beginning in consumer group G and
produces each record's key and value to P.G.out. Once it has copied N records it
writes a JSON summary (first and last record's wall time, count) to --result and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EVENT_KINDS, broker, progress, write_result  # noqa: E402


async def copy(prefix: str, group: str, expect: int) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(*(f"{prefix}.{kind}" for kind in EVENT_KINDS), bootstrap_servers=broker(),
                                group_id=group, auto_offset_reset="earliest", max_partition_fetch_bytes=4_194_304)
    producer = AIOKafkaProducer(bootstrap_servers=broker(), acks="all", linger_ms=5, max_batch_size=262_144)
    await consumer.start()
    await producer.start()
    out, count, first = f"{prefix}.{group}.out", 0, 0.0
    try:
        while count < expect:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            pending = []
            for records in batches.values():
                for record in records:
                    pending.append(await producer.send(out, value=record.value, key=record.key))
            if not pending:
                continue
            first = first or time.time()
            await asyncio.gather(*pending)
            await consumer.commit()
            count += len(pending)
            if count // 20_000 != (count - len(pending)) // 20_000:
                progress("passthrough", f"copied {count:,} of {expect:,}")
        return {"first": first, "last": time.time(), "count": count}
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--result", required=True, help="file for the JSON summary")
    args = parser.parse_args()
    write_result(args.result, asyncio.run(copy(args.prefix, args.group, args.expect)))


if __name__ == "__main__":
    main()
