import shutil
from pathlib import Path

from nurture.scoring import rollout
from nurture.scoring.model import load_model


def _slot(model_dir: Path, target: Path) -> tuple[rollout.ModelSlot, list]:
    shutil.copytree(model_dir, target)
    swapped: list = []
    return rollout.ModelSlot.open("live", target, swapped.append), swapped


def test_unchanged_directory_keeps_model(model_dir: Path, tmp_path: Path) -> None:
    slot, swapped = _slot(model_dir, tmp_path / "live")

    assert slot.check() is False
    assert len(swapped) == 1


def test_damaged_model_file_is_not_swapped_in(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    slot, swapped = _slot(model_dir, tmp_path / "live")
    text = (tmp_path / "live" / "model.txt").read_text()
    (tmp_path / "live" / "model.txt").write_text(text[:5000])

    assert slot.check() is False
    assert slot.model.version == load_model(model_dir).version
    assert slot.rejected is None  # first sight: taken as a write in progress

    monkeypatch.setattr(rollout, "MISMATCH_WARNING_SECONDS", 0.0)
    assert slot.check() is False
    assert "damaged" in slot.rejected["error"]
    assert len(swapped) == 1


def test_card_for_other_features_is_rejected(model_dir: Path, tmp_path: Path) -> None:
    import json

    slot, swapped = _slot(model_dir, tmp_path / "live")
    card_path = tmp_path / "live" / "card.json"
    card = json.loads(card_path.read_text())
    card["features"][0] = "shoe_size"
    card_path.write_text(json.dumps(card))

    assert slot.check() is False
    assert "shoe_size" in slot.rejected["error"]
    assert len(swapped) == 1
