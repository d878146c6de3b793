"""Contender (d): the same pipeline written with Quix Streams, one event at a time.

Run: var/bench-venv/bin/python bench/quix_pipeline.py --prefix P --group G --expect N --result FILE --model-dir DIR --journeys FILE --data-dir DIR

It runs in a virtual environment of its own (Quix Streams brings confluent-kafka),
which the bench target of the Makefile creates. One stateful function over the
three event topics keeps the lead row in Quix's RocksDB state (with its changelog), runs the
engine's pipeline on the event alone (bench/single.py) and sends the commands to
P.G.commands. Once it has handled N records it writes a JSON summary (first and
last record's wall time, count) on stdout and keeps running until it is stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EVENT_KINDS, broker  # noqa: E402
from single import Single, contender_args  # noqa: E402


def build(args: argparse.Namespace):
    from quixstreams import Application

    app = Application(broker_address=broker(), consumer_group=args.group, auto_offset_reset="earliest",
                      state_dir=args.data_dir, loglevel="WARNING", processing_guarantee=args.guarantee)
    commands = app.topic(f"{args.prefix}.{args.group}.commands", key_serializer="bytes", value_serializer="bytes")
    single = Single(args, "quix")

    def step(value: tuple[str, bytes], key: bytes, timestamp: int, headers, state) -> list[bytes]:
        kind, payload = value
        lead, encoded = single.handle(kind, key, payload, state.get("lead"))
        if lead is not None:
            state.set("lead", lead)
        return encoded

    # One frame over the three topics, so that a lead's events share one state store.
    frames = [app.dataframe(app.topic(f"{args.prefix}.{kind}", key_deserializer="bytes", value_deserializer="bytes"))
              .apply(lambda value, kind=kind: (kind, value)) for kind in EVENT_KINDS]
    merged = frames[0].concat(frames[1]).concat(frames[2])
    merged.apply(step, stateful=True, metadata=True, expand=True).to_topic(commands)
    return app


def main() -> None:
    build(contender_args(__doc__.splitlines()[0])).run()


if __name__ == "__main__":
    main()
