"""Model quality figures: ranking, probability and calibration measures."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

CALIBRATION_BINS = 10
EPSILON = 1e-15


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC by the rank-sum formula, with tied scores sharing their mean rank."""
    y = np.asarray(labels, dtype=np.int64)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both positive and negative rows")
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


def pr_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the precision-recall curve as average precision (steps at each positive)."""
    y = np.asarray(labels, dtype=np.int64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    hits = y[order]
    positives = int(hits.sum())
    if positives == 0:
        raise ValueError("PR AUC needs positive rows")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)

    return float((precision * hits).sum() / positives)


def log_loss(labels: Sequence[int], probabilities: Sequence[float]) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def top_decile_lift(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Conversion rate of the top-scored tenth of rows divided by the overall rate."""
    return lift_by_decile(labels, scores)[0]


def lift_by_decile(labels: Sequence[int], scores: Sequence[float]) -> list[float]:
    """Lift of each tenth of rows, highest scores first."""
    y = np.asarray(labels, dtype=np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    return [float(part.mean() / y.mean()) for part in np.array_split(y[order], 10)]


def calibration_bins(labels: Sequence[int], probabilities: Sequence[float]) -> list[dict[str, Any]]:
    """Mean prediction and observed rate per equal-width probability bin."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    index = np.minimum((p * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    bins = []
    for number in range(CALIBRATION_BINS):
        inside = index == number
        if inside.any():
            bins.append({"bin": number, "rows": int(inside.sum()),
                         "predicted": float(p[inside].mean()), "observed": float(y[inside].mean())})
    return bins


def calibration_error(labels: Sequence[int], probabilities: Sequence[float]) -> float:
    """Expected calibration error: row-weighted mean gap between prediction and outcome."""
    bins = calibration_bins(labels, probabilities)
    total = sum(item["rows"] for item in bins)
    return float(sum(item["rows"] * abs(item["predicted"] - item["observed"]) for item in bins) / total)


def summary(labels: Sequence[int], scores: Sequence[float], probabilities: Sequence[float]) -> dict[str, Any]:
    """Compute all figures for one scorer: ranking from ``scores``, the rest from ``probabilities``."""
    return {
        "roc_auc": round(roc_auc(labels, scores), 6),
        "pr_auc": round(pr_auc(labels, scores), 6),
        "log_loss": round(log_loss(labels, probabilities), 6),
        "top_decile_lift": round(top_decile_lift(labels, scores), 4),
        "calibration_error": round(calibration_error(labels, probabilities), 6),
        "lift_by_decile": [round(value, 4) for value in lift_by_decile(labels, scores)],
        "calibration_bins": calibration_bins(labels, probabilities),
    }
