import json
from pathlib import Path

import pytest

from factories import DAY_MS, T0, click, form
from nurture.scoring.metrics import roc_auc
from nurture.scoring.train import MS_PER_DAY, build_rows, train


def test_labels_look_only_forward_within_horizon() -> None:
    events = [
        click("a", T0), click("a", T0 + 2 * DAY_MS),
        form("a", T0 + 5 * DAY_MS, "order", conversion=True),
        click("b", T0 + DAY_MS),
    ]
    rows = build_rows(events, horizon_ms=4 * MS_PER_DAY)

    # Rows: a@T0 (purchase 5 days later, outside 4), a@T0+2d (inside), b (never).
    assert rows.labels == [0, 0, 1]
    assert rows.times == [T0, T0 + DAY_MS, T0 + 2 * DAY_MS]


def test_roc_auc_known_values() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_card_describes_model(model_dir: Path, history) -> None:
    card = json.loads((model_dir / "card.json").read_text())

    assert card["version"].startswith("m-")
    assert card["eval"]["roc_auc"] > 0.6
    assert card["train"]["to"] < card["calibration"]["from"]
    assert card["calibration"]["to"] < card["eval"]["from"]
    for figure in ("roc_auc", "pr_auc", "log_loss", "top_decile_lift", "calibration_error"):
        assert figure in card["eval"]
        assert figure in card["baseline"]
    assert card["baseline"]["points"]["cart_adds"] == 8.0
    assert card["source"]["events"] == len(history)
    assert card["data_range"]["from"].startswith("2024-01-04")


def test_training_is_reproducible(history, tmp_path: Path) -> None:
    subset = history[:15000]
    first = train(subset, tmp_path / "one", rounds=20)
    second = train(subset, tmp_path / "two", rounds=20)

    assert first["version"] == second["version"]


def test_platt_scaling_recovers_known_map() -> None:
    import numpy as np

    from nurture.scoring.calibration import apply_platt, fit_platt

    rng = np.random.default_rng(7)
    x = rng.normal(40, 15, 20000)
    labels = (rng.random(20000) < apply_platt(x, 0.08, -4.0)).astype(int)
    slope, intercept = fit_platt(x, labels)

    assert slope == pytest.approx(0.08, rel=0.1)
    assert intercept == pytest.approx(-4.0, rel=0.1)
