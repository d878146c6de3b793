"""Scoring cost: LightGBM per event at several batch sizes, and the worker's path per event.

Run: .venv/bin/python bench/scoring.py [--model-dir DIR] [--repeats N]

It trains a model on the bundled clickstream unless --model-dir names one, builds
the feature rows of every event, then times:

* the model's score call (LightGBM plus calibration) at batch sizes 1, 16, 128, 1024;
* LightGBM's per-feature contributions (the reasons on a command), per row;
* the ingest handler's batch path per event (decode, features, scoring, rules,
  the default journeys and send policy, command encoding, the worker's default
  row cache; no Kafka), at batches of 1 and 500.

Each figure is the median of --repeats runs. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import lightgbm
import numpy as np

from common import save  # bench/common.py

PROJECT = Path(__file__).resolve().parents[1]
CLICKSTREAM = PROJECT / "data" / "ecom-clickstream" / "ecom.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="trained model to use")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (median)")
    args = parser.parse_args()

    from nurture.config.settings import LogSettings
    from nurture.scoring.model import load_model
    from nurture.streams.history import read_events
    from nurture.streams.logs import configure_logging

    configure_logging(LogSettings(format="console", level="warning"))
    progress("reading the clickstream")
    events = read_events(CLICKSTREAM)  # forms carry consent boxes, so commands pass the consent gate
    model_dir = args.model_dir or train_model(events)
    model = load_model(model_dir)
    rows = feature_rows(events)
    trees = model.booster.num_trees()
    progress(f"model {model.version}: {trees} trees, {len(rows[0])} features, {len(rows)} rows")

    print(f"machine: {platform.machine()}, {cpu_name()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, LightGBM {lightgbm.__version__}")
    print(f"model: {trees} trees, {len(rows[0])} features\n")
    print(f"{'measure':<46}{'µs per event':>14}{'events/s':>12}")
    for size in (1, 16, 128, 1024):
        name = f"model.score, batch of {size}"
        seconds = median_seconds(name, lambda: score_in_batches(model, rows, size), args.repeats)
        report(name, seconds, len(rows))
    sample = rows[:300]
    name = "reasons (decision-path credits), one row at a time"
    seconds = median_seconds(name, lambda: [model.explain(row) for row in sample], args.repeats)
    report(name, seconds, len(sample))
    name = "LightGBM SHAP values, one row at a time"
    seconds = median_seconds(name, lambda: [shap_values(model, row) for row in sample], args.repeats)
    report(name, seconds, len(sample))
    handler = {}
    for size in (1, 500):
        name = f"ingest handler, batch of {size}"
        seconds = median_seconds(name, lambda: run_handler(model, events, size), args.repeats)
        report(name, seconds, len(events))
        handler[size] = seconds / len(events) * 1e6
    save("scoring", {"handler_us_batch_1": handler[1], "handler_us_batch_500": handler[500]})
    if args.model_dir is None:
        shutil.rmtree(model_dir, ignore_errors=True)


def shap_values(model: Any, row: list[float]) -> Any:
    """Return LightGBM's SHAP values of one row, the reasons' former source, for comparison."""
    return model.booster.predict(np.asarray([row]), pred_contrib=True, num_threads=1)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def train_model(events: list[Any]) -> Path:
    from nurture.scoring.train import train

    directory = Path(tempfile.mkdtemp(prefix="nurture-bench-model-"))
    progress(f"training a model into {directory}")
    train(events, directory)
    return directory


def feature_rows(events: list[Any]) -> list[list[float]]:
    from nurture.scoring import features

    states: dict[str, dict[str, Any]] = {}
    rows = []
    for event in events:
        state = states.setdefault(event.lead_id, features.new_state())
        features.update(state, event)
        rows.append(features.vector(state, event.event_time))
    return rows


def score_in_batches(model: Any, rows: list[list[float]], size: int) -> None:
    matrix = np.asarray(rows, dtype=np.float64)
    for start in range(0, len(rows), size):
        model.score(matrix[start:start + size])


def run_handler(model: Any, events: list[Any], size: int) -> None:
    from nurture.agents.ingest import IngestHandler, Inputs, Outputs, RuntimeHolder
    from nurture.agents.row_cache import RowCache
    from nurture.config.settings import WorkerSettings
    from nurture.agents.journeys.loader import load_journeys
    from nurture.agents.pipeline import Runtime
    from nurture.agents.rules import load_rules
    from nurture.streams.clock import SystemClock
    from nurture.streams.codecs import encode_event

    records = [_Record(_Message(f"events.{e.kind}", e.lead_id.encode(), encode_event(e, "json")))
               for e in events]
    runtime = Runtime(model=model, rules=load_rules(PROJECT / "config" / "rules.toml"),
                      book=load_journeys(PROJECT / "config" / "journeys.toml"))

    async def discard(*_: Any) -> None:
        return None

    kinds = ("click", "open", "form", "consent")
    inputs = Inputs({f"events.{kind}": kind for kind in kinds}, {f"events.{kind}": "json" for kind in kinds}, "timers")
    handler = IngestHandler(inputs, {}, Outputs(discard, discard), RuntimeHolder(runtime),
                            index={}, clock=SystemClock(), privacy=_privacy(discard),
                            rows=RowCache(WorkerSettings().row_cache_leads))

    async def feed() -> None:
        for start in range(0, len(records), size):
            await handler.handle_batch(records[start:start + size], lambda record: None)

    asyncio.run(feed())


def _privacy(discard: Any) -> Any:
    """Privacy parts with a fresh key ring: rows are sealed as in a worker, the ledger is a dict."""
    from pathlib import Path

    from nurture.agents.privacy.erasure import ErasureMemory
    from nurture.agents.privacy.keys import keygen_text, parse_keys
    from nurture.agents.privacy.requests import PrivacyParts
    from nurture.agents.privacy.vault import Vault
    from nurture.streams.ledger_store import LedgerStore

    ring = parse_keys(keygen_text(), "bench")
    memory = ErasureMemory(ring)
    memory.loaded.set()
    return PrivacyParts(Vault(ring), memory, LedgerStore({}), discard, discard, Path("var/bench-exports"))


class _Message:
    __slots__ = ("topic", "partition", "offset", "key", "value")

    def __init__(self, topic: str, key: bytes, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = topic, 0, 0, key, value


class _Record:
    __slots__ = ("message",)

    def __init__(self, message: _Message) -> None:
        self.message = message


def median_seconds(name: str, work: Callable[[], Any], repeats: int) -> float:
    timings = []
    for run in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
        progress(f"{name}: run {run + 1}/{repeats} took {timings[-1]:.3f} s")
    return statistics.median(timings)


def report(name: str, seconds: float, count: int) -> None:
    print(f"{name:<46}{seconds / count * 1e6:>14.2f}{count / seconds:>12,.0f}", flush=True)


if __name__ == "__main__":
    main()
