"""Model versions change under a running worker; bad ones are refused; a shadow is compared."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
import uuid
from pathlib import Path

from conftest import Worker, commands_for, read_until, send_event
from factories import BOXES, T0, form
from nurture.scoring.model import CARD_FILE, MODEL_FILE
from nurture.scoring.train import train


def _status(worker: Worker) -> dict:
    url = f"http://127.0.0.1:{worker.env['NURTURE_WORKER_WEB_PORT']}/nurture/models/"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait_for(predicate, worker: Worker, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"condition not met in {seconds} s\n{worker.log_tail()}")


def _install(source: Path, target: Path) -> None:
    """Copy a model into a watched directory the way `nurture train` writes it."""
    for name in (MODEL_FILE, CARD_FILE):
        shutil.copy(source / name, target / f".{name}.tmp")
        (target / f".{name}.tmp").replace(target / name)


def test_live_rollout_refusal_and_shadow(broker, model_dir: Path, model, history, producer,
                                         tmp_path: Path) -> None:
    candidate_dir = tmp_path / "candidate"
    candidate = train(history[:20000], candidate_dir, rounds=40)
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    _install(model_dir, live_dir)
    worker = Worker(tmp_path, broker, live_dir, {
        "NURTURE_WORKER_SHADOW_MODEL_DIR": str(candidate_dir),
        "NURTURE_WORKER_MODEL_CHECK_SECONDS": "1",
    }, own_topics=True)
    worker.create_topics()
    settings = worker.settings
    first, second = (f"roll-{uuid.uuid4().hex[:8]}" for _ in range(2))

    worker.start()
    try:
        send_event(producer, settings, form(first, T0, fields={"email": f"{first}@example.com"}, consents=BOXES))
        records = read_until(settings, settings.topics.commands,
                             lambda rs: commands_for(rs, {first}), worker=worker)
        assert commands_for(records, {first})[0]["model_version"] == model.version

        status = _wait_for(lambda: _status(worker), worker)
        assert status["live"] == model.version
        assert status["shadow"] == candidate["version"]
        assert status["shadow_decisions"]["events"] >= 1
        assert status["shadow_decisions"]["agree"] + status["shadow_decisions"]["live_only"] >= 1

        _install(candidate_dir, live_dir)
        _wait_for(lambda: _status(worker)["live"] == candidate["version"], worker)
        send_event(producer, settings, form(second, T0, fields={"email": f"{second}@example.com"}, consents=BOXES))
        records = read_until(settings, settings.topics.commands,
                             lambda rs: commands_for(rs, {second}), worker=worker)
        assert commands_for(records, {second})[0]["model_version"] == candidate["version"]

        card = json.loads((model_dir / CARD_FILE).read_text())
        card["features"] = card["features"][:-1] + ["favourite_colour"]
        wrong = tmp_path / "wrong"
        wrong.mkdir()
        shutil.copy(model_dir / MODEL_FILE, wrong / MODEL_FILE)
        (wrong / CARD_FILE).write_text(json.dumps(card))
        _install(wrong, live_dir)
        _wait_for(lambda: "model_rejected" in worker.log_path.read_text(), worker)
        assert _status(worker)["live"] == candidate["version"]
        assert "favourite_colour" in worker.log_path.read_text()
    finally:
        worker.stop()
