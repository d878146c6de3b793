"""The hand-set points baseline: points per action, fading with a one-week half-life."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Sequence

import numpy as np

from nurture.config.errors import ConfigError
from nurture.scoring.features import FEATURE_NAMES, SIGNALS

DEFAULT_POINTS_FILE = Path(__file__).resolve().parents[1] / "config" / "points.toml"
FADING_SUFFIX = "_168h"


def load_points(path: str | Path = DEFAULT_POINTS_FILE) -> dict[str, float]:
    """Read the ``[points]`` table: signal name to points per action."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read points file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    table = document.get("points")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{path}: missing [points] table with at least one signal")
    for signal, value in table.items():
        if signal not in SIGNALS:
            raise ConfigError(f"{path}: [points] {signal}: unknown signal; use one of {', '.join(SIGNALS)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: [points] {signal}: expected a number, got {value!r}")
    return {signal: float(value) for signal, value in table.items()}


def points_weights(points: dict[str, float]) -> np.ndarray:
    """Return one weight per feature, so that points = feature row @ weights."""
    weights = np.zeros(len(FEATURE_NAMES))
    for signal, value in points.items():
        weights[FEATURE_NAMES.index(f"{signal}{FADING_SUFFIX}")] = value
    return weights


def score_points(rows: Sequence[Sequence[float]], points: dict[str, float]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64) @ points_weights(points)
