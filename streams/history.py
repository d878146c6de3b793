"""Reading a clickstream history file and mapping it onto the engine's events.

Input: CSV or JSON Lines, optionally gzip-compressed, with the columns
``user_id, session_id, event, timestamp, platform, acquisition_channel``
(more columns are ignored). Timestamps are ``YYYY-MM-DD HH:MM:SS`` and are read
as UTC. The mapping, documented in the README:

* ``purchase`` is a conversion: a form event ``order`` with ``conversion = true``.
* ``shipping_details`` is the checkout form ``shipping``. It carries the lead's
  profile: a made-up ``example.com`` address and a first name, because the public
  data has none. ``payment_details`` is the form ``payment``, ``support_chat``
  the form ``support``.
* A session whose acquisition channel is ``email`` starts with an email open,
  two minutes before its first event.
* A user's first profile form carries consent boxes: email marketing for 85 in
  100 users and phone for 60 in 100, picked by a hash of the user id. One in 20
  users who gave email consent withdraws it in the preference centre three
  days later (a consent event).
* Every other event is a click whose ``page`` is the event name.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from nurture.config.errors import NurtureError
from nurture.schemas.records import Event

REQUIRED_COLUMNS = ("user_id", "session_id", "event", "timestamp")
FORM_EVENTS = {"shipping_details": "shipping", "payment_details": "payment", "support_chat": "support"}
PROFILE_FORMS = frozenset({"shipping", "support"})
CONVERSION_EVENT = "purchase"
OPEN_LEAD_TIME_MS = 2 * 60 * 1000
CONSENT_TEXT = "2024-01"
WITHDRAWAL_DELAY_MS = 3 * 24 * 3_600_000
FIRST_NAMES = ("Anna", "Łukasz", "Zofia", "Jakub", "Małgorzata", "Piotr", "Agnieszka", "Paweł")


class HistoryError(NurtureError):
    """A history file that cannot be read; the message names the file and line."""


def read_events(path: str | Path) -> list[Event]:
    """Read a history file and return its events sorted by event time."""
    path = Path(path)
    rows = list(_read_rows(path))
    if not rows:
        raise HistoryError(f"{path}: no events found")
    events = list(_map_rows(path, rows))
    events.sort(key=lambda event: event.event_time)

    return events


def _open_text(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise HistoryError(f"{path}: file not found")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _format_of(path: Path) -> str:
    suffixes = [suffix for suffix in path.suffixes if suffix != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last == ".csv":
        return "csv"
    if last in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise HistoryError(f"{path}: unknown format; use a .csv or .jsonl file (optionally .gz)")


def _read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    kind = _format_of(path)
    try:
        with _open_text(path) as handle:
            if kind == "csv":
                reader = csv.DictReader(handle)
                _check_columns(path, reader.fieldnames or [])
                for row in reader:
                    yield reader.line_num, row
            else:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        yield number, _parse_json_line(path, number, line)
    except (OSError, UnicodeDecodeError, EOFError, csv.Error) as exc:
        raise HistoryError(f"{path}: cannot read: {exc}") from exc


def _parse_json_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise HistoryError(f"{path}:{number}: invalid JSON: {exc}") from exc
    if not isinstance(row, dict):
        raise HistoryError(f"{path}:{number}: expected a JSON object per line")
    _check_columns(path, list(row), number)
    return row


def _check_columns(path: Path, columns: Iterable[str], line: int | None = None) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in set(columns)]
    if missing:
        place = f"{path}:{line}" if line else str(path)
        raise HistoryError(f"{place}: missing columns {', '.join(missing)}")


def _map_rows(path: Path, rows: list[tuple[int, dict[str, Any]]]) -> Iterator[Event]:
    seen: dict[str, int] = {}
    opened_sessions: set[str] = set()
    consented: set[str] = set()
    for line, row in rows:
        user, session, name = (str(row[key] or "") for key in ("user_id", "session_id", "event"))
        if not user or not name:
            raise HistoryError(f"{path}:{line}: user_id and event must not be empty")
        at = _parse_time(path, line, str(row["timestamp"]))
        channel = row.get("acquisition_channel") or None
        platform = row.get("platform") or None

        identity = f"{user}|{session}|{name}|{at}"
        seen[identity] = seen.get(identity, 0) + 1
        event_id = _event_id(f"{identity}|{seen[identity]}")

        if channel == "email" and session and session not in opened_sessions:
            opened_sessions.add(session)
            yield Event("open", _event_id(f"open|{user}|{session}"), user,
                        at - OPEN_LEAD_TIME_MS, at - OPEN_LEAD_TIME_MS,
                        {"channel": "email", "command_id": None, "template": None,
                         "platform": platform})
        event = _event_for(name, event_id, user, at, session or None, platform, channel)
        if event.kind == "form" and event.attrs["fields"] and user not in consented:
            consented.add(user)
            event = _with_consents(event)
            yield from _withdrawal(event)
        yield event


def _with_consents(form: Event) -> Event:
    """Tick the form's consent boxes as the mapping decides for this user."""
    draw = zlib.crc32(f"consent|{form.lead_id}".encode("utf-8")) % 100
    boxes = [{"channel": channel, "purpose": "marketing", "granted": True, "text_version": CONSENT_TEXT}
             for channel, share in (("email", 85), ("phone", 60)) if draw < share]
    return Event(form.kind, form.event_id, form.lead_id, form.event_time, form.produced_at,
                 {**form.attrs, "consents": boxes})


def _withdrawal(form: Event) -> Iterator[Event]:
    if not any(box["channel"] == "email" for box in form.attrs["consents"]):
        return
    if zlib.crc32(f"withdraw|{form.lead_id}".encode("utf-8")) % 20 == 0:
        at = form.event_time + WITHDRAWAL_DELAY_MS
        yield Event("consent", _event_id(f"withdraw|{form.lead_id}"), form.lead_id, at, at,
                    {"channel": "email", "purpose": "marketing", "granted": False,
                     "source": "preference_centre", "text_version": CONSENT_TEXT})


def _event_for(name: str, event_id: str, user: str, at: int, session: str | None,
               platform: str | None, channel: str | None) -> Event:
    context = {"session_id": session, "platform": platform, "channel": channel}
    if name == CONVERSION_EVENT:
        return Event("form", event_id, user, at, at,
                     {"form": "order", "conversion": True, **context, "fields": {}, "consents": []})
    if name in FORM_EVENTS:
        form = FORM_EVENTS[name]
        fields = profile_for(user) if form in PROFILE_FORMS else {}
        return Event("form", event_id, user, at, at,
                     {"form": form, "conversion": False, **context, "fields": fields, "consents": []})
    return Event("click", event_id, user, at, at,
                 {"page": name, "url": None, **context, "command_id": None, "template": None})


def profile_for(user: str) -> dict[str, str]:
    """Return the made-up profile fields the mapping gives a user's forms."""
    name = FIRST_NAMES[zlib.crc32(user.encode("utf-8")) % len(FIRST_NAMES)]
    return {"email": f"{user.replace('_', '.')}@example.com", "first_name": name}


def _parse_time(path: Path, line: int, text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise HistoryError(
            f"{path}:{line}: invalid timestamp {text!r}; expected YYYY-MM-DD HH:MM:SS"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _event_id(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]
