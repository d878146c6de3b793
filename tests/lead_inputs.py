"""Valid lead events and malformed records for the bad-input tests.

``lead_events`` is the one place that defines what a valid lead sends: a signup form
whose consent boxes grant marketing on every channel, a click and an open.
"""

from __future__ import annotations

import time

import orjson

from factories import BOXES, DAY_MS, HOUR_MS, click, form, open_
from nurture.schemas.records import Event
from nurture.streams.codecs import encode_event

# Marks the text that the invalid_utf8 fault replaces with invalid bytes of the same length,
# so that Avro string lengths stay right.
MARK = "UTF8XX"
INVALID_UTF8 = (b"ab\xff\xfecd", b"a\xc3\x28bcd", b"\xed\xa0\x80abc", b"\xc0\xafabcd")

FAULTS = ("truncated", "wrong_type", "huge_field", "invalid_utf8", "missing_event_id",
          "missing_lead_id", "future_time", "past_time", "no_key")


def lead_events(lead: str, at: int, first_name: str) -> list[Event]:
    """Return the valid events of one lead: a signup form with a name, a click and an open."""
    profile = {"email": f"{lead}@example.com", "first_name": first_name}
    return [
        form(lead, at, "signup", fields=profile, consents=BOXES),
        click(lead, at + HOUR_MS, "product_view", session_id=f"s-{lead}"),
        open_(lead, at + DAY_MS, template="welcome"),
    ]


def expected_reason(fault: str, codec: str) -> str:
    """Return the dead-letter reason the worker must give a record with ``fault``."""
    by_codec = {
        "truncated": {"json": "json_invalid", "avro": "avro_truncated"},
        "wrong_type": {"json": "schema_invalid", "avro": "wrong_codec"},
    }
    if fault in by_codec:
        return by_codec[fault][codec]
    return {"huge_field": "field_too_long", "invalid_utf8": "invalid_utf8",
            "missing_event_id": "missing_event_id", "missing_lead_id": "missing_lead_id",
            "future_time": "time_out_of_range", "past_time": "time_out_of_range",
            "no_key": "missing_key"}[fault]


def malformed(fault: str, kind: str, codec: str, lead: str, at: int, serial: int) -> tuple[bytes | None, bytes]:
    """Return the key and value of a record of ``kind`` with ``fault``, written for ``codec``."""
    key = lead.encode()
    if fault == "truncated":
        payload = encode_event(_event(kind, lead, at, serial), codec)
        return key, payload[: 1 + serial % (len(payload) - 1)]
    if fault == "wrong_type":
        if codec == "avro":  # a producer that writes JSON to an Avro topic
            return key, encode_event(_event(kind, lead, at, serial), "json")
        record = _event(kind, lead, at, serial).to_record()
        record["event_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at / 1000))
        return key, orjson.dumps(record)
    if fault == "huge_field":
        return key, encode_event(_event(kind, lead, at, serial, text="h" * (5000 + serial % 3000)), codec)
    if fault == "invalid_utf8":
        payload = encode_event(_event(kind, lead, at, serial, text=MARK), codec)
        return key, payload.replace(MARK.encode(), INVALID_UTF8[serial % len(INVALID_UTF8)])
    if fault in ("missing_event_id", "missing_lead_id"):
        return key, _without_id(_event(kind, lead, at, serial), fault.removeprefix("missing_"), codec)
    if fault == "future_time":
        future = time.time_ns() // 1_000_000 + (2 + serial % 360) * DAY_MS
        return key, encode_event(_event(kind, lead, future, serial), codec)
    if fault == "past_time":  # seconds where milliseconds belong: a time in January 1970
        return key, encode_event(_event(kind, lead, at // 1000, serial), codec)
    if fault == "no_key":
        return None, encode_event(_event(kind, lead, at, serial), codec)
    raise ValueError(f"unknown fault {fault!r}")


def _event(kind: str, lead: str, at: int, serial: int, text: str = "product_view") -> Event:
    """An event of ``kind`` whose free-text field (page, template or a form field) contains ``text``."""
    event_id = f"bad-{kind}-{serial}"
    if kind == "click":
        return click(lead, at, text, event_id=event_id)
    if kind == "open":
        return open_(lead, at, event_id=event_id, template=text)
    return form(lead, at, "contact", fields={"first_name": text}, event_id=event_id)


def _without_id(event: Event, name: str, codec: str) -> bytes:
    """Blank the id for Avro, which has no absent strings; leave it out of JSON."""
    record = event.to_record()
    if codec == "avro":
        record[name] = ""
        return encode_event(Event.from_record(event.kind, record), codec)
    del record[name]
    return orjson.dumps(record)
