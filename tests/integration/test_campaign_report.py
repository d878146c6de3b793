"""`nurture report campaigns` on the real broker: commands, feedback and events in, CSV and Parquet out."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from structlog.testing import capture_logs

from factories import DAY_MS, HOUR_MS, T0, click, form, open_
from nurture.config.settings import Settings, load_settings
from nurture.schemas.records import Event
from nurture.streams.campaign_export import read_tally
from nurture.streams.codecs import encode_command, encode_event

NURTURE = str(Path(sys.executable).with_name("nurture"))
SINCE, UNTIL = "2024-06-01", "2024-06-08"  # T0 is 2024-06-01 00:00 UTC

COUNTS = ("commands", "sent", "delivered", "bounced", "failed", "opened", "clicked", "converted", "unsubscribed")
# (journey, rule_or_step, template) -> the counts of COUNTS, in that order
EXPECTED = {
    ("-", "sales_handoff", "-"): (1, 0, 0, 0, 0, 0, 0, 1, 0),
    ("-", "welcome", "welcome"): (3, 3, 2, 1, 0, 2, 1, 1, 0),
    ("onboarding", "case_study", "customer_stories"): (3, 1, 1, 0, 1, 2, 0, 1, 1),
}
RATES = {"delivery_rate": "delivered", "bounce_rate": "bounced", "failure_rate": "failed",
         "open_rate": "opened", "click_rate": "clicked", "conversion_rate": "converted",
         "unsubscribe_rate": "unsubscribed"}


@pytest.fixture()
def report_env(broker: str, tmp_path: Path) -> dict[str, str]:
    """Settings with topics of this test's own, created empty, so no other test's records mix in."""
    prefix = f"cr-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "NURTURE_BROKER": broker, "NURTURE_WORKER_APP_ID": prefix,
           "NURTURE_LOG_FORMAT": "json", "NURTURE_CODECS_OPEN": "avro",
           **{f"NURTURE_TOPICS_{name.upper()}": f"{prefix}.{name}"
              for name in ("click", "open", "form", "feedback", "commands", "deadletter")}}
    created = subprocess.run([NURTURE, "topics", "create"], env=env, capture_output=True, text=True,
                             cwd=tmp_path, timeout=120)
    assert created.returncode == 0, created.stderr
    return env


def _command(command_id: str, lead: str, at: int, rule: str = "welcome", template: str | None = "welcome",
             journey: str | None = None, step: str | None = None) -> dict[str, Any]:
    handoff = template is None
    return {
        "schema_version": 2, "command_id": command_id, "lead_id": lead,
        "action": "handoff_sales" if handoff else "send_email", "channel": "crm" if handoff else "email",
        "template": template, "rule": f"{journey}/{step}" if journey else rule,
        "trigger_event_id": f"e-{command_id}", "event_time": at, "created_at": at, "expires_at": at + DAY_MS,
        "score": 40.0, "model_version": "m-test",
        "reasons": [{"feature": "forms_24h", "text": "a form", "contribution": 0.5}],
        "personalisation": {}, "journey": journey, "step": step, "stage": "lead",
        "stage_history": [], "recent_activity": [],
    }


def _feedback(command_id: str, lead: str, status: str, at: int) -> Event:
    return Event("feedback", f"fb-{command_id}-{status}", lead, at, at,
                 {"command_id": command_id, "channel": "email", "status": status,
                  "bounce": "hard" if status == "bounced" else None, "detail": None})


def _produce(producer: Any, settings: Settings, commands: list[dict[str, Any]], events: list[Event]) -> None:
    for record in commands:
        producer.send(settings.topics.commands, key=record["lead_id"].encode(), value=encode_command(record))
    for event in events:
        if event.kind == "feedback":
            topic, codec = settings.topics.feedback, settings.codecs.feedback
        else:
            topic, codec = settings.topics.event_topic(event.kind), settings.codecs.for_kind(event.kind)
        producer.send(topic, key=event.lead_id.encode(), value=encode_event(event, codec))
    producer.flush()


def _scenario(run: str) -> tuple[list[dict[str, Any]], list[Event]]:
    a, b, c, d = (f"{run}-{name}" for name in "abcd")
    commands = [
        _command("ca", a, T0 + HOUR_MS),
        _command("cb", b, T0 + 2 * HOUR_MS),
        _command("cc", c, T0 + 3 * HOUR_MS),
        _command("ja", a, T0 + DAY_MS, template="customer_stories", journey="onboarding", step="case_study"),
        _command("jb", b, T0 + DAY_MS, template="customer_stories", journey="onboarding", step="case_study"),
        _command("jc", c, T0 + DAY_MS, template="customer_stories", journey="onboarding", step="case_study"),
        _command("hd", d, T0 + 2 * DAY_MS, rule="sales_handoff", template=None),
        _command("old", d, T0 - DAY_MS),  # before --since
        _command("late", d, T0 + 7 * DAY_MS),  # at --until, which is excluded
        _command("ca", a, T0 + 5 * HOUR_MS),  # the same command published again
    ]
    events = [
        _feedback("ca", a, "sent", T0 + HOUR_MS),
        _feedback("ca", a, "delivered", T0 + 2 * HOUR_MS),
        _feedback("cb", b, "sent", T0 + 2 * HOUR_MS),
        _feedback("cb", b, "delivered", T0 + 3 * HOUR_MS),
        _feedback("cc", c, "sent", T0 + 3 * HOUR_MS),
        _feedback("cc", c, "bounced", T0 + 4 * HOUR_MS),  # sent, then bounced: counts in both
        _feedback("ja", a, "sent", T0 + DAY_MS),
        _feedback("ja", a, "delivered", T0 + DAY_MS + HOUR_MS),
        _feedback("jb", b, "opened", T0 + DAY_MS + 2 * HOUR_MS),
        _feedback("jc", c, "failed", T0 + DAY_MS),
        _feedback("old", d, "sent", T0 - DAY_MS),
        _feedback("old", d, "delivered", T0 - DAY_MS + HOUR_MS),
        open_(a, T0 + 3 * HOUR_MS, command_id="ca"),
        open_(a, T0 + 6 * HOUR_MS, command_id="ca"),  # a repeated open counts once
        open_(b, T0 + 4 * HOUR_MS, template="welcome"),  # names cb, b's latest welcome
        open_(d, T0 - DAY_MS + 2 * HOUR_MS, command_id="old"),
        click(a, T0 + 3 * HOUR_MS, command_id="ca"),
        click(a, T0 + DAY_MS + 3 * HOUR_MS, page="unsubscribe", command_id="ja"),
        click(c, T0 + 5 * HOUR_MS),  # names no command
        form(a, T0 + 3 * DAY_MS, name="order", conversion=True),  # converts ca and ja
        form(b, T0 + 9 * DAY_MS, name="order", conversion=True),  # too late for cb and jb
        form(c, T0 + DAY_MS, name="signup"),  # no conversion
        form(d, T0 + 2 * DAY_MS + HOUR_MS, name="order", conversion=True),  # converts hd
    ]
    return commands, events


def _run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NURTURE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)


def _check_rows(rows: list[dict[str, Any]], expected: dict[tuple[str, str, str], tuple[int, ...]]) -> None:
    found = {(row["journey"], row["rule_or_step"], row["template"]): row for row in rows}
    assert sorted(found) == sorted(expected)
    for key, counts in expected.items():
        row = found[key]
        assert tuple(int(row[name]) for name in COUNTS) == counts, key
        for rate, count in RATES.items():
            assert float(row[rate]) == pytest.approx(int(row[count]) / int(row["commands"])), (key, rate)


def test_campaign_report_csv_and_parquet(report_env: dict[str, str], producer: Any, tmp_path: Path) -> None:
    settings = load_settings(environ=report_env)
    commands, events = _scenario(uuid.uuid4().hex[:6])
    _produce(producer, settings, commands, events)

    summary = _run(report_env, tmp_path, "report", "--top", "1")
    assert summary.returncode == 0, summary.stderr
    assert f"Commands: {len(commands)}" in summary.stdout
    assert "Top 1 leads" in summary.stdout

    # Records that cannot be decoded: the report skips and counts them.
    key = b"someone"
    for topic, value in ((settings.topics.click, b"{not json"), (settings.topics.commands, b"not json"),
                         (settings.topics.feedback, orjson.dumps({"event_id": "x", "lead_id": "someone"}))):
        producer.send(topic, key=key, value=value)
    producer.flush()

    result = _run(report_env, tmp_path, "report", "campaigns", "--since", SINCE, "--until", UNTIL,
                  "--format", "csv", "--out", "campaigns.csv")
    assert result.returncode == 0, result.stderr
    assert "wrote 3 rows (7 commands) to campaigns.csv" in result.stdout
    assert "skipped 3 records that could not be decoded" in result.stdout
    assert f"{settings.topics.commands} json_invalid 1" in result.stdout
    assert f"{settings.topics.feedback} schema_invalid 1" in result.stdout
    assert "ignored 1 repeated command record (a command_id published before)" in result.stdout
    assert "campaign_topic_read" in result.stderr
    with (tmp_path / "campaigns.csv").open(newline="", encoding="utf-8") as handle:
        _check_rows(list(csv.DictReader(handle)), EXPECTED)

    result = _run(report_env, tmp_path, "report", "campaigns", "--since", SINCE, "--until", UNTIL,
                  "--format", "parquet", "--out", "campaigns.parquet")
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "campaigns.parquet")
    assert str(table.schema.field("commands").type) == "int64"
    assert str(table.schema.field("bounced").type) == "int64"
    assert str(table.schema.field("failure_rate").type) == "double"
    assert str(table.schema.field("conversion_rate").type) == "double"
    assert str(table.schema.field("journey").type) == "string"
    _check_rows(table.to_pylist(), EXPECTED)

    # A one-day window keeps only the hand-off's conversion, an hour after it.
    result = _run(report_env, tmp_path, "report", "campaigns", "--since", SINCE, "--until", UNTIL,
                  "--conversion-days", "1", "--format", "parquet", "--out", "one-day.parquet")
    assert result.returncode == 0, result.stderr
    converted = {(row["journey"], row["rule_or_step"]): row["converted"]
                 for row in pq.read_table(tmp_path / "one-day.parquet").to_pylist()}
    assert converted == {("-", "sales_handoff"): 1, ("-", "welcome"): 0, ("onboarding", "case_study"): 0}

    # Without a range every command on the topic counts, the early and the late one too.
    result = _run(report_env, tmp_path, "report", "campaigns", "--format", "csv", "--out", "all.csv")
    assert result.returncode == 0, result.stderr
    with (tmp_path / "all.csv").open(newline="", encoding="utf-8") as handle:
        welcome = [row for row in csv.DictReader(handle) if row["rule_or_step"] == "welcome"][0]
    assert welcome["commands"] == "5"
    assert welcome["sent"] == "4"
    assert welcome["delivered"] == "3"
    assert welcome["opened"] == "3"


def test_campaign_read_logs_progress(report_env: dict[str, str], producer: Any) -> None:
    settings = load_settings(environ=report_env)
    commands, events = _scenario(uuid.uuid4().hex[:6])
    _produce(producer, settings, commands, events)

    with capture_logs() as logs:
        tally, stats = read_tally(settings, progress_seconds=0.0)

    progress = [entry for entry in logs if entry["event"] == "campaign_read_progress"]
    by_topic = {entry["topic"]: entry for entry in progress}  # the last entry of each topic
    assert set(by_topic) == {settings.topics.commands, settings.topics.feedback, settings.topics.click,
                             settings.topics.open, settings.topics.form}
    assert by_topic[settings.topics.commands]["records_read"] == len(commands)
    assert by_topic[settings.topics.commands]["records_total"] == len(commands)
    assert stats.records[settings.topics.open] == 4
    assert stats.skipped_total == 0
    assert len(tally.commands) == len(commands) - 1
