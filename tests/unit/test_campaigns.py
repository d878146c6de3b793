"""Campaign report: the counting on in-memory records, the files and the command's errors."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from factories import DAY_MS, HOUR_MS, T0, click, form, open_
from nurture.schemas.records import Event
from nurture.streams.campaign_export import CampaignReportError, PendingFile, write_csv, write_parquet
from nurture.streams.campaigns import COLUMNS, CampaignRow, CampaignTally, InvalidCommand, ReportWindow

NURTURE = str(Path(sys.executable).with_name("nurture"))


def command(command_id: str, lead: str = "lead-1", at: int = T0, rule: str = "welcome",
            template: str | None = "welcome", journey: str | None = None, step: str | None = None,
            event_time: int | None = None) -> dict[str, Any]:
    """A command record with the fields the report reads, as the worker publishes them."""
    return {"schema_version": 2, "command_id": command_id, "lead_id": lead, "action": "send_email",
            "channel": "email", "template": template, "rule": rule, "trigger_event_id": f"e-{command_id}",
            "event_time": at if event_time is None else event_time, "created_at": at,
            "expires_at": at + DAY_MS, "journey": journey, "step": step}


def feedback(command_id: str, status: str, lead: str = "lead-1", at: int = T0 + HOUR_MS,
             bounce: str | None = None) -> Event:
    attrs = {"command_id": command_id, "channel": "email", "status": status, "bounce": bounce, "detail": None}
    return Event("feedback", f"fb-{command_id}-{status}-{at}", lead, at, at, attrs)


def tally_of(commands: list[dict[str, Any]], events: list[Event] = ()) -> CampaignTally:
    tally = CampaignTally()
    for record in commands:
        tally.add_command(record)
    for event in events:
        tally.add_event(event)
    return tally


def only_row(tally: CampaignTally, window: ReportWindow = ReportWindow()) -> CampaignRow:
    rows = tally.rows(window)
    assert len(rows) == 1, rows
    return rows[0]


def test_rule_and_journey_rows_have_own_keys() -> None:
    tally = tally_of([
        command("c1", rule="welcome", template="welcome"),
        command("c2", rule="onboarding/case_study", template="customer_stories",
                journey="onboarding", step="case_study"),
        command("c3", rule="sales_handoff", template=None),
        command("c4", lead="lead-2", rule="welcome", template="welcome"),
    ])

    keys = [(row.journey, row.rule_or_step, row.template, row.commands) for row in tally.rows(ReportWindow())]

    assert keys == [("-", "sales_handoff", "-", 1), ("-", "welcome", "welcome", 2),
                    ("onboarding", "case_study", "customer_stories", 1)]


def test_same_step_in_two_journeys_is_two_rows() -> None:
    tally = tally_of([
        command("c1", rule="a/send", template="welcome", journey="a", step="send"),
        command("c2", rule="b/send", template="welcome", journey="b", step="send"),
    ])

    assert [row.journey for row in tally.rows(ReportWindow())] == ["a", "b"]


def test_repeated_command_counts_once() -> None:
    tally = tally_of([command("c1", at=T0 + HOUR_MS), command("c1", at=T0), command("c1", at=T0 + 2 * HOUR_MS)])

    assert only_row(tally).commands == 1
    assert tally.repeated_commands == 2
    assert tally.commands["c1"].created_at == T0


def test_range_includes_since_excludes_until() -> None:
    tally = tally_of([command("before", at=T0 - 1), command("first", at=T0),
                      command("last", at=T0 + DAY_MS - 1), command("until", at=T0 + DAY_MS)])

    row = only_row(tally, ReportWindow(since_ms=T0, until_ms=T0 + DAY_MS))

    assert row.commands == 2


def test_range_by_event_time_when_chosen() -> None:
    # Created long after its trigger event, as in a replayed history.
    late = command("c1", at=T0 + 300 * DAY_MS, event_time=T0)
    tally = tally_of([late])

    assert tally.rows(ReportWindow(since_ms=T0, until_ms=T0 + DAY_MS)) == []
    assert only_row(tally, ReportWindow(since_ms=T0, until_ms=T0 + DAY_MS, time_field="event_time")).commands == 1


def test_commands_count_without_feedback() -> None:
    # A hand-off to the CRM gets no feedback from the reference worker.
    tally = tally_of([command("c1", rule="sales_handoff", template=None)])

    row = only_row(tally)

    assert row.commands == 1
    assert row.sent == 0
    assert row.delivered == 0
    assert row.bounced == 0
    assert row.failed == 0


def test_feedback_status_counts_own_column() -> None:
    statuses = ("sent", "delivered", "bounced", "failed", "opened")
    tally = tally_of([command(f"c-{status}") for status in statuses] + [command("c-none")],
                     [feedback(f"c-{status}", status) for status in statuses])

    row = only_row(tally)

    assert row.commands == 6
    assert row.sent == 1
    assert row.delivered == 1
    assert row.bounced == 1
    assert row.failed == 1
    assert row.opened == 1


def test_repeated_feedback_counts_once() -> None:
    tally = tally_of([command("c1"), command("c2")],
                     [feedback("c1", "delivered"), feedback("c1", "delivered", at=T0 + 2 * HOUR_MS),
                      feedback("c1", "failed"), feedback("c1", "failed", at=T0 + 2 * HOUR_MS)])

    row = only_row(tally)

    assert row.delivered == 1
    assert row.failed == 1
    assert row.rate("delivered") == 0.5


def test_bounced_counts_any_bounce_kind() -> None:
    tally = tally_of([command("hard"), command("soft"), command("unknown"), command("c4")],
                     [feedback("hard", "bounced", bounce="hard"), feedback("soft", "bounced", bounce="soft"),
                      feedback("unknown", "bounced")])

    row = only_row(tally)

    assert row.bounced == 3
    assert row.rate("bounced") == 0.75


def test_sent_then_bounced_counts_in_both() -> None:
    # A mail server accepted the message, then returned a bounce.
    tally = tally_of([command("c1"), command("c2")],
                     [feedback("c1", "sent"), feedback("c1", "bounced", at=T0 + 2 * HOUR_MS, bounce="hard"),
                      feedback("c2", "sent")])

    row = only_row(tally)

    assert row.commands == 2
    assert row.sent == 2
    assert row.bounced == 1
    assert row.delivered == 0


def test_feedback_outside_range_makes_no_row() -> None:
    tally = tally_of([command("old", at=T0 - DAY_MS), command("new", at=T0)], [feedback("old", "delivered")])

    row = only_row(tally, ReportWindow(since_ms=T0))

    assert row.commands == 1
    assert row.delivered == 0


def test_repeated_opens_count_once() -> None:
    tally = tally_of([command("c1"), command("c2")],
                     [open_("lead-1", T0 + HOUR_MS, command_id="c1"),
                      open_("lead-1", T0 + 2 * HOUR_MS, command_id="c1"),
                      open_("lead-1", T0 + 3 * HOUR_MS, command_id="c1")])

    row = only_row(tally)

    assert row.opened == 1
    assert row.rate("opened") == 0.5


def test_template_open_names_latest_send() -> None:
    # One rule per command, so that each command has a row of its own.
    tally = tally_of([
        command("first", at=T0, rule="r1-first", template="buying_guide"),
        command("second", at=T0 + DAY_MS, rule="r2-second", template="buying_guide"),
        command("later", at=T0 + 3 * DAY_MS, rule="r3-later", template="buying_guide"),
        command("other-lead", lead="lead-2", at=T0 + DAY_MS, rule="r4-other-lead", template="buying_guide"),
        command("other-template", at=T0 + DAY_MS, rule="r5-other-template", template="top_picks"),
    ], [open_("lead-1", T0 + 2 * DAY_MS, template="buying_guide")])

    opened = {row.rule_or_step: row.opened for row in tally.rows(ReportWindow())}

    assert opened == {"r1-first": 0, "r2-second": 1, "r3-later": 0, "r4-other-lead": 0, "r5-other-template": 0}


def test_template_open_before_send_ignored() -> None:
    tally = tally_of([command("c1", at=T0)], [open_("lead-1", T0 - HOUR_MS, template="welcome")])

    assert only_row(tally).opened == 0


def test_unknown_command_id_names_nothing() -> None:
    tally = tally_of([command("c1")], [open_("lead-1", T0 + HOUR_MS, command_id="elsewhere", template="welcome")])

    assert only_row(tally).opened == 0


def test_opened_feedback_counts_as_open() -> None:
    tally = tally_of([command("c1"), command("c2")], [feedback("c1", "opened")])

    assert only_row(tally).opened == 1


def test_click_counts_as_open() -> None:
    tally = tally_of([command("c1")], [click("lead-1", T0 + HOUR_MS, page="product_view", command_id="c1")])

    row = only_row(tally)

    assert row.clicked == 1
    assert row.opened == 1


def test_clicks_count_once_per_command() -> None:
    tally = tally_of([command("c1"), command("c2", lead="lead-2"), command("c3", lead="lead-3")],
                     [click("lead-1", T0 + HOUR_MS, command_id="c1"),
                      click("lead-1", T0 + 2 * HOUR_MS, command_id="c1"),
                      click("lead-2", T0 + HOUR_MS, template="welcome"),
                      click("lead-3", T0 + HOUR_MS)])

    row = only_row(tally)

    assert row.clicked == 2
    assert row.rate("clicked") == pytest.approx(2 / 3)


def test_unsubscribe_click_is_no_click() -> None:
    tally = tally_of([command("c1"), command("c2"), command("c3"), command("c4")],
                     [click("lead-1", T0 + HOUR_MS, page="unsubscribe", command_id="c1"),
                      click("lead-1", T0 + HOUR_MS, page="product_view", command_id="c2")])

    row = only_row(tally)

    assert row.unsubscribed == 1
    assert row.clicked == 1
    assert row.rate("unsubscribed") == 0.25


def test_conversion_window_bounds() -> None:
    cases = {
        "same-time": T0,
        "just-after": T0 + 1,
        "at-window-end": T0 + 7 * DAY_MS,
        "after-window": T0 + 7 * DAY_MS + 1,
        "before": T0 - HOUR_MS,
    }
    for name, conversion_at in cases.items():
        tally = tally_of([command(name)], [form("lead-1", conversion_at, name="order", conversion=True)])
        expected = name in ("just-after", "at-window-end")
        assert only_row(tally).converted == int(expected), name


def test_conversion_days_option_moves_window() -> None:
    tally = tally_of([command("c1")], [form("lead-1", T0 + 2 * DAY_MS, name="order", conversion=True)])

    assert only_row(tally, ReportWindow(conversion_days=1)).converted == 0
    assert only_row(tally, ReportWindow(conversion_days=2)).converted == 1
    assert only_row(tally, ReportWindow(conversion_days=1.5)).converted == 0


def test_conversion_needs_conversion_form_of_same_lead() -> None:
    tally = tally_of([command("c1"), command("c2", lead="lead-2")],
                     [form("lead-1", T0 + DAY_MS, name="signup"),
                      form("lead-3", T0 + DAY_MS, name="order", conversion=True)])

    assert only_row(tally).converted == 0


def test_conversion_counts_for_every_command() -> None:
    tally = tally_of([command("c1", at=T0),
                      command("c2", at=T0 + DAY_MS, rule="next_content", template="top_picks")],
                     [form("lead-1", T0 + 2 * DAY_MS, name="order", conversion=True)])

    assert [row.converted for row in tally.rows(ReportWindow())] == [1, 1]


def test_conversion_window_from_event_time() -> None:
    tally = tally_of([command("c1", at=T0 + 300 * DAY_MS, event_time=T0)],
                     [form("lead-1", T0 + DAY_MS, name="order", conversion=True)])

    assert only_row(tally).converted == 0
    assert only_row(tally, ReportWindow(time_field="event_time")).converted == 1


def test_rates_divide_by_commands() -> None:
    # Only c0 and c1 have a sent record, so a rate divided by sent would differ.
    commands = [command(f"c{number}", lead=f"lead-{number}") for number in range(4)]
    events = [feedback("c0", "sent", lead="lead-0"), feedback("c1", "sent", lead="lead-1"),
              feedback("c0", "delivered", lead="lead-0"), feedback("c1", "delivered", lead="lead-1"),
              feedback("c2", "delivered", lead="lead-2"), feedback("c1", "bounced", lead="lead-1", bounce="soft"),
              feedback("c2", "bounced", lead="lead-2", bounce="hard"), feedback("c3", "failed", lead="lead-3"),
              open_("lead-0", T0 + HOUR_MS, command_id="c0"),
              open_("lead-1", T0 + HOUR_MS, command_id="c1"), click("lead-0", T0 + HOUR_MS, command_id="c0"),
              form("lead-0", T0 + DAY_MS, name="order", conversion=True),
              click("lead-3", T0 + HOUR_MS, page="unsubscribe", command_id="c3")]

    values = only_row(tally_of(commands, events)).as_dict()

    assert list(values) == list(COLUMNS)
    assert values["commands"] == 4
    assert values["sent"] == 2
    assert values["delivery_rate"] == 0.75
    assert values["bounce_rate"] == 0.5
    assert values["failure_rate"] == 0.25
    assert values["open_rate"] == 0.75  # c0 and c1 opened; c3's unsubscribe click means it was opened
    assert values["click_rate"] == 0.25
    assert values["conversion_rate"] == 0.25
    assert values["unsubscribe_rate"] == 0.25


@pytest.mark.parametrize("broken, field", [
    ({"command_id": None}, "command_id"),
    ({"lead_id": ""}, "lead_id"),
    ({"created_at": "yesterday"}, "created_at"),
    ({"event_time": True}, "event_time"),
    ({"template": 3}, "template"),
])
def test_invalid_command_names_field(broken: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidCommand, match=field):
        CampaignTally().add_command({**command("c1"), **broken})


def test_window_rejects_unknown_time_field() -> None:
    with pytest.raises(ValueError, match="time_field"):
        ReportWindow(time_field="produced_at")


def _rows() -> list[CampaignRow]:
    return [CampaignRow("-", "welcome", "welcome", commands=3, sent=3, delivered=2, bounced=1, failed=0,
                        opened=1, clicked=1, converted=0, unsubscribed=0),
            CampaignRow("onboarding", "case_study", "customer_stories", commands=2, sent=1, delivered=2,
                        bounced=0, failed=1, opened=2, clicked=1, converted=1, unsubscribed=1)]


def test_csv_has_header_and_exact_rates(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(_rows(), path)

    with path.open(newline="", encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))

    assert list(lines[0]) == list(COLUMNS)
    assert lines[0]["journey"] == "-"
    assert lines[0]["commands"] == "3"
    assert lines[1]["sent"] == "1"
    assert float(lines[0]["delivery_rate"]) == 2 / 3
    assert float(lines[0]["bounce_rate"]) == 1 / 3
    assert lines[1]["failure_rate"] == "0.5"
    assert lines[1]["conversion_rate"] == "0.5"


def test_parquet_columns_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    write_parquet(_rows(), path)

    table = pq.read_table(path)
    types = {field.name: str(field.type) for field in table.schema}

    assert table.column_names == list(COLUMNS)
    assert types["journey"] == "string"
    assert types["commands"] == "int64"
    assert types["sent"] == "int64"
    assert types["bounced"] == "int64"
    assert types["failed"] == "int64"
    assert types["unsubscribed"] == "int64"
    assert types["failure_rate"] == "double"
    assert types["open_rate"] == "double"
    assert table.column("delivery_rate").to_pylist() == [2 / 3, 1.0]


def test_parquet_without_rows_keeps_schema(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    write_parquet([], path)

    table = pq.read_table(path)

    assert table.num_rows == 0
    assert str(table.schema.field("commands").type) == "int64"


def test_pending_file_appears_only_when_written(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    pending = PendingFile(path)

    assert not path.exists()
    pending.write(_rows(), "csv")

    assert path.read_text(encoding="utf-8").startswith("journey,rule_or_step,template,")
    assert [entry.name for entry in tmp_path.iterdir()] == ["out.csv"]


def test_pending_file_discard_leaves_nothing(tmp_path: Path) -> None:
    PendingFile(tmp_path / "out.csv").discard()

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where, message", [
    ("missing/out.csv", "does not exist"),
    ("a-file/out.csv", "is not a directory"),
    (".", "is a directory"),
])
def test_pending_file_rejects_unwritable_path(tmp_path: Path, where: str, message: str) -> None:
    (tmp_path / "a-file").write_text("")

    with pytest.raises(CampaignReportError, match=message):
        PendingFile(tmp_path / where)


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "NURTURE_BROKER": "kafka://127.0.0.1:9", "NURTURE_LOG_FORMAT": "console"}
    return subprocess.run([NURTURE, *args], env=environ, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_report_help_lists_options_and_campaigns(tmp_path: Path) -> None:
    result = _run(["report", "--help"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "--wait-idle" in result.stdout
    assert "--top" in result.stdout
    assert "campaigns" in result.stdout


def test_campaigns_rejects_bad_date(tmp_path: Path) -> None:
    result = _run(["report", "campaigns", "--since", "May", "--format", "csv", "--out", "x.csv"], tmp_path)

    assert result.returncode == 2
    assert "--since: 'May' is not a date" in result.stderr


def test_campaigns_rejects_until_before_since(tmp_path: Path) -> None:
    result = _run(["report", "campaigns", "--since", "2024-06-01", "--until", "2024-05-01",
                   "--format", "csv", "--out", "x.csv"], tmp_path)

    assert result.returncode == 2
    assert "is not after --since" in result.stderr


def test_campaigns_checks_out_path_first(tmp_path: Path) -> None:
    result = _run(["report", "campaigns", "--format", "parquet", "--out", "no-such-dir/x.parquet"], tmp_path)

    assert result.returncode == 1
    assert "cannot write no-such-dir/x.parquet: directory no-such-dir does not exist" in result.stderr
    assert "Kafka" not in result.stderr
    assert "Traceback" not in result.stderr


def test_campaigns_without_broker_says_so(tmp_path: Path) -> None:
    result = _run(["report", "campaigns", "--format", "csv", "--out", "x.csv"], tmp_path)

    assert result.returncode == 1
    assert "cannot reach the Kafka broker at 127.0.0.1:9" in result.stderr
    assert "make kafka" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
