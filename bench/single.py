"""One event at a time through the engine's own pipeline, for the Faust and Quix Streams contenders.

``Single.handle`` decodes a record with the worker's codec and takes the stored
lead row, or a new one when there is none. It runs ``pipeline.process_event``
(features, one LightGBM call for this event alone, rules, journeys, delivery
policy) and returns the new row and the encoded commands. It imports neither
Faust nor a Kafka client, so both contenders run it unchanged. The contenders
leave out what the worker adds: the timer index, dead letters and metrics.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from nurture.agents.journeys.loader import load_journeys
from nurture.agents.pipeline import Runtime, process_event
from nurture.agents.rules import load_rules
from nurture.agents.state import new_lead
from nurture.scoring.model import load_model
from nurture.streams.codecs import DecodeError, decode_event, encode_command

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import progress, write_result  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]


GUARANTEES = ("exactly-once", "at-least-once")


def contender_args(description: str) -> argparse.Namespace:
    """Parse the options both contenders take."""
    parser = argparse.ArgumentParser(description=description)
    for name in ("--prefix", "--group", "--model-dir", "--journeys", "--data-dir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--expect", type=int, required=True, help="records to handle before writing the result")
    parser.add_argument("--result", required=True, help="file for the JSON summary")
    parser.add_argument("--guarantee", choices=GUARANTEES, default="exactly-once",
                        help="processing guarantee; the worker's default is exactly once")
    return parser.parse_args()


class Single:
    """The per-event work of one contender, with its count, progress and result file."""

    def __init__(self, args: argparse.Namespace, tag: str) -> None:
        self.runtime = Runtime(model=load_model(args.model_dir),
                               rules=load_rules(PROJECT / "config" / "rules.toml"),
                               book=load_journeys(args.journeys))
        self.tag = tag
        self.expect = args.expect
        self.result = args.result
        self.count = 0
        self.first = 0.0
        self.rejected = 0

    def handle(self, kind: str, key: bytes, value: bytes,
               stored: dict[str, Any] | None) -> tuple[dict[str, Any] | None, list[bytes]]:
        """Return the lead's row after the event (None for a rejected record) and its encoded commands."""
        self._count()
        try:
            event = decode_event(kind, "json", value, key, time.time_ns() // 1_000_000)
        except DecodeError:
            self.rejected += 1
            return None, []
        lead = stored if stored is not None else new_lead(event.lead_id)
        outcome = process_event(lead, event, self.runtime, time.time_ns() // 1_000_000)
        return lead, [encode_command(command) for command in outcome.commands]

    def _count(self) -> None:
        self.count += 1
        self.first = self.first or time.time()
        if self.count % 20_000 == 0:
            progress(self.tag, f"handled {self.count:,} of {self.expect:,}")
        if self.count == self.expect:
            summary = {"first": self.first, "last": time.time(), "count": self.count, "rejected": self.rejected}
            write_result(self.result, summary)
