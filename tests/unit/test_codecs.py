import io

import fastavro
import orjson
import pytest

from factories import T0, click, form, open_
from nurture.schemas import load_schema
from nurture.streams.codecs import MAX_TEXT_LENGTH, DecodeError, decode_event, encode_event

NOW = T0 + 1000


@pytest.mark.parametrize("codec", ["json", "avro"])
@pytest.mark.parametrize(
    "event",
    [
        click("lead-1", T0, "add_to_cart", session_id="s1"),
        open_("lead-1", T0, command_id="abc", template="welcome"),
        form("lead-1", T0, "signup", fields={"email": "zofia@example.com", "first_name": "Zoë 👩‍💻 Łucja"}),
    ],
)
def test_round_trip(codec: str, event) -> None:
    payload = encode_event(event, codec)

    assert decode_event(event.kind, codec, payload, b"lead-1", now_ms=NOW) == event


def test_json_fills_schema_defaults() -> None:
    payload = orjson.dumps({"event_id": "e1", "lead_id": "l1", "event_time": T0,
                            "produced_at": T0, "form": "signup"})
    event = decode_event("form", "json", payload, b"l1", now_ms=NOW)

    assert event.attrs["conversion"] is False
    assert event.attrs["fields"] == {}


def _json(**changes) -> bytes:
    record = {"event_id": "e1", "lead_id": "l1", "event_time": T0, "produced_at": T0, "page": "home"}
    record.update(changes)
    return orjson.dumps({key: value for key, value in record.items() if value is not ...})


@pytest.mark.parametrize(
    ("payload", "key", "reason"),
    [
        (b"", b"l1", "empty"),
        (b"{not json", b"l1", "json_invalid"),
        (b"\xff\xfe{}", b"l1", "invalid_utf8"),
        (b"[1, 2]", b"l1", "json_not_object"),
        (_json(event_time="yesterday"), b"l1", "schema_invalid"),
        (_json(page=...), b"l1", "schema_invalid"),
        (_json(colour="red"), b"l1", "schema_invalid"),
        (_json(event_id=" "), b"l1", "missing_event_id"),
        (_json(lead_id="x" * 201), b"x" * 201, "invalid_lead_id"),
        (_json(), b"other", "key_mismatch"),
        (_json(event_time=5), b"l1", "time_out_of_range"),
        (_json(event_time=NOW + 2 * 86_400_000), b"l1", "time_out_of_range"),
    ],
)
def test_invalid_json_reasons(payload: bytes, key: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_event("click", "json", payload, key, now_ms=NOW)

    assert caught.value.reason == reason


def test_truncated_avro() -> None:
    payload = encode_event(click("l1", T0), "avro")

    with pytest.raises(DecodeError) as caught:
        decode_event("click", "avro", payload[:-5], b"l1", now_ms=NOW)

    assert caught.value.reason in {"avro_truncated", "avro_invalid"}


def test_avro_with_trailing_bytes() -> None:
    payload = encode_event(click("l1", T0), "avro") + b"\x00\x01"

    with pytest.raises(DecodeError) as caught:
        decode_event("click", "avro", payload, b"l1", now_ms=NOW)

    assert caught.value.reason == "avro_trailing_bytes"


def test_avro_invalid_utf8_string() -> None:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, load_schema("click"), click("l1", T0).to_record())
    payload = bytearray(buffer.getvalue())
    # The first field is event_id, "c-l1-...": a length byte, then its text.
    payload[1] = 0xFF

    with pytest.raises(DecodeError) as caught:
        decode_event("click", "avro", bytes(payload), b"l1", now_ms=NOW)

    assert caught.value.reason == "invalid_utf8"


@pytest.mark.parametrize("codec", ["json", "avro"])
@pytest.mark.parametrize("letter", ["h", "ż", "👩"])
def test_text_length_limit_counts_characters(codec: str, letter: str) -> None:
    longest = form("lead-1", T0, "signup", fields={"first_name": letter * MAX_TEXT_LENGTH})
    too_long = form("lead-1", T0, "signup", fields={"first_name": letter * (MAX_TEXT_LENGTH + 1)})

    assert decode_event("form", codec, encode_event(longest, codec), b"lead-1", now_ms=NOW) == longest
    with pytest.raises(DecodeError) as raised:
        decode_event("form", codec, encode_event(too_long, codec), b"lead-1", now_ms=NOW)
    assert raised.value.reason == "field_too_long"
