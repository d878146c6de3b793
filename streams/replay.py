"""Producing a history file's events to the event topics, as fast as possible or time-scaled."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Sequence

import structlog
from kafka import KafkaProducer
from kafka.errors import KafkaError

from nurture.config.errors import NurtureError
from nurture.config.settings import Settings
from nurture.schemas.records import Event
from nurture.streams.codecs import encode_event
from nurture.streams.kafka_clients import connect

log = structlog.get_logger("nurture.replay")


class ReplayError(NurtureError):
    """Events could not be produced to the broker."""


@dataclass(frozen=True)
class ReplayStats:
    events: int
    by_kind: dict[str, int]
    seconds: float


def select(events: Sequence[Event], since_ms: int | None, until_ms: int | None,
           limit: int | None) -> list[Event]:
    """Keep the events in [since, until) and at most ``limit`` of them."""
    chosen = [
        event for event in events
        if (since_ms is None or event.event_time >= since_ms)
        and (until_ms is None or event.event_time < until_ms)
    ]
    return chosen[:limit] if limit is not None else chosen


def replay(settings: Settings, events: Sequence[Event], speed: float = 0.0,
           progress_every: int = 5000, progress_seconds: float = 5.0) -> ReplayStats:
    """Produce ``events`` in order, keyed by lead id.

    ``speed`` 0 sends as fast as possible; otherwise event-time gaps are divided
    by ``speed`` (3600 plays an hour of history per second).
    """
    producer = connect(settings, KafkaProducer, acks="all", linger_ms=20, batch_size=256 * 1024,
                       client_id=f"{settings.worker.app_id}-replay")

    started = time.monotonic()
    next_report = started + progress_seconds
    by_kind: dict[str, int] = {}
    first_time = events[0].event_time if events else 0
    log.info("replay_started", events=len(events), speed=speed)
    try:
        for number, event in enumerate(events, start=1):
            if speed > 0:
                _wait_until(started + (event.event_time - first_time) / 1000.0 / speed)
            produced = dataclasses.replace(event, produced_at=time.time_ns() // 1_000_000)
            producer.send(
                settings.topics.event_topic(event.kind),
                key=event.lead_id.encode("utf-8"),
                value=encode_event(produced, settings.codecs.for_kind(event.kind)),
            )
            by_kind[event.kind] = by_kind.get(event.kind, 0) + 1
            now = time.monotonic()
            if number % progress_every == 0 or now >= next_report:
                next_report = now + progress_seconds
                log.info("replay_progress", events_sent=number, events_total=len(events),
                         events_per_second=round(number / max(now - started, 1e-9)),
                         history_time=_iso(event.event_time))
        producer.flush()
    except KafkaError as exc:
        raise ReplayError(f"producing to {settings.bootstrap_servers} failed: {exc}") from exc
    finally:
        producer.close()

    stats = ReplayStats(len(events), by_kind, round(time.monotonic() - started, 3))
    log.info("replay_finished", events=stats.events, seconds=stats.seconds, **stats.by_kind)
    return stats


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _wait_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
