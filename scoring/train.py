"""Point-in-time training rows, LightGBM training, calibration and the model card.

Each event of a lead is a scoring time. The row's features come from
``features.update``/``features.vector`` over that lead's events up to and
including it, in time order, so no row reads a later event. Its label is 1 when
the lead converts within the horizon after the scoring time.

The time range is cut in three: training rows (whose horizon ends before the
calibration slice starts), calibration rows (whose horizon ends before the
evaluation slice starts) and evaluation rows (the latest slice, by default a
fifth of the range). The model learns
on the first, Platt scaling on the second, and every reported figure comes from the
third, so they are measured on the future.
"""

from __future__ import annotations

import bisect
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
from nurture.config.settings import EVENT_KINDS
from nurture.schemas.records import Event
from nurture.scoring import features, metrics
from nurture.scoring.baseline import load_points, score_points
from nurture.scoring.calibration import apply_platt, fit_platt, logit
from nurture.scoring.model import CARD_FILE, MODEL_FILE, model_version

log = structlog.get_logger("nurture.train")

MS_PER_DAY = 86_400_000
SEED = 20240601
PARAMS: dict[str, Any] = {
    "objective": "binary",
    # Small leaves and a slow rate suit histories of thousands of leads, not millions.
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
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

    def take(self, index: list[int]) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.asarray([self.matrix[i] for i in index], dtype=np.float64)
        return matrix, np.asarray([self.labels[i] for i in index], dtype=np.int64)


@dataclass(frozen=True)
class Split:
    train: list[int]
    calibration: list[int]
    evaluation: list[int]


def build_rows(events: Sequence[Event], horizon_ms: int,
               progress: Callable[[int, int], None] | None = None) -> Rows:
    """Build one point-in-time row per non-conversion event, in time order.

    Consent changes are no engagement: they change no features and give no rows.
    """
    events = sorted((event for event in events if event.kind in EVENT_KINDS), key=lambda event: event.event_time)
    conversions: dict[str, list[int]] = {}
    for event in events:
        if event.is_conversion:
            conversions.setdefault(event.lead_id, []).append(event.event_time)

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


def split_rows(rows: Rows, first: int, last: int, horizon_ms: int,
               eval_fraction: float, calibration_fraction: float) -> Split:
    """Cut the rows by time so that no label of an earlier part reaches into a later part."""
    span = last - first
    eval_start = first + int(span * (1.0 - eval_fraction))
    # Calibration rows need their whole horizon before the evaluation slice, so
    # the calibration slice is its share of the time range plus one horizon.
    calibration_start = eval_start - horizon_ms - int(span * calibration_fraction)
    return Split(
        train=[i for i, at in enumerate(rows.times) if at + horizon_ms <= calibration_start],
        calibration=[i for i, at in enumerate(rows.times)
                     if at >= calibration_start and at + horizon_ms <= eval_start],
        evaluation=[i for i, at in enumerate(rows.times) if at >= eval_start and at + horizon_ms <= last],
    )


def train(events: Sequence[Event], out_dir: str | Path, *, horizon_days: float = 7.0,
          eval_fraction: float = 0.2, calibration_fraction: float = 0.05, rounds: int = 200,
          points_file: str | Path | None = None, source_name: str = "",
          source_sha256: str = "") -> dict[str, Any]:
    """Train, calibrate and evaluate on ``events``; write the model and its card."""
    if not events:
        raise TrainingError("the history has no events")
    points = load_points(points_file) if points_file else load_points()
    horizon_ms = int(horizon_days * MS_PER_DAY)
    started = time.monotonic()
    rows = build_rows(events, horizon_ms, progress=_log_rows_progress)
    first = min(event.event_time for event in events)
    last = max(event.event_time for event in events)
    split = split_rows(rows, first, last, horizon_ms, eval_fraction, calibration_fraction)
    for name, index in (("training", split.train), ("calibration", split.calibration),
                        ("evaluation", split.evaluation)):
        _check_slice(name, rows, index)

    booster = _fit(rows, split.train, rounds)
    calibration_matrix, calibration_labels = rows.take(split.calibration)
    slope, intercept = fit_platt(logit(booster.predict(calibration_matrix, num_threads=1)),
                                 calibration_labels)
    points_slope, points_intercept = fit_platt(score_points(calibration_matrix, points),
                                               calibration_labels)

    eval_matrix, eval_labels = rows.take(split.evaluation)
    raw = booster.predict(eval_matrix, num_threads=1)
    calibrated = apply_platt(logit(raw), slope, intercept)
    baseline_points = score_points(eval_matrix, points)
    baseline_probability = apply_platt(baseline_points, points_slope, points_intercept)

    model_text = booster.model_to_string()
    card = {
        "version": model_version(model_text),
        "features": list(features.FEATURE_NAMES),
        "feature_state_version": features.STATE_VERSION,
        "trained_at": _iso(int(time.time() * 1000)),
        "source": {"file": source_name, "sha256": source_sha256, "events": len(events)},
        "data_range": {"from": _iso(first), "to": _iso(last)},
        "horizon_days": horizon_days,
        "train": _slice_summary(rows, split.train),
        "calibration": {**_slice_summary(rows, split.calibration), "method": "platt",
                        "slope": slope, "intercept": intercept},
        "eval": {**_slice_summary(rows, split.evaluation),
                 **metrics.summary(eval_labels, calibrated, calibrated)},
        "baseline": {"kind": "hand-set points fading with a one-week half-life",
                     "points": points, "platt": {"slope": points_slope, "intercept": points_intercept},
                     **metrics.summary(eval_labels, baseline_points, baseline_probability)},
        "params": {**PARAMS, "rounds": rounds},
        "lightgbm_version": lightgbm.__version__,
    }
    write_model(Path(out_dir), model_text, card)
    log.info("training_finished", version=card["version"], roc_auc=card["eval"]["roc_auc"],
             baseline_roc_auc=card["baseline"]["roc_auc"], train_rows=len(split.train),
             eval_rows=len(split.evaluation), seconds=round(time.monotonic() - started, 2))

    return card


def _fit(rows: Rows, index: list[int], rounds: int) -> lightgbm.Booster:
    matrix, labels = rows.take(index)
    dataset = lightgbm.Dataset(
        matrix, label=labels.astype(np.float64), feature_name=list(features.FEATURE_NAMES),
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
            "in the training, calibration and evaluation slices)"
        )


def _slice_summary(rows: Rows, index: list[int]) -> dict[str, Any]:
    return {
        "rows": len(index),
        "positives": int(sum(rows.labels[i] for i in index)),
        "from": _iso(rows.times[index[0]]),
        "to": _iso(rows.times[index[-1]]),
    }


def write_model(out_dir: Path, model_text: str, card: dict[str, Any]) -> None:
    """Write the model, then its card, each by an atomic rename.

    A worker that reads the directory between the two renames finds a card whose
    version does not match the model text and waits for the next check.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in ((MODEL_FILE, model_text), (CARD_FILE, json.dumps(card, indent=2) + "\n")):
        temporary = out_dir / f".{name}.tmp"
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, out_dir / name)


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")
