"""The one place that turns event and command records into bytes and back.

Each event topic has a codec, ``json`` (UTF-8 JSON object) or ``avro``
(schemaless Avro binary written with the topic's schema from ``schemas/``).
Decoding validates the record against the schema and a few semantic limits; a
failure raises DecodeError with a short machine-readable reason and a message.
Bytes that are not UTF-8 text, and payloads written with the other codec, get
reasons of their own, so that the dead letters tell the producer what to fix.
"""

from __future__ import annotations

import io
import re
import time
from typing import Any

import fastavro
import fastavro.validation
import orjson

from nurture.schemas import COMMAND_SCHEMA_VERSION, load_schema
from nurture.schemas.records import Event

# Events are accepted from the year 2000 up to one day ahead of the worker's clock.
MIN_EVENT_TIME_MS = 946_684_800_000
MAX_CLOCK_SKEW_MS = 24 * 3600 * 1000
MAX_ID_LENGTH = 200
# Maximum length of a text field (page, URL, template, a form field) and maximum payload size.
# Without them, lead rows and commands would grow up to Kafka's message size limit.
MAX_TEXT_LENGTH = 2000
MAX_PAYLOAD_BYTES = 64 * 1024
# fastavro's message when a string or bytes length is negative ("Expected -28 bytes, read 36").
NEGATIVE_LENGTH = re.compile(r"Expected -\d+ bytes")
_FIELD_NAMES: dict[str, frozenset[str]] = {}  # record schema name: its field names


