"""Loading a trained model with its card, scoring leads and explaining scores."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import lightgbm
import numpy as np

from nurture.config.errors import NurtureError
from nurture.scoring.attribution import PathAttribution
from nurture.scoring.calibration import apply_platt, logit
from nurture.scoring.explain import top_reasons
from nurture.scoring.features import FEATURE_NAMES

MODEL_FILE = "model.txt"
CARD_FILE = "card.json"


class ModelError(NurtureError):
    """A model directory is missing, unreadable or made for other features."""


@dataclass(frozen=True)
class ScoredLead:
    probability: float  # calibrated probability of a conversion within the horizon
    score: float  # the probability shown as 0-100


class LeadModel:
    """A LightGBM booster with its model card and calibration."""

    def __init__(self, booster: lightgbm.Booster, card: dict[str, Any]) -> None:
        self.booster = booster
        self.card = card
        self.version = str(card["version"])
        self.slope = float(card["calibration"]["slope"])
        self.intercept = float(card["calibration"]["intercept"])
        self.attribution = PathAttribution(booster)

    def score(self, rows: Sequence[Sequence[float]]) -> list[ScoredLead]:
        """Score a batch of feature rows; each row's result depends only on that row."""
        matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))
        raw = self.booster.predict(matrix, num_threads=1)
        probabilities = apply_platt(logit(raw), self.slope, self.intercept)

        return [
            ScoredLead(float(p), round(float(p) * 100.0, 2)) for p in probabilities
        ]

    def explain(self, row: Sequence[float], count: int = 3) -> list[dict[str, Any]]:
        """Return the top ``count`` reasons for one row's score, from the credits of its decision paths."""
        contributions = self.attribution.contributions([row])[0]

        return top_reasons(row, contributions[: len(FEATURE_NAMES)], count)


def load_model(directory: str | Path) -> LeadModel:
    """Load ``model.txt`` and ``card.json`` from ``directory`` and check they fit this engine."""
    directory = Path(directory)
    model_path = directory / MODEL_FILE
    card_path = directory / CARD_FILE
    for path in (model_path, card_path):
        if not path.is_file():
            raise ModelError(
                f"model file {path} not found; train one with "
                f"`nurture train --history FILE --out {directory}`"
            )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"model card {card_path} is not valid JSON: {exc}") from exc
    try:
        model_text = model_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"model file {model_path} cannot be read: {exc}") from exc

    # The card must match the text before LightGBM parses it: LightGBM 4 aborts the
    # whole process on some malformed model files instead of raising.
    _check_card(card_path, card, model_text)
    try:
        booster = lightgbm.Booster(model_str=model_text)
    except lightgbm.basic.LightGBMError as exc:
        raise ModelError(f"model file {model_path} cannot be loaded: {exc}") from exc
    _check_features(card_path, card, booster)

    return LeadModel(booster, card)


def model_version(model_text: str) -> str:
    """Return the version of a model: a hash of its text."""
    return "m-" + hashlib.sha256(model_text.encode("utf-8")).hexdigest()[:12]


class ModelMismatchError(ModelError):
    """The card describes another model text, as while a new model is being written."""


def _check_card(card_path: Path, card: dict[str, Any], model_text: str) -> None:
    if not isinstance(card, dict):
        raise ModelError(f"model card {card_path} must be a JSON object")
    missing = [key for key in ("version", "features", "calibration") if key not in card]
    if missing:
        raise ModelError(f"model card {card_path} lacks {', '.join(missing)}; retrain with `nurture train`")
    calibration = card["calibration"]
    if not all(isinstance(calibration.get(key), (int, float)) and math.isfinite(calibration[key])
               for key in ("slope", "intercept")):
        raise ModelError(f"model card {card_path} has no finite calibration slope and intercept")
    digest = model_version(model_text)
    if digest != card["version"]:
        raise ModelMismatchError(
            f"model card {card_path} is for version {card['version']} but the model file is {digest}; "
            "the model file is damaged or belongs to another card: write both with `nurture train`"
        )


def _check_features(card_path: Path, card: dict[str, Any], booster: lightgbm.Booster) -> None:
    expected = list(FEATURE_NAMES)
    for source, names in (("card", list(card["features"])), ("model", booster.feature_name())):
        if names != expected:
            missing = [name for name in expected if name not in names]
            extra = [name for name in names if name not in expected]
            raise ModelError(
                f"the {source} in {card_path.parent} was trained on other features "
                f"(missing: {missing or 'none'}, unexpected: {extra or 'none'}); "
                "retrain it with this version's `nurture train`"
            )
