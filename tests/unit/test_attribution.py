import lightgbm
import numpy as np
import pytest

from nurture.scoring import features
from nurture.scoring.attribution import PathAttribution


def _stump(values: np.ndarray, labels: np.ndarray) -> lightgbm.Booster:
    data = lightgbm.Dataset(values, labels, params={"verbose": -1})
    params = {"objective": "binary", "num_leaves": 2, "min_data_in_leaf": 1, "verbose": -1, "seed": 1}
    return lightgbm.train(params, data, num_boost_round=1)


def test_stump_credit_is_leaf_minus_mean() -> None:
    values = np.array([[0.0, 5.0]] * 30 + [[1.0, 5.0]] * 10)
    labels = np.array([0] * 30 + [1] * 10)
    booster = _stump(values, labels)
    leaves = booster.dump_model()["tree_info"][0]["tree_structure"]
    low, high = leaves["left_child"]["leaf_value"], leaves["right_child"]["leaf_value"]
    mean = (30 * low + 10 * high) / 40

    credits = PathAttribution(booster).contributions([[0.0, 5.0], [1.0, 5.0]])

    assert credits[:, 0] == pytest.approx([low - mean, high - mean])
    assert credits[:, 1] == pytest.approx([0.0, 0.0])


def test_credits_sum_to_raw_score(model, history) -> None:
    states: dict = {}
    rows = []
    for event in history[:3000]:
        state = states.setdefault(event.lead_id, features.new_state())
        features.update(state, event)
        rows.append(features.vector(state, event.event_time))
    attribution = PathAttribution(model.booster)

    credits = attribution.contributions(rows)
    raw = model.booster.predict(np.asarray(rows), raw_score=True)

    assert credits.shape == (len(rows), len(features.FEATURE_NAMES))
    assert credits.sum(axis=1) + attribution.expected == pytest.approx(raw, abs=1e-9)


def test_credits_alike_alone_and_batched(model, history) -> None:
    state = features.new_state()
    rows = []
    for event in [e for e in history if e.lead_id == history[0].lead_id][:20]:
        features.update(state, event)
        rows.append(features.vector(state, event.event_time))
    attribution = PathAttribution(model.booster)

    together = attribution.contributions(rows)

    for index, row in enumerate(rows):
        assert attribution.contributions([row])[0] == pytest.approx(together[index])


def test_reasons_carry_feature_credits(model, history) -> None:
    state = features.new_state()
    for event in [e for e in history if e.lead_id == history[0].lead_id]:
        features.update(state, event)
    row = features.vector(state, features.scoring_time(state))
    credits = model.attribution.contributions([row])[0]

    reasons = model.explain(row)

    assert len(reasons) == 3
    for reason in reasons:
        index = features.FEATURE_NAMES.index(reason["feature"])
        assert reason["contribution"] == pytest.approx(round(float(credits[index]), 6))
