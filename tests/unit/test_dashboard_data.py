"""The dashboard's aggregations and its token check, without a worker."""

from __future__ import annotations

import orjson
import pytest
from structlog.testing import capture_logs

from factories import T0, consent
from nurture.agents.privacy.consent import apply_consent
from nurture.agents.state import new_lead
from nurture.streams.dashboard import _RejectionLog, build_content_security_policy, check_authorization
from nurture.streams.dashboard_data import (
    CommandLog,
    LeadTally,
    ThroughputSeries,
    check_lead_id,
    build_lead_timeline,
    score_bin_index,
)


def _command(lead_id: str, command_id: str, *, journey: str | None = None, channel: str = "email",
             event_time: int = 1_000, created_at: int = 2_000, reasons: list | None = None) -> dict:
    return {"command_id": command_id, "lead_id": lead_id, "rule": "welcome" if journey is None else f"{journey}/s1",
            "journey": journey, "step": None if journey is None else "s1", "action": "send_email",
            "channel": channel, "template": "welcome", "event_time": event_time, "created_at": created_at,
            "score": 42.0, "reasons": reasons or [], "personalisation": {"email": "ola@example.com"}}


def test_authorization_cases():
    assert check_authorization("Bearer secret", "secret") is None
    assert check_authorization("bearer  secret ", "secret") is None
    status, message = check_authorization(None, "secret")
    assert status == 401
    assert "Authorization: Bearer" in message
    assert check_authorization("Basic c2VjcmV0", "secret")[0] == 401
    assert check_authorization("Bearer", "secret")[0] == 401
    assert check_authorization("Bearer wrong", "secret") == (403, "invalid API token")
    assert check_authorization("Bearer żółw", "secret")[0] == 403  # non-ASCII tokens compare as bytes


def test_authorization_without_configured_token():
    status, message = check_authorization("Bearer anything", "")
    assert status == 401
    assert "NURTURE_API_TOKEN" in message
    assert check_authorization(None, "")[0] == 401


def test_rejection_log_rate_limit():
    rejections = _RejectionLog()
    with capture_logs() as logs:
        for _ in range(3):
            rejections.record(403, "127.0.0.1", "/nurture/api/overview")
        rejections.record(401, "127.0.0.1", "/nurture/api/overview")
    assert [(entry["event"], entry["status"]) for entry in logs] == [("api_request_rejected", 403),
                                                                     ("api_request_rejected", 401)]
    assert logs[0]["repeats_since_last_line"] == 0


def test_content_security_policy_hashes_inline_blocks():
    policy = build_content_security_policy("<style>a{}</style><script>run()</script>")
    assert "script-src 'sha256-" in policy
    assert "style-src 'sha256-" in policy
    assert "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy


@pytest.mark.parametrize(("lead_id", "expected"), [
    ("user_0420", None),
    ("Zoë-łucja@example.com", None),
    ("x" * 200, None),
    ("x" * 201, "maximum is 200"),
    ("", "empty"),
    ("   ", "empty"),
    ("bad\nid", "U+000A"),
    ("bad\x00id", "U+0000"),
    ("zero\u200bwidth", "U+200B"),
])
def test_lead_id_problem(lead_id, expected):
    problem = check_lead_id(lead_id)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem


def test_throughput_rates_and_length():
    series = ThroughputSeries(records_in_total=100, commands_out_total=10, monotonic_seconds=0.0, length=3)
    series.add(at_ms=5_000, monotonic_seconds=5.0, records_in_total=150, commands_out_total=20, consumer_lag=7)
    assert series.to_json() == [{"at": 5_000, "records_in_per_second": 10.0, "commands_out_per_second": 2.0,
                                 "consumer_lag": 7}]
    series.add(at_ms=5_000, monotonic_seconds=5.0, records_in_total=999, commands_out_total=99, consumer_lag=0)
    assert len(series.to_json()) == 1  # no time passed, so no rate
    for step in range(2, 6):
        series.add(at_ms=step * 5_000, monotonic_seconds=step * 5.0, records_in_total=150,
                   commands_out_total=20, consumer_lag=0)
    samples = series.to_json()
    assert [sample["at"] for sample in samples] == [15_000, 20_000, 25_000]


@pytest.mark.parametrize(("score", "expected"), [(0.0, 0), (9.99, 0), (10.0, 1), (55.5, 5), (99.9, 9),
                                                  (100.0, 9), (-1.0, 0)])
def test_score_bin(score, expected):
    assert score_bin_index(score) == expected


def test_lead_tally_counts_scores_and_stages():
    rows = []
    for number, (score, stage) in enumerate([(5.0, None), (55.0, "lead"), (100.0, "customer"), (None, "lead")]):
        lead = new_lead(f"lead-{number}")
        lead["score"] = score
        lead["stage"] = stage
        rows.append(orjson.dumps(lead))
    tally = LeadTally()
    for row in [*rows, b"not json", b"42"]:
        tally.add(row)
    result = tally.to_json()
    assert result["leads"] == 4
    assert tally.unreadable == 2
    assert [item["leads"] for item in result["scores"]["bins"]] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert result["scores"]["bins"][9] == {"low": 90, "high": 100, "leads": 1}
    assert result["scores"]["unscored"] == 1
    assert result["funnel"] == [
        {"stage": "subscriber", "leads": 0}, {"stage": "lead", "leads": 2},
        {"stage": "marketing_qualified", "leads": 0}, {"stage": "sales_qualified", "leads": 0},
        {"stage": "customer", "leads": 1}, {"stage": "none", "leads": 1},
    ]


