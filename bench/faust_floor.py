"""The floor of Faust's consumer path: the worker's Faust settings and batching, and no work per event.

Run: .venv/bin/python bench/faust_floor.py --prefix P --group G --expect N --result FILE --data-dir DIR

One agent reads P.click, P.open and P.form in the worker's batches
(streams/batching.py), with the worker's Faust app class (streams/faust_fixes.py),
settings and processing guarantee (exactly once by default). It only counts the
records, which ``take_batches`` acknowledges after each batch. Its rate bounds
every engine built on Faust agents on this machine, and the worker's own work
comes on top. Once it has read N records it writes a JSON summary (first
and last record's wall time, count) to --result and keeps running until it is
stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EVENT_KINDS, PARTITIONS, broker, free_port, progress, write_result  # noqa: E402


def build(args: argparse.Namespace):
    from nurture.config.settings import WorkerSettings
    from nurture.streams.batching import take_batches
    from nurture.streams.faust_fixes import App
    from nurture.streams.transactions import faust_options

    worker = WorkerSettings(processing_guarantee=args.guarantee.replace("-", "_"))
    app = App(args.group, broker=f"kafka://{broker()}", datadir=args.data_dir,
                    topic_partitions=PARTITIONS, key_serializer="raw", value_serializer="raw",
                    web_host="127.0.0.1", web_bind="127.0.0.1", web_port=free_port(), autodiscover=False,
                    producer_acks=-1, **faust_options(worker))
    source = app.topic(*(f"{args.prefix}.{kind}" for kind in EVENT_KINDS), key_serializer="raw",
                       value_serializer="raw")
    state = {"count": 0, "first": 0.0}

    @app.agent(source)
    async def read(stream):
        async for records in take_batches(stream, worker.batch_max_events, worker.batch_max_wait_ms / 1000.0):
            state["first"] = state["first"] or time.time()
            before, state["count"] = state["count"], state["count"] + len(records)
            if before // 20_000 != state["count"] // 20_000:
                progress("faust-floor", f"read {state['count']:,} of {args.expect:,}")
            if before < args.expect <= state["count"]:
                write_result(args.result, {"first": state["first"], "last": time.time(), "count": state["count"]})

    return app


def main() -> None:
    from nurture.streams.faust_fixes import Worker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--prefix", "--group", "--data-dir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--expect", type=int, required=True, help="records to read before writing the result")
    parser.add_argument("--result", required=True, help="file for the JSON summary")
    parser.add_argument("--guarantee", choices=("exactly-once", "at-least-once"), default="exactly-once",
                        help="processing guarantee; the worker's default is exactly once")
    args = parser.parse_args()
    Worker(build(args), loglevel="info", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
