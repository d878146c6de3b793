"""The `nurture` command's start-up checks, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from factories import TEST_KEYS

NURTURE = str(Path(sys.executable).with_name("nurture"))


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "NURTURE_WORKER_DATA_DIR": str(tmp_path / "data"),
               "NURTURE_BROKER": "kafka://127.0.0.1:9", "NURTURE_LOG_FORMAT": "console",
               "NURTURE_WORKER_WEB_PORT": str(_free_port()), "NURTURE_PRIVACY_KEYS": TEST_KEYS, **env}
    return subprocess.run([NURTURE, *args], env=environ, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_bad_settings_file_stops_before_anything(tmp_path: Path) -> None:
    (tmp_path / "nurture.toml").write_text("[kafka]\npartitions = 'many'\n")
    result = _run(["worker"], tmp_path)

    assert result.returncode == 2
    assert "nurture.toml: [kafka] partitions: expected a whole number" in result.stderr


def test_unused_faust_options_stop_with_hint(tmp_path: Path) -> None:
    datadir = _run(["--datadir", str(tmp_path), "topics", "--help"], tmp_path)
    app = _run(["-A", "proj.app", "topics", "--help"], tmp_path)
    listed = _run(["--help"], tmp_path)

    assert datadir.returncode == 2
    assert "--datadir/-D is not used by Nurture: set [worker] data_dir" in datadir.stderr
    assert app.returncode == 2
    assert "-A/--app is not used by Nurture" in app.stderr
    assert "--datadir" not in listed.stdout


def test_worker_without_model_stops_with_hint(tmp_path: Path) -> None:
    result = _run(["worker"], tmp_path, NURTURE_WORKER_MODEL_DIR=str(tmp_path / "no-model"))

    assert result.returncode == 1
    assert "model file" in result.stderr
    assert "not found" in result.stderr
    assert "nurture train" in result.stderr
    assert "Ready" not in result.stderr


def test_worker_without_keys_stops_with_hint(tmp_path: Path, model_dir: Path) -> None:
    result = _run(["worker"], tmp_path, NURTURE_WORKER_MODEL_DIR=str(model_dir), NURTURE_PRIVACY_KEYS="")

    assert result.returncode == 1
    assert "no privacy keys" in result.stderr
    assert "nurture privacy keygen" in result.stderr


def test_worker_with_bad_key_names_the_key(tmp_path: Path, model_dir: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("current=a\nhash=AAAA\na=AAAA\n")
    result = _run(["worker"], tmp_path, NURTURE_WORKER_MODEL_DIR=str(model_dir),
                  NURTURE_PRIVACY_KEY_FILE=str(keys))

    assert result.returncode == 1
    assert f"{keys}: key 'a' has 3 bytes; every key has 32" in result.stderr


def test_worker_with_bad_rules_names_the_line(tmp_path: Path, model_dir: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "x"\non = "event"\nkinds = ["form"]\naction = "send_mail"\n')
    result = _run(["worker"], tmp_path, NURTURE_WORKER_RULES_FILE=str(rules),
                  NURTURE_WORKER_MODEL_DIR=str(model_dir))

    assert result.returncode == 1
    assert f"{rules}:1: rule 1 ('x'): key 'action'" in result.stderr


def test_worker_with_bad_journeys_names_the_line(tmp_path: Path, model_dir: Path) -> None:
    journeys = tmp_path / "journeys.toml"
    journeys.write_text('[[journeys]]\nname = "j"\ntrigger = { on = "event", kinds = ["form"] }\n\n'
                        '[[journeys.steps]]\nid = "pause"\nwait = { duration = "90d" }\n')
    result = _run(["worker"], tmp_path, NURTURE_WORKER_JOURNEYS_FILE=str(journeys),
                  NURTURE_WORKER_MODEL_DIR=str(model_dir))

    assert result.returncode == 1
    assert f"{journeys}:7: journey 1 ('j'): step 1 ('pause')" in result.stderr
    assert "'90d'" in result.stderr
    assert "Ready" not in result.stderr


def test_journeys_show_without_broker_says_so(tmp_path: Path) -> None:
    result = _run(["journeys", "show", "lead-1"], tmp_path)

    assert result.returncode == 1
    assert "cannot read the lead table: cannot reach the Kafka broker at 127.0.0.1:9" in result.stderr
    assert "make kafka" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_on_used_data_dir_stops(tmp_path: Path, model_dir: Path) -> None:
    import fcntl

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with (data_dir / "nurture.lock").open("w") as held:
        held.write("worker pid 4242 on elsewhere\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = _run(["worker"], tmp_path, NURTURE_WORKER_MODEL_DIR=str(model_dir))

    assert result.returncode == 1
    assert f"data directory {data_dir} is in use by worker pid 4242 on elsewhere" in result.stderr
    assert "NURTURE_WORKER_DATA_DIR" in result.stderr
    assert "Ready" not in result.stderr


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


def _broken_model(model_dir: Path, target: Path, kind: str) -> Path:
    import json
    import shutil

    target.mkdir()
    shutil.copy(model_dir / "card.json", target / "card.json")
    if kind == "corrupt":
        (target / "model.txt").write_text("tree\nnot a model at all\n")
    else:
        shutil.copy(model_dir / "model.txt", target / "model.txt")
        card = json.loads((target / "card.json").read_text())
        card["features"] = ["page_rank", *card["features"][1:]]
        (target / "card.json").write_text(json.dumps(card))
    return target


def test_worker_with_corrupt_model_stops(tmp_path: Path, model_dir: Path) -> None:
    broken = _broken_model(model_dir, tmp_path / "m", "corrupt")
    result = _run(["worker"], tmp_path, NURTURE_WORKER_MODEL_DIR=str(broken))

    assert result.returncode == 1
    assert "model file is damaged" in result.stderr
    assert "Ready" not in result.stderr + result.stdout


def test_worker_with_model_for_other_features_stops(tmp_path: Path, model_dir: Path) -> None:
    broken = _broken_model(model_dir, tmp_path / "m", "features")
    result = _run(["worker"], tmp_path, NURTURE_WORKER_MODEL_DIR=str(broken))

    assert result.returncode == 1
    assert "trained on other features" in result.stderr
    assert "page_rank" in result.stderr
    assert "Ready" not in result.stderr + result.stdout


def test_model_report_prints_card_and_writes_plot(tmp_path: Path, model_dir: Path) -> None:
    plot = tmp_path / "plot.png"
    result = _run(["model", "report", "--model-dir", str(model_dir), "--plot", str(plot)], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "ROC AUC" in result.stdout
    assert "calibration error" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_worker_on_taken_port_stops_with_hint(tmp_path: Path, model_dir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(["worker", "--web-port", str(port)], tmp_path,
                      NURTURE_WORKER_MODEL_DIR=str(model_dir))

    assert result.returncode == 1
    assert f"web port {port} on 127.0.0.1 is not free" in result.stderr
    assert "NURTURE_WORKER_WEB_PORT" in result.stderr


def test_unloadable_tls_file_stops_before_anything(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    result = _run(["topics", "create"], tmp_path, NURTURE_KAFKA_SECURITY_PROTOCOL="SSL",
                  NURTURE_KAFKA_SSL_CAFILE=str(tmp_path / "ca.pem"))

    assert result.returncode == 2
    assert f"invalid settings: [kafka] ssl_cafile: cannot load CA certificates from {tmp_path / 'ca.pem'}" \
        in result.stderr
    assert "Traceback" not in result.stderr
