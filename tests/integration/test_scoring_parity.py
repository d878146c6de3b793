"""The whole clickstream through a running worker: its features and scores equal offline ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import Worker
from nurture.scoring import features
from nurture.streams.history import read_events
from nurture.streams.report import read_topic, wait_until_idle

PROJECT = Path(__file__).resolve().parents[2]
CLICKSTREAM = PROJECT / "data" / "ecom-clickstream" / "ecom.csv.gz"


def test_worker_features_equal_offline(broker, model_dir: Path, model, tmp_path: Path) -> None:
    worker = Worker(tmp_path, broker, model_dir, {"NURTURE_CODECS_FORM": "avro"}, own_topics=True)
    worker.create_topics()
    worker.start()
    try:
        subprocess.run([str(Path(sys.executable).with_name("nurture")), "replay", str(CLICKSTREAM)],
                       env=worker.env, check=True, capture_output=True, cwd=tmp_path, timeout=300)
        assert wait_until_idle(worker.settings, timeout_seconds=300, quiet_seconds=2.0).idle, worker.log_tail()
    finally:
        worker.stop()

    changelog = f"{worker.app_id}-leads-changelog"
    records = read_topic(worker.settings, changelog)
    rows = {record.key.decode(): orjson.loads(record.value) for record in records if record.value}

    offline: dict[str, dict] = {}
    for event in read_events(CLICKSTREAM):
        state = offline.setdefault(event.lead_id, features.new_state())
        features.update(state, event)
    assert set(rows) == set(offline)

    for lead_id, state in offline.items():
        at = features.scoring_time(state)
        expected = features.vector(state, at)
        row = rows[lead_id]
        got = features.vector(row["features"], features.scoring_time(row["features"]))

        assert features.scoring_time(row["features"]) == at, lead_id
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), lead_id
        assert row["probability"] == pytest.approx(model.score([expected])[0].probability, rel=1e-9), lead_id
        assert row["model_version"] == model.version
