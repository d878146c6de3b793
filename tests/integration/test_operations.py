"""What an operator sees of the session's worker: health, readiness, metrics and its log.

It runs after the end-to-end tests, so the worker has handled forms with names and
email addresses, bad records and a week of the clickstream by then.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import orjson
from prometheus_client.parser import text_string_to_metric_families

from nurture.streams import endpoints


def _get(worker, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{worker.env['NURTURE_WORKER_WEB_PORT']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _samples(worker) -> dict[tuple[str, tuple], float]:
    status, body = _get(worker, endpoints.METRICS)
    assert status == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples}


def test_live_and_ready(worker):
    assert _get(worker, endpoints.LIVE)[0] == 200
    deadline = time.monotonic() + 60
    status, body = _get(worker, endpoints.READY)
    while status != 200 and time.monotonic() < deadline:
        time.sleep(1)
        status, body = _get(worker, endpoints.READY)
    assert status == 200, body
    assert orjson.loads(body) == {"ready": True}


def test_metrics_count_the_traffic(worker):
    time.sleep(6)  # the gauges are sampled every five seconds
    samples = _samples(worker)
    form_topic = worker.settings.topics.form
    assert samples[("nurture_records_total", (("topic", form_topic),))] > 0
    assert samples[("nurture_commands_total", (("action", "send_email"), ("channel", "email")))] > 0
    assert samples[("nurture_dead_letters_total", (("reason", "json_invalid"),))] >= 1
    assert samples[("nurture_event_to_command_seconds_count", ())] > 0
    assert samples[("nurture_scoring_batch_records_count", ())] > 0
    assert samples[("nurture_ready", ())] == 1
    lags = [name for name, labels in samples if name == "nurture_consumer_lag_records"]
    assert lags


def test_log_json_without_personal_data(worker):
    lines = [line for line in worker.log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) > 50
    records = [orjson.loads(line) for line in lines]  # every line is JSON, or this fails
    port = worker.env["NURTURE_WORKER_WEB_PORT"]
    without_id = [record for record in records if not record.get("worker_id", "").endswith(f":{port}")]
    assert without_id == []
    text = "\n".join(lines)
    # The end-to-end tests and the replayed clickstream put these in forms; JSON
    # may escape non-ASCII letters, so both spellings are searched.
    for personal in ("@example.com", "Zoë Łucja", "Łukasz", "Małgorzata", "Agnieszka"):
        assert personal not in text
        assert json.dumps(personal)[1:-1] not in text


def test_sla_page_lists_objectives(worker):
    status, body = _get(worker, endpoints.SLA)
    assert status == 200
    page = orjson.loads(body)
    assert page["objectives"]["sent_p95_seconds"] == worker.settings.sla.sent_p95_seconds
    assert isinstance(page["channels"], dict)
