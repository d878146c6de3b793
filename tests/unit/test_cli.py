"""The `nurture` command's start-up checks, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NURTURE = str(Path(sys.executable).with_name("nurture"))


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "NURTURE_WORKER_DATA_DIR": str(tmp_path / "data"),
               "NURTURE_BROKER": "kafka://127.0.0.1:9", "NURTURE_LOG_FORMAT": "console", **env}
    return subprocess.run([NURTURE, *args], env=environ, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_bad_settings_file_stops_before_anything(tmp_path: Path) -> None:
    (tmp_path / "nurture.toml").write_text("[kafka]\npartitions = 'many'\n")
    result = _run(["worker"], tmp_path)

    assert result.returncode == 2
    assert "nurture.toml: [kafka] partitions: expected a whole number" in result.stderr


def test_worker_without_model_stops_with_hint(tmp_path: Path) -> None:
    result = _run(["worker"], tmp_path, NURTURE_WORKER_MODEL_DIR=str(tmp_path / "no-model"))

    assert result.returncode == 1
    assert "model file" in result.stderr
    assert "not found" in result.stderr
    assert "nurture train" in result.stderr
    assert "Ready" not in result.stderr


def test_worker_with_bad_rules_names_the_line(tmp_path: Path, model_dir: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "x"\non = "event"\nkinds = ["form"]\naction = "send_mail"\n')
    result = _run(["worker"], tmp_path, NURTURE_WORKER_RULES_FILE=str(rules),
                  NURTURE_WORKER_MODEL_DIR=str(model_dir))

    assert result.returncode == 1
    assert f"{rules}:1: rule 1 ('x'): key 'action'" in result.stderr


def test_train_writes_model_and_card(tmp_path: Path) -> None:
    history = Path(__file__).resolve().parents[2] / "data" / "ecom-clickstream" / "ecom.csv.gz"
    result = _run(["train", "--history", str(history), "--out", str(tmp_path / "m"),
                   "--until", "2024-05-01", "--rounds", "30"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "ROC AUC" in result.stdout
    assert (tmp_path / "m" / "model.txt").is_file()
    assert (tmp_path / "m" / "card.json").is_file()
    assert "training_rounds_progress" in result.stderr


def test_train_rejects_bad_date(tmp_path: Path) -> None:
    result = _run(["train", "--history", "x.csv", "--until", "May"], tmp_path)

    assert result.returncode == 2
    assert "'May' is not a date" in result.stderr
