"""Erasure and export requests carried out by the ingest handler."""

from __future__ import annotations

import orjson

from factories import DAY_MS, HOUR_MS, T0, consent, form
from nurture.schemas.records import Event
from nurture.streams.codecs import encode_event
from test_ingest_timers import Setup

PROFILE = {"email": "Ewa.Nowak@example.com", "first_name": "Ewa"}


def _request(setup: Setup, lead: str, action: str, at: int, request_id: str) -> None:
    request = Event("privacy", request_id, lead, at, at, {"action": action, "requested_by": "dpo"})
    setup.feed("privacy.requests", lead.encode(), encode_event(request, "json"))


def _receipt(setup: Setup, request_id: str) -> dict:
    found = [orjson.loads(value) for key, value in setup.privacy.sent["receipts"] if key == request_id.encode()]
    assert len(found) == 1
    return found[0]


def _erased(model, tmp_path) -> Setup:
    setup = Setup(model, tmp_path)
    setup.feed("events.form", b"a", encode_event(form("a", T0, fields=PROFILE), "json"))
    assert setup.index  # the journey waits a day
    setup.clock.now = T0 + HOUR_MS
    _request(setup, "a", "erase", T0 + HOUR_MS, "r-1")
    return setup


def test_erasure_removes_row_timer_and_key(model, tmp_path) -> None:
    setup = _erased(model, tmp_path)
    receipt = _receipt(setup, "r-1")

    assert b"a" not in setup.table
    assert setup.index == {}
    assert receipt["status"] == "erased"
    assert receipt["lead_id"] == "a"
    assert receipt["requested_by"] == "dpo"
    assert receipt["kept"]["consent_ledger_entries"] == 4
    assert "events.form" in receipt["remaining"]
    assert b"Ewa" not in orjson.dumps(receipt)
    # the lead id and the address, each as a keyed hash
    assert len(setup.privacy.sent["erasures"]) == 2
    assert all(b"example.com" not in key and len(key) == 64 for key, _ in setup.privacy.sent["erasures"])


def test_replayed_events_do_not_bring_the_lead_back(model, tmp_path) -> None:
    setup = _erased(model, tmp_path)
    setup.feed("events.form", b"a", encode_event(form("a", T0, fields=PROFILE, event_id="replayed"), "json"))
    setup.feed("events.consent", b"a", encode_event(consent("a", T0 - DAY_MS, event_id="old-grant"), "json"))

    assert b"a" not in setup.table
    assert [c["step"] for c in setup.recorder.commands] == ["hello"]  # the one from before the erasure


def test_same_address_needs_consent_given_after_the_erasure(model, tmp_path) -> None:
    setup = _erased(model, tmp_path)
    later = T0 + 2 * HOUR_MS
    setup.feed("events.consent", b"b", encode_event(consent("b", T0, event_id="old-import", source="import"), "json"))
    setup.feed("events.form", b"b", encode_event(form("b", later, fields={"email": "ewa.nowak@EXAMPLE.com"}),
                                                  "json"))
    assert [c["lead_id"] for c in setup.recorder.commands] == ["a"]
    assert setup.lead("b")["consent_floor"] == T0 + HOUR_MS

    setup.feed("events.consent", b"b", encode_event(consent("b", later + 1, event_id="fresh"), "json"))
    setup.clock.now = later + DAY_MS
    setup.feed("timers", b"b", orjson.dumps({"due": later + DAY_MS}))
    assert [(c["lead_id"], c["step"]) for c in setup.recorder.commands] == [("a", "hello"), ("b", "again")]


def test_erasing_an_unknown_lead_is_remembered(model, tmp_path) -> None:
    setup = Setup(model, tmp_path)
    _request(setup, "ghost", "erase", T0, "r-2")

    assert _receipt(setup, "r-2")["status"] == "not_found"
    assert setup.privacy.erasures.lead_erased_at("ghost") is not None


def test_export_request_writes_everything_held(model, tmp_path) -> None:
    setup = Setup(model, tmp_path)
    setup.feed("events.form", b"a", encode_event(form("a", T0, fields=PROFILE), "json"))
    _request(setup, "a", "export", T0 + HOUR_MS, "r-3")
    receipt = _receipt(setup, "r-3")
    document = orjson.loads(open(receipt["file"], "rb").read())

    assert receipt["status"] == "exported"
    assert "Ewa" not in str(receipt)
    assert document["profile"]["email"] == PROFILE["email"]
    assert len(document["consent_history"]) == 4
    assert document["consent"]["email"]["marketing"]["granted"] is True
    assert document["journeys"]["drip"]["step"] == "pause"
    assert [c for c in document["commands_issued"]]
    assert document["features"]["events"] == 1