class DecodeError(ValueError):
    """An event payload that cannot be used; ``reason`` is a stable short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode_event(kind: str, codec: str, payload: bytes | None, key: bytes | None,
                 now_ms: int | None = None) -> Event:
    """Decode and validate one event payload of ``kind`` written with ``codec``."""
    if not payload:
        raise DecodeError("empty", "the record value is empty")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DecodeError("payload_too_large",
                          f"the record value has {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} are accepted")
    schema = load_schema(kind)
    if codec == "avro":
        record = _read_avro(schema, payload)
    else:
        record = _read_json(schema, payload)
    event = Event.from_record(kind, record)
    _check_event(event, key, time.time_ns() // 1_000_000 if now_ms is None else now_ms)
    # Each character takes at least one byte in UTF-8 JSON and in Avro, so a
    # payload this short contains no text longer than the limit.
    if len(payload) > MAX_TEXT_LENGTH:
        _check_text_lengths(event)

    return event


def encode_event(event: Event, codec: str) -> bytes:
    """Encode an event for its topic; the inverse of ``decode_event``."""
    record = event.to_record()
    if codec == "avro":
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, load_schema(event.kind), record)
        return buffer.getvalue()
    return orjson.dumps(record)


def encode_command(command: dict[str, Any]) -> bytes:
    """Encode a command as JSON after checking it against ``schemas/command.avsc``."""
    if command.get("schema_version") != COMMAND_SCHEMA_VERSION:
        raise ValueError(f"command schema_version must be {COMMAND_SCHEMA_VERSION}")
    if not fastavro.validation.validate(command, load_schema("command"), raise_errors=False):
        fastavro.validation.validate(command, load_schema("command"), raise_errors=True)
    return orjson.dumps(command)


def decode_command(payload: bytes) -> dict[str, Any]:
    return orjson.loads(payload)


def encode_feedback(feedback: dict[str, Any]) -> bytes:
    """Encode a delivery outcome as JSON after checking it against ``schemas/feedback.avsc``."""
    if not fastavro.validation.validate(feedback, load_schema("feedback"), raise_errors=False):
        fastavro.validation.validate(feedback, load_schema("feedback"), raise_errors=True)
    return orjson.dumps(feedback)


def _read_avro(schema: Any, payload: bytes) -> dict[str, Any]:
    try:
        return _read_avro_record(schema, payload)
    except DecodeError:
        if _is_json_object(payload):
            raise DecodeError("wrong_codec", "payload is JSON but the topic's codec is avro; "
                              "make the producer write Avro or set the topic's [codecs] entry to json") from None
        raise


def _read_avro_record(schema: Any, payload: bytes) -> dict[str, Any]:
    buffer = io.BytesIO(payload)
    try:
        record = fastavro.schemaless_reader(buffer, schema)
    except (EOFError, StopIteration) as exc:
        if NEGATIVE_LENGTH.search(str(exc)):
            raise DecodeError("avro_invalid", "Avro payload contains a negative length; it was written "
                              "with another schema or is not Avro") from exc
        raise DecodeError("avro_truncated", f"Avro payload ends early: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_utf8", f"an Avro string is not valid UTF-8 ({exc.reason}); producers "
                          "must encode text as UTF-8 and write with the topic's schema") from exc
    except IndexError as exc:
        # fastavro raises IndexError when a number or union index runs past the end.
        if buffer.tell() >= len(payload):
            raise DecodeError("avro_truncated", "Avro payload ends early, inside a number") from exc
        raise DecodeError("avro_invalid", f"Avro payload cannot be read: {exc}") from exc
    except (ValueError, TypeError, OverflowError) as exc:
        raise DecodeError("avro_invalid", f"Avro payload cannot be read: {exc}") from exc
    if buffer.tell() != len(payload):
        raise DecodeError(
            "avro_trailing_bytes",
            f"Avro payload has {len(payload) - buffer.tell()} bytes after the record",
        )

    return record


def _is_json_object(payload: bytes) -> bool:
    if not payload.lstrip().startswith(b"{"):
        return False
    try:
        return isinstance(orjson.loads(payload), dict)
    except orjson.JSONDecodeError:
        return False


def _read_json(schema: Any, payload: bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        _explain_json_failure(schema, payload)
        raise DecodeError("json_invalid", f"payload is not valid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise DecodeError("json_not_object", "payload must be a JSON object")
    _check_ids_present(record)
    _fill_defaults(schema, record)
    _validate(record, schema)
    unknown = sorted(set(record) - _field_names(schema))
    if unknown:
        raise DecodeError("schema_invalid", f"unknown fields: {', '.join(unknown)}")

    return record


def _field_names(schema: Any) -> frozenset[str]:
    """Return the names of the record fields of ``schema``, read once per schema."""
    names = _FIELD_NAMES.get(schema["name"])
    if names is None:
        names = _FIELD_NAMES[schema["name"]] = frozenset(spec["name"] for spec in schema["fields"])
    return names


def _explain_json_failure(schema: Any, payload: bytes) -> None:
    """Raise a more precise DecodeError than json_invalid when the cause is clear."""
    if _is_avro_record(schema, payload):
        raise DecodeError("wrong_codec", "payload is Avro but the topic's codec is json; "
                          "make the producer write JSON or set the topic's [codecs] entry to avro")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut off at the end is a truncated payload, not bad text.
        if not (exc.reason == "unexpected end of data" and exc.end == len(payload)):
            raise DecodeError("invalid_utf8", f"byte {exc.start} of the payload is not valid UTF-8 "
                              f"({exc.reason}); producers must encode text as UTF-8") from None


def _is_avro_record(schema: Any, payload: bytes) -> bool:
    try:
        _read_avro_record(schema, payload)
    except DecodeError:
        return False
    return True


def _check_ids_present(record: dict[str, Any]) -> None:
    for name in ("event_id", "lead_id"):
        if record.get(name) is None:
            raise DecodeError(f"missing_{name}", f"{name} is missing or null; every event needs one")


def _validate(record: dict[str, Any], schema: Any) -> None:
    # The check without error objects is several times faster (fastavro builds a
    # message for every union branch it rejects), so the slow one runs only to
    # explain a failure.
    if fastavro.validation.validate(record, schema, raise_errors=False):
        return
    try:
        fastavro.validation.validate(record, schema, raise_errors=True)
    except fastavro.validation.ValidationError as exc:
        raise DecodeError("schema_invalid", f"record does not match schema: {exc}") from exc
    raise DecodeError("schema_invalid", "record does not match schema")


def _fill_defaults(schema: Any, record: dict[str, Any]) -> None:
    for spec in schema["fields"]:
        if spec["name"] not in record and "default" in spec:
            default = spec["default"]
            record[spec["name"]] = dict(default) if isinstance(default, dict) else default


def _check_event(event: Event, key: bytes | None, now_ms: int) -> None:
    for name in ("event_id", "lead_id"):
        value = getattr(event, name)
        if not value.strip():
            raise DecodeError(f"missing_{name}", f"{name} is empty")
        if len(value) > MAX_ID_LENGTH:
            raise DecodeError(f"invalid_{name}", f"{name} is longer than {MAX_ID_LENGTH} characters")
    if key is not None and key != event.lead_id.encode("utf-8"):
        raise DecodeError("key_mismatch", "record key differs from the event's lead_id")
    if event.event_time < MIN_EVENT_TIME_MS:
        raise DecodeError("time_out_of_range", f"event_time {event.event_time} is before 2000-01-01")
    if event.event_time > now_ms + MAX_CLOCK_SKEW_MS:
        raise DecodeError("time_out_of_range", f"event_time {event.event_time} is more than a day ahead")


def _check_text_lengths(event: Event) -> None:
    for name, value in event.attrs.items():
        texts = [*value.keys(), *value.values()] if isinstance(value, dict) else [value]
        longest = max((len(text) for text in texts if isinstance(text, str)), default=0)
        if longest > MAX_TEXT_LENGTH:
            raise DecodeError("field_too_long", f"field {name} is {longest} characters long; at most "
                              f"{MAX_TEXT_LENGTH} are accepted, so shorten it at the producer")
