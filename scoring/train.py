"""Point-in-time training rows, LightGBM training and the model card.

Each event of a lead is a scoring time. The row's features come from
``features.update``/``features.vector`` over that lead's events up to and
including it, in time order, so no row reads a later event. Its label is 1 when
the lead converts within the horizon after the scoring time. Training uses the
rows whose horizon ends before the evaluation slice starts; evaluation uses the
later slice, so the reported AUC is measured on the future.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import lightgbm
import numpy as np
import structlog

from nurture.config.errors import NurtureError
from nurture.schemas.records import Event
from nurture.scoring import features
from nurture.scoring.model import CARD_FILE, MODEL_FILE

log = structlog.get_logger("nurture.train")

MS_PER_DAY = 86_400_000
SEED = 20240601
PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "seed": SEED,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "verbose": -1,
}


class TrainingError(NurtureError):
    """The history cannot give a usable model (too few rows or no positives)."""


@dataclass
class Rows:
    matrix: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)


def build_rows(events: Sequence[Event], horizon_ms: int,
               progress: Callable[[int, int], None] | None = None) -> Rows:
    """Build one point-in-time row per non-conversion event, in time order."""
    events = sorted(events, key=lambda event: event.event_time)
    conversions: dict[str, list[int]] = {}
    for event in events:
        if event.is_conversion:
            conversions.setdefault(event.lead_id, []).append(event.event_time)
    for times in conversions.values():
        times.sort()

    states: dict[str, dict[str, Any]] = {}
    rows = Rows()
    step = max(1, len(events) // 10)
    for number, event in enumerate(events, start=1):
        state = states.setdefault(event.lead_id, features.new_state())
        features.update(state, event)
        if not event.is_conversion:
            rows.matrix.append(features.vector(state, event.event_time))
            rows.labels.append(_converts_within(conversions.get(event.lead_id, []),
                                                event.event_time, horizon_ms))
            rows.times.append(event.event_time)
        if progress and (number % step == 0 or number == len(events)):
            progress(number, len(events))

    return rows


def _converts_within(conversion_times: list[int], at: int, horizon_ms: int) -> int:
    """Return 1 when a conversion falls in (at, at + horizon]."""
    index = bisect.bisect_right(conversion_times, at)
    return int(index < len(conversion_times) and conversion_times[index] <= at + horizon_ms)


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC by the rank-sum formula, with tied scores sharing their mean rank."""
    y = np.asarray(labels, dtype=np.int64)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        raise TrainingError("AUC needs both converting and non-converting rows in the slice")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores, dtype=np.float64)[order]
    ranks = np.empty(len(y), dtype=np.float64)
    start = 0
    while start < len(y):
        end = start
        while end + 1 < len(y) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    rank_sum = float(ranks[y == 1].sum())

    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def train(events: Sequence[Event], out_dir: str | Path, *, horizon_days: float = 7.0,
          eval_fraction: float = 0.2, rounds: int = 200, source_name: str = "",
          source_sha256: str = "") -> dict[str, Any]:
    """Train on the earlier part of ``events``, evaluate on the later slice, write model and card."""
    if not events:
        raise TrainingError("the history has no events")
    horizon_ms = int(horizon_days * MS_PER_DAY)
    started = time.monotonic()
    rows = build_rows(events, horizon_ms, progress=_log_rows_progress)

    first = min(event.event_time for event in events)
    last = max(event.event_time for event in events)
    eval_start = first + int((last - first) * (1.0 - eval_fraction))
    train_index = [i for i, at in enumerate(rows.times) if at + horizon_ms <= eval_start]
    eval_index = [i for i, at in enumerate(rows.times)
                  if at >= eval_start and at + horizon_ms <= last]
    _check_slice("training", rows, train_index)
    _check_slice("evaluation", rows, eval_index)

    booster = _fit(rows, train_index, rounds)
    eval_matrix = np.asarray([rows.matrix[i] for i in eval_index], dtype=np.float64)
    eval_scores = booster.predict(eval_matrix, num_threads=1)
    auc = roc_auc([rows.labels[i] for i in eval_index], eval_scores)

    model_text = booster.model_to_string()
    card = {
        "version": "m-" + hashlib.sha256(model_text.encode("utf-8")).hexdigest()[:12],
        "features": list(features.FEATURE_NAMES),
        "feature_state_version": features.STATE_VERSION,
        "trained_at": _iso(int(time.time() * 1000)),
        "source": {"file": source_name, "sha256": source_sha256, "events": len(events)},
        "data_range": {"from": _iso(first), "to": _iso(last)},
        "horizon_days": horizon_days,
        "train": _slice_summary(rows, train_index),
        "eval": {**_slice_summary(rows, eval_index), "auc": round(auc, 6)},
        "params": {**PARAMS, "rounds": rounds},
        "lightgbm_version": lightgbm.__version__,
    }
    _write_atomically(Path(out_dir), model_text, card)
    log.info("training_finished", version=card["version"], auc=card["eval"]["auc"],
             train_rows=len(train_index), eval_rows=len(eval_index),
             seconds=round(time.monotonic() - started, 2))

    return card


def _fit(rows: Rows, index: list[int], rounds: int) -> lightgbm.Booster:
    matrix = np.asarray([rows.matrix[i] for i in index], dtype=np.float64)
    labels = np.asarray([rows.labels[i] for i in index], dtype=np.float64)
    dataset = lightgbm.Dataset(
        matrix, label=labels, feature_name=list(features.FEATURE_NAMES),
        categorical_feature=list(features.CATEGORICAL_FEATURES), free_raw_data=True,
    )
    return lightgbm.train(PARAMS, dataset, num_boost_round=rounds,
                          callbacks=[_log_rounds_progress(rounds)])


def _log_rows_progress(done: int, total: int) -> None:
    log.info("training_rows_progress", events_done=done, events_total=total)


def _log_rounds_progress(total: int) -> Callable[[Any], None]:
    step = max(1, total // 4)

    def callback(env: Any) -> None:
        done = env.iteration + 1
        if done % step == 0 or done == total:
            log.info("training_rounds_progress", rounds_done=done, rounds_total=total)

    return callback


def _check_slice(name: str, rows: Rows, index: list[int]) -> None:
    positives = sum(rows.labels[i] for i in index)
    if len(index) < 50 or positives == 0 or positives == len(index):
        raise TrainingError(
            f"the {name} slice has {len(index)} rows and {positives} conversions; "
            "give a longer history (it needs both converting and non-converting leads "
            "on both sides of the split)"
        )


def _slice_summary(rows: Rows, index: list[int]) -> dict[str, Any]:
    return {
        "rows": len(index),
        "positives": int(sum(rows.labels[i] for i in index)),
        "from": _iso(rows.times[index[0]]),
        "to": _iso(rows.times[index[-1]]),
    }


def _write_atomically(out_dir: Path, model_text: str, card: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in ((MODEL_FILE, model_text), (CARD_FILE, json.dumps(card, indent=2) + "\n")):
        temporary = out_dir / f".{name}.tmp"
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, out_dir / name)


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")
