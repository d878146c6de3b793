"""Contender (c): a plain Faust agent that handles and scores each event on its own.

Run: .venv/bin/python bench/faust_agent.py --prefix P --group G --expect N --result FILE --model-dir DIR --journeys FILE --data-dir DIR

One agent iterates the events of P.click, P.open and P.form one at a time. For
each it reads the lead row from a RocksDB table with a changelog, runs the
engine's pipeline on that event alone (bench/single.py) and publishes the
commands to P.G.commands. Once it has handled N records it writes a JSON summary
(first and last record's wall time, count) to --result and keeps running until
it is stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EVENT_KINDS, PARTITIONS, broker, free_port  # noqa: E402
from single import Single, contender_args  # noqa: E402


def build(args: argparse.Namespace):
    import faust

    app = faust.App(args.group, broker=f"kafka://{broker()}", store="rocksdb://", datadir=args.data_dir,
                    topic_partitions=PARTITIONS, key_serializer="raw", value_serializer="raw",
                    web_host="127.0.0.1", web_bind="127.0.0.1", web_port=free_port(), autodiscover=False,
                    processing_guarantee=args.guarantee.replace("-", "_"))
    kinds = {f"{args.prefix}.{kind}": kind for kind in EVENT_KINDS}
    source = app.topic(*kinds, key_serializer="raw", value_serializer="raw")
    commands = app.topic(f"{args.prefix}.{args.group}.commands", key_serializer="raw", value_serializer="raw")
    rows = app.Table("rows", default=None, partitions=PARTITIONS, key_type=bytes, value_type=bytes,
                     options={"driver": "rocksdict"})
    single = Single(args, "faust")

    @app.agent(source)
    async def handle(stream):
        async for event in stream.events():
            message = event.message
            stored = rows.get(message.key) if message.key else None
            lead, encoded = single.handle(kinds[message.topic], message.key, message.value,
                                          orjson.loads(stored) if stored else None)
            if lead is not None:
                rows[message.key] = orjson.dumps(lead)
            for command in encoded:
                await commands.send(key=message.key, value=command)

    return app


def main() -> None:
    from faust import Worker

    # At warning level Faust's worker lowers the root logger to DEBUG for its spinner.
    # The engine's worker avoids that cost, so the contender runs at info level to avoid it too.
    Worker(build(contender_args(__doc__.splitlines()[0])), loglevel="info", quiet=True,
           redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
