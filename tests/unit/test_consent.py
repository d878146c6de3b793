"""Consent gates every command: rules, journey steps that wait, and the outbox."""

from __future__ import annotations

import orjson

from factories import DAY_MS, HOUR_MS, T0, consent, consenting, form, open_
from nurture.agents.pipeline import process_consent, process_event
from nurture.agents.privacy.consent import Requirement, apply_consent, missing_consent
from nurture.agents.privacy.ledger import entry_key, verify_partition
from nurture.agents.state import new_lead
from nurture.streams.codecs import encode_event
from test_ingest_timers import Setup

PROFILE = {"email": "jan@example.com", "first_name": "Jan"}


def test_no_consent_no_command(runtime) -> None:
    outcome = process_event(new_lead("l"), form("l", T0, fields=PROFILE), runtime)

    assert outcome.commands == []
    assert ("welcome", "no_consent:email/marketing") in outcome.dropped


def test_withdrawal_between_two_events_stops_what_follows(runtime) -> None:
    lead = consenting("l")
    first = process_event(lead, form("l", T0, fields=PROFILE), runtime)
    process_consent(lead, consent("l", T0 + HOUR_MS, granted=False), runtime)
    second = process_event(lead, open_("l", T0 + DAY_MS, template="welcome"), runtime)

    assert [c["template"] for c in first.commands] == ["welcome"]
    assert second.commands == []
    assert ("consent_withdrawn:email/marketing" in {reason for _, reason in second.dropped})


def test_latest_change_by_event_time_wins() -> None:
    lead = new_lead("l")
    assert apply_consent(lead, consent("l", T0 + 10, granted=False))
    assert not apply_consent(lead, consent("l", T0, granted=True))  # older, arriving late
    assert not apply_consent(lead, consent("l", T0 + 10, granted=True, event_id="same-ms"))
    assert missing_consent(lead, "email", Requirement()) == "consent_withdrawn:email/marketing"


def test_handoff_needs_the_configured_channel() -> None:
    lead = new_lead("l")
    apply_consent(lead, consent("l", T0, channel="phone"))
    assert missing_consent(lead, "crm", Requirement()) is None
    assert missing_consent(lead, "crm", Requirement(handoff_channel="email")) == "no_consent:email/marketing"
    assert missing_consent(lead, "crm", Requirement(purpose="sales")) == "no_consent:phone/sales"


def test_grant_before_erasure_floor_does_not_count() -> None:
    lead = new_lead("l")
    apply_consent(lead, consent("l", T0))
    lead["consent_floor"] = T0 + 1
    assert missing_consent(lead, "email", Requirement()) == "consent_before_erasure:email/marketing"
    apply_consent(lead, consent("l", T0 + 2))
    assert missing_consent(lead, "email", Requirement()) is None


def test_withdrawal_stops_a_waiting_journey_step(model, tmp_path) -> None:
    setup = Setup(model, tmp_path)
    setup.feed("events.form", b"a", encode_event(form("a", T0, fields=PROFILE), "json"))
    setup.feed("events.consent", b"a", encode_event(consent("a", T0 + HOUR_MS, granted=False), "json"))
    setup.clock.now = T0 + DAY_MS
    setup.feed("timers", b"a", orjson.dumps({"due": T0 + DAY_MS}))

    assert [c["step"] for c in setup.recorder.commands] == ["hello"]
    run = setup.lead("a")["journeys"]["drip"]
    assert run["sends"]["again"]["status"] == "dropped"
    assert run["sends"]["again"]["reason"] == "consent_withdrawn:email/marketing"


def test_every_change_goes_to_the_ledger_chain(model, tmp_path) -> None:
    setup = Setup(model, tmp_path)
    setup.feed("events.consent", b"a", encode_event(consent("a", T0 + HOUR_MS, granted=False), "json"))
    setup.feed("events.consent", b"a", encode_event(consent("a", T0, granted=True, event_id="late"), "json"))
    setup.feed("events.consent", b"a", encode_event(consent("a", T0, granted=True, event_id="late"), "json"))

    table = setup.privacy.ledger.table
    count, _, problem = verify_partition(0, table)
    last = orjson.loads(table[entry_key(count)])
    assert problem is None
    assert count == 4 * 3 + 2  # the setup's grants for three leads, then two changes; the repeat is skipped
    assert last["applied"] is False
    assert last["event_id"] == "late"
    assert last["subject"] == setup.privacy.erasures.key("lead", "a")
    assert "lead_id" not in last
    assert setup.lead("a")["ledger"][-1] == [0, count]


def test_form_consent_box_counts_first(runtime) -> None:
    box = {"channel": "email", "purpose": "marketing", "granted": True, "text_version": "2024-05"}
    outcome = process_event(new_lead("l"), form("l", T0, fields=PROFILE, consents=[box]), runtime)

    assert [c["template"] for c in outcome.commands] == ["welcome"]
    [(change, applied)] = outcome.consents
    assert applied
    assert change.attrs["source"] == "form"
    assert change.event_time == T0
