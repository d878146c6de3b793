"""Platt scaling: a logistic map from a raw score to a calibrated probability."""

from __future__ import annotations

from typing import Sequence

import numpy as np

EPSILON = 1e-12


def logit(probability: np.ndarray) -> np.ndarray:
    p = np.clip(probability, EPSILON, 1 - EPSILON)
    return np.log(p / (1 - p))


def fit_platt(inputs: Sequence[float], labels: Sequence[int], iterations: int = 100) -> tuple[float, float]:
    """Fit ``p = sigmoid(slope * x + intercept)`` to the labels by Newton's method.

    Targets are smoothed as Platt proposed, (positives + 1) / (positives + 2) and
    1 / (negatives + 2), so that separable data gives finite parameters.
    """
    raw = np.asarray(inputs, dtype=np.float64)
    # Newton's method converges from slope 1 only on inputs of unit scale.
    centre, scale = float(raw.mean()), float(raw.std()) or 1.0
    x = (raw - centre) / scale
    y = np.asarray(labels, dtype=np.float64)
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    target = np.where(y > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    slope, intercept = 1.0, 0.0
    for _ in range(iterations):
        p = _sigmoid(slope * x + intercept)
        weight = np.maximum(p * (1 - p), EPSILON)
        gradient = np.array([((p - target) * x).sum(), (p - target).sum()])
        hessian = np.array([[(weight * x * x).sum(), (weight * x).sum()],
                            [(weight * x).sum(), weight.sum()]]) + np.eye(2) * 1e-9
        step = np.linalg.solve(hessian, gradient)
        slope, intercept = slope - float(step[0]), intercept - float(step[1])
        if abs(step).max() < 1e-10:
            break

    return slope / scale, intercept - slope * centre / scale


def apply_platt(inputs: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    return _sigmoid(slope * np.asarray(inputs, dtype=np.float64) + intercept)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Compute 1 / (1 + exp(-z)) without overflow for large negative z."""
    return np.exp(-np.logaddexp(0.0, -z))
