"""Journeys run through the pipeline: waits, branches, exits, re-entry, caps, quiet hours, feedback."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from pathlib import Path

import pytest

from factories import DAY_MS, HOUR_MS, T0, click, consenting, form, open_
from nurture.agents.feedback import apply_feedback
from nurture.agents.journeys.engine import next_due
from nurture.agents.journeys.loader import load_journeys
from nurture.agents.pipeline import Runtime, process_due, process_event
from nurture.agents.rules import load_rules
from nurture.schemas.records import Event
from nurture.streams.codecs import encode_command

ONBOARDING = """
[policy]
{zone}
{policy}

[[journeys]]
name = "onboarding"
trigger = {{ on = "event", kinds = ["form"], where = {{ form = "signup" }} }}
exit = [{{ on = "event", kinds = ["form"], where = {{ conversion = true }} }}]
reentry = "{reentry}"
{reentry_after}

[[journeys.steps]]
id = "welcome"
send = {{ channel = "email", template = "welcome_series" }}

[[journeys.steps]]
id = "opened_welcome"
branch = {{ engaged = "opened", step = "welcome", within = "2d", then = "guide", else = "reminder" }}

[[journeys.steps]]
id = "reminder"
send = {{ channel = "email", template = "reminder" }}
next = "end"

[[journeys.steps]]
id = "guide"
send = {{ channel = "email", template = "guide" }}

[[journeys.steps]]
id = "pause"
wait = {{ duration = "1d" }}

