import json
import shutil
from pathlib import Path

import pytest

from nurture.scoring.model import ModelError, ModelMismatchError, load_model


def test_missing_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found; train one with `nurture train"):
        load_model(tmp_path / "absent")


def test_corrupt_model_file(model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(model_dir / "card.json", tmp_path / "card.json")
    (tmp_path / "model.txt").write_text("tree\nthis is not a model\n")

    with pytest.raises(ModelError, match="model file is damaged or belongs to another card"):
        load_model(tmp_path)


def test_truncated_model_file_is_refused_not_parsed(model_dir: Path, tmp_path: Path) -> None:
    # LightGBM aborts the process on this file, so the hash check must come first.
    shutil.copy(model_dir / "card.json", tmp_path / "card.json")
    text = (model_dir / "model.txt").read_text()
    (tmp_path / "model.txt").write_text(text[: len(text) // 3])

    with pytest.raises(ModelMismatchError):
        load_model(tmp_path)


def test_model_for_other_features(model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(model_dir / "model.txt", tmp_path / "model.txt")
    card = json.loads((model_dir / "card.json").read_text())
    card["features"] = card["features"][:-1] + ["favourite_colour"]
    (tmp_path / "card.json").write_text(json.dumps(card))

    with pytest.raises(ModelError, match="trained on other features.*favourite_colour"):
        load_model(tmp_path)


def test_row_score_independent_of_batch(model, history) -> None:
    import random

    from nurture.scoring import features

    states: dict = {}
    rows = []
    for event in history[5000:7000]:
        state = states.setdefault(event.lead_id, features.new_state())
        features.update(state, event)
        rows.append(features.vector(state, event.event_time))
    alone = [model.score([row])[0].probability for row in rows]
    order = list(range(len(rows)))
    random.Random(3).shuffle(order)
    for size in (16, 128, 1024):
        mixed: dict[int, float] = {}
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            for index, scored in zip(chunk, model.score([rows[i] for i in chunk])):
                mixed[index] = scored.probability

        assert [mixed[i] for i in range(len(rows))] == alone


def test_card_of_another_model_is_rejected(model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(model_dir / "model.txt", tmp_path / "model.txt")
    card = json.loads((model_dir / "card.json").read_text())
    card["version"] = "m-000000000000"
    (tmp_path / "card.json").write_text(json.dumps(card))

    with pytest.raises(ModelMismatchError, match="is for version m-000000000000"):
        load_model(tmp_path)


def test_card_without_calibration_is_rejected(model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(model_dir / "model.txt", tmp_path / "model.txt")
    card = json.loads((model_dir / "card.json").read_text())
    del card["calibration"]
    (tmp_path / "card.json").write_text(json.dumps(card))

    with pytest.raises(ModelError, match="lacks calibration"):
        load_model(tmp_path)


def test_scores_are_calibrated_probabilities(model, history) -> None:
    from nurture.scoring import features

    state = features.new_state()
    rows = []
    for event in history[:3000]:
        features.update(state, event)
        rows.append(features.vector(state, event.event_time))
    scored = model.score(rows)

    assert all(0.0 < item.probability < 1.0 for item in scored)
    assert all(item.score == round(item.probability * 100, 2) for item in scored)
