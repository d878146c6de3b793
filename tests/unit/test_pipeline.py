from pathlib import Path

from factories import DAY_MS, HOUR_MS, T0, click, consenting, form, open_
from nurture.agents.commands import command_id
from nurture.agents.pipeline import Runtime, process_event
from nurture.agents.rules import load_rules


def _handoff_runtime(model, tmp_path: Path, threshold: float) -> Runtime:
    path = tmp_path / "rules.toml"
    path.write_text(
        f'[[rules]]\nname = "handoff"\non = "score_crossed"\nthreshold = {threshold}\n'
        'action = "handoff_sales"\n'
    )
    return Runtime(model=model, rules=load_rules(path))


def test_handoff_fires_once_even_when_crossing_again(model, tmp_path: Path) -> None:
    lead = consenting("l")
    runtime = _handoff_runtime(model, tmp_path, threshold=0.01)
    outcomes = [process_event(lead, click("l", T0 + n * 3 * DAY_MS, "home"), runtime) for n in range(5)]

    assert sum(len(outcome.commands) for outcome in outcomes) == 1
    assert outcomes[0].commands[0]["action"] == "handoff_sales"
    assert outcomes[0].commands[0]["channel"] == "crm"
    assert lead["fired_once"] == ["handoff"]


def test_command_carries_score_model_and_reasons(runtime) -> None:
    lead = consenting("l")
    outcome = process_event(lead, form("l", T0, fields={"email": "l@example.com"}), runtime)
    command = outcome.commands[0]

    assert command["score"] == outcome.score == lead["score"]
    assert 0.0 <= command["score"] <= 100.0
    assert command["model_version"] == runtime.model.version
    assert [reason["feature"] for reason in command["reasons"]] != []
    assert all(reason["text"] for reason in command["reasons"])
    assert command["expires_at"] - command["created_at"] == 48 * HOUR_MS


def test_command_id_is_deterministic(runtime) -> None:
    event = form("l", T0, fields={"email": "l@example.com"})
    first = process_event(consenting("l"), event, runtime).commands[0]
    second = process_event(consenting("l"), event, runtime).commands[0]

    assert first["command_id"] == second["command_id"]
    assert first["command_id"] == command_id("l", "welcome", "welcome", event.event_id)
    assert command_id("l", "welcome", "welcome", "other") != first["command_id"]


def test_score_history_is_bounded(runtime) -> None:
    lead = consenting("l")
    for number in range(30):
        process_event(lead, click("l", T0 + number * HOUR_MS), runtime)

    assert len(lead["score_history"]) == 10
    assert lead["score_history"][-1][0] == T0 + 29 * HOUR_MS
    assert lead["score_history"][-1][2] == runtime.model.version


def test_burst_of_opens_sends_one_follow_up(runtime) -> None:
    lead = consenting("l")
    process_event(lead, form("l", T0, fields={"email": "l@example.com"}), runtime)
    follow_ups = []
    for minute in range(1, 6):
        outcome = process_event(lead, open_("l", T0 + HOUR_MS + minute * 60_000), runtime)
        follow_ups.extend(command["template"] for command in outcome.commands)

    assert follow_ups == ["buying_guide"]
    assert lead["sends"]["welcome"]["followed_up"] is True