[[journeys.steps]]
id = "to_sales"
handoff = {{ template = "brief" }}
"""
EMAIL = {"email": "ada@example.com", "first_name": "Ada"}


def _runtime(model, tmp_path: Path, policy: str = "", reentry: str = "never", reentry_after: str = "",
             rules: list | None = None) -> Runtime:
    path = tmp_path / "journeys.toml"
    zone = "" if "time_zone" in policy else 'time_zone = "UTC"'
    path.write_text(ONBOARDING.format(zone=zone, policy=policy, reentry=reentry, reentry_after=reentry_after))
    return Runtime(model=model, rules=rules or [], recent_event_ids=16, book=load_journeys(path))


def _signup(lead_id: str = "lead-1", at: int = T0 + 10 * HOUR_MS, fields: dict | None = None) -> Event:
    return form(lead_id, at, "signup", fields=EMAIL if fields is None else fields)


def _feedback(command: dict, status: str, bounce: str | None = None, event_id: str = "fb-1") -> Event:
    at = T0 + 11 * HOUR_MS
    return Event("feedback", event_id, command["lead_id"], at, at,
                 {"command_id": command["command_id"], "channel": "email", "status": status,
                  "bounce": bounce, "detail": None})


def _templates(commands: list[dict]) -> list[str | None]:
    return [command["template"] for command in commands]


def test_entry_sends_first_step(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    outcome = process_event(lead, _signup(), runtime)
    run = lead["journeys"]["onboarding"]
    assert _templates(outcome.commands) == ["welcome_series"]
    assert outcome.commands[0]["journey"] == "onboarding"
    assert outcome.commands[0]["step"] == "welcome"
    assert run["step"] == "opened_welcome"
    assert run["waiting"] == "engagement"
    assert run["due"] == T0 + 10 * HOUR_MS + 2 * DAY_MS
    assert next_due(lead) == run["due"]


def test_open_takes_then_branch(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    welcome = process_event(lead, _signup(), runtime).commands[0]
    opened = open_("lead-1", T0 + 12 * HOUR_MS, command_id=welcome["command_id"])
    outcome = process_event(lead, opened, runtime)
    assert _templates(outcome.commands) == ["guide"]
    assert lead["journeys"]["onboarding"]["step"] == "pause"


def test_no_open_takes_else_branch_at_window_end(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    process_event(lead, _signup(), runtime)
    due = next_due(lead)
    assert process_due(lead, due - 1, runtime).commands == []
    outcome = process_due(lead, due, runtime)
    assert _templates(outcome.commands) == ["reminder"]
    assert outcome.commands[0]["event_time"] == due
    assert outcome.commands[0]["trigger_event_id"] == f"due:{due}"
    assert lead["journeys"]["onboarding"]["status"] == "completed"


def test_late_open_does_not_count(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    welcome = process_event(lead, _signup(), runtime).commands[0]
    # The open comes after the two-day window, so the run first takes the else branch.
    late = open_("lead-1", T0 + 10 * HOUR_MS + 3 * DAY_MS, command_id=welcome["command_id"])
    outcome = process_event(lead, late, runtime)
    assert _templates(outcome.commands) == ["reminder"]


def test_open_by_template_counts(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    process_event(lead, _signup(), runtime)
    outcome = process_event(lead, open_("lead-1", T0 + 11 * HOUR_MS, template="welcome_series"), runtime)
    assert _templates(outcome.commands) == ["guide"]


def test_handoff_carries_stage_history_and_activity(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    welcome = process_event(lead, _signup(), runtime).commands[0]
    process_event(lead, click("lead-1", T0 + 11 * HOUR_MS, page="pricing"), runtime)
    process_event(lead, open_("lead-1", T0 + 12 * HOUR_MS, command_id=welcome["command_id"]), runtime)
    handoff = process_due(lead, next_due(lead), runtime).commands
    assert [command["action"] for command in handoff] == ["handoff_sales"]
    command = handoff[0]
    assert command["stage"] == "sales_qualified"
    assert [change["stage"] for change in command["stage_history"]][-1] == "sales_qualified"
    assert command["stage_history"][0]["cause"] == "form:signup"
    assert {"kind": "click", "detail": "pricing", "at": T0 + 11 * HOUR_MS} in command["recent_activity"]
    assert command["reasons"]
    encode_command(command)  # conforms to the command schema


def test_step_command_id_repeats_after_crash(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    process_event(lead, _signup(), runtime)
    saved = copy.deepcopy(lead)  # the state the changelog holds when the worker dies
    first = process_due(lead, next_due(lead), runtime).commands
    again = process_due(saved, next_due(saved), runtime).commands
    assert [c["command_id"] for c in first] == [c["command_id"] for c in again]
    assert first


def test_due_fires_once(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    process_event(lead, _signup(), runtime)
    due = next_due(lead)
    assert len(process_due(lead, due, runtime).commands) == 1
    assert process_due(lead, due, runtime).commands == []
    assert process_due(lead, due + DAY_MS, runtime).commands == []


def test_redelivered_event_changes_nothing(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    signup = _signup()
    process_event(lead, signup, runtime)
    before = copy.deepcopy(lead)
    outcome = process_event(lead, signup, runtime)
    assert outcome.duplicate
    assert lead == before


def test_exit_goal_ends_run_and_drops_waiting(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    process_event(lead, _signup(), runtime)
    process_event(lead, form("lead-1", T0 + 20 * HOUR_MS, "order", conversion=True), runtime)
    run = lead["journeys"]["onboarding"]
    assert run["status"] == "exited"
    assert run["end_reason"] == "event:form"
    assert process_due(lead, T0 + 30 * DAY_MS, runtime).commands == []
    assert lead["stage"] == "customer"


def test_reentry_never(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    process_event(lead, _signup(), runtime)
    process_due(lead, T0 + 10 * DAY_MS, runtime)
    outcome = process_event(lead, _signup(at=T0 + 20 * DAY_MS), runtime)
    assert outcome.commands == []
    assert lead["journeys"]["onboarding"]["entry"] == 1


def test_reentry_after_exit_waits_its_delay(model, tmp_path):
    runtime = _runtime(model, tmp_path, reentry="after_exit", reentry_after='reentry_after = "7d"')
    lead = consenting("lead-1")
    first = process_event(lead, _signup(), runtime).commands[0]
    process_due(lead, T0 + 3 * DAY_MS, runtime)  # reminder, then the run completes
    ended = lead["journeys"]["onboarding"]["ended_at"]
    assert process_event(lead, _signup(at=ended + 6 * DAY_MS), runtime).commands == []
    again = process_event(lead, _signup(at=ended + 8 * DAY_MS), runtime).commands
    assert _templates(again) == ["welcome_series"]
    assert lead["journeys"]["onboarding"]["entry"] == 2
    assert again[0]["command_id"] != first["command_id"]


def test_cap_counts_rules_and_journeys(model, tmp_path):
    rules = load_rules(Path(__file__).parents[2] / "config" / "rules.toml")
    policy = '[policy.caps]\nemail = { max = 1, per = "1d" }'
    runtime = _runtime(model, tmp_path, policy=policy, rules=rules)
    lead = consenting("lead-1")
    # The welcome rule and the journey's first step both want to mail now.
    outcome = process_event(lead, _signup(), runtime)
    assert len(outcome.commands) == 1
    assert [(reason, due) for _, reason, due in outcome.deferred] == [
        ("frequency_cap", T0 + 10 * HOUR_MS + DAY_MS)]
    released = process_due(lead, T0 + 10 * HOUR_MS + DAY_MS, runtime).commands
    assert len(released) == 1
    assert lead["channel_sends"]["email"] == [T0 + 10 * HOUR_MS, T0 + 10 * HOUR_MS + DAY_MS]


def test_deferred_send_is_dropped_after_max_delay(model, tmp_path):
    policy = 'max_delay = "1h"\n[policy.caps]\nemail = { max = 1, per = "1d" }'
    runtime = _runtime(model, tmp_path, policy=policy)
    lead = consenting("lead-1")
    lead["channel_sends"]["email"] = [T0 + 9 * HOUR_MS]
    outcome = process_event(lead, _signup(), runtime)
    assert outcome.commands == []
    # The branch finds a message that never went out and takes the else branch at
    # once, and the reminder is over the cap too.
    assert outcome.dropped == [("onboarding/welcome", "deferred_too_long:frequency_cap"),
                                 ("onboarding/reminder", "deferred_too_long:frequency_cap")]
    assert lead["outbox"] == []
    assert lead["journeys"]["onboarding"]["status"] == "completed"


def test_hard_bounce_blocks_channel(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    welcome = process_event(lead, _signup(), runtime).commands[0]
    assert apply_feedback(lead, _feedback(welcome, "bounced", "hard")) == "channel_blocked"
    outcome = process_due(lead, T0 + 3 * DAY_MS, runtime)
    assert outcome.commands == []
    assert ("onboarding/reminder", "channel_blocked:hard_bounce") in outcome.dropped


def test_soft_bounce_keeps_channel(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    welcome = process_event(lead, _signup(), runtime).commands[0]
    assert apply_feedback(lead, _feedback(welcome, "bounced", "soft")) is None
    assert lead["blocked"] == {}
    assert lead["deliveries"][-1]["status"] == "bounced"


def test_feedback_open_feeds_branch(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    welcome = process_event(lead, _signup(), runtime).commands[0]
    apply_feedback(lead, _feedback(welcome, "opened"))
    outcome = process_due(lead, next_due(lead), runtime)
    assert _templates(outcome.commands) == ["guide"]


def _utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


QUIET = 'time_zone = "Europe/Warsaw"\nquiet_hours = { start = "21:00", end = "08:00" }'


@pytest.mark.parametrize(("signup_utc", "release_utc"), [
    # Spring change on 2025-03-30: 08:00 local is 06:00 UTC (CEST) the morning after.
    ("2025-03-29 22:30", "2025-03-30 06:00"),
    # Autumn change on 2025-10-26: 08:00 local is 07:00 UTC (CET) the morning after.
    ("2025-10-25 21:30", "2025-10-26 07:00"),
    # An ordinary winter night.
    ("2025-01-15 23:00", "2025-01-16 07:00"),
])
def test_quiet_hours_defer_until_local_morning(model, tmp_path, signup_utc, release_utc):
    runtime = _runtime(model, tmp_path, policy=QUIET)
    lead = consenting("lead-1")
    at = _utc(signup_utc)
    outcome = process_event(lead, _signup(at=at), runtime)
    assert outcome.commands == []
    assert [(reason, due) for _, reason, due in outcome.deferred] == [("quiet_hours", _utc(release_utc))]
    released = process_due(lead, _utc(release_utc), runtime).commands
    assert _templates(released) == ["welcome_series"]
    # The branch window starts when the message went out, not when the step ran.
    assert lead["journeys"]["onboarding"]["due"] == _utc(release_utc) + 2 * DAY_MS


def test_quiet_hours_follow_profile_zone(model, tmp_path):
    runtime = _runtime(model, tmp_path, policy=QUIET)
    lead = consenting("lead-1")
    fields = {**EMAIL, "time_zone": "America/New_York"}
    # 23:00 in Warsaw is 17:00 in New York, outside that lead's quiet hours.
    outcome = process_event(lead, _signup(at=_utc("2025-01-15 22:00"), fields=fields), runtime)
    assert _templates(outcome.commands) == ["welcome_series"]


def test_describe_lead_shows_wait_and_due(model, tmp_path):
    from nurture.agents.journeys.progress import describe_lead

    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    process_event(lead, _signup(at=_utc("2024-06-01 10:00")), runtime)
    text = describe_lead(lead, runtime.book, _utc("2024-06-02 10:00"))
    assert "Journey onboarding: run 1, active" in text
    assert "at step opened_welcome (branch)" in text
    assert "moves next at 2024-06-03 10:00 UTC" in text
    assert "in 1 d" in text
    assert "done: welcome (command " in text
    assert "stage lead at 2024-06-01 10:00 UTC" in text


def test_send_without_contact_is_dropped(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    outcome = process_event(lead, _signup(fields={"first_name": "Ada"}), runtime)
    assert outcome.commands == []
    assert ("onboarding/welcome", "no_email") in outcome.dropped


def test_exit_drops_deferred_message(model, tmp_path):
    runtime = _runtime(model, tmp_path, policy=QUIET)
    lead = consenting("lead-1")
    process_event(lead, _signup(at=_utc("2025-01-15 23:00")), runtime)
    assert len(lead["outbox"]) == 1
    process_event(lead, form("lead-1", _utc("2025-01-15 23:30"), "order", conversion=True), runtime)
    assert lead["outbox"] == []
    assert lead["journeys"]["onboarding"]["sends"]["welcome"]["status"] == "dropped"
    assert process_due(lead, _utc("2025-01-16 08:00"), runtime).commands == []


def test_feedback_open_moves_branch_at_once(model, tmp_path):
    from nurture.agents.pipeline import process_feedback

    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    welcome = process_event(lead, _signup(), runtime).commands[0]
    outcome = process_feedback(lead, _feedback(welcome, "opened"), runtime)
    assert _templates(outcome.commands) == ["guide"]
    assert process_feedback(lead, _feedback(welcome, "opened"), runtime).duplicate


def test_handoff_goes_once_per_lead(model, tmp_path):
    import dataclasses

    # The default hand-off rule with a threshold these few events reach.
    rules = [dataclasses.replace(rule, threshold=20.0)
             for rule in load_rules(Path(__file__).parents[2] / "config" / "rules.toml")
             if rule.name == "sales_handoff"]
    runtime = _runtime(model, tmp_path, rules=rules)
    lead = consenting("lead-1")
    welcome = process_event(lead, _signup(), runtime).commands[0]
    process_event(lead, open_("lead-1", T0 + 11 * HOUR_MS, command_id=welcome["command_id"]), runtime)
    handoffs = process_due(lead, next_due(lead), runtime).commands
    assert [command["action"] for command in handoffs] == ["handoff_sales"]
    # The score now crosses the rule's threshold, but sales already has the lead.
    lead["score"] = 0.0
    later = [click("lead-1", T0 + 3 * DAY_MS + minute * 60_000, page=page)
             for minute, page in enumerate(["add_to_cart", "checkout", "checkout", "purchase"] * 3)]
    outcomes = [process_event(lead, event, runtime) for event in later]
    assert max(outcome.score for outcome in outcomes) >= 20
    assert "handoff_sales" not in [c["action"] for outcome in outcomes for c in outcome.commands]
    assert ("sales_handoff", "already_sales_qualified") in [
        held for outcome in outcomes for held in outcome.held_back]


def test_handoff_step_skipped_when_sales_has_lead(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    welcome = process_event(lead, _signup(), runtime).commands[0]
    process_event(lead, open_("lead-1", T0 + 11 * HOUR_MS, command_id=welcome["command_id"]), runtime)
    lead["stage"] = "sales_qualified"
    assert process_due(lead, next_due(lead), runtime).commands == []
    sent = lead["journeys"]["onboarding"]["sends"]["to_sales"]
    assert sent["status"] == "dropped"
    assert sent["reason"] == "already_sales_qualified"


def test_removed_step_ends_run(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    process_event(lead, _signup(), runtime)
    lead["journeys"]["onboarding"]["step"] = "renamed_since"
    outcome = process_due(lead, next_due(lead), runtime)
    run = lead["journeys"]["onboarding"]
    assert run["status"] == "exited"
    assert run["end_reason"] == "step_removed:renamed_since"
    assert ("onboarding", "exited", "step_removed:renamed_since") in outcome.journey_log
    assert next_due(lead) is None


def test_removed_journey_ends_run(model, tmp_path):
    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    process_event(lead, _signup(), runtime)
    lead["journeys"]["retired"] = lead["journeys"].pop("onboarding")
    process_due(lead, T0 + 30 * DAY_MS, runtime)
    assert lead["journeys"]["retired"]["end_reason"] == "journey_removed"
    assert next_due(lead) is None


def test_stale_message_dropped(model, tmp_path):
    import dataclasses

    runtime = _runtime(model, tmp_path)
    policy = dataclasses.replace(runtime.book.policy, stale_after_ms=DAY_MS)
    runtime.book = dataclasses.replace(runtime.book, policy=policy)
    lead = consenting("lead-1")
    outcome = process_event(lead, _signup(), runtime, now_ms=T0 + 10 * HOUR_MS + 2 * DAY_MS)
    assert outcome.commands == []
    assert ("onboarding/welcome", "stale") in outcome.dropped
    fresh = process_event(consenting("lead-2"), _signup("lead-2"), runtime, now_ms=T0 + 11 * HOUR_MS)
    assert _templates(fresh.commands) == ["welcome_series"]


def test_due_command_scored_at_due_time(model, tmp_path):
    from nurture.scoring import features

    runtime = _runtime(model, tmp_path)
    lead = consenting("lead-1")
    process_event(lead, _signup(), runtime)
    due = next_due(lead)
    reminder = process_due(lead, due, runtime).commands[0]
    expected = model.score([features.vector(lead["features"], due)])[0].score
    assert reminder["score"] == pytest.approx(expected)
    assert reminder["event_time"] == due