def test_command_log_counts_and_forgets_old_leads():
    log = CommandLog(max_leads=2, per_lead=2)
    log.observe(_command("a", "a1"))
    log.observe(_command("a", "a2", journey="onboarding"))
    log.observe(_command("a", "a3", journey="onboarding", channel="sms"))
    log.observe(_command("b", "b1"))
    log.observe(_command("c", "c1"))
    assert log.to_json() == [
        {"journey": "-", "channel": "email", "commands": 3},
        {"journey": "onboarding", "channel": "email", "commands": 1},
        {"journey": "onboarding", "channel": "sms", "commands": 1},
    ]
    assert log.for_lead("a") == []  # the least recently seen lead was dropped
    assert [command["command_id"] for command in log.for_lead("c")] == ["c1"]
    assert "personalisation" not in log.for_lead("c")[0]


def test_lead_timeline_merges_row_and_known_commands():
    lead = new_lead("ola")
    lead["profile"] = {"email": "ola@example.com"}
    lead["stage"] = "lead"
    lead["recent"] = [[1_000, "form", "signup"]]
    lead["score_history"] = [[900, 10.0, "m1"], [1_000, 35.5, "m1"]]
    lead["stage_history"] = [[1_000, "lead", "form:signup"]]
    lead["issued"] = {"c1": [2_000, "email"], "j1": [3_000, "email"]}
    lead["journeys"] = {"onboarding": {
        "entry": 1, "status": "active", "step": "wait", "entered_at": 1_000, "due": 90_000, "ended_at": None,
        "end_reason": None, "sends": {
            "hello": {"command_id": "j1", "template": "hello", "status": "sent", "at": 3_000, "opened": 4_000},
            "skipped": {"command_id": None, "template": "late", "status": "dropped", "reason": "channel_blocked",
                        "at": None, "due": 5_000},
        }}}
    lead["deliveries"] = [{"command_id": "c1", "channel": "email", "status": "delivered", "bounce": None,
                           "at": 2_500}]
    reasons = [{"feature": "forms", "text": "filled in a form", "contribution": 0.4}]
    timeline = build_lead_timeline(lead, [_command("ola", "c1", event_time=1_000, reasons=reasons)])

    assert timeline["events"] == [{"at": 1_000, "kind": "form", "detail": "signup"}]
    assert timeline["score_changes"] == [
        {"at": 900, "score": 10.0, "model_version": "m1", "change": None},
        {"at": 1_000, "score": 35.5, "model_version": "m1", "change": 25.5, "reasons": reasons},
    ]
    commands = {command["command_id"]: command for command in timeline["commands"]}
    assert commands["c1"]["rule"] == "welcome"
    assert commands["c1"]["reasons"] == reasons
    assert commands["c1"]["delivery"] == "delivered"
    assert commands["j1"]["journey"] == "onboarding"
    assert commands["j1"]["opened"] == 4_000
    assert "reasons" not in commands["j1"]  # this worker never saw it published
    assert commands[None]["status"] == "dropped"
    assert commands[None]["at"] == 5_000
    assert [command["at"] for command in timeline["commands"]] == [2_000, 3_000, 5_000]
    assert timeline["stage_history"] == [{"at": 1_000, "stage": "lead", "cause": "form:signup"}]
    assert timeline["journeys"][0]["due"] == 90_000
    assert timeline["consent"] == []
    assert "ola@example.com" not in orjson.dumps(timeline).decode()


def test_lead_timeline_shows_deferred_commands():
    lead = new_lead("kim")
    command = _command("kim", "d1", reasons=[{"feature": "f", "text": "t", "contribution": 0.1}])
    lead["outbox"] = [{"due": 9_000, "reason": "quiet_hours", "since": 2_000, "expires_hours": 48, "command": command}]
    timeline = build_lead_timeline(lead, [])
    assert timeline["commands"] == [{
        "command_id": "d1", "status": "deferred", "due": 9_000, "reason": "quiet_hours", "at": 2_000,
        "rule": "welcome", "action": "send_email", "channel": "email", "template": "welcome", "score": 42.0,
        "reasons": command["reasons"],
    }]


def test_lead_timeline_lists_consent_by_time():
    row = new_lead("l")
    apply_consent(row, consent("l", T0 + 5, channel="sms"))
    apply_consent(row, consent("l", T0, channel="email", granted=False, source="preference_centre"))
    timeline = build_lead_timeline(row, {})

    assert [(item["channel"], item["granted"], item["source"]) for item in timeline["consent"]] == [
        ("email", False, "preference_centre"), ("sms", True, "form")]
    assert timeline["consent"][1]["at"] == T0 + 5
